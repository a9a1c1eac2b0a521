"""The one exception root of jointcal and the warning class for degraded input.

Every error a user can cause derives from :class:`JointcalError` and also from the
builtin it resembles, so ``except ValueError`` still works for callers that do not know
jointcal. Errors carry the file, visit and detector they are about as fields, and their
message says what is wrong and what to do about it. The CLI prints ``str(error)`` as one
line and exits with :attr:`JointcalError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "JointcalError",
    "InputError",
    "ConfigError",
    "ModelConstraintError",
    "FitError",
    "NonFiniteError",
    "DivergenceError",
    "OutputError",
    "JointcalWarning",
    "EXIT_CODES",
]


class JointcalError(Exception):
    """Root of every jointcal error.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it, in one sentence or two.
    path : str, optional
        The input file concerned.
    visit, detector : int, optional
        The exposure and CCD concerned.
    """

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, visit: int | None = None,
                 detector: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.visit = visit
        self.detector = detector
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.visit is not None:
            where.append(f"visit {self.visit}")
        if self.detector is not None:
            where.append(f"detector {self.detector}")
        return (", ".join(where) + ": " if where else "") + self.message


class InputError(JointcalError, ValueError):
    """An input file, table or array is unreadable, incomplete or inconsistent."""

    exit_code = 2


class ConfigError(JointcalError, ValueError):
    """A configuration value or file is invalid; ``field`` names the option."""

    exit_code = 3

    def __init__(self, message: str, *, field: str | None = None, **kwargs):
        self.field = field
        if field is not None:
            message = f"config field '{field}': {message}"
        super().__init__(message, **kwargs)


class ModelConstraintError(JointcalError, ValueError):
    """The model is not constrained by the data (too few stars, disconnected overlaps)."""

    exit_code = 4


class FitError(JointcalError, RuntimeError):
    """The fit could not proceed."""

    exit_code = 5


class NonFiniteError(FitError, FloatingPointError):
    """A residual, derivative or solution became NaN or infinite."""


class DivergenceError(FitError):
    """chi2 jumped by more than the allowed factor; the fit rolled back to its best state.

    Attributes
    ----------
    chi2_before, chi2_after : float
        chi2 of the best state and of the rejected step.
    """

    def __init__(self, message: str, *, chi2_before: float = float("nan"),
                 chi2_after: float = float("nan"), **kwargs):
        self.chi2_before = chi2_before
        self.chi2_after = chi2_after
        super().__init__(message, **kwargs)


class OutputError(JointcalError, OSError):
    """The output directory cannot be written (exists and not empty, no permission)."""

    exit_code = 6


class JointcalWarning(UserWarning):
    """Degraded but usable input: the item named in the message was skipped."""


#: exit status of the ``jointcal`` command for each error class (documented in the README)
EXIT_CODES = {cls.__name__: cls.exit_code for cls in
              (JointcalError, InputError, ConfigError, ModelConstraintError, FitError, OutputError)}

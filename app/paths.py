"""Where the app may read fields from: a data root and the check that a typed path stays in it.

The served app lets a person type a path; it must not become a way to read the rest of the
machine. A path is accepted only when it names something under the data root (the directory in
``JOINTCAL_DATA_ROOT``, default the repository's ``assets/``), with no ``..`` component, and still
lies under the root once every symlink is resolved. No panel import here: the session and the
tests use it directly.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from jointcal_core.exceptions import InputError

__all__ = ["DATA_ROOT_ENV", "default_data_root", "resolve_under_root", "default_field_path"]

#: environment variable naming the directory the app may read fields from
DATA_ROOT_ENV = "JOINTCAL_DATA_ROOT"

_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_root() -> Path:
    """The data root: ``$JOINTCAL_DATA_ROOT`` when set, else the repository's ``assets/``."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(env).expanduser().resolve() if env else (_REPO_ROOT / "assets").resolve()


def default_field_path() -> Path:
    """The bundled demo field (``assets/demo``); it may not exist yet."""
    return _REPO_ROOT / "assets" / "demo"


def resolve_under_root(text: str, root: str | Path) -> Path:
    """Turn a typed path into an existing path under ``root``, or refuse it.

    Parameters
    ----------
    text : str
        Relative to ``root`` (``demo``, ``demo/v1.cat``) or absolute inside ``root``.
    root : str or Path
        The data root.

    Returns
    -------
    Path
        The fully resolved path (symlinks followed), inside ``root``.

    Raises
    ------
    InputError
        Empty text, a ``..`` component, a path outside the root (directly or through a symlink),
        or a path that does not exist.
    """
    given_root = Path(root).absolute()
    root = given_root.resolve()
    text = (text or "").strip()
    if not text:
        raise InputError(f"no path given: type a directory or file under {root}")
    if "\x00" in text:
        raise InputError("the path contains a NUL character")
    typed = PurePath(text)
    if ".." in typed.parts:
        raise InputError(f"'..' is not allowed in a path: give a path under the data root {root}")
    candidate = Path(text) if typed.is_absolute() else root / typed
    lexical = Path(os.path.normpath(candidate.absolute()))
    if not (_is_within(lexical, root) or _is_within(lexical, given_root)):
        raise InputError(f"{text} is outside the data root {root}; set {DATA_ROOT_ENV} to read from elsewhere")
    resolved = candidate.resolve()
    if not _is_within(resolved, root):
        raise InputError(f"{text} leads outside the data root {root} through a symbolic link")
    if not resolved.exists():
        raise InputError(f"{text} does not exist under the data root {root}")
    return resolved


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents

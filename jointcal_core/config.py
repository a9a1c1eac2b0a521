"""JointcalConfig: every option of a fit, with bounds, docs and a YAML/JSON round trip.

Option names follow LSST jointcal's ``JointcalConfig`` so its users feel at home; options this
tool adds (association radius, reserved fraction, solver, stellar motions) are marked "(added)".
Config files are YAML or JSON read with a safe loader: nothing in a config file is executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import param
import yaml

from .exceptions import ConfigError

__all__ = ["JointcalConfig", "CONFIG_SECTIONS"]


class JointcalConfig(param.Parameterized):
    """All options of a joint calibration. ``JointcalConfig(**overrides)`` validates each value."""

    # --- what to fit -------------------------------------------------------------------------
    doAstrometry = param.Boolean(True, doc="Fit the astrometry (every CCD's WCS).")
    doPhotometry = param.Boolean(True, doc="Fit the photometry (every CCD's zero point and its variation).")

    # --- source selection --------------------------------------------------------------------
    sourceFluxType = param.String("", doc="Instrumental flux column stem: 'FLUX_AUTO', 'FLUX_APER' (LDAC), "
                                  "'apFlux_12_0', 'psfFlux' (LSST). Empty: the reader's default.")
    minSnr = param.Number(10.0, bounds=(0, None), doc="Minimum S/N (flux / flux error) of a source.")
    flagMask = param.Integer(0b11111100, bounds=(0, None),
                             doc="Reject sources with any of these flag bits (default: SExtractor bits "
                                 "4..128: saturated, truncated, corrupted...; 1 and 2 are kept).")
    maxPositionErrorPix = param.Number(1.0, bounds=(0, None),
                                       doc="(added) Reject sources whose position error exceeds this (px).")

    # --- association --------------------------------------------------------------------------
    associationRadius = param.Number(2.0, bounds=(0, 60), doc="(added) Radius (arcsec) within which detections "
                                     "on different exposures are the same star (jointcal hard-codes 3).")
    matchCut = param.Number(3.0, bounds=(0, 60), doc="Radius (arcsec) for matching fitted stars to reference stars.")
    minMeasurements = param.Integer(2, bounds=(1, None), doc="Minimum number of measurements of a fitted star.")
    reservedFraction = param.Number(0.0, bounds=(0, 0.9), doc="(added) Fraction of fitted stars held out of the "
                                    "fit to measure the calibration on stars it did not see.")
    seed = param.Integer(0, doc="(added) Seed for choosing reserved stars.")

    # --- astrometry ----------------------------------------------------------------------------
    astrometryModel = param.Selector(default="constrained", objects=["simple", "constrained"],
                                     doc="'simple': one polynomial per ccdImage; 'constrained': per-chip x "
                                         "per-visit polynomials.")
    astrometrySimpleOrder = param.Integer(3, bounds=(1, 9), doc="Polynomial order of the simple model.")
    astrometryChipOrder = param.Integer(1, bounds=(1, 9), doc="Order of the per-chip (pixels -> focal plane) "
                                        "polynomial of the constrained model.")
    astrometryVisitOrder = param.Integer(5, bounds=(1, 9), doc="Order of the per-visit (focal plane -> tangent "
                                         "plane) polynomial of the constrained model.")
    positionErrorPedestal = param.Number(0.02, bounds=(0, None), doc="Added in quadrature to position errors (px).")
    astrometryReferenceErr = param.Number(None, bounds=(0, None), allow_None=True,
                                          doc="Reference position error (mas) used when the catalog has none; "
                                              "None: the catalog's errors (error if missing).")
    astrometryRefBand = param.String("", doc="(added) Reference flux used to pick astrometric reference stars; "
                                     "empty: all.")
    fitProperMotion = param.Boolean(False, doc="(added) Fit every star's proper motion (reference motions as "
                                    "priors). Off by default: tiny fields over short baselines cannot constrain it.")
    fitParallax = param.Boolean(False, doc="(added) Fit every star's parallax too (needs fitProperMotion).")
    maxAstrometrySteps = param.Integer(20, bounds=(1, None), doc="Maximum Gauss-Newton steps of the final astrometry stage between outlier passes (each preliminary stage takes one step, as in jointcal).")

    # --- photometry ----------------------------------------------------------------------------
    photometryModel = param.Selector(default="constrainedMagnitude",
                                     objects=["simpleFlux", "simpleMagnitude", "constrainedFlux",
                                              "constrainedMagnitude"],
                                     doc="Photometric model (jointcal's names).")
    photometryVisitOrder = param.Integer(7, bounds=(0, 12), doc="Order of the per-visit Chebyshev of the "
                                         "constrained photometric models.")
    photometryErrorPedestal = param.Number(0.0, bounds=(0, None),
                                           doc="Fractional flux error added in quadrature to every measurement "
                                               "and reference flux (all models).")
    photometryRefBand = param.String("", doc="(added) Reference flux band; empty: the band of the data.")
    applyColorTerms = param.Boolean(False, doc="Apply colour terms to the reference magnitudes.")
    colorTermBands = param.List(default=[], item_type=str, doc="(added) The two reference bands (b1, b2) of the "
                                "colour c = m_b1 - m_b2 used by the colour term.")
    colorTermCoefficients = param.List(default=[], item_type=float, doc="(added) Polynomial in colour added to the "
                                       "reference magnitude: m = m_ref + c0 + c1 c + c2 c^2 ...")
    maxPhotometrySteps = param.Integer(20, bounds=(1, None), doc="Maximum Gauss-Newton steps of the final photometry stage between outlier passes (each preliminary stage takes one step, as in jointcal).")

    # --- outliers and solver -------------------------------------------------------------------
    outlierRejectSigma = param.Number(5.0, bounds=(0, None), doc="n-sigma cut for outlier rejection (0: none).")
    convergenceTolerance = param.Number(1e-3, bounds=(0, None), doc="(added) Converged when the relative chi2 "
                                        "change is below this and no new outliers were found.")
    chi2IncreaseLimit = param.Number(10.0, bounds=(1, None), doc="A step raising chi2 by more than this factor "
                                     "stops the fit with an error (jointcal: 10, from HSC runs).")
    allowLineSearch = param.Boolean(False, doc="Line search along each Gauss-Newton step.")
    solver = param.Selector(default="auto", objects=["auto", "dense", "cholmod"],
                            doc="(added) Linear solver of the reduced system.")
    excludeUnconstrained = param.Boolean(False, doc="(added) Exclude ccdImages with too few stars for their "
                                         "model, with a warning, instead of stopping with an error.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every option (JSON/YAML serialisable)."""
        return {name: _plain(getattr(self, name)) for name in self._option_names()}

    @classmethod
    def _option_names(cls) -> list[str]:
        return [n for n in cls.param if n != "name"]

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "JointcalConfig | None" = None) -> "JointcalConfig":
        """Build a config from a dict; unknown names or bad values raise ConfigError naming the field."""
        config = cls() if base is None else base.copy()
        config.update_from(values)
        return config

    def update_from(self, values: dict[str, Any]) -> None:
        """Set several options at once, validating each."""
        if not isinstance(values, dict):
            raise ConfigError("a config must be a mapping of option names to values")
        known = set(self._option_names())
        for key, value in values.items():
            if key not in known:
                close = [k for k in known if k.lower() == str(key).lower()]
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown option{hint}", field=str(key))
            try:
                setattr(self, key, value)
            except (ValueError, TypeError) as exc:
                raise ConfigError(_short_param_message(exc, value), field=key) from None

    def set_override(self, assignment: str) -> None:
        """Apply one ``key=value`` override (the value is read as YAML: 3, 1e-3, true, [a, b])."""
        if "=" not in assignment:
            raise ConfigError(f"override '{assignment}' is not of the form key=value")
        key, text = assignment.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if isinstance(getattr(type(self).param, key.strip(), None), param.String) and value is not None:
            value = str(text)
        self.update_from({key.strip(): value})

    def copy(self) -> "JointcalConfig":
        return type(self)(**self.to_dict())

    # --- files ----------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def read(cls, path: str | Path, base: "JointcalConfig | None" = None) -> "JointcalConfig":
        """Read a YAML or JSON config file (safe loaders only)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror}", path=str(path)) from None
        try:
            values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"not valid YAML/JSON: {first}", path=str(path)) from None
        return cls.from_dict(values or {}, base=base)

    def diff(self, other: "JointcalConfig") -> list[str]:
        """Readable lines ``name: mine -> other`` for every option that differs."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a) if a[k] != b[k]]

    def __eq__(self, other):
        return isinstance(other, JointcalConfig) and self.to_dict() == other.to_dict()

    __hash__ = param.Parameterized.__hash__


#: grouping of the options for the app and the docs
CONFIG_SECTIONS = {
    "Selection": ["sourceFluxType", "minSnr", "flagMask", "maxPositionErrorPix"],
    "Association": ["associationRadius", "matchCut", "minMeasurements", "reservedFraction", "seed"],
    "Astrometry": ["doAstrometry", "astrometryModel", "astrometrySimpleOrder", "astrometryChipOrder",
                   "astrometryVisitOrder", "positionErrorPedestal", "astrometryReferenceErr",
                   "astrometryRefBand", "fitProperMotion", "fitParallax", "maxAstrometrySteps"],
    "Photometry": ["doPhotometry", "photometryModel", "photometryVisitOrder", "photometryErrorPedestal",
                   "photometryRefBand", "applyColorTerms", "colorTermBands", "colorTermCoefficients",
                   "maxPhotometrySteps"],
    "Outliers": ["outlierRejectSigma"],
    "Solver": ["convergenceTolerance", "chi2IncreaseLimit", "allowLineSearch", "solver",
               "excludeUnconstrained"],
}


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def _short_param_message(exc: Exception, value) -> str:
    """param's messages name the class and attribute at length; keep what matters."""
    text = str(exc).splitlines()[0]
    for marker in ("must be", "not in", "not one of", "outside", "only takes", "does not accept", "not within"):
        i = text.find(marker)
        if i >= 0:
            return f"value {value!r} {text[i:]}"
    return f"invalid value {value!r}: {text}"

"""The bad-input corpus of ``test_bad_input.py``: each case builds broken inputs from real files.

Sources (all read-only; every case copies what it breaks into its own temporary folder):

* ``CFHT``: LSST jointcal's ``cfht_minimal`` repository (2 CFHT MegaCam visits of CCD 12: sourceTable
  parquet files, calexps, visitSummaries) and its SDSS refcat shard ``REFCAT``
  (/work/shared/data/lsst_jointcal_tests_data, README there).
* ``AFVEL``: the 29 real LCO astrosource ``.psx`` catalogs of AF Vel (/work/shared/data/astrosource_afvel_lco).
* ``GAIA_LDAC``: SCAMP's real Gaia DR1 FITS_LDAC reference ``GAIA-DR1_1334+3754_r46.cat``.
* a simulated MegaCam field (:func:`jointcal_core.simulate.simulate_field`, seeded, real MegaCam CCD
  layout) of which the 4 central CCDs of 4 visits are written as FITS_LDAC exposure catalogs with
  :func:`jointcal_core.io.ldac_write.write_ldac_exposure` (headers: the simulation's TAN-SIP WCS,
  NAXIS, MJD-OBS, FILTER, CCDNUM, MAGZEROP), and its reference as a SCAMP LDAC catalog.

A :class:`Case` builds its inputs in a folder and returns the ``jointcal run`` arguments (without
``--output``); the test runs them and checks the exit code, the one error line (or the warning)
and that no output was left behind.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

DATA = Path("/work/shared/data")
CFHT = DATA / "lsst_jointcal_tests_data/tests/data/cfht_minimal/repo"
REFCAT = CFHT / "ref_cats/sdss-dr9-fink-v5b"
AFVEL = DATA / "astrosource_afvel_lco/astrosource/test/test_files/comparison"
GAIA_LDAC = DATA / "scamp_tests_extra/tests/extra/GAIA-DR1_1334+3754_r46.cat"
HAVE_DATA = CFHT.exists() and AFVEL.exists() and GAIA_LDAC.exists()

#: the 4 central MegaCam CCDs written per visit (they overlap across the 3-arcmin dithers)
SIM_DETECTORS = (12, 13, 21, 22)
#: every end-to-end run: photometry only (fast, independent of the astrometry fit), a model whose
#: export is exact
FAST = ["-c", "doAstrometry=false", "-c", "photometryModel=simpleFlux"]


@lru_cache(maxsize=None)
def simulated(n_visits: int = 4, n_stars: int = 4000, seed: int = 11):
    """The seeded simulated MegaCam field (in memory, ~0.3 s)."""
    from jointcal_core.simulate import simulate_field
    return simulate_field(n_visits=n_visits, n_stars=n_stars, seed=seed)


def write_sim_ldac(folder: Path, edit: Callable | None = None, detectors=SIM_DETECTORS, visits=None,
                   reference: bool = True, sim=None) -> list[Path]:
    """Write the central CCDs of every visit as FITS_LDAC catalogs ``<folder>/<visit>.cat``.

    ``edit(visit, detector, header, table)`` may change the astropy Header / Table of a CCD in place
    or return ``(header, table)`` replacements. Returns the catalog paths; with ``reference`` also
    writes ``<folder>/reference.cat`` (SCAMP LDAC).
    """
    from jointcal_core.io.ldac_write import measurements_to_ldac, write_ldac_exposure, write_ldac_reference

    sim = sim or simulated()
    f = sim.field
    m, c = f.measurements, f.ccd_images
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.searchsorted(m.ccd, np.arange(len(c) + 1))
    paths = []
    for visit in (c.visits if visits is None else visits):
        headers, tables, changed = [], [], False
        for i in np.flatnonzero((c.visit == visit) & np.isin(c.detector, detectors)):
            s = slice(bounds[i], bounds[i + 1])
            table = measurements_to_ldac(m.x[s], m.y[s], m.var_x[s], m.var_y[s], m.cov_xy[s], m.flux[s],
                                         m.flux_err[s], m.flags[s], c.zp_mag[i])
            header = sim.header(i)
            if edit is not None:
                pristine = (header.tostring(), table.copy())
                out = edit(int(visit), int(c.detector[i]), header, table)
                if out is not None:
                    header, table = out
                changed |= header.tostring() != pristine[0] or not _same(table, pristine[1])
            headers.append(header)
            tables.append(table)
        key = (id(sim), int(visit), tuple(detectors))
        if not changed and key in _WRITTEN:          # unedited: copy the file written before
            paths.append(Path(shutil.copy(_WRITTEN[key], folder / f"{visit}.cat")))
            continue
        paths.append(write_ldac_exposure(folder / f"{visit}.cat", headers, tables))
        if not changed:
            _WRITTEN[key] = _CACHE / f"{visit}-{len(_WRITTEN)}.cat"
            shutil.copy(paths[-1], _WRITTEN[key])
    if reference:
        write_sim_reference(folder / "reference.cat", sim)
    return paths


_CACHE = Path(tempfile.mkdtemp(prefix="jointcal-badinput-"))
atexit.register(shutil.rmtree, _CACHE, True)
_WRITTEN: dict = {}


def _same(a: Table, b: Table) -> bool:
    return a.colnames == b.colnames and len(a) == len(b) and all(
        np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=np.asarray(a[k]).dtype.kind == "f")
        for k in a.colnames)


def write_sim_reference(path: Path, sim=None, edit: Callable | None = None) -> Path:
    """The simulation's reference as a SCAMP FITS_LDAC catalog (``edit(table)`` may change it)."""
    from jointcal_core.data import MJD_J2000
    from jointcal_core.io.ldac_write import write_ldac_reference

    ref = (sim or simulated()).field.reference
    mag, mag_err = ref.mag("r")
    table = Table({"X_WORLD": ref.ra_deg, "Y_WORLD": ref.dec_deg, "ERRA_WORLD": ref.ra_err_mas / 3.6e6,
                   "ERRB_WORLD": ref.dec_err_mas / 3.6e6, "MAG": mag, "MAGERR": mag_err,
                   "OBSDATE": 2000.0 + (ref.epoch_mjd - MJD_J2000) / 365.25})
    if edit is not None:
        out = edit(table)
        table = table if out is None else out
    return write_ldac_reference(path, table)


def sim_args(folder: Path, paths, *extra) -> list[str]:
    return [*map(str, paths), "--refcat", str(folder / "reference.cat"), *FAST, *extra]


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of the bytes of ``src`` to ``dst``."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def scramble(src: Path, dst: Path, seed: int = 3) -> Path:
    """Copy ``src`` with 64 random bytes overwritten in each of 8 places after the first 2880 bytes."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for start in rng.integers(2880, len(data) - 64, 8):
        data[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def copy_cfht(folder: Path) -> Path:
    """A private copy of the cfht_minimal repository (4.6 MB)."""
    dst = folder / "repo"
    shutil.copytree(CFHT, dst, ignore=shutil.ignore_patterns("ref_cats", "MegaPrime"))
    return dst


def cfht_args(repo: Path, *extra, refcat=REFCAT) -> list[str]:
    return [str(repo), "--refcat", str(refcat), *FAST, *extra]


def cfht_source_table(repo: Path, visit: int = 849375) -> Path:
    return next(repo.rglob(f"sourceTable-{visit}.parq"))


def afvel_files(n: int = 6) -> list[Path]:
    return sorted(AFVEL.glob("*.psx"))[:n]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes
    ----------
    name : str
        The test id.
    build : callable
        ``build(folder) -> argv`` (``jointcal run`` arguments without ``--output``).
    code : int
        Expected exit status (0: degraded but usable, the run succeeds with a warning).
    says : tuple of str
        Substrings the ``jointcal: error:`` line (or, with code 0, a ``jointcal: warning:`` line) must
        contain: the file / visit / detector and what is wrong.
    error : str
        Name of the error class (documentation for the report table).
    """

    name: str
    build: Callable
    code: int
    says: tuple = ()
    error: str = ""
    needs_astrometry: bool = False


# --- builders: simulated LDAC exposures ---------------------------------------------------------------

def _sim(edit=None, **kw):
    def build(folder):
        return sim_args(folder, write_sim_ldac(folder, edit, **kw))
    return build


def _edit_ccd(visit, detector, what):
    """An ``edit`` applying ``what(header, table)`` to one CCD only."""
    def edit(v, d, header, table):
        if v == visit and d == detector:
            return what(header, table) or (header, table)
    return edit


def _drop(*names):
    def what(header, table):
        table.remove_columns(list(names))
    return what


def _set_col(name, value, rows=slice(None)):
    def what(header, table):
        col = np.array(table[name], dtype=float)
        col[rows] = value
        table[name] = col
    return what


def _header(**cards):
    def what(header, table):
        for k, v in cards.items():
            if v is None:
                header.remove(k, ignore_missing=True)
            else:
                header[k] = v
    return what


def _keep_rows(n):
    def what(header, table):
        return header, table[:n]
    return what


def _all_visit(visit, what):
    def edit(v, d, header, table):
        if v == visit:
            return what(header, table) or (header, table)
    return edit


def _ldac_truncated(folder):
    paths = write_sim_ldac(folder)
    truncate(paths[1], paths[1], 0.6)
    return sim_args(folder, paths)


def _ldac_scrambled(folder):
    paths = write_sim_ldac(folder)
    scramble(paths[2], paths[2])
    return sim_args(folder, paths)


def _ldac_not_fits(folder):
    paths = write_sim_ldac(folder)
    paths[0].write_text("this is not a FITS file\n" * 10)
    return sim_args(folder, paths)


def _ldac_empty_file(folder):
    paths = write_sim_ldac(folder)
    paths[0].write_bytes(b"")
    return sim_args(folder, paths)


def _reference_as_input(folder):
    paths = write_sim_ldac(folder)
    return sim_args(folder, [*paths, folder / "reference.cat"])


def _duplicate_visit(folder):
    paths = write_sim_ldac(folder)
    copy = folder / "copy" / paths[0].name
    copy.parent.mkdir()
    shutil.copy(paths[0], copy)
    return sim_args(folder, [*paths, copy])


def _overlaps_nothing(folder):
    def shift(v, d, header, table):   # visit 1002 pointed 2 degrees away: it shares no star with the others
        if v == 1002:
            header["CRVAL2"] = header["CRVAL2"] + 2.0
    return sim_args(folder, write_sim_ldac(folder, shift))


def _disconnected(folder):
    def shift(v, d, header, table):   # visits 1002 and 1003 overlap each other, not 1000 and 1001
        if v >= 1002:
            header["CRVAL2"] = header["CRVAL2"] + 2.0
    return sim_args(folder, write_sim_ldac(folder, shift))


def _no_reference_stars(folder):
    paths = write_sim_ldac(folder)
    return [*map(str, paths), "--refcat", str(GAIA_LDAC), *FAST]   # Gaia stars near (203.5, 37.9)


def _reference_empty(folder):
    paths = write_sim_ldac(folder)
    with warnings.catch_warnings():   # the writer's statistics of an empty table
        warnings.simplefilter("ignore", RuntimeWarning)
        write_sim_reference(folder / "reference.cat", edit=lambda t: t[:0])
    return sim_args(folder, paths)


def _reference_radians(folder):
    """A Gaia-like parquet reference whose ra/dec hold radians (no unit)."""
    paths = write_sim_ldac(folder, reference=False)
    ref = simulated().field.reference
    t = Table({"ra": np.radians(ref.ra_deg), "dec": np.radians(ref.dec_deg),
               "r_mag": ref.mag("r")[0], "r_magErr": ref.mag("r")[1]})
    t.write(folder / "reference.parquet", format="parquet")
    return [*map(str, paths), "--refcat", str(folder / "reference.parquet"), *FAST]


def _reference_without_mag(folder):
    paths = write_sim_ldac(folder)
    path = folder / "reference.cat"
    with fits.open(path) as hdus:
        table = Table(hdus["LDAC_OBJECTS"].data)
        table.remove_column("MAG")
        objects = fits.table_to_hdu(table)
        objects.name = "LDAC_OBJECTS"
        fits.HDUList([hdus[0], hdus["LDAC_IMHEAD"], objects]).writeto(path, overwrite=True)
    return sim_args(folder, paths)


def _with(build, *extra):
    def wrapped(folder):
        return [*build(folder), *extra]
    return wrapped


def _excluded(edit):
    return _with(_sim(edit), "-c", "excludeUnconstrained=true")


#: the astrometric fit with one polynomial per CCD (order 3: 20 parameters)
ASTROMETRY = ["-c", "doAstrometry=true", "-c", "doPhotometry=false", "-c", "astrometryModel=simple",
              "-c", "astrometrySimpleOrder=3"]


def _astrometry(edit, *extra):
    def build(folder):
        paths = write_sim_ldac(folder, edit)
        return [*map(str, paths), "--refcat", str(folder / "reference.cat"), *ASTROMETRY, *extra]
    return build


def _ahead_wrong_blocks(folder):
    paths = write_sim_ldac(folder)
    paths[0].with_suffix(".ahead").write_text("CRVAL1  =                150.1\nEND\n")
    return sim_args(folder, paths)


# --- builders: the real cfht_minimal repository ---------------------------------------------------------

def _cfht_edit(edit):
    def build(folder):
        repo = copy_cfht(folder)
        edit(repo)
        return cfht_args(repo)
    return build


def _parquet_edit(func, visit=849375):
    def edit(repo):
        path = cfht_source_table(repo, visit)
        table = pd.read_parquet(path)
        func(table).to_parquet(path)
    return edit


def _cfht_truncated(repo):
    p = cfht_source_table(repo)
    truncate(p, p, 0.5)


def _cfht_calexp_truncated(repo):
    p = next(repo.rglob("calexp-850587-12.fits.fz"))
    truncate(p, p, 0.3)


def _cfht_refcat_degrees(folder):
    repo = copy_cfht(folder)
    shards = folder / "refcat"
    shutil.copytree(REFCAT, shards)
    shard = shards / "225822.fits"
    with fits.open(shard) as hdus:
        hdus[1].data["coord_ra"] = np.degrees(hdus[1].data["coord_ra"])
        hdus[1].data["coord_dec"] = np.degrees(hdus[1].data["coord_dec"])
        hdus.writeto(shard, overwrite=True)
    return cfht_args(repo, refcat=shards)


def _cfht_refcat_truncated(folder):
    repo = copy_cfht(folder)
    shards = folder / "refcat"
    shutil.copytree(REFCAT, shards)
    truncate(shards / "225822.fits", shards / "225822.fits", 0.4)
    return cfht_args(repo, refcat=shards)


# --- builders: real AF Vel .psx tables -------------------------------------------------------------------

def _psx(edit):
    def build(folder):
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, src in enumerate(afvel_files()):
            dst = folder / src.name
            shutil.copy(src, dst)
            if k == 1:
                edit(dst)
            paths.append(dst)
        return [*map(str, paths), "-c", "doAstrometry=false", "-c", "photometryModel=simpleFlux"]
    return build


def _psx_columns(path):
    rows = [line.split(",")[:6] for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")


def _psx_radians(path):
    data = np.loadtxt(path, delimiter=",", ndmin=2)
    data[:, :2] = np.radians(data[:, :2])
    np.savetxt(path, data, delimiter=",")


def _gaia_reference_as_exposure(folder):
    paths = write_sim_ldac(folder)
    return sim_args(folder, [*paths, GAIA_LDAC])


def _psx_mixed_with_ldac(folder):
    paths = write_sim_ldac(folder)
    psx = folder / afvel_files(1)[0].name
    shutil.copy(afvel_files(1)[0], psx)
    return sim_args(folder, [*paths, psx])


# --- the corpus -------------------------------------------------------------------------------------------

_V, _D = 1001, 13   # the visit / detector most cases break

CASES = [
    # unreadable files
    Case("ldac_truncated", _ldac_truncated, 2, ("1001.cat", "truncated"), "InputError"),
    Case("ldac_scrambled_bytes", _ldac_scrambled, 2, ("1002.cat", "visit 1002"), "InputError"),
    Case("ldac_not_fits", _ldac_not_fits, 2, ("1000.cat",), "InputError"),
    Case("ldac_zero_bytes", _ldac_empty_file, 2, ("1000.cat",), "InputError"),
    Case("lsst_parquet_truncated", _cfht_edit(_cfht_truncated), 2, ("sourceTable-849375.parq", "parquet"),
         "InputError"),
    Case("lsst_calexp_truncated", _cfht_edit(_cfht_calexp_truncated), 2, ("calexp-850587-12",), "InputError"),
    Case("refcat_shard_truncated", _cfht_refcat_truncated, 2, ("225822.fits",), "InputError"),
    Case("psx_garbage", _psx(lambda p: p.write_text("ra,dec,x\nnot,a,number\n")), 2, (".psx", "cannot read"),
         "InputError"),
    # missing columns
    Case("ldac_missing_flux_column", _sim(_edit_ccd(_V, _D, _drop("FLUX_AUTO"))), 2,
         ("1001.cat", "visit 1001", "detector 13", "FLUX_AUTO"), "InputError"),
    Case("ldac_missing_position_errors",
         _sim(_edit_ccd(_V, _D, _drop("ERRAWIN_IMAGE", "ERRBWIN_IMAGE", "ERRTHETAWIN_IMAGE"))), 2,
         ("1001.cat", "detector 13", "position errors"), "InputError"),
    Case("lsst_missing_x_column", _cfht_edit(_parquet_edit(lambda t: t.drop(columns=["x"]))), 2,
         ("sourceTable-849375.parq", "'x'"), "InputError"),
    Case("lsst_missing_flux_column",
         _cfht_edit(_parquet_edit(lambda t: t.drop(columns=["apFlux_12_0_instFluxErr"]))), 2,
         ("sourceTable-849375.parq", "apFlux_12_0_instFluxErr"), "InputError"),
    Case("psx_six_columns", _psx(_psx_columns), 2, (".psx", "6 columns"), "InputError"),
    Case("refcat_missing_mag_column", _reference_without_mag, 2, ("reference.cat", "'MAG'"), "InputError"),
    # wrong units
    Case("refcat_radians_in_degree_columns", _reference_radians, 2, ("reference.parquet", "radians"),
         "InputError"),
    Case("lsst_refcat_degrees_in_radian_columns", _cfht_refcat_degrees, 2, ("225822.fits", "degrees"),
         "InputError"),
    Case("psx_radec_in_radians", _psx(_psx_radians), 2, (".psx", "radians", "pixel scale"), "InputError"),
    # bad values
    Case("ldac_nan_errors_one_ccd", _sim(_edit_ccd(_V, _D, _set_col("FLUXERR_AUTO", np.nan))), 4,
         ("visit 1001", "detector 13", "finite 54", "excludeUnconstrained"), "ModelConstraintError"),
    Case("ldac_zero_errors_one_ccd", _sim(_edit_ccd(_V, _D, _set_col("FLUXERR_AUTO", 0.0))), 4,
         ("visit 1001", "detector 13", "positive_errors 54"), "ModelConstraintError"),
    Case("ldac_negative_errors_one_ccd", _sim(_edit_ccd(_V, _D, _set_col("ERRAWIN_IMAGE", -0.1))), 4,
         ("visit 1001", "detector 13", "positive_errors 54"), "ModelConstraintError"),
    Case("ldac_inf_positions_one_ccd", _sim(_edit_ccd(_V, _D, _set_col("XWIN_IMAGE", np.inf))), 4,
         ("visit 1001", "detector 13", "finite 54"), "ModelConstraintError"),
    Case("ldac_nan_errors_one_ccd_excluded", _excluded(_edit_ccd(_V, _D, _set_col("FLUXERR_AUTO", np.nan))), 0,
         ("visit 1001", "detector 13", "excluded"), "JointcalWarning"),
    Case("ldac_nan_errors_everywhere", _sim(lambda v, d, h, t: _set_col("FLUXERR_AUTO", np.nan)(h, t)), 2,
         ("finite",), "InputError"),
    Case("lsst_zero_flux_errors_one_visit",
         _cfht_edit(_parquet_edit(lambda t: t.assign(apFlux_12_0_instFluxErr=0.0))), 4,
         ("visit 849375", "detector 12", "positive_errors 2"), "ModelConstraintError"),
    # empty catalogs and CCDs
    Case("ldac_empty_catalog", _sim(_all_visit(_V, _keep_rows(0))), 2, ("1001.cat", "no sources"), "InputError"),
    Case("ldac_empty_ccd", _sim(_edit_ccd(_V, _D, _keep_rows(0))), 4, ("visit 1001", "detector 13"),
         "ModelConstraintError"),
    Case("ldac_empty_ccd_excluded", _excluded(_edit_ccd(_V, _D, _keep_rows(0))), 0,
         ("visit 1001", "detector 13", "excluded"), "JointcalWarning"),
    Case("lsst_empty_source_table", _cfht_edit(_parquet_edit(lambda t: t.iloc[:0])), 2,
         ("sourceTable-849375.parq", "empty"), "InputError"),
    Case("reference_empty", _reference_empty, 2, ("reference.cat", "empty"), "InputError"),
    # WCS
    Case("ldac_no_wcs", _sim(_edit_ccd(_V, _D, _header(CTYPE1=None, CTYPE2=None))), 2,
         ("1001.cat", "visit 1001", "detector 13", "WCS"), "InputError"),
    Case("ldac_singular_wcs", _sim(_edit_ccd(_V, _D, _header(CD1_1=0.0, CD1_2=0.0))), 2,
         ("1001.cat", "visit 1001", "detector 13", "singular"), "InputError"),
    # geometry and constraints
    Case("exposure_overlaps_nothing", _overlaps_nothing, 4, ("visit 1002", "shares no star"),
         "ModelConstraintError"),
    Case("exposure_overlaps_nothing_excluded", _with(_overlaps_nothing, "-c", "excludeUnconstrained=true"), 0,
         ("visit 1002", "excluded"), "JointcalWarning"),
    Case("disconnected_overlap_graph", _disconnected, 4, ("visits 1002, 1003", "disconnected"),
         "ModelConstraintError"),
    Case("no_reference_stars", _no_reference_stars, 2, ("GAIA-DR1_1334+3754_r46.cat", "none of its 4403 stars"),
         "InputError"),
    Case("ccd_fewer_stars_than_parameters", _astrometry(_edit_ccd(_V, _D, _keep_rows(4))), 4,
         ("visit 1001", "detector 13", "parameters"), "ModelConstraintError", needs_astrometry=True),
    Case("ccd_fewer_stars_than_parameters_excluded",
         _astrometry(_edit_ccd(_V, _D, _keep_rows(4)), "-c", "excludeUnconstrained=true"), 0,
         ("visit 1001", "detector 13", "excluded"), "JointcalWarning", needs_astrometry=True),
    # inconsistent inputs
    Case("duplicate_visit_ids", _duplicate_visit, 2, ("1000.cat", "visit id 1000"), "InputError"),
    Case("mixed_bands", _sim(_all_visit(1003, _header(FILTER="g"))), 2, ("mix bands", "g:", "r:"), "InputError"),
    Case("mixed_formats", _psx_mixed_with_ldac, 2, ("mix formats",), "InputError"),
    Case("reference_given_as_exposure", _gaia_reference_as_exposure, 2, ("GAIA-DR1_1334+3754_r46.cat", "--refcat"), "InputError"),
    Case("ahead_block_count", _ahead_wrong_blocks, 2, ("1000.cat", ".ahead"), "InputError"),
]

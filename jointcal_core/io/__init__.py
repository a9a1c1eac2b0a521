"""Readers (and writers) of jointcal inputs and outputs.

Readers: FITS_LDAC exposure catalogs (:mod:`.ldac`), LSST data products (:mod:`.lsst`), reference
catalogs (:mod:`.refcat`), plain tables (:mod:`.plain`); :func:`load_field` detects the format and
returns a :class:`~jointcal_core.data.Field`.
"""

from .detect import detect_format, load_field
from .ldac import read_ldac_exposures
from .lsst import LSST_FLAG_BITS, LSST_JOINTCAL_FLAG_MASK, read_lsst_refcat, read_lsst_repo, read_lsst_source_table
from .plain import read_plain_catalogs
from .refcat import read_reference

__all__ = ["load_field", "detect_format", "read_ldac_exposures", "read_lsst_repo", "read_lsst_source_table",
           "read_lsst_refcat", "read_reference", "read_plain_catalogs", "LSST_FLAG_BITS", "LSST_JOINTCAL_FLAG_MASK"]

"""Format detection and load_field on the real inputs (LSST repo, psx directory, BANZAI, LDAC fixture)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from jointcal_core.config import JointcalConfig
from jointcal_core.data import Field
from jointcal_core.exceptions import InputError
from jointcal_core.io import detect_format, load_field
from test_io_ldac import CFHT_VISITS, cfht_header, cfht_objects, cfht_source_table, write_ldac

DATA = Path("/work/shared/data")
REPO = DATA / "lsst_jointcal_tests_data/tests/data/cfht_minimal/repo"
SHARD = REPO / "ref_cats/sdss-dr9-fink-v5b/225822.fits"
GAIA = DATA / "scamp_tests_extra/tests/extra/GAIA-DR1_1334+3754_r46.cat"
PSX_DIR = DATA / "astrosource_afvel_lco/astrosource/test/test_files/comparison"
BANZAI = sorted((DATA / "astrosource_afvel_lco/astrosource/test/test_files/stars").glob("*.fits"))


def test_lsst_repo_with_refcat():
    field = load_field(REPO, refcat=SHARD)
    assert isinstance(field, Field) and field.band == "r"
    assert len(field.ccd_images) == 2 and len(field.measurements) == 4
    assert len(field.reference) == 2628 and field.photometry_reference is field.reference
    assert len(field.inputs) == 2 and all("sourceTable-" in p for p in field.inputs)
    assert detect_format(REPO) == "lsst"


def test_psx_directory_and_flux_from_config():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        field = load_field(PSX_DIR, config=JointcalConfig(sourceFluxType="counts"))
    assert detect_format(PSX_DIR) == "plain"
    assert len(field.ccd_images) == 29 and len(field.measurements) == 12006 and field.band == "V"
    assert field.reference is None and len(field.inputs) == 29


def test_ldac_files_with_scamp_reference(tmp_path):
    for v in CFHT_VISITS:
        write_ldac(tmp_path / f"{v}p.cat", [(cfht_header(v), cfht_objects(cfht_source_table(v)))])
    assert detect_format(tmp_path / "849375p.cat") == "ldac"
    field = load_field(tmp_path, refcat=GAIA, photometry_refcat=SHARD)
    assert field.band == "r.MP9601" and list(field.ccd_images.visit) == [849375, 850587]
    assert sorted(field.reference.flux_njy) == ["MAG", "r.MP9601"]
    assert len(field.photometry_reference) == 2628


def test_mixed_bands_and_formats_are_rejected(tmp_path):
    with pytest.raises(InputError, match=r"inputs mix bands \(V: visits .*; ip: visits \[232, 234\]\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_field(sorted(PSX_DIR.glob("*.psx"))[:2] + BANZAI)
    v = 849375
    write_ldac(tmp_path / f"{v}.cat", [(cfht_header(v), cfht_objects(cfht_source_table(v)))])
    with pytest.raises(InputError, match="inputs mix formats"):
        load_field([tmp_path / f"{v}.cat", BANZAI[0]])
    with pytest.raises(InputError, match="input not found"):
        load_field(tmp_path / "nothing")
    with pytest.raises(InputError, match="unknown format"):
        load_field(REPO, format="xml")


def test_forced_format(tmp_path):
    shutil.copy(BANZAI[0], tmp_path / "frame-232.fits")
    field = load_field(tmp_path / "frame-232.fits", format="plain")
    assert field.band == "ip" and np.bincount(field.measurements.ccd).tolist() == [106]

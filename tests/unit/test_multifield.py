"""Many fields at once: grouping by sky overlap and band, manifests, and parallel runs on a local
Dask cluster that give the same numbers as running each field alone; a failing field is reported
without stopping the others.

Data: three small fields simulated on 4 MegaCam CCDs (camera layout from SCAMP's megacam.ahead)
at far-apart sky positions, written as LDAC catalogs with write_simulated_field, plus a fourth
field in another band on top of the first one, and a corrupt catalog.
"""

import dataclasses

import numpy as np
import pytest
import yaml
from astropy.table import Table, vstack

from jointcal_core import multifield
from jointcal_core.camera import camera_by_name
from jointcal_core.cli import EXIT_SOME_FAILED, main
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import ConfigError, InputError
from jointcal_core.io.wcs_fits import read_wcs_fits
from jointcal_core.multifield import FieldGroup, group_inputs, read_manifest, run_groups
from jointcal_core.simulate import simulate_field, write_simulated_field
from jointcal_core.task import JointcalTask

POSITIONS = [(30.0, 10.0), (60.0, -20.0), (200.0, 40.0)]
#: photometry model whose calibration.json export works on simulated SIP inputs (see the report)
PHOT = ["-c", "photometryModel=simpleMagnitude"]


def small_camera():
    cam = camera_by_name("megacam")
    keep = np.isin(cam.detector, [13, 14, 21, 22])
    return dataclasses.replace(
        cam, detector=cam.detector[keep], bbox=cam.bbox[keep], pixel_to_focal=cam.pixel_to_focal[keep]
    )


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    out = {"root": root, "dirs": []}
    for i, (ra, dec) in enumerate(POSITIONS):
        sim = simulate_field(
            small_camera(),
            n_visits=2,
            n_stars=3000,
            seed=10 + i,
            ra_deg=ra,
            dec_deg=dec,
            dither_deg=0.02,
            first_visit=1000 + 100 * i,
        )
        out["dirs"].append(write_simulated_field(sim, root / f"field{i}"))
    # the same sky as field 0 in another band: grouped apart from it
    sim = simulate_field(
        small_camera(),
        n_visits=2,
        n_stars=2000,
        seed=20,
        ra_deg=30.0,
        dec_deg=10.0,
        dither_deg=0.02,
        first_visit=1900,
        band="g",
    )
    out["g"] = write_simulated_field(sim, root / "field_g")
    combined = vstack([Table.read(d / "reference.parquet") for d in out["dirs"]])
    combined.write(root / "all_reference.parquet")
    out["refcat"] = root / "all_reference.parquet"
    bad = root / "broken"
    bad.mkdir()
    (bad / "2000.cat").write_bytes(b"SIMPLE  =                    T" + b"\0" * 500)  # truncated FITS
    out["bad"] = bad / "2000.cat"
    return out


def visit_files(directory):
    return sorted(str(p) for p in directory.glob("1*.cat"))


def test_group_inputs_separates_fields_by_sky_and_band(fields):
    inputs = [f for d in fields["dirs"] for f in visit_files(d)] + visit_files(fields["g"])
    groups = group_inputs(inputs, refcat=str(fields["refcat"]))
    assert [g.name for g in groups] == ["g-0", "r-0", "r-1", "r-2"]
    assert [g.visits for g in groups] == [(1900, 1901), (1000, 1001), (1100, 1101), (1200, 1201)]
    for g, d in zip(groups[1:], fields["dirs"]):
        assert g.inputs == tuple(visit_files(d)) and g.band == "r" and g.format == "ldac"
        assert g.refcat == str(fields["refcat"])


def test_read_manifest_resolves_and_validates(fields, tmp_path):
    root = fields["root"]
    path = root / "manifest.yaml"
    path.write_text(yaml.safe_dump([{"name": "a", "inputs": ["field0"], "refcat": "field0/reference.cat"}]))
    (group,) = read_manifest(path)
    assert group.inputs == (str(root / "field0"),) and group.refcat == str(root / "field0/reference.cat")
    bad_docs = {
        "repeat": [{"name": "a", "inputs": ["x"]}, {"name": "a", "inputs": ["y"]}],
        "unknown key": [{"name": "a", "inputs": ["x"], "refcats": "r"}],
        "plain folder name": [{"name": "../up", "inputs": ["x"]}],
        "no 'inputs'": [{"name": "a"}],
        "non-empty YAML list": {"name": "a"},
    }
    for message, doc in bad_docs.items():
        p = tmp_path / "m.yaml"
        p.write_text(yaml.safe_dump(doc))
        with pytest.raises(InputError, match=message):
            read_manifest(p)
    with pytest.raises(InputError, match="cannot read the manifest"):
        read_manifest(tmp_path / "missing.yaml")


def test_split_fields_cli_runs_each_group_into_its_folder(fields, tmp_path, capsys):
    inputs = [f for d in fields["dirs"] for f in visit_files(d)]
    out = tmp_path / "out"
    status, outcomes = main(
        [
            "run",
            *inputs,
            "--refcat",
            str(fields["refcat"]),
            "--split-fields",
            "--jobs",
            "1",
            "-c",
            "doAstrometry=false",
            *PHOT,
            "--no-report",
            "-q",
            "--output",
            str(out),
        ],
        return_results=True,
    )
    assert status == 0 and [o.name for o in outcomes] == ["r-0", "r-1", "r-2"] and all(o.ok for o in outcomes)
    for o in outcomes:
        table = Table.read(out / o.name / "photometry.ecsv")
        assert len(table) == 8 and o.metrics["photometry_final_ndof"] > 0
    assert "3 of 3 field group(s) succeeded" in capsys.readouterr().out
    # a single-field run does not return outcomes
    assert main(
        [
            "run",
            *visit_files(fields["dirs"][0]),
            "--refcat",
            str(fields["refcat"]),
            "-c",
            "doAstrometry=false",
            *PHOT,
            "--no-report",
            "-q",
            "--output",
            str(tmp_path / "one"),
        ],
        return_results=True,
    ) == (0, None)


def test_a_failing_group_does_not_stop_the_others_serial(fields, tmp_path):
    d = fields["dirs"][1]
    groups = [
        FieldGroup("broken", "r", (str(fields["bad"]),)),
        FieldGroup("good", "r", tuple(visit_files(d)), refcat=str(d / "reference.cat")),
        FieldGroup("missing-visit", "r", tuple(visit_files(d)), visits=(1100, 4242)),
    ]
    seen = []
    outcomes = run_groups(
        groups,
        JointcalConfig(doAstrometry=False, photometryModel="simpleMagnitude"),
        tmp_path,
        jobs=1,
        progress=lambda o: seen.append(o.name),
    )
    assert seen == ["broken", "good", "missing-visit"]
    assert [o.ok for o in outcomes] == [False, True, False]
    assert "2000.cat" in outcomes[0].message and "FITS" in outcomes[0].message
    assert "visits [4242]" in outcomes[2].message
    assert (tmp_path / "good" / "photometry.ecsv").is_file() and not (tmp_path / "broken").exists()
    with pytest.raises(ConfigError, match="names repeat"):
        run_groups(groups[:1] * 2, JointcalConfig(), tmp_path, jobs=1)


def test_unreachable_scheduler_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(multifield, "CONNECT_TIMEOUT_S", 2)
    groups = [FieldGroup("a", "r", ("x",)), FieldGroup("b", "r", ("y",))]
    with pytest.raises(ConfigError, match="cannot connect to the Dask scheduler at tcp://127.0.0.1:9"):
        run_groups(groups, JointcalConfig(), tmp_path, scheduler="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_dask_run_matches_one_by_one_and_reports_the_failing_field(fields, tmp_path):
    root = fields["root"]
    entries = [
        {
            "name": f"field{i}",
            "inputs": [f"field{i}/{p.name}" for p in sorted(d.glob("1*.cat"))],
            "refcat": f"field{i}/reference.cat",
        }
        for i, d in enumerate(fields["dirs"])
    ]
    entries.insert(1, {"name": "broken", "inputs": ["broken/2000.cat"], "refcat": "field0/reference.cat"})
    manifest = root / "dask_manifest.yaml"
    manifest.write_text(yaml.safe_dump(entries))
    out = tmp_path / "out"
    status, outcomes = main(
        ["run", "--manifest", str(manifest), "--jobs", "2", *PHOT, "--no-report", "-q", "--output", str(out)],
        return_results=True,
    )
    assert status == EXIT_SOME_FAILED
    assert [o.name for o in outcomes] == ["field0", "broken", "field1", "field2"]
    broken = outcomes[1]
    assert not broken.ok and "2000.cat" in broken.message and not (out / "broken").exists()
    config = JointcalConfig(photometryModel="simpleMagnitude")
    for outcome, d in zip([outcomes[0], outcomes[2], outcomes[3]], fields["dirs"]):
        assert outcome.ok, outcome.message
        alone = JointcalTask(config).run_files(visit_files(d), refcat=d / "reference.cat")
        for kind in ("astrometry", "photometry"):
            for name in ("final_chi2", "final_ndof", "initial_chi2", "prepared_fittedStars"):
                assert outcome.metrics[f"{kind}_{name}"] == alone.metrics[f"{kind}_{name}"], (
                    outcome.name,
                    name,
                )
        table = Table.read(out / outcome.name / "photometry.ecsv")
        zp_alone = [
            alone.photometry[(int(v), int(det))].zp_mag_center
            for v, det in zip(table["visit"], table["detector"])
        ]
        np.testing.assert_allclose(table["zeropoint"], zp_alone, rtol=0, atol=1e-12)
        visit, det = alone.fitted_ccds[0]
        written = read_wcs_fits(out / outcome.name / "wcs" / f"{visit}-{det}.fits")
        x, y = np.meshgrid(np.linspace(0, 2111, 5), np.linspace(0, 4643, 5))
        np.testing.assert_allclose(
            written.all_pix2world(x.ravel(), y.ravel(), 0),
            alone.wcs[(visit, det)].all_pix2world(x.ravel(), y.ravel(), 0),
            rtol=0,
            atol=1e-10,
        )

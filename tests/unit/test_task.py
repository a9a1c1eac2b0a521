"""JointcalTask: in-memory run, the result object, timers and metadata, replaceable components,
the provenance writers (including their refusal paths) and logging.

Data: a small field simulated on 4 MegaCam CCDs (SCAMP's megacam.ahead layout, see
jointcal_core/camera.py) with known truth, so the fitted WCS and zero points are checked against
the true ones.
"""

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table

import jointcal_core
from jointcal_core.camera import camera_by_name
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import ConfigError, InputError, OutputError
from jointcal_core.projection import angular_separation_arcsec
from jointcal_core.selection import select_sources
from jointcal_core.simulate import simulate_field, write_simulated_field
from jointcal_core.task import JointcalTask, package_versions

PHOT_ONLY = {"doAstrometry": False}


def small_camera():
    cam = camera_by_name("megacam")
    keep = np.isin(cam.detector, [13, 14, 21, 22])
    return dataclasses.replace(
        cam, detector=cam.detector[keep], bbox=cam.bbox[keep], pixel_to_focal=cam.pixel_to_focal[keep]
    )


@pytest.fixture(scope="module")
def sim():
    return simulate_field(
        small_camera(), n_visits=3, n_stars=3000, seed=1, ra_deg=30.0, dec_deg=10.0, dither_deg=0.02
    )


def as_tables(field):
    """The simulated field as the in-memory tables a user would have (astropy units on some columns)."""
    c, m, r = field.ccd_images, field.measurements, field.reference
    sources = Table(
        {
            "visit": c.visit[m.ccd],
            "detector": c.detector[m.ccd],
            "x": m.x,
            "y": m.y,
            "var_x": m.var_x,
            "var_y": m.var_y,
            "cov_xy": m.cov_xy,
            "flux": m.flux,
            "flux_err": m.flux_err,
        }
    )
    ccds = Table(
        {
            "visit": c.visit,
            "detector": c.detector,
            "width": c.bbox[:, 2] - c.bbox[:, 0],
            "height": c.bbox[:, 3] - c.bbox[:, 1],
            "mjd": c.mjd,
            "exptime": c.exptime_s / 60.0,
            "airmass": c.airmass,
            "band": c.band,
            "zp_mag": c.zp_mag,
            "zp_mag_err": c.zp_mag_err,
            "boresight_ra": c.boresight_ra_deg,
            "boresight_dec": c.boresight_dec_deg,
        }
    )
    ccds["exptime"].unit = "min"
    ccds["wcs"] = c.wcs
    ref = Table(
        {
            "ra": np.radians(r.ra_deg),
            "dec": r.dec_deg,
            "ra_error": r.ra_err_mas,
            "dec_error": r.dec_err_mas,
            "pmra": r.pm_ra_masyr,
            "pmdec": r.pm_dec_masyr,
            "pmra_error": r.pm_ra_err_masyr,
            "pmdec_error": r.pm_dec_err_masyr,
            "parallax": r.parallax_mas,
            "parallax_error": r.parallax_err_mas,
            "epoch": r.epoch_mjd,
            "r_flux": r.flux_njy["r"],
            "r_fluxErr": r.flux_err_njy["r"],
        }
    )
    ref["ra"].unit = "rad"
    return sources, ccds, ref


def finals(metrics):
    return {k: v for k, v in metrics.items() if k.endswith(("final_chi2", "final_ndof"))}


def test_in_memory_tables_give_the_field_run_photometry(sim):
    sources, ccds, ref = as_tables(sim.field)
    cfg = JointcalConfig(**PHOT_ONLY)
    from_tables = JointcalTask(cfg).run(sources, ccds, ref, camera=small_camera())
    from_field = JointcalTask(cfg).run(dataclasses.replace(sim.field, camera=small_camera()))
    assert finals(from_tables.metrics) == finals(from_field.metrics)
    assert from_tables.metrics["photometry_final_ndof"] > 1000
    assert from_tables.history and from_tables.history[-1].kind == "photometry"
    assert from_tables.wcs == {} and "doAstrometry=False" in str(
        pytest.raises(KeyError, lambda: from_tables.wcs[(1000, 13)]).value
    )


def test_in_memory_run_fits_wcs_and_zero_points_to_the_truth(sim):
    pytest.importorskip("jointcal_core.models.astrometry")
    sources, ccds, ref = as_tables(sim.field)
    # order 2: the default order 7 over 4 CCDs and 3 visits follows the noise (zp std 18 mmag)
    config = JointcalConfig(photometryVisitOrder=2)
    result = JointcalTask(config).run(sources, ccds, ref, camera=small_camera())
    field, truth = result.prepared.field, sim.truth
    # the tables became the same Field (units converted: exptime min -> s, ra rad -> deg)
    for table in ("measurements", "ccd_images"):
        for name in getattr(field, table)._columns:
            if name not in ("wcs", "path", "source_id", "band"):
                np.testing.assert_allclose(
                    getattr(getattr(field, table), name),
                    getattr(getattr(sim.field, table), name),
                    rtol=1e-14,
                    err_msg=name,
                )
    for name in field.reference._columns[:-1]:
        np.testing.assert_allclose(
            getattr(field.reference, name), getattr(sim.field.reference, name), rtol=1e-13, err_msg=name
        )
    assert len(result.wcs) == len(field.ccd_images) == 12
    assert not result.wcs._cache  # lazy: nothing fitted before it is asked for
    gx, gy = np.meshgrid(np.linspace(0, 2111, 7), np.linspace(0, 4643, 13))
    gx, gy = gx.ravel(), gy.ravel()
    fit_err, init_err, zp_fit, zp_init = [], [], [], []
    for row, key in enumerate(zip(field.ccd_images.visit, field.ccd_images.detector)):
        if row % 3:  # 4 of the 12 CCDs (one TAN-SIP fit takes ~0.4 s)
            continue
        wcs = result.wcs[key]
        ra_t, dec_t = truth.pixel_to_sky(np.full(gx.size, row), gx, gy)
        ra_f, dec_f = wcs.all_pix2world(gx, gy, 0)
        ra_i, dec_i = field.ccd_images.wcs[row].all_pix2world(gx, gy, 0)
        fit_err.append(angular_separation_arcsec(ra_f, dec_f, ra_t, dec_t))
        init_err.append(angular_separation_arcsec(ra_i, dec_i, ra_t, dec_t))
        phot = result.photometry[key]
        on = field.measurements.ccd == row  # where the photometric model is constrained
        mx, my = field.measurements.x[on], field.measurements.y[on]
        zp_fit.append(phot.zp_mag(mx, my) - truth.zp_mag(np.full(mx.size, row), mx, my))
        zp_init.append(field.ccd_images.zp_mag[row] - truth.zp_mag(np.full(mx.size, row), mx, my))
        assert phot.zp_mag_center == pytest.approx(float(phot.zp_mag([1055.5], [2321.5])[0]), abs=1e-12)
        njy = phot.calibrate_njy(gx[:1], gy[:1], [1000.0])
        assert 31.4 - 2.5 * np.log10(njy[0]) == pytest.approx(phot.magnitude(gx[:1], gy[:1], [1000.0])[0])
    assert len(result.wcs._cache) == 4 and all(r.meets_limits for r in result.wcs_fidelity.values())
    fit_mas, init_mas = (
        1000 * np.sqrt(np.mean(np.square(fit_err))),
        1000 * np.sqrt(np.mean(np.square(init_err))),
    )
    # measured: 5 mas fitted against 315 mas initial
    assert fit_mas < 10 and init_mas > 100
    # zero points at the detections: measured std 4 mmag fitted against 11 mmag initial
    assert np.std(np.concatenate(zp_fit)) < 0.006 and np.std(np.concatenate(zp_init)) > 0.009
    assert abs(np.mean(np.concatenate(zp_fit))) < 0.002


@pytest.mark.parametrize(
    "drop, message",
    [
        (["flux"], "'flux' or 'instFlux'"),
        (["var_x"], "'var_x'"),
        (["var_x", "var_y"], "'xErr' or 'x_err'"),
        (["visit"], "'visit'"),
    ],
)
def test_missing_source_column_is_named(sim, drop, message):
    sources, ccds, ref = as_tables(sim.field)
    sources.remove_columns(drop)
    with pytest.raises(InputError, match=re.escape(message)) as err:
        JointcalTask().run(sources, ccds, ref)
    assert "columns:" in str(err.value)


def test_bad_in_memory_inputs_are_input_errors(sim):
    sources, ccds, ref = as_tables(sim.field)
    with pytest.raises(InputError, match="needs the ccd_images table"):
        JointcalTask().run(sources)
    with pytest.raises(InputError, match="visit 1000, detector 13: .*missing from ccd_images"):
        JointcalTask().run(sources, ccds[1:], ref)
    no_wcs = ccds.copy()
    no_wcs.remove_column("wcs")
    with pytest.raises(InputError, match="no astropy.wcs.WCS"):
        JointcalTask().run(sources, no_wcs, ref)
    # a wcs dict instead of the column is accepted
    wcs = {(int(v), int(d)): w for v, d, w in zip(ccds["visit"], ccds["detector"], ccds["wcs"])}
    res = JointcalTask(JointcalConfig(**PHOT_ONLY)).run(sources, no_wcs, ref, wcs=wcs)
    assert res.metrics["photometry_prepared_ccdImages"] == 12
    no_mjd = ccds.copy()
    no_mjd.remove_column("mjd")
    with pytest.raises(InputError, match="'mjd'"):
        JointcalTask().run(sources, no_mjd, ref)
    with pytest.raises(ConfigError):
        JointcalTask().run(sim.field, ccds)


def test_timer_nests_names_and_records_memory():
    task = JointcalTask()
    with task.timer("outer"), task.timer("inner"):
        block = np.ones(60 * 2**20 // 8)  # 60 MB, touched
    inner, outer = task.metadata["jointcal.outer.inner"], task.metadata["jointcal.outer"]
    assert inner["rss_delta_mb"] > 50 and outer["rss_delta_mb"] > 50
    assert outer["seconds"] >= inner["seconds"] > 0 and inner["cpu_seconds"] > 0
    assert inner["peak_rss_mb"] >= inner["rss_mb"] - 1
    del block
    with pytest.raises(ZeroDivisionError), task.timer("failing"):
        raise ZeroDivisionError
    assert "jointcal.failing" in task.metadata  # a failed stage is timed too
    task.empty_metadata()
    assert task.metadata == {} and all(set(v) == {"component"} for v in task.full_metadata().values())


def test_metadata_after_run_has_stages_components_and_metrics(sim, tmp_path):
    task = JointcalTask(JointcalConfig(**PHOT_ONLY))
    result = task.run(sim.field)
    meta = task.full_metadata()
    for stage in ("select", "associate", "build", "fit_photometry", "summarise"):
        assert meta[f"jointcal.{stage}"]["seconds"] >= 0, stage
    assert meta["jointcal.metrics"]["photometry_final_chi2"] == result.metrics["photometry_final_chi2"]
    sel = meta["jointcal.source_selector"]
    assert sel["component"] == "jointcal_core.selection.select_sources"
    assert sel["n_kept"] == int(result.prepared.selection.keep.sum()) and sel["n_input"] == len(
        sim.field.measurements
    )
    assert meta["jointcal.association"]["n_stars"] == result.prepared.association.n_stars
    assert result.metadata == meta
    written = yaml.safe_load(task.write_metadata(tmp_path).read_text())
    assert written["jointcal.metrics"]["photometry_final_ndof"] == result.metrics["photometry_final_ndof"]
    assert written["jointcal.association"]["component"].endswith("association.associate")


def test_replaced_components_are_used(sim, tmp_path):
    def bright_selector(field, config):
        sel = select_sources(field, config)
        m = field.measurements
        return dataclasses.replace(sel, keep=sel.keep & (m.flux > 50 * m.flux_err))

    calls = []

    def half_reference(path, band=None):
        from jointcal_core.io.refcat import read_reference

        ref = read_reference(path, band=band)
        calls.append(str(path))
        return ref.take(np.arange(0, len(ref), 2))

    task = JointcalTask(JointcalConfig(**PHOT_ONLY), components={"source_selector": bright_selector})
    task.set_component("astrometry_reference_loader", half_reference)
    assert task.task_dict()["jointcal.source_selector"].endswith("bright_selector")
    directory = write_simulated_field(sim, tmp_path / "sim")
    inputs = sorted(str(p) for p in directory.glob("1*.cat"))
    result = task.run_files(inputs, refcat=directory / "reference.cat")
    full = JointcalTask(JointcalConfig(**PHOT_ONLY)).run_files(inputs, refcat=directory / "reference.cat")
    assert calls == [str(directory / "reference.cat")]
    assert len(result.prepared.field.reference) == (len(full.prepared.field.reference) + 1) // 2
    m = result.prepared.field.measurements
    assert result.prepared.selection.keep.sum() == np.sum(
        full.prepared.selection.keep & (m.flux > 50 * m.flux_err)
    )
    assert (
        result.metrics["photometry_prepared_fittedStars"]
        < 0.8 * full.metrics["photometry_prepared_fittedStars"]
    )
    assert (
        result.metrics["photometry_collected_refStars"] < 0.6 * full.metrics["photometry_collected_refStars"]
    )
    meta = task.full_metadata()
    assert meta["jointcal.astrometry_reference_loader"]["n_stars"] == len(result.prepared.field.reference)
    assert meta["jointcal.loader"]["n_ccd_images"] == 12 and "jointcal.read_reference" in meta
    with pytest.raises(ConfigError, match="unknown component 'selector'"):
        JointcalTask(components={"selector": select_sources})
    with pytest.raises(ConfigError, match="must be callable"):
        task.set_component("association", "associate")


def test_write_config_refuses_a_different_config(tmp_path):
    task = JointcalTask(JointcalConfig(minSnr=10.0))
    path = task.write_config(tmp_path)
    assert JointcalConfig.read(path) == task.config
    mtime = path.stat().st_mtime_ns
    assert task.write_config(tmp_path) == path and path.stat().st_mtime_ns == mtime  # equal: untouched
    other = JointcalTask(JointcalConfig(minSnr=20.0, matchCut=2.0))
    with pytest.raises(OutputError) as err:
        other.write_config(tmp_path)
    text = str(err.value)
    assert "matchCut: 3.0 -> 2.0" in text and "minSnr: 10.0 -> 20.0" in text and "\n" not in text
    assert JointcalConfig.read(path).minSnr == 10.0  # refused: unchanged
    other.write_config(tmp_path, clobber=True)
    assert JointcalConfig.read(path).minSnr == 20.0
    assert JointcalConfig.read(tmp_path / "config.yaml~").minSnr == 10.0
    (tmp_path / "config.yaml~").unlink()
    task.write_config(tmp_path, clobber=True, backup=False)
    assert JointcalConfig.read(path).minSnr == 10.0 and not (tmp_path / "config.yaml~").exists()


def test_write_package_versions_refuses_a_mismatch(tmp_path):
    import numpy
    import scipy

    versions = package_versions()
    assert versions["numpy"] == numpy.__version__ and versions["scipy"] == scipy.__version__
    assert {"python", "jointcal", "astropy", "param", "pyarrow", "pyyaml", "dask", "distributed"} <= set(
        versions
    )
    task = JointcalTask()
    path = task.write_package_versions(tmp_path)
    assert yaml.safe_load(path.read_text()) == versions
    task.write_package_versions(tmp_path)  # same versions: accepted
    recorded = dict(versions, numpy="1.0.0")
    path.write_text(yaml.safe_dump(recorded))
    with pytest.raises(OutputError, match=re.escape(f"numpy: '1.0.0' -> '{numpy.__version__}'")):
        task.write_package_versions(tmp_path)
    assert yaml.safe_load(path.read_text())["numpy"] == "1.0.0"
    task.write_package_versions(tmp_path, clobber=True)
    assert yaml.safe_load(path.read_text()) == versions
    assert yaml.safe_load((tmp_path / "packages.yaml~").read_text())["numpy"] == "1.0.0"


def test_write_schemas_describes_every_output_table(sim, tmp_path):
    task = JointcalTask(JointcalConfig(doAstrometry=False, photometryModel="simpleMagnitude"))
    result = task.run(sim.field)
    out = task.write_outputs(result, tmp_path / "out")
    schemas = yaml.safe_load(task.write_schemas(tmp_path).read_text())
    for name, columns in schemas.items():
        table = Table.read(out / name)
        assert list(columns) == table.colnames, name
        assert all(set(c) == {"unit", "description"} for c in columns.values())
    prov = yaml.safe_load((out / "provenance.json").read_text())
    assert (
        prov["components"]["jointcal.association"].endswith("associate")
        and "jointcal.export" in task.metadata
    )


def test_library_never_sets_log_levels():
    root = Path(jointcal_core.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "cli.py" and re.search(r"setLevel|basicConfig", p.read_text())
    ]
    assert offenders == []
    for module in ("task", "multifield", "inmemory", "result"):
        text = (root / f"{module}.py").read_text()
        assert "logging.getLogger(__name__)" in text or "getLogger" not in text, module


def test_cli_verbosity(sim, tmp_path, capsys):
    from jointcal_core.cli import main

    directory = write_simulated_field(sim, tmp_path / "sim")
    args = [
        "inspect",
        *sorted(str(p) for p in directory.glob("1*.cat")),
        "--refcat",
        str(directory / "reference.cat"),
    ]
    try:
        assert main(args + ["-v"]) == 0
        assert "jointcal.read:" in capsys.readouterr().err  # DEBUG from jointcal_core.task
        assert main(args) == 0
        assert "jointcal.read:" not in capsys.readouterr().err
        assert (
            main(
                [
                    "run",
                    *args[1:],
                    "-q",
                    "-c",
                    "doAstrometry=false",
                    "-c",
                    "photometryModel=simpleMagnitude",
                    "--no-report",
                    "--output",
                    str(tmp_path / "out"),
                ]
            )
            == 0
        )
        captured = capsys.readouterr()
        assert captured.err == "" and "photometry: final chi2" in captured.out
    finally:
        for name in ("jointcal_core", "jointcal"):  # the CLI configured these; leave logging as found
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).setLevel(logging.NOTSET)
            logging.getLogger(name).propagate = True


def test_photometry_table_counts_each_ccds_stars_and_the_error_of_its_mean(sim):
    """The per-CCD columns of the exported photometry table, against a CCD-by-CCD count."""
    from jointcal_core.io.export_models import photometry_table

    sources, ccds, ref = as_tables(sim.field)
    result = JointcalTask(JointcalConfig(photometryVisitOrder=2, doAstrometry=False)).run(
        sources, ccds, ref, camera=small_camera())
    res = result.joint.problems["photometry"].residuals()
    n_ccd = len(result.prepared.field.ccd_images)
    rows = np.arange(n_ccd)[::-1][: max(2, n_ccd - 1)]      # a subset, out of order
    table = photometry_table(result.joint, rows)
    assert table["n_stars"].dtype == np.int64
    for k, i in enumerate(rows):
        sel = np.asarray(res["used"], bool) & (np.asarray(res["ccd"]) == i)
        n = np.unique(np.asarray(res["star"])[sel]).size
        assert table["n_stars"][k] == n and n >= 2
        expected = np.sqrt(np.mean(np.asarray(res["residual_mmag"])[sel] ** 2)) / 1000 / np.sqrt(n)
        np.testing.assert_allclose(table["zeropoint_err"][k], expected, rtol=1e-12)

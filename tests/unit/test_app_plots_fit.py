"""The fit diagnostics (app.plots_fit) and their views, on a real fit of two visits of the demo field."""

from __future__ import annotations

import sys
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from app import plots_fit as pf
from app.session import FitSession
from app.views.residuals import ResidualViews
from jointcal_core.config import JointcalConfig
from jointcal_core.io import load_field
from jointcal_core.pipeline import JointFit, prepare

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"
VISITS = (1000, 1001)


@pytest.fixture(scope="module")
def demo_field():
    return load_field([DEMO / f"{v}.cat" for v in VISITS], refcat=DEMO / "reference.cat")


@pytest.fixture(scope="module")
def fitted(demo_field):
    """A converged astrometry + photometry fit with 10 % reserved stars, and its residual table."""
    joint = JointFit(prepare(demo_field, JointcalConfig(reservedFraction=0.1, seed=3)))
    joint.run()
    return joint, pf.fit_residuals(joint)


def test_residual_table_holds_each_fits_residuals_per_measurement(fitted):
    joint, frame = fitted
    assoc = joint.prepared.association
    assert frame["meas"].tolist() == np.flatnonzero(assoc.star >= 0).tolist()
    astro = joint.problems["astrometry"].residuals()
    np.testing.assert_array_equal(frame["dx_mas"], astro["dx_mas"][frame["meas"]])
    np.testing.assert_array_equal(frame["astro_outlier"], astro["outlier"][frame["meas"]])
    photo = joint.problems["photometry"].residuals()
    row = pd.Series(np.arange(len(frame)), index=frame["meas"])[photo["meas"]].to_numpy()
    np.testing.assert_array_equal(frame["residual_mmag"].to_numpy()[row], photo["residual_mmag"])
    np.testing.assert_array_equal(frame["photo_outlier"].to_numpy()[row], photo["outlier"])
    assert frame["astro_outlier"].sum() > 0 and frame["reserved"].sum() > 0  # both states are exercised
    assert frame["ra"].between(149.0, 151.5).all() and frame["fx"].between(0, 1).all()


def test_whiskers_are_the_mean_residual_of_each_ccd_cell(fitted):
    _, frame = fitted
    sel = frame[(frame["visit"] == 1000) & frame["astro_used"]]
    bins = pf.bin_per_ccd(sel, ["dx_mas", "dy_mas"], cells=2)
    ccd = int(sel["ccd"].iloc[0])
    cell = (sel["ccd"] == ccd) & (sel["fx"] >= 0.5) & (sel["fy"] < 0.5)   # ix = 1, iy = 0 -> cell 1
    row = bins[(bins["ccd"] == ccd) & (bins["cell"] == 1)].iloc[0]
    assert row["n"] == cell.sum()
    assert row["dx_mas"] == pytest.approx(sel.loc[cell, "dx_mas"].mean(), rel=1e-12)
    assert row["dec"] == pytest.approx(sel.loc[cell, "dec"].mean(), rel=1e-12)
    overlay = pf.residual_whiskers(frame, 1000, cells=2)
    segments, dots, key, label = overlay.values()
    assert isinstance(segments, hv.Segments) and len(segments) == len(bins)
    np.testing.assert_allclose(dots.dimension_values("dx_mas"), bins["dx_mas"])
    key_mas = float(label.text.split()[0])
    assert key_mas == pf.whisker_key_mas(np.hypot(bins["dx_mas"], bins["dy_mas"]))
    # the key and every whisker share one scale (deg per mas, RA foreshortened by cos dec)
    key_len = abs(key.data["ra_end"].iloc[0] - key.data["ra"].iloc[0]) * np.median(np.cos(np.radians(bins["dec"])))
    whisker_len = np.hypot(segments.data["dec_end"] - segments.data["dec"],
                           (segments.data["ra_end"] - segments.data["ra"]) * np.cos(np.radians(bins["dec"])))
    np.testing.assert_allclose(whisker_len / np.hypot(bins["dx_mas"], bins["dy_mas"]), key_len / key_mas)
    assert overlay.opts.get().kwargs["invert_xaxis"] is True


def test_whisker_key_is_a_round_length_above_most_whiskers():
    assert pf.whisker_key_mas(np.array([1.0, 3.0, 7.0, 8.0, 9.0])) == 10.0
    assert pf.whisker_key_mas(np.array([0.12, 0.15])) == 0.2
    assert pf.whisker_key_mas(np.array([np.nan])) == 1.0


def test_scatter_highlights_exactly_the_fits_outliers_and_reserved_stars(fitted):
    joint, frame = fitted
    astro = joint.problems["astrometry"].residuals()
    in_visit = (astro["visit"] == 1001) & (astro["star"] >= 0)
    overlay = pf.residual_scatter(frame, 1001)
    layers = {el.label: el for el in overlay}
    assert set(layers) == {"used", "outlier", "reserved"}
    np.testing.assert_array_equal(np.sort(layers["outlier"].dimension_values("dx_mas")),
                                  np.sort(astro["dx_mas"][in_visit & astro["outlier"]]))
    assert len(layers["reserved"]) == np.count_nonzero(in_visit & astro["reserved"])
    assert len(layers["used"]) == np.count_nonzero(in_visit & astro["used"])
    assert layers["outlier"].opts.get().kwargs["color"] == pf.STATE_COLORS["outlier"]


def test_histograms_count_fitted_residuals_in_a_symmetric_range(fitted):
    _, frame = fitted
    overlay = pf.residual_histogram(frame, "residual_mmag", 1000, n_bins=40)
    used, reserved = overlay.values()
    sel = frame[(frame["visit"] == 1000)]
    values = sel.loc[sel["photo_used"], "residual_mmag"].to_numpy()
    edges = used.edges
    assert edges[0] == pytest.approx(-edges[-1]) and edges.size == 41
    np.testing.assert_array_equal(used.dimension_values("count"), np.histogram(values, edges)[0])
    assert reserved.dimension_values("count").sum() > 0
    assert f"{int(sel['photo_outlier'].sum())} outliers" in overlay.opts.get().kwargs["title"]
    assert len(pf.residual_histograms(frame, 1000)) == 3


def test_residual_vs_magnitude_uses_total_astrometric_and_photometric_residuals(fitted):
    _, frame = fitted
    astro = {el.label: el for el in pf.residual_vs_mag(frame, "astrometry")}
    used = frame[frame["astro_used"]]
    np.testing.assert_array_equal(astro["used"].dimension_values("dr_mas"),
                                  np.hypot(used["dx_mas"], used["dy_mas"]))
    photo = {el.label: el for el in pf.residual_vs_mag(frame, "photometry", 1000)}
    assert photo["used"].kdims[1].name == "residual_mmag"
    assert len(photo["outlier"]) == int((frame["photo_outlier"] & (frame["visit"] == 1000)).sum())


def test_sky_binning_gives_numpy_means_per_bin():
    ra, dec = np.array([10.0, 10.1, 10.9, 11.0, 20.0]), np.array([0.0, 0.1, 0.9, 1.0, 5.0])
    values = np.array([1.0, 3.0, 5.0, 7.0, np.nan])       # the NaN point neither counts nor widens the grid
    ra_e, dec_e, mean, count = pf.bin_on_sky(ra, dec, values, n_bins=2)
    assert ra_e.tolist() == [10.0, 10.5, 11.0] and dec_e.tolist() == [0.0, 0.5, 1.0]
    assert count.tolist() == [[2, 0], [0, 2]]
    assert mean[0, 0] == 2.0 and mean[1, 1] == 6.0 and np.isnan(mean[0, 1])


def test_photometry_map_shows_binned_fitted_residuals(fitted):
    _, frame = fitted
    mesh = pf.photometry_residual_map(frame, None, n_bins=10)
    used = frame[frame["photo_used"]]
    _, _, mean, _ = pf.bin_on_sky(used["ra"].to_numpy(), used["dec"].to_numpy(),
                                  used["residual_mmag"].to_numpy(), 10)
    np.testing.assert_allclose(mesh.dimension_values(2, flat=False), mean, equal_nan=True)
    assert mesh.opts.get().kwargs["invert_xaxis"] is True


def test_zero_point_map_evaluates_the_fitted_model_on_every_ccd_of_the_visit(fitted):
    joint, _ = fitted
    phot, astro, field = joint.problems["photometry"], joint.problems["astrometry"], joint.prepared.field
    grid = pf.zero_point_grid(phot, field, 1001, n=6, astrometry=astro)
    rows = np.flatnonzero(field.ccd_images.visit == 1001)
    assert grid["ccd"].tolist() == rows.tolist() and grid["zp_mag"].shape == (rows.size, 6, 6)
    k = 5
    np.testing.assert_allclose(grid["zp_mag"][k], phot.zp_mag(rows[k], grid["x"][k].ravel(),
                                                              grid["y"][k].ravel()).reshape(6, 6), rtol=0, atol=1e-12)
    assert np.mean(grid["dzp_mmag"]) == pytest.approx(0.0, abs=1e-9)
    ra, dec = astro.pixel_to_sky(int(rows[k]), [field.ccd_images.bbox[rows[k], 0]], [field.ccd_images.bbox[rows[k], 1]])
    assert (grid["ra"][k, 0, 0], grid["dec"][k, 0, 0]) == pytest.approx((ra[0], dec[0]))
    mesh = pf.zero_point_map(grid, 1001)
    z = mesh.dimension_values(2, flat=False)
    assert np.count_nonzero(np.isfinite(z)) == rows.size * 36
    np.testing.assert_allclose(np.sort(z[np.isfinite(z)]), np.sort(grid["dzp_mmag"].ravel()))


def test_star_table_lists_every_measurement_of_the_star(fitted):
    joint, frame = fitted
    assoc = joint.prepared.association
    star = int(np.argmax(assoc.star_n_measurements))
    meas = assoc.star_meas_index[assoc.star_meas_ptr[star]:assoc.star_meas_ptr[star + 1]]
    table = pf.star_measurements(frame, star)
    assert list(table.columns) == pf.STAR_TABLE_COLUMNS
    ccds = joint.prepared.field.ccd_images
    m = joint.prepared.field.measurements
    assert sorted(table["visit"]) == sorted(ccds.visit[m.ccd[meas]].tolist())
    assert sorted(table["x"]) == sorted(m.x[meas].tolist())
    astro = joint.problems["astrometry"].residuals()
    assert sorted(table["dx_mas"]) == sorted(astro["dx_mas"][meas].tolist())
    assert len(pf.star_residuals(frame, star)) == 2


def test_nearest_star_scales_each_axis_by_its_range():
    frame = pd.DataFrame({"star": [7, 8, 9], "mag": [17.0, 20.0, 23.0], "dr_mas": [0.0, 100.0, 0.0]})
    assert pf.nearest_star(frame, "mag", "dr_mas", 19.0, 90.0) == 8
    assert pf.nearest_star(frame, "mag", "dr_mas", 22.0, 10.0) == 9
    assert pf.nearest_star(frame.assign(mag=np.nan), "mag", "dr_mas", 0, 0) is None


def test_large_point_layers_are_rasterised_or_subsampled(fitted, monkeypatch):
    _, frame = fitted
    points = pf.residual_points(frame, "astrometry", "used")
    assert pf.rasterize_points(points, max_points=len(points)) is points
    raster = pf.rasterize_points(points, max_points=100)
    assert isinstance(raster, hv.Image)
    assert np.nansum(raster.dimension_values(2)) == len(points)   # every point counted once
    monkeypatch.setitem(sys.modules, "holoviews.operation.datashader", None)   # datashader absent
    sub = pf.rasterize_points(points, max_points=100)
    assert isinstance(sub, hv.Points) and len(sub) == 100
    assert set(sub.dimension_values("star")) <= set(points.dimension_values("star"))


def test_residual_views_update_in_place_and_a_click_selects_a_star(demo_field):
    session = FitSession()
    session.set_field(demo_field)
    views = ResidualViews(session=session)
    assert views._empty.visible and not views._content.visible
    session.associate()
    assert views._content.visible and views.visit == 1000
    objects = {name: pane.object for name, pane in views._panes.items()}
    scatter = objects["Scatter"]
    before = views.residuals["dx_mas"].to_numpy().copy()
    session.step()
    assert {name: pane.object for name, pane in views._panes.items()} == objects   # same plots, new data
    after = views.residuals["dx_mas"].to_numpy()
    assert not np.allclose(before, after, equal_nan=True)
    used = scatter[()].get(0)
    np.testing.assert_array_equal(used.dimension_values("dx_mas"),
                                  after[(views.residuals["visit"] == 1000) & views.residuals["astro_used"]])
    views._visit_select.value = "1001"
    assert views.visit == 1001 and set(scatter[()].get(0).dimension_values("visit")) == {1001}
    in_visit = views.residuals[views.residuals["visit"] == 1001]
    target = in_visit.loc[in_visit["dr_mas"].idxmax()]           # the most isolated point of the scatter
    views._taps["astrometry: dy_mas vs dx_mas"].event(x=target["dx_mas"], y=target["dy_mas"])
    assert session.selected_star == target["star"]
    detail = views.star_detail
    assert detail._content.visible and (detail._table.value["dx_mas"] == round(target["dx_mas"], 2)).any()
    session.set_field(None)
    assert views._empty.visible and views.residuals is None


def test_every_clickable_residual_plot_wires_its_tap_into_the_rendered_bokeh_plot(demo_field):
    # HoloViews links a stream only to a DynamicMap returning one element: a Tap whose source
    # returns an Overlay got no plot callback, so a browser click never reached it
    from bokeh.document import Document

    session = FitSession()
    session.set_field(demo_field)
    views = ResidualViews(session=session)
    session.associate()
    wired = {}
    for name in ("Scatter", "vs magnitude", "Photometry map", "Whiskers"):
        pane = views._panes[name]
        plot = pane._plots[pane.get_root(Document()).ref["id"]][0]
        wired[name] = [s for sub in plot.traverse(lambda p: p) for cb in getattr(sub, "callbacks", [])
                       for s in cb.streams if isinstance(s, hv.streams.Tap)]
    taps = views._taps
    assert wired["Scatter"] == [taps["astrometry: dy_mas vs dx_mas"]]
    assert wired["vs magnitude"] == [taps["astrometry: dr_mas vs mag"],
                                     taps["photometry: residual_mmag vs mag"]]
    assert wired["Photometry map"] == [taps["photometry map"]]
    assert wired["Whiskers"] == [] and "whiskers" not in taps     # a whisker is a CCD cell, not a star
    # a tap at a measurement of the map shows that star
    frame = views.residuals[views.residuals["visit"] == views.visit]
    target = frame.iloc[len(frame) // 2]
    taps["photometry map"].event(x=target["ra"], y=target["dec"])
    assert session.selected_star == target["star"]
    assert views.star_detail._content.visible
    assert (views.star_detail._table.value["visit"] == views.visit).any()

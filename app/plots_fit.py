"""Pure functions from a fit to diagnostic tables and HoloViews elements (no panel, no state).

Owns the residual diagnostics of the app and of the standalone HTML report:

- :func:`fit_residuals` gathers both fits' per-measurement residuals into one table;
- :func:`residual_whiskers`, :func:`residual_scatter`, :func:`residual_histograms`,
  :func:`residual_vs_mag` draw the astrometric (mas) and photometric (mmag) residuals;
- :func:`photometry_residual_map` and :func:`zero_point_map` draw them over the sky;
- :func:`star_measurements` and :func:`star_residuals` describe one star.

Sky plots use RA unwrapped around the field centre, increasing to the left (as
:func:`app.plots.footprint_map`). Residuals are model minus star: ``dx_mas``/``dy_mas`` on the
visit tangent plane (east, north), ``residual_mmag`` calibrated minus star magnitude. Point
layers beyond :data:`RASTERIZE_ABOVE` points are rasterised with datashader when it is
installed, else randomly subsampled (seeded) to that many points.
"""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # (registers the bokeh backend the options below need)
import numpy as np
import pandas as pd

from .plots import unwrap_ra_deg

__all__ = ["RASTERIZE_ABOVE", "STATE_COLORS", "bin_on_sky", "bin_per_ccd", "fit_residuals", "nearest_star",
           "photometry_residual_map", "rasterize_points", "residual_histogram", "residual_histograms",
           "residual_points", "residual_scatter", "residual_vs_mag", "residual_whiskers", "select_visit",
           "star_measurements", "star_residuals", "whisker_key_mas", "zero_point_grid", "zero_point_map"]

#: point layers with more points than this are rasterised (or subsampled without datashader)
RASTERIZE_ABOVE = 100_000
#: colour of each measurement state in every residual plot
STATE_COLORS = {"used": "#1f77b4", "outlier": "#d62728", "reserved": "#2ca02c"}
_MARKERS = {"used": "circle", "outlier": "x", "reserved": "triangle"}
#: axis label and unit of the residual columns
_LABELS = {"dx_mas": ("dx", "mas"), "dy_mas": ("dy", "mas"), "dr_mas": ("|dr|", "mas"), "mag": ("mag", "AB"),
           "residual_mmag": ("mag residual", "mmag")}
#: the kind prefix of the state columns and the residual columns of each fit
_PREFIX = {"astrometry": "astro", "photometry": "photo"}
STAR_TABLE_COLUMNS = ["visit", "detector", "x", "y", "dx_mas", "dy_mas", "residual_mmag",
                      "astro_outlier", "photo_outlier", "reserved"]


def fit_residuals(joint) -> pd.DataFrame:
    """One row per associated measurement with the residuals of every fit of a JointFit.

    Parameters
    ----------
    joint : jointcal_core.pipeline.JointFit
        Read through ``joint.prepared`` (field, association) and ``joint.problems``.

    Returns
    -------
    pandas.DataFrame
        ``meas`` (row in field.measurements), ``ccd, visit, detector, star`` (the association's
        star), ``x, y`` (0-based px), ``fx, fy`` (position in the CCD's bbox, 0..1), ``ra, dec``
        (initial WCS position, deg, RA unwrapped around the field centre), ``mag`` (calibrated AB
        mag when photometry is fitted, else instrumental with the input zero point),
        ``dx_mas, dy_mas, dr_mas, astro_chi2`` and ``residual_mmag, photo_chi2`` (NaN when that
        fit is absent), ``{astro,photo}_{used,outlier,reserved}`` (bool, False when absent),
        ``reserved`` (the star is held out of the fit).
    """
    field, assoc = joint.prepared.field, joint.prepared.association
    m, ccds = field.measurements, field.ccd_images
    meas = np.flatnonzero(np.asarray(assoc.star) >= 0)
    ccd = m.ccd[meas]
    bbox = ccds.bbox[ccd]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = ccds.zp_mag[ccd] - 2.5 * np.log10(m.flux[meas])
    star = np.asarray(assoc.star)[meas]
    out = {"meas": meas, "ccd": ccd, "visit": ccds.visit[ccd], "detector": ccds.detector[ccd], "star": star,
           "x": m.x[meas], "y": m.y[meas],
           "fx": (m.x[meas] - bbox[:, 0]) / (bbox[:, 2] - bbox[:, 0]),
           "fy": (m.y[meas] - bbox[:, 1]) / (bbox[:, 3] - bbox[:, 1]),
           "ra": unwrap_ra_deg(np.asarray(assoc.meas_ra_deg)[meas], assoc.field_center_deg[0]),
           "dec": np.asarray(assoc.meas_dec_deg)[meas], "mag": mag,
           "reserved": np.asarray(assoc.star_reserved)[star]}
    for col in ("dx_mas", "dy_mas", "astro_chi2", "residual_mmag", "photo_chi2"):
        out[col] = np.full(meas.size, np.nan)
    for prefix in _PREFIX.values():
        for state in ("used", "outlier", "reserved"):
            out[f"{prefix}_{state}"] = np.zeros(meas.size, bool)
    if "astrometry" in joint.problems:
        res = joint.problems["astrometry"].residuals()   # indexed by measurement row
        out.update(dx_mas=res["dx_mas"][meas], dy_mas=res["dy_mas"][meas], astro_chi2=res["chi2"][meas],
                   **{f"astro_{s}": res[s][meas] for s in ("used", "outlier", "reserved")})
    if "photometry" in joint.problems:
        res = joint.problems["photometry"].residuals()   # its own rows, named by ``meas``
        pos = np.searchsorted(meas, res["meas"])
        hit = (pos < meas.size) & (meas[np.minimum(pos, meas.size - 1)] == res["meas"])
        pos = pos[hit]
        out["mag"][pos] = res["mag"][hit]
        out["residual_mmag"][pos], out["photo_chi2"][pos] = res["residual_mmag"][hit], res["chi2"][hit]
        for s in ("used", "outlier", "reserved"):
            out[f"photo_{s}"][pos] = res[s][hit]
    out["dr_mas"] = np.hypot(out["dx_mas"], out["dy_mas"])
    return pd.DataFrame(out)


def select_visit(frame: pd.DataFrame, visit: int | None) -> pd.DataFrame:
    """Rows of ``visit`` (every row when None)."""
    return frame if visit is None else frame[frame["visit"].to_numpy() == int(visit)]


def _state_mask(frame: pd.DataFrame, kind: str, state: str) -> np.ndarray:
    return frame[f"{_PREFIX[kind]}_{state}"].to_numpy()


def bin_per_ccd(frame: pd.DataFrame, columns: list[str], cells: int = 2,
                mask: np.ndarray | None = None) -> pd.DataFrame:
    """Mean of ``columns`` in ``cells`` x ``cells`` pixel cells of every CCD (NaN values skipped).

    Returns one row per non-empty cell: ``ccd, cell, ra, dec`` (mean position, deg), ``n`` and
    the mean of each column (same names, same units).
    """
    sel = frame if mask is None else frame[mask]
    good = np.all(np.isfinite(sel[columns].to_numpy(float)), axis=1) if columns else np.ones(len(sel), bool)
    sel = sel[good]
    ix = np.clip((sel["fx"].to_numpy() * cells).astype(int), 0, cells - 1)
    iy = np.clip((sel["fy"].to_numpy() * cells).astype(int), 0, cells - 1)
    key = (sel["ccd"].to_numpy() * cells + iy) * cells + ix
    groups = pd.DataFrame({"key": key, "ra": sel["ra"].to_numpy(), "dec": sel["dec"].to_numpy(),
                           **{c: sel[c].to_numpy() for c in columns}}).groupby("key", sort=True)
    out = groups.mean()
    out.insert(0, "n", groups.size())
    out.insert(0, "cell", out.index.to_numpy() % (cells * cells))
    out.insert(0, "ccd", out.index.to_numpy() // (cells * cells))
    return out.reset_index(drop=True)


def bin_on_sky(ra: np.ndarray, dec: np.ndarray, values: np.ndarray, n_bins: int = 24):
    """Mean of ``values`` on a regular (ra, dec) grid of ``n_bins`` bins along the longer side.

    Returns
    -------
    ra_edges : ndarray, shape (nx + 1,)
    dec_edges : ndarray, shape (ny + 1,)
    mean : ndarray, shape (ny, nx)
        NaN in empty bins; same unit as ``values``.
    count : ndarray of int, shape (ny, nx)
    """
    good = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(values)
    ra, dec, values = ra[good], dec[good], values[good]
    if ra.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.full((1, 1), np.nan), np.zeros((1, 1), int)
    cos_dec = max(np.cos(np.radians(np.median(dec))), 1e-3)
    span = max(np.ptp(ra) * cos_dec, np.ptp(dec), 1e-9)
    step = span / n_bins
    nx = max(int(np.ceil(np.ptp(ra) * cos_dec / step)), 1)
    ny = max(int(np.ceil(np.ptp(dec) / step)), 1)
    ra_edges = np.linspace(ra.min(), ra.max(), nx + 1)
    dec_edges = np.linspace(dec.min(), dec.max(), ny + 1)
    count = np.histogram2d(dec, ra, [dec_edges, ra_edges])[0]
    total = np.histogram2d(dec, ra, [dec_edges, ra_edges], weights=values)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return ra_edges, dec_edges, mean, count.astype(int)


def whisker_key_mas(lengths_mas: np.ndarray) -> float:
    """A round key length (1, 2 or 5 x 10^k mas) at or above the 90th percentile of ``lengths_mas``."""
    finite = np.asarray(lengths_mas, float)
    finite = finite[np.isfinite(finite)]
    top = float(np.percentile(finite, 90)) if finite.size else 1.0
    top = max(top, 1e-3)
    power = 10.0 ** np.floor(np.log10(top))
    return float(next(f * power for f in (1, 2, 5, 10) if f * power >= top))


def residual_whiskers(frame: pd.DataFrame, visit: int | None = None, cells: int = 2) -> hv.Overlay:
    """Mean astrometric residual (dx, dy) in ``cells`` x ``cells`` cells of every CCD, on the sky.

    Each cell is a dot at the mean position of its (fitted, not outlier) measurements with a
    whisker from it along the mean residual; a key whisker below the field gives the scale in mas.
    Whiskers point along the residual on the sky: east (+RA) is to the left.
    """
    sel = select_visit(frame, visit)
    bins = bin_per_ccd(sel, ["dx_mas", "dy_mas"], cells, mask=_state_mask(sel, "astrometry", "used"))
    title = f"Astrometric residuals, visit {visit}" if visit is not None else "Astrometric residuals"
    ra, dec = bins["ra"].to_numpy(), bins["dec"].to_numpy()
    cos_dec = np.cos(np.radians(dec))
    med_cos = float(np.median(cos_dec)) if len(bins) else 1.0
    span = max(np.ptp(ra) * med_cos, np.ptp(dec), 1e-6) if len(bins) else 1.0
    spacing_deg = span / np.sqrt(max(len(bins), 1))
    key_mas = whisker_key_mas(np.hypot(bins["dx_mas"], bins["dy_mas"]))
    deg_per_mas = 0.9 * spacing_deg / key_mas
    bins["ra_end"] = ra + bins["dx_mas"].to_numpy() * deg_per_mas / cos_dec
    bins["dec_end"] = dec + bins["dy_mas"].to_numpy() * deg_per_mas
    vd = ["dx_mas", "dy_mas", "n", "ccd"]
    whiskers = hv.Segments(bins, ["ra", "dec", "ra_end", "dec_end"], vd).opts(
        color="black", line_width=1.5, framewise=True)
    dots = hv.Points(bins, ["ra", "dec"], vd).opts(color="black", size=3, tools=["hover", "tap"], framewise=True)
    x_key, y_key = (float(ra.max()), float(dec.min()) - spacing_deg) if len(bins) else (0.0, 0.0)
    key = hv.Segments([(x_key, y_key, x_key - key_mas * deg_per_mas / med_cos, y_key)],
                      ["ra", "dec", "ra_end", "dec_end"]).opts(color="#d62728", line_width=3, framewise=True)
    label = hv.Text(x_key, y_key - 0.4 * spacing_deg, f"{key_mas:g} mas" if len(bins) else "",
                    halign="left", fontsize=9).opts(framewise=True)
    return (whiskers * dots * key * label).opts(
        title=title, invert_xaxis=True, xlabel="RA (deg)", ylabel="Dec (deg)", data_aspect=1,
        responsive=True, min_height=420, active_tools=["wheel_zoom"])


def residual_points(frame: pd.DataFrame, kind: str, state: str, x: str | None = None,
                    y: str | None = None) -> hv.Points:
    """The measurements of one state (``used``/``outlier``/``reserved``) of fit ``kind`` as points.

    Default axes: astrometry ``dx_mas`` vs ``dy_mas``; photometry ``mag`` vs ``residual_mmag``.
    Colour and marker from :data:`STATE_COLORS`; the label is the state (for the legend).
    """
    x = x or ("dx_mas" if kind == "astrometry" else "mag")
    y = y or ("dy_mas" if kind == "astrometry" else "residual_mmag")
    sel = frame[_state_mask(frame, kind, state)]
    sel = sel[np.isfinite(sel[x].to_numpy(float)) & np.isfinite(sel[y].to_numpy(float))]
    vdims = [c for c in ("star", "visit", "detector") if c not in (x, y)]
    kdims = [hv.Dimension(c, label=_LABELS.get(c, (c, None))[0], unit=_LABELS.get(c, (c, None))[1]) for c in (x, y)]
    return hv.Points(sel[[x, y, *vdims]], kdims, vdims, label=state).opts(
        color=STATE_COLORS[state], marker=_MARKERS[state], size=4 if state == "used" else 7,
        alpha=0.5 if state == "used" else 0.9, tools=["hover", "tap"], framewise=True)


def rasterize_points(points: hv.Points, max_points: int = RASTERIZE_ABOVE, dynamic: bool = False):
    """``points`` unchanged up to ``max_points``; beyond, rasterised (datashader) or subsampled.

    With ``dynamic=True`` (``points`` may then be a DynamicMap) the raster follows zooming; the
    static form suits the HTML report. Subsampling keeps a seeded random ``max_points``.
    """
    if not isinstance(points, hv.DynamicMap) and len(points) <= max_points:
        return points
    try:
        from holoviews.operation.datashader import rasterize
    except ImportError:
        if isinstance(points, hv.DynamicMap):
            return points.apply(rasterize_points, max_points=max_points)
        keep = np.sort(np.random.default_rng(0).choice(len(points), max_points, replace=False))
        return points.iloc[keep]
    return rasterize(points, dynamic=dynamic).opts(cmap="Blues", cnorm="eq_hist", tools=["hover", "tap"])


def _states(frame: pd.DataFrame, kind: str, x=None, y=None, max_points: int = RASTERIZE_ABOVE) -> list:
    layers = [residual_points(frame, kind, s, x, y) for s in STATE_COLORS]
    return [rasterize_points(layers[0], max_points), *layers[1:]]


def residual_scatter(frame: pd.DataFrame, visit: int | None = None,
                     max_points: int = RASTERIZE_ABOVE) -> hv.Overlay:
    """Astrometric residuals dx vs dy (mas) of one visit: fitted, outliers (red x), reserved."""
    layers = _states(select_visit(frame, visit), "astrometry", max_points=max_points)
    return hv.Overlay(layers).opts(
        title=f"dx vs dy, visit {visit}" if visit is not None else "dx vs dy", data_aspect=1, responsive=True, min_height=420, legend_position="top_right")


def _histogram(values: np.ndarray, col: str, state: str, edges: np.ndarray) -> hv.Histogram:
    counts = np.histogram(values[np.isfinite(values)], edges)[0]
    name, unit = _LABELS[col]
    return hv.Histogram((edges, counts), kdims=[hv.Dimension(col, label=name, unit=unit)], vdims=["count"],
                        label=state).opts(fill_color=STATE_COLORS[state], fill_alpha=0.5,
                                          line_color=STATE_COLORS[state], framewise=True)


def residual_histogram(frame: pd.DataFrame, col: str, visit: int | None = None, n_bins: int = 60) -> hv.Overlay:
    """Histogram of one residual column (``dx_mas``, ``dy_mas`` or ``residual_mmag``) of a visit.

    Two layers, fitted then reserved measurements; outliers are left out (their count is in the
    title). The range is symmetric and holds 99.5 % of the fitted residuals.
    """
    kind = "photometry" if col == "residual_mmag" else "astrometry"
    sel = select_visit(frame, visit)
    values = sel[col].to_numpy(float)
    used = _state_mask(sel, kind, "used") & np.isfinite(values)
    half = max(float(np.percentile(np.abs(values[used]), 99.5)), 1e-6) if used.any() else 1.0
    edges = np.linspace(-half, half, n_bins + 1)
    n_out = int(np.count_nonzero(_state_mask(sel, kind, "outlier")))
    reserved = _state_mask(sel, kind, "reserved")
    hists = [_histogram(values[used], col, "used", edges), _histogram(values[reserved], col, "reserved", edges)]
    return hv.Overlay(hists).opts(title=f"{_LABELS[col][0]} ({n_out} outliers not shown)", min_height=300,
                                  responsive=True)


def residual_histograms(frame: pd.DataFrame, visit: int | None = None, n_bins: int = 60) -> hv.Layout:
    """:func:`residual_histogram` of dx, dy (mas) and of the magnitude residual (mmag), side by side."""
    return hv.Layout([residual_histogram(frame, c, visit, n_bins)
                      for c in ("dx_mas", "dy_mas", "residual_mmag")]).cols(3)


def residual_vs_mag(frame: pd.DataFrame, kind: str, visit: int | None = None,
                    max_points: int = RASTERIZE_ABOVE) -> hv.Overlay:
    """Residual against magnitude: ``dr_mas`` = hypot(dx, dy) for astrometry, ``residual_mmag``
    for photometry, against ``mag`` (AB). Fitted, outliers and reserved as in the scatter."""
    y = "dr_mas" if kind == "astrometry" else "residual_mmag"
    layers = _states(select_visit(frame, visit), kind, "mag", y, max_points)
    return hv.Overlay(layers).opts(
        title=f"{kind} residual vs magnitude" + (f", visit {visit}" if visit is not None else ""),
        responsive=True, min_height=420, legend_position="top_left")


def photometry_residual_map(frame: pd.DataFrame, visit: int | None = None, n_bins: int = 24) -> hv.QuadMesh:
    """Mean photometric residual (mmag, fitted measurements) on a regular RA/Dec grid."""
    sel = select_visit(frame, visit)
    sel = sel[_state_mask(sel, "photometry", "used")]
    ra_e, dec_e, mean, _ = bin_on_sky(sel["ra"].to_numpy(), sel["dec"].to_numpy(),
                                          sel["residual_mmag"].to_numpy(float), n_bins)
    lim = float(np.nanmax(np.abs(mean))) if np.isfinite(mean).any() else 1.0
    ra_c, dec_c = 0.5 * (ra_e[1:] + ra_e[:-1]), 0.5 * (dec_e[1:] + dec_e[:-1])
    return hv.QuadMesh((ra_c, dec_c, mean), ["ra", "dec"], ["residual_mmag"]).opts(
        cmap="RdBu_r", clim=(-lim, lim), colorbar=True, invert_xaxis=True, data_aspect=1,
        xlabel="RA (deg)", ylabel="Dec (deg)", clabel="mean residual (mmag)", tools=["hover", "tap"],
        title="Photometric residual" + (f", visit {visit}" if visit is not None else ""),
        responsive=True, min_height=420, framewise=True)


def zero_point_grid(photometry, field, visit: int, n: int = 12, astrometry=None,
                    center_ra_deg: float | None = None) -> dict:
    """The fitted zero point of every CCD of ``visit`` on an ``n`` x ``n`` grid of pixel cells.

    Parameters
    ----------
    photometry : PhotometryProblem
        Its ``zp_mag(ccd, x, y)`` is evaluated at the cell centres.
    field : Field
    visit : int
    n : int
        Cells per CCD side.
    astrometry : AstrometryProblem, optional
        Maps cell corners to the sky with the fitted model; the input WCS otherwise.
    center_ra_deg : float, optional
        RA to unwrap around (default: the visit's centre).

    Returns
    -------
    dict
        ``ccd`` (n_ccd,), ``x, y`` (n_ccd, n, n) cell centres (px), ``zp_mag`` (n_ccd, n, n),
        ``dzp_mmag`` (n_ccd, n, n) relative to the mean over the visit's cells, ``ra, dec``
        (n_ccd, n + 1, n + 1) cell corners (deg).
    """
    ccds = field.ccd_images
    rows = np.flatnonzero(ccds.visit == int(visit))
    fr = (np.arange(n) + 0.5) / n
    fe = np.arange(n + 1) / n
    x0, y0, x1, y1 = (ccds.bbox[rows, k][:, None, None] for k in range(4))
    xc = x0 + (x1 - x0) * fr[None, None, :]
    yc = y0 + (y1 - y0) * fr[None, :, None]
    xc, yc = np.broadcast_to(xc, (rows.size, n, n)), np.broadcast_to(yc, (rows.size, n, n))
    zp = photometry.zp_mag(np.repeat(rows, n * n), xc.ravel(), yc.ravel()).reshape(rows.size, n, n)
    ra = np.empty((rows.size, n + 1, n + 1))
    dec = np.empty_like(ra)
    xe, ye = np.meshgrid(fe, fe)
    for k, ccd in enumerate(rows):    # one call per CCD of the visit, vectorised over its corners
        bx0, by0, bx1, by1 = ccds.bbox[ccd]
        px, py = bx0 + (bx1 - bx0) * xe.ravel(), by0 + (by1 - by0) * ye.ravel()
        if astrometry is not None:
            r, d = astrometry.pixel_to_sky(int(ccd), px, py)
        else:
            r, d = ccds.wcs[ccd].all_pix2world(px, py, 0)
        ra[k], dec[k] = np.reshape(r, (n + 1, n + 1)), np.reshape(d, (n + 1, n + 1))
    center = float(np.median(ra)) if center_ra_deg is None else center_ra_deg
    return {"ccd": rows, "x": xc, "y": yc, "zp_mag": zp, "dzp_mmag": 1000.0 * (zp - np.nanmean(zp)),
            "ra": unwrap_ra_deg(ra, center), "dec": dec}


def zero_point_map(grid: dict, visit: int | None = None) -> hv.QuadMesh:
    """The zero point of :func:`zero_point_grid` relative to its visit mean (mmag) on the sky.

    One curvilinear mesh holds every CCD: the CCD grids are stacked along one axis with a row of
    empty (NaN) cells between neighbours, so bokeh draws a single glyph (one mesh per CCD is
    ~15x slower to render).
    """
    n_ccd = grid["ccd"].size
    if n_ccd == 0:
        return hv.QuadMesh(([0, 1], [0, 1], np.full((1, 1), np.nan)), ["ra", "dec"], ["dzp_mmag"])
    n = grid["dzp_mmag"].shape[1]
    ra = grid["ra"].reshape(n_ccd * (n + 1), n + 1)
    dec = grid["dec"].reshape(n_ccd * (n + 1), n + 1)
    z = np.full((n_ccd, n + 1, n), np.nan)
    z[:, :n] = grid["dzp_mmag"]
    z = z.reshape(n_ccd * (n + 1), n)[:-1]
    lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    return hv.QuadMesh((ra, dec, z), ["ra", "dec"], ["dzp_mmag"]).opts(
        cmap="RdBu_r", clim=(-lim, lim) if lim > 0 else (-1, 1), colorbar=True, tools=["hover"],
        clabel="zero point - visit mean (mmag)", invert_xaxis=True, data_aspect=1, xlabel="RA (deg)",
        ylabel="Dec (deg)", title="Fitted zero point" + (f", visit {visit}" if visit is not None else ""),
        responsive=True, min_height=420, line_alpha=0, framewise=True)


def star_measurements(frame: pd.DataFrame, star: int) -> pd.DataFrame:
    """Every measurement of ``star`` across visits, sorted by visit: :data:`STAR_TABLE_COLUMNS`
    (x, y px; dx, dy mas; residual mmag; outlier flags of each fit; reserved)."""
    rows = frame[frame["star"].to_numpy() == int(star)]
    return rows.sort_values(["visit", "detector"])[STAR_TABLE_COLUMNS].reset_index(drop=True)


def star_residuals(frame: pd.DataFrame, star: int) -> hv.Layout:
    """Residuals of one star per visit: dx and dy (mas), and the magnitude residual (mmag)."""
    t = star_measurements(frame, star)
    outlier = t["astro_outlier"] | t["photo_outlier"]
    visit = t["visit"].astype(str)
    astro = hv.Overlay([hv.Scatter((visit, t[c]), "visit", "mas", label=c[:2]).opts(size=8, marker=mk)
                        for c, mk in (("dx_mas", "circle"), ("dy_mas", "square"))]).opts(
        title=f"Star {star}: astrometric residuals", responsive=True, min_height=260)
    photo = hv.Scatter((visit, t["residual_mmag"], outlier.map({True: "outlier", False: "used"})),
                       "visit", ["mmag", "state"]).opts(
        size=8, color="state", cmap={"used": STATE_COLORS["used"], "outlier": STATE_COLORS["outlier"]},
        title=f"Star {star}: magnitude residual", responsive=True, min_height=260)
    return (astro + photo).cols(2)


def nearest_star(frame: pd.DataFrame, x_col: str, y_col: str, x: float, y: float) -> int | None:
    """The star of the measurement nearest (x, y) in the plot of ``y_col`` vs ``x_col``.

    Distances are in units of each column's data range, so axes of different units compare.
    Returns None when no measurement has both values.
    """
    xs, ys = frame[x_col].to_numpy(float), frame[y_col].to_numpy(float)
    good = np.isfinite(xs) & np.isfinite(ys)
    if not good.any():
        return None
    sx, sy = max(np.ptp(xs[good]), 1e-12), max(np.ptp(ys[good]), 1e-12)
    d2 = np.where(good, ((xs - x) / sx) ** 2 + ((ys - y) / sy) ** 2, np.inf)
    return int(frame["star"].to_numpy()[np.argmin(d2)])

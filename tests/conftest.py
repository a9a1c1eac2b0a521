"""Shared fixtures: a small seeded field built in memory with the real data model.

``make_field`` builds a genuine :class:`jointcal_core.data.Field` (TAN WCS per CCD, sources drawn
uniformly on each CCD) so the app can be exercised before any reader exists. The browser tests'
synthetic app (``tests/ui/synthetic_app.py``) imports it from this file.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from jointcal_core.data import CcdImages, Field, Measurements

#: pixel scale of the synthetic camera (deg / px): 0.2 arcsec
PIXEL_SCALE_DEG = 0.2 / 3600
#: CCD size in pixels (nx, ny)
CCD_SHAPE = (2048, 4096)


def _tan_wcs(ra_deg: float, dec_deg: float, crpix: tuple[float, float]) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra_deg, dec_deg]
    w.wcs.crpix = list(crpix)
    w.wcs.cd = np.array([[-PIXEL_SCALE_DEG, 0.0], [0.0, PIXEL_SCALE_DEG]])
    return w


def make_field(n_visits: int = 3, n_ccds_x: int = 2, n_ccds_y: int = 2, sources_per_ccd: int = 40,
               ra_deg: float = 150.0, dec_deg: float = 2.0, seed: int = 12345) -> Field:
    """A seeded synthetic field: visits dithered around (ra, dec), a grid of CCDs per visit.

    Visit ids are 1001, 1002, ...; detectors 0..n-1; epochs one day apart from MJD 60000.3;
    airmass 1.1 + 0.05 * k; band 'r'. Returns a real Field (measurements index ccd rows).
    """
    rng = np.random.default_rng(seed)
    nx, ny = CCD_SHAPE
    rows = []
    for k in range(n_visits):
        dra, ddec = rng.uniform(-0.02, 0.02, size=2)
        for det in range(n_ccds_x * n_ccds_y):
            i, j = det % n_ccds_x, det // n_ccds_x
            # the tangent point sits at the centre of the CCD grid; crpix is 1-based (FITS)
            crpix = ((n_ccds_x / 2 - i) * nx + 0.5, (n_ccds_y / 2 - j) * ny + 0.5)
            rows.append((1001 + k, det, _tan_wcs(ra_deg + dra, dec_deg + ddec, crpix), k))
    n = len(rows)
    ccds = CcdImages.build(
        visit=[r[0] for r in rows], detector=[r[1] for r in rows],
        bbox=np.tile([-0.5, -0.5, nx - 0.5, ny - 0.5], (n, 1)), wcs=[r[2] for r in rows],
        zp_mag=np.full(n, 31.0), mjd=[60000.3 + r[3] for r in rows],
        exptime_s=np.full(n, 30.0), airmass=[1.1 + 0.05 * r[3] for r in rows],
        band=["r"] * n, path=[f"visit{r[0]}.cat" for r in rows])
    m = sources_per_ccd * n
    flux = rng.uniform(1e3, 1e5, m)
    meas = Measurements.build(ccd=np.repeat(np.arange(n), sources_per_ccd),
                              x=rng.uniform(0, nx - 1, m), y=rng.uniform(0, ny - 1, m),
                              var_x=np.full(m, 0.01), var_y=np.full(m, 0.01),
                              flux=flux, flux_err=np.sqrt(flux))
    return Field(ccd_images=ccds, measurements=meas, band="r", inputs=tuple(sorted({r for r in ccds.path})))


@pytest.fixture
def small_field() -> Field:
    """3 visits x 4 CCDs x 40 sources."""
    return make_field()

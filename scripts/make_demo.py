"""Build the bundled demo field ``assets/demo/``: a small simulated CFHT MegaCam field.

Run from the repository root: ``python scripts/make_demo.py``. Seeded: the output is the same
on every run (up to library versions).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from jointcal_core.simulate import simulate_field, write_simulated_field

DEMO = dict(camera="megacam", n_visits=6, n_stars=4000, seed=2024, ra_deg=150.1, dec_deg=2.2, dither_deg=0.05,
            baseline_years=2.5, mag_range=(17.0, 23.5), outlier_fraction=0.01, band="r")


def main(out: Path) -> None:
    sim = simulate_field(**DEMO)
    if out.exists():
        shutil.rmtree(out)
    write_simulated_field(sim, out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {len(sim.field.ccd_images)} ccdImages, {len(sim.field.measurements)} measurements, "
          f"{len(sim.field.reference)} reference stars, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "assets" / "demo")

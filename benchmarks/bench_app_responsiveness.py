"""How quickly one browser session of the app reacts while another session runs a big fit.

Simulates a field of about 10^5 measurements (``jointcal_core.simulate``, written as LDAC files
under a temporary data root), serves ``app/main.py`` on it (``JOINTCAL_FIELD``), and in Debian's
Chromium: session A presses Associate then Run; meanwhile session B un-ticks and re-ticks a
visit in its table over and over, timing each click until its "N of M visits selected" text
changes. Prints the latencies of B (target: < 1 s while A fits) and A's fit time. Not a test.
Latest figures: ``benchmarks/README.md``, section "App".

Usage: ``.venv/bin/python benchmarks/bench_app_responsiveness.py [--visits 12] [--stars 16000]``
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(field_dir: Path, root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("panel")), "serve", "app/main.py", "--port", str(port),
           "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}"]
    env = {**os.environ, "JOINTCAL_FIELD": str(field_dir), "JOINTCAL_DATA_ROOT": str(root)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/main"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # ask for the index without following its redirect to /main: that would build a whole
        # session (loading the 10^5-measurement field) inside the poll's timeout
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            if conn.getresponse().status < 500:
                return proc, url
        except OSError:
            time.sleep(0.3)
        finally:
            conn.close()
    proc.kill()
    raise SystemExit("panel serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=12)
    parser.add_argument("--stars", type=int, default=16000)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from jointcal_core.simulate import simulate_field, write_simulated_field

    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        sim = simulate_field("megacam", n_visits=args.visits, n_stars=args.stars, seed=1)
        field_dir = write_simulated_field(sim, root / "field")
        print(f"simulated {args.visits} visits x {args.stars} stars: {len(sim.field.ccd_images)} ccdImages, "
              f"{len(sim.field.measurements)} measurements in {time.perf_counter() - t0:.1f} s")
        proc, url = _serve(field_dir, root)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                a, b = browser.new_page(), browser.new_page()
                for page in (a, b):
                    page.goto(url)
                    expect(page.locator(".run-associate button")).to_be_enabled(timeout=300_000)
                status = a.locator(".session-status")
                expect(status).to_contain_text("sources")
                n_visits = args.visits
                # the table re-ticks its rows once the page has loaded (VisitPicker.__panel__): a
                # click before that lands on an empty selection and leaves 1 visit selected
                all_selected = f"{n_visits} of {n_visits} visits selected for the fit"
                expect(b.get_by_text(all_selected)).to_be_visible(timeout=60_000)
                # a row by its visit: Tabulator re-orders its row elements, ``.first`` is not stable
                checkbox = b.locator(".visit-table .tabulator-row", has_text="1003").get_by_role("checkbox")
                expect(checkbox).to_be_checked(timeout=60_000)
                b.wait_for_timeout(2000)
                select_all = b.get_by_role("button", name="Select all visits")
                # baseline: the same clicks while no fit runs anywhere
                baseline = [_click(b, checkbox, select_all, n_visits, k) for k in range(6)]
                t_fit = time.perf_counter()
                a.locator(".run-associate button").click()
                expect(a.locator(".run-run button")).to_be_enabled(timeout=600_000)
                t_assoc = time.perf_counter() - t_fit
                a.locator(".run-run button").click()
                expect(a.locator(".run-cancel button")).to_be_enabled(timeout=60_000)
                latencies = []
                while a.locator(".run-cancel button").is_enabled():
                    latencies.append(_click(b, checkbox, select_all, n_visits, len(latencies)))
                expect(a.locator(".fit-stage")).to_contain_text("converged", timeout=600_000)
                t_total = time.perf_counter() - t_fit
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"session B with no fit running: latency median {statistics.median(baseline):.3f} s, "
          f"max {max(baseline):.3f} s; each: {' '.join(f'{x:.2f}' for x in baseline)}")
    print(f"session A: associate {t_assoc:.1f} s, associate + run {t_total:.1f} s")
    if latencies:
        print(f"session B while A fits: {len(latencies)} clicks, latency median {statistics.median(latencies):.3f} s, "
              f"max {max(latencies):.3f} s (target < 1 s)")
        print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    else:
        print("session B: the fit ended before B could click")


def _click(page, checkbox, select_all, n_visits: int, k: int) -> float:
    """Alternately untick the first visit and press "Select all visits"; seconds until the page shows it."""
    from playwright.sync_api import expect

    target, expected = ((checkbox, f"{n_visits - 1} of {n_visits} visits selected for the fit") if k % 2 == 0
                        else (select_all, f"{n_visits} of {n_visits} visits selected for the fit"))
    t = time.perf_counter()
    target.click()
    expect(page.get_by_text(expected)).to_be_visible(timeout=60_000)
    elapsed = time.perf_counter() - t
    # untimed: the next click must start from the ticks the server sent, or it toggles the wrong state
    (expect(checkbox).not_to_be_checked if k % 2 == 0 else expect(checkbox).to_be_checked)(timeout=60_000)
    return elapsed


if __name__ == "__main__":
    main()

"""Does the server keep memory of closed browser sessions? RSS of ``panel serve`` over 20 sessions.

Serves ``app/main.py`` on the bundled demo (``JOINTCAL_FIELD=assets/demo``) on a free port of
127.0.0.1 with a short unused-session lifetime, then, in Debian's Chromium driven by Playwright,
``--sessions`` times: opens the app, waits for the visit table to render, closes the tab and polls
the server log until Bokeh reports that session discarded ("Discarding session", debug level),
then reads the server's VmRSS from ``/proc/<pid>/status``. Prints the RSS after the first
open/close (warm-up) and after the last, and the growth (target < 50 MB). Not a test.

Usage: ``.venv/bin/python benchmarks/bench_session_memory.py [--sessions 20]``
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: unused sessions are checked for every this many ms, and a closed one is discarded at once
_CHECK_MS = 500
_POLL_S = 0.2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _serve(root: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("panel")), "serve", "app/main.py", "--port", str(port),
           "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}",
           "--check-unused-sessions", str(_CHECK_MS), "--unused-session-lifetime", str(_CHECK_MS),
           "--log-level", "debug"]
    env = {**os.environ, "JOINTCAL_FIELD": str(REPO / "assets" / "demo"), "JOINTCAL_DATA_ROOT": str(root)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"panel serve exited:\n{log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
            return proc, f"http://127.0.0.1:{port}/main"
        except OSError:
            time.sleep(_POLL_S)
    proc.kill()
    raise SystemExit("panel serve did not start")


def _destroyed(log_path: Path) -> int:
    """How many sessions the server has destroyed so far (Bokeh logs each one)."""
    return log_path.read_text(errors="replace").count("Discarding session")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        log_path = Path(tmp) / "panel-serve.log"
        proc, url = _serve(root, log_path)
        rss = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
                context = browser.new_context()
                for k in range(args.sessions):
                    t0 = time.perf_counter()
                    page = context.new_page()
                    page.goto(url)
                    expect(page.locator(".visit-table .tabulator-row").first).to_be_visible(timeout=120_000)
                    page.close()
                    deadline = time.monotonic() + 60
                    while _destroyed(log_path) < k + 1:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"session {k + 1} was not destroyed within 60 s")
                        time.sleep(_POLL_S)
                    rss.append(_rss_mb(proc.pid))
                    print(f"session {k + 1:2d}: open+close {time.perf_counter() - t0:5.1f} s, "
                          f"server RSS {rss[-1]:7.1f} MB", flush=True)
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    growth = rss[-1] - rss[0]
    print(f"RSS after the first session (warm-up): {rss[0]:.1f} MB; after session {len(rss)}: {rss[-1]:.1f} MB; "
          f"growth {growth:+.1f} MB over {len(rss) - 1} sessions (target < 50 MB)")


if __name__ == "__main__":
    main()

"""Browser-test infrastructure: a real ``panel serve`` and Debian's Chromium through Playwright.

- ``app_server``: one ``panel serve app/main.py tests/ui/synthetic_app.py`` on a free port of
  127.0.0.1 for the whole run, started in a subprocess and awaited by polling its URL. Its data
  root is a temporary directory holding a ``field`` folder and a symlink leading out of it, and
  ``/main`` starts on the empty state (``JOINTCAL_FIELD=none``).
- ``demo_server``: ``panel serve app/main.py`` opening the bundled demo (``JOINTCAL_FIELD``).
- ``browser_context``: ``/usr/bin/chromium`` (never a Playwright-downloaded browser) headless,
  with a fresh user-data directory.
- ``page``: a new tab that records console errors, page errors and every request URL.
- ``screenshot(page, name)``: saves ``test-artifacts/ui/<name>.png`` (git-ignored).

When a browser test fails, the ``page`` fixture prints what the run's log needs to tell a race
from a bug: the page's last console messages, when its Bokeh websocket opened (and closed, if it did), the
failure's screenshot (``test-artifacts/ui/FAILED-<test>.png``) and the tail of the server's log.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo"
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT_S = 90
#: how long an expect() waits for its condition; generous because CI shares two cores
EXPECT_TIMEOUT_MS = 20_000


@dataclass
class AppServer:
    base_url: str
    data_root: Path
    outside: Path
    log_path: Path | None = None

    def url(self, app: str = "main") -> str:
        return f"{self.base_url}/{app}"


@dataclass
class PageLog:
    console_errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    #: every console message as "type: text", for the report of a failed test
    console: list = field(default_factory=list)
    #: the page's websockets (Bokeh's connection to its session), opened and closed, with times
    sockets: list = field(default_factory=list)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Poll ``url`` until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        try:  # doubles as the pause between polls, and notices a crashed server at once
            proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"panel serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
    pytest.fail(f"panel serve did not answer {url} within {SERVER_START_TIMEOUT_S} s:\n"
                f"{log_path.read_text()[-3000:]}")


def _serve(tmp_path_factory, scripts: list[str], env: dict) -> tuple[subprocess.Popen, str, Path]:
    """Start ``panel serve scripts`` on a free port of 127.0.0.1 and wait until it answers."""
    port = _free_port()
    panel = Path(sys.executable).with_name("panel")
    cmd = [str(panel), "serve", *scripts, "--port", str(port), "--address", "127.0.0.1",
           f"--allow-websocket-origin=127.0.0.1:{port}", "--warm"]
    log_path = tmp_path_factory.mktemp("server") / "panel-serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(f"{base}/", proc, log_path)  # the index answers once --warm is done
    except BaseException:
        _stop(proc)
        raise
    return proc, base, log_path


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> AppServer:
    """A real ``panel serve`` of the app (and of the synthetic-field app) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("data_root")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.cat").write_text("not for the app\n")
    (root / "field").mkdir()
    (root / "leak").symlink_to(outside, target_is_directory=True)
    proc, base, log_path = _serve(tmp_path_factory, ["app/main.py", "tests/ui/synthetic_app.py"],
                                  {"JOINTCAL_DATA_ROOT": str(root), "JOINTCAL_FIELD": "none"})
    _SERVER_LOGS.append(log_path)
    try:
        yield AppServer(base_url=base, data_root=root, outside=outside, log_path=log_path)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory) -> AppServer:
    """``panel serve app/main.py`` opening the bundled demo (``JOINTCAL_FIELD``); its data root
    is an empty temporary folder (where "write to server" may write)."""
    if not DEMO.is_dir():
        pytest.skip("the bundled demo field (assets/demo) is not there")
    root = tmp_path_factory.mktemp("demo_root")
    outside = tmp_path_factory.mktemp("demo_outside")
    proc, base, log_path = _serve(tmp_path_factory, ["app/main.py"],
                                  {"JOINTCAL_DATA_ROOT": str(root), "JOINTCAL_FIELD": str(DEMO)})
    _SERVER_LOGS.append(log_path)
    try:
        yield AppServer(base_url=base, data_root=root, outside=outside, log_path=log_path)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    """Headless Debian Chromium with a fresh profile (Playwright's own browsers are never used)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 950}, accept_downloads=True)
        context.set_default_timeout(2 * EXPECT_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


#: the log files of the servers started in this run (their tails go into a failed test's report)
_SERVER_LOGS: list[Path] = []

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so the ``page`` fixture knows it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _report_failure(tab, log: PageLog, name: str) -> None:
    """Print the page's state at a failure (pytest shows it under "Captured stdout teardown")."""
    print(f"--- browser state after the failure of {name}")
    print("websockets:", *log.sockets, sep="\n  ")
    try:
        print("screenshot:", screenshot(tab, f"FAILED-{name}"))
    except Exception as exc:  # noqa: BLE001
        print(f"no screenshot: {exc}")
    print("last console messages:", *log.console[-30:], sep="\n  ")
    for path in _SERVER_LOGS:
        tail = path.read_text(errors="replace").splitlines()[-40:] if path.exists() else []
        print(f"tail of {path}:", *tail, sep="\n  ")


@pytest.fixture
def page(browser_context, request):
    """A new tab; ``page.jointcal_log`` holds its console errors and requested URLs."""
    tab = browser_context.new_page()
    log = PageLog()

    def on_console(msg):
        log.console.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            log.console_errors.append(msg.text)
    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: log.console_errors.append(f"page error: {exc}"))
    tab.on("request", lambda req: log.requests.append(req.url))
    start = time.monotonic()

    def on_socket(ws):
        log.sockets.append(f"{time.monotonic() - start:.1f} s: opened {ws.url}")
        ws.on("close", lambda _ws: log.sockets.append(f"{time.monotonic() - start:.1f} s: closed {ws.url}"))
    tab.on("websocket", on_socket)
    tab.jointcal_log = log
    yield tab
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        _report_failure(tab, log, request.node.name)
    tab.close()


def wait_for_value(page, js: str, expected, timeout_ms: float, what: str) -> None:
    """Poll ``page.evaluate(js)`` until it equals ``expected``; on timeout fail with every value
    seen and when (``page.wait_for_function`` only says that it timed out)."""
    start = time.monotonic()
    seen: list[tuple[float, object]] = []
    while True:
        value = page.evaluate(js)
        if not seen or seen[-1][1] != value:
            seen.append((round(time.monotonic() - start, 1), value))
        if value == expected:
            return
        if time.monotonic() - start > timeout_ms / 1000.0:
            pytest.fail(f"{what}: expected {expected!r} within {timeout_ms / 1000:.0f} s; "
                        f"values seen (seconds, value): {seen}")
        page.wait_for_timeout(200)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/ui/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""A real ``streamlit run dashboard/Home.py`` server and headless Chromium, for the browser benchmarks.

Used by ``dashboard/benchmark.py`` (``conceptlens bench dashboard`` and ``conceptlens bench load``):

* :class:`StreamlitServer` starts the app on a free localhost port with a bundles folder, waits for
  ``/_stcore/health`` and reads the server's resident memory from ``/proc``;
* :data:`TIMING_SCRIPT` runs in every page the browser opens and stamps, in the page's own clock
  (``performance.now()``, milliseconds since navigation started), when the main area first showed
  anything (``feedback``: a title, a spinner, a progress bar) and when the page was *ready*: the script
  run finished, the title is drawn, no spinner is left, every chart has drawn and every image has loaded.

Nothing here imports Streamlit or the models: the server is a child process, the browser another.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOME_PAGE = HERE / "Home.py"
# The smallest Streamlit app (a title): what the same browsers cost with nothing of ConceptLens in it.
FLOOR_APP = HERE / "floor_app.py"
REPO_ROOT = HERE.parent
CHROMIUM = os.environ.get("CONCEPTLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
VIEWPORT = {"width": 1400, "height": 1000}
HEALTH_TIMEOUT = 120.0  # seconds for a fresh server to answer /_stcore/health

# Stamps __cl.feedback and __cl.ready (ms since navigation start, or since __cl.mark for a click).
# A MutationObserver sees every change of the app's script state, so a run too short to poll is not missed.
TIMING_SCRIPT = """
(() => {
  const cl = (window.__cl = { mark: 0, started: null, feedback: null, ready: null, ran: false });
  const main = () => document.querySelector("[data-testid='stMain']");
  const state = () => {
    const app = document.querySelector("[data-testid='stApp']");
    return app ? app.getAttribute("data-test-script-state") : null;
  };
  const shown = (root, selector) => [...root.querySelectorAll(selector)].some((e) => e.offsetParent !== null);
  const ready = () => {
    const m = main();
    if (!cl.ran || state() !== "notRunning" || !m || !shown(m, "h1")) return false;
    const waiting = "[data-testid='stSpinner'], [data-testid='stSkeleton'], [data-stale='true']";
    if (m.querySelector(waiting)) return false;
    for (const chart of m.querySelectorAll("[data-testid='stPlotlyChart']"))
      if (!chart.querySelector(".main-svg")) return false;
    for (const image of m.querySelectorAll("img")) if (!image.complete) return false;
    return true;
  };
  const busy = (s) => s === "running" || s === "rerunRequested";
  const check = (records = []) => {
    const now = performance.now() - cl.mark;
    // A run can start and end between two looks: a recorded change away from a busy script state also
    // says the page ran since the mark, and so does a main area without its title (a navigation empties
    // it before its run). New content alone does not: a late chart or image of the page left behind can
    // land just after a click, and the page would read as ready before the click's run began.
    const m = main();
    for (const r of records) if (busy(r.oldValue)) cl.ran = true;
    if (busy(state()) || !m || !shown(m, "h1")) cl.ran = true;
    if (cl.ran && cl.started === null) cl.started = now;
    if (cl.feedback === null && m && shown(m, "h1, [data-testid='stSpinner'], [data-testid='stProgress']"))
      cl.feedback = now;
    if (cl.ready === null && ready()) cl.ready = now;
  };
  new MutationObserver(check).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeOldValue: true,
    attributeFilter: ["data-test-script-state", "data-stale"],
  });
  setInterval(() => check(), 10);  // images finish loading and charts draw without a DOM mutation we watch
  window.__clReadyNow = () => { cl.ran = true; return ready(); };
  window.__clRestart = () => {
    cl.mark = performance.now(); cl.started = null; cl.feedback = null; cl.ready = null; cl.ran = false;
  };
})();
"""
# [feedback, ready] once ready; "idle" when ``grace`` ms passed since the mark and no run began (an action
# that ran nothing: a click before the widget listened, an option already chosen); else null.
READ_TIMES = """(grace) => {
  const cl = window.__cl;
  if (!cl) return null;
  if (cl.ready !== null) return [cl.feedback, cl.ready];
  if (grace && cl.started === null && performance.now() - cl.mark > grace) return "idle";
  return null;
}"""
# seconds an action may take to start a script run (a busy server starts late) before it counts as lost
NO_RUN_GRACE = 15.0

PAGE_STATE = """() => ({
  script: document.querySelector("[data-testid='stApp']")?.getAttribute("data-test-script-state"),
  timing: window.__cl,
  titles: document.querySelectorAll("[data-testid='stMain'] h1").length,
  stale: document.querySelectorAll("[data-stale='true']").length,
  spinners: document.querySelectorAll("[data-testid='stMain'] [data-testid='stSpinner']").length,
  loading: [...document.querySelectorAll("[data-testid='stMain'] img")].filter((i) => !i.complete).length,
})"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system) used so far by process ``pid``, or by the whole machine when None (busy
    time of every core from ``/proc/stat``); None off Linux or for a process that is gone."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        if pid is None:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
            return (user + nice + system + irq + softirq + steal) / ticks
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    except (OSError, ValueError, IndexError):
        return None


def process_memory_mib(pid: int) -> dict[str, float | None]:
    """Resident memory now (VmRSS) and at its peak (VmHWM) of a process, in MiB (None off Linux)."""
    found: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = {"VmRSS:": "rss_mib", "VmHWM:": "peak_rss_mib"}.get(
                line.split(maxsplit=1)[0] if line else ""
            )
            if key:
                found[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float = HEALTH_TIMEOUT) -> None:
    """Return once the server at ``url`` answers ``/_stcore/health``; ValueError naming ``log`` if the
    process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ValueError(f"The streamlit server exited with status {process.returncode}; see {log}.")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise ValueError(f"The streamlit server did not answer within {timeout:.0f} s; see {log}.")


class StreamlitServer:
    """``streamlit run Home.py`` (or another ``script``) on a free port with ``bundles``; a ``with`` block
    starts and stops it.

    Everything but the port comes from the repository's ``.streamlit/config.toml`` (headless, no usage
    statistics, no external-IP look-up). The server's output goes to ``log``.
    """

    def __init__(
        self, bundles: Path, log: Path, env: dict[str, str] | None = None, script: Path = HOME_PAGE
    ) -> None:
        """``script``: the app to run (another than Home only for the load benchmark's floor)."""
        self.bundles, self.log, self.extra_env, self.script = bundles, log, env or {}, script
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def __enter__(self) -> StreamlitServer:
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = os.environ | {"CONCEPTLENS_BUNDLES": str(self.bundles.resolve()), "PYTHONPATH": path}
        port = ["--server.port", str(self.port)]
        command = [sys.executable, "-m", "streamlit", "run", str(self.script), *port]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in __exit__
        start = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env | self.extra_env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        try:
            wait_for_health(self.url, self.process, self.log)
        except BaseException:
            self.__exit__()
            raise
        self.start_seconds = time.perf_counter() - start
        return self

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.process.pid) if self.process else None

    def memory(self) -> dict[str, float | None]:
        return process_memory_mib(self.process.pid) if self.process else process_memory_mib(-1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def check_browser() -> None:
    """Raise ValueError with one sentence when Chromium or playwright is missing."""
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed (pip install playwright)")
    if problems:
        raise ValueError("The browser benchmarks need a headless browser: " + "; ".join(problems) + ".")


async def launch(playwright):
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))


async def new_context(browser):
    context = await browser.new_context(viewport=VIEWPORT)
    await context.add_init_script(TIMING_SCRIPT)
    return context


async def wait_ready(page, timeout: float, grace: float | None = None) -> tuple[float, float] | None:
    """(feedback, ready) in seconds, as stamped by :data:`TIMING_SCRIPT` once the page is ready; None when
    ``grace`` seconds passed since the mark without a script run starting."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        handle = await page.wait_for_function(
            READ_TIMES, arg=(grace or 0) * 1000, timeout=timeout * 1000, polling=20
        )
    except PlaywrightTimeout:
        state = await page.evaluate(PAGE_STATE)
        raise ValueError(f"{page.url} was not ready within {timeout:g} s (page state: {state}).") from None
    found = await handle.json_value()
    if found == "idle":
        return None
    feedback, ready = found
    return (None if feedback is None else feedback / 1000), ready / 1000


async def open_timed(page, url: str, timeout: float) -> tuple[float, float]:
    """Navigate to ``url``; seconds from the navigation's start to first feedback and to the page ready."""
    await page.goto(url, wait_until="commit", timeout=timeout * 1000)
    return await wait_ready(page, timeout)


async def act_timed(
    page, action, timeout: float, what: str = "the action", grace: float = NO_RUN_GRACE
) -> tuple[float, float]:
    """Seconds from ``action()`` (an async callable: a click, a choice in a widget) to feedback and to the
    page ready again. An action that starts no script run within ``grace`` seconds is done once more (the
    widget may not have been listening yet); ValueError naming ``what`` if it again runs nothing."""
    for _ in range(2):
        await page.evaluate("() => window.__clRestart()")
        await action()
        times = await wait_ready(page, timeout, grace=grace)
        if times is not None:
            return times
    raise ValueError(f"{what} on {page.url} started no script run, twice.")


async def click_timed(page, link, timeout: float) -> tuple[float, float]:
    """Click ``link`` (in-app navigation, a tab, a button); seconds from the click to feedback and ready."""
    return await act_timed(page, link.click, timeout, what="a click")


def widget(page, key: str):
    """The element of the widget drawn with ``key`` (Streamlit gives its container the class st-key-KEY)."""
    return page.locator(f"[data-testid='stMain'] .st-key-{key}").first


async def choose(page, key: str, kind: str, option: int) -> None:
    """Choose in the widget with ``key`` as a person would: ``kind`` "select" (open the list, move down
    ``option`` places, Enter), "multiselect" (the same, adding the ``option``-th offered value, then close the
    list) or "radio" (click the ``option``-th choice)."""
    box = widget(page, key)
    if kind in ("select", "multiselect"):
        await box.locator("[role='combobox']").first.click()
        for _ in range(option):
            await page.keyboard.press("ArrowDown")
        await page.keyboard.press("Enter")
        if kind == "multiselect":
            await page.keyboard.press("Escape")
    elif kind == "radio":
        await box.locator("[role='radiogroup'] label").nth(option).click()
    else:
        raise ValueError(f"Unknown widget kind {kind!r}: choose select, multiselect or radio.")

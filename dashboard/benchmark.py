"""The dashboard's own benchmarks: page times in a real browser, upload-to-labels latency, peak memory,
and eight people at once.

    python dashboard/benchmark.py dashboard --bundles DIR [--warm-runs 5 --uploads 3 --json-out FILE]
    python dashboard/benchmark.py memory    --bundles DIR [--timeout 600 --json-out FILE]
    python dashboard/benchmark.py load      --bundles DIR [--sessions 8 --photos 3 --json-out FILE]

``conceptlens bench dashboard|memory|load`` runs this script in a child process with the same flags, so
the numbers and the JSON are the same either way. ``dashboard`` times every page as a person sees it: a
real ``streamlit run`` server and headless Chromium (``browser.py``), the first visit after a restart
(a fresh server per page) and warm visits (a click in the sidebar, and a reload); next to that, the time
the page's script takes on the server, through Streamlit's ``AppTest`` harness. ``load`` opens the
open-world page in several browser sessions at once, each uploading its own photos. That is why this
lives here and not in ``core``, which knows nothing of the dashboard. The generic parts (machine
description, table, JSON, flags, exit codes) come from ``core.bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if importlib.util.find_spec("core") is None:  # a source checkout that was not pip-installed
    sys.path.insert(0, str(REPO_ROOT))

from browser import (  # noqa: E402 (the dashboard folder, next to this file)
    FLOOR_APP,
    StreamlitServer,
    act_timed,
    check_browser,
    choose,
    click_timed,
    cpu_seconds,
    launch,
    new_context,
    open_timed,
)

from core.bench import (  # noqa: E402 (after the sys.path line above)
    DEFAULT_BUNDLES,
    DEFAULT_MEMORY_TIMEOUT,
    DEFAULT_PAGE_TIMEOUT,
    DEFAULT_PHOTOS,
    DEFAULT_SESSIONS,
    DEFAULT_UPLOADS,
    DEFAULT_WARM_RUNS,
    MAX_SESSIONS,
    add_dashboard_flags,
    add_load_flags,
    add_memory_flags,
    format_table,
    log,
    machine_info,
    report,
)
from core.settings import from_args  # noqa: E402

HOME_PAGE = HERE / "Home.py"
PAGE_FOLDERS = ("pages", "views")  # where dashboard page files have lived; Home.py is asked first
UPLOAD_KEY = "ow_upload"
LABELS_SUBHEADER = "Concept labels"
BUNDLES_ENV = "CONCEPTLENS_BUNDLES"
LIBRARIES = ("streamlit",)  # versions recorded with the machine, beyond core's usual ones
MEMORY_CHILD = "memory-child"  # the hidden sub-command the memory benchmark measures


# --------------------------------------------------------------------------------------------------
# dashboard: page render times and upload-to-labels latency
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interaction:
    """A main interaction a person has on a page, timed in the browser: in the page's tab ``tab`` (None: a
    page without tabs), set the widget with ``key`` (a ``browser.choose`` kind) to the choices in turn, one
    per warm run (a select's choice is how many places down the list it moves; a radio's the option's
    place)."""

    page: str  # the page file's stem
    name: str
    key: str
    kind: str
    choices: tuple[int, ...]
    tab: str | None = None
    # untimed (key, kind, choice) steps that bring the widget onto the page when it is not there yet
    prepare: tuple[tuple[str, str, int], ...] = ()


INTERACTIONS = (
    Interaction("hash_codes", "every image's code", "hash_matrix_view", "radio", (1, 0), tab="Codes"),
    Interaction("hash_codes", "pick a bit", "hash_bit", "select", (9, 9, 9), tab="Images that turn it on"),
    Interaction(
        "hash_codes", "look at a sub-code", "hash_pick", "radio", (1, 0), tab="Images that turn it on"
    ),
    Interaction(
        "hash_codes",
        "add a sub-code value",
        "hash_values_0",
        "multiselect",
        (2, 2, 2),
        tab="Images that turn it on",
        prepare=(("hash_pick", "radio", 1),),
    ),
    Interaction("concept_attention", "pick an image", "attn_index", "select", (25, 25, 25)),
    Interaction("concept_attention", "pick a class", "attn_class", "select", (3, 3, 3)),
    Interaction("retrieval", "pick a query", "ret_query", "select", (7, 7, 7)),
    Interaction("retrieval", "pick a query's class", "ret_class", "select", (2, 2, 2)),
    Interaction("retrieval", "pick model B", "ret_model_b", "select", (1, 1, 1)),
    Interaction("ceir_concepts", "colour the map", "ceir_colour", "radio", (1, 0), tab="Latent map"),
    Interaction(
        "ceir_concepts",
        "pick an image",
        "ceir_image",
        "select",
        (12, 12, 12),
        tab="One image: concepts and what-if",
    ),
)

_PAGE_CALL = re.compile(r"""st\.Page\(\s*["']([^"']+\.py)["']""")


def dashboard_pages(home: Path = HOME_PAGE) -> list[str]:
    """Page files (relative to Home.py's folder) in the order Home.py lists them, else found in the folders.

    Read at run time, so moving the pages (``pages/`` -> ``views/``) needs no change here.
    """
    base = home.parent
    listed = [p for p in _PAGE_CALL.findall(home.read_text(encoding="utf-8")) if (base / p).is_file()]
    if listed:
        return list(dict.fromkeys(listed))
    found = sorted(
        p for folder in PAGE_FOLDERS for p in (base / folder).glob("*.py") if p.name != "__init__.py"
    )
    return [p.relative_to(base).as_posix() for p in found]


def _check_bundles_folder(bundles: Path) -> list[Path]:
    if not bundles.is_dir():
        raise ValueError(f"The bundles folder {bundles} does not exist; pass --bundles DIR.")
    from core.bundle import find_bundles  # imports torch: only once the folder is there

    found = find_bundles(bundles)
    if not found:
        raise ValueError(f"No ConceptLens bundles were found in {bundles}; train some or pass --bundles DIR.")
    return found


class _BundlesEnv:
    """Point the dashboard at a bundles folder for the duration of a ``with`` block."""

    def __init__(self, bundles: Path) -> None:
        self.bundles, self.saved = bundles, None

    def __enter__(self) -> _BundlesEnv:
        self.saved = os.environ.get(BUNDLES_ENV)
        os.environ[BUNDLES_ENV] = str(self.bundles.resolve())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop(BUNDLES_ENV, None)
        else:
            os.environ[BUNDLES_ENV] = self.saved


def _page_errors(app) -> list[str]:
    return [str(e.value) for e in app.exception] + [str(e.value) for e in app.error]


def _with_new_errors(app, errors: list[str]) -> list[str]:
    """``errors`` and those the app shows now that are not among them (each error once over several runs)."""
    return errors + [e for e in _page_errors(app) if e not in errors]


def _timed_run(app) -> float:
    start = time.perf_counter()
    app.run()
    return time.perf_counter() - start


def _open_page(page: str, timeout: float) -> tuple[Any, float]:
    """A fresh AppTest on Home.py switched to ``page``; returns it and the first render time of the page."""
    app = AppTest.from_file(str(HOME_PAGE), default_timeout=timeout)
    app.switch_page(page)  # before the first run, so that run draws this page and not the default one
    return app, _timed_run(app)


def _wait_for_background_work(timeout: float) -> None:
    """Wait until the pages' background thread (Home's imports and warm-ups, ``lens.startup``) is done: it
    belongs to what a visited dashboard holds, and a thread still inside PyTorch when the interpreter exits
    aborts it ("terminate called without an active exception")."""
    from lens import startup

    deadline = time.monotonic() + timeout
    while startup.running() and time.monotonic() < deadline:
        time.sleep(startup.POLL_SECONDS)


def tab_sets(app) -> list[tuple[str, list[str]]]:
    """The page's stateful tab sets (``lens.tabs.lazy_tabs``): each one's key (its element id ends in it)
    and its tabs' labels."""
    found = []

    def walk(node) -> None:
        for child in getattr(node, "children", {}).values():
            if getattr(child, "type", None) == "tab_container" and child.proto.id.count("-") >= 2:
                labels = [tab.label for tab in child.children.values()]
                found.append((child.proto.id.split("-", 2)[2], labels))
            walk(child)

    walk(app._tree)
    return found


def every_tab(app) -> list[str]:
    """Open every tab of the page's stateful tab sets in turn (each is drawn only when open); the errors
    the page shows now and in those runs, each once."""
    errors = _page_errors(app)
    for key, labels in tab_sets(app):
        for label in labels:
            app.session_state[key] = label
            app.run()
            errors = _with_new_errors(app, errors)
    return errors


def _page_timing(page: str, warm_runs: int, timeout: float) -> dict[str, Any]:
    app, first = _open_page(page, timeout)
    errors = _page_errors(app)  # of every run, not only the last: a first visit can fail where reruns do not
    warm = []
    for _ in range(warm_runs):
        warm.append(_timed_run(app))
        errors = _with_new_errors(app, errors)
    return {
        "page": page,
        "first_seconds": first,
        "warm_median_seconds": statistics.median(warm),
        "warm_seconds": warm,
        "errors": errors,
    }


def _upload_image(number: int) -> tuple[str, bytes, str]:
    """A distinct ToyBirds PNG per upload, so the page cannot answer from its label cache."""
    from core.data.toybirds import render_sample

    buffer = io.BytesIO()
    render_sample("bench", number, seed=0, image_size=64).image.save(buffer, format="PNG")
    return f"bench-bird-{number}.png", buffer.getvalue(), "image/png"


def _labels_shown(app, file_name: str) -> bool:
    """The page shows a labels table for the uploaded file under its "Concept labels" subheader."""
    if LABELS_SUBHEADER not in [s.value for s in app.subheader]:
        return False
    for frame in app.dataframe:
        value = frame.value
        columns = getattr(value, "columns", [])
        if "concept" in columns and ("image" not in columns or file_name in set(value["image"])):
            return True
    return False


def _upload_latency(pages: list[str], uploads: int, timeout: float) -> dict[str, Any]:
    """Seconds from setting a file on the open-world uploader to its labels table being drawn."""
    page = next((p for p in pages if Path(p).stem == "open_world"), None)
    if page is None:
        return {"available": False, "reason": "no open-world page was found"}
    app, _ = _open_page(page, timeout)
    if not any(u.key == UPLOAD_KEY for u in app.file_uploader):
        return {"available": False, "reason": f"the open-world page has no uploader with key '{UPLOAD_KEY}'"}
    times = []
    for number in range(uploads):
        uploader = next(u for u in app.file_uploader if u.key == UPLOAD_KEY)
        name, data, mime = _upload_image(number)
        uploader.set_value([(name, data, mime)])
        times.append(_timed_run(app))
        if not _labels_shown(app, name):
            errors = _page_errors(app) or [i.value for i in app.info][:1] or ["no labels table appeared"]
            return {"available": False, "page": page, "reason": f"labels did not appear: {errors[0]}"}
    return {
        "available": True,
        "page": page,
        "first_seconds": times[0],
        "median_seconds": statistics.median(times),
        "seconds": times,
    }


@dataclass
class DashboardBenchConfig:
    """Where the bundles are, how many warm reruns and uploads to time, the per-run time limit, and
    whether to time the pages in a real browser too (``browser``) and on the server (``server_side``)."""

    bundles: Path = DEFAULT_BUNDLES
    warm_runs: int = DEFAULT_WARM_RUNS
    uploads: int = DEFAULT_UPLOADS
    timeout: float = DEFAULT_PAGE_TIMEOUT
    browser: bool = True
    server_side: bool = True
    settle: float = 0.0  # seconds on Home before the warm visits (0: at once)
    pages: str = ""  # page file stems to time, comma-separated (empty: every page)

    def __post_init__(self) -> None:
        if not 0 <= self.settle <= 600:
            raise ValueError(f"--settle must be between 0 and 600 seconds, got {self.settle}.")
        if self.warm_runs < 1:
            raise ValueError(f"--warm-runs must be at least 1, got {self.warm_runs}.")
        if self.uploads < 0:
            raise ValueError(f"--uploads must be 0 (skip) or more, got {self.uploads}.")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout}.")


def bench_dashboard(config: DashboardBenchConfig, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """Every page in a real browser (first visit after a restart, warm visits) and on the server (first
    and warm render in one process), and upload-to-labels latency on the server."""
    found = _check_bundles_folder(config.bundles)
    every = dashboard_pages()
    wanted = {name for name in config.pages.split(",") if name}
    unknown = sorted(wanted - {Path(p).stem for p in every})
    if unknown:
        known = ", ".join(Path(p).stem for p in every)
        raise ValueError(f"No dashboard page is called {', '.join(unknown)}; the pages are {known}.")
    timed = [p for p in every if not wanted or Path(p).stem in wanted]
    server: dict[str, dict[str, Any]] = {}
    upload = {"available": False, "reason": "--uploads 0"}
    if config.server_side:
        with _BundlesEnv(config.bundles):
            for page in timed:
                progress(f"dashboard (server side): {page} ...")
                server[page] = _page_timing(page, config.warm_runs, config.timeout)
            if config.uploads:
                progress(f"dashboard: {config.uploads} upload(s) on the open-world page ...")
                upload = _upload_latency(every, config.uploads, config.timeout)
            _wait_for_background_work(config.timeout)
    browser: dict[str, Any] = {"available": False, "reason": "--no-browser"}
    if config.browser:
        browser = browser_timings(every, config, progress, timed)
    by_page = {r["page"]: r for r in browser.get("rows", [])}
    rows = [{"page": page, **server.get(page, {}), **{"browser": by_page.get(page)}} for page in timed]
    return {
        "benchmark": "dashboard",
        "machine": machine_info(LIBRARIES),
        "settings": _settings(config, found),
        "rows": rows,
        "browser": {k: v for k, v in browser.items() if k != "rows"},
        "upload": upload,
        "notes": [
            "browser: headless Chromium on a real `streamlit run` server; seconds from the start of the "
            "navigation (or the sidebar click) until the page is ready: script run finished, title drawn, no "
            "spinner, every chart drawn and every image loaded; feedback = the first title, spinner or "
            "progress bar in the main area",
            "browser first = a fresh server for each page, opened straight at the page's address, so the "
            "first visit pays every import and model load; first via Home = another fresh server, Home "
            f"opened first and read for {HOME_PAUSE:g} s, then a sidebar click to the page; warm click = a "
            "sidebar click from another page, warm reload = the page opened anew (median of "
            f"{config.warm_runs}"
            + (f", after {config.settle:g} s on Home" if config.settle else ", right after the first visit")
            + "); tab switch = on a page in tabs, which draws the open tab only, a click on each other tab "
            "and back to the first (median; blank for a page without tabs); interactions = the page's main "
            "choices (benchmark.INTERACTIONS: a bit, a sub-code value, an image, a query, a model), each "
            f"{config.warm_runs} times, seconds from the choice to the page ready (the table's column: the "
            "slowest median); server peak MiB = the page's own fresh server's peak resident memory (VmHWM) "
            "after all its visits",
            "server first = the page's first render in a fresh AppTest session (models cached in this "
            "process stay loaded across pages); server warm = median of reruns",
        ],
    }


HOME_PAUSE = 5.0  # seconds a person spends on Home before opening a page, in "first via Home"


def _settings(config: Any, found: list[Path]) -> dict[str, Any]:
    """A benchmark's settings as JSON: its config, the bundles folder and the bundles found there."""
    return {**asdict(config), "bundles": str(config.bundles), "bundles_found": [p.name for p in found]}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _browser_row(page: str, times: dict[str, Any], memory: dict[str, Any], exceptions: int) -> dict[str, Any]:
    return {
        "page": page,
        "first_feedback_seconds": times["first"][0],
        "first_ready_seconds": times["first"][1],
        "click_ready_median_seconds": _median([r for _, r in times["click"]]),
        "reload_ready_median_seconds": _median([r for _, r in times["reload"]]),
        "reload_feedback_median_seconds": _median([f for f, _ in times["reload"] if f is not None]),
        "tab_ready_median_seconds": _median([r for _, r in times["tab"]]),
        "click_ready_seconds": [r for _, r in times["click"]],
        "reload_ready_seconds": [r for _, r in times["reload"]],
        "tab_ready_seconds": [r for _, r in times["tab"]],
        "interactions": times.get("interactions", []),
        "exceptions_shown": exceptions,
        "server_rss_mib": memory["rss_mib"],
        "server_peak_rss_mib": memory["peak_rss_mib"],
    }


def _page_url(base: str, page: str, pages: list[str]) -> str:
    """The page's address: the default (first) page is the root, the others are named by their file."""
    return f"{base}/" if page == pages[0] else f"{base}/{Path(page).stem}"


async def _time_page_in_browser(
    page: str, pages: list[str], config: DashboardBenchConfig, log_dir: Path
) -> dict[str, Any]:
    """A fresh server: the first visit straight to ``page``, then warm clicks (from another page), reloads."""
    from playwright.async_api import async_playwright

    away = pages[1] if page == pages[0] else pages[0]
    times: dict[str, Any] = {"click": [], "reload": [], "tab": [], "interactions": []}
    with StreamlitServer(config.bundles, log_dir / f"{Path(page).stem}.log") as server:
        url = _page_url(server.url, page, pages)
        async with async_playwright() as playwright:
            chromium = await launch(playwright)
            try:
                tab = await (await new_context(chromium)).new_page()
                times["first"] = await open_timed(tab, url, config.timeout)
                exceptions = await tab.locator("[data-testid='stException']").count()
                links = {p: _nav_link(tab, _page_url(server.url, p, pages)) for p in (page, away)}
                current = page
                if config.settle:  # Home starts importing the models' code: time the visits after it
                    await open_timed(tab, _page_url(server.url, pages[0], pages), config.timeout)
                    await asyncio.sleep(config.settle)
                    current = pages[0]
                for _ in range(config.warm_runs):
                    if current != away:  # a click on the page already shown runs nothing: never ready
                        await click_timed(tab, links[away], config.timeout)
                    times["click"].append(await click_timed(tab, links[page], config.timeout))
                    current = page
                for _ in range(config.warm_runs):
                    times["reload"].append(await open_timed(tab, url, config.timeout))
                # a page in tabs draws the open one only: a click on each other tab, then back to the first
                tabs = tab.locator("[data-testid='stMain'] [role='tab']")
                n_tabs = await tabs.count()
                for i in [*range(1, n_tabs), 0] if n_tabs > 1 else []:
                    times["tab"].append(await click_timed(tab, tabs.nth(i), config.timeout))
                times["interactions"] = await _interactions(tab, page, config)
            finally:
                await chromium.close()
        memory = server.memory()
    return _browser_row(page, times, memory, exceptions)


async def _interactions(tab, page: str, config: DashboardBenchConfig) -> list[dict[str, Any]]:
    """Each of the page's :data:`INTERACTIONS`, ``config.warm_runs`` times; its ready seconds, or why it
    could not be timed (the widget is not on the page with these bundles, or choosing in it ran nothing)."""
    found = []
    for act in (a for a in INTERACTIONS if a.page == Path(page).stem):
        row: dict[str, Any] = {"interaction": act.name, "tab": act.tab, "ready_seconds": [], "problem": None}
        try:
            if act.tab is not None:
                label = tab.locator("[data-testid='stMain'] [role='tab']", has_text=act.tab).first
                if await label.count() and await label.get_attribute("aria-selected") != "true":
                    await click_timed(tab, label, config.timeout)
            present = tab.locator(f"[data-testid='stMain'] .st-key-{act.key}")
            for key, kind, choice in act.prepare if not await present.count() else ():

                async def step(key=key, kind=kind, choice=choice) -> None:
                    await choose(tab, key, kind, choice)

                await act_timed(tab, step, config.timeout, f"preparing {act.name}")
            if not await present.count():
                raise ValueError("its widget is not on the page with these bundles")
            for run in range(config.warm_runs):
                choice = act.choices[run % len(act.choices)]

                async def do(act=act, choice=choice) -> None:
                    await choose(tab, act.key, act.kind, choice)

                row["ready_seconds"].append((await act_timed(tab, do, config.timeout, act.name))[1])
        except ValueError as exc:
            row["problem"] = str(exc)
        row["ready_median_seconds"] = _median(row["ready_seconds"])
        found.append(row)
    return found


async def _first_visit_from_home(page: str, pages: list[str], config: DashboardBenchConfig, log_dir: Path):
    """A fresh server: Home opened first, read for ``HOME_PAUSE`` seconds, then a click to ``page``; the
    (feedback, ready) seconds of that first visit of the page."""
    from playwright.async_api import async_playwright

    with StreamlitServer(config.bundles, log_dir / f"{Path(page).stem}-from-home.log") as server:
        async with async_playwright() as playwright:
            chromium = await launch(playwright)
            try:
                tab = await (await new_context(chromium)).new_page()
                await open_timed(tab, _page_url(server.url, pages[0], pages), config.timeout)
                await asyncio.sleep(HOME_PAUSE)
                link = _nav_link(tab, _page_url(server.url, page, pages))
                return await click_timed(tab, link, config.timeout)
            finally:
                await chromium.close()


def _nav_link(tab, url: str):
    return tab.locator(f"[data-testid='stSidebarNav'] a[href='{url}']").first


def browser_timings(
    pages: list[str],
    config: DashboardBenchConfig,
    progress: Callable[[str], None] = log,
    timed: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every page's browser timings (see :func:`bench_dashboard`); unavailable, with the reason, without
    Chromium or playwright."""
    try:
        check_browser()
    except ValueError as exc:
        return {"available": False, "reason": str(exc)}
    log_dir = Path(tempfile.mkdtemp(prefix="conceptlens-bench-"))
    rows = []
    for page in pages if timed is None else timed:
        progress(f"dashboard (browser): {page}, fresh server ...")
        row = asyncio.run(_time_page_in_browser(page, pages, config, log_dir))
        if page != pages[0]:
            progress(f"dashboard (browser): {page} after {HOME_PAUSE:g} s on Home, fresh server ...")
            row["from_home_feedback_seconds"], row["from_home_ready_seconds"] = asyncio.run(
                _first_visit_from_home(page, pages, config, log_dir)
            )
        rows.append(row)
    return {"available": True, "server_logs": str(log_dir), "rows": rows}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def dashboard_table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (
        f"Dashboard page times in seconds (bundles in {s['bundles']}; median of {s['warm_runs']} warm visits)"
    )
    rows = []
    for r in result["rows"]:
        b = r.get("browser") or {}
        rows.append(
            [
                r["page"],
                _seconds(b.get("first_feedback_seconds")),
                _seconds(b.get("first_ready_seconds")),
                _seconds(b.get("from_home_ready_seconds")),
                _seconds(b.get("click_ready_median_seconds")),
                _seconds(b.get("reload_ready_median_seconds")),
                _seconds(b.get("tab_ready_median_seconds")),
                _seconds(
                    max((i["ready_median_seconds"] or 0 for i in b.get("interactions", [])), default=None)
                ),
                None if b.get("server_peak_rss_mib") is None else round(b["server_peak_rss_mib"]),
                _seconds(r.get("first_seconds")),
                _seconds(r.get("warm_median_seconds")),
                "; ".join(r.get("errors", []))[:60],
            ]
        )
    headers = [
        "page",
        "browser first: feedback",
        "first: ready",
        "first via Home",
        "warm click",
        "warm reload",
        "tab switch",
        "slowest interaction",
        "server peak MiB",
        "server first",
        "server warm",
        "errors",
    ]
    table = format_table(headers, rows)
    lines = [head, "", table, ""]
    acts = [
        [r["page"], i["interaction"], _seconds(i["ready_median_seconds"]), (i["problem"] or "")[:70]]
        for r in result["rows"]
        for i in (r.get("browser") or {}).get("interactions", [])
    ]
    if acts:
        headers = ["page", "interaction", "ready (median)", "not timed because"]
        lines += ["Interactions in the browser (seconds from the choice to the page ready)", ""]
        lines += [format_table(headers, acts), ""]
    if not result["browser"].get("available"):
        lines.append(f"browser timings: not available ({result['browser']['reason']})")
    upload = result["upload"]
    if upload["available"]:
        lines.append(
            f"upload -> labels on {upload['page']} (server side): median {upload['median_seconds']:.3g} s "
            f"over {len(upload['seconds'])} upload(s) (first {upload['first_seconds']:.3g} s)"
        )
    else:
        lines.append(f"upload -> labels: not available ({upload['reason']})")
    return "\n".join([*lines, *(f"note: {n}" for n in result["notes"])])


# --------------------------------------------------------------------------------------------------
# memory: peak RSS of a process that loads every bundle and renders every page
# --------------------------------------------------------------------------------------------------


def _memory_child(bundles: str, timeout: float) -> None:
    """Run in the measured process: load every model bundle (with its backbone), render every tab of every
    page."""
    from core.bundle import find_bundles
    from core.kinds import KINDS, kind_of

    loaded = dict.fromkeys(KINDS, 0)
    kept = []  # hold every model, as a dashboard process would after visiting every page
    for path in find_bundles(bundles):
        kind = kind_of(path)
        kept.append(kind.load(path, device="cpu"))
        loaded[kind.name] += 1
    pages = dashboard_pages()
    with _BundlesEnv(Path(bundles)):
        errors = {}
        for page in pages:  # every tab of every page
            app = _open_page(page, timeout)[0]
            errors[page] = every_tab(app)
        _wait_for_background_work(timeout)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"loaded": loaded, "pages": pages, "errors": errors, "self_peak_kib": peak}))


def bench_memory(
    bundles: Path, timeout: float = DEFAULT_MEMORY_TIMEOUT, progress: Callable[[str], None] = log
) -> dict[str, Any]:
    """Peak resident memory of a fresh process that loads all bundles and renders every page once."""
    if not timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}.")
    found = _check_bundles_folder(bundles)
    progress(f"memory: loading {len(found)} bundle(s) and rendering every page in a fresh process ...")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        MEMORY_CHILD,
        f"--bundles={bundles.resolve()}",
        f"--timeout={timeout!r}",
    ]
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"The memory benchmark process failed (exit {done.returncode}): {last}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN holds the largest child so far; if an earlier child was larger, use the child's own.
    peak = children_peak if children_peak > before else child["self_peak_kib"]
    return {
        "benchmark": "memory",
        "machine": machine_info(LIBRARIES),
        "settings": {"bundles": str(bundles), "timeout": timeout},
        "peak_rss_kib": peak,
        "peak_rss_mib": peak / 1024,
        "child_self_peak_kib": child["self_peak_kib"],
        "seconds": seconds,
        "loaded": child["loaded"],
        "pages": child["pages"],
        "page_errors": {p: e for p, e in child["errors"].items() if e},
        "notes": ["peak RSS from getrusage(RUSAGE_CHILDREN).ru_maxrss (KiB on Linux) of one fresh process"],
    }


def memory_table(result: dict[str, Any]) -> str:
    loaded = ", ".join(f"{n} {kind}" for kind, n in result["loaded"].items())
    rows = [
        ["peak RSS (MiB)", result["peak_rss_mib"]],
        ["bundles loaded", loaded],
        ["pages rendered", len(result["pages"])],
        ["pages with errors", len(result["page_errors"])],
        ["process seconds", result["seconds"]],
    ]
    head = f"Peak memory: load every bundle in {result['settings']['bundles']} and render every page once"
    return "\n".join([head, "", format_table(["measure", "value"], rows)])


# --------------------------------------------------------------------------------------------------
# load: several people on the open-world page at once
# --------------------------------------------------------------------------------------------------

OPEN_WORLD = "views/open_world.py"
LOAD_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
# The labels are drawn: every uploaded photo's thumbnail is captioned with its name (the uploader lists the
# names too, before any label, so only captions count) and the page is ready (see browser.TIMING_SCRIPT).
LABELLED = """names => {
  const main = document.querySelector("[data-testid='stMain']");
  const found = main ? main.querySelectorAll("[data-testid='stImageCaption']") : [];
  const captions = [...found].map((e) => e.innerText);
  if (!window.__clReadyNow() || !names.every(n => captions.some(c => c.includes(n)))) return null;
  return performance.now() - window.__cl.mark;
}"""


@dataclass
class LoadBenchConfig:
    """How many browser sessions open the open-world page at once, and how many photos each uploads."""

    bundles: Path = DEFAULT_BUNDLES
    sessions: int = DEFAULT_SESSIONS
    photos: int = DEFAULT_PHOTOS
    timeout: float = DEFAULT_PAGE_TIMEOUT

    def __post_init__(self) -> None:
        if not 1 <= self.sessions <= MAX_SESSIONS:
            raise ValueError(f"--sessions must be between 1 and {MAX_SESSIONS}, got {self.sessions}.")
        if not 1 <= self.photos <= len(LOAD_PHOTOS):
            raise ValueError(f"--photos must be between 1 and {len(LOAD_PHOTOS)}, got {self.photos}.")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout}.")


def session_photos(session: int, photos: int, folder: Path) -> list[Path]:
    """``photos`` skimage photos for one session, each cut differently per session (its own pixels, so no
    session is answered from another's cached labels), saved as PNG in ``folder``."""
    from core.data.samples import load_sample_photo

    paths = []
    for name in LOAD_PHOTOS[:photos]:
        image = load_sample_photo(f"skimage: {name}")
        width, height = image.size
        path = folder / f"s{session}-{name}.png"
        image.crop((session, 0, width, height)).save(path)
        paths.append(path)
    return paths


def _summary(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "median": _median(values),
        "max": max(values) if values else None,
        "min": min(values) if values else None,
    }


async def _open_session(browser, url: str, timeout: float) -> tuple[Any, dict[str, Any]]:
    """A fresh context opening ``url``: its tab, and the seconds to the first feedback, to the script's start
    (the browser's part: loading the app) and to the page ready, or why it did not get ready."""
    tab = await (await new_context(browser)).new_page()
    result: dict[str, Any] = {"page_ready_seconds": None, "error": None}
    try:
        result["feedback_seconds"], result["page_ready_seconds"] = await open_timed(tab, url, timeout)
        started = await tab.evaluate("() => window.__cl.started")
        result["script_started_seconds"] = None if started is None else started / 1000
    except Exception as exc:  # noqa: BLE001 - a session that fails is counted, the others go on
        result["error"] = f"page did not get ready: {str(exc).splitlines()[0]}"
    return tab, result


async def _one_session(browser, url: str, photos: list[Path], start_upload, timeout: float) -> dict[str, Any]:
    """Open the page (page ready), wait for every session to be ready, upload, wait for the labels."""
    tab, result = await _open_session(browser, url, timeout)
    result["labels_seconds"] = None
    await start_upload()
    if result["error"]:
        return result
    try:
        await tab.evaluate("() => window.__clRestart()")
        await tab.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(
            [str(p) for p in photos]
        )
        handle = await tab.wait_for_function(
            LABELLED, arg=[p.name for p in photos], timeout=timeout * 1000, polling=20
        )
        result["labels_seconds"] = await handle.json_value() / 1000
        result["exceptions_shown"] = await tab.locator("[data-testid='stException']").count()
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"labels did not appear: {str(exc).splitlines()[0]}"
    return result


async def _in_one_chromium(sessions: Callable[[Any], Iterable[Awaitable[Any]]]) -> list[Any]:
    """Launch one headless Chromium, run at once the sessions ``sessions(browser)`` makes, close it."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await launch(playwright)
        try:
            return await asyncio.gather(*sessions(chromium))
        finally:
            await chromium.close()


async def _floor_sessions(config: LoadBenchConfig, server: StreamlitServer) -> list[dict[str, Any]]:
    """The same number of sessions opening the floor app (:data:`browser.FLOOR_APP`) at once."""

    async def open_floor(chromium) -> dict[str, Any]:
        return (await _open_session(chromium, server.url, config.timeout))[1]

    return await _in_one_chromium(lambda chromium: [open_floor(chromium) for _ in range(config.sessions)])


async def _load_sessions(
    config: LoadBenchConfig, server: StreamlitServer, folder: Path
) -> list[dict[str, Any]]:
    url = f"{server.url}/{Path(OPEN_WORLD).stem}"
    photos = [session_photos(n, config.photos, folder) for n in range(config.sessions)]
    barrier, arrived = asyncio.Event(), []

    async def start_upload() -> None:  # every session uploads at once, after all pages are ready
        arrived.append(1)
        if len(arrived) == config.sessions:
            barrier.set()
        await barrier.wait()

    return await _in_one_chromium(
        lambda chromium: [_one_session(chromium, url, p, start_upload, config.timeout) for p in photos]
    )


def _cpu_split(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float | None]:
    """CPU seconds the server and everything else on the machine (the browsers, mostly) used in between."""
    used = {
        key: None if before[key] is None or after[key] is None else round(after[key] - before[key], 2)
        for key in ("server", "machine")
    }
    rest = None if None in used.values() else round(used["machine"] - used["server"], 2)
    return {"server": used["server"], "rest_of_machine": rest}


def bench_load(config: LoadBenchConfig, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """``sessions`` browser sessions open the open-world page of a fresh server at once, then each uploads
    its photos at once; page-ready and upload-to-labels times and the server's memory."""
    found = _check_bundles_folder(config.bundles)
    check_browser()
    folder = Path(tempfile.mkdtemp(prefix="conceptlens-load-"))
    progress(f"load: {config.sessions} sessions x {config.photos} photos on the open-world page ...")
    with StreamlitServer(config.bundles, folder / "streamlit.log") as server:
        idle = server.memory()
        before = {"server": server.cpu_seconds(), "machine": cpu_seconds()}
        sessions = asyncio.run(_load_sessions(config, server, folder))
        cpu = _cpu_split(before, {"server": server.cpu_seconds(), "machine": cpu_seconds()})
        memory = server.memory()
    progress(f"floor: {config.sessions} sessions open a one-title Streamlit app ...")
    with StreamlitServer(config.bundles, folder / "floor.log", script=FLOOR_APP) as server:
        floor = asyncio.run(_floor_sessions(config, server))
    ready = [s["page_ready_seconds"] for s in sessions if s["page_ready_seconds"] is not None]
    labels = [s["labels_seconds"] for s in sessions if s["labels_seconds"] is not None]
    started = [s["script_started_seconds"] for s in sessions if s.get("script_started_seconds") is not None]
    feedback = [s["feedback_seconds"] for s in sessions if s.get("feedback_seconds") is not None]
    return {
        "benchmark": "load",
        "machine": machine_info(LIBRARIES),
        "settings": _settings(config, found),
        "script_started_seconds": _summary(started),
        "feedback_seconds": _summary(feedback),
        "page_ready_seconds": _summary(ready),
        "labels_seconds": _summary(labels),
        "floor": {
            key: _summary([f[key] for f in floor if f.get(key) is not None])
            for key in ("script_started_seconds", "page_ready_seconds")
        }
        | {"errors": [f["error"] for f in floor if f["error"]]},
        "sessions_ok": sum(s["error"] is None for s in sessions),
        "sessions": sessions,
        "cpu_seconds": cpu,
        "server_start_seconds": server.start_seconds,
        "server_rss_idle_mib": idle["rss_mib"],
        "server_rss_mib": memory["rss_mib"],
        "server_peak_rss_mib": memory["peak_rss_mib"],
        "server_log": str(folder / "streamlit.log"),
        "notes": [
            "a fresh `streamlit run` server; every session is its own headless Chromium context; all open "
            "the open-world page at once (page ready: see the dashboard benchmark), then all upload at once "
            "(labels: from setting the files until every photo's labels are drawn)",
            "the default model (offline ConSE) and concept bank; each session's photos are cut differently, "
            "so no session gets another's cached labels",
            "floor: the same number of fresh Chromium sessions open a Streamlit app that only draws a title "
            "(dashboard/floor_app.py, same server settings); no page of any Streamlit app can be ready "
            "sooner on this machine with these browsers",
        ],
    }


def load_table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (
        f"{s['sessions']} browser sessions at once, {s['photos']} photo(s) each, on the open-world page "
        f"({result['sessions_ok']} of {s['sessions']} got labels)"
    )
    rows = [
        [
            "app loaded in the browser, script started (s)",
            result["script_started_seconds"]["median"],
            result["script_started_seconds"]["max"],
        ],
        ["first feedback (s)", result["feedback_seconds"]["median"], result["feedback_seconds"]["max"]],
        ["page ready (s)", result["page_ready_seconds"]["median"], result["page_ready_seconds"]["max"]],
        ["upload -> labels (s)", result["labels_seconds"]["median"], result["labels_seconds"]["max"]],
        [
            "floor: a one-title Streamlit app ready (s)",
            result["floor"]["page_ready_seconds"]["median"],
            result["floor"]["page_ready_seconds"]["max"],
        ],
    ]
    memory = [
        ["server CPU during the sessions (s)", result["cpu_seconds"]["server"]],
        ["rest of the machine's CPU, the browsers mostly (s)", result["cpu_seconds"]["rest_of_machine"]],
        ["server RSS idle (MiB)", result["server_rss_idle_mib"]],
        ["server RSS after (MiB)", result["server_rss_mib"]],
        ["server peak RSS (MiB)", result["server_peak_rss_mib"]],
    ]
    errors = [f"session {n}: {e['error']}" for n, e in enumerate(result["sessions"]) if e["error"]]
    errors += [f"floor session: {e}" for e in result["floor"]["errors"]]
    return "\n".join(
        [
            head,
            "",
            format_table(["measure", "median", "max"], rows),
            "",
            format_table(["resources", "value"], memory),
            *errors,
            *(f"note: {n}" for n in result["notes"]),
        ]
    )


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """``dashboard``, ``memory`` and ``load`` with ``conceptlens bench``'s flags; the hidden memory child."""
    parser = argparse.ArgumentParser(
        prog="python dashboard/benchmark.py", description=__doc__.splitlines()[0]
    )
    benches = parser.add_subparsers(dest="bench_command", required=True, metavar="{dashboard,memory,load}")
    add_dashboard_flags(
        benches.add_parser("dashboard", help="page times in a real browser and on the server")
    )
    add_memory_flags(
        benches.add_parser("memory", help="peak RSS of loading every bundle and rendering every page")
    )
    add_load_flags(benches.add_parser("load", help="several browser sessions upload photos at once"))
    child = benches.add_parser(MEMORY_CHILD)
    child.add_argument("--bundles", required=True)
    child.add_argument("--timeout", type=float, required=True)
    return parser


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.bench_command == "dashboard":
        result = bench_dashboard(from_args(DashboardBenchConfig, args))
        return result, dashboard_table(result)
    if args.bench_command == "load":
        result = bench_load(from_args(LoadBenchConfig, args))
        return result, load_table(result)
    result = bench_memory(args.bundles, args.timeout)
    return result, memory_table(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one benchmark, print its table, write its JSON; 2 with one sentence on stderr for bad input."""
    args = build_parser().parse_args(argv)
    if args.bench_command == MEMORY_CHILD:  # errors here keep their traceback for the parent to report
        _memory_child(args.bundles, args.timeout)
        return 0
    try:
        result, table = _run(args)
        return report(result, table, args.json_out)
    except ValueError as exc:
        log(f"conceptlens: error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

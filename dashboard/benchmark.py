"""The dashboard's own benchmarks: page render times, upload-to-labels latency and peak memory.

    python dashboard/benchmark.py dashboard --bundles DIR [--warm-runs 5 --uploads 3 --json-out FILE]
    python dashboard/benchmark.py memory    --bundles DIR [--timeout 600 --json-out FILE]

``conceptlens bench dashboard|memory`` runs this script in a child process with the same flags, so the
numbers and the JSON are the same either way. The pages are driven through Streamlit's ``AppTest``
harness, the way the dashboard's tests drive them; that is why this lives here and not in ``core``, which
knows nothing of the dashboard. The generic parts (machine description, table, JSON, flags, exit codes)
come from ``core.bench``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if importlib.util.find_spec("core") is None:  # a source checkout that was not pip-installed
    sys.path.insert(0, str(REPO_ROOT))

from core.bench import (  # noqa: E402 (after the sys.path line above)
    DEFAULT_BUNDLES,
    DEFAULT_MEMORY_TIMEOUT,
    DEFAULT_PAGE_TIMEOUT,
    DEFAULT_UPLOADS,
    DEFAULT_WARM_RUNS,
    add_dashboard_flags,
    add_memory_flags,
    format_table,
    log,
    machine_info,
    report,
)

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


def _timed_run(app) -> float:
    start = time.perf_counter()
    app.run()
    return time.perf_counter() - start


def _open_page(page: str, timeout: float) -> tuple[Any, float]:
    """A fresh AppTest on Home.py switched to ``page``; returns it and the first render time of the page."""
    app = AppTest.from_file(str(HOME_PAGE), default_timeout=timeout)
    app.switch_page(page)  # before the first run, so that run draws this page and not the default one
    return app, _timed_run(app)


def _page_timing(page: str, warm_runs: int, timeout: float) -> dict[str, Any]:
    app, first = _open_page(page, timeout)
    warm = [_timed_run(app) for _ in range(warm_runs)]
    return {
        "page": page,
        "first_seconds": first,
        "warm_median_seconds": statistics.median(warm),
        "warm_seconds": warm,
        "errors": _page_errors(app),
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
    """Where the bundles are, how many warm reruns and uploads to time, and the per-run time limit."""

    bundles: Path = DEFAULT_BUNDLES
    warm_runs: int = DEFAULT_WARM_RUNS
    uploads: int = DEFAULT_UPLOADS
    timeout: float = DEFAULT_PAGE_TIMEOUT

    def __post_init__(self) -> None:
        if self.warm_runs < 1:
            raise ValueError(f"--warm-runs must be at least 1, got {self.warm_runs}.")
        if self.uploads < 0:
            raise ValueError(f"--uploads must be 0 (skip) or more, got {self.uploads}.")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout}.")


def bench_dashboard(config: DashboardBenchConfig, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """First and warm (median) render time of every page, and upload-to-labels latency, on one process."""
    found = _check_bundles_folder(config.bundles)
    pages = dashboard_pages()
    with _BundlesEnv(config.bundles):
        rows = []
        for page in pages:
            progress(f"dashboard: {page} ...")
            rows.append(_page_timing(page, config.warm_runs, config.timeout))
        upload = {"available": False, "reason": "--uploads 0"}
        if config.uploads:
            progress(f"dashboard: {config.uploads} upload(s) on the open-world page ...")
            upload = _upload_latency(pages, config.uploads, config.timeout)
    return {
        "benchmark": "dashboard",
        "machine": machine_info(LIBRARIES),
        "settings": {
            **asdict(config),
            "bundles": str(config.bundles),
            "bundles_found": [p.name for p in found],
        },
        "rows": rows,
        "upload": upload,
        "notes": [
            "first = the page's first render in a fresh AppTest session (models cached in this process "
            "stay loaded across pages); warm = median of reruns"
        ],
    }


def dashboard_table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = f"Dashboard render times (AppTest, bundles in {s['bundles']}, {s['warm_runs']} warm reruns)"
    rows = [
        [r["page"], r["first_seconds"], r["warm_median_seconds"], "; ".join(r["errors"])[:60]]
        for r in result["rows"]
    ]
    table = format_table(["page", "first s", "warm median s", "errors"], rows)
    upload = result["upload"]
    if upload["available"]:
        line = (
            f"upload -> labels on {upload['page']}: median {upload['median_seconds']:.3g} s over "
            f"{len(upload['seconds'])} upload(s) (first {upload['first_seconds']:.3g} s)"
        )
    else:
        line = f"upload -> labels: not available ({upload['reason']})"
    return "\n".join([head, "", table, "", line, *(f"note: {n}" for n in result["notes"])])


# --------------------------------------------------------------------------------------------------
# memory: peak RSS of a process that loads every bundle and renders every page
# --------------------------------------------------------------------------------------------------


def _memory_child(bundles: str, timeout: float) -> None:
    """Run in the measured process: load every model bundle (with its backbone), render every page."""
    from core.backbones.clip import load_backbone
    from core.bundle import find_bundles, read_bundle_config
    from core.ceir.train import load_ceir
    from core.concepthash.train import load_concepthash

    loaded = {"concepthash": 0, "ceir": 0, "clip": 0}
    kept = []  # hold every model, as a dashboard process would after visiting every page
    for path in find_bundles(bundles):
        kind = read_bundle_config(path)["kind"]
        if kind == "concepthash":
            kept.append(load_concepthash(path, device="cpu"))
        elif kind == "ceir":
            kept.append(load_ceir(path, device="cpu"))
        elif kind == "clip":
            kept.append(load_backbone(str(path), device="cpu"))
        loaded[kind] = loaded.get(kind, 0) + 1
    pages = dashboard_pages()
    with _BundlesEnv(Path(bundles)):
        errors = {page: _page_errors(_open_page(page, timeout)[0]) for page in pages}
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
# command line
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """``dashboard`` and ``memory`` with ``conceptlens bench``'s flags, and the hidden memory child."""
    parser = argparse.ArgumentParser(
        prog="python dashboard/benchmark.py", description=__doc__.splitlines()[0]
    )
    benches = parser.add_subparsers(dest="bench_command", required=True, metavar="{dashboard,memory}")
    add_dashboard_flags(
        benches.add_parser("dashboard", help="page render times and upload-to-labels latency")
    )
    add_memory_flags(
        benches.add_parser("memory", help="peak RSS of loading every bundle and rendering every page")
    )
    child = benches.add_parser(MEMORY_CHILD)
    child.add_argument("--bundles", required=True)
    child.add_argument("--timeout", type=float, required=True)
    return parser


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.bench_command == "dashboard":
        config = DashboardBenchConfig(
            bundles=args.bundles, warm_runs=args.warm_runs, uploads=args.uploads, timeout=args.timeout
        )
        result = bench_dashboard(config)
        return result, dashboard_table(result)
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

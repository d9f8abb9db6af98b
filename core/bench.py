"""``conceptlens bench``: speed and memory benchmarks that print a table and write JSON.

    conceptlens bench retrieval [--n-db 1000000 --bits 64 --queries 1000 --k 100 --repeats 3]
                                [--approximate ivf --approximate hnsw --clusters 1000]
    conceptlens bench encoding  [--backbone toyclip-s:random --backbone ViT-B-32-quickgelu:random]
    conceptlens bench dashboard [--bundles pretrained --warm-runs 5 --uploads 3 --no-browser]
    conceptlens bench memory    [--bundles pretrained]
    conceptlens bench load      [--bundles pretrained --sessions 8 --photos 3]
    conceptlens bench make-bundle --out DIR [--kind concepthash --bits 64 --concepts 8 --classes 200
                                --images 20000 | --kind ceir --concepts-bank general --n-concepts 400]

These are measurements, not tests: every sub-command prints a plain-text table on stdout and writes
the numbers, the settings and the machine (cores, CPU model, library versions) to ``--json-out``
(default ``bench-results/<name>.json``). Timings are wall-clock seconds from ``time.perf_counter``.

Two choices keep the numbers honest:

* ``retrieval`` checks that every backend returns the same answer before it reports any speed, and
  runs faiss in a separate (spawned) process by default: faiss's OpenMP worker threads keep spinning
  after a search and can slow NumPy's threads in the same process; ``--faiss-process same`` runs it
  in-process after our backend and re-times ours afterwards, so the effect can be seen.
* ``dashboard``, ``memory`` and ``load`` measure the dashboard itself (``dashboard`` and ``load`` in a
  headless browser on the app's own server), so they live with it: this module only
  keeps their flags and runs ``dashboard/benchmark.py`` (next to ``core`` in the source checkout) in a
  child process, whose output streams through and whose exit status becomes ours. ``core`` itself
  knows nothing of the dashboard's code or the web framework it uses.

``make-bundle`` is not a measurement but what the dashboard benchmarks measure at scale: a synthetic bundle
of a researcher's size (:mod:`core.synthetic`), written in seconds; its table gives the time of each step.
Pass its folder to ``bench dashboard --bundles`` (a single bundle's folder is a folder of one bundle).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.retrieval.approximate import (
    APPROXIMATE_KINDS,
    build_approximate_index,
    id_recall_at_k,
    recall_at_k,
    search_approximate,
)
from core.retrieval.hamming import HammingIndex, hamming_topk, pack_codes
from core.settings import from_args
from core.synthetic import SyntheticBundleConfig, add_make_bundle_flags

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_SCRIPT = REPO_ROOT / "dashboard" / "benchmark.py"  # runs the dashboard and memory benchmarks
DEFAULT_BUNDLES = REPO_ROOT / "pretrained"
DEFAULT_OUT_DIR = Path("bench-results")
DEFAULT_ENCODING_BACKBONES = ("toyclip-s:random", "ViT-B-32-quickgelu:random")
DEFAULT_WARM_RUNS = 5
DEFAULT_UPLOADS = 3
DEFAULT_PAGE_TIMEOUT = 300.0  # seconds per page run in the dashboard benchmark
DEFAULT_MEMORY_TIMEOUT = 600.0  # seconds per page run in the memory benchmark
DEFAULT_SESSIONS = 8  # browser sessions at once in the load benchmark
MAX_SESSIONS = 32  # each is a Chromium context: more than this would measure the browser, not the app
DEFAULT_PHOTOS = 3  # photos each session uploads
FAISS_MODES = ("subprocess", "same")
_WORD_BITS = 64


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# the machine, timing, tables and JSON
# --------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(libraries: Sequence[str] = ()) -> dict[str, Any]:
    """Where the numbers were taken; library versions come from metadata, so nothing heavy is imported.

    ``libraries`` names further distributions whose versions matter to one benchmark (None if absent).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "faiss": _version("faiss-cpu") or _version("faiss"),
        **{name: _version(name) for name in libraries},
        "load_average_1min": _load_average(),  # other work on the machine makes every timing slower
    }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def best_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest of ``repeats`` calls (the least disturbed by other work) and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers, one rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [_numeric_column([row[i] for row in rows]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), "  ".join("-" * w for w in widths)] + [line(r) for r in cells])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_column(values: Sequence[Any]) -> bool:
    """Numbers, possibly with gaps (None, shown as n/a): right-aligned."""
    present = [v for v in values if v is not None]
    return bool(present) and all(_is_number(v) for v in present)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def write_json(path: Path, result: dict[str, Any]) -> Path:
    """Write the result as indented JSON, creating the folder; the message names the path on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"Cannot write the benchmark results to {path}: {exc.strerror or exc}.") from exc
    return path


# --------------------------------------------------------------------------------------------------
# retrieval: our Hamming search vs faiss vs a naive loop
# --------------------------------------------------------------------------------------------------


@dataclass
class RetrievalBenchConfig:
    """Sizes of the retrieval benchmark; codes are seeded random bits."""

    n_db: int = 1_000_000
    bits: int = 64
    queries: int = 1_000
    k: int = 100
    repeats: int = 3
    naive_queries: int = 20  # the naive loop is slow: timed on this many queries, then extrapolated
    seed: int = 0
    faiss_process: str = "subprocess"  # or "same" (in-process, after ours)
    approximate: tuple[str, ...] = ()  # faiss binary indexes to time and score by recall@k: ivf, hnsw
    nprobe: int = 16  # IVF lists a query scans
    ef_search: int = 128  # HNSW search beam
    clusters: int = 0  # 0: uniform random codes; C: codes near C random centres (like trained hash codes)
    flip: float = 0.1  # with clusters: chance that a bit differs from its centre's

    def __post_init__(self) -> None:
        for name in ("n_db", "bits", "queries", "k", "repeats", "nprobe", "ef_search"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
        if self.naive_queries < 0:
            raise ValueError(f"--naive-queries must be 0 (skip) or more, got {self.naive_queries}.")
        if self.k > self.n_db:
            raise ValueError(f"--k {self.k} is larger than the database (--n-db {self.n_db}); choose k <= N.")
        unknown = sorted(set(self.approximate) - set(APPROXIMATE_KINDS))
        if unknown:
            raise ValueError(f"--approximate takes {' or '.join(APPROXIMATE_KINDS)}, not {unknown[0]!r}.")
        if self.clusters < 0 or not 0 <= self.flip <= 0.5:
            raise ValueError("--clusters must be 0 or more and --flip between 0 and 0.5.")
        if self.faiss_process not in FAISS_MODES:
            raise ValueError(
                f"--faiss-process must be one of {', '.join(FAISS_MODES)}, got {self.faiss_process!r}."
            )


def random_packed_codes(n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, ceil(bits/64))`` uint64 words of uniform random bits, padding cleared (``pack_codes`` layout)."""
    words = -(-bits // _WORD_BITS)
    codes = rng.integers(0, np.iinfo(np.uint64).max, size=(n, words), dtype=np.uint64, endpoint=True)
    if bits % _WORD_BITS:
        codes[:, -1] &= np.uint64((1 << (bits % _WORD_BITS)) - 1)
    return codes


def clustered_packed_codes(
    n: int, centres: np.ndarray, flip: float, rng: np.random.Generator, bits: int
) -> np.ndarray:
    """Codes of a random centre each (packed ``centres``), every bit flipped with probability ``flip``."""
    out = np.empty((n, centres.shape[1]), dtype=np.uint64)
    for lo in range(0, n, 1 << 18):
        hi = min(n, lo + (1 << 18))
        noise = pack_codes(rng.random((hi - lo, bits)) < flip)
        out[lo:hi] = centres[rng.integers(0, len(centres), hi - lo)] ^ noise
    return out


def bench_codes(config: RetrievalBenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """Database and query codes: uniform random bits, or clustered round random centres."""
    rng = np.random.default_rng(config.seed)
    if not config.clusters:
        return random_packed_codes(config.n_db, config.bits, rng), random_packed_codes(
            config.queries, config.bits, rng
        )
    centres = random_packed_codes(config.clusters, config.bits, rng)
    db = clustered_packed_codes(config.n_db, centres, config.flip, rng, config.bits)
    return db, clustered_packed_codes(config.queries, centres, config.flip, rng, config.bits)


def bench_approximate(
    config: RetrievalBenchConfig, db: np.ndarray, queries: np.ndarray, exact: tuple[np.ndarray, np.ndarray]
) -> list[dict[str, Any]]:
    """Build time, search time and recall@k against the exact answer of every ``--approximate`` index."""
    rows = []
    for kind in config.approximate:
        started = time.perf_counter()
        index = build_approximate_index(db, kind)
        build_seconds = time.perf_counter() - started
        setting = {"nprobe": config.nprobe} if kind == "ivf" else {"ef_search": config.ef_search}
        seconds, (found_rows, found_dist) = best_time(
            lambda index=index, setting=setting: search_approximate(index, queries, config.k, **setting),
            config.repeats,
        )
        rows.append(
            {
                "index": f"faiss IndexBinary{kind.upper()}",
                **setting,
                **({"nlist": index.nlist} if kind == "ivf" else {}),
                "build_seconds": build_seconds,
                "seconds": seconds,
                "queries_per_s": config.queries / seconds if seconds > 0 else None,
                "recall_at_k": recall_at_k(found_dist, exact[1]),
                "id_recall_at_k": id_recall_at_k(found_rows, exact[0]),
            }
        )
    return rows


def _faiss_run(db: np.ndarray, queries: np.ndarray, bits: int, k: int, repeats: int) -> dict[str, Any]:
    """Time raw ``faiss.IndexBinaryFlat`` and our tie-fixed ``faiss`` backend (index builds not timed).

    A module-level function so a spawned process can run it.
    """
    import faiss

    raw = faiss.IndexBinaryFlat(db.shape[1] * _WORD_BITS)
    raw.add(np.ascontiguousarray(db).view(np.uint8))
    query_bytes = np.ascontiguousarray(queries).view(np.uint8)
    raw_seconds, (raw_d, raw_i) = best_time(lambda: raw.search(query_bytes, k), repeats)
    index = HammingIndex(db, bits)
    index.search(queries[:1], k, backend="faiss")  # builds the wrapped faiss index outside the timing
    fixed_seconds, (fixed_i, fixed_d) = best_time(lambda: index.search(queries, k, backend="faiss"), repeats)
    return {
        "threads": int(faiss.omp_get_max_threads()),
        "raw_seconds": raw_seconds,
        "raw_distances": raw_d.astype(np.int32),
        "raw_indices": raw_i.astype(np.int64),
        "fixed_seconds": fixed_seconds,
        "fixed_distances": fixed_d,
        "fixed_indices": fixed_i,
    }


def _run_faiss(config: RetrievalBenchConfig, db: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    args = (db, queries, config.bits, config.k, config.repeats)
    if config.faiss_process == "same":
        return _faiss_run(*args)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_faiss_run, *args).result()


def _row(method: str, seconds: float, n_queries: int, total_queries: int, note: str = "") -> dict[str, Any]:
    """One timing row; a time measured on fewer queries is scaled to all of them and says so."""
    scale = total_queries / n_queries
    return {
        "method": method,
        "queries_timed": n_queries,
        "seconds_timed": seconds,
        "seconds": seconds * scale,
        "extrapolated": n_queries != total_queries,
        "queries_per_s": n_queries / seconds if seconds > 0 else None,
        "note": note,
    }


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))


def bench_retrieval(config: RetrievalBenchConfig, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """Time exact top-k Hamming search three or four ways on the same codes and check the answers agree."""
    db, queries = bench_codes(config)
    index = HammingIndex(db, config.bits)  # the word-major copy is built once, outside the timing
    progress(f"retrieval: our numpy backend, {config.queries} queries x {config.n_db} codes ...")
    ours_seconds, ours = best_time(lambda: index.search(queries, config.k), config.repeats)
    rows = [_row("ours (numpy backend)", ours_seconds, config.queries, config.queries)]
    checks: dict[str, Any] = {}
    notes = [
        "index builds (our word-major copy, faiss add) are not timed; each time is the best of "
        f"{config.repeats} runs"
    ]
    n_naive = min(config.naive_queries, config.queries)
    if n_naive:
        progress(f"retrieval: naive NumPy loop on {n_naive} queries ...")
        subset = queries[:n_naive]
        naive_seconds, naive = best_time(
            lambda: hamming_topk(subset, db, config.k, backend="naive"), config.repeats
        )
        note = f"timed on {n_naive} queries, extrapolated" if n_naive < config.queries else ""
        rows.append(_row("naive NumPy loop", naive_seconds, n_naive, config.queries, note))
        head = (ours[0][:n_naive], ours[1][:n_naive])
        checks["ours_vs_naive"] = {"queries": n_naive, "identical": _same(head, naive)}
    faiss_threads = None
    if importlib.util.find_spec("faiss") is None:
        notes.append("faiss is not installed (pip install faiss-cpu): its rows are skipped")
    else:
        where = "a spawned process" if config.faiss_process == "subprocess" else "this process, after ours"
        progress(f"retrieval: faiss IndexBinaryFlat in {where} ...")
        found = _run_faiss(config, db, queries)
        faiss_threads = found["threads"]
        rows.append(
            _row(
                "faiss IndexBinaryFlat (raw)",
                found["raw_seconds"],
                config.queries,
                config.queries,
                "ties in arbitrary order",
            )
        )
        rows.append(
            _row(
                "ours, faiss backend",
                found["fixed_seconds"],
                config.queries,
                config.queries,
                "faiss + (distance, index) tie fix",
            )
        )
        checks["ours_vs_faiss_backend"] = {
            "queries": config.queries,
            "identical": _same(ours, (found["fixed_indices"], found["fixed_distances"])),
        }
        checks["distances_vs_raw_faiss"] = {
            "queries": config.queries,
            "identical": bool(np.array_equal(ours[1], found["raw_distances"])),
        }
        notes.append(f"faiss ran in {where} with {faiss_threads} OpenMP threads")
        if config.faiss_process == "same":
            again, _ = best_time(lambda: index.search(queries, config.k), config.repeats)
            rows.append(
                _row(
                    "ours (numpy), re-timed after faiss",
                    again,
                    config.queries,
                    config.queries,
                    "same process as faiss",
                )
            )
    faiss_seconds = next((r["seconds"] for r in rows if r["method"].startswith("faiss")), None)
    for row in rows:
        row["vs_faiss"] = row["seconds"] / faiss_seconds if faiss_seconds else None
    approximate = []
    if config.approximate:
        progress(f"retrieval: approximate indexes ({', '.join(config.approximate)}), recall against ours ...")
        approximate = bench_approximate(config, db, queries, ours)
        for row in approximate:
            row["speedup_vs_ours"] = ours_seconds / row["seconds"] if row["seconds"] > 0 else None
    return {
        "benchmark": "retrieval",
        "machine": {**machine_info(), "numpy_threads": index_threads(), "faiss_threads": faiss_threads},
        "settings": asdict(config),
        "rows": rows,
        "checks": checks,
        "identical": all(c["identical"] for c in checks.values()),
        "approximate": approximate,
        "notes": notes,
    }


def index_threads() -> int:
    """Threads our numpy backend uses by default (the CPUs this process may run on)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def retrieval_table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (
        f"Exact top-{s['k']} Hamming search: {s['queries']:,} queries x {s['n_db']:,} codes of "
        f"{s['bits']} bits (seed {s['seed']})"
    )
    rows = [[r["method"], r["seconds"], r["queries_per_s"], r["vs_faiss"], r["note"]] for r in result["rows"]]
    table = format_table(["method", "seconds", "queries/s", "time vs faiss", "note"], rows)
    checks = [
        f"{name}: {'identical' if c['identical'] else 'DIFFERENT'} on {c['queries']:,} queries"
        for name, c in result["checks"].items()
    ]
    lines = [head, "", table, "", *checks, *(f"note: {n}" for n in result["notes"])]
    if result.get("approximate"):
        approximate = [
            [
                r["index"],
                ", ".join(f"{key}={r[key]}" for key in ("nlist", "nprobe", "ef_search") if key in r),
                r["build_seconds"],
                r["seconds"],
                r["queries_per_s"],
                r["speedup_vs_ours"],
                r["recall_at_k"],
                r["id_recall_at_k"],
            ]
            for r in result["approximate"]
        ]
        headers = ["approximate index", "settings", "build s", "search s", "queries/s", "vs ours"]
        headers += [f"recall@{s['k']}", f"same ids@{s['k']}"]
        lines += ["", format_table(headers, approximate)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# encoding: ConceptHash codes vs the backbone's plain image embedding
# --------------------------------------------------------------------------------------------------


@dataclass
class EncodingBenchConfig:
    """Backbones to compare on, and how many batches to time (after warm-up) for each."""

    backbones: tuple[str, ...] = DEFAULT_ENCODING_BACKBONES
    batch_size: int = 32
    batches: int = 5
    warmup: int = 1
    bits: int = 6
    concepts: int = 3
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "batches", "bits", "concepts"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be 0 or more, got {self.warmup}.")
        if not self.backbones:
            raise ValueError("Give at least one --backbone to benchmark.")


def _encoding_row(spec: str, config: EncodingBenchConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """Interleave plain and ConceptHash batches so a change in machine load hits both alike."""
    import torch

    from core.backbones.clip import load_backbone
    from core.concepthash.model import ConceptHash, ConceptHashConfig
    from core.runtime import resolve_device

    device = resolve_device(config.device)
    backbone = load_backbone(spec, device=device)
    # Random init and no language guidance: the code's speed does not depend on the weights.
    model_config = ConceptHashConfig(bits=config.bits, n_concepts=config.concepts, language_guidance=False)
    model = ConceptHash(backbone, ["class a", "class b"], model_config).to(device).eval()
    size = backbone.image_size
    generator = torch.Generator().manual_seed(config.seed)
    pixels = torch.randn(config.batch_size, 3, size, size, generator=generator).to(device)

    def timed(run: Callable[[], Any]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def plain() -> Any:
        return backbone.model.encode_image(pixels)

    def concepthash() -> Any:
        return model.encode(pixels, batch_size=config.batch_size)

    progress(f"encoding: {backbone.describe()} at {size} px, {config.batches} batches of {config.batch_size}")
    for _ in range(config.warmup):
        timed(plain)
        timed(concepthash)
    plain_times, hash_times = [], []
    for _ in range(config.batches):
        plain_times.append(timed(plain))
        hash_times.append(timed(concepthash))
    images = config.batch_size * config.batches
    plain_rate, hash_rate = images / sum(plain_times), images / sum(hash_times)
    return {
        "backbone": spec,
        "described": backbone.describe(),
        "image_size": size,
        "plain_images_per_s": plain_rate,
        "concepthash_images_per_s": hash_rate,
        "ratio": plain_rate / hash_rate,  # ConceptHash time / plain time
        "plain_batch_seconds": plain_times,
        "concepthash_batch_seconds": hash_times,
    }


def bench_encoding(config: EncodingBenchConfig, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """Images/s of ``ConceptHash.encode`` vs the same backbone's ``encode_image`` on random pixels."""
    import torch

    rows = [_encoding_row(spec, config, progress) for spec in config.backbones]
    return {
        "benchmark": "encoding",
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
        "settings": {**asdict(config), "backbones": list(config.backbones)},
        "rows": rows,
        "notes": [
            "preprocessing is not timed (random pixels); ratio = ConceptHash time / plain time",
            f"{config.warmup} warm-up batch(es) of each, then plain and ConceptHash batches alternate",
        ],
    }


def encoding_table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (
        f"Image encoding on {s['device']}: batch {s['batch_size']}, {s['batches']} timed batches; "
        f"ConceptHash with {s['concepts']} concepts, {s['bits']} bits"
    )
    rows = [
        [r["backbone"], r["image_size"], r["plain_images_per_s"], r["concepthash_images_per_s"], r["ratio"]]
        for r in result["rows"]
    ]
    table = format_table(["backbone", "px", "plain img/s", "ConceptHash img/s", "time ratio"], rows)
    return "\n".join([head, "", table, "", *(f"note: {n}" for n in result["notes"])])


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def _json_out(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--json-out",
        type=Path,
        default=DEFAULT_OUT_DIR / f"{name}.json",
        help=f"where to write the JSON results (default bench-results/{name}.json)",
    )


def add_dashboard_flags(parser: argparse.ArgumentParser) -> None:
    """The ``dashboard`` benchmark's flags; ``dashboard/benchmark.py`` parses the same ones."""
    parser.add_argument(
        "--bundles", type=Path, default=DEFAULT_BUNDLES, help="folder of bundles (default pretrained/)"
    )
    parser.add_argument("--warm-runs", type=int, default=DEFAULT_WARM_RUNS)
    parser.add_argument("--uploads", type=int, default=DEFAULT_UPLOADS, help="uploads timed; 0 skips them")
    parser.add_argument("--timeout", type=float, default=DEFAULT_PAGE_TIMEOUT, help="seconds allowed per run")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="browser: before the warm visits, open Home and wait this many seconds, so they are timed once "
        "its background imports are done (default 0: right after the first visit, as a person would)",
    )
    parser.add_argument(
        "--no-browser",
        dest="browser",
        action="store_false",
        help="skip the real-browser timings (they need Chromium and playwright)",
    )
    parser.add_argument(
        "--no-server-side",
        dest="server_side",
        action="store_false",
        help="skip the server-side (in-process) timings",
    )
    parser.add_argument(
        "--pages",
        type=_page_names,
        default="",
        help="only these pages, by file name without .py, comma-separated (e.g. hash_codes,retrieval; "
        "default every page)",
    )
    _json_out(parser, "dashboard")


def _page_names(text: str) -> str:
    """``--pages``: page names without .py, comma-separated and tidied (kept a string, so the flag passes
    unchanged to the benchmark's own process; empty: every page)."""
    return ",".join(n.strip().removesuffix(".py") for n in text.split(",") if n.strip())


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    """The ``load`` benchmark's flags; ``dashboard/benchmark.py`` parses the same ones."""
    parser.add_argument(
        "--bundles", type=Path, default=DEFAULT_BUNDLES, help="folder of bundles (default pretrained/)"
    )
    parser.add_argument(
        "--sessions", type=int, default=DEFAULT_SESSIONS, help="browser sessions at once (default 8)"
    )
    parser.add_argument("--photos", type=int, default=DEFAULT_PHOTOS, help="photos each session uploads")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_PAGE_TIMEOUT, help="seconds allowed per step"
    )
    _json_out(parser, "load")


def add_memory_flags(parser: argparse.ArgumentParser) -> None:
    """The ``memory`` benchmark's flags; ``dashboard/benchmark.py`` parses the same ones."""
    parser.add_argument(
        "--bundles", type=Path, default=DEFAULT_BUNDLES, help="folder of bundles (default pretrained/)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_MEMORY_TIMEOUT, help="seconds allowed per page run"
    )
    _json_out(parser, "memory")


# The sub-commands run by DASHBOARD_SCRIPT, each with the function that adds its flags: both parsers call it,
# and every flag it adds is passed on (``script_flags``), so a new flag cannot be dropped on the way.
SCRIPT_BENCHES = {"dashboard": add_dashboard_flags, "memory": add_memory_flags, "load": add_load_flags}


def script_flags(bench_command: str) -> list[str]:
    """The argument names (``dest``) of the flags ``bench_command`` takes, read from its flag function."""
    parser = argparse.ArgumentParser(add_help=False)
    SCRIPT_BENCHES[bench_command](parser)
    return [action.dest for action in parser._actions]


def add_bench_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench`` and its sub-commands to the ``conceptlens`` sub-command parsers."""
    bench = commands.add_parser("bench", help="speed and memory benchmarks: a table, and JSON in a file")
    benches = bench.add_subparsers(dest="bench_command", required=True)

    retrieval = benches.add_parser("retrieval", help="exact Hamming top-k: ours vs faiss vs a naive loop")
    defaults = RetrievalBenchConfig()
    retrieval.add_argument("--n-db", type=int, default=defaults.n_db, help="database codes (N)")
    retrieval.add_argument("--bits", type=int, default=defaults.bits, help="bits per code (K)")
    retrieval.add_argument("--queries", type=int, default=defaults.queries)
    retrieval.add_argument("--k", type=int, default=defaults.k, help="neighbours per query")
    retrieval.add_argument("--repeats", type=int, default=defaults.repeats, help="best of this many runs")
    retrieval.add_argument(
        "--naive-queries",
        type=int,
        default=defaults.naive_queries,
        help="queries the slow naive loop is timed on (then extrapolated); 0 skips it",
    )
    retrieval.add_argument("--seed", type=int, default=defaults.seed)
    retrieval.add_argument(
        "--faiss-process",
        default=defaults.faiss_process,
        help="'subprocess' (default: faiss's OpenMP threads never share a process with "
        "ours) or 'same' (in-process after ours, then ours again)",
    )
    retrieval.add_argument(
        "--approximate",
        action="append",
        choices=APPROXIMATE_KINDS,
        default=[],
        help="also time this approximate faiss index and its recall@k against exact search; repeatable",
    )
    retrieval.add_argument("--nprobe", type=int, default=defaults.nprobe, help="IVF lists a query scans")
    retrieval.add_argument("--ef-search", type=int, default=defaults.ef_search, help="HNSW search beam")
    clusters_help = "0: uniform random codes; C: codes near C random centres, as trained hash codes are"
    retrieval.add_argument("--clusters", type=int, default=defaults.clusters, help=clusters_help)
    retrieval.add_argument(
        "--flip",
        type=float,
        default=defaults.flip,
        help="with --clusters: chance a bit differs from its centre",
    )
    _json_out(retrieval, "retrieval")

    encoding = benches.add_parser("encoding", help="images/s: ConceptHash codes vs plain CLIP embeddings")
    enc = EncodingBenchConfig()
    encoding.add_argument(
        "--backbone",
        action="append",
        dest="backbones",
        help="NAME:random, NAME:TAG or a clip bundle directory; repeat for several "
        f"(default: {', '.join(enc.backbones)})",
    )
    encoding.add_argument("--batch-size", type=int, default=enc.batch_size)
    encoding.add_argument("--batches", type=int, default=enc.batches, help="timed batches after warm-up")
    encoding.add_argument("--warmup", type=int, default=enc.warmup, help="untimed batches first")
    encoding.add_argument("--bits", type=int, default=enc.bits)
    encoding.add_argument("--concepts", type=int, default=enc.concepts)
    encoding.add_argument("--device", default=enc.device, help="cpu (default), cuda, mps or auto")
    _json_out(encoding, "encoding")

    add_dashboard_flags(
        benches.add_parser("dashboard", help="page times in a real browser and on the server")
    )
    add_memory_flags(
        benches.add_parser("memory", help="peak RSS of loading every bundle and rendering every page")
    )
    add_load_flags(benches.add_parser("load", help="several browser sessions upload photos at once"))

    make = benches.add_parser(
        "make-bundle", help="write a synthetic bundle at a researcher's scale (a real model, drawn arrays)"
    )
    add_make_bundle_flags(make)
    _json_out(make, "make-bundle")
    return bench


def _retrieval(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    result = bench_retrieval(from_args(RetrievalBenchConfig, args))
    return result, retrieval_table(result)


def _encoding(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    backbones = tuple(args.backbones or DEFAULT_ENCODING_BACKBONES)
    result = bench_encoding(from_args(EncodingBenchConfig, args, backbones=backbones))
    return result, encoding_table(result)


def _make_bundle(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from core.synthetic import make_bundle

    config = from_args(SyntheticBundleConfig, args)
    made = make_bundle(config)
    result = {
        "benchmark": "make-bundle",
        "machine": machine_info(),
        "settings": {**asdict(config), "out": str(config.out), "data_out": str(config.data_out)},
        "bundle": str(made.bundle),
        "data_root": None if made.data_root is None else str(made.data_root),
        "seconds": made.seconds,
        "cpu_seconds": made.cpu_seconds,
        "metrics": made.metrics,
    }
    where = f"Synthetic {config.kind} bundle {made.bundle}" + (
        f", images in {made.data_root}" if made.data_root else " (ToyBirds ids)"
    )
    rows = [[step, seconds, made.cpu_seconds[step]] for step, seconds in made.seconds.items()]
    table = format_table(["step", "seconds", "CPU seconds"], rows)
    return result, f"{where}\n\n{table}"


BENCHES: dict[str, Callable[[argparse.Namespace], tuple[dict[str, Any], str]]] = {
    "retrieval": _retrieval,
    "encoding": _encoding,
    "make-bundle": _make_bundle,
}


def script_command(args: argparse.Namespace) -> list[str]:
    """The command line that runs ``args.bench_command`` in ``dashboard/benchmark.py``, flags passed on.

    ``--flag=value`` keeps a negative number from reading as a flag; the script checks the values. A switch
    (``browser``) is passed on as ``--no-browser`` when it is off.
    """
    flags = []
    for name in script_flags(args.bench_command):
        value, flag = getattr(args, name), name.replace("_", "-")
        if isinstance(value, bool):
            flags += [] if value else [f"--no-{flag}"]
        elif value != "":  # an empty text flag (``--pages`` not given) is left at the script's default
            flags.append(f"--{flag}={value}")
    return [sys.executable, str(DASHBOARD_SCRIPT), args.bench_command, *flags]


def run_dashboard_script(args: argparse.Namespace) -> int:
    """Run a dashboard benchmark in its own process, its output streaming through; its exit status.

    The script lives in the source checkout's ``dashboard/`` folder, not in the installed package.
    """
    if not DASHBOARD_SCRIPT.is_file():
        raise ValueError(
            f"conceptlens bench {args.bench_command} needs the ConceptLens source checkout "
            f"(dashboard/benchmark.py), which is not at {DASHBOARD_SCRIPT}."
        )
    # The child imports this same ``core``, whether or not the checkout is pip-installed.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    sys.stdout.flush()
    sys.stderr.flush()
    code = subprocess.run(
        script_command(args), env={**os.environ, "PYTHONPATH": path}, check=False
    ).returncode
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's 128 + signal number


def report(result: dict[str, Any], table: str, json_out: Path) -> int:
    """Print the table, write the JSON (stamped with the finishing time); 1 if the backends disagreed."""
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(table, flush=True)
    path = write_json(json_out, result)
    log(f"Wrote {path}")
    if result.get("identical") is False:
        log("conceptlens: error: the backends returned different results, so the timings are not comparable.")
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one benchmark, print its table, write its JSON; 1 if the backends disagreed, else 0.

    ``dashboard`` and ``memory`` run in ``dashboard/benchmark.py``, and its exit status is returned.
    Bad flag values raise ValueError with one sentence (the command line turns that into exit 2).
    """
    if args.bench_command in SCRIPT_BENCHES:
        return run_dashboard_script(args)
    result, table = BENCHES[args.bench_command](args)
    return report(result, table, args.json_out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.bench SUB ...``: the same as ``conceptlens bench SUB ...``."""
    parser = argparse.ArgumentParser(prog="conceptlens", description="ConceptLens benchmarks.")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return cmd_bench(args)
    except ValueError as exc:
        log(f"conceptlens: error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

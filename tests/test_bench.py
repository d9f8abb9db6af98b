"""``conceptlens bench``: tiny sizes, checking the answers, the JSON and the flag errors (not timings)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core import bench
from core.retrieval.hamming import hamming_topk

MACHINE_KEYS = {"cpu_model", "cores", "usable_cores", "python", "numpy", "torch", "faiss"}
BENCHMARK_SCRIPT = Path(__file__).resolve().parents[1] / "dashboard" / "benchmark.py"


@pytest.fixture(scope="module")
def board():
    """``dashboard/benchmark.py`` loaded from its file (the dashboard folder is not a package)."""
    spec = importlib.util.spec_from_file_location("conceptlens_dashboard_benchmark", BENCHMARK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks the module up while the file runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def run_bench(argv: list[str]) -> int:
    return bench.main(argv)


def test_retrieval_backends_agree_and_json_has_the_table(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [
        "retrieval",
        "--n-db",
        "5000",
        "--queries",
        "20",
        "--k",
        "10",
        "--naive-queries",
        "5",
        "--repeats",
        "2",
        "--json-out",
        str(out),
    ]
    assert run_bench(argv) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "retrieval"
    assert set(result["machine"]) >= MACHINE_KEYS
    assert result["machine"]["cores"] >= 1 and result["machine"]["torch"]
    assert result["settings"] | {"n_db": 5000, "bits": 64, "queries": 20, "k": 10} == result["settings"]
    assert result["identical"] is True
    assert result["checks"]["ours_vs_naive"] == {"queries": 5, "identical": True}
    rows = {row["method"]: row for row in result["rows"]}
    naive = rows["naive NumPy loop"]
    assert naive["extrapolated"] and naive["queries_timed"] == 5
    assert naive["seconds"] == pytest.approx(naive["seconds_timed"] * 4)  # 5 of 20 queries timed
    ours = rows["ours (numpy backend)"]
    assert not ours["extrapolated"] and ours["queries_per_s"] == pytest.approx(20 / ours["seconds"])
    if result["machine"]["faiss"]:
        assert result["checks"]["ours_vs_faiss_backend"] == {"queries": 20, "identical": True}
        assert result["checks"]["distances_vs_raw_faiss"]["identical"]
        assert rows["faiss IndexBinaryFlat (raw)"]["vs_faiss"] == pytest.approx(1.0)
        faiss_seconds = rows["faiss IndexBinaryFlat (raw)"]["seconds"]
        assert ours["vs_faiss"] == pytest.approx(ours["seconds"] / faiss_seconds)
    else:
        assert any("faiss is not installed" in note for note in result["notes"])
    printed = capsys.readouterr().out
    assert "ours (numpy backend)" in printed and "identical on 20 queries" in printed


def test_retrieval_with_faiss_in_the_same_process_times_ours_again_afterwards():
    pytest.importorskip("faiss")
    config = bench.RetrievalBenchConfig(
        n_db=2000, queries=8, k=7, repeats=1, naive_queries=8, faiss_process="same"
    )
    result = bench.bench_retrieval(config, progress=lambda _: None)
    methods = [row["method"] for row in result["rows"]]
    assert methods == [
        "ours (numpy backend)",
        "naive NumPy loop",
        "faiss IndexBinaryFlat (raw)",
        "ours, faiss backend",
        "ours (numpy), re-timed after faiss",
    ]
    assert result["identical"] and len(result["checks"]) == 3
    assert not result["rows"][1]["extrapolated"]  # all 8 queries ran through the naive loop
    assert "this process, after ours" in bench.retrieval_table(result)


def test_retrieval_reports_backends_that_disagree(tmp_path, monkeypatch, capsys):
    def wrong_naive(query, db, k, backend="numpy"):
        indices, distances = hamming_topk(query, db, k, backend=backend)
        return indices[:, ::-1].copy(), distances[:, ::-1].copy()

    monkeypatch.setattr(bench, "hamming_topk", wrong_naive)
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)  # skip faiss here
    out = tmp_path / "r.json"
    argv = [
        "retrieval",
        "--n-db",
        "300",
        "--queries",
        "4",
        "--k",
        "5",
        "--repeats",
        "1",
        "--json-out",
        str(out),
    ]
    assert run_bench(argv) == 1
    result = json.loads(out.read_text())
    assert result["identical"] is False and result["checks"]["ours_vs_naive"]["identical"] is False
    assert "different results" in capsys.readouterr().err


def test_random_codes_are_seeded_and_keep_padding_bits_clear():
    a = bench.random_packed_codes(50, 70, np.random.default_rng(3))
    b = bench.random_packed_codes(50, 70, np.random.default_rng(3))
    assert a.shape == (50, 2) and a.dtype == np.uint64
    assert np.array_equal(a, b)
    assert int(a[:, 1].max()) < 2**6  # 70 bits = one full word + 6 bits
    assert len(np.unique(a[:, 0])) == 50  # random 64-bit words do not collide at this size


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--n-db", "50", "--k", "51"], "--k 51 is larger than the database"),
        (["--queries", "0"], "--queries must be at least 1, got 0."),
        (["--repeats", "-1"], "--repeats must be at least 1"),
        (["--faiss-process", "thread"], "--faiss-process must be one of subprocess, same"),
    ],
)
def test_bad_retrieval_flags_exit_2_with_one_sentence(tmp_path, capsys, argv, words):
    out = tmp_path / "r.json"
    assert run_bench(["retrieval", *argv, "--json-out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and err[0].endswith(".")
    assert not out.exists()


def test_format_table_aligns_text_left_and_numbers_right():
    table = bench.format_table(["name", "s"], [["ab", 1.5], ["c", 12345.0], ["d", None]])
    assert table.splitlines() == [
        "name       s",
        "----  ------",
        "ab       1.5",
        "c     12,345",
        "d        n/a",
    ]


def test_encoding_bench_on_the_tiny_clip(tmp_path):
    out = tmp_path / "e.json"
    argv = [
        "encoding",
        "--backbone",
        "toyclip-tiny:random",
        "--batches",
        "2",
        "--batch-size",
        "8",
        "--json-out",
        str(out),
    ]
    assert run_bench(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["machine"]) >= MACHINE_KEYS and result["machine"]["torch_threads"] >= 1
    (row,) = result["rows"]
    assert row["backbone"] == "toyclip-tiny:random" and row["image_size"] == 32
    assert len(row["plain_batch_seconds"]) == len(row["concepthash_batch_seconds"]) == 2
    assert row["plain_images_per_s"] == pytest.approx(16 / sum(row["plain_batch_seconds"]))
    assert row["concepthash_images_per_s"] == pytest.approx(16 / sum(row["concepthash_batch_seconds"]))
    ratio = sum(row["concepthash_batch_seconds"]) / sum(row["plain_batch_seconds"])
    assert row["ratio"] == pytest.approx(ratio)


def test_encoding_bench_names_an_unknown_backbone(tmp_path, capsys):
    argv = ["encoding", "--backbone", "no-such-net:random", "--json-out", str(tmp_path / "e.json")]
    assert run_bench(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-net" in err[0]


def test_core_bench_knows_nothing_of_streamlit():
    source = Path(bench.__file__).read_text(encoding="utf-8").lower()
    assert "streamlit" not in source and "apptest" not in source
    assert bench.DASHBOARD_SCRIPT == BENCHMARK_SCRIPT and BENCHMARK_SCRIPT.is_file()


def test_dashboard_pages_come_from_home_or_the_folders(tmp_path, board):
    (tmp_path / "views").mkdir()
    for name in ("b.py", "a.py", "__init__.py"):
        (tmp_path / "views" / name).write_text("")
    home = tmp_path / "Home.py"
    home.write_text('[st.Page("views/b.py", title="B"), st.Page(\n  "views/a.py"), st.Page("views/gone.py")]')
    assert board.dashboard_pages(home) == ["views/b.py", "views/a.py"]  # Home's order; missing files dropped
    home.write_text("st.navigation([])")
    assert board.dashboard_pages(home) == ["views/a.py", "views/b.py"]
    real = board.dashboard_pages()
    assert any(page.endswith("open_world.py") for page in real)
    assert all((board.HOME_PAGE.parent / page).is_file() for page in real)
    assert (BENCHMARK_SCRIPT.parent / "Home.py") == board.HOME_PAGE


def test_conceptlens_bench_dashboard_times_every_page_and_the_upload(tiny_bundles, tmp_path, capfd, board):
    out = tmp_path / "d.json"
    argv = [
        "dashboard",
        "--bundles",
        str(tiny_bundles),
        "--warm-runs",
        "1",
        "--uploads",
        "1",
        "--no-browser",  # the browser columns need a server per page: tests/test_browser.py drives one
        "--json-out",
        str(out),
    ]
    assert run_bench(argv) == 0  # through core, which runs dashboard/benchmark.py in a child process
    result = json.loads(out.read_text())
    assert [row["page"] for row in result["rows"]] == board.dashboard_pages()
    for row in result["rows"]:
        assert row["first_seconds"] > 0 and row["warm_median_seconds"] == row["warm_seconds"][0] > 0
        assert row["errors"] == [] and row["browser"] is None
    assert result["browser"] == {"available": False, "reason": "--no-browser"}
    upload = result["upload"]
    assert upload["available"] is True and len(upload["seconds"]) == 1 and upload["median_seconds"] > 0
    found = set(result["settings"]["bundles_found"])
    assert found == {"toy-clip", "toy-hash-csd", "toy-hash-nocsd", "toy-ceir"}
    expected = {"warm_runs": 1, "uploads": 1, "timeout": 300.0, "browser": False, "server_side": True}
    expected["settle"] = 0
    assert result["settings"] | expected == result["settings"]
    assert set(result["machine"]) >= MACHINE_KEYS and result["machine"]["streamlit"] == version("streamlit")
    printed = capfd.readouterr()
    heading = "Dashboard page times in seconds (bundles in "
    assert printed.out.splitlines()[0].startswith(heading), printed.out[:6000]  # whatever came first, whole
    assert "upload -> labels on views/open_world.py (server side): median" in printed.out
    assert "browser timings: not available (--no-browser)" in printed.out
    assert printed.err.strip().splitlines()[-1] == f"Wrote {out}"


def test_dashboard_bench_checks_its_flags_in_process(tmp_path, capsys, board):
    with pytest.raises(ValueError, match="--warm-runs must be at least 1, got 0."):
        board.DashboardBenchConfig(bundles=tmp_path, warm_runs=0)
    with pytest.raises(ValueError, match="--settle must be between 0 and 600 seconds, got -1"):
        board.DashboardBenchConfig(bundles=tmp_path, settle=-1)
    assert (
        board.main(
            [
                "dashboard",
                "--bundles",
                str(tmp_path),
                "--timeout",
                "0",
                "--json-out",
                str(tmp_path / "d.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["conceptlens: error: --timeout must be a positive number of seconds, got 0.0."]
    assert not (tmp_path / "d.json").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["dashboard", "--bundles", "{tmp}/missing"], "missing does not exist; pass --bundles DIR."),
        (
            ["dashboard", "--bundles", "{tmp}", "--uploads", "-1"],
            "--uploads must be 0 (skip) or more, got -1.",
        ),
        (["memory", "--bundles", "{tmp}"], "No ConceptLens bundles were found in"),
        (["load", "--sessions", "0"], "--sessions must be between 1 and 32, got 0."),
        (["load", "--photos", "9"], "--photos must be between 1 and 5, got 9."),
    ],
)
def test_dashboard_and_memory_errors_come_back_through_conceptlens_bench(tmp_path, capfd, argv, words):
    out = tmp_path / "d.json"
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert run_bench([*argv, "--json-out", str(out)]) == 2  # the child's exit status
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conceptlens: error: ") and words in err[0]
    assert not out.exists()


def test_conceptlens_bench_passes_every_flag_to_the_script(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, env, check):
        calls.append((command, env))
        return subprocess.CompletedProcess(command, returncode=-9 if "memory" in command else 7)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    argv = [
        "dashboard",
        "--bundles",
        "b",
        "--warm-runs",
        "-2",
        "--uploads",
        "0",
        "--timeout",
        "2.5",
        "--settle",
        "15",
        "--no-browser",
        "--json-out",
        "o.json",
    ]
    assert run_bench(argv) == 7
    assert run_bench(["memory"]) == 128 + 9  # killed by SIGKILL, as a shell reports it
    assert run_bench(["load", "--sessions", "3"]) == 7
    script = [sys.executable, str(BENCHMARK_SCRIPT)]
    assert calls[0][0] == [
        *script,
        "dashboard",
        "--bundles=b",
        "--warm-runs=-2",
        "--uploads=0",
        "--timeout=2.5",
        "--settle=15.0",
        "--no-browser",  # a switch that is off is passed on as such; one that is on is the default
        "--json-out=o.json",
    ]
    assert calls[1][0] == [
        *script,
        "memory",
        f"--bundles={bench.DEFAULT_BUNDLES}",
        "--timeout=600.0",
        "--json-out=bench-results/memory.json",
    ]
    assert calls[2][0] == [
        *script,
        "load",
        f"--bundles={bench.DEFAULT_BUNDLES}",
        "--sessions=3",
        "--photos=3",
        "--timeout=300.0",
        "--json-out=bench-results/load.json",
    ]
    assert calls[0][1]["PYTHONPATH"] == os.pathsep.join([str(BENCHMARK_SCRIPT.parents[1]), "elsewhere"])


@pytest.mark.parametrize(
    "argv",
    [
        ["dashboard", "--warm-runs", "2", "--uploads", "0", "--settle", "15", "--no-server-side"],
        ["dashboard", "--pages", "hash_codes, retrieval.py", "--no-browser"],
        ["memory", "--timeout", "30"],
        ["load", "--sessions", "3", "--photos", "1"],
    ],
)
def test_the_script_reads_back_every_value_conceptlens_bench_was_given(argv, board):
    """What ``conceptlens bench`` passes on parses, in the script, to the very values it was given (a flag
    left out on the way would come back as its default)."""
    parser = argparse.ArgumentParser()
    bench.add_bench_parser(parser.add_subparsers(dest="command"))
    given = vars(parser.parse_args(["bench", *argv]))
    command = bench.script_command(argparse.Namespace(**given))
    received = vars(board.build_parser().parse_args(command[2:]))
    assert {name: received[name] for name in bench.script_flags(argv[0])} == {
        name: given[name] for name in bench.script_flags(argv[0])
    }
    assert len(bench.script_flags(argv[0])) == len(received) - 1  # all but the sub-command's name


def test_every_tab_of_a_page_is_drawn_for_the_memory_bench(board, tiny_bundles, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tiny_bundles))
    app = AppTest.from_file(str(board.HOME_PAGE), default_timeout=120)
    app.switch_page("views/ceir_concepts.py")
    app.run()
    labels = ["Latent map", "One image: concepts and what-if", "Clusters", "Quality"]
    assert board.tab_sets(app) == [("ceir_tab", labels)]
    headings = []
    original_run = app.run

    def run(*args, **kwargs):
        result = original_run(*args, **kwargs)
        headings.append([s.value for s in app.subheader])
        return result

    monkeypatch.setattr(app, "run", run)
    assert board.every_tab(app) == []
    assert [h[0] for h in headings] == [
        "The latent space",
        "One image's concepts",
        "Clusters and their concepts",
        "Clustering quality on the test split",
    ]


def test_memory_bench_waits_for_the_pages_background_work(tiny_bundles, tmp_path):
    """With the warm-ups on (as in a real dashboard), the open-world page loads ConSE in a background thread;
    a measured process that exits while that thread is inside PyTorch aborts ("terminate called without an
    active exception"), so the child waits for it."""
    env = {k: v for k, v in os.environ.items() if k != "CONCEPTLENS_NO_WARM_UP"}
    root = str(BENCHMARK_SCRIPT.parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    out = tmp_path / "memory.json"
    command = [sys.executable, str(BENCHMARK_SCRIPT), "memory", f"--bundles={tiny_bundles}"]
    command.append(f"--json-out={out}")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["pages"]) == 6 and not any(result["page_errors"].values())


def test_dashboard_benches_need_the_source_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "DASHBOARD_SCRIPT", tmp_path / "dashboard" / "benchmark.py")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("nothing should run"))
    assert run_bench(["memory", "--json-out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "bench memory needs the ConceptLens source checkout (dashboard/benchmark.py)" in err[0]
    assert str(tmp_path) in err[0] and err[0].endswith(".")


def test_load_bench_gives_every_session_its_own_photos(tmp_path, board):
    first, second = (board.session_photos(n, 3, tmp_path) for n in (0, 1))
    assert [p.name for p in first] == ["s0-astronaut.png", "s0-chelsea.png", "s0-coffee.png"]
    pixels = [Image.open(p).tobytes() for p in (*first, *second)]
    assert len(set(pixels)) == 6  # no session is answered from another's cached labels
    assert Image.open(second[0]).size == (511, 512)


def test_browser_helpers_address_pages_and_read_memory(board):
    pages = board.dashboard_pages()
    assert board._page_url("http://h:1", pages[0], pages) == "http://h:1/"  # the default page is the root
    assert board._page_url("http://h:1", "views/open_world.py", pages) == "http://h:1/open_world"
    from browser import process_memory_mib

    mine = process_memory_mib(os.getpid())
    assert 0 < mine["rss_mib"] <= mine["peak_rss_mib"]
    assert process_memory_mib(-1) == {"rss_mib": None, "peak_rss_mib": None}


def test_load_report_sets_the_floor_beside_the_pages_figures(board):
    summary = {"median": 1.0, "max": 2.0, "min": 0.5}
    result = {
        "settings": {"sessions": 2, "photos": 1},
        "sessions_ok": 2,
        "sessions": [{"error": None}, {"error": None}],
        **{key: summary for key in ("script_started_seconds", "feedback_seconds", "labels_seconds")},
        "page_ready_seconds": {"median": 3.25, "max": 4.0, "min": 3.0},
        "floor": {
            "script_started_seconds": summary,
            "page_ready_seconds": {"median": 2.75, "max": 2.9, "min": 2.5},
            "errors": ["timed out"],
        },
        "cpu_seconds": {"server": 14.5, "rest_of_machine": 57.25},
        "server_rss_idle_mib": 70.0,
        "server_rss_mib": 900.0,
        "server_peak_rss_mib": 950.0,
        "notes": [],
    }
    lines = board.load_table(result).splitlines()
    assert any(line.startswith("page ready (s)") and "3.25" in line for line in lines)
    floor = [line for line in lines if line.startswith("floor: a one-title Streamlit app ready (s)")]
    assert len(floor) == 1 and "2.75" in floor[0] and "2.9" in floor[0]
    assert "floor session: timed out" in lines
    assert any(line.startswith("server CPU during the sessions (s)") and "14.5" in line for line in lines)
    assert any(line.startswith("rest of the machine's CPU") and "57.25" in line for line in lines)
    assert board.FLOOR_APP.read_text().count("st.") == 1  # the floor draws a title and nothing else


def test_cpu_seconds_grow_with_work_and_split_server_from_the_rest(board):
    from browser import cpu_seconds

    mine, machine = cpu_seconds(os.getpid()), cpu_seconds()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of this process's CPU
        pass
    assert cpu_seconds(os.getpid()) - mine >= 0.25
    assert cpu_seconds() - machine >= 0.25
    assert cpu_seconds(2**22 + 12345) is None  # no such process
    split = board._cpu_split({"server": 1.0, "machine": 10.0}, {"server": 4.5, "machine": 20.0})
    assert split == {"server": 3.5, "rest_of_machine": 6.5}
    assert board._cpu_split({"server": None, "machine": 1.0}, {"server": 2.0, "machine": 3.0}) == {
        "server": None,
        "rest_of_machine": None,
    }


def test_page_timing_keeps_the_errors_of_every_run(board, monkeypatch):
    """A first visit that fails while the reruns draw is still reported (the app shows only its last run)."""

    class FirstRunFails:
        def __init__(self) -> None:
            self.exception, self.error = [SimpleNamespace(value="boom on the first visit")], []

        def run(self) -> None:
            self.exception = []

    monkeypatch.setattr(board, "_open_page", lambda page, timeout: (FirstRunFails(), 0.5))
    row = board._page_timing("views/x.py", 2, 10.0)
    assert row["errors"] == ["boom on the first visit"] and len(row["warm_seconds"]) == 2


FAKE_APP = """<div data-testid="stApp" data-test-script-state="notRunning">
<div data-testid="stMain"><h1>Old page</h1><div id="body"></div></div></div>"""


@pytest.mark.browser
def test_a_click_is_ready_only_after_its_run_not_at_a_late_element_of_the_old_page(board):
    """The timing script on a hand-made page: content that lands after the click on the page still shown
    (a late chart of the old page) is not the click's run; emptying the main area (a navigation) and the
    new page's title with the script state idle again is."""
    from browser import CHROMIUM_ARGS, TIMING_SCRIPT
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, require_browser

    require_browser()
    ready = "() => window.__cl.ready !== null"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            page = chromium.new_page()
            page.set_content(FAKE_APP)
            page.evaluate(TIMING_SCRIPT)
            page.evaluate("() => window.__clRestart()")  # the click
            page.evaluate("() => document.getElementById('body').append(document.createElement('p'))")
            page.wait_for_timeout(100)
            assert not page.evaluate(ready), "a late element of the old page read as the click's run"
            state = "document.querySelector(\"[data-testid='stApp']\").dataset.testScriptState"
            page.evaluate(f"() => {{ document.querySelector('h1').remove(); {state} = 'running'; }}")
            page.wait_for_timeout(50)
            title = "Object.assign(document.createElement('h1'), {textContent: 'New page'})"
            page.evaluate(f"() => document.getElementById('body').before({title})")
            page.wait_for_timeout(50)
            assert not page.evaluate(ready), "ready while the script still runs"
            page.evaluate(f"() => {{ {state} = 'notRunning'; }}")
            page.wait_for_function(ready, timeout=2000)
        finally:
            chromium.close()


def test_every_timed_interaction_names_a_widget_and_a_tab_its_page_has(board):
    """Each of the dashboard benchmark's interactions (and its preparing steps) names a widget key its page
    draws and, where it gives one, a tab label of that page's tabs: a renamed widget fails here, not an hour
    into a benchmark."""
    for act in board.INTERACTIONS:
        source = (board.HERE / "views" / f"{act.page}.py").read_text()
        for key in (act.key, *(step[0] for step in act.prepare)):
            stem = key.rstrip("0123456789")  # hash_values_0 is drawn as f"hash_values_{concept}"
            assert f'"{key}"' in source or f'key=f"{stem}{{' in source, (act.page, key)
        if act.tab is not None:
            assert f'"{act.tab}"' in source, (act.page, act.tab)
        assert act.kind in ("select", "multiselect", "radio") and act.choices


@pytest.mark.browser
def test_choices_in_widgets_are_timed_and_a_choice_that_runs_nothing_is_named(board, tiny_bundles, tmp_path):
    """``browser.choose`` moves a select down the list and clicks a radio in a real
    Streamlit page, ``act_timed`` times each to the page ready, and choosing what is already chosen is
    reported as a run that never started instead of waiting for the time limit."""
    import asyncio

    from browser import StreamlitServer, act_timed, choose, launch, new_context, open_timed, widget

    from tests.test_browser import require_browser

    require_browser()

    async def scenario(url: str) -> dict:
        from playwright.async_api import async_playwright

        found = {}
        async with async_playwright() as playwright:
            chromium = await launch(playwright)
            try:
                page = await (await new_context(chromium)).new_page()
                await open_timed(page, f"{url}/concept_attention", 120)
                field = widget(page, "attn_index").locator("input").first
                found["image before"] = await field.input_value()
                found["image times"] = await act_timed(
                    page, lambda: choose(page, "attn_index", "select", 3), 60
                )
                found["image after"] = await field.input_value()
                await open_timed(page, f"{url}/retrieval", 120)
                found["query times"] = await act_timed(
                    page, lambda: choose(page, "ret_query", "select", 5), 60
                )
                found["query after"] = await widget(page, "ret_query").locator("input").first.input_value()
                found["radio times"] = await act_timed(
                    page, lambda: choose(page, "ret_source", "radio", 1), 60
                )
                try:
                    await act_timed(
                        page, lambda: choose(page, "ret_source", "radio", 1), 60, "again", grace=2
                    )
                except ValueError as exc:
                    found["again"] = str(exc)
            finally:
                await chromium.close()
        return found

    with StreamlitServer(tiny_bundles, tmp_path / "server.log") as server:
        found = asyncio.run(scenario(server.url))
    assert found["image before"].startswith("#0 ") and found["image after"].startswith("#3 "), found
    assert found["query after"].startswith("#5 "), found
    for name in ("image times", "query times", "radio times"):
        feedback, ready = found[name]
        assert 0 < ready < 60
    assert "started no script run" in found.get("again", ""), found

"""What keeps the dashboard quick, tested without timing anything.

Home and the sidebar find and describe bundles without importing PyTorch; one process-wide lock lets one
forward pass run at a time (eight sessions on two cores); ConSE remembers the concept bank it encoded;
the background imports start once per process. The speeds themselves are measured by
``conceptlens bench dashboard`` and ``conceptlens bench load``, not here.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import torch

from tests.conftest import ROOT


def test_finding_and_describing_bundles_does_not_import_torch(tiny_bundles):
    code = (
        "import sys; import lens.bundles as b; from core.bundle import find_bundles, read_bundle_config; "
        f"kinds = sorted(read_bundle_config(p)['kind'] for p in find_bundles({str(tiny_bundles)!r})); "
        "print(kinds, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "dashboard",
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'dashboard'}", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "['ceir', 'clip', 'concepthash', 'concepthash'] False"


def test_one_forward_pass_at_a_time_on_every_usable_core():
    from lens.inference import serialised, usable_cores, use_cores

    inside, most = [0], [0]

    def forward(n: int) -> int:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        inside[0] -= 1
        return n * n

    results: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, serialised(forward, n))) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n * n for n in range(8)} and most[0] == 1
    assert use_cores() == usable_cores() == torch.get_num_threads()


class CountingTextModel:
    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts, **_options):
        self.calls += 1
        return torch.nn.functional.normalize(torch.randn(len(texts), 4), dim=-1)


def test_conse_encodes_a_concept_bank_once():
    from core.backbones.conse import TEXT_CACHE_SIZE, ConSEBackbone, ConSEConfig

    text_model = CountingTextModel()
    backbone = ConSEBackbone(torch.nn.Linear(2, 2), text_model, torch.randn(5, 4), ConSEConfig())
    first = backbone.encode_texts(["red wing", "blue head"])
    first.zero_()  # a caller's change must not reach the remembered copy
    again = backbone.encode_texts(["red wing", "blue head"])
    assert text_model.calls == 1 and again.abs().sum() > 0
    for n in range(TEXT_CACHE_SIZE):
        backbone.encode_texts([f"concept {n}"])
    backbone.encode_texts(["red wing", "blue head"])  # pushed out by the newer lists: encoded again
    assert text_model.calls == 2 + TEXT_CACHE_SIZE


def test_a_page_imports_its_own_light_modules_and_home_warms_the_models_code_once(tmp_path):
    from lens import startup

    page = tmp_path / "page.py"
    page.write_text("from __future__ import annotations\nimport json, os.path\nfrom lens.hashing import x\n")
    assert startup.page_modules(page) == ["json", "os.path", "lens.hashing"]
    assert startup.page_modules(tmp_path / "missing.py") == []
    assert "lens.hashing" in startup.page_modules(ROOT / "dashboard" / "views" / "hash_codes.py")
    startup.wait_for_imports(page)  # outside a running app: the progress bar goes nowhere, the import is real
    assert startup.missing(["json", "lens.hashing"]) == []
    thread = startup.start_imports()  # Home's call: the models' code, in the background
    assert thread is None or startup.start_imports() is thread  # one thread at a time
    if thread is not None:
        thread.join(timeout=300)
    assert not startup.running() and startup.missing(startup.MODULES) == [] and not startup._failed
    assert startup.start_imports() is None  # nothing left to import


def test_no_page_needs_the_models_code_to_draw():
    """Every page's own imports stay free of PyTorch and open_clip (they load when a person runs a model)."""
    import subprocess
    import sys

    from lens import startup

    pages = sorted((ROOT / "dashboard" / "views").glob("*.py"))
    modules = sorted({m for page in pages for m in startup.page_modules(page)})
    code = f"import sys; sys.path.insert(0, 'dashboard'); [__import__(m) for m in {modules!r}]; " + (
        "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stderr[-2000:]


def test_a_pages_imports_are_read_without_building_an_ast(monkeypatch):
    """``page_modules`` runs in every session's thread beside Streamlit's own parse of a page; Python 3.11.7
    crashes when two threads build AST objects at once, so it must not call ``ast.parse``. It lists what the
    parse would: top-level absolute imports in order, ``as`` names and relative imports left out."""
    import ast

    from lens import startup

    pages = sorted((ROOT / "dashboard").rglob("*.py"))

    def by_ast(page):
        found = []
        for node in ast.parse(page.read_text()).body:
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found += [] if node.module == "__future__" else [node.module]
        return list(dict.fromkeys(found))

    expected = {page: by_ast(page) for page in pages}

    def refuse(*args, **kwargs):
        raise AssertionError("page_modules built an AST")

    monkeypatch.setattr(ast, "parse", refuse)
    assert {page: startup.page_modules(page) for page in pages} == expected
    assert any("lens.hashing" in found for found in expected.values())

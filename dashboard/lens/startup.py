"""The first visit after a restart: PyTorch, open_clip and the models' code take seconds to import.

A background thread does the imports, one at a time per process. A page other than Home starts it for
its own modules (read from its ``import`` lines by :func:`page_modules`) and waits behind a progress bar
drawn before anything slow happens, instead of a blank main area; PyTorch and open_clip come first, but only
for a page whose modules need them (:data:`NEED_MODELS`): the open-world page draws without them and loads
its model when there is an image to label. ``Home.py`` starts the thread for everything the pages need
(:data:`MODULES`) after drawing itself, so the page a person opens next finds it imported; the open-world
page instead loads its own model in the background once it is drawn, so a first upload finds it ready.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

# Modules named to a person while they load; anything else a page imports is named "the page's code".
NAMES = {
    "torch": "PyTorch",
    "open_clip": "open_clip",
    "lens.hashing": "ConceptHash",
    "lens.ceir": "CEIR",
    "lens.counterfactual": "CEIR interventions",
    "lens.labels": "open-world labels",
    "lens.retrieval": "retrieval",
    "lens.figures": "figures",
}
FIRST = ("torch", "open_clip")  # the model pages need them, and they are most of the time
NEED_MODELS = ("lens.ceir", "lens.counterfactual", "lens.retrieval")  # import PyTorch
MODULES = (*FIRST, *(m for m in NAMES if m not in FIRST))
POLL_SECONDS = 0.1

_lock = threading.Lock()
_thread: threading.Thread | None = None
_failed: dict[str, str] = {}  # module -> why it did not import (the page's own import then says it)


def page_modules(page: Path) -> list[str]:
    """The modules a page file imports at its top level, in order (``[]`` if it cannot be read)."""
    try:
        tree = ast.parse(page.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and not node.level
            and node.module != "__future__"
        ):
            found.append(node.module)
    return list(dict.fromkeys(found))


NO_WARM_UP = "CONCEPTLENS_NO_WARM_UP"  # set (the tests do) to skip the ``then`` steps of start_imports


def _import_all(order: Sequence[str], then: Sequence[Callable[[], object]] = ()) -> None:
    for module in order:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the page that needs the module reports the error
            _failed[module] = str(exc)
    for step in then:
        with contextlib.suppress(Exception):  # the page's own call of the step says what went wrong
            step()


def start_imports(
    modules: Sequence[str] = MODULES, then: Sequence[Callable[[], object]] = ()
) -> threading.Thread | None:
    """A background thread importing those of ``modules`` not imported yet (:data:`FIRST` first where they
    are needed), then running the ``then`` steps (e.g. loading a model a page will want; skipped where the
    environment sets :data:`NO_WARM_UP`): the one under way if there is one, a new one otherwise; None when
    there is nothing to do."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            wanted = list(modules)
            if any(module in NEED_MODELS or module in FIRST for module in wanted):
                wanted = list(dict.fromkeys([*FIRST, *wanted]))
            order = missing(wanted)
            steps = () if os.environ.get(NO_WARM_UP) else tuple(then)
            if not order and not steps:
                return None
            _thread = threading.Thread(
                target=_import_all, args=(order, steps), name="conceptlens-imports", daemon=True
            )
            _thread.start()
        return _thread


def running() -> bool:
    """Whether the background imports are under way."""
    return _thread is not None and _thread.is_alive()


def missing(modules: Sequence[str]) -> list[str]:
    """Those of ``modules`` not imported yet (nor failed)."""
    return [name for name in modules if name not in sys.modules and name not in _failed]


def wait_for_imports(page: Path | None = None) -> None:
    """Start the imports if need be and wait, behind a progress bar, until ``page``'s modules are imported
    (all of :data:`MODULES` without a page); at once when they are.

    The bar is drawn before the thread starts: importing PyTorch holds the interpreter for long stretches,
    and a bar sent after that would reach the browser seconds late."""
    needed = page_modules(page) if page else list(MODULES)
    if any(module in NEED_MODELS for module in needed):
        needed = list(dict.fromkeys([*FIRST, *needed]))
    if not missing(needed):
        return
    placeholder = st.empty()
    shown = _show_step(placeholder, needed, None)
    # Only this page's modules: importing the others now would slow the page down. A thread that another
    # page started may end before this page's modules are in; then the next one starts for them.
    while (thread := start_imports(needed)) is not None:
        shown = _show_step(placeholder, needed, shown)
        thread.join(POLL_SECONDS)
    placeholder.empty()


def _show_step(placeholder, needed: list[str], shown: str | None) -> str | None:
    """Draw the step under way, once per step (many sessions may be waiting at once); the module shown."""
    left = missing(needed)
    if left and left[0] != shown:
        done = len(needed) - len(left)
        step = NAMES.get(left[0], "the page's code")
        text = f"Starting ConceptLens after a restart: loading {step} ({done + 1} of {len(needed)}) ..."
        placeholder.progress(done / len(needed), text=text)
        return left[0]
    return shown

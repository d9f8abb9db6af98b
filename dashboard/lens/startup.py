"""The first visit after a restart: PyTorch, open_clip and the models' code take seconds to import.

One background thread per process imports everything the pages need (:data:`MODULES`). ``Home.py``
starts it after drawing the Home page (whose own imports are then done), so the page a person opens next
finds it imported; any other page waits for it behind a progress bar that names each step, drawn before
anything slow happens, instead of a blank main area. A page never imports while the thread does (two
threads importing PyTorch's extensions at once can deadlock), so Home waits too while it runs.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time

import streamlit as st

# (what a person is told, module): PyTorch and open_clip first, they are most of the time.
MODULES = (
    ("PyTorch", "torch"),
    ("open_clip", "open_clip"),
    ("ConceptHash", "lens.hashing"),
    ("CEIR", "lens.concepts_view"),
    ("CEIR interventions", "lens.counterfactual"),
    ("open-world labels", "core.ceir.labels"),
    ("retrieval", "lens.retrieval_view"),
    ("figures", "lens.figures"),
)
POLL_SECONDS = 0.05

_lock = threading.Lock()
_thread: threading.Thread | None = None
_failed: dict[str, str] = {}  # module -> why it did not import (the page's own import then says it)


def _import_all() -> None:
    for _, module in MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the page that needs the module reports the error
            _failed[module] = str(exc)


def start_imports() -> threading.Thread:
    """The background import thread, started on the first call in this process."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_import_all, name="conceptlens-preload", daemon=True)
            _thread.start()
        return _thread


def imported(modules=MODULES) -> int:
    """How many of ``modules`` are imported (or failed to) so far."""
    return sum(name in sys.modules or name in _failed for _, name in modules)


def running() -> bool:
    """Whether the background imports are under way."""
    return _thread is not None and _thread.is_alive()


def wait_for_imports() -> None:
    """Start the imports if need be and wait for them behind a progress bar (none when they are done)."""
    thread = start_imports()
    if not thread.is_alive():
        return
    placeholder = st.empty()
    while thread.is_alive():
        done = imported()
        step = MODULES[min(done, len(MODULES) - 1)][0]
        placeholder.progress(
            done / len(MODULES),
            text=f"Starting ConceptLens after a restart: loading {step} ({done + 1} of {len(MODULES)}) ...",
        )
        time.sleep(POLL_SECONDS)
    placeholder.empty()

"""The first visit after a restart: PyTorch, open_clip and the models' code take seconds to import.

No page needs them to draw: every page draws from its bundle's config and stored arrays
(``lens.bundles.LazyBundle``), and imports the models' code only when a person asks for something that runs a
model (an upload, the rollout maps, a counterfactual, an intervention), behind that action's spinner. What a
page imports itself is light; :func:`wait_for_imports` imports it before the page runs, behind a progress bar
drawn first. ``Home.py`` then starts one background thread for the heavy modules (:data:`MODULES`) after
drawing Home, so the action a person takes next finds them imported; the open-world page starts the same
thread for its labelling code and ConSE once it is drawn (``then`` steps).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import threading
import tokenize
from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

# Modules named to a person while a page's own imports load; anything else is named "the page's code".
NAMES = {
    "lens.hashing": "ConceptHash",
    "lens.ceir": "CEIR",
    "lens.counterfactual": "counterfactual birds",
    "lens.labels": "open-world labels",
    "lens.retrieval": "retrieval",
    "lens.figures": "figures",
}
# What running a model needs, heaviest first: imported in the background after Home is drawn.
MODULES = ("torch", "open_clip", "core.concepthash.attention", "core.ceir.explain", "core.ceir.labels")
POLL_SECONDS = 0.1

_lock = threading.Lock()
_thread: threading.Thread | None = None
_failed: dict[str, str] = {}  # module -> why it did not import (the page's own import then says it)


def page_modules(page: Path) -> list[str]:
    """The modules a page file imports at its top level, in order (``[]`` if it cannot be read).

    Read with the tokenizer, not ``ast.parse``: Python 3.11 up to 3.11.7 fails ("SystemError: AST
    constructor recursion depth mismatch") when two threads build AST objects at once, and Streamlit parses a
    page (its "magic") in one session's thread while another session's thread asks for this list.
    """
    try:
        source = page.read_text(encoding="utf-8")
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, SyntaxError, ValueError, tokenize.TokenError):
        return []
    found: list[str] = []
    statement: list[tokenize.TokenInfo] = []
    for token in tokens:
        if statement and token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            found += _imported(statement)
            statement = []
        elif token.type in (tokenize.NL, tokenize.COMMENT):
            continue
        elif statement or (token.type == tokenize.NAME and token.start[1] == 0 and token.string in IMPORTS):
            statement.append(token)
    return list(dict.fromkeys(found))


IMPORTS = ("import", "from")


def _imported(statement: list[tokenize.TokenInfo]) -> list[str]:
    """The absolute modules one top-level ``import a.b, c as d`` or ``from a.b import x`` statement names."""
    words = [t.string for t in statement if t.string not in ("(", ")")]
    if words[0] == "from":
        module = "".join(words[1 : words.index("import")]) if "import" in words else ""
        return [] if not module or module.startswith(".") or module == "__future__" else [module]
    names, current, renamed = [], "", False
    for word in [*words[1:], ","]:
        if word == ",":
            names += [current] if current else []
            current, renamed = "", False
        elif word == "as":
            renamed = True
        elif not renamed:
            current += word
    return names


NO_WARM_UP = "CONCEPTLENS_NO_WARM_UP"  # set (the tests do) to skip the ``then`` steps of start_imports


def _import_all(order: Sequence[str], then: Sequence[Callable[[], object]] = ()) -> None:
    for module in order:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the page's own import of the module says what went wrong
            _failed[module] = str(exc)
    for step in then:
        with contextlib.suppress(Exception):  # the page's own call of the step says what went wrong
            step()


def start_imports(
    modules: Sequence[str] = MODULES, then: Sequence[Callable[[], object]] = ()
) -> threading.Thread | None:
    """A background thread importing those of ``modules`` not imported yet, then running the ``then`` steps
    (e.g. loading a model a page will want; skipped where the environment sets :data:`NO_WARM_UP`): the one
    under way if there is one, a new one otherwise; None when there is nothing to do."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            order = missing(list(modules))
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


def wait_for_imports(page: Path) -> None:
    """Import ``page``'s own modules before it runs, behind a progress bar drawn first; at once when they are
    imported. In this script's thread, not the background one: the page's modules are light, and must not
    wait behind the models' code that Home may be importing in the background."""
    needed = page_modules(page)
    if not missing(needed):
        return
    placeholder = st.empty()
    shown = None
    for module in missing(needed):
        shown = _show_step(placeholder, needed, shown)
        _import_all([module])
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

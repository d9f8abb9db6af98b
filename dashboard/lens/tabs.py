"""Tabs that draw only the open one, and widgets in them that keep their value while their tab is closed.

A long page drawn whole makes the browser lay out every chart, table and image on every visit; with
``lazy_tabs`` a visit draws the open tab only, and a switch reruns the page. Streamlit forgets a widget's
value after a run that did not draw it, so a widget in such a tab is drawn through ``kept``, which stores its
value under a second key and gives it back when the tab opens again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

SHADOW = "_kept_"  # prefix of the key that holds a widget's value while its tab is closed


def lazy_tabs(sections: Mapping[str, Callable[[], object]], key: str) -> None:
    """One tab per section (label -> the function that draws it), in ``st.tabs`` that reruns the page on a
    switch; only the open tab's function is called."""
    tabs = st.tabs(list(sections), key=key, on_change="rerun")
    for tab, draw in zip(tabs, sections.values(), strict=True):
        if tab.open:
            with tab:
                draw()


def kept(
    widget: Callable[..., Any],
    *args: Any,
    key: str,
    valid: Callable[[Any], bool] | None = None,
    **kwargs: Any,
) -> Any:
    """``widget(*args, key=key, **kwargs)``, starting from the value it had when last drawn (or from a value
    the page put under ``key`` meanwhile, which wins); its value.

    A value that ``valid`` rejects (say a slider value outside this image's range, kept from another bundle)
    is dropped, so the widget starts from its default. A restored widget is drawn without its
    ``value``/``index`` default, which the state overrides anyway (Streamlit logs a warning for both); a
    widget drawn in the last run keeps all its arguments.
    """
    state = st.session_state
    restored = key not in state and SHADOW + key in state
    if restored:
        state[key] = state[SHADOW + key]
    if valid is not None and key in state and not valid(state[key]):
        del state[key]
        restored = False
    if restored:
        kwargs = {name: v for name, v in kwargs.items() if name not in ("value", "index")}
    value = widget(*args, key=key, **kwargs)
    state[SHADOW + key] = value
    return value

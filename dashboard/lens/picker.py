"""Picking one image of a bundle's 20,000: a class filter, a list searchable by name, and thumbnails.

Concept attention (a database image) and Retrieval (a test query) pick the same way: the class first
(optional), then the image from a select box one can type into ("#123 · 024.Red_faced_Cormorant/x.jpg"), or
from a page of thumbnails with an "Open" button under each. The chosen row lives under the page's key, so a
tile's button, the list and the page's own code agree on one image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from lens.data import picture
from lens.figures import grid_columns

ALL = "All classes"
THUMBS = 24  # thumbnails on one page of the browser
THUMB_SIDE = 96


def filter_rows(labels: np.ndarray | None, class_names: Sequence[str], chosen: str | None) -> np.ndarray:
    """The rows of class ``chosen`` (every row when None or when the labels are unknown), in order."""
    n = 0 if labels is None else len(labels)
    if labels is None or chosen is None or chosen not in class_names:
        return np.arange(n)
    return np.flatnonzero(np.asarray(labels) == list(class_names).index(chosen))


def page_count(n_rows: int, per_page: int = THUMBS) -> int:
    """How many pages of ``per_page`` thumbnails ``n_rows`` rows fill (at least one)."""
    return max(1, -(-n_rows // per_page))


def thumbnail_page(rows: np.ndarray, page: int, per_page: int = THUMBS) -> np.ndarray:
    """The ``page``-th (from 0) run of ``per_page`` rows, clamped to the last page."""
    page = min(max(page, 0), page_count(len(rows), per_page) - 1)
    return rows[page * per_page : (page + 1) * per_page]


def pick_image(
    images,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    key: str,
    class_key: str,
    what: str,
    help: str | None = None,
) -> int | None:
    """The row of the image chosen (None after a message when a class has none): a class select box
    (``class_key``; left out when the labels are unknown), the searchable list (``key``) and a thumbnail
    browser whose "Open" buttons choose for the list. ``images`` is a ``core.data.stored.StoredImages``."""
    state = st.session_state
    n = len(images)
    known = set() if labels is None else set(np.asarray(labels).tolist())
    present = [class_names[c] for c in sorted(known) if 0 <= c < len(class_names)]  # -1: not known today
    left, right = st.columns([1, 2])
    chosen = None
    if present:
        chosen = left.selectbox(
            "Class", [ALL, *present], key=class_key, on_change=lambda: state.pop(key, None)
        )
    rows = (
        np.arange(n)
        if labels is None
        else filter_rows(labels, class_names, None if chosen == ALL else chosen)
    )
    if len(rows) == 0:
        st.warning(f"No {what} is of class '{chosen}'.")
        return None
    options = [int(i) for i in rows]
    if state.get(key) not in set(options):  # a row of another class or of another bundle
        state.pop(key, None)
    row = right.selectbox(
        f"{what.capitalize()} ({len(options)}; type to search by name)",
        options,
        key=key,
        format_func=lambda i: f"#{i} · {images.name(i)}",
        help=help,
    )
    if st.toggle(f"Browse thumbnails ({THUMBS} at a time)", key=f"{key}_browse"):
        show_thumbnails(images, rows, key)
    return int(row)


def show_thumbnails(images, rows: np.ndarray, key: str) -> None:
    """One page of ``rows``' thumbnails, each with a button that makes it the chosen row of ``key``."""
    pages = page_count(len(rows))
    page = 0
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}_page")) - 1
    shown = thumbnail_page(rows, page)
    columns = grid_columns(8, THUMB_SIDE)
    for start in range(0, len(shown), columns):
        for column, row in zip(st.columns(columns), shown[start : start + columns], strict=False):
            image, _ = picture(images, int(row), THUMB_SIDE)
            if image is not None and max(image.size) > 2 * THUMB_SIDE:  # a photo: send a thumbnail
                image = image.copy()
                image.thumbnail((2 * THUMB_SIDE, 2 * THUMB_SIDE))
            column.image(image, caption=f"#{row} · {images.name(int(row))}", width="stretch")
            column.button("Open", key=f"{key}_open_{row}", on_click=_choose, args=(key, int(row)))


def _choose(key: str, row: int) -> None:
    st.session_state[key] = row

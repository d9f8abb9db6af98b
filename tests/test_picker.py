"""Picking one image among thousands: the class filter, the searchable list and the thumbnail browser that
Concept attention (database images) and Retrieval (test queries) share (``lens.picker``)."""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle import read_bundle_arrays
from lens import picker


def test_a_class_filter_keeps_that_class_rows_in_order_and_unknown_labels_keep_every_row():
    labels = np.array([2, 0, 2, -1, 1, 2])
    names = ["a", "b", "c"]
    assert picker.filter_rows(labels, names, "c").tolist() == [0, 2, 5]
    assert picker.filter_rows(labels, names, None).tolist() == list(range(6))
    assert picker.filter_rows(labels, names, "not a class").tolist() == list(range(6))
    assert picker.filter_rows(None, names, "a").tolist() == []


@pytest.mark.parametrize(
    "count, page, expected", [(50, 0, range(24)), (50, 2, range(48, 50)), (50, 9, range(48, 50))]
)
def test_thumbnail_pages_hold_24_rows_and_a_page_past_the_end_is_the_last(count, page, expected):
    assert picker.thumbnail_page(np.arange(count), page).tolist() == list(expected)


def thumbnails(app) -> list[str]:
    """The captions of the thumbnail browser's tiles ("#row · name"), in order."""
    captions = [caption for element in app.get("image") for caption in element.captions]
    return [caption for caption in captions if caption.startswith("#") and " · " in caption]


def open_buttons(app) -> list:
    return [b for b in app.button if b.label == "Open"]


def test_concept_attention_opens_the_thumbnail_clicked_within_the_class_chosen(dashboard, tiny_bundles):
    """The browser shows the chosen class's images only, 24 at a time with a page number; an "Open" under a
    tile makes that image the page's image (the list, the title and the code follow)."""
    arrays = read_bundle_arrays(tiny_bundles / "toy-hash-csd")
    labels = arrays["db_labels"]
    app = dashboard("concept_attention")
    app.toggle(key="attn_index_browse").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    shown = thumbnails(app)
    assert len(shown) == picker.THUMBS == len(open_buttons(app))
    assert shown[0].startswith("#0 ") and shown[-1].startswith(f"#{picker.THUMBS - 1} ")
    pages = -(-len(labels) // picker.THUMBS)
    page_boxes = [box for box in app.number_input if box.key == "attn_index_page"]
    assert [box.max for box in page_boxes] == ([pages] if pages > 1 else [])

    cls = app.selectbox(key="attn_class").options[3]
    app.selectbox(key="attn_class").set_value(cls).run()
    members = [int(caption[1:].split()[0]) for caption in thumbnails(app)]
    expected = np.flatnonzero(labels == labels[members[0]]).tolist()
    assert members == expected[: picker.THUMBS] and len(set(labels[members].tolist())) == 1
    target = members[-1]
    button = next(b for b in open_buttons(app) if b.key == f"attn_index_open_{target}")
    button.click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="attn_index").value == target
    assert any(f"**#{target} · " in m.value for m in app.markdown)


def test_retrieval_queries_are_picked_by_class_from_the_stored_test_images(dashboard, tiny_bundles):
    """The query list is the stored test images (searchable by name, not an index box); a class leaves that
    class's queries, and the page's query is of that class."""
    app = dashboard("retrieval")
    query = app.selectbox(key="ret_query")
    ids = read_bundle_arrays(tiny_bundles / "toy-hash-csd")["query_ids"]
    assert len(query.options) == len(ids)
    cls = app.selectbox(key="ret_class").options[2]
    app.selectbox(key="ret_class").set_value(cls).run()
    assert not app.exception, [e.value for e in app.exception]
    chosen = app.selectbox(key="ret_query")
    assert 0 < len(chosen.options) < len(ids)
    app.selectbox(key="ret_query").set_value(int(chosen.options[-1].split()[0][1:])).run()
    captions = [caption for element in app.get("image") for caption in element.captions]
    assert any(c.startswith("query: ") and c.endswith(f" · {cls}") for c in captions), captions

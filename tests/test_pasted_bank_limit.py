"""A pasted concept list has a size limit: the browser cuts a longer paste there, and the page says so."""

from __future__ import annotations


def test_a_pasted_concept_list_is_cut_at_the_limit_and_the_page_says_so(dashboard, tiny_bundles) -> None:
    app = dashboard("open_world")
    app.radio(key="ow_model").set_value(str(tiny_bundles / "toy-ceir")).run()
    app.multiselect(key="ow_samples").set_value(["skimage: coffee"])
    app.selectbox(key="ow_bank").set_value("paste").run()
    area = app.text_area(key="ow_bank_text")
    limit = area.proto.max_chars
    assert 0 < limit <= 50_000
    area.set_value("\n".join(f"concept number {i}" for i in range(10_000))).run()
    assert not app.exception
    assert len(app.text_area(key="ow_bank_text").value) == limit
    assert any(f"limit of {limit:,} characters" in w.value for w in app.warning)
    assert not any("10000 concepts" in c.value for c in app.caption)

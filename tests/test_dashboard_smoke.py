"""Every dashboard page renders without an exception on tiny bundles, and with no bundles at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import HOME


def navigation_pages() -> list[str]:
    """The pages Home.py's navigation registers (every ``st.Page("views/NAME.py", ...)``), in order."""
    pages = []
    for node in ast.walk(ast.parse(HOME.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page" and node.args:
            path = node.args[0]
            if isinstance(path, ast.Constant) and str(path.value).startswith("views/"):
                pages.append(str(path.value).removeprefix("views/").removesuffix(".py"))
    return pages


PAGES = [None, *navigation_pages()]  # None: the app as it opens


def test_every_view_file_is_in_the_navigation():
    views = sorted(p.stem for p in (HOME.parent / "views").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(navigation_pages()) == views and len(views) >= 6


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception(dashboard, page):
    app = dashboard(page)
    assert not app.exception, [e.value for e in app.exception]
    assert app.title, "every page has a title"


@pytest.mark.parametrize("page", PAGES)
def test_page_without_any_bundle_explains_what_to_do(tmp_path, monkeypatch, page):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tmp_path))
    app = AppTest.from_file(str(HOME), default_timeout=60).run()
    if page:
        app.switch_page(f"views/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error or all("Traceback" not in e.value for e in app.error)


def test_home_lists_the_bundles_found(dashboard):
    app = dashboard()
    table = app.dataframe[0].value
    assert set(table["bundle"]) == {"toy-clip", "toy-hash-csd", "toy-hash-nocsd", "toy-ceir"}
    assert set(table["kind"]) == {"clip", "concepthash", "ceir"}
    assert "details" not in table.columns, "long details are written out, not squeezed into a cell"
    details = app.expander[0]
    assert details.label.startswith("Details of each bundle")
    lines = details.markdown[0].value.splitlines()
    assert len(lines) == 4 and any("toy-hash-nocsd" in line and "L_csd×0.0" in line for line in lines)


def test_a_bundle_that_fails_validation_is_named_with_the_reason(tiny_bundles, tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "good-hash")
    (tmp_path / "broken-hash").mkdir()
    (tmp_path / "broken-hash" / "config.json").write_text("{not json")
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tmp_path))
    app = AppTest.from_file(str(HOME), default_timeout=60).run()
    assert not app.exception
    warnings = [w.value for w in app.sidebar.warning]
    assert any("broken-hash" in w and "config.json" in w for w in warnings), warnings
    assert set(app.dataframe[0].value["bundle"]) == {"good-hash"}


def test_the_dashboard_knows_every_registered_kind():
    from core.kinds import KINDS
    from lens.bundles import KIND_VIEWS

    assert set(KIND_VIEWS) == set(KINDS), "a new kind needs its line in lens.bundles.KIND_VIEWS"
    assert len({view.state_key for view in KIND_VIEWS.values()}) == len(KIND_VIEWS)
    assert all((view.picker is None) == (view.load is None) for view in KIND_VIEWS.values())


def test_pickers_default_to_the_published_method_before_ablations():
    from lens.bundles import BundleInfo, default_rank

    def info(name, **model):
        return BundleInfo(f"/b/{name}", "concepthash", name, "", {}, {"model": model})

    bundles = [
        info("a-cls", mode="cls", csd_weight=1.0),
        info("b-nocsd", mode="concepts", csd_weight=0.0),
        info("c-nolang", mode="concepts", csd_weight=1.0, language_guidance=False),
        info("d-csd", mode="concepts", csd_weight=1.0, language_guidance=True),
    ]
    assert [b.name for b in sorted(bundles, key=default_rank)] == ["d-csd", "b-nocsd", "a-cls", "c-nolang"]
    # options the paper does not have make a bundle a variant, not the method: it comes after it
    variants = [info("e-depth", mode="concepts", csd_weight=1.0, concept_depth=2), *bundles]
    assert sorted(variants, key=default_rank)[0].name == "d-csd"


def test_home_names_options_that_are_not_in_the_paper():
    from lens.bundles import beyond_the_paper, describe_bundle

    assert beyond_the_paper({"csd_weight": 1.0, "concept_depth": 0, "locality_weight": 0.0}) == []
    assert beyond_the_paper({"center_hidden": 256}) == [] and beyond_the_paper({"center_hidden": 0}) == [
        "linear centres"
    ]
    assert beyond_the_paper({"part_phrases": {"head": ["a", "b"], "wing": ["c", "d"]}}) == [
        "centres from part phrases (head, wing)"
    ]
    assert beyond_the_paper({"part_phrases": None}) == []
    assert beyond_the_paper({"part_phrases": {"head": ["a", "b"]}, "recolour": 0.5}) == [
        "centres from part phrases (head)",
        "50% of training birds recoloured",
    ]
    assert beyond_the_paper({"recolour": 0.0}) == []
    model = {
        "bits": 6,
        "n_concepts": 3,
        "csd_weight": 1.0,
        "concept_depth": 2,
        "locality_weight": 1.0,
        "centres_from_local": True,
        "focus_weight": 0.5,
        "mix_weight": 2.0,
        "bit_weight": 0.5,
        "oracle_centres": True,
    }
    ceir = {"kind": "ceir", "concepts": ["a", "b"], "ceir": {"n_clusters": 4, "centre_concepts": True}}
    assert describe_bundle(Path("/b/c"), ceir).summary.startswith(
        "2 concepts, k=4, concept text centred (not in the paper); backbone"
    )
    ceir["ceir"] |= {"centre_concepts": False, "include_class_names": True}
    assert describe_bundle(Path("/b/c"), ceir).summary.startswith("2 concepts, k=4, class names appended;")
    summary = describe_bundle(Path("/b/x"), {"kind": "concepthash", "model": model}).summary
    assert summary.startswith(
        "6 bits, 3 concepts, L_csd×1.0, language-guided, read after block 2, L_loc×1.0, centres from L_loc, "
        "L_focus×0.5, L_mix×2.0, L_bit×0.5, oracle centres (diagnostic: part labels); backbone"
    )

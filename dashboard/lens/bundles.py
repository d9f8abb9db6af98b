"""Finding, describing, choosing and loading bundles — shared by every page.

Bundles are searched in the folders named by the ``CONCEPTLENS_BUNDLES`` environment variable
(several separated by ``os.pathsep``), else in the repository's ``pretrained/``. The sidebar
(drawn by ``Home.py`` on every page) lets a person add a folder and pick one bundle per kind;
pages read the choice from ``st.session_state``. Models are loaded once per process
(``st.cache_resource``) keyed on path and modification time; a page gets a :class:`LazyBundle`, which reads
config and cached arrays without PyTorch and loads the model the first time the page asks for it, so a page
that can draw from the arrays draws at once after a restart.

Every bundle is validated by its kind's layout (``core.kinds``, ``core.validate``): its config numbers when
it is listed (a damaged one is listed last, with the sentence saying what is wrong, and its config is not
read further), its arrays and weights when a page opens it. A page that would use a damaged bundle says so in
one ``st.error``; the other bundles stay usable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from core.bundle import (
    find_broken_bundles,
    find_bundles,
    is_unreadable,
    os_reason,
    read_bundle_arrays,
    read_bundle_config,
)
from core.concepthash.arrays import DatabaseArrays
from core.data import DataSpec
from core.kinds import KINDS
from core.validate import check_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / "pretrained"
ENV_VAR = "CONCEPTLENS_BUNDLES"
MAX_UNREADABLE_SHOWN = (
    5  # /proc as a bundle folder has dozens of unreadable entries; name a few, count the rest
)


@dataclass(frozen=True)
class BundleInfo:
    path: str
    kind: str
    name: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    problem: str | None = None  # why the bundle cannot be used (its config failed validation), one sentence

    @property
    def mtime(self) -> float:
        return bundle_mtime(self.path)


def bundle_mtime(path: str) -> float:
    """Newest modification time of the bundle's files (cache key: a rewritten bundle reloads)."""
    try:
        return max(p.stat().st_mtime for p in Path(path).iterdir())
    except (OSError, ValueError):
        return 0.0


def bundle_roots(extra: str | None = None) -> list[Path]:
    """Folders to search: the sidebar's extra folder, then $CONCEPTLENS_BUNDLES, else pretrained/."""
    roots = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    if not roots:
        roots = [DEFAULT_ROOT]
    if extra and extra.strip():
        roots.insert(0, Path(extra.strip()).expanduser())
    return roots


def backbone_label(reference: dict[str, Any]) -> str:
    if "bundle" in reference:
        return Path(reference["bundle"]).name
    return f"{reference.get('name')}:{reference.get('pretrained') or 'random'}"


def beyond_the_paper(model: dict[str, Any]) -> list[str]:
    """The ConceptHash options a bundle was trained with that the paper does not have (empty for the method
    as published): the Home list names them, and such a bundle is not shown first."""
    named = []
    if model.get("concept_blocks"):
        named.append(f"concepts in the last {model['concept_blocks']} block(s)")
    if model.get("concept_depth"):
        named.append(f"read after block {model['concept_depth']}")
    if model.get("locality_weight"):
        named.append(f"L_loc×{model['locality_weight']}")
        if model.get("centres_from_local"):
            named.append("centres from L_loc")
    if model.get("center_hidden") == 0:
        named.append("linear centres")
    if model.get("focus_weight"):
        named.append(f"L_focus×{model['focus_weight']}")
    if model.get("mix_weight"):
        named.append(f"L_mix×{model['mix_weight']}")
    if model.get("bit_weight"):
        named.append(f"L_bit×{model['bit_weight']}")
    if model.get("oracle_centres"):
        named.append("oracle centres (diagnostic: part labels)")
    if model.get("part_phrases"):
        named.append(f"centres from part phrases ({', '.join(model['part_phrases'])})")
    if model.get("recolour"):
        named.append(f"{model['recolour']:.0%} of training birds recoloured")
    return named


def _describe_concepthash(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    model, metrics = config.get("model", {}), config.get("metrics", {})
    lcsd = f"L_csd×{model.get('csd_weight')}"
    mode = "CLS baseline" if model.get("mode") == "cls" else f"{model.get('n_concepts')} concepts"
    summary = ", ".join(
        [
            f"{model.get('bits')} bits",
            mode,
            lcsd,
            "language-guided" if model.get("language_guidance", True) else "no language",
            *beyond_the_paper(model),
        ]
    )
    return summary, {"mAP": metrics.get("map"), "P@1": metrics.get("precision_at", {}).get("1")}


def _describe_ceir(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    metrics, settings = config.get("metrics", {}), config.get("ceir", {})
    parts = [f"{len(config.get('concepts', []))} concepts", f"k={settings.get('n_clusters')}"]
    if settings.get("include_class_names"):
        parts.append("class names appended")
    if settings.get("centre_concepts"):
        parts.append("concept text centred (not in the paper)")
    return ", ".join(parts), {"ACC": metrics.get("acc"), "NMI": metrics.get("nmi")}


def _describe_clip(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    summary = f"CLIP {config.get('backbone', {}).get('name', '')}"
    return summary, {"zero-shot acc": config.get("metrics", {}).get("zero_shot_accuracy")}


def _published_first(config: dict[str, Any]) -> tuple:
    """ConceptHash models with concept tokens and L_csd (the method as published) before ablations and
    baselines."""
    model = config.get("model", {})
    is_ablation = (
        model.get("mode", "concepts") != "concepts"
        or not model.get("language_guidance", True)
        or bool(beyond_the_paper(model))
    )
    return (is_ablation, not (model.get("csd_weight") or 0) > 0) if model else (False, False)


@st.cache_resource(show_spinner="Loading the ConceptHash model ...", max_entries=6)
def _load_concepthash(path: str, mtime: float):
    return KINDS["concepthash"].load(path, device="cpu")


@st.cache_resource(show_spinner="Loading the CEIR model ...", max_entries=4)
def _load_ceir(path: str, mtime: float):
    return KINDS["ceir"].load(path, device="cpu")


@dataclass(frozen=True)
class KindView:
    """What the dashboard does with one bundle kind. What the kind is and how a bundle of it loads is
    ``core.kinds.KINDS``; this adds the sidebar's picker and how a bundle is described in a line."""

    state_key: str  # st.session_state key of the bundle chosen in the sidebar
    describe: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]  # config -> details, headline metrics
    picker: str | None = None  # label of the sidebar's picker; None: no picker, no page loads this kind
    # (path, mtime) -> the loaded model, cached once per process (st.cache_resource, one cache per kind so
    # each keeps its own spinner and size); None: no page loads this kind. Only called when loading, so
    # listing bundles imports no loader module (no PyTorch).
    load: Callable[[str, float], Any] | None = None
    rank: Callable[[dict[str, Any]], tuple] = lambda config: ()  # order in the picker, before the name
    on_backbone: bool = True  # trained on a backbone, which the description names


# In the order Home lists the kinds and the sidebar draws the pickers.
KIND_VIEWS: dict[str, KindView] = {
    "concepthash": KindView(
        "bundle_concepthash",
        _describe_concepthash,
        "ConceptHash model",
        _load_concepthash,
        _published_first,
    ),
    "ceir": KindView("bundle_ceir", _describe_ceir, "CEIR model", _load_ceir),
    "clip": KindView("bundle_clip", _describe_clip, on_backbone=False),
}


def describe_bundle(path: Path, config: dict[str, Any]) -> BundleInfo:
    """One-line summary and headline metrics of a bundle, from its config only; a config that fails its
    kind's validation gives a bundle that says why in its ``problem`` and keeps nothing else of it."""
    kind = config["kind"]
    view = KIND_VIEWS[kind]
    try:
        check_config(path, config, KINDS[kind].arrays())
    except ValueError as exc:
        return BundleInfo(str(path), kind, path.name, f"cannot be used: {exc}", {}, {"kind": kind}, str(exc))
    data = config.get("data", {})
    data_label = data.get("kind", "?")
    if data_label == "toybirds":
        data_label += f" (seed {data.get('seed')})"
    summary, headline = view.describe(config)
    backbone = backbone_label(config.get("backbone", {})) if view.on_backbone else "—"
    summary = f"{summary}; backbone {backbone}; data {data_label}"
    if config.get("synthetic"):  # written by `conceptlens bench make-bundle`: drawn arrays, not training
        summary += "; synthetic (bench make-bundle)"
    headline = {k: v for k, v in headline.items() if isinstance(v, int | float)}
    return BundleInfo(str(path), kind, path.name, summary, headline, config)


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be searched for bundles (one sentence), or None when it is a readable folder."""
    path = Path(path)
    try:
        if path.is_dir():
            next(iter(path.iterdir()), None)
            return None
        return (
            f"The folder '{path}' does not exist."
            if not path.exists()
            else f"'{path}' is a file, not a folder."
        )
    except OSError as error:  # PermissionError, or anything odd such as a /proc entry
        return f"The folder '{path}' cannot be read ({os_reason(error)})."


def _searchable(root: str) -> bool:
    try:
        return Path(root).is_dir()
    except OSError:
        return False


@st.cache_data(show_spinner=False, ttl=30)
def list_bundles(roots: tuple[str, ...]) -> list[BundleInfo]:
    found: dict[str, BundleInfo] = {}
    for root in roots:
        for path in find_bundles(root) if _searchable(root) else []:
            try:
                found.setdefault(str(path.resolve()), describe_bundle(path, read_bundle_config(path)))
            except ValueError:
                continue  # find_bundles already skips broken ones; a race with a writer lands here
    return sorted(found.values(), key=lambda b: (b.kind, b.name))


@st.cache_data(show_spinner=False, ttl=30)
def list_broken(roots: tuple[str, ...]) -> list[tuple[str, str]]:
    return [
        (str(path), error) for root in roots if _searchable(root) for path, error in find_broken_bundles(root)
    ]


def default_rank(info: BundleInfo) -> tuple:
    """Order in the pickers: usable bundles first, in the kind's own order (ConceptHash: the method as
    published before ablations and baselines), then by name."""
    if info.problem is not None:  # a damaged bundle is never the default
        return (True,), info.name
    return (False, *KIND_VIEWS[info.kind].rank(info.config)), info.name


def available(kind: str) -> list[BundleInfo]:
    roots = tuple(str(r) for r in bundle_roots(st.session_state.get("extra_bundle_root")))
    return sorted((b for b in list_bundles(roots) if b.kind == kind), key=default_rank)


def selected(kind: str) -> BundleInfo | None:
    """The bundle of this kind chosen in the sidebar (or the first one found)."""
    choices = available(kind)
    wanted = st.session_state.get(KIND_VIEWS[kind].state_key)
    for info in choices:
        if info.path == wanted:
            return info
    return choices[0] if choices else None


def render_sidebar() -> None:
    """Bundle folder and one picker per kind; drawn by Home.py so every page shares it."""
    with st.sidebar:
        st.text_input(
            "Extra bundle folder",
            key="extra_bundle_root",
            help=f"Also searched: ${ENV_VAR} (folders separated by '{os.pathsep}') or pretrained/.",
        )
        extra = st.session_state.get("extra_bundle_root")
        problem = folder_problem(Path(extra.strip()).expanduser()) if extra and extra.strip() else None
        if problem:
            st.error(problem)
        roots = tuple(str(r) for r in bundle_roots(extra))
        broken = list_broken(roots)
        unreadable = [error for _, error in broken if is_unreadable(error)]
        for path, error in broken:
            if not is_unreadable(error):
                st.warning(f"Skipped {Path(path).name}: {error} Re-create it with `conceptlens train ...`.")
        for error in unreadable[:MAX_UNREADABLE_SHOWN]:
            st.warning(error)
        if len(unreadable) > MAX_UNREADABLE_SHOWN:
            st.warning(
                f"{len(unreadable) - MAX_UNREADABLE_SHOWN} more folders cannot be read and were skipped."
            )
        for kind, view in KIND_VIEWS.items():
            choices = available(kind) if view.picker else []
            if not choices:
                continue
            paths = [b.path for b in choices]
            current = st.session_state.get(view.state_key)
            st.selectbox(
                view.picker,
                paths,
                index=paths.index(current) if current in paths else 0,
                format_func=lambda p: Path(p).name,
                key=view.state_key,
            )


def no_bundle_message(kind: str) -> None:
    roots = ", ".join(str(r) for r in bundle_roots(st.session_state.get("extra_bundle_root")))
    st.warning(
        f"No {kind} bundle was found in {roots}. Train one with `conceptlens train {kind} ... --out DIR` and "
        f"add its folder in the sidebar, or set {ENV_VAR}."
    )


def load_model(info: BundleInfo):
    """The loaded model of a bundle, or None after one st.error sentence saying what is wrong."""
    loader = KIND_VIEWS[info.kind].load
    if loader is None:
        st.error(f"'{info.name}' is a {info.kind} bundle; this page needs a ConceptHash or CEIR model.")
        return None
    if info.problem is not None:
        return _cannot_load(info, ValueError(info.problem))
    try:
        return loader(info.path, info.mtime)
    except (ValueError, OSError) as exc:
        return _cannot_load(info, exc)


def usable(info: BundleInfo) -> bool:
    """Whether a bundle passes its kind's validation (config, arrays, weights and its clip backbone; once
    per version of the files), else False after one st.error sentence saying what is wrong. For a page that
    loads the model only later (on an upload), so a damaged bundle is named as soon as it is chosen."""
    try:
        if info.problem is not None:
            raise ValueError(info.problem)
        KINDS[info.kind].check(info.path)
    except (ValueError, OSError) as exc:
        _cannot_load(info, exc)
        return False
    return True


def _cannot_load(info: BundleInfo, exc: Exception) -> None:
    st.error(f"The bundle '{info.name}' could not be loaded: {exc}")


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_arrays(path: str, mtime: float, kind: str) -> dict:
    KINDS[kind].check(path)  # the bundle and its clip backbone, once per version of their files
    return read_bundle_arrays(path, KINDS[kind].arrays())


class LazyBundle(DatabaseArrays):
    """A bundle as a page first needs it: config, metrics, data spec and cached arrays, read without PyTorch;
    ``model`` and ``backbone`` load the model (once per process) the first time a page asks for them, and a
    bundle that cannot load stops the page after one st.error sentence."""

    def __init__(self, info: BundleInfo, arrays: dict) -> None:
        self.info = info
        self.path = Path(info.path)
        self.config = info.config
        self.arrays = arrays
        self.data = DataSpec.from_dict(self.config.get("data") or {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.get("metrics", {})

    @property
    def concepts(self) -> list[str]:
        return list(self.config.get("concepts") or [])

    def loaded(self) -> Any:
        """The fully loaded bundle (model and backbone), loading it now if need be."""
        full = load_model(self.info)
        if full is None:
            st.stop()  # load_model said why on the page
        return full

    @property
    def model(self) -> Any:
        return self.loaded().model

    @property
    def backbone(self) -> Any:
        return self.loaded().backbone


def require(kind: str) -> tuple[BundleInfo | None, LazyBundle | None]:
    """Selected bundle of ``kind`` as a :class:`LazyBundle`, or (None, None) with a message on the page."""
    info = selected(kind)
    if info is None:
        no_bundle_message(kind)
        return None, None
    lazy = open_bundle(info)
    return (info, lazy) if lazy is not None else (None, None)


def open_bundle(info: BundleInfo) -> LazyBundle | None:
    """A bundle as a :class:`LazyBundle` (its arrays read and checked, its model not loaded yet), or None
    after one st.error sentence saying what is wrong."""
    if KIND_VIEWS[info.kind].load is None or info.problem is not None:
        load_model(info)  # says the bundle is of a kind no page loads, or what is wrong with it
        return None
    try:
        return LazyBundle(info, _read_arrays(info.path, info.mtime, info.kind))
    except (ValueError, OSError) as exc:
        return _cannot_load(info, exc)

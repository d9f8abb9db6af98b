"""The images behind a bundle: one cached opener of a data split, shared by every page.

A split is keyed on its data spec as canonical JSON (:func:`data_json`) and the split's name, so two pages
(or two bundles trained on the same data) showing the same images hold one copy of them; a ToyBirds split
renders on demand and keeps what it rendered.

A page that shows a bundle's images opens them through :func:`bundle_images`: by the ids the bundle stores,
never by their position in today's data (a folder that gained or lost a file would otherwise show another
image's picture beside a row's code); an image that cannot be found becomes a grey tile and one sentence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import streamlit as st
from PIL import Image, ImageDraw

from core.data import DataSpec, ImageSplit, open_split
from core.data.stored import MissingImage, StoredImages, prints_key
from core.data.stored import display_name as display_name  # short names of ids, for the pages


def data_json(data: DataSpec | Mapping[str, Any]) -> str:
    """A data spec (or a bundle config's ``data`` section) as canonical JSON: the key of its splits.

    A config section goes through :class:`DataSpec` first, so it gives the same key as the spec a loaded
    bundle holds; ValueError when it is not a valid spec."""
    spec = data if isinstance(data, DataSpec) else DataSpec.from_dict(dict(data))
    return json.dumps(spec.to_dict(), sort_keys=True)


@st.cache_resource(show_spinner=False, max_entries=8)
def open_data_split(spec_json: str, split: str) -> ImageSplit:
    """The ``train`` (database) or ``test`` (queries) split of the data spec ``spec_json`` (from
    :func:`data_json`), opened once per process."""
    return open_split(DataSpec.from_dict(json.loads(spec_json)), split)


@st.cache_resource(show_spinner=False, max_entries=16)
def _stored_images(
    spec_json: str, split: str, path: str, mtime: float, key: str, _ids: Any, _prints: Any = None
) -> StoredImages:
    return StoredImages(DataSpec.from_dict(json.loads(spec_json)), split, list(_ids), _prints)


def bundle_images(loaded: Any, split: str, key: str) -> tuple[StoredImages, str | None]:
    """The images behind the bundle's id array ``key`` (rows of ``split``), found by the ids it stores, and a
    sentence for the page when it stores none (a bundle from before ids were kept: then rows are matched to
    today's data by position, which is only right while the data is unchanged). ValueError or OSError when
    the data cannot be opened for such a bundle."""
    info = loaded.info
    ids = loaded.arrays.get(key)
    spec_json = data_json(loaded.data)
    if ids is not None:
        prints = loaded.arrays.get(prints_key(key))  # files' fingerprints, where the bundle keeps them
        return _stored_images(spec_json, split, info.path, info.mtime, key, ids, prints), None
    today = open_data_split(spec_json, split)
    positional = [today.image_id(i) for i in range(len(today))]
    note = (
        f"'{info.name}' stores no image ids, so its rows are matched to today's {split} images by position: "
        "right only while the data is unchanged (re-evaluate it with `conceptlens eval BUNDLE --store`)."
    )
    return _stored_images(spec_json, split, info.path, info.mtime, key, positional), note


def missing_tile(side: int) -> Image.Image:
    """A grey square with a cross: where an image the bundle names cannot be shown."""
    tile = Image.new("RGB", (side, side), (225, 225, 225))
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, side - 1, side - 1), fill=(150, 150, 150), width=2)
    draw.line((0, side - 1, side - 1, 0), fill=(150, 150, 150), width=2)
    return tile


def picture(images: StoredImages, row: int, side: int | None = None) -> tuple[Image.Image | None, str | None]:
    """Row ``row``'s image, or (a grey tile of ``side`` px, or None without one) and the sentence why not."""
    try:
        return images.image(row), None
    except MissingImage as exc:
        return (missing_tile(side) if side else None), str(exc)
    except OSError as exc:
        return (missing_tile(side) if side else None), f"Image '{images.ids[row]}' cannot be read: {exc}"


def show_missing(problems: list[str | None], where: str = "") -> None:
    """One warning for the images that could not be shown (``problems``: one sentence or None per image):
    the first reason, and how many more there are ``where`` (e.g. " in this grid")."""
    problems = [problem for problem in problems if problem]
    if problems:
        more = f" ({len(problems) - 1} more like it{where})" if len(problems) > 1 else ""
        st.warning(problems[0] + more)

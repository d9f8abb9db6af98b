"""The images behind a bundle: one cached opener of a data split, shared by every page.

A split is keyed on its data spec as canonical JSON (:func:`data_json`) and the split's name, so two pages
(or two bundles trained on the same data) showing the same images hold one copy of them; a ToyBirds split
renders on demand and keeps what it rendered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import streamlit as st

from core.data import DataSpec, ImageSplit, open_split


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

"""The out-of-distribution check (:mod:`core.ood`) on an uploaded image, for every page that takes uploads.

The check runs the bundle's backbone (PyTorch, imported only when an upload is checked); its verdict is cached
per bundle version and image. A bundle that stores no reference gets one sentence saying how to add it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

from core.ood import ood_caveat, unavailable
from lens.inference import one_at_a_time


@st.cache_data(show_spinner="Checking whether the image looks like the training images ...", max_entries=128)
def _flagged(_loaded: Any, _image: Image.Image, path: str, mtime: float, image_key: str) -> bool | None:
    """Whether the check flags the image under one bundle; None when the bundle cannot tell."""
    from core.ood import ood_flags

    with one_at_a_time():  # the backbone is shared by every session in this process
        flags = ood_flags(_loaded, [_image])
    return None if flags is None else bool(flags[0])


def upload_verdict(info: Any, lazy: Any, image: Image.Image, image_key: str) -> bool | None:
    """True: flagged, False: looks like the training images, None: the bundle stores no reference."""
    return _flagged(lazy.loaded(), image, info.path, info.mtime, image_key)


def show_upload_check(name: str, verdicts: list[tuple[Any, bool | None]], consequence: str) -> None:
    """One warning naming the bundles that flag the upload ``name`` (none named when there is one bundle),
    and one caption per bundle that cannot tell."""
    flagged = [info.name for info, verdict in verdicts if verdict]
    if flagged:
        models = None if len(verdicts) == 1 else " and ".join(flagged)
        st.warning(ood_caveat(name, consequence, models))
    for info, verdict in verdicts:
        if verdict is None:
            st.caption(unavailable(info.path))

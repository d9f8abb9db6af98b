"""Sample photos that ship inside installed packages load as RGB images, with no download."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from core.data.samples import LOADERS, load_sample_photo, sample_photo_names


def test_every_shipped_photo_loads_as_a_real_rgb_image():
    names = sample_photo_names()
    assert "skimage: motorcycle_left" in names and "sklearn: flower.jpg" in names
    for name in names:
        image = load_sample_photo(name)
        assert image.mode == "RGB" and min(image.size) >= 200, name
        assert np.asarray(image).std() > 10, name  # a photo, not a blank


def test_motorcycle_is_the_left_view_of_the_stereo_pair():
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    np.testing.assert_array_equal(np.asarray(load_sample_photo("skimage: motorcycle_left")), left)
    assert not np.array_equal(left, right)


def test_unknown_photo_names_the_known_ones():
    with pytest.raises(ValueError, match="skimage: chelsea"):
        load_sample_photo("skimage: dog")
    assert set(sample_photo_names()) <= set(LOADERS)


def test_listing_the_photos_finds_their_packages_without_importing_them(monkeypatch):
    code = (
        "import json, sys; from core.data.samples import sample_photo_names; names = sample_photo_names(); "
        "print(json.dumps([names, [m for m in ('sklearn', 'skimage', 'matplotlib') if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, imported = json.loads(out)
    assert imported == [] and names == sample_photo_names()
    assert any(name.startswith("sklearn") for name in names)  # a test dependency: found

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "sklearn" else real(name))
    assert sample_photo_names() == [name for name in names if not name.startswith("sklearn")]

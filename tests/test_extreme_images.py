"""Images with extreme shapes: refused by the loader before preprocessing blows up, never fatal to a batch.

A backbone resizes an image's shortest side to its input size (224, 256, 336 ...) before the centre crop, so a
165-byte 1 x 20000 PNG would become 224 x 4,480,000 pixels (3 GB) in the resize. These tests build such files
(a few hundred bytes on disk) and check that every door (loader, preprocessing, CLI ``label``, the open-world
page) refuses them with one sentence naming the file while the good files of the same batch are labelled.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.images import (
    MAX_ASPECT_RATIO,
    MAX_RESIZED_PIXELS,
    PREPROCESS_SHORT_SIDE,
    ImageLoadError,
    check_image_shape,
    load_image,
)


def flat_png(width: int, height: int) -> bytes:
    """A real, fully decodable grey PNG of any shape; flat pixels compress to a few hundred bytes."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def photo_png() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ the loader


@pytest.mark.parametrize(("width", "height"), [(1, 20000), (20000, 20), (1, 200000), (1000000, 1)])
def test_extreme_aspect_ratio_is_refused_with_one_sentence(tmp_path: Path, width: int, height: int) -> None:
    data = flat_png(width, height)
    assert len(data) < 3000
    path = tmp_path / f"strip-{width}x{height}.png"
    path.write_bytes(data)
    for source, name in ((path, str(path)), (data, "upload.png")):
        with pytest.raises(ImageLoadError) as info:
            load_image(source, name=None if isinstance(source, Path) else name)
        message = str(info.value)
        assert f"'{name}'" in message and f"{width}x{height}" in message and "aspect ratio" in message
        assert "\n" not in message and message.endswith(".")


def test_refused_at_the_header_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    data = flat_png(1, 20000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    with pytest.raises(ImageLoadError, match="aspect ratio"):
        load_image(data)


@pytest.mark.parametrize(("width", "height"), [(512, 512), (4000, 3000), (3000, 4000), (6000, 600), (20, 1)])
def test_normal_photos_and_panoramas_up_to_the_limit_pass(width: int, height: int) -> None:
    check_image_shape(width, height, "photo.jpg")  # raises on refusal


def test_normal_photos_load(tmp_path: Path) -> None:
    astronaut = load_image(photo_png(), name="astronaut.png")
    assert astronaut.size == (512, 512)
    path = tmp_path / "camera.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(path, quality=80)
    assert load_image(path).size == (4000, 3000)
    panorama = load_image(flat_png(int(400 * MAX_ASPECT_RATIO), 400))
    assert panorama.size == (int(400 * MAX_ASPECT_RATIO), 400)


def test_aspect_limit_is_inclusive_and_names_the_limit() -> None:
    check_image_shape(20, 1, "a.png", max_aspect_ratio=20)
    check_image_shape(1, 20, "a.png", max_aspect_ratio=20)
    with pytest.raises(ImageLoadError, match=r"'a\.png'.*21x1.*aspect ratio of 21:1.*20:1"):
        check_image_shape(21, 1, "a.png", max_aspect_ratio=20)


def test_resized_size_is_bounded_for_the_given_short_side() -> None:
    # Square images pass any sane backbone, but a model that resized the short side to 4096 would need
    # 4096 x 4096 = 16.8 M pixels > MAX_RESIZED_PIXELS, so the same check refuses them for it.
    check_image_shape(100, 100, "sq.png", short_side=PREPROCESS_SHORT_SIDE)
    with pytest.raises(ImageLoadError, match=r"'sq\.png'.*4096x4096"):
        check_image_shape(100, 100, "sq.png", short_side=4096)
    # At the default short side, the worst accepted shape stays within the bound.
    long_side = int(PREPROCESS_SHORT_SIDE * MAX_ASPECT_RATIO)
    assert PREPROCESS_SHORT_SIDE * long_side <= MAX_RESIZED_PIXELS


def test_every_backbone_resizes_within_the_default_short_side() -> None:
    """The loader's bound only holds if no backbone resizes the short side beyond PREPROCESS_SHORT_SIDE."""
    from core.backbones.clip import build_clip, get_toy_config, list_toy_configs
    from core.backbones.conse import RESIZE_SIZE

    assert RESIZE_SIZE <= PREPROCESS_SHORT_SIDE
    for name in list_toy_configs():
        _, preprocess, _ = build_clip(get_toy_config(name))
        widest = Image.new("RGB", (int(MAX_ASPECT_RATIO), 1))
        resized = preprocess.transforms[0](widest)
        assert min(resized.size) <= PREPROCESS_SHORT_SIDE
        assert resized.size[0] * resized.size[1] <= MAX_RESIZED_PIXELS


def test_preprocessing_refuses_an_image_that_did_not_come_through_the_loader() -> None:
    """A backstop: images made in code (samples, datasets) are checked before the resize allocates."""
    from core.backbones.base import ImagePreprocessing

    class Guarded(ImagePreprocessing):
        device = "cpu"

        def preprocess(self, image):  # noqa: D102
            pytest.fail("the resize ran on an extreme image")

    with pytest.raises(ImageLoadError, match=r"1x20000.*aspect ratio"):
        Guarded().preprocess_images([Image.new("RGB", (1, 20000))])


# --------------------------------------------------------------------------------------- the CLI and a batch


def test_cli_label_labels_the_good_files_and_names_each_refused_one(tmp_path: Path, capsys) -> None:
    from core.cli import main

    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a-astronaut.png").write_bytes(photo_png())
    (folder / "b-wide.png").write_bytes(flat_png(20000, 20))
    (folder / "c-tall.png").write_bytes(flat_png(1, 20000))
    (folder / "d-grey.png").write_bytes(flat_png(300, 200))
    code = main(["label", str(folder), "--model", "toyclip-tiny:random", "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 1  # some files were skipped
    assert [image["file"] for image in report["images"]] == [
        str(folder / "a-astronaut.png"),
        str(folder / "d-grey.png"),
    ]
    # each was scored: up to five labels, or (a tiny random model fits no bank to a photo) why there are none
    assert all(len(image["labels"]) <= 5 for image in report["images"])
    assert all(image["labels"] or "fits this image" in image["note"] for image in report["images"])
    assert all(image["threshold"] is not None for image in report["images"])
    assert [failure["file"] for failure in report["failed"]] == [
        str(folder / "b-wide.png"),
        str(folder / "c-tall.png"),
    ]
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2
    assert "b-wide.png" in skipped[0] and "20000x20" in skipped[0] and "aspect ratio" in skipped[0]
    assert "c-tall.png" in skipped[1] and "1x20000" in skipped[1]
    assert "Traceback" not in err and "MemoryError" not in err


class _PickyBackbone:
    """Embeds any batch except one holding a 7-pixel-wide image (as a model might choke on one input)."""

    def describe(self) -> str:
        return "picky"

    def preprocess_images(self, images):
        import torch

        if any(image.width == 7 for image in images):
            raise RuntimeError("the model cannot take a 7-pixel-wide image")
        return torch.stack([torch.full((4,), float(image.width)) for image in images])

    def encode_images(self, pixels):
        return pixels / pixels.norm(dim=1, keepdim=True)

    def encode_texts(self, texts):
        import torch

        return torch.eye(4)[: len(texts)]


def test_one_image_the_model_cannot_take_does_not_cost_the_others_their_labels() -> None:
    from core.ceir.concept_bank import ConceptBank
    from core.ceir.labels import SimilarityLabeller, label_images

    bank = ConceptBank(["a", "b", "c"], "test bank")
    named = [("one.png", Image.new("RGB", (8, 8))), ("bad.png", Image.new("RGB", (7, 8)))]
    named.append(("two.png", Image.new("RGB", (9, 8))))
    picky = SimilarityLabeller(_PickyBackbone())
    report = label_images(picky, named, top_k=2, bank=bank, fit_percentile=None)  # no vocabulary to embed
    assert [image.file for image in report.images] == ["one.png", "two.png"]
    assert all(len(image.labels) == 2 for image in report.images)
    assert report.failed == [
        {
            "file": "bad.png",
            "error": "Cannot label image 'bad.png': the model cannot take a 7-pixel-wide image.",
        }
    ]
    with pytest.raises(RuntimeError, match="7-pixel-wide"):  # nothing could be labelled: one error, raised
        label_images(SimilarityLabeller(_PickyBackbone()), [named[1]], top_k=2, bank=bank)


# ---------------------------------------------------------------------------------------- the dashboard


@pytest.mark.parametrize("shape", [(1, 1), (20000, 20), (20, 20000), (1, 20), (20, 1), (4000, 3000), (3, 7)])
def test_thumbnail_letterboxes_any_shape_to_a_square(shape: tuple[int, int]) -> None:
    from lens.uploads import thumbnail

    image = Image.new("RGB", shape, (255, 0, 0))
    thumb = thumbnail(image, 150)
    assert thumb.size == (150, 150) and thumb.mode == "RGB"
    pixels = np.asarray(thumb)
    assert (pixels == [255, 0, 0]).all(axis=-1).any(), "some of the picture is visible"
    assert tuple(pixels[75, 75]) == (255, 0, 0), "the picture is centred"


def _upload(app, named: dict[str, bytes]):
    uploader = next(u for u in app.file_uploader if u.key == "ow_upload")
    uploader.set_value([(name, data, "image/png") for name, data in named.items()])
    return app.run()


def test_open_world_refuses_a_20000x20_upload_and_labels_the_good_one(dashboard, tiny_bundles) -> None:
    app = dashboard("open_world")
    app.radio(key="ow_model").set_value(str(tiny_bundles / "toy-ceir")).run()
    app = _upload(app, {"astronaut.png": photo_png(), "wide.png": flat_png(20000, 20)})
    assert not app.exception, [e.value for e in app.exception]
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "wide.png" in errors[0] and "aspect ratio" in errors[0], errors
    table = next(d.value for d in app.dataframe if "image" in d.value.columns)
    assert table["image"].unique().tolist() == ["astronaut.png"]


def test_open_world_shows_an_accepted_extreme_shape(dashboard, tiny_bundles) -> None:
    app = dashboard("open_world")
    app.radio(key="ow_model").set_value(str(tiny_bundles / "toy-ceir")).run()
    app.selectbox(key="ow_bank").set_value("paste").run()
    app.text_area(key="ow_bank_text").set_value("red head\nblue wings\nlong tail").run()
    banner = flat_png(int(10 * MAX_ASPECT_RATIO), 10)  # 200 x 10: at the limit, 150 wide would be 7.5 high
    app = _upload(app, {"banner.png": banner, "thin.png": flat_png(1, int(MAX_ASPECT_RATIO))})
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    captions = [caption for element in app.get("image") for caption in element.captions]
    assert captions == ["banner.png", "thin.png"]
    # each is scored: labelled in the table, or named as an image no concept of the bank fits (a flat colour
    # may well be the latter since labels abstain below the image's calibrated threshold)
    tables = [d.value for d in app.dataframe if "image" in d.value.columns]
    labelled = set(tables[0]["image"]) if tables else set()
    said = " ".join(
        str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in app.get(kind)
    )
    for name in ("banner.png", "thin.png"):
        assert name in labelled or (name in said and "no concept of this bank fits" in said), (
            name,
            said[:400],
        )


@pytest.mark.parametrize(
    ("page", "source", "uploader"),
    [
        ("retrieval", "ret_source", "ret_upload"),
        ("concept_attention", "attn_source", "attn_upload"),
    ],
)
def test_other_upload_pages_refuse_an_extreme_shape_with_one_error(dashboard, page, source, uploader) -> None:
    app = dashboard(page)
    app.radio(key=source).set_value("Upload").run()
    app.file_uploader(key=uploader).set_value(("wide.png", flat_png(20000, 20), "image/png")).run()
    assert not app.exception, [e.value for e in app.exception]
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "wide.png" in errors[0] and "aspect ratio" in errors[0], errors


def test_retrieval_shows_an_accepted_extreme_query(dashboard) -> None:
    app = dashboard("retrieval")
    app.radio(key="ret_source").set_value("Upload").run()
    strip = flat_png(int(16 * MAX_ASPECT_RATIO), 16)
    app.file_uploader(key="ret_upload").set_value(("strip.png", strip, "image/png")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert any("strip.png" in caption for image in app.image for caption in image.captions)

"""Tests for core.data.images: every good image kind loads as the expected RGB, every bad kind is refused."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    list_image_files,
    load_image,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _pattern() -> Image.Image:
    """6x4 RGB image: left half red, right half blue, one green pixel at (5, 3)."""
    image = Image.new("RGB", (6, 4), RED)
    image.paste(BLUE, (3, 0, 6, 4))
    image.putpixel((5, 3), (0, 255, 0))
    return image


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _png_with_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR chunk is rewritten (with a valid CRC) to claim width x height."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ----------------------------------------------------------------------------------------- good inputs


@pytest.mark.parametrize(
    ("suffix", "save_kwargs", "tol"),
    [
        (".png", {}, 0),
        (".bmp", {}, 0),
        (".tiff", {}, 0),
        (".tif", {"compression": "tiff_lzw"}, 0),
        (".webp", {"lossless": True}, 0),
        (".gif", {}, 0),
        (".jpg", {"quality": 100, "subsampling": 0}, 40),
        (".jpeg", {"quality": 95}, 80),
    ],
)
def test_each_format_loads_as_rgb_with_its_pixels(
    tmp_path: Path, suffix: str, save_kwargs: dict, tol: int
) -> None:
    path = _save(_pattern(), tmp_path / f"pattern{suffix}", **save_kwargs)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (6, 4)
    assert _close(image.getpixel((0, 0)), RED, tol)
    assert _close(image.getpixel((4, 0)), BLUE, tol)
    if tol == 0:
        assert image.getpixel((5, 3)) == (0, 255, 0)


def test_bytes_and_file_objects_load_like_paths(tmp_path: Path) -> None:
    path = _save(_pattern(), tmp_path / "p.png")
    data = path.read_bytes()
    for source in (data, bytearray(data), io.BytesIO(data), path.open("rb"), str(path)):
        image = load_image(source)
        assert (image.mode, image.size, image.getpixel((5, 3))) == ("RGB", (6, 4), (0, 255, 0))


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    path = _save(_pattern(), tmp_path / "p.png")
    image = load_image(path)
    path.unlink()
    assert image.getpixel((0, 0)) == RED
    assert image.copy().tobytes()[:3] == bytes(RED)


def test_mode_1_becomes_black_and_white(tmp_path: Path) -> None:
    bilevel = Image.new("1", (5, 3), 0)
    bilevel.putpixel((2, 1), 1)
    image = load_image(_save(bilevel, tmp_path / "bits.png"))
    assert image.getpixel((2, 1)) == WHITE
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_mode_l_keeps_grey_level(tmp_path: Path) -> None:
    image = load_image(_save(Image.new("L", (3, 3), 77), tmp_path / "grey.png"))
    assert image.getpixel((1, 1)) == (77, 77, 77)


def test_mode_la_alpha_is_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1), (100, 255))
    la.putpixel((1, 0), (100, 0))
    image = load_image(_save(la, tmp_path / "la.png"))
    assert image.getpixel((0, 0)) == (100, 100, 100)
    assert image.getpixel((1, 0)) == WHITE


def test_palette_with_transparency_index_becomes_white(tmp_path: Path) -> None:
    palette_image = Image.new("P", (2, 1), 0)
    palette_image.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    palette_image.putpixel((1, 0), 1)
    path = _save(palette_image, tmp_path / "pal.png", transparency=0)
    assert Image.open(path).mode == "P"
    image = load_image(path)
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == BLUE


def test_rgba_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1), (*RED, 255))
    rgba.putpixel((1, 0), (*RED, 0))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    image = load_image(_save(rgba, tmp_path / "rgba.png"))
    assert image.getpixel((0, 0)) == RED
    assert image.getpixel((1, 0)) == WHITE
    assert _close(image.getpixel((2, 0)), (127, 127, 127), 1)  # 255 * (1 - 128/255)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    assert _close(image.getpixel((4, 4)), RED, 8)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    gradient = np.tile(np.arange(64, dtype=np.uint16) * 1000, (4, 1))  # 0 .. 63000
    path = _save(Image.fromarray(gradient), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    image = load_image(path)
    pixels = np.asarray(image)
    assert pixels.shape == (4, 64, 3)
    assert pixels[0, 10].tolist() == [39, 39, 39]  # round(10000 * 255 / 65535) = 39
    assert pixels[0, 63, 0] == 245  # round(63000 * 255 / 65535) = 245
    assert pixels[0, 0, 0] == 0
    assert np.all(np.diff(pixels[0, :, 0].astype(int)) >= 0)


def test_32_bit_integer_and_float_tiffs_are_scaled(tmp_path: Path) -> None:
    wide = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert load_image(_save(wide, tmp_path / "i.tif")).getpixel((1, 0)) == WHITE
    small = Image.fromarray(np.array([[0, 200]], dtype=np.int32))
    assert load_image(_save(small, tmp_path / "i8.tif")).getpixel((1, 0)) == (200, 200, 200)
    unit = Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32))
    assert load_image(_save(unit, tmp_path / "f.tif")).getpixel((1, 0)) == (128, 128, 128)


def test_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(stored, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (20, 40)
    assert _close(image.getpixel((10, 5)), RED, 30)  # the stored left side is now on top
    assert _close(image.getpixel((10, 35)), BLUE, 30)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    image = load_image(path)
    assert (image.mode, image.size, image.getpixel((2, 2))) == ("RGB", (4, 4), RED)


def test_max_pixels_boundary_is_inclusive(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (64, 64), RED), tmp_path / "sq.png")
    assert load_image(path, max_pixels=4096).size == (64, 64)
    with pytest.raises(ImageLoadError, match=r"64x64 = 4,096 pixels, more than the limit of 4,095"):
        load_image(path, max_pixels=4095)


# ------------------------------------------------------------------------------------------ bad inputs


def _refused(source: object, *fragments: str, **kwargs: object) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert message.count(".") >= 1 and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return error


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    error = _refused(path, str(path), "empty (0 bytes)")
    assert error.source_name == str(path)


def test_text_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 10)
    _refused(path, str(path), "not a supported image (JPEG, PNG, WebP, BMP, GIF or TIFF)")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _refused(path, str(path), "truncated or damaged")


def test_header_bomb_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_size(7000, 7000))  # 49 M pixels: over our 40 M, under Pillow's own warning
    assert path.stat().st_size < 100
    _refused(path, str(path), "7000x7000 = 49,000,000 pixels", f"{DEFAULT_MAX_PIXELS:,}")
    # Our check does not depend on Pillow's global limit, and never changes it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_with_size(100_000, 100_000))
    _refused(huge, str(huge), "100000x100000")
    assert Image.MAX_IMAGE_PIXELS is None


def test_pillow_decompression_bomb_error_becomes_image_load_error(tmp_path: Path) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_with_size(100_000, 100_000))  # Pillow itself refuses this inside Image.open
    error = _refused(huge, str(huge), "too large to decode safely", "10000000000 pixels", max_pixels=10**11)
    assert not str(error).endswith(".).")
    assert limit_before == Image.MAX_IMAGE_PIXELS


def test_pillow_decompression_bomb_warning_becomes_image_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "warn.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 pixels: Pillow warns, does not raise
    _refused(path, str(path), "too large to decode safely")


def test_bilevel_bomb_saved_by_pillow(tmp_path: Path) -> None:
    path = _save(Image.new("1", (7000, 6000)), tmp_path / "flat.png")  # 42 M pixels, a few kB on disk
    assert path.stat().st_size < 50_000
    _refused(path, str(path), "7000x6000")


def test_pdf_eps_svg_and_ico_are_refused(tmp_path: Path) -> None:
    pdf = _save(_pattern(), tmp_path / "doc.pdf")
    _refused(pdf, str(pdf), "a PDF document")
    eps = _save(_pattern(), tmp_path / "fig.eps")
    _refused(eps, str(eps), "PostScript/EPS")
    svg = tmp_path / "logo.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    _refused(svg, str(svg), "an SVG drawing")
    ico = tmp_path / "icon.png"
    _pattern().save(ico, format="ICO")  # a format Pillow can read, but not one we accept
    assert Image.open(ico).format == "ICO"
    _refused(ico, str(ico), "not a supported image")


def test_directory_and_missing_path(tmp_path: Path) -> None:
    folder = tmp_path / "photos.png"
    folder.mkdir()
    _refused(folder, str(folder), "a folder, not an image file")
    missing = tmp_path / "nope.jpg"
    _refused(missing, str(missing), "no such file")


def test_file_larger_than_max_bytes(tmp_path: Path) -> None:
    path = _save(_pattern(), tmp_path / "p.png")
    size = path.stat().st_size
    assert load_image(path, max_bytes=size).size == (6, 4)
    _refused(path, str(path), "larger than the", max_bytes=size - 1)
    _refused(path.read_bytes(), "'uploaded file'", "larger than the", max_bytes=size - 1)
    _refused(io.BytesIO(path.read_bytes()), "larger than the", max_bytes=size - 1)


def test_names_in_messages_for_uploads(tmp_path: Path) -> None:
    _refused(b"", "Cannot open image 'uploaded file': the file is empty (0 bytes).")
    _refused(b"GIF89a garbage", "'cat.gif'", name="cat.gif")
    upload = io.BytesIO(b"plain text")
    upload.name = "holiday.jpg"  # like a Streamlit UploadedFile
    _refused(upload, "'holiday.jpg'", "not a supported image")
    text_path = tmp_path / "t.png"
    text_path.write_text("x")
    with text_path.open("r") as text_handle:
        _refused(text_handle, "binary mode")


def test_invalid_limits_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        load_image(b"x", max_pixels=0)


# ------------------------------------------------------------------------------------- list_image_files


def test_list_image_files_expands_folders_deterministically(tmp_path: Path) -> None:
    for relative in [
        "b/one.JPG",
        "a/two.png",
        "a/deep/three.TIFF",
        "z.webp",
        "a/readme.txt",
        ".hidden.png",
        ".cache/four.png",
        "b/._one.jpg",
    ]:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
    explicit = tmp_path / "a" / "readme.txt"
    found = list_image_files([tmp_path, explicit, tmp_path / "z.webp"])
    relative = [p.relative_to(tmp_path).as_posix() for p in found]
    assert relative == ["a/deep/three.TIFF", "a/two.png", "b/one.JPG", "z.webp", "a/readme.txt"]
    assert list_image_files(str(tmp_path), recursive=False) == [tmp_path / "z.webp"]
    assert {p.suffix.lower() for p in found} - {".txt"} <= IMAGE_EXTENSIONS


def test_list_image_files_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(ValueError, match=f"'{missing}': no such file or folder"):
        list_image_files([tmp_path, missing])

"""Safe image loading: the one door through which every user image enters ConceptLens.

Every entry point (command line, dataset readers, dashboard uploads) opens images with :func:`load_image`,
so the rules live in one place:

* only JPEG, PNG, WebP, BMP, GIF (first frame) and TIFF are accepted — Pillow is told so with ``formats=``,
  so a PDF, EPS or SVG never reaches a more exotic (and more fragile) decoder;
* the byte size is capped before reading, and ``width * height`` is checked against ``max_pixels`` from the
  header, before any pixel is decoded (a 50 kB PNG can claim 10 billion pixels);
* the shape is checked against what *preprocessing* will allocate (:func:`check_image_shape`): backbones
  resize the shortest side to their input size before the centre crop, so a 165-byte 1 x 20000 PNG would
  become 224 x 4,480,000 pixels (3 GB) there; extreme aspect ratios are refused from the header too;
* pixels are fully decoded inside the guarded block, so a truncated file fails here and not later in a
  model's forward pass;
* every mode is turned into 8-bit RGB the same way (alpha over white, 16-bit and float data rescaled
  rather than clipped) and EXIF orientation is applied, so a phone photo looks the way the user sees it;
* every failure is an :class:`ImageLoadError` (a ``ValueError``) with one sentence naming the file.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 2**20

# What preprocessing may allocate. Every backbone resizes the *shortest* side to its input size (224 or 336
# for CLIP, 256 for ConSE) and only then centre-crops, so a w x h image (w >= h) first becomes
# S x S*w/h pixels. The aspect ratio is therefore what bounds memory, not width x height:
# - MAX_ASPECT_RATIO = 20 admits every real photo (4:3, 16:9, phone panoramas of 4:1 to about 10:1) and
#   refuses strips such as 1 x 20000, which no model can look at meaningfully anyway;
# - PREPROCESS_SHORT_SIDE = 512 is above the resize of every backbone ConceptLens uses (a test checks it);
# - MAX_RESIZED_PIXELS = 512 * 512 * 20 = 5.2 M pixels: 15 MB as 8-bit RGB and 63 MB as a float tensor, so
#   even a batch of 64 worst-case images stays far below the memory of a laptop.
MAX_ASPECT_RATIO = 20.0
PREPROCESS_SHORT_SIDE = 512
MAX_RESIZED_PIXELS = int(PREPROCESS_SHORT_SIDE * PREPROCESS_SHORT_SIDE * MAX_ASPECT_RATIO)

# Pillow format identifiers for the extensions above (MPO, the multi-picture JPEG some cameras write, is
# produced by Pillow's JPEG opener itself, so naming "JPEG" admits it).
_PIL_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, GIF or TIFF"

# Leading bytes of common non-image (or unsupported) files, to name what the user actually gave us.
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML/SVG text file"),
    (b"PK\x03\x04", "a ZIP archive"),
)

_UPLOADED = "uploaded file"


class ImageLoadError(ValueError):
    """An image could not be loaded; the message is one sentence naming the file.

    ``source_name`` holds the name used in the message, so a user interface can also show it separately.
    """

    def __init__(self, source_name: str, reason: str) -> None:
        super().__init__(f"Cannot open image '{source_name}': {reason}.")
        self.source_name = source_name


def load_image(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
) -> Image.Image:
    """Open a user image safely and return it as a new 8-bit RGB image, detached from any file.

    ``source`` is a path, raw bytes, or a binary file object (read from its current position; a Streamlit
    upload works as is). ``name`` is used in error messages; otherwise the path, the file object's ``name``,
    or "uploaded file". Raises :class:`ImageLoadError` for anything that is not a loadable image within
    ``max_bytes`` bytes and ``max_pixels`` pixels, or whose shape preprocessing could not afford
    (:func:`check_image_shape` with ``max_aspect_ratio``).
    """
    label = _source_label(source, name)
    if max_pixels <= 0 or max_bytes <= 0:
        raise ValueError(f"max_pixels and max_bytes must be positive, got {max_pixels} and {max_bytes}.")
    data = _read_bytes(source, label, max_bytes)
    if not data:
        raise ImageLoadError(label, "the file is empty (0 bytes)")
    return _decode(data, label, max_pixels, max_aspect_ratio)


def resized_size(width: int, height: int, short_side: int = PREPROCESS_SHORT_SIDE) -> tuple[int, int]:
    """(width, height) after a shortest-side resize to ``short_side``, as torchvision's Resize(int) does."""
    if width <= height:
        return short_side, max(1, int(short_side * height / width))
    return max(1, int(short_side * width / height)), short_side


def check_image_shape(
    width: int,
    height: int,
    name: str = "image",
    *,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
    short_side: int = PREPROCESS_SHORT_SIDE,
    max_resized_pixels: int = MAX_RESIZED_PIXELS,
) -> None:
    """Raise :class:`ImageLoadError` (naming ``name``) unless preprocessing can afford a width x height image.

    Checked: a non-empty size, the aspect ratio (long side / short side) at most ``max_aspect_ratio``, and the
    size after a shortest-side resize to ``short_side`` at most ``max_resized_pixels`` pixels. Both limits are
    inclusive; see :data:`MAX_ASPECT_RATIO` for why they are what they are.
    """
    if width <= 0 or height <= 0:
        raise ImageLoadError(name, f"it has an empty size of {width}x{height} pixels")
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise ImageLoadError(
            name,
            f"it is {width}x{height} pixels, an aspect ratio of {_ratio(ratio)}:1, more than the "
            f"{_ratio(max_aspect_ratio)}:1 the models can take (they enlarge the short side "
            "first, so a long thin strip would need gigabytes of memory)",
        )
    new_width, new_height = resized_size(width, height, short_side)
    if new_width * new_height > max_resized_pixels:
        raise ImageLoadError(
            name,
            f"it is {width}x{height} pixels, and resizing its short side to {short_side} makes it "
            f"{new_width}x{new_height}, more than the limit of {max_resized_pixels:,} pixels",
        )


def _ratio(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def list_image_files(
    paths: Iterable[str | os.PathLike],
    recursive: bool = True,
    on_error: Callable[[ImageLoadError], None] | None = None,
) -> list[Path]:
    """Expand files and folders into a deterministic list of image files.

    Folders are walked (recursively unless ``recursive=False``) in sorted order and keep only regular files
    whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive; a FIFO named ``x.png`` is not kept);
    hidden files and folders (names starting
    with ".", e.g. macOS "._x.jpg" side files) are skipped. A file named explicitly is kept whatever its
    extension, so that :func:`load_image` can tell the user what is wrong with it. Duplicates are dropped,
    first occurrence wins. A path that does not exist raises :class:`ImageLoadError`.

    Whatever is skipped is told to ``on_error`` (without it, skipped silently), so a command can account for
    every file it was given: a folder that cannot be read (no permission, an odd ``/proc`` entry) as a
    :class:`FolderReadError`, and every other file of a walked folder that is not kept (a FIFO, device or
    socket; a file that is not an image by its extension; a hidden file) as a :class:`SkippedFile`.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    report = on_error if on_error is not None else (lambda error: None)
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError as error:  # e.g. PermissionError for a path inside an unreadable folder
            report(FolderReadError(str(raw), os_reason(error)))
            continue
        if is_dir:
            found.extend(_images_in_folder(path, recursive, report))
        elif exists:
            found.append(path)
        else:
            raise ImageLoadError(str(raw), "no such file or folder")
    return list(dict.fromkeys(found))


class SkippedFile(ImageLoadError):
    """A file of a walked folder that is not an image to open; the message names it and says why."""

    def __init__(self, source_name: str, reason: str) -> None:
        ValueError.__init__(self, f"Cannot open image '{source_name}': {reason}; it was skipped.")
        self.source_name = source_name


class FolderReadError(ImageLoadError):
    """A folder (or a path inside one) could not be read; the message names it and says it was skipped."""

    def __init__(self, source_name: str, reason: str) -> None:
        ValueError.__init__(self, f"Cannot read folder '{source_name}': {reason}; it was skipped.")
        self.source_name = source_name


def os_reason(error: OSError) -> str:
    """An OSError in a few lower-case words: "permission denied", "no such file or directory", ..."""
    if isinstance(error, PermissionError):
        return "permission denied"
    return (error.strerror or str(error) or type(error).__name__).lower()


def _images_in_folder(folder: Path, recursive: bool, report: Callable[[ImageLoadError], None]) -> list[Path]:
    """Image files under ``folder``, sorted by their path relative to it (the same on every machine)."""

    def unreadable(error: OSError) -> None:
        report(FolderReadError(os.fsdecode(error.filename or folder), os_reason(error)))

    files: list[Path] = []
    for current, dirnames, filenames in os.walk(folder, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for filename in sorted(filenames):
            path = Path(current) / filename
            reason = _not_an_image(path)
            if reason is None:
                files.append(path)
            else:
                report(SkippedFile(str(path), reason))
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _not_an_image(path: Path) -> str | None:
    """Why a file found in a folder is not opened as an image (None when it is one to open)."""
    if path.name.startswith("."):
        return "it is a hidden file"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"it is not an image (its name does not end in {', '.join(sorted(IMAGE_EXTENSIONS))})"
    special = _special_file(path)
    return f"it is a {special}, not a regular file" if special else None


def _special_file(path: Path) -> str | None:
    """What ``path`` is when it is a FIFO, device or socket (never an image, and reading a FIFO would block),
    else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # loading it reports why it cannot be read
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device or other special file"


def _source_label(source: object, name: str | None) -> str:
    """The name shown to the user in error messages."""
    if name:
        return name
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    file_name = getattr(source, "name", None)
    if isinstance(file_name, str) and file_name:
        return file_name
    return _UPLOADED


def _read_bytes(source: object, label: str, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` of the source, refusing larger inputs before reading them whole."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = _read_path(Path(source), label, max_bytes)
    elif hasattr(source, "read"):
        try:
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as error:
            raise ImageLoadError(label, f"the file could not be read ({error})") from error
        if not isinstance(data, bytes | bytearray):
            raise ImageLoadError(label, "the file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise ImageLoadError(label, f"expected a path, bytes or a binary file, got {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageLoadError(label, f"the file is larger than the {_mib(max_bytes)} limit")
    return data


def _read_path(path: Path, label: str, max_bytes: int) -> bytes:
    """Read a file from disk with errors worded for people."""
    try:
        if path.is_dir():
            raise ImageLoadError(label, "it is a folder, not an image file")
        # O_NONBLOCK: opening a FIFO (a named pipe) must not wait for a writer; fstat then refuses it, and
        # every other non-regular file (a device, a socket), before anything is read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ImageLoadError(label, "it is not a regular file (a pipe, device or socket)")
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ImageLoadError(
                    label, f"the file is {_mib(size)}, larger than the {_mib(max_bytes)} limit"
                )
            return handle.read(max_bytes + 1)
    except FileNotFoundError as error:
        raise ImageLoadError(label, "no such file") from error
    except PermissionError as error:
        raise ImageLoadError(label, "permission denied") from error
    except OSError as error:
        raise ImageLoadError(label, f"the file could not be read ({error.strerror or error})") from error


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def _decode(data: bytes, label: str, max_pixels: int, max_aspect_ratio: float) -> Image.Image:
    """Identify, size-check, fully decode, orient and convert ``data`` to RGB."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice its global limit, raises) about huge images; both become our error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as image:
                _check_pixels(image.size, label, max_pixels)
                check_image_shape(*image.size, label, max_aspect_ratio=max_aspect_ratio)  # symmetric: EXIF
                image.load()
                oriented = _apply_exif_orientation(image)
                return _to_rgb(oriented, label)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageLoadError(label, _unidentified_reason(data)) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(label, f"it is too large to decode safely ({_detail(error)})") from error
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as error:
        raise ImageLoadError(label, f"the image data is truncated or damaged ({_detail(error)})") from error
    except MemoryError as error:
        raise ImageLoadError(label, "there is not enough memory to decode it") from error


def _detail(error: BaseException) -> str:
    """A library error's text, fit to sit inside our sentence."""
    return str(error).strip().rstrip(".") or type(error).__name__


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(label, f"it has an empty size of {width}x{height} pixels")
    if width * height > max_pixels:
        pixels = width * height
        raise ImageLoadError(
            label, f"it is {width}x{height} = {pixels:,} pixels, more than the limit of {max_pixels:,} pixels"
        )


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF metadata must not make an otherwise good picture unloadable
        return image


def _unidentified_reason(data: bytes) -> str:
    head = data[:64].lstrip()
    for signature, kind in _KNOWN_SIGNATURES:
        if head.startswith(signature):
            return f"it is {kind}, not a supported image ({_SUPPORTED_TEXT})"
    return f"it is not a supported image ({_SUPPORTED_TEXT}) or the file is damaged"


def _to_rgb(image: Image.Image, label: str = _UPLOADED) -> Image.Image:
    """Convert a decoded image of any Pillow mode to a new 8-bit RGB image.

    Transparency (alpha channel, or a palette/colour-key ``transparency``) is composited on white. 16-bit
    integer data is scaled by 255/65535; 32-bit integer and float data are scaled by their natural range
    when they fit one (0-255, 0-65535, 0-1) and otherwise stretched from their minimum to maximum.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageLoadError(label, f"its colour mode {mode} cannot be converted to RGB") from error


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float grey levels to 0-255 without clipping to white."""
    values = np.asarray(image).astype(np.float32)
    if image.mode.startswith("I;16"):
        scaled = values * (255.0 / 65535.0)
    else:
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        elif low >= 0.0 and high <= 65535.0:
            scaled = values * (255.0 / 65535.0)
        elif high > low:
            scaled = (values - low) * (255.0 / (high - low))
        else:  # a constant image outside every natural range (e.g. all -5): nothing to show but black
            scaled = np.zeros_like(values)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")

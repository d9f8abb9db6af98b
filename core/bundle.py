"""Model bundles: one directory per trained model, saved and loaded safely.

A bundle holds

- ``config.json`` — ``kind``, ``format_version``, ``created`` (UTC, ISO 8601), ``versions`` (library
  versions that wrote it) and the caller's own sections (backbone reference, data spec, hyper-parameters,
  metrics, ...);
- ``weights.safetensors`` — the model's tensors (safetensors: no pickle, nothing executes on load);
- optionally ``arrays.safetensors`` (numeric arrays) and ``arrays.json`` (string arrays, name -> list of
  str): cached results for the dashboard such as database codes, concept vectors, latents, 2-D UMAP, labels,
  image ids.

Writes are atomic: everything goes into a ``.tmp-`` sibling directory, is fsynced, then renamed into place,
so a crash never leaves a half-written bundle at the target path; a process killed between the two renames of
a replacement leaves hidden copies that the next load, save or listing restores (see
:func:`recover_interrupted_save`). Loading validates kind, format version, the backbone reference, and then
everything the :class:`~core.validate.ArrayLayout` the kind's loader passes declares (config numbers, cached
arrays, finite weights: :func:`core.validate.check_bundle`), and raises :class:`BundleError` with one sentence
naming the bundle and what is wrong. The layout and :class:`BundleError` live in :mod:`core.validate`, below
this module, and are imported from either.

Rule for ``config.json`` values (strict JSON): numpy scalars become Python numbers, numpy arrays and tensors
become (nested) lists, tuples become lists, paths become strings, and non-finite floats (NaN, +inf, -inf)
become ``null`` — strict JSON has no spelling for them, and a metric that could not be computed has no
value. Dictionary keys must be strings; any other type is rejected with :class:`BundleError`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy as st_numpy
from safetensors import SafetensorError

if TYPE_CHECKING:  # torch is imported where weights are saved or loaded: finding and describing bundles
    import torch  # (the dashboard's sidebar and Home page) stays free of its seconds-long import

from core import __version__
from core.atomic import give_normal_modes, swap_folder_into_place
from core.data.images import os_reason
from core.validate import (  # what a bundle holds and its checks; BundleError and the layout live there
    ARRAYS_FILE,
    CONFIG_FILE,
    MADE_BY,
    NO_ARRAYS,
    STRINGS_FILE,
    UNREADABLE,
    WEIGHTS_FILE,
    ArrayLayout,
    BundleError,
    HeaderProblem,
    check_bundle,
    name_list,
    read_string_arrays,
    require_arrays,
    safetensors_header,
)

FORMAT_VERSION = 1
KINDS = ("clip", "concepthash", "ceir")

_RESERVED_KEYS = ("kind", "format_version")
_WRITTEN_KEYS = ("created", "versions")
_NUMERIC_KINDS = "biuf"  # numpy dtype kinds safetensors can hold: bool, int, unsigned, float
_LOAD_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError)
_MAX_LISTED = 8


@dataclass
class Bundle:
    """A loaded bundle: its path, the whole parsed ``config.json``, weights and cached arrays."""

    path: Path
    config: dict
    weights: dict[str, torch.Tensor] = field(repr=False)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    layout: ArrayLayout = field(default=NO_ARRAYS, repr=False)

    @property
    def kind(self) -> str:
        """The model kind, one of :data:`KINDS`."""
        return self.config["kind"]

    def section(self, name: str) -> dict:
        """Return ``config[name]``, a JSON object, or raise BundleError saying it is absent."""
        value = self.config.get(name)
        if value is None:
            raise BundleError(f"Bundle {self.path} has no '{name}' section in its {CONFIG_FILE}.")
        if not isinstance(value, dict):
            raise BundleError(
                f"Bundle {self.path} has a '{name}' entry in its {CONFIG_FILE} that is a "
                f"{type(value).__name__}, not a section (a JSON object)."
            )
        return value

    def require_arrays(self) -> None:
        """Raise BundleError unless every cached array the loader needs (``layout.required``) is present."""
        require_arrays(self.path, self.arrays, self.layout)


# ----------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------


def save_bundle(
    path: str | os.PathLike,
    *,
    kind: str,
    config: dict,
    weights: dict[str, torch.Tensor],
    arrays: dict[str, np.ndarray] | None = None,
    half: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory atomically and return its path.

    ``config`` holds the caller's sections; ``kind`` and ``format_version`` are written by this function, so a
    caller value for them is rejected unless it equals what would be written (that lets a loaded config be
    saved again). ``created`` and ``versions`` always describe this write and replace any caller value.
    ``half=True`` stores floating weights as float16 (loading returns float32). An existing bundle at ``path``
    is replaced only with ``overwrite=True``; a file or a non-bundle folder with contents is never replaced.
    """
    path = Path(path)
    if kind not in KINDS:
        raise _cannot_save(path, f"kind '{kind}' is unknown; use one of {', '.join(KINDS)}")
    full_config = _full_config(path, kind, config)
    tensors = _prepare_weights(path, weights, half)
    numeric, strings = _split_arrays(path, arrays or {})
    check_save_target(path, overwrite)

    def write(tmp: Path) -> None:
        _write_json(tmp / CONFIG_FILE, full_config)
        import safetensors.torch as st_torch

        st_torch.save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        _fsync_file(tmp / WEIGHTS_FILE)
        _write_arrays(tmp, numeric, strings)

    _atomic_write(path, write, overwrite=overwrite)
    return path


def update_bundle_arrays(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], metrics: dict | None = None
) -> None:
    """Add or replace cached arrays (and merge ``metrics`` into ``config["metrics"]``) atomically.

    Everything else in the bundle — weights (byte for byte), other config sections, other files — is kept.
    """
    path = Path(path)
    config = read_bundle_config(path)
    _split_arrays(path, arrays)  # validate the new arrays before reading anything large
    numeric, strings = _split_arrays(path, {**_load_arrays(path), **arrays})
    if metrics is not None:
        if not isinstance(metrics, Mapping):
            raise _cannot_save(path, f"metrics must be a dict, not {type(metrics).__name__}")
        old_metrics = config.get("metrics", {})
        if not isinstance(old_metrics, dict):
            raise BundleError(f"Bundle {path} has a 'metrics' entry that is not a JSON object to merge into.")
        config["metrics"] = {**old_metrics, **_to_json(path, metrics, "metrics")}

    def write(tmp: Path) -> None:
        _copy_other_entries(path, tmp)
        _write_json(tmp / CONFIG_FILE, config)
        _write_arrays(tmp, numeric, strings)

    _atomic_write(path, write, overwrite=True)


def _cannot_save(path: Path, reason: str) -> BundleError:
    return BundleError(f"Cannot save bundle {path}: {reason}.")


def _full_config(path: Path, kind: str, config: Mapping[str, Any]) -> dict:
    """Build the config.json content: reserved keys first, then the caller's sections made strict JSON."""
    if not isinstance(config, Mapping):
        raise _cannot_save(path, f"config must be a dict, not {type(config).__name__}")
    written = {"kind": kind, "format_version": FORMAT_VERSION}
    for key in _RESERVED_KEYS:
        if key in config and config[key] != written[key]:
            raise _cannot_save(
                path,
                f"config sets '{key}' to {config[key]!r}, but save_bundle writes '{key}' itself "
                f"({written[key]!r}); remove it from config",
            )
    full: dict[str, Any] = {
        **written,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    for key, value in config.items():
        if key in _RESERVED_KEYS or key in _WRITTEN_KEYS:
            continue
        if not isinstance(key, str):
            raise _cannot_save(path, f"config key {key!r} is not a string")
        full[key] = _to_json(path, value, key)
    return full


def library_versions() -> dict[str, str]:
    """Versions of the libraries that matter for reading a bundle back (open_clip only when installed)."""
    import torch  # already imported by whoever has weights to save

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": _dist_version("safetensors"),
    }
    if importlib.util.find_spec("open_clip") is not None:
        versions["open_clip"] = _dist_version("open_clip_torch")
    versions["conceptlens"] = __version__
    return versions


def _dist_version(distribution: str) -> str:
    """Installed version of a distribution, without importing it (open_clip is slow to import)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _to_json(path: Path, value: Any, where: str) -> Any:
    """Convert ``value`` to strict-JSON-ready Python objects (see the module docstring for the rule)."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor)):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _cannot_save(path, f"config key {key!r} in '{where}' is not a string")
            out[key] = _to_json(path, item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(path, item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise _cannot_save(path, f"config value '{where}' is a {type(value).__name__}, which JSON cannot hold")


def _prepare_weights(path: Path, weights: Mapping[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    """Contiguous CPU clones (so tensors sharing memory save fine), floating ones as float16 if ``half``."""
    import torch

    if not isinstance(weights, Mapping):
        raise _cannot_save(path, f"weights must be a dict of tensors, not {type(weights).__name__}")
    prepared = {}
    for name, tensor in weights.items():
        if not isinstance(name, str) or not name:
            raise _cannot_save(path, f"weight name {name!r} is not a non-empty string")
        if not isinstance(tensor, torch.Tensor):
            raise _cannot_save(path, f"weights '{name}' is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu")
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        prepared[name] = tensor.clone().contiguous()
    return prepared


def _split_arrays(
    path: Path, arrays: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Split cached arrays into numeric ones (safetensors) and 1-D string ones (JSON lists); reject others."""
    if not isinstance(arrays, Mapping):
        raise _cannot_save(path, f"arrays must be a dict of numpy arrays, not {type(arrays).__name__}")
    numeric: dict[str, np.ndarray] = {}
    strings: dict[str, list] = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise _cannot_save(path, f"array name {name!r} must be a non-empty string not starting with '__'")
        if not isinstance(array, np.ndarray):
            raise _cannot_save(path, f"array '{name}' is a {type(array).__name__}, not a numpy array")
        if array.dtype.kind == "U":
            if array.ndim != 1:
                raise _cannot_save(path, f"string array '{name}' has shape {array.shape}; only 1-D is stored")
            strings[name] = [str(item) for item in array.tolist()]
        elif array.dtype.kind in _NUMERIC_KINDS:
            numeric[name] = np.ascontiguousarray(array)
        else:
            hint = " (an object array may hold anything, so it cannot be stored safely)"
            raise _cannot_save(
                path,
                f"array '{name}' has dtype {array.dtype}{hint if array.dtype.kind == 'O' else ''}; use a "
                "numeric dtype or a numpy str array (np.asarray(values, dtype=str))",
            )
    return numeric, strings


def _write_arrays(directory: Path, numeric: dict[str, np.ndarray], strings: dict[str, list]) -> None:
    """Write the array files that have content (none at all when there are no arrays)."""
    if numeric:
        st_numpy.save_file(numeric, str(directory / ARRAYS_FILE))
        _fsync_file(directory / ARRAYS_FILE)
    if strings:
        _write_json(directory / STRINGS_FILE, strings)


def _write_json(file: Path, content: Any) -> None:
    """Write strict JSON (NaN refused) and fsync it."""
    text = json.dumps(content, indent=2, ensure_ascii=False, allow_nan=False)
    with open(file, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(file: Path) -> None:
    with open(file, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make renames durable; not every platform can open a directory, which is harmless to skip."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_other_entries(source: Path, target: Path) -> None:
    """Copy everything in a bundle except the files that update_bundle_arrays rewrites."""
    rewritten = {CONFIG_FILE, ARRAYS_FILE, STRINGS_FILE}
    for entry in source.iterdir():
        if entry.name in rewritten:
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name)
        else:
            shutil.copy2(entry, target / entry.name)
            _fsync_file(target / entry.name)


def check_save_target(path: Path, overwrite: bool) -> None:
    """Refuse to write over a file, a non-empty foreign folder, or (without overwrite) an existing bundle.

    Training calls this before its first step, so a bad output path is refused before the work, not after.
    """
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_dir():
        raise _cannot_save(path, "a file is in the way, but a bundle is a directory")
    is_bundle = (path / CONFIG_FILE).is_file()
    if not is_bundle:
        if any(path.iterdir()):
            raise _cannot_save(path, "that folder holds other files and is not a bundle; choose another path")
        return  # an empty folder is simply filled
    if not overwrite:
        raise _cannot_save(path, "a bundle already exists there; pass overwrite=True to replace it")


# A hidden sibling of a save in progress: .tmp-NAME-PID-RANDOM (the new bundle being written) or
# .old-NAME-PID-RANDOM (the bundle it replaces, between the two renames of _install). PID is the writer's.
_HIDDEN_COPY = re.compile(r"^\.(?P<role>tmp|old)-(?P<name>.+)-(?P<pid>\d+)-[0-9a-f]{12}$")


def _sibling(path: Path, prefix: str) -> Path:
    return path.parent / f"{prefix}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def recover_interrupted_save(path: str | os.PathLike) -> bool:
    """Clean up after a save at ``path`` whose process died; True when a bundle was restored at ``path``.

    A kill between the two renames of a save leaves nothing at ``path``, the complete old bundle in a
    ``.old-`` sibling and the new one in a ``.tmp-`` sibling: the old one is renamed back (the save did not
    happen, as if it had been killed a moment earlier). Left-over ``.tmp-`` and ``.old-`` siblings of dead
    writers are removed. Siblings of a writer that is still running are never touched. Best effort: a
    folder that cannot be written is left as it is.
    """
    path = Path(path)
    try:
        stale = [
            (match["role"], entry)
            for entry in sorted(path.parent.iterdir(), key=lambda e: e.name)
            if (match := _HIDDEN_COPY.match(entry.name)) and match["name"] == path.name
            if not _writer_running(int(match["pid"]))
        ]
        restored = False
        if stale and not (path.exists() or path.is_symlink()):
            old = next((entry for role, entry in stale if role == "old"), None)
            if old is not None:
                os.rename(old, path)
                _fsync_dir(path.parent)
                stale = [(role, entry) for role, entry in stale if entry != old]
                restored = True
        for _, entry in stale:
            shutil.rmtree(entry, ignore_errors=True)
        return restored
    except OSError:
        return False


def _writer_running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be saving
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: a live process of another user
        return True
    return True


def _atomic_write(path: Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Run ``write(tmp)`` in a fresh ``.tmp-`` sibling, then move it to ``path``; on failure remove it.

    Every file gets the mode a plain ``open`` would give under the umask (safetensors writes 0600), so a
    bundle in a shared folder is as readable as its ``config.json``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(path)
    tmp = _sibling(path, ".tmp-")
    tmp.mkdir()
    try:
        write(tmp)
        give_normal_modes(tmp)
        _fsync_dir(tmp)
        _install(tmp, path, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; an old bundle moves to a ``.old-`` sibling first and is deleted after."""
    check_save_target(path, overwrite)
    swap_folder_into_place(tmp, path, _sibling(path, ".old-"))
    _fsync_dir(path.parent)


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def read_bundle_config(path: str | os.PathLike) -> dict:
    """Read and validate ``config.json`` only (kind known, version readable); cheap enough for listings."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    try:
        if not (path.exists() or path.is_symlink()):
            recover_interrupted_save(path)
        exists, is_dir, has_config = path.exists(), path.is_dir(), config_file.is_file()
    except OSError as error:  # PermissionError for a folder the user may not read
        raise BundleError(f"Bundle {path} {UNREADABLE} ({os_reason(error)}).") from error
    if not exists:
        raise BundleError(f"Bundle {path} does not exist.")
    if not is_dir:
        raise BundleError(f"Bundle {path} is a file, but a bundle is a directory made by {MADE_BY}.")
    if not has_config:
        raise BundleError(
            f"{path} is not a bundle: it has no {CONFIG_FILE} (a bundle is a directory made by {MADE_BY})."
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BundleError(f"Bundle {path} has an invalid {CONFIG_FILE} ({error}).") from error
    if not isinstance(config, dict):
        raise BundleError(f"Bundle {path} has an invalid {CONFIG_FILE}: it is not a JSON object.")
    _validate_config(path, config)
    return config


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not strict JSON")


def _validate_config(path: Path, config: dict) -> None:
    for key in _RESERVED_KEYS:
        if key not in config:
            raise BundleError(
                f"Bundle {path} has no '{key}' in its {CONFIG_FILE}, so it was not written by ConceptLens."
            )
    version = config["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"Bundle {path} has an invalid format_version {version!r} in its {CONFIG_FILE}.")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"Bundle {path} has format version {version}, made by a newer ConceptLens (this one reads up to "
            f"{FORMAT_VERSION}); upgrade ConceptLens to load it."
        )
    kind = config["kind"]
    if kind not in KINDS:
        raise BundleError(f"Bundle {path} has unknown kind {kind!r}; known kinds are {', '.join(KINDS)}.")
    if "backbone" in config:
        problem = _backbone_problem(kind, config["backbone"])
        if problem:
            raise BundleError(
                f"Bundle {path} has an unusable backbone reference {json.dumps(config['backbone'])} in its "
                f"{CONFIG_FILE}: {problem}; train it again with {MADE_BY}."
            )


def _backbone_problem(kind: str, reference: Any) -> str | None:
    """What is wrong with a config's ``backbone`` section (None when it can be used).

    A clip bundle stores the architecture it was built from (``model_cfg`` with vision and text parts); the
    other kinds store where their backbone comes from: a clip ``bundle`` directory or a model ``name``.
    """
    if not isinstance(reference, dict):
        return f"it is a {type(reference).__name__}, not a JSON object"
    if kind == "clip":
        model_cfg = reference.get("model_cfg")
        parts_ok = isinstance(model_cfg, dict) and all(
            isinstance(model_cfg.get(part), dict) for part in ("vision_cfg", "text_cfg")
        )
        return None if parts_ok else "it has no 'model_cfg' with 'vision_cfg' and 'text_cfg' sections"
    if any(isinstance(reference.get(key), str) and reference[key].strip() for key in ("bundle", "name")):
        return None
    return "it names neither a clip 'bundle' directory nor a model 'name'"


def load_bundle(
    path: str | os.PathLike,
    *,
    kind: str | Sequence[str] | None = None,
    load_arrays: bool = True,
    layout: ArrayLayout = NO_ARRAYS,
) -> Bundle:
    """Load and validate a bundle; ``kind`` (one or several) says which kinds the caller can use, ``layout``
    what it must hold (:func:`core.validate.check_bundle`: config numbers, cached arrays, finite weights)."""
    path = Path(path)
    wanted = _wanted_kinds(kind)
    config = read_bundle_config(path)
    if wanted is not None and config["kind"] not in wanted:
        needed = " or ".join(f"'{k}'" for k in wanted)
        raise BundleError(f"Bundle {path} is a '{config['kind']}' bundle, but a {needed} bundle is needed.")
    check_bundle(path, config, layout, arrays=load_arrays)
    weights = _load_weights(path)
    arrays = _load_arrays(path) if load_arrays else {}
    return Bundle(path=path, config=config, weights=weights, arrays=arrays, layout=layout)


def read_bundle_arrays(path: str | os.PathLike, layout: ArrayLayout = NO_ARRAYS) -> dict[str, np.ndarray]:
    """A bundle's cached arrays, validated against ``layout`` like a full load (the required ones present),
    without its weights (nor PyTorch): what a page needs to draw a bundle before, or without, loading its
    model."""
    path = Path(path)
    check_bundle(path, read_bundle_config(path), layout)
    return _load_arrays(path)


def _wanted_kinds(kind: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if kind is None:
        return None
    wanted = (kind,) if isinstance(kind, str) else tuple(kind)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown or not wanted:
        raise ValueError(f"kind must be one or more of {', '.join(KINDS)}, got {kind!r}.")
    return wanted


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load weights on CPU; floating tensors come back as float32 whatever their stored precision."""
    file = path / WEIGHTS_FILE
    if not file.is_file():
        raise BundleError(
            f"Bundle {path} is missing {WEIGHTS_FILE} (saving was interrupted or the file was removed); "
            "train or save the bundle again."
        )
    try:
        with open(file, "rb"):
            pass
    except OSError as error:  # say "permission denied", not "corrupt", for a file the user may not read
        raise BundleError(
            f"Bundle {path} has a {WEIGHTS_FILE} that {UNREADABLE} ({os_reason(error)})."
        ) from error
    try:
        import safetensors.torch as st_torch

        loaded = st_torch.load_file(str(file), device="cpu")
    except _LOAD_ERRORS as error:
        raise BundleError(
            f"Bundle {path} has a corrupt or truncated {WEIGHTS_FILE} ({error}); save it again."
        ) from error
    return {name: t.float() if t.is_floating_point() else t for name, t in loaded.items()}


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Load cached arrays: numeric ones from safetensors, string ones from JSON (dtype '<U..')."""
    arrays: dict[str, np.ndarray] = {}
    numeric_file = path / ARRAYS_FILE
    if numeric_file.is_file():
        try:
            arrays.update(st_numpy.load_file(str(numeric_file)))
        except _LOAD_ERRORS as error:
            raise BundleError(
                f"Bundle {path} has a corrupt or truncated {ARRAYS_FILE} ({error}); save it again."
            ) from error
    for name, values in read_string_arrays(path).items():
        if name in arrays:
            raise BundleError(f"Bundle {path} stores array '{name}' twice ({ARRAYS_FILE}, {STRINGS_FILE}).")
        arrays[name] = np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")
    return arrays


# ----------------------------------------------------------------------------------------------------------
# Listing and checking
# ----------------------------------------------------------------------------------------------------------


def find_bundles(root: str | os.PathLike) -> list[Path]:
    """Bundles at ``root`` or up to two levels below it, sorted; hidden, unreadable and foreign dirs skipped.

    A missing ``root`` gives an empty list (a runs folder may not exist yet).
    """
    return sorted(path for path, error in _candidates(root) if error is None)


def find_broken_bundles(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """Folders under ``root`` (same search as :func:`find_bundles`) that hold a config.json but do not
    validate, or that cannot be read at all (no permission, a ``/proc`` entry), each with the sentence
    saying why; a UI shows these instead of silently dropping them. :func:`is_unreadable` tells the two
    apart."""
    return sorted((path, error) for path, error in _candidates(root) if error is not None)


def is_unreadable(error: str) -> bool:
    """Whether an error of :func:`find_broken_bundles` is about a folder that could not be read at all."""
    return f" {UNREADABLE} (" in error


def _unreadable(path: Path, error: OSError) -> str:
    return f"Folder {path} {UNREADABLE} ({os_reason(error)}); it was skipped."


def _candidates(root: str | os.PathLike) -> Iterator[tuple[Path, str | None]]:
    root = Path(root)
    try:
        exists, is_dir = root.exists(), root.is_dir()
    except OSError as error:  # e.g. a folder inside one the user may not read
        return iter([(root, _unreadable(root, error))])
    if exists and not is_dir:
        raise BundleError(f"Cannot look for bundles in {root}: it is a file, not a folder.")
    if not exists:
        return iter([])
    return _walk_bundles(root, depth=0)


def check_bundle_files(path: str | os.PathLike) -> None:
    """Raise BundleError when a bundle's weights are missing or a safetensors file is truncated or corrupt.

    Only the files' headers are read (a few bytes), so a listing can tell a healthy bundle from one whose
    weights will not load without loading them.
    """
    path = Path(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"Bundle {path} is missing {WEIGHTS_FILE}; train or save the bundle again.")
    for file in (weights, path / ARRAYS_FILE):
        if file.is_file():
            problem = _safetensors_problem(file)
            if problem:
                raise BundleError(
                    f"Bundle {path} has a corrupt or truncated {file.name} ({problem}); save it again."
                )


def _safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file cannot be complete, from its header and size alone (None when it can be)."""
    try:
        safetensors_header(file)
    except OSError as error:
        return f"it {UNREADABLE}: {os_reason(error)}"
    except HeaderProblem as problem:
        return str(problem)
    return None


def _walk_bundles(directory: Path, depth: int) -> Iterator[tuple[Path, str | None]]:
    # Every file-system call can raise OSError (PermissionError for a folder without read permission, odd
    # errors under /proc): such a folder is reported by name and the walk goes on. The depth bound keeps a
    # search of a huge tree (/, /proc) short.
    try:
        has_config = (directory / CONFIG_FILE).is_file()
    except OSError as error:
        yield directory, _unreadable(directory, error)
        return
    if has_config:
        try:
            read_bundle_config(directory)
            check_bundle_files(directory)
        except (BundleError, OSError) as exc:
            yield directory, str(exc)
            return
        yield directory, None
        return
    if depth >= 2:
        return
    try:
        children = sorted(directory.iterdir())
        interrupted = {
            m["name"] for c in children if (m := _HIDDEN_COPY.match(c.name)) and m["role"] == "old"
        }
        if any([recover_interrupted_save(directory / name) for name in interrupted]):
            children = sorted(directory.iterdir())
    except OSError as error:
        yield directory, _unreadable(directory, error)
        return
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            is_dir = child.is_dir()
        except OSError as error:
            yield child, _unreadable(child, error)
            continue
        if is_dir:
            yield from _walk_bundles(child, depth + 1)


def check_shapes(
    weights: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int] | torch.Tensor],
    *,
    path: str | os.PathLike | None = None,
) -> None:
    """Raise BundleError listing missing keys, unexpected keys, shape mismatches and (where ``expected``
    holds the model's own tensors, e.g. its ``state_dict()``) whole numbers where the model has floating-point
    ones or the other way round."""
    problems = []
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    if missing:
        problems.append(f"missing weights {name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected weights {name_list(unexpected)}")
    mismatched = []
    for name in (n for n in expected if n in weights):
        stored, wanted = weights[name], expected[name]
        shape = tuple(int(s) for s in (wanted.shape if hasattr(wanted, "shape") else wanted))
        if tuple(stored.shape) != shape:
            mismatched.append(
                f"weights '{name}' has shape {tuple(stored.shape)} but the model expects {shape}"
            )
        elif (
            hasattr(wanted, "is_floating_point") and stored.is_floating_point() != wanted.is_floating_point()
        ):
            numbers = "floating-point" if wanted.is_floating_point() else "whole"
            mismatched.append(
                f"weights '{name}' holds {stored.dtype} but the model expects {numbers} numbers"
            )
    problems.extend(mismatched[:_MAX_LISTED])
    if len(mismatched) > _MAX_LISTED:
        problems.append(f"{len(mismatched) - _MAX_LISTED} more mismatches")
    if problems:
        where = f"Bundle {path} does not fit" if path is not None else "The weights do not fit"
        raise BundleError(f"{where} the model: {'; '.join(problems)}.")

"""One validation of a bundle, for every kind: its config numbers, cached arrays and weights.

A kind declares what its bundles hold in an :class:`ArrayLayout` (in the kind's own module; ``core.kinds``
names it for every kind): each cached array's shape against the config, what its values may
be (:data:`FINITE` numbers, ±1 :data:`CODES`, ids below a count with :func:`ids_below`), which arrays are
required, and the type and range of every config number (:class:`Number`). :func:`check_bundle` checks a
bundle against it and raises :class:`BundleError` with one sentence naming the file, the array
or key and what was expected; :func:`check_config` checks the config alone (cheap enough for a listing).

Checking costs little: dtypes and shapes come from the safetensors headers, and only the arrays whose values
matter are read, memory-mapped (never copied, never kept). The result is kept per bundle version (each
file's size and modification time in nanoseconds), so a bundle's arrays are read once however often it is
opened; a rewritten bundle is checked again.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import os_reason

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
ARRAYS_FILE = "arrays.safetensors"
STRINGS_FILE = "arrays.json"
UNREADABLE = "cannot be read"
MADE_BY = "`conceptlens train ...`"
MAX_LISTED = 8

AGAIN = f"copy it again from where it was made, or train it again with {MADE_BY}"


class BundleError(ValueError):
    """A bundle cannot be written or read; the message names the bundle and what to do (``core.bundle``
    gives it to its callers; it lives here, below the saving and loading that raise it)."""


Dims = tuple[str | int, ...]


@dataclass(frozen=True, eq=False)
class ArrayLayout:
    """What a kind's bundles hold (declared by the kind's own module), checked on load by
    :func:`check_bundle`.

    ``shapes``: name -> dims of each cached array. A dim is a number, a size that ``sizes`` reads from
    config.json or ``weight_sizes`` from a weight's shape (name -> (weight, axis)), or any other name that
    every array having it must agree on: "rows" (and names ending in "_rows") is the length of one table of
    arrays and never 0. Names ending in ``_ids`` hold strings. ``values``: name -> what the array's values may
    be (:data:`FINITE`, :data:`CODES`, :func:`ids_below`), which also fixes its dtypes. ``required``: the
    arrays the kind cannot work without. ``numbers``: dotted config key -> its :class:`Number` rule
    ("ceir.vae.hidden_dims[]" for each item of a list); ``texts``: keys that hold lists of texts;
    ``relations``: checks of several config values together, each giving what is wrong in a few words or
    None; ``whole_weights``: the endings of the only weight names that may hold whole numbers (every other
    weight must be floating-point), None to allow any. Other arrays and keys of a bundle are not checked
    (every config number must still be finite, every floating-point weight too).
    Compared by identity: one layout per kind, a module constant.
    """

    shapes: Mapping[str, Dims]
    required: tuple[str, ...] = ()
    sizes: Callable[[dict], dict[str, int]] = lambda config: {}
    values: Mapping[str, Values] = field(default_factory=dict)
    weight_sizes: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    numbers: Mapping[str, Number] = field(default_factory=dict)
    texts: tuple[str, ...] = ()
    relations: tuple[Callable[[Mapping[str, Any]], str | None], ...] = ()
    whole_weights: tuple[str, ...] | None = None  # name endings of the only whole-number weights; None: any


NO_ARRAYS = ArrayLayout({})


def nested_value(config: Mapping, *keys: str) -> Any:
    """``config[k1][k2]...``, or None where a level is missing or not a JSON object (hand-edited files)."""
    value: Any = config
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def name_list(names: list[str]) -> str:
    """'a', 'b' and 3 more: names in a sentence, at most :data:`MAX_LISTED` of them."""
    shown = ", ".join(f"'{n}'" for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def require_arrays(path: Path, arrays: Mapping[str, Any], layout: ArrayLayout) -> None:
    """Raise BundleError unless every array ``layout`` requires is among ``arrays``."""
    missing = [name for name in layout.required if name not in arrays]
    if missing:
        raise BundleError(
            f"Bundle {path} lacks the cached arrays {name_list(missing)}, which its {ARRAYS_FILE} or "
            f"{STRINGS_FILE} must hold (saving was interrupted or a file was removed); train it again with "
            f"{MADE_BY}."
        )


def read_string_arrays(path: Path) -> dict[str, list[str]]:
    """The string arrays of a bundle's arrays.json (name -> list of texts); {} when it has none."""
    file = path / STRINGS_FILE
    if not file.is_file():
        return {}
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BundleError(f"Bundle {path} has a corrupt {STRINGS_FILE} ({error}); save it again.") from error
    valid = isinstance(content, dict) and all(
        isinstance(values, list) and all(isinstance(v, str) for v in values) for values in content.values()
    )
    if not valid:
        raise BundleError(f"Bundle {path} has a corrupt {STRINGS_FILE}: it must map names to string lists.")
    return content


# ----------------------------------------------------------------------------------------------------------
# Config numbers
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """What one number of ``config.json`` may be: a (whole) number from ``low`` to ``high``, finite."""

    low: float = 0.0
    high: float = math.inf
    whole: bool = False
    above_low: bool = False  # ``low`` itself is not allowed
    nullable: bool = False  # null (the setting is off / has its default) is allowed

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and (not math.isfinite(value) or self.whole):
            return False
        return self.low <= value <= self.high and not (self.above_low and value == self.low)

    def expected(self) -> str:
        what = "a whole number" if self.whole else "a number"
        low = _number_text(self.low)
        if math.isinf(self.high):
            bounds = f"above {low}" if self.above_low else f"of at least {low}"
            text = f"a finite {what.removeprefix('a ')} {bounds}"
        elif self.above_low:
            text = f"{what} above {low} and at most {_number_text(self.high)}"
        else:
            text = f"{what} from {low} to {_number_text(self.high)}"
        return text + (" (or null)" if self.nullable else "")


def _number_text(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def size(high: int) -> Number:
    """A size (bits, widths, counts of things that must exist): a whole number from 1 to ``high``."""
    return Number(1, high, whole=True)


def count(high: int) -> Number:
    """A count that may be 0 (0 often meaning "off"): a whole number from 0 to ``high``."""
    return Number(0, high, whole=True)


def optional(rule: Number) -> Number:
    """``rule``, or null."""
    return replace(rule, nullable=True)


AMOUNT = Number()  # a weight, rate or duration: finite and not negative
POSITIVE = Number(above_low=True)
SHARE = Number(0, 1)  # a fraction
SEED = count(2**32 - 1)

# The sections every kind may have, by the dataclasses that write them (core.data.spec.DataSpec, the
# trainers' RunSettings); a kind adds its own model section.
DATA_NUMBERS = {
    "data.image_size": size(4096),
    "data.train_per_class": size(10**7),
    "data.test_per_class": size(10**7),
    "data.seed": SEED,
    "data.world": size(1000),
}
TRAIN_NUMBERS = {
    "train.epochs": count(10**6),  # 0: a bundle not trained (`conceptlens bench make-bundle`)
    "train.batch_size": size(10**6),
    "train.lr": AMOUNT,
    "train.seed": SEED,
    "train.workers": count(1024),
    "train.momentum": AMOUNT,
    "train.weight_decay": AMOUNT,
    "train.warmup_fraction": SHARE,
    "train.warmup_epochs": count(10**6),
    "train.seconds": AMOUNT,
    "train.images_seen": count(10**15),
}
BACKBONE_NUMBERS = {"backbone.init_seed": SEED}
COMMON_NUMBERS = {**DATA_NUMBERS, **TRAIN_NUMBERS, **BACKBONE_NUMBERS}


def check_config(path: str | os.PathLike, config: Mapping[str, Any], layout: ArrayLayout) -> None:
    """Raise BundleError when a number of ``config`` breaks its rule in ``layout.numbers``, a list of texts
    in ``layout.texts`` holds something else, a relation in ``layout.relations`` fails, or any number
    anywhere is infinite (JSON's ``1e999`` reads as infinity)."""
    path = Path(path)
    for key, rule in layout.numbers.items():
        for where, value in _values_at(path, config, key):
            if not rule.allows(value):
                raise BundleError(
                    f"Bundle {path} has '{where}' = {_shown(value)} in its {CONFIG_FILE}, but it must be "
                    f"{rule.expected()}; {AGAIN}."
                )
    for key in layout.texts:
        value = _nested(config, key)
        texts = isinstance(value, list) and all(isinstance(item, str) for item in value)
        if value is not None and not texts:
            raise BundleError(
                f"Bundle {path} has '{key}' = {_shown(value)} in its {CONFIG_FILE}, but it must be a list of "
                f"texts; {AGAIN}."
            )
    for relation in layout.relations:
        problem = relation(config)
        if problem:
            raise BundleError(f"Bundle {path} has a {CONFIG_FILE} in which {problem}; {AGAIN}.")
    where = _first_infinite(config)
    if where is not None:
        raise BundleError(
            f"Bundle {path} has '{where}' = infinity in its {CONFIG_FILE} (a number too large for a float, "
            f"such as 1e999), but every number there must be finite; {AGAIN}."
        )


def _nested(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for name in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _values_at(path: Path, config: Mapping[str, Any], key: str) -> Iterator[tuple[str, Any]]:
    """(where, value) of ``key`` ("model.bits"; "ceir.vae.hidden_dims[]" for every item of a list); nothing
    when it is absent. A section on the way that is not a JSON object is refused."""
    *sections, last = key.split(".")
    node: Any = config
    for depth, name in enumerate(sections):
        node = node.get(name)
        if node is None:
            return
        if not isinstance(node, Mapping):
            where = ".".join(sections[: depth + 1])
            raise BundleError(
                f"Bundle {path} has '{where}' = {_shown(node)} in its {CONFIG_FILE}, but it must be a "
                f"section (a JSON object); {AGAIN}."
            )
    name = last.removesuffix("[]")
    where = ".".join([*sections, name])
    if name not in node:
        return
    value = node[name]
    if not last.endswith("[]"):
        yield where, value
        return
    if not isinstance(value, list):
        raise BundleError(
            f"Bundle {path} has '{where}' = {_shown(value)} in its {CONFIG_FILE}, but it must be a list of "
            f"numbers; {AGAIN}."
        )
    for index, item in enumerate(value):
        yield f"{where}[{index}]", item


def _first_infinite(config: Any) -> str | None:
    """Where the first infinite number in ``config`` is (a dotted key), or None; iterative, so any depth
    the JSON parser accepted is walked without recursion."""
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where
        if isinstance(value, Mapping):
            items = [(f"{where}.{key}" if where else str(key), item) for key, item in value.items()]
        elif isinstance(value, list):
            items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def _shown(value: Any) -> str:
    """A config value as a sentence shows it: JSON, on one line, cut short."""
    if isinstance(value, float) and not math.isfinite(value):
        return "infinity" if value > 0 else ("-infinity" if value < 0 else "NaN")
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


# ----------------------------------------------------------------------------------------------------------
# What an array's values may be
# ----------------------------------------------------------------------------------------------------------

_FLOATS = frozenset({"F16", "BF16", "F32", "F64"})
_SIGNED = frozenset({"I8", "I16", "I32", "I64"})
_INTEGERS = _SIGNED | {"U8", "U16", "U32", "U64"}
_ITEM_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
# How numpy reads each dtype from the file (bfloat16 as its raw 16 bits: numpy has no bfloat16).
_NUMPY = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "BF16": "<u2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
}
_NUMPY_LOADS = frozenset(_NUMPY) - {"BF16"}  # what safetensors' numpy loader can give back
_DTYPE_WORDS = {"BOOL": "booleans", "BF16": "bfloat16", "F8_E5M2": "float8", "F8_E4M3": "float8"}
_CHUNK = 1 << 22  # elements scanned at a time: a bounded temporary, whatever the array's size


def _dtype_word(dtype: str) -> str:
    if dtype in _DTYPE_WORDS:
        return _DTYPE_WORDS[dtype]
    family = {"F": "float", "I": "int", "U": "uint"}[dtype[0]]
    return f"{family}{dtype[1:]}"


@dataclass(frozen=True)
class Values:
    """What the values of one cached array may be: its dtypes, and a check of the numbers themselves."""

    dtypes: frozenset[str]
    words: str  # the dtypes in a sentence
    kind: str  # "finite", "codes" or "ids"
    bound: str | None = None  # ids: the size (a name in the layout's sizes) they must stay below
    noun: str = ""  # ids: what one id names ("class", "cluster")

    def problem(self, data: np.ndarray, sizes: Mapping[str, int]) -> str | None:
        """What is wrong with ``data`` in a few words (None when nothing is)."""
        if self.kind == "finite":
            return _non_finite(data)
        if self.kind == "codes":
            return _not_codes(data)
        return _ids_out_of_range(data, sizes.get(self.bound or ""), self.noun)


FINITE = Values(_FLOATS - {"BF16"}, "floating-point numbers (float16, float32 or float64)", "finite")
CODES = Values(_SIGNED, "signed whole numbers (int8 codes of -1 and +1)", "codes")


def ids_below(bound: str, noun: str) -> Values:
    """Whole numbers from 0 to ``sizes[bound] - 1``: each names one ``noun`` (a class, a cluster)."""
    return Values(_INTEGERS, f"whole numbers ({noun} ids)", "ids", bound, noun)


def _chunks(data: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    flat = data.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        yield start, flat[start : start + _CHUNK]


def _row(data: np.ndarray, flat_index: int) -> int:
    per_row = math.prod(data.shape[1:]) if data.ndim > 1 else 1
    return flat_index // max(per_row, 1)


def _non_finite(data: np.ndarray) -> str | None:
    for start, part in _chunks(data):
        bad = ~np.isfinite(part)
        if bad.any():
            first = int(np.argmax(bad))
            what = "NaN" if np.isnan(part[first]) else "an infinite value"
            return f"holds {what} (in row {_row(data, start + first)}), but it must hold finite numbers"
    return None


def _not_codes(data: np.ndarray) -> str | None:
    for start, part in _chunks(data):
        bad = (part != 1) & (part != -1)
        if bad.any():
            first = int(np.argmax(bad))
            return (
                f"holds {int(part[first])} (in row {_row(data, start + first)}), but a code bit must be "
                "-1 or +1"
            )
    return None


def _ids_out_of_range(data: np.ndarray, bound: int | None, noun: str) -> str | None:
    low, high = int(data.min()), int(data.max())
    if low >= 0 and (bound is None or high < bound):
        return None
    span = f"{noun} ids from {low} to {high}"
    if bound is None:
        return f"holds {span}, but an id cannot be negative"
    return f"holds {span}, but they must lie between 0 and {bound - 1} (it has {bound} {_plural(noun)})"


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("s") else "s")


# ----------------------------------------------------------------------------------------------------------
# Stored arrays as their files describe them
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One stored array as its file describes it, no data read: file name, dtype, shape, data offset."""

    file: str
    dtype: str  # safetensors' name ("F32", "I64", ...), or "str" for a list in arrays.json
    shape: tuple[int, ...]
    start: int = 0  # where its bytes begin in the file (safetensors)


class HeaderProblem(ValueError):
    """A safetensors file whose header cannot describe its content; the message says why in a few words."""


def safetensors_header(file: Path) -> dict[str, Stored]:
    """The tensors a safetensors file holds (name -> :class:`Stored`), from its header alone.

    Raises :class:`HeaderProblem` when the header is missing, not JSON, describes something else than
    tensors, a tensor whose bytes do not match its dtype and shape, or another file size than the file has;
    ``OSError`` when the file cannot be read.
    """
    with open(file, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= file_size - 8:
            raise HeaderProblem("no valid header")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HeaderProblem("the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise HeaderProblem("the header does not describe tensors")
    data_start = 8 + length
    stored, end_of_data = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        stored[name] = _entry(name, entry, file.name, data_start)
        end_of_data = max(end_of_data, stored[name].start - data_start + _bytes(stored[name]))
    if file_size != data_start + end_of_data:
        raise HeaderProblem(f"{file_size:,} bytes where the header describes {data_start + end_of_data:,}")
    return stored


def _entry(name: str, entry: Any, file: str, data_start: int) -> Stored:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise HeaderProblem("the header does not describe tensors") from None
    whole = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (*shape, begin, end))
    if not (isinstance(shape, list) and whole and begin <= end):
        raise HeaderProblem(f"the header gives '{_printable(name)}' an impossible shape or place")
    if dtype not in _ITEM_BYTES:
        raise HeaderProblem(f"the header gives '{_printable(name)}' an unknown dtype {_shown(dtype)}")
    array = Stored(file, dtype, tuple(shape), data_start + begin)
    if end - begin != _bytes(array):
        raise HeaderProblem(
            f"'{_printable(name)}' takes {end - begin:,} bytes where its shape {array.shape} of "
            f"{_dtype_word(dtype)} needs {_bytes(array):,}"
        )
    return array


def _bytes(array: Stored) -> int:
    return math.prod(array.shape) * _ITEM_BYTES[array.dtype]


def _printable(name: str) -> str:
    """A stored name in a sentence: control characters (a newline in a tampered header) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _read(path: Path, file: Path) -> dict[str, Stored]:
    """``safetensors_header`` with its problems as BundleError sentences."""
    try:
        return safetensors_header(file)
    except HeaderProblem as problem:
        raise BundleError(
            f"Bundle {path} has a corrupt or truncated {file.name} ({problem}); save it again."
        ) from None
    except OSError as error:
        raise BundleError(
            f"Bundle {path} has a {file.name} that {UNREADABLE} ({os_reason(error)})."
        ) from error


def _stored_arrays(path: Path) -> dict[str, Stored]:
    """Every cached array: numeric ones from the arrays.safetensors header, string ones from arrays.json."""
    arrays: dict[str, Stored] = {}
    numeric = path / ARRAYS_FILE
    if numeric.is_file():
        arrays.update(_read(path, numeric))
    for name, stored in arrays.items():
        if stored.dtype not in _NUMPY_LOADS:
            raise BundleError(
                f"Bundle {path} has, in {ARRAYS_FILE}, a cached array '{_printable(name)}' of "
                f"{_dtype_word(stored.dtype)} numbers, which ConceptLens never stores there; {AGAIN}."
            )
    for name, values in read_string_arrays(path).items():
        if name in arrays:
            raise BundleError(f"Bundle {path} stores array '{name}' twice ({ARRAYS_FILE}, {STRINGS_FILE}).")
        arrays[name] = Stored(STRINGS_FILE, "str", (len(values),))
    return arrays


class _Mapped:
    """The arrays of one safetensors file, memory-mapped on first use (the file is opened once)."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._whole: np.ndarray | None = None

    def array(self, stored: Stored) -> np.ndarray:
        if self._whole is None:
            self._whole = np.memmap(self.file, dtype=np.uint8, mode="r")
        raw = self._whole[stored.start : stored.start + _bytes(stored)]
        return raw.view(np.dtype(_NUMPY[stored.dtype])).reshape(stored.shape)


# ----------------------------------------------------------------------------------------------------------
# The whole check, kept per bundle version
# ----------------------------------------------------------------------------------------------------------

_STAMPED = (CONFIG_FILE, WEIGHTS_FILE, ARRAYS_FILE, STRINGS_FILE)
_CHECKED: OrderedDict[tuple[str, ArrayLayout, bool], tuple[tuple, str | None]] = OrderedDict()
_CHECKED_MAX = 64
_LOCK = threading.Lock()


def bundle_stamps(path: str | os.PathLike) -> tuple:
    """The version of a bundle's files: (name, size, modification time in ns), or (name,) when absent."""
    stamps = []
    for name in _STAMPED:
        try:
            stat = os.stat(Path(path) / name)
        except OSError:
            stamps.append((name,))
            continue
        stamps.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def check_bundle(
    path: str | os.PathLike, config: Mapping[str, Any], layout: ArrayLayout, *, arrays: bool = True
) -> None:
    """Raise BundleError with one sentence when the bundle at ``path`` (its parsed ``config``) does not hold
    what ``layout`` declares: config numbers, cached arrays (presence, dtype, shape, values; skipped with
    ``arrays=False``, for a caller that does not read them) and weights (dtype, finite values). Each version
    of a bundle's files is checked once per process."""
    path = Path(path)
    key, stamps = (str(path), layout, arrays), bundle_stamps(path)
    with _LOCK:
        known = _CHECKED.get(key)
    if known is None or known[0] != stamps:
        try:
            _check(path, config, layout, arrays)
            problem = None
        except BundleError as error:
            problem = str(error)
        with _LOCK:
            _CHECKED[key] = (stamps, problem)
            _CHECKED.move_to_end(key)
            while len(_CHECKED) > _CHECKED_MAX:
                _CHECKED.popitem(last=False)
        known = (stamps, problem)
    if known[1] is not None:
        raise BundleError(known[1])


def _check(path: Path, config: Mapping[str, Any], layout: ArrayLayout, with_arrays: bool) -> None:
    check_config(path, config, layout)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise BundleError(
            f"Bundle {path} is missing {WEIGHTS_FILE} (saving was interrupted or the file was removed); "
            "train or save the bundle again."
        )
    weights = _read(path, weights_file)
    if with_arrays:
        arrays = _stored_arrays(path)
        sizes = _sizes(config, layout, weights)
        require_arrays(path, arrays, layout)
        _check_kinds(path, arrays, layout)
        _check_shapes(path, arrays, layout, sizes)
        _check_values(path, arrays, layout, sizes)
    _check_weights(path, weights, layout.whole_weights)


def _sizes(config: Mapping[str, Any], layout: ArrayLayout, weights: Mapping[str, Stored]) -> dict[str, int]:
    sizes = {
        name: value
        for name, value in layout.sizes(config).items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
    for name, (weight, axis) in layout.weight_sizes.items():
        stored = weights.get(weight)
        if stored is not None and len(stored.shape) > axis:
            sizes[name] = stored.shape[axis]
    return sizes


def _is_rows(dim: str) -> bool:
    return dim == "rows" or dim.endswith("_rows")


def _check_kinds(path: Path, arrays: Mapping[str, Stored], layout: ArrayLayout) -> None:
    """Strings where strings belong (names ending in ``_ids``), numbers everywhere else."""
    for name in layout.shapes:
        stored = arrays.get(name)
        if stored is not None and (stored.dtype == "str") != name.endswith("_ids"):
            wanted = "strings" if name.endswith("_ids") else "numbers"
            raise BundleError(
                f"Bundle {path} has, in {stored.file}, a cached array '{name}' that does not hold {wanted}; "
                f"{AGAIN}."
            )


def _check_shapes(
    path: Path, arrays: Mapping[str, Stored], layout: ArrayLayout, sizes: Mapping[str, int]
) -> None:
    """Each array's dtype, rank and every dimension: a number, a size of the config or weights, or a name
    every array that has it must agree on (rows first of all, which must not be 0)."""
    bound: dict[str, tuple[str, int]] = {}
    for name, dims in layout.shapes.items():
        stored = arrays.get(name)
        if stored is None:
            continue
        values = layout.values.get(name)
        if values is not None and stored.dtype not in values.dtypes:
            raise BundleError(
                f"Bundle {path} has, in {stored.file}, a cached array '{name}' of "
                f"{_dtype_word(stored.dtype)} numbers, but it must hold {values.words}; {AGAIN}."
            )
        if len(stored.shape) != len(dims):
            raise BundleError(
                f"Bundle {path} has, in {stored.file}, a cached array '{name}' of shape {stored.shape}, but "
                f"it must have {len(dims)} dimension{'s' if len(dims) > 1 else ''}; {AGAIN}."
            )
        for dim, actual in zip(dims, stored.shape, strict=True):
            expected = dim if isinstance(dim, int) else sizes.get(dim)
            if expected is not None:
                if actual != expected:
                    raise BundleError(
                        f"Bundle {path} has, in {stored.file}, a cached array '{name}' of shape "
                        f"{stored.shape}, which does not fit its {dim} ({expected}); {AGAIN}."
                    )
                continue
            if _is_rows(dim) and actual == 0:
                raise BundleError(
                    f"Bundle {path} has, in {stored.file}, an empty cached array '{name}'; {AGAIN}."
                )
            first = bound.setdefault(dim, (name, actual))
            if first[1] != actual:
                unit = "rows" if _is_rows(dim) else f"as its {dim}"
                files = " and ".join(sorted({arrays[first[0]].file, stored.file}))
                raise BundleError(
                    f"Bundle {path} has, in {files}, cached arrays of different lengths ('{first[0]}' has "
                    f"{first[1]} {unit}, '{name}' has {actual}); {AGAIN}."
                )


def _check_values(
    path: Path, arrays: Mapping[str, Stored], layout: ArrayLayout, sizes: Mapping[str, int]
) -> None:
    mapped = _Mapped(path / ARRAYS_FILE)
    for name, values in layout.values.items():
        stored = arrays.get(name)
        if stored is None or stored.dtype == "str" or _bytes(stored) == 0:
            continue
        problem = values.problem(mapped.array(stored), sizes)
        if problem:
            raise BundleError(
                f"Bundle {path} has, in {stored.file}, a cached array '{name}' that {problem}; {AGAIN}."
            )


# The only weights of ConceptLens' models that hold whole numbers (BatchNorm's step counters); every other
# weight is a floating-point parameter or buffer, so a weight of whole numbers is damage.
WHOLE_WEIGHTS = ("num_batches_tracked",)


def _check_weights(path: Path, weights: Mapping[str, Stored], whole_weights: tuple[str, ...] | None) -> None:
    """Every weight a number type PyTorch loads, floating-point but for ``whole_weights`` (when given), and
    finite."""
    mapped = _Mapped(path / WEIGHTS_FILE)
    for name, stored in weights.items():
        whole = whole_weights is not None and name.endswith(whole_weights)
        if whole_weights is not None and stored.dtype in _NUMPY and (stored.dtype in _FLOATS) == whole:
            wanted = "whole numbers (a step count)" if whole else "floating-point numbers"
            raise BundleError(
                f"Bundle {path} has, in {WEIGHTS_FILE}, a weight '{_printable(name)}' of "
                f"{_dtype_word(stored.dtype)} numbers, but it must hold {wanted}; {AGAIN}."
            )
        if stored.dtype not in _NUMPY:
            raise BundleError(
                f"Bundle {path} has, in {WEIGHTS_FILE}, a weight '{_printable(name)}' of "
                f"{_dtype_word(stored.dtype)} numbers, which ConceptLens cannot load; {AGAIN}."
            )
        if stored.dtype not in _FLOATS or _bytes(stored) == 0:
            continue
        data = mapped.array(stored)
        problem = _non_finite_bfloat16(data) if stored.dtype == "BF16" else _non_finite(data)
        if problem:
            raise BundleError(
                f"Bundle {path} has, in {WEIGHTS_FILE}, a weight '{_printable(name)}' that "
                f"{problem.replace('in row', 'at row')}; {AGAIN}."
            )


def _non_finite_bfloat16(bits: np.ndarray) -> str | None:
    """bfloat16 read as its raw 16 bits: all exponent bits set is NaN or infinity."""
    for start, part in _chunks(bits):
        bad = (part & 0x7F80) == 0x7F80
        if bad.any():
            first = int(np.argmax(bad))
            row = _row(bits, start + first)
            return f"holds NaN or an infinite value (in row {row}), but it must hold finite numbers"
    return None

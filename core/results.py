"""Reading evaluation results: the nested ``conceptlens eval --json`` dictionaries."""

from __future__ import annotations

from typing import Any


def figure(result: dict[str, Any], path: tuple[str, ...]) -> float:
    """The number at ``path`` (a sequence of keys) in a nested result."""
    value: Any = result
    for key in path:
        value = value[key]
    return float(value)

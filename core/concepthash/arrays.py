"""The cached arrays of a ConceptHash bundle: named keys and their layout (free of PyTorch)."""

from __future__ import annotations

from core.bundle import ArrayLayout, nested_value

# The cached arrays: the database's codes (±1), class indices and image ids, one row per image.
DB_CODES, DB_LABELS, DB_IDS = "db_codes", "db_labels", "db_ids"
ARRAYS = ArrayLayout(
    {DB_CODES: ("rows", "bits"), DB_LABELS: ("rows",), DB_IDS: ("rows",)},
    required=(DB_CODES, DB_LABELS),
    sizes=lambda config: {"bits": nested_value(config, "model", "bits")},
)

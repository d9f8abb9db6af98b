"""The cached arrays of a ConceptHash bundle: named keys and their layout (free of PyTorch)."""

from __future__ import annotations

from core.bundle import ArrayLayout, nested_value


def _attended(config: dict) -> int | None:
    """Rows of attention per image: one per concept, or the CLS token's one for the CLS baseline."""
    return (
        1 if nested_value(config, "model", "mode") == "cls" else nested_value(config, "model", "n_concepts")
    )


def _sizes(config: dict) -> dict[str, int | None]:
    return {"bits": nested_value(config, "model", "bits"), "attended": _attended(config)}


# The cached arrays: the database's codes (±1), class indices and image ids, one row per image, and each
# concept's last-layer attention over the patch grid (float16), so the dashboard draws the database's
# heatmaps without running the model (bundles saved before it have none; the page then computes them).
DB_CODES, DB_LABELS, DB_IDS, DB_ATTENTION = "db_codes", "db_labels", "db_ids", "db_attention"
ARRAYS = ArrayLayout(
    {
        DB_CODES: ("rows", "bits"),
        DB_LABELS: ("rows",),
        DB_IDS: ("rows",),
        DB_ATTENTION: ("rows", "attended", "grid_h", "grid_w"),
    },
    required=(DB_CODES, DB_LABELS),
    sizes=_sizes,
)

# The test split's (the queries') codes, image ids and last-layer attention, a table of its own (as many rows
# as test images), so the retrieval page searches with a test image without running the model (bundles saved
# before it have none; the page then encodes the query).
QUERY_CODES, QUERY_IDS, QUERY_ATTENTION = "query_codes", "query_ids", "query_attention"
QUERY_ARRAYS = ArrayLayout(
    {
        QUERY_CODES: ("rows", "bits"),
        QUERY_IDS: ("rows",),
        QUERY_ATTENTION: ("rows", "attended", "grid_h", "grid_w"),
    },
    sizes=_sizes,
)


class DatabaseArrays:
    """``db_codes`` and ``db_labels`` of anything that holds a ConceptHash bundle's ``arrays`` (the loaded
    model, or the dashboard's bundle read without it)."""

    arrays: dict

    @property
    def db_codes(self):
        """The database's ±1 codes (N, K)."""
        return self.arrays[DB_CODES]

    @property
    def db_labels(self):
        """The database's class indices (N,)."""
        return self.arrays[DB_LABELS]

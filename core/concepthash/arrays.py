"""The cached arrays of a ConceptHash bundle: named keys and their layout (free of PyTorch)."""

from __future__ import annotations

from typing import Any

from core.validate import (
    AMOUNT,
    CODES,
    COMMON_NUMBERS,
    FINITE,
    POSITIVE,
    SHARE,
    WHOLE_WEIGHTS,
    ArrayLayout,
    Number,
    count,
    ids_below,
    nested_value,
    size,
)


def _attended(config: dict) -> int | None:
    """Rows of attention per image: one per concept, or the CLS token's one for the CLS baseline."""
    return (
        1 if nested_value(config, "model", "mode") == "cls" else nested_value(config, "model", "n_concepts")
    )


def _sizes(config: dict) -> dict[str, int | None]:
    classes = config.get("classes")
    return {
        "bits": nested_value(config, "model", "bits"),
        "attended": _attended(config),
        "classes": len(classes) if isinstance(classes, list) and classes else None,
    }


# Every number of the "model" section (core.concepthash.config.ConceptHashConfig), with the bounds a model
# can be built with: a size of 10^12 would ask PyTorch for terabytes instead of being refused.
MODEL_NUMBERS: dict[str, Number] = {
    "model.bits": size(4096),
    "model.n_concepts": size(1024),
    "model.generator_dim": size(65536),
    "model.generator_heads": size(1024),
    "model.adapter_ratio": Number(0, 16, above_low=True),
    "model.center_hidden": count(65536),
    "model.concept_blocks": count(1024),
    "model.concept_depth": count(1024),
    "model.locality_weight": AMOUNT,
    "model.locality_patches": size(65536),
    "model.focus_weight": AMOUNT,
    "model.mix_weight": AMOUNT,
    "model.bit_weight": AMOUNT,
    "model.recolour": SHARE,
    "model.scale": POSITIVE,
    "model.margin": AMOUNT,
    "model.clf_weight": AMOUNT,
    "model.quan_weight": AMOUNT,
    "model.cd_weight": AMOUNT,
    "model.csd_weight": AMOUNT,
}


def _bits_split(config: dict[str, Any]) -> str | None:
    bits, concepts = nested_value(config, "model", "bits"), nested_value(config, "model", "n_concepts")
    if isinstance(bits, int) and isinstance(concepts, int) and concepts > 0 and bits % concepts:
        return f"'model.bits' ({bits}) cannot be split evenly over 'model.n_concepts' ({concepts})"
    return None


def _heads_split(config: dict[str, Any]) -> str | None:
    width, heads = (
        nested_value(config, "model", "generator_dim"),
        nested_value(config, "model", "generator_heads"),
    )
    if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
        return (
            f"'model.generator_dim' ({width}) cannot be split evenly over 'model.generator_heads' ({heads})"
        )
    return None


def _part_phrases(config: dict[str, Any]) -> str | None:
    phrases = nested_value(config, "model", "part_phrases")
    groups = isinstance(phrases, dict) and all(
        isinstance(group, list) and all(isinstance(text, str) for text in group) for group in phrases.values()
    )
    if phrases is not None and not groups:
        return "'model.part_phrases' is not an object of part names and lists of phrases"
    return None


# The cached arrays: the database's codes (±1), class indices and image ids, one row per image, and each
# concept's last-layer attention over the patch grid (float16), so the dashboard draws the database's
# heatmaps without running the model (bundles saved before it have none; the page then computes them).
DB_CODES, DB_LABELS, DB_IDS, DB_ATTENTION = "db_codes", "db_labels", "db_ids", "db_attention"

# The test split's (the queries') codes, image ids and last-layer attention, a table of its own (as many rows
# as test images), so the retrieval page searches with a test image without running the model (bundles saved
# before it have none; the page then encodes the query).
QUERY_CODES, QUERY_IDS, QUERY_ATTENTION = "query_codes", "query_ids", "query_attention"

# Files' fingerprints beside their ids (core.data.stored.prints_key), in bundles made from image files.
DB_PRINTS, QUERY_PRINTS = "db_prints", "query_prints"

# Both tables, checked on every load (core.validate): codes are ±1, class ids name a class of config.json's
# list, attention is finite and has the same patch grid in both tables.
ARRAYS = ArrayLayout(
    {
        DB_CODES: ("rows", "bits"),
        DB_LABELS: ("rows",),
        DB_IDS: ("rows",),
        DB_ATTENTION: ("rows", "attended", "grid_h", "grid_w"),
        DB_PRINTS: ("rows",),
        QUERY_CODES: ("query_rows", "bits"),
        QUERY_IDS: ("query_rows",),
        QUERY_ATTENTION: ("query_rows", "attended", "grid_h", "grid_w"),
        QUERY_PRINTS: ("query_rows",),
    },
    required=(DB_CODES, DB_LABELS),
    sizes=_sizes,
    values={
        DB_CODES: CODES,
        DB_LABELS: ids_below("classes", "class"),
        DB_ATTENTION: FINITE,
        QUERY_CODES: CODES,
        QUERY_ATTENTION: FINITE,
    },
    numbers={**COMMON_NUMBERS, **MODEL_NUMBERS},
    whole_weights=WHOLE_WEIGHTS,
    texts=("classes",),
    relations=(_bits_split, _heads_split, _part_phrases),
)

# The query table alone (its rows are "rows" here).
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

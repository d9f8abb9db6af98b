"""The kinds table (core.kinds): every registered kind loads and evaluates through it, parametrised over
the table the way timm's tests are over its models."""

from __future__ import annotations

import pytest

from core import bundle as bundles
from core.kinds import KINDS, kind_of, load_any

NAMES = {"clip": "toy-clip", "concepthash": "toy-hash-csd", "ceir": "toy-ceir"}


def test_the_table_covers_every_kind_a_bundle_may_have():
    assert set(KINDS) == set(bundles.KINDS) == set(NAMES)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_loads_its_own_bundles_and_refuses_the_others(name, tiny_bundles):
    kind = KINDS[name]
    path = tiny_bundles / NAMES[name]
    assert kind_of(path) is kind
    loaded = load_any(path, device="cpu")
    # the loaded object is what the kind's own loader gives: a backbone for clip, a LoadedBundle otherwise
    assert (
        type(loaded).__name__
        == {"clip": "Backbone", "concepthash": "LoadedConceptHash", "ceir": "LoadedCEIR"}[name]
    )
    for other, other_path in NAMES.items():
        if other != name and name != "clip":  # a clip loader also takes model names, so only check the others
            with pytest.raises(ValueError, match=f"'{other}' bundle"):
                kind.load(tiny_bundles / other_path, device="cpu")


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_evaluates_through_the_table(name, tiny_bundles):
    metrics = KINDS[name].evaluate(tiny_bundles / NAMES[name], device="cpu")
    headline = {"clip": "zero_shot_accuracy", "concepthash": "map", "ceir": "acc"}[name]
    assert 0.0 <= metrics[headline] <= 1.0

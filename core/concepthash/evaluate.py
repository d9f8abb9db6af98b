"""Evaluate a ConceptHash model: retrieval quality and, on ToyBirds, whether its concepts are parts.

Every figure is built so that it can fail: each interpretability claim comes with the value a
correct per-part code would reach and a baseline that a meaningless code reaches.

Retrieval (every data set):

* ``map``: mAP@all by Hamming ranking, database = train split and queries = test split of the
  evaluated data spec (both freshly drawn with ``--seed``), ties broken by database index;
  ``precision_at``: P@1/5/10 of the same ranking.
* ``map_train_database``: the same queries ranked against the bundle's own training database
  (its stored data spec, never reseeded); equal to ``map`` when no seed is given.
* ``flip_invariance``: share of query images whose full binary code is unchanged when the image
  is mirrored left-right before preprocessing.
* ``distinct_centres`` / ``classes_sharing_a_centre``: whether every class has its own sign
  pattern sign(o_c) of the hash centres, and the groups of classes that share one.

ToyBirds only (the queries are a :class:`ToyBirdsSplit`):

* ``localization`` (centre rule) and ``localization_overlap`` (overlap rule): pointing game.
  For each query image and concept, the patch the concept attends to most (last layer, heads
  averaged) is a *hit* for a part when the centre pixel of that patch lies on the part's mask
  (centre rule) or when the part's mask covers any pixel of the patch (overlap rule). Concepts
  are matched one-to-one to the three species parts by Hungarian assignment on the hit-rate
  matrix (the matrix over all four parts is reported too): the best the attention can do, a score,
  not the concepts' names (those come from the part swap, :mod:`core.concepthash.naming`, which reads
  this matrix at the part-swap matching). Per part, ``random`` is the hit rate
  of a uniformly random patch and ``oracle`` the hit rate of the best patch, i.e. the share of
  images in which some patch satisfies the rule at all (the ceiling any concept can reach).
* ``diversity``: mean pairwise cosine between the concepts' attention maps (the L_csd value on
  the query images; lower = concepts look at different places).
* ``subcode_part_nmi``: M x parts matrix of NMI between each sub-code's value (its K/M bits read
  as an integer) and each part's colour: the species parts (head, wing, body) and, as a nuisance
  check, the per-image tail colour.
* ``subcode_part_nmi_family_conditional``: the same NMI computed within each family (images of
  one body colour) and averaged over families weighted by size; a sub-code that only encodes
  the family scores 0 against head and wing here. The body entry is null (see
  :func:`family_conditional_nmi`). Within a family head and wing are far from independent (six
  species use six of the 16 head/wing pairs), so a perfect head code still scores ~0.65 against
  the wing here, against 0.04 in the plain matrix.
* ``part_swap``: parts x concepts matrix, the probability that concept m's sub-code changes when
  only part p's colour is changed (counterfactual render of the same scene). Concepts are
  matched to species parts by Hungarian assignment maximising the flip rate (the one matching that
  names concepts everywhere, with the chance rule of :mod:`core.concepthash.naming`); a per-part code
  gives 1 on the matching and 0 everywhere else; ``largest_off_diagonal`` is the largest
  unmatched cell (its part, concept and flip rate). ``by_counterfactual`` splits the species-part
  rows by what the repaint makes: another ``trained_species`` (16 of the 72 single-part swaps of
  the 24 species) or a ``new_combination`` of part colours that no species has, so never seen in
  training; a species lookup table is part-specific on the first and not on the second. Where the
  hash centres code each concept's part colour (part-phrase or oracle centres),
  ``leaks_name_the_new_colour`` says how often a leak (a sub-code flipped by another part's repaint)
  takes the code of the colour just painted, i.e. the concept read the other part's colour.
* ``capacity_ceiling``: mAP of the per-part oracle code at the model's code length
  (:func:`per_part_capacity_ceiling`): what a perfect per-part code of this size can reach.
* ``centre_part_nmi``: M x species-parts NMI, over the 24 species, between the sign pattern of each
  concept's slice of the hash centres and the species' part colour, with concepts matched to parts
  (Hungarian) and the largest unmatched value. The centres are the targets the sub-codes are trained
  to hit: a part-specific code needs centres whose slice m depends on one part only (the per-part
  oracle: 1 on the matching, 0.04 elsewhere, what the 24 species' part colours share). Centres
  learned from class names need not be so, and where they are not, no image encoder can be
  part-specific without missing its centres.

Out of distribution (every data set; :mod:`core.ood`, the check the dashboard and ``conceptlens encode`` run):

* ``ood_warned_share``: the share of query (test) images the out-of-distribution check flags, its false
  alarms on held-out images of the training distribution (about 1 % by its calibration);
  ``ood_photos`` (ToyBirds): the real sample photos it flags (``n``, ``warned_share``, ``missed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from core.backbones.clip import Backbone
from core.bundle import update_bundle_arrays
from core.concepthash.arrays import (
    DB_ATTENTION,
    DB_CODES,
    DB_IDS,
    DB_LABELS,
    QUERY_ATTENTION,
    QUERY_CODES,
    QUERY_IDS,
)
from core.concepthash.bundle import load_concepthash
from core.concepthash.codes import per_part_codes, sign_codes, subcode_values
from core.concepthash.losses import csd_loss
from core.concepthash.model import ConceptHash
from core.concepthash.naming import match_species_parts
from core.data.spec import DataSpec, ImageSplit, ToyBirdsSplit, open_split
from core.data.stored import prints_key, split_prints
from core.data.toybirds import (
    PART_VALUES,
    PARTS,
    SPECIES,
    SPECIES_PARTS,
    ToyBirdSample,
    patch_coverage,
    render_counterfactual,
)
from core.ood import (
    OOD_REFERENCE,
    OODTest,
    class_prompts,
    even_subsample,
    photo_flags,
    reference_rows,
    usable_reference,
)
from core.progress import PhaseClock, Progress, no_progress
from core.retrieval import mean_average_precision, pack_codes, retrieval_metrics

N_SPECIES_PARTS = len(SPECIES_PARTS)  # the first rows of every parts matrix (PARTS starts with them)
if PARTS[:N_SPECIES_PARTS] != SPECIES_PARTS:
    raise ImportError("ToyBirds PARTS must start with SPECIES_PARTS: the part matrices rely on it.")


# ---- retrieval --------------------------------------------------------------------------------


def per_part_capacity_ceiling(bits: int, n_concepts: int) -> float:
    """mAP@all of the per-part oracle code with the 24 species as both database and queries.

    Labels are species ids, so each query has exactly one relevant item (itself); the mAP is 1
    exactly when every species gets its own code. 6 bits over 3 concepts (2 bits per part) reach
    1; fewer bits per part make species collide and the ceiling drops below 1.
    """
    codes = per_part_codes(bits, n_concepts)
    labels = np.arange(len(SPECIES))
    packed = pack_codes(codes)
    return float(mean_average_precision(labels, labels, packed, packed))


def centre_sharing(centres: np.ndarray) -> list[list[int]]:
    """Groups (two or more class ids) whose hash centres o_c have the same sign pattern."""
    groups: dict[bytes, list[int]] = {}
    for c, pattern in enumerate(sign_codes(centres)):
        groups.setdefault(pattern.tobytes(), []).append(c)
    return [group for group in groups.values() if len(group) > 1]


@torch.no_grad()
def centre_metrics(model: ConceptHash) -> dict[str, Any]:
    """``distinct_centres``: every class has its own sign(o_c); ``classes_sharing_a_centre``: who does not."""
    shared = centre_sharing(model.hash_centres().cpu().numpy())
    return {"distinct_centres": not shared, "classes_sharing_a_centre": shared}


def centre_part_nmi(centres: np.ndarray, n_concepts: int) -> dict[str, Any]:
    """How far the hash centres (one row per ToyBirds species, in species order) factorise by part."""
    values = subcode_values(sign_codes(centres), n_concepts)
    colours = {part: [s.colours[part] for s in SPECIES] for part in SPECIES_PARTS}
    matrix = np.array(
        [
            [normalized_mutual_info_score(colours[part], values[:, m]) for m in range(n_concepts)]
            for part in SPECIES_PARTS
        ]
    )
    parts, concepts, off = match_species_parts(matrix)
    return {
        "parts": list(SPECIES_PARTS),
        "matrix": matrix.round(4).tolist(),
        "matched_mean": float(matrix[parts, concepts].mean()),
        "largest_off_diagonal": off[2] if off is not None else 0.0,
    }


# ---- localisation -----------------------------------------------------------------------------


def centre_rule(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(gh*gw,) bool: the centre pixel of each patch lies on ``mask``."""
    gh, gw = grid
    height, width = mask.shape
    ys = ((np.arange(gh) + 0.5) * height / gh).astype(int)
    xs = ((np.arange(gw) + 0.5) * width / gw).astype(int)
    return mask[np.ix_(ys, xs)].reshape(-1)


def _pixel_spans(n_pixels: int, n_patches: int) -> list[slice]:
    """For each patch along one axis, the pixels that overlap it by a positive length."""
    edges = np.arange(n_patches + 1) * n_pixels / n_patches
    return [slice(int(np.floor(a)), int(np.ceil(b))) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def overlap_rule(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(gh*gw,) bool: ``mask`` covers some pixel of each patch (``patch_coverage > 0``).

    When the grid does not divide the mask into square patches, a pixel counts for every patch
    it overlaps.
    """
    gh, gw = grid
    height, width = mask.shape
    if height % gh == 0 and width % gw == 0 and height // gh == width // gw:
        return (patch_coverage(mask, height // gh) > 0).reshape(-1)
    rows, cols = _pixel_spans(height, gh), _pixel_spans(width, gw)
    return np.array([mask[r, c].any() for r in rows for c in cols])


LOCALISATION_RULES: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "centre": centre_rule,
    "overlap": overlap_rule,
}


def localisation_rates(
    attention: np.ndarray, masks: Iterable[Mapping[str, np.ndarray]], grid: tuple[int, int], rule: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hit rates (M, parts) of the most-attended patch, and per part the random and oracle rates.

    ``attention`` is (N, M, P) concept->patch attention and ``masks`` the N images' part masks.
    Random = mean share of patches that satisfy ``rule`` for the part; oracle = share of images
    where at least one patch does.
    """
    test = LOCALISATION_RULES[rule]
    n, m, _ = attention.shape
    pointed = attention.argmax(axis=-1)  # (N, M)
    hits, random, oracle = np.zeros((m, len(PARTS))), np.zeros(len(PARTS)), np.zeros(len(PARTS))
    for i, image_masks in enumerate(islice(masks, n)):
        ok = np.stack([test(image_masks[part], grid) for part in PARTS])  # (parts, P)
        hits += ok[:, pointed[i]].T
        random += ok.mean(axis=1)
        oracle += ok.any(axis=1)
    return hits / n, random / n, oracle / n


def localisation_summary(
    hit_rate: np.ndarray, random: np.ndarray, oracle: np.ndarray, rule: str
) -> dict[str, Any]:
    """Concepts matched to the species parts by Hungarian assignment (max hit rate), with baselines."""
    rows, cols = linear_sum_assignment(hit_rate[:, :N_SPECIES_PARTS], maximize=True)
    concepts = [
        {
            "concept": int(r),
            "part": PARTS[c],
            "hit_rate": float(hit_rate[r, c]),
            "random": float(random[c]),
            "oracle": float(oracle[c]),
        }
        for r, c in zip(rows, cols, strict=True)
    ]
    return {
        "rule": rule,
        "parts": list(PARTS),
        "concepts": concepts,
        "hit_rates": hit_rate.round(4).tolist(),
        "random_rates": random.round(4).tolist(),
        "oracle_rates": oracle.round(4).tolist(),
        "mean_hit_rate": float(np.mean([c["hit_rate"] for c in concepts])),
        "random_baseline": float(np.mean([c["random"] for c in concepts])),
        "oracle_ceiling": float(np.mean([c["oracle"] for c in concepts])),
    }


def localisation_metrics(
    attention: np.ndarray, masks: Sequence[Mapping[str, np.ndarray]], grid: tuple[int, int], rule: str
) -> dict[str, Any]:
    """The pointing game under ``rule`` ("centre" or "overlap"); see the module notes."""
    return localisation_summary(*localisation_rates(attention, masks, grid, rule), rule)


# ---- sub-code / part information --------------------------------------------------------------


def subcode_part_nmi(values: np.ndarray, labels: Mapping[str, Sequence[str]]) -> list[list[float]]:
    """M x parts NMI between each sub-code value (column of ``values``) and each part's colours."""
    return [
        [float(normalized_mutual_info_score(labels[part], values[:, k])) for part in PARTS]
        for k in range(values.shape[1])
    ]


def family_conditional_nmi(
    values: np.ndarray, labels: Sequence[str], families: Sequence[str]
) -> float | None:
    """NMI(sub-code, part colour) within each family, averaged over families weighted by size.

    A family where the part shows a single colour carries no information about the part and is
    left out. That is always so for the body: a family *is* one body colour, so the body's
    conditional NMI is undefined and reported as None (likewise when every family is left out).
    """
    values, labels, families = np.asarray(values), np.asarray(labels), np.asarray(families)
    total, weight = 0.0, 0
    for family in np.unique(families):
        inside = families == family
        if len(np.unique(labels[inside])) < 2:
            continue
        total += inside.sum() * normalized_mutual_info_score(labels[inside], values[inside])
        weight += int(inside.sum())
    return float(total / weight) if weight else None


def family_conditional_nmi_matrix(
    values: np.ndarray, labels: Mapping[str, Sequence[str]]
) -> list[list[float | None]]:
    """M x parts family-conditional NMI (families = body colours); the body column is None."""
    families = labels["body"]
    return [
        [family_conditional_nmi(values[:, k], labels[part], families) for part in PARTS]
        for k in range(values.shape[1])
    ]


def interpretability_metrics(
    attention: np.ndarray, codes: np.ndarray, split: ToyBirdsSplit, grid: tuple[int, int], n_concepts: int
) -> dict[str, Any]:
    """Localisation (both rules), diversity, sub-code/part NMI and the capacity ceiling on ToyBirds queries.

    ``attention`` is (N, M, P) concept->patch attention of the N query images, ``codes`` their
    (N, K) sign codes.
    """
    masks = [split.sample(i).masks for i in range(len(attention))]
    values = subcode_values(codes, n_concepts)
    labels = {part: split.part_labels(part) for part in PARTS}
    return {
        "localization": localisation_metrics(attention, masks, grid, "centre"),
        "localization_overlap": localisation_metrics(attention, masks, grid, "overlap"),
        "diversity": float(csd_loss(torch.from_numpy(attention))),
        "subcode_part_nmi": {"parts": list(PARTS), "matrix": subcode_part_nmi(values, labels)},
        "subcode_part_nmi_family_conditional": {
            "parts": list(PARTS),
            "matrix": family_conditional_nmi_matrix(values, labels),
        },
        "capacity_ceiling": per_part_capacity_ceiling(codes.shape[1], n_concepts),
    }


# ---- counterfactuals: part swaps and flips ----------------------------------------------------


def swap_colour(index: int, part_index: int, current: str) -> str:
    """The one alternative colour of part ``PARTS[part_index]`` drawn for query image ``index``.

    Drawn uniformly from the part's other values (species parts: ``SPECIES_COLOURS``; the tail:
    the whole palette) by a generator seeded from ``(index, part_index)``.
    """
    options = [c for c in PART_VALUES[PARTS[part_index]] if c != current]
    rng = np.random.default_rng([int(index), int(part_index)])
    return options[int(rng.integers(len(options)))]


def part_swap_flip_rates(original: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """(parts, M): share of images whose sub-code m differs after swapping part p's colour.

    ``original`` is (N, M) sub-code values (or (N, M, bits), compared bit by bit) and
    ``swapped`` the same per part: (parts, N, M[, bits]).
    """
    original, swapped = np.asarray(original), np.asarray(swapped)
    parts, n, m = swapped.shape[:3]
    changed = (swapped != original[None]).reshape(parts, n, m, -1).any(axis=-1)
    return changed.mean(axis=1)


def part_swap_summary(flip_rates: np.ndarray) -> dict[str, Any]:
    """Match concepts to species parts (Hungarian, max flip rate) and find the largest unmatched cell.

    Only the species-part rows take part in the matching; every other cell (the tail row
    included) is off-diagonal.
    """
    parts, concepts, (off_part, off_concept, off_rate) = match_species_parts(flip_rates)
    matched = sorted(
        (
            {"concept": int(m), "part": PARTS[p], "flip_rate": float(flip_rates[p, m])}
            for p, m in zip(parts, concepts, strict=True)
        ),
        key=lambda entry: entry["concept"],
    )
    rates = [entry["flip_rate"] for entry in matched]
    return {
        "matched": matched,
        "matched_flip_rate_mean": float(np.mean(rates)),
        "matched_flip_rate_min": float(np.min(rates)),
        "largest_off_diagonal": {"part": PARTS[off_part], "concept": off_concept, "flip_rate": off_rate},
    }


def part_swap_metrics(
    original: np.ndarray, swapped: np.ndarray, new_combination: np.ndarray | None = None
) -> dict[str, Any]:
    """The part-swap matrix (parts x concepts flip rates) and its summary; inputs as for the rates.

    With ``new_combination`` (parts, N), True where the repainted bird's species parts match no
    species of the table, the species-part rows are also split into swaps that give another
    trained species and swaps that give a combination never seen in training
    (``by_counterfactual``): a code can be part-specific on the first and not on the second.
    """
    rates = part_swap_flip_rates(original, swapped)
    result = {"parts": list(PARTS), "matrix": rates.round(4).tolist(), **part_swap_summary(rates)}
    if new_combination is not None:
        result["by_counterfactual"] = {
            name: _species_part_swap(original, swapped, np.asarray(new_combination) == novel)
            for name, novel in (("trained_species", False), ("new_combination", True))
        }
    return result


def _species_part_swap(original: np.ndarray, swapped: np.ndarray, chosen: np.ndarray) -> dict[str, Any]:
    """Part-swap matrix and summary over the species parts, each row from its ``chosen`` images only
    (no matrix when a part has none)."""
    counts = [int(chosen[p].sum()) for p in range(N_SPECIES_PARTS)]
    result: dict[str, Any] = {"parts": list(SPECIES_PARTS), "pairs": counts, "matrix": None}
    if not all(counts):
        return result
    rates = np.array(
        [
            part_swap_flip_rates(original[chosen[p]], swapped[p : p + 1, chosen[p]])[0]
            for p in range(N_SPECIES_PARTS)
        ]
    )
    return result | {"matrix": rates.round(4).tolist(), **part_swap_summary(rates)}


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def encode_images(
    model: ConceptHash,
    backbone: Backbone,
    images: Iterable[Image.Image],
    batch_size: int = 128,
    encoded: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(N, K) sign codes of PIL images, preprocessed and encoded ``batch_size`` at a time.

    Uses the same forward pass as the query codes (:func:`encode_with_attention`), so a code
    differs from a query's only because the image does. ``encoded(n)`` hears the number of images encoded
    so far after each batch (the images may be a generator: the total is the caller's to know).
    """
    codes, done = [], 0
    for batch in _batches(images, batch_size):
        codes.append(encode_with_attention(model, backbone.preprocess_images(batch), batch_size)[0])
        done += len(batch)
        if encoded is not None:
            encoded(done)
    return np.concatenate(codes) if codes else np.zeros((0, model.config.bits), dtype=np.int8)


def counterfactual_samples(split: ToyBirdsSplit, part_index: int) -> Iterator[ToyBirdSample]:
    """Every query image redrawn with part ``PARTS[part_index]`` in its :func:`swap_colour` colour."""
    part = PARTS[part_index]
    for i in range(len(split)):
        value = swap_colour(i, part_index, split.sample(i).traits[part]["colour"])
        yield render_counterfactual(split.split, i, part, value, split.seed, split.image_size)


def part_swap(
    model: ConceptHash,
    backbone: Backbone,
    split: ToyBirdsSplit,
    query_codes: np.ndarray,
    centres: np.ndarray | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Part-swap matrix of the model: 4 x N counterfactual renders, compared to the query codes; with the
    hash ``centres`` (species order) also ``leaks_name_the_new_colour``. ``progress`` counts the renders
    encoded."""
    n, m = len(query_codes), model.n_concepts
    codes, new_combination, new_colours = [], [], []
    for p in range(len(PARTS)):
        samples = list(counterfactual_samples(split, p))
        report = _counted(progress, p * n, len(PARTS) * n)
        codes.append(encode_images(model, backbone, (sample.image for sample in samples), encoded=report))
        new_combination.append([sample.species is None for sample in samples])
        new_colours.append([sample.traits[PARTS[p]]["colour"] for sample in samples])
    stacked = np.stack(codes)
    swapped = stacked.reshape(len(PARTS), n, m, -1)
    result = part_swap_metrics(query_codes.reshape(n, m, -1), swapped, np.array(new_combination))
    if centres is not None:
        result["leaks_name_the_new_colour"] = leaks_name_the_new_colour(
            query_codes, stacked, new_colours[:N_SPECIES_PARTS], centres, m
        )
    return result


def colour_codes(centres: np.ndarray, n_concepts: int) -> dict[int, tuple[str, dict[str, int]]]:
    """For each concept whose slice of the species centres is a function of one species part's colour (as
    with part-phrase or oracle centres): that part and the sub-code value of each colour."""
    values = subcode_values(sign_codes(centres), n_concepts)
    found: dict[int, tuple[str, dict[str, int]]] = {}
    for m in range(n_concepts):
        for part in SPECIES_PARTS:
            table: dict[str, set[int]] = {}
            for species, value in zip(SPECIES, values[:, m], strict=True):
                table.setdefault(species.colours[part], set()).add(int(value))
            codes = {colour: next(iter(v)) for colour, v in table.items() if len(v) == 1}
            if len(codes) == len(table) and len(set(codes.values())) == len(codes):
                found[m] = (part, codes)
                break
    return found


def leaks_name_the_new_colour(
    original: np.ndarray,
    swapped: np.ndarray,
    new_colours: Sequence[Sequence[str]],
    centres: np.ndarray,
    n_concepts: int,
) -> dict[str, Any] | None:
    """When repainting one species part flips the sub-code of a concept that codes *another* part's colour,
    how often the new sub-code is the code of the colour just painted: the concept reads the repainted
    part's colour instead of its own part's. 1 means every leak is that confusion; a flip to one of the
    other values at random gives about 1/3 (None where nothing leaked: bundles store strict JSON). None when
    no concept's centres code a part's colour.

    ``original`` (N, K) and ``swapped`` (parts, N, K) are ±1 codes, ``new_colours[p][i]`` the colour image
    i got in the repaint of species part p, ``centres`` the hash centres in species order.
    """
    codes = colour_codes(centres, n_concepts)
    if not codes:
        return None
    before = subcode_values(np.asarray(original), n_concepts)
    pairs: dict[str, dict[str, float]] = {}
    named_total = flips_total = 0
    for p, painted in enumerate(SPECIES_PARTS):
        after = subcode_values(np.asarray(swapped[p]), n_concepts)
        for m, (own, table) in codes.items():
            if own == painted:
                continue
            flipped = before[:, m] != after[:, m]
            painted_code = np.array([table.get(colour, -1) for colour in new_colours[p]])
            named = int((flipped & (after[:, m] == painted_code)).sum())
            pairs[f"{painted} -> concept {m} ({own})"] = {
                "flips": int(flipped.sum()),
                "named_new_colour": named / flipped.sum() if flipped.any() else None,
            }
            named_total, flips_total = named_total + named, flips_total + int(flipped.sum())
    return {
        "flips": flips_total,
        "named_new_colour": named_total / flips_total if flips_total else None,
        "by_pair": pairs,
    }


def _counted(progress: Progress, before: int, total: int) -> Callable[[int], None]:
    """``encoded(n)`` for one part of a longer count: ``progress(before + n, total)``."""
    return lambda done: progress(before + done, total)


def flip_invariance(
    model: ConceptHash,
    backbone: Backbone,
    split: ImageSplit,
    query_codes: np.ndarray,
    progress: Progress = no_progress,
) -> float:
    """Share of query images whose full code is unchanged when the image is mirrored left-right."""
    mirrored = (ImageOps.mirror(split.image(i)) for i in range(len(split)))
    codes = encode_images(model, backbone, mirrored, encoded=_counted(progress, 0, len(split)))
    return float(np.mean((codes == query_codes).all(axis=1)))


# ---- the whole evaluation ---------------------------------------------------------------------


@torch.no_grad()
def encode_with_attention(
    model: ConceptHash, pixels: torch.Tensor, batch_size: int = 128, progress: Progress = no_progress
) -> tuple[np.ndarray, np.ndarray]:
    """Binary codes (N, K) and last-layer concept->patch attention (N, M, P); ``progress`` counts images."""
    model.eval()
    codes, attention = [], []
    for start in range(0, len(pixels), batch_size):
        out = model(pixels[start : start + batch_size].to(model.backbone.device), attention_layers="last")
        codes.append(sign_codes(out.u.cpu()))
        attention.append(out.concept_attention.cpu().numpy())
        progress(min(start + batch_size, len(pixels)), len(pixels))
    return np.concatenate(codes), np.concatenate(attention)


@torch.no_grad()
def encode_codes(
    model: ConceptHash, pixels: torch.Tensor, batch_size: int = 128, progress: Progress = no_progress
) -> np.ndarray:
    """Binary codes (N, K) by :meth:`ConceptHash.encode`, ``batch_size`` images at a time (its own batch size,
    so the same numbers), with ``progress`` counting images."""
    model.eval()
    codes = []
    for start in range(0, len(pixels), batch_size):
        codes.append(sign_codes(model.encode(pixels[start : start + batch_size], batch_size)))
        progress(min(start + batch_size, len(pixels)), len(pixels))
    return np.concatenate(codes) if codes else np.zeros((0, model.config.bits), dtype=np.int8)


def train_database_map(
    model: ConceptHash,
    backbone: Backbone,
    train_database: ImageSplit,
    queries: ImageSplit,
    query_codes: np.ndarray,
) -> float:
    """mAP@all of the queries ranked against ``train_database`` (encoded here)."""
    db_packed = pack_codes(sign_codes(model.encode(backbone.preprocess_split(train_database))))
    query_packed = pack_codes(query_codes)
    return float(mean_average_precision(queries.labels, train_database.labels, query_packed, db_packed))


EVALUATION_PHASES = (  # what evaluate_model names, in order (the last only on ToyBirds)
    "evaluation: database",
    "evaluation: queries",
    "evaluation: flip invariance",
    "evaluation: part swaps",
)


def evaluate_model(
    model: ConceptHash,
    backbone: Backbone,
    database: ImageSplit,
    queries: ImageSplit,
    train_database: ImageSplit | None = None,
    clock: PhaseClock | None = None,
    ood_reference: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All metrics, and the arrays a bundle caches for the dashboard (the database's codes, labels, ids and
    attention; the queries' codes, ids and attention; the out-of-distribution check's reference rows).

    ``train_database`` is the model's own training database when it differs from ``database``
    (a reseeded evaluation); None means ``database`` is it, so ``map_train_database`` = ``map``.
    ``ood_reference``: the training images' backbone embeddings the out-of-distribution check compares with
    (:mod:`core.ood`); None: the database's, which are the training images when ``train_database`` is None.
    ``clock`` names and times the phases (:data:`EVALUATION_PHASES`) and carries the progress callback;
    without one the evaluation is silent.
    """
    clock = clock or PhaseClock()
    message = f"Evaluating: encoding the {len(database)} database images (codes, then attention) ..."
    with clock.phase("evaluation: database", message) as progress:
        db_pixels = backbone.preprocess_split(database, progress=progress)
        n = len(database)
        db_codes = encode_codes(model, db_pixels, progress=lambda done, _: progress(done, 2 * n))
        _, db_attention = encode_with_attention(
            model, db_pixels, progress=lambda done, _: progress(n + done, 2 * n)
        )
        if ood_reference is None:
            ood_reference = even_subsample(backbone.encode_images(db_pixels).cpu().numpy())
        del db_pixels
    message = f"Evaluating: encoding the {len(queries)} queries and ranking the database ..."
    with clock.phase("evaluation: queries", message) as progress:
        query_pixels = backbone.preprocess_split(queries, progress=progress)
        query_codes, attention = encode_with_attention(model, query_pixels, progress=progress)
        metrics = retrieval_metrics(db_codes, database.labels, query_codes, queries.labels)
        metrics["map_train_database"] = (
            metrics["map"]
            if train_database is None
            else train_database_map(model, backbone, train_database, queries, query_codes)
        )
        ood = OODTest.calibrate(ood_reference, class_prompts(backbone, model.class_names))
        metrics["ood_warned_share"] = float(np.mean(ood.flags(backbone.encode_images(query_pixels))))
        if isinstance(queries, ToyBirdsSplit):  # a real photo is unlike any drawn bird: flag every one
            metrics["ood_photos"] = photo_flags(ood, backbone)
    metrics["n_database"], metrics["n_queries"] = len(database), len(queries)
    message = "Evaluating: flip invariance (every query mirrored) ..."
    with clock.phase("evaluation: flip invariance", message) as progress:
        metrics["flip_invariance"] = flip_invariance(model, backbone, queries, query_codes, progress)
    metrics |= centre_metrics(model)
    if isinstance(queries, ToyBirdsSplit):
        message = f"Evaluating: part swaps ({len(PARTS)} x {len(queries)} counterfactual renders) ..."
        with clock.phase("evaluation: part swaps", message) as progress:
            grid, m = backbone.grid_size, model.n_concepts
            metrics |= interpretability_metrics(attention, query_codes, queries, grid, m)
            centres = None
            if model.class_names == [species.name for species in SPECIES]:  # centres in species order
                with torch.no_grad():
                    centres = model.hash_centres().cpu().numpy()
                metrics["centre_part_nmi"] = centre_part_nmi(centres, m)
            metrics["part_swap"] = part_swap(model, backbone, queries, query_codes, centres, progress)
    arrays = {
        DB_CODES: db_codes,
        DB_LABELS: database.labels.astype(np.int64),
        DB_IDS: np.array([database.image_id(i) for i in range(len(database))]),
        DB_ATTENTION: attention_grid(db_attention, backbone.grid_size),
        **query_arrays(queries, query_codes, attention, backbone.grid_size),
        OOD_REFERENCE: ood_reference,
    }
    for key, split in ((DB_IDS, database), (QUERY_IDS, queries)):  # a file edited in place is then noticed
        prints = split_prints(split)
        if prints is not None:
            arrays[prints_key(key)] = prints
    return metrics, arrays


def attention_grid(attention: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Last-layer attention (N, M, P) as a bundle stores it: over the patch grid (N, M, gh, gw), float16."""
    return attention.reshape(*attention.shape[:2], *grid).astype(np.float16)


def query_arrays(
    queries: ImageSplit, codes: np.ndarray, attention: np.ndarray, grid: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The queries' codes (N, K), image ids and last-layer attention (N, M, P) as a bundle stores them."""
    return {
        QUERY_CODES: codes,
        QUERY_IDS: np.array([queries.image_id(i) for i in range(len(queries))]),
        QUERY_ATTENTION: attention_grid(attention, grid),
    }


def add_view_arrays(path: str, device: str = "auto") -> None:
    """Store what the dashboard draws from without running the model — the database's attention, the test
    split's codes, ids and attention — in a bundle saved before bundles held them (nothing else changes)."""
    loaded = load_concepthash(path, device=device)
    model, backbone, grid = loaded.model, loaded.backbone, loaded.backbone.grid_size
    database, queries = open_split(loaded.data, "train"), open_split(loaded.data, "test")
    _, db_attention = encode_with_attention(model, backbone.preprocess_split(database))
    codes, attention = encode_with_attention(model, backbone.preprocess_split(queries))
    arrays = query_arrays(queries, codes, attention, grid)
    update_bundle_arrays(path, arrays | {DB_ATTENTION: attention_grid(db_attention, grid)})


def evaluate_bundle(
    path: str,
    seed: int | None = None,
    device: str = "auto",
    progress: Progress = no_progress,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``conceptlens eval`` for ConceptHash: metrics on the bundle's data (fresh ToyBirds with ``seed``).

    With ``seed`` the train and test splits are drawn afresh; ``map_train_database`` then ranks the
    fresh queries against the bundle's own (stored, not reseeded) training split. ``progress`` and ``log``
    hear each phase of :func:`evaluate_model`. The out-of-distribution check compares with the reference the
    bundle stores, else with its own training split (what ``conceptlens eval --store`` then stores).
    """
    loaded = load_concepthash(path, device=device)
    data: DataSpec = loaded.data if seed is None else loaded.data.with_seed(seed)
    own_train = None if seed is None else open_split(loaded.data, "train")
    reference = usable_reference(loaded)
    if reference is None and own_train is not None:
        reference = reference_rows(loaded.backbone, own_train)
    metrics, _ = evaluate_model(
        loaded.model,
        loaded.backbone,
        open_split(data, "train"),
        open_split(data, "test"),
        train_database=own_train,
        clock=PhaseClock(progress, log),
        ood_reference=reference,
    )
    return {"kind": "concepthash", "bundle": str(loaded.path), "data": data.to_dict(), **metrics}

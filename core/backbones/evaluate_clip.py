"""What ``conceptlens eval`` says about a ToyBirds CLIP: zero-shot species and part-colour accuracy, whether
the text tower tells parts apart, and a linear probe (also the report a freshly trained bundle stores)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core.backbones.clip import Backbone, load_backbone
from core.bundle import load_bundle
from core.data import toybirds
from core.data.spec import DataSpec, ImageSplit, ToyBirdsSplit, open_split
from core.progress import Progress, no_progress
from core.runtime import resolve_device

KIND = "clip"
ZERO_SHOT_TEMPLATE = "a photo of a {}."


@torch.no_grad()
def zero_shot_accuracy(
    backbone: Backbone,
    split: ImageSplit,
    images: torch.Tensor,
    template: str = ZERO_SHOT_TEMPLATE,
) -> float:
    """Top-1 accuracy of classifying ``split`` (its normalised image embeddings ``images``) by the
    prompts ``template.format(class name)``."""
    texts = backbone.encode_texts([template.format(name) for name in split.classes])
    predicted = (images @ texts.t()).argmax(dim=1).cpu().numpy()
    return float((predicted == split.labels).mean())


@torch.no_grad()
def part_value_accuracy(backbone: Backbone, split: ToyBirdsSplit, images: torch.Tensor) -> dict[str, float]:
    """Per part, zero-shot accuracy of naming its colour with ``a photo of a bird with a {value} {part}.``

    Species parts are scored on every image; the nuisance tail on images where it is visible.
    """
    scores = {}
    for part in toybirds.PARTS:
        values = toybirds.PART_VALUES[part]
        texts = backbone.encode_texts([toybirds.part_value_prompt(part, v) for v in values])
        predicted = (images @ texts.t()).argmax(dim=1).cpu().numpy()
        truth, keep = [], []
        for i in range(len(split)):
            sample = split.sample(i)
            truth.append(values.index(sample.traits[part]["colour"]))
            keep.append(part in toybirds.SPECIES_PARTS or sample.visible[part])
        keep_mask = np.array(keep)
        scores[part] = float((predicted[keep_mask] == np.array(truth)[keep_mask]).mean())
    return scores


@torch.no_grad()
def part_text_cosines(backbone: Backbone) -> dict[str, Any]:
    """Cosine between the texts of the same colour on different parts, and of other colours on one part.

    ``matrix[a][b]`` is the mean over the species colours v of cos(prompt(a, v), prompt(b, v)); a
    text tower that ignores the part word gives ~1 off the diagonal.  ``same_value_other_part``
    is the mean off-diagonal entry; ``same_part_other_value`` the mean cosine between two
    colours on one part (for scale).
    """
    parts, colours = toybirds.PARTS, toybirds.SPECIES_COLOURS
    texts = backbone.encode_texts([toybirds.part_value_prompt(p, v) for p in parts for v in colours])
    emb = texts.reshape(len(parts), len(colours), -1)
    matrix = torch.einsum("avd,bvd->abv", emb, emb).mean(dim=-1)
    off = ~torch.eye(len(parts), dtype=torch.bool)
    within = torch.einsum("avd,awd->avw", emb, emb)
    other_value = ~torch.eye(len(colours), dtype=torch.bool)
    return {
        "parts": list(parts),
        "matrix": [[round(float(x), 4) for x in row] for row in matrix],
        "same_value_other_part": float(matrix[off].mean()),
        "same_part_other_value": float(within[:, other_value].mean()),
    }


def linear_probe_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray
) -> float:
    """Accuracy of a logistic-regression probe fit on the train features, scored on the test ones."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=10.0, max_iter=2000)
    probe.fit(train_features, train_labels)
    return float((probe.predict(test_features) == test_labels).mean())


def clip_report(backbone: Backbone, data: DataSpec, progress: Progress = no_progress) -> dict[str, Any]:
    """Everything ``conceptlens eval`` says about a ToyBirds CLIP, on the splits of ``data``."""
    test_split = open_split(data, "test")
    train_split = open_split(data, "train")
    test_images = backbone.encode_images(backbone.preprocess_split(test_split))
    train_images = backbone.encode_images(backbone.preprocess_split(train_split, progress=progress))
    return {
        "zero_shot_accuracy": zero_shot_accuracy(backbone, test_split, test_images),
        "zero_shot_template": ZERO_SHOT_TEMPLATE,
        "part_value_accuracy": part_value_accuracy(backbone, test_split, test_images),
        "part_value_template": toybirds.part_value_prompt("{part}", "{value}"),
        "text_cosine": part_text_cosines(backbone),
        "linear_probe_accuracy": linear_probe_accuracy(
            train_images.cpu().numpy(), train_split.labels, test_images.cpu().numpy(), test_split.labels
        ),
        "n_train": len(train_split),
        "n_test": len(test_split),
    }


def evaluate_clip_bundle(
    path: str, seed: int | None = None, device: str = "auto", progress: Any = None, log: Any = None
) -> dict[str, Any]:
    """``conceptlens eval`` for a CLIP bundle: the :func:`clip_report` on its test split (or ``seed``). A
    ToyBirds CLIP's report takes seconds: ``progress`` and ``log`` are accepted like every evaluator's and
    only ``log`` is told what runs."""
    if log is not None:
        log("Evaluating the CLIP bundle (zero-shot, part values, text cosines, linear probe) ...")
    from core.backbones.layout import CLIP_LAYOUT

    bundle = load_bundle(path, kind=KIND, load_arrays=False, layout=CLIP_LAYOUT)
    data = DataSpec.from_dict(bundle.section("data"))
    if seed is not None:
        data = data.with_seed(seed)
    backbone = load_backbone(str(bundle.path), device=resolve_device(device))
    return {"kind": KIND, "bundle": str(bundle.path), "data": data.to_dict(), **clip_report(backbone, data)}

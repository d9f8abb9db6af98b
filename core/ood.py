"""One out-of-distribution check for every kind of bundle: does an image look like the training images?

A bundle stores ``ood_reference``: its backbone's image embeddings (L2-normalised) of its training images, an
even subsample of at most ``OOD_REFERENCE_ROWS``. ConceptHash and CEIR training write it; a bundle saved
before it gets it from ``conceptlens eval BUNDLE --store`` (:func:`add_ood_reference`), weights untouched.
Both kinds embed with the same frozen backbone the model runs on, so the check does not depend on what the
model learned, and one rule serves both.

An image is flagged by either of two tests, each calibrated on the reference rows so that
``OOD_PERCENTILE`` % of the training images pass it (a 1 % false-alarm rate on training images by
construction; ``conceptlens eval`` reports the rate on the held-out test split as ``ood_warned_share``):

* far: its mean distance to its ``OOD_NEIGHBOURS`` nearest reference rows exceeds the radius that
  ``OOD_PERCENTILE`` % of the reference rows stay within of their own nearest others (leave-one-out);
* unmatched (bundles that name their classes, with a text tower in the image embedding space): its best
  cosine to a class prompt ("a photo of a {class}.") is below what ``OOD_PERCENTILE`` % of the reference rows
  reach (the maximum-concept-matching idea of zero-shot out-of-distribution detection, Ming et al. 2022).
  A red motorcycle sits among the red ToyBirds by distance, yet matches no species.

The CEIR open-world labels (``core.ceir.labels.ood_flags``) apply the same two tests to the same stored rows,
and fall back to concept space for CEIR bundles older than the stored reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from core.progress import Progress, no_progress

if TYPE_CHECKING:  # PyTorch is imported where the check runs: the dashboard reads the names below without it
    import torch

OOD_REFERENCE = "ood_reference"  # the array name, the same in every kind's bundle
OOD_PERCENTILE = 99.0
OOD_NEIGHBOURS = 5
OOD_REFERENCE_ROWS = 2000  # training images the distance is measured against (an even subsample beyond this)
CLASS_PROMPT = "a photo of a {}."  # how the class-match test asks the text tower for a class
OOD_ARRAY = "ood"  # a code store's per-image flag (uint8, 1: flagged), written by ``conceptlens encode``
OOD_KINDS = ("concepthash", "ceir")  # the kinds that take images from a user and store a reference

# What a flagged image is told, and a bundle without the reference (``unavailable``).
LOOKS_UNLIKE = "looks unlike the images this model was trained on"


def ood_caveat(name: str, consequence: str, models: str | None = None) -> str:
    """One sentence for a flagged image: ``name`` looks unlike the training images (of ``models``, when
    naming them helps), then ``consequence``."""
    unlike = LOOKS_UNLIKE if models is None else f"looks unlike the training images of {models}"
    return f"'{name}' {unlike} (out-of-distribution check); {consequence}."


def unavailable(bundle: str | Path) -> str:
    """Why a bundle cannot say whether an image is out of distribution, and how to add what it lacks."""
    return (
        f"The out-of-distribution check is unavailable for {Path(bundle).name}: it stores no reference "
        f"embeddings of its training images; add them with `conceptlens eval {bundle} --store`."
    )


def even_subsample(rows: np.ndarray, limit: int = OOD_REFERENCE_ROWS) -> np.ndarray:
    """All of ``rows`` (float32), or ``limit`` of them evenly spaced (deterministic)."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows[np.linspace(0, len(rows) - 1, limit).astype(int)] if len(rows) > limit else rows


def neighbour_distance(
    vectors: torch.Tensor, reference: torch.Tensor, k: int = OOD_NEIGHBOURS, exclude_self: bool = False
) -> np.ndarray:
    """(N,) mean Euclidean distance from each row of ``vectors`` to its ``k`` nearest ``reference`` rows
    (``exclude_self``: ``vectors`` is ``reference`` and a row is not its own neighbour)."""
    import torch

    with torch.no_grad():
        distances = torch.cdist(vectors.float(), reference.float())
        if exclude_self:
            distances.fill_diagonal_(float("inf"))
        k = min(k, distances.shape[1] - int(exclude_self))
        return distances.topk(k, dim=1, largest=False).values.mean(dim=1).numpy()


def class_match(embeddings: torch.Tensor, class_text: torch.Tensor) -> np.ndarray:
    """(N,) each image's best cosine to a class prompt: how well it matches any class the model knows."""
    import torch

    with torch.no_grad():
        return (embeddings.float() @ class_text.float().t()).max(dim=1).values.numpy()


@dataclass(frozen=True)
class OODTest:
    """The reference rows, the neighbour distance ``radius`` that ``OOD_PERCENTILE`` % of them stay within,
    and, where the bundle names its classes, the class prompts' embeddings and the best class match
    (``class_floor``) that as many reference rows reach."""

    rows: torch.Tensor
    radius: float
    class_text: torch.Tensor | None = None
    class_floor: float = float("-inf")

    @classmethod
    def calibrate(cls, reference: np.ndarray, class_text: torch.Tensor | None = None) -> OODTest:
        """Both thresholds from the reference rows (at least two), the rule of this module's docstring."""
        import torch

        rows = torch.from_numpy(even_subsample(reference))
        if class_text is not None and class_text.shape[1] != rows.shape[1]:
            class_text = None  # a text tower that does not share the image embedding space
        distances = neighbour_distance(rows, rows, exclude_self=True)
        radius = float(np.percentile(distances, OOD_PERCENTILE))
        floor = (
            float("-inf")
            if class_text is None
            else float(np.percentile(class_match(rows, class_text), 100 - OOD_PERCENTILE))
        )
        return cls(rows, radius, class_text, floor)

    def flags(self, embeddings: torch.Tensor) -> np.ndarray:
        """(N,) bool: which images fail either test."""
        embeddings = embeddings.detach().cpu().float()
        flags = neighbour_distance(embeddings, self.rows) > self.radius
        if self.class_text is not None:
            flags |= class_match(embeddings, self.class_text) < self.class_floor
        return flags


def class_prompts(backbone: Any, classes: Sequence[str]) -> torch.Tensor | None:
    """(C, D) unit embeddings of ``CLASS_PROMPT`` for every class, or None without classes or a text tower."""
    import torch

    if not classes or not hasattr(backbone, "encode_texts"):
        return None
    text = backbone.encode_texts([CLASS_PROMPT.format(name) for name in classes]).cpu().float()
    return torch.nn.functional.normalize(text, dim=-1)


def usable_reference(loaded: Any) -> np.ndarray | None:
    """The bundle's stored reference rows when they fit its backbone (2-D, as wide as its image embeddings,
    at least two rows, finite), else None."""
    reference = getattr(loaded, "arrays", {}).get(OOD_REFERENCE)
    width = getattr(getattr(loaded, "backbone", None), "embed_dim", None)
    if reference is None or reference.ndim != 2 or len(reference) < 2 or reference.shape[1] != width:
        return None
    return reference if np.isfinite(reference).all() else None


def ood_test(loaded: Any) -> OODTest | None:
    """The check of a loaded bundle (any kind with a backbone and cached arrays), calibrated on first use and
    kept on the loaded bundle; None when the bundle stores no usable reference (say :func:`unavailable`)."""
    if "_ood_test" not in vars(loaded):
        reference = usable_reference(loaded)
        classes = list((getattr(loaded, "config", None) or {}).get("classes") or [])
        found = None
        if reference is not None:
            found = OODTest.calibrate(reference, class_prompts(loaded.backbone, classes))
        vars(loaded)["_ood_test"] = found
    return vars(loaded)["_ood_test"]


def embed_images(backbone: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """(N, D) the backbone's L2-normalised image embeddings of PIL images (its own preprocessing), on CPU."""
    return backbone.encode_images(backbone.preprocess_images(list(images))).cpu()


def ood_flags(loaded: Any, images: Sequence[Image.Image]) -> list[bool] | None:
    """Per image: whether the check flags it; None when the bundle cannot tell (no stored reference)."""
    test = ood_test(loaded)
    if test is None:
        return None
    if not images:
        return []
    return test.flags(embed_images(loaded.backbone, images)).tolist()


def reference_rows(backbone: Any, split: Any, progress: Progress = no_progress) -> np.ndarray:
    """What a bundle stores as ``ood_reference``: the backbone's embeddings of a split's images (its
    training split), an even subsample of at most ``OOD_REFERENCE_ROWS``."""
    pixels = backbone.preprocess_split(split, progress=progress)
    return even_subsample(backbone.encode_images(pixels).cpu().numpy())


def photo_flags(test: OODTest, backbone: Any) -> dict[str, Any]:
    """The check on the real photos that ship inside installed packages (``core.data.samples``): how many
    there are, the share flagged, and the names of any it let through."""
    from core.data.samples import sample_photos

    photos = sample_photos()
    if not photos:
        return {"n": 0, "warned_share": None, "missed": []}
    flags = test.flags(embed_images(backbone, list(photos.values())))
    missed = [name for name, flagged in zip(photos, flags, strict=True) if not flagged]
    return {"n": len(photos), "warned_share": float(np.mean(flags)), "missed": missed}


def add_ood_reference(path: str | Path, device: str = "auto", progress: Progress = no_progress) -> bool:
    """Store ``ood_reference`` in a bundle saved before bundles held it, from its own training split (every
    other array, the weights and the metrics stay as they are). False when the bundle already holds a usable
    one or its kind takes no images (nothing written)."""
    from core.bundle import update_bundle_arrays
    from core.data.spec import open_split
    from core.kinds import kind_of, load_any

    if kind_of(path).name not in OOD_KINDS:
        return False
    loaded = load_any(path, device=device)
    if usable_reference(loaded) is not None:
        return False
    rows = reference_rows(loaded.backbone, open_split(loaded.data, "train"), progress)
    update_bundle_arrays(path, {OOD_REFERENCE: rows})
    return True


def store_ood_lines(root: str | Path) -> list[str]:
    """What ``conceptlens encode`` says about a store's images: one line per flagged file, then a count; or
    why the store records no check (its bundle stores no reference, or the store predates the check)."""
    from core.retrieval.store import CodeStore

    store = CodeStore(root)
    bundle = store.manifest.get("bundle", "the bundle")
    if OOD_ARRAY not in store.manifest["arrays"]:
        if store.manifest.get("ood_check") is False:
            return [unavailable(bundle)]
        return [
            f"The store {root} was encoded before the out-of-distribution check; encode it again to run it."
        ]
    flags = np.concatenate(
        [np.asarray(part).reshape(-1) for part in store.arrays(OOD_ARRAY)] or [np.zeros(0)]
    )
    flagged = [name for name, flag in zip(store.ids, flags, strict=True) if flag]
    lines = [f"out of distribution: {name} {LOOKS_UNLIKE}" for name in flagged]
    lines.append(
        f"The out-of-distribution check flagged {len(flagged)} of {len(flags)} encoded images (farther from "
        f"the training images, or matching their classes less, than {OOD_PERCENTILE:g} % of those)"
        + ("; their encodings and neighbours are unreliable." if flagged else ".")
    )
    return lines

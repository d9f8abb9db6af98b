"""What a ``clip`` bundle must hold, checked on load (free of PyTorch): the architecture it is built from.

A clip bundle has no cached arrays; its ``backbone.model_cfg`` becomes open_clip's ``CLIP(**model_cfg)``,
so every size there is bounded (a width of 10^12 is refused in a sentence, not by the allocator) and the
widths must split over their heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.validate import (
    COMMON_NUMBERS,
    POSITIVE,
    SHARE,
    WHOLE_WEIGHTS,
    ArrayLayout,
    Number,
    nested_value,
    size,
)

MODEL = "backbone.model_cfg"
CLIP_NUMBERS: dict[str, Number] = {
    f"{MODEL}.embed_dim": size(65536),
    f"{MODEL}.vision_cfg.image_size": size(4096),
    f"{MODEL}.vision_cfg.layers": size(1024),
    f"{MODEL}.vision_cfg.width": size(65536),
    f"{MODEL}.vision_cfg.head_width": size(65536),
    f"{MODEL}.vision_cfg.patch_size": size(4096),
    f"{MODEL}.vision_cfg.mlp_ratio": Number(0, 64, above_low=True),
    f"{MODEL}.text_cfg.context_length": size(4096),
    f"{MODEL}.text_cfg.vocab_size": size(10**7),
    f"{MODEL}.text_cfg.width": size(65536),
    f"{MODEL}.text_cfg.heads": size(1024),
    f"{MODEL}.text_cfg.layers": size(1024),
    f"{MODEL}.text_cfg.mlp_ratio": Number(0, 64, above_low=True),
    "backbone.preprocess_cfg.mean[]": SHARE,
    "backbone.preprocess_cfg.std[]": POSITIVE,
}


def _multiple(config: dict[str, Any], tower: str, width_key: str, part_key: str) -> str | None:
    width = nested_value(config, "backbone", "model_cfg", tower, width_key)
    part = nested_value(config, "backbone", "model_cfg", tower, part_key)
    if isinstance(width, int) and isinstance(part, int) and part > 0 and width % part:
        return (
            f"'{MODEL}.{tower}.{width_key}' ({width}) is not a multiple of "
            f"'{MODEL}.{tower}.{part_key}' ({part}), so the width cannot be split over the attention heads"
        )
    return None


def _vision_heads(config: dict[str, Any]) -> str | None:
    return _multiple(config, "vision_cfg", "width", "head_width")


def _text_heads(config: dict[str, Any]) -> str | None:
    return _multiple(config, "text_cfg", "width", "heads")


def _patches(config: dict[str, Any]) -> str | None:
    side = nested_value(config, "backbone", "model_cfg", "vision_cfg", "image_size")
    patch = nested_value(config, "backbone", "model_cfg", "vision_cfg", "patch_size")
    if isinstance(side, int) and isinstance(patch, int) and patch > side:
        return f"the patches ('{MODEL}.vision_cfg.patch_size', {patch}) are larger than the image ({side})"
    return None


CLIP_LAYOUT = ArrayLayout(
    {},
    numbers={**COMMON_NUMBERS, **CLIP_NUMBERS},
    whole_weights=WHOLE_WEIGHTS,
    texts=("classes",),
    relations=(_vision_heads, _text_heads, _patches),
)


def find_backbone_bundle(path: str, relative_to: str | Path | None = None) -> Path | None:
    """The clip bundle directory a stored ``{"bundle": path}`` reference names, or None when there is none.

    ``relative_to`` is the directory of the bundle that stored the reference: a path that does not exist as
    given is also looked up beside that bundle, so a folder of bundles can be moved as a whole.
    """
    candidates = [Path(path)]
    if relative_to is not None and not Path(path).is_absolute():
        base = Path(relative_to)
        candidates += [base.parent / Path(path).name, base.parent / path]
    for candidate in candidates:
        try:
            if candidate.is_dir():
                return candidate
        except OSError:
            continue
    return None


def backbone_bundle_of(config: dict[str, Any], relative_to: str | Path) -> Path | None:
    """The clip bundle a ConceptHash or CEIR bundle's config refers to as its backbone, when it is found."""
    reference = config.get("backbone")
    path = reference.get("bundle") if isinstance(reference, dict) else None
    return find_backbone_bundle(path, relative_to) if isinstance(path, str) and path.strip() else None

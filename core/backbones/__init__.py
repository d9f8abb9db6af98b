"""CLIP backbones: one loader, the token-extended ViT forward, and ToyBirds CLIP training."""

from core.lazy import lazy_exports

_EXPORTS = {
    "attention_rollout": "core.backbones.vit",
    "Backbone": "core.backbones.clip",
    "BackboneError": "core.backbones.clip",
    "list_toy_configs": "core.backbones.clip",
    "load_backbone": "core.backbones.clip",
    "parse_backbone_spec": "core.backbones.clip",
    "vit_forward": "core.backbones.vit",
    "ViTOutput": "core.backbones.vit",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""CLIP backbones: one loader, the token-extended ViT forward, and ToyBirds CLIP training."""

from core.backbones.clip import Backbone, BackboneError, list_toy_configs, load_backbone, parse_backbone_spec
from core.backbones.vit import ViTOutput, attention_rollout, vit_forward

__all__ = [
    "Backbone",
    "BackboneError",
    "ViTOutput",
    "attention_rollout",
    "list_toy_configs",
    "load_backbone",
    "parse_backbone_spec",
    "vit_forward",
]

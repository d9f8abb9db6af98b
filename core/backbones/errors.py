"""The backbone errors, free of PyTorch, so a page can name them before the models' code is imported."""

from __future__ import annotations


class BackboneError(ValueError):
    """A backbone reference that cannot be resolved; the message says why and what to do."""


class BackboneOfflineError(BackboneError):
    """Real CLIP weights that are not cached and cannot be downloaded now (no network, or HF_HUB_OFFLINE)."""

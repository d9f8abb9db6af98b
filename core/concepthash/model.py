"""The ConceptHash model: concept tokens -> sub-codes, one per concept.

Layout (names follow the paper):

* ``concept_tokens``: a small generator (learned queries -> one self-attention + FFN layer ->
  linear to the backbone width) makes M tokens that are appended after the positional
  embedding of a *frozen* CLIP ViT and attend with full attention in every block;
* ``adapters``: two trainable adapters per block, as in the authors' code, one on the attention
  output and one on the MLP output (LayerNorm -> down to width/2 -> GELU -> zero-initialised
  up, times a learnable scale that starts at 1), so the frozen backbone can be steered and a
  fresh model computes exactly the frozen backbone;
* ``hash_head``: ONE shared bias-free linear h (width -> K/M) applied to Z_m + E_m, where Z_m
  is concept token m's last hidden state (before ``ln_post``, as in the authors' code) and E_m
  a learned concept-specificity embedding (Gaussian initialisation); the M sub-codes are
  concatenated and batch-normalised into u; the binary code is sign(u);
* ``hash_centres``: class centres o_c from the text tower ("a photo of a {class}"), the pooled
  feature before the projection, signed, then a learnable MLP -> K dims. With language
  guidance off, the text features are replaced by fixed random Gaussian vectors (the ablation);
* ``concept_positions`` P (Gaussian, std 0.02) and ``class_prototypes`` w (learned, one per class) for the
  concept-discrimination loss L_cd.

Options that are not in the paper, all off by default and measured in the README: ``concept_depth``
(read the concept tokens after the first N blocks: :attr:`ConceptHash.depth`), L_loc
(:meth:`ConceptHash.local_codes`: each concept re-encodes only its most-attended patches; its batch
statistics are per process under torchrun), L_focus (attention entropy) and ``centres_from_local``;
with centres from part phrases, recolouring (:meth:`ConceptHash.recoloured_targets`: birds whose species
colours were swapped aim at the same swap of their class's part values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.backbones.clip import Backbone
from core.backbones.vit import ViTOutput, vit_forward
from core.concepthash import losses
from core.concepthash.codes import combination_index, combination_values, per_part_codes, value_codes
from core.concepthash.config import ConceptHashConfig, bits_per_concept

# Weight names that bundles written before a rename still carry: old name -> current name.
RENAMED_WEIGHTS = {"class_centroids": "class_prototypes"}  # learned parameters, not centroids of anything


def current_weight_names(weights: dict) -> dict:
    """``weights`` with every name of :data:`RENAMED_WEIGHTS` changed to its current one."""
    return {RENAMED_WEIGHTS.get(name, name): value for name, value in weights.items()}


class ConceptTokenGenerator(nn.Module):
    """Learned queries -> one transformer layer (self-attention + FFN) -> linear to ``width``."""

    def __init__(self, n_concepts: int, dim: int, heads: int, width: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_concepts, dim) * dim**-0.5)
        self.layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=4 * dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.to_width = nn.Linear(dim, width)

    def forward(self) -> torch.Tensor:
        return self.to_width(self.layer(self.queries.unsqueeze(0))).squeeze(0)


def paste_rectangles(
    pixels: torch.Tensor,
    perm: torch.Tensor,
    grid: tuple[int, int],
    starts: list[torch.Tensor],
    sizes: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i with the rectangle of patches at rows ``starts[0][i]`` … + ``sizes[0][i]`` and columns
    ``starts[1][i]`` … + ``sizes[1][i]`` taken from image ``perm[i]``; the images and the (B, gh, gw) mask of
    pasted patches."""
    gh, gw = grid
    ph, pw = pixels.shape[-2] // gh, pixels.shape[-1] // gw
    rows, cols = torch.arange(gh), torch.arange(gw)
    in_rows = (rows >= starts[0][:, None]) & (rows < (starts[0] + sizes[0])[:, None])
    in_cols = (cols >= starts[1][:, None]) & (cols < (starts[1] + sizes[1])[:, None])
    inside = (in_rows[:, :, None] & in_cols[:, None, :]).to(pixels.device)
    pixel_mask = inside.repeat_interleave(ph, dim=1).repeat_interleave(pw, dim=2)[:, None]
    return torch.where(pixel_mask, pixels[perm], pixels), inside


class Adapter(nn.Module):
    """LayerNorm -> down -> GELU -> up (zero-initialised) times a learnable scale (starts at 1).

    With ``up`` at zero it outputs zero, so a fresh adapter leaves the backbone unchanged.
    """

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(self.norm(x))))


class BlockAdapters(nn.Module):
    """The two adapters of one transformer block: on the attention output and on the MLP output."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.attention = Adapter(width, bottleneck)
        self.mlp = Adapter(width, bottleneck)

    def pair(self) -> tuple[Adapter, Adapter]:
        return self.attention, self.mlp


@dataclass
class ConceptHashOutput:
    """Continuous codes ``u`` (B, K), concept features Z (B, M, D) and concept->patch attention (B, M, P)."""

    u: torch.Tensor
    concept_features: torch.Tensor
    concept_attention: torch.Tensor | None
    attentions: list[torch.Tensor] = field(default_factory=list)

    @property
    def codes(self) -> torch.Tensor:
        """Binary codes in {-1, +1} (sign with 0 -> +1)."""
        return torch.where(self.u >= 0, 1.0, -1.0)


class ConceptHash(nn.Module):
    """ConceptHash on a frozen CLIP backbone.

    The backbone is held as a plain attribute, not a sub-module, so ``parameters()`` and
    ``state_dict()`` cover exactly what ConceptHash adds and trains; bundles store the backbone
    by reference.
    """

    def __init__(
        self,
        backbone: Backbone,
        class_names: list[str],
        config: ConceptHashConfig,
        text_features: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.class_names = list(class_names)
        width, n_classes = backbone.width, len(class_names)
        n_blocks = len(backbone.visual.transformer.resblocks)
        m = config.n_concepts if config.mode == "concepts" else 1
        self.concept_tokens = (
            ConceptTokenGenerator(m, config.generator_dim, config.generator_heads, width)
            if config.mode == "concepts"
            else None
        )
        bottleneck = max(1, round(width * config.adapter_ratio))
        self.adapters = nn.ModuleList(BlockAdapters(width, bottleneck) for _ in range(n_blocks))
        self.specificity = nn.Parameter(torch.randn(m, width))
        self.hash_head = nn.Linear(width, bits_per_concept(config.bits, m), bias=False)
        self.bn = nn.BatchNorm1d(config.bits)
        self.concept_positions = nn.Parameter(torch.randn(m, width) * 0.02)
        self.class_prototypes = nn.Parameter(torch.randn(n_classes, width) * width**-0.5)
        if text_features is None:
            text_features = self.class_text_features(backbone, self.class_names, config)
        self.register_buffer("text_features", text_features.float())
        # (C, M) the phrase each class's sub-codes hold (part phrases only); the centres are their codes
        self.class_values = (
            self.phrase_values(backbone, self.class_names, config) if config.part_phrases else None
        )
        self.fixed_centres = (
            self.oracle_centres(self.class_names, config)
            if config.oracle_centres
            else torch.from_numpy(
                value_codes(self.class_values.numpy(), config.bits_per_concept).astype("float32")
            )
            if self.class_values is not None
            else None
        )
        # recolouring (whose config check guarantees part phrases of the four colours): the centres of every
        # value combination and the class each is (-1: none), made once
        self.combinations = self.combination_targets(self.class_values) if config.recolour > 0 else None
        self.center_mlp = (
            nn.Sequential(
                nn.Linear(text_features.shape[1], config.center_hidden),
                nn.ReLU(),
                nn.Linear(config.center_hidden, config.bits),
            )
            if config.center_hidden > 0
            else nn.Sequential(nn.Linear(text_features.shape[1], config.bits))  # linear in the text features
        )

    @staticmethod
    def class_text_features(
        backbone: Backbone, class_names: list[str], config: ConceptHashConfig
    ) -> torch.Tensor:
        """Signed pooled text features of "a photo of a {class}" (random ones without language guidance)."""
        if config.language_guidance:
            prompts = [config.class_template.format(name) for name in class_names]
            return torch.sign(backbone.text_features_before_projection(prompts)).cpu()
        generator = torch.Generator().manual_seed(len(class_names))
        return torch.sign(torch.randn(len(class_names), backbone.text_width, generator=generator))

    @staticmethod
    def oracle_centres(class_names: list[str], config: ConceptHashConfig) -> torch.Tensor:
        """The ToyBirds per-part codes as fixed centres (``oracle_centres``), one row per class."""
        from core.data.toybirds import SPECIES

        if class_names != [species.name for species in SPECIES]:
            raise ValueError("Oracle centres exist only for the ToyBirds species, in their order.")
        return torch.from_numpy(per_part_codes(config.bits, config.n_concepts).astype("float32"))

    @staticmethod
    def phrase_values(backbone: Backbone, class_names: list[str], config: ConceptHashConfig) -> torch.Tensor:
        """Centres from language (``part_phrases``): (C, M) sub-code m of class c holds the index of the
        phrase of group m whose text embedding is closest (cosine) to the class prompt's."""
        with torch.no_grad():
            prompts = [config.class_template.format(name) for name in class_names]
            classes = F.normalize(backbone.encode_texts(prompts).float(), dim=-1)
            values = [
                (classes @ F.normalize(backbone.encode_texts(phrases).float(), dim=-1).T).argmax(dim=1)
                for phrases in (config.part_phrases or {}).values()
            ]
        return torch.stack(values, dim=1).cpu()

    def combination_targets(self, class_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V^M, K) the centre of every combination of the V species colours' values and (V^M,) the class
        each combination is, -1 for none (the targets of recoloured images)."""
        from core.data.toybirds import COLOUR_PERMUTATIONS

        n_values = len(COLOUR_PERMUTATIONS[0])
        every = combination_values(n_values, self.n_concepts)
        centres = torch.from_numpy(value_codes(every, self.config.bits_per_concept).astype("float32"))
        species = torch.full((len(every),), -1, dtype=torch.long)
        species[combination_index(class_values, n_values)] = torch.arange(len(class_values))
        return centres, species

    def recoloured_targets(
        self, labels: torch.Tensor, permutations: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets of images recoloured by ``config.recolour``: (centres of every value combination (V^M, K),
        each image's row among them, its class or -1 when no class has that combination).

        ``permutations`` (B,) indexes ``toybirds.COLOUR_PERMUTATIONS``; image b's sub-code m must hold
        permutation[class_values[label_b, m]] (phrase k of every group names species colour k, which the
        config checks), so an image left as it was (the identity, index 0) keeps its class's values.
        """
        from core.data.toybirds import COLOUR_PERMUTATIONS

        if self.combinations is None:
            raise ValueError("Recoloured targets need a model configured to recolour (with part phrases).")
        centres, species = self.combinations
        device = labels.device
        orders = torch.tensor(COLOUR_PERMUTATIONS, device=device)[permutations]  # (B, V)
        values = torch.gather(orders, 1, self.class_values.to(device)[labels])  # (B, M)
        combos = combination_index(values, len(COLOUR_PERMUTATIONS[0]))
        return centres.to(device), combos, species.to(device)[combos]

    @property
    def depth(self) -> int | None:
        """Blocks run before the concept tokens are read (None: all, as in the reference)."""
        n_blocks = len(self.backbone.visual.transformer.resblocks)
        depth = self.config.concept_depth
        return None if depth <= 0 or depth >= n_blocks or self.config.mode != "concepts" else depth

    @property
    def concept_entry_block(self) -> int:
        n_blocks = self.depth or len(self.backbone.visual.transformer.resblocks)
        blocks = self.config.concept_blocks
        return 0 if blocks <= 0 or blocks >= n_blocks or self.config.mode != "concepts" else n_blocks - blocks

    @property
    def n_concepts(self) -> int:
        return self.specificity.shape[0]

    def hash_centres(self) -> torch.Tensor:
        """o_c for every class: (C, K) (fixed ones with ``oracle_centres`` or ``part_phrases``)."""
        if self.fixed_centres is not None:
            return self.fixed_centres.to(self.text_features.device)
        return self.center_mlp(self.text_features)

    def train(self, mode: bool = True) -> ConceptHash:
        super().train(mode)
        self.backbone.model.eval()
        return self

    def run_tower(
        self, pixels: torch.Tensor, attention_layers: str = "none", keep_patches: torch.Tensor | None = None
    ) -> ViTOutput:
        """The frozen tower with this model's concept tokens, adapters, entry block and depth."""
        return vit_forward(
            self.backbone.visual,
            pixels,
            extra_tokens=self.concept_tokens() if self.concept_tokens is not None else None,
            adapters=[block.pair() for block in self.adapters],
            attention_layers=attention_layers,
            extra_from_block=self.concept_entry_block,
            keep_patches=keep_patches,
            depth=self.depth,
        )

    def forward(self, pixels: torch.Tensor, attention_layers: str = "last") -> ConceptHashOutput:
        return self.read_out(self.run_tower(pixels, attention_layers=attention_layers))

    def read_out(self, out: ViTOutput, batch_statistics: bool = False) -> ConceptHashOutput:
        """Codes, concept features and concept->patch attention of one run of the tower; with
        ``batch_statistics`` the codes are normalised by :meth:`batch_normalised` (running statistics
        untouched), otherwise by the code's BN layer."""
        n_patches = out.n_patches
        z = out.last_hidden[:, n_patches + 1 :] if self.config.mode == "concepts" else out.last_hidden[:, :1]
        sub_codes = self.hash_head(z + self.specificity.unsqueeze(0)).flatten(1)
        u = self.batch_normalised(sub_codes) if batch_statistics else self.bn(sub_codes)
        last = out.attentions[-1] if out.attentions else None
        concept_attention = None
        if last is not None:
            rows = slice(n_patches + 1, None) if self.config.mode == "concepts" else slice(0, 1)
            concept_attention = last.mean(dim=1)[:, rows, 1 : n_patches + 1]
        return ConceptHashOutput(u, z, concept_attention, out.attentions)

    def local_codes(self, pixels: torch.Tensor, concept_attention: torch.Tensor) -> torch.Tensor:
        """The code assembled from local views: sub-code m of image i computed from only the
        ``locality_patches`` patches concept m attends to most in ``concept_attention`` (B, M, P),
        then batch-normalised with this batch's statistics and the code's BN affine (B, K)."""
        n_concepts = self.n_concepts
        k = min(self.config.locality_patches, concept_attention.shape[-1])
        keep = concept_attention.detach().topk(k, dim=-1).indices.flatten(0, 1)  # (B*M, k)
        out = self.run_tower(pixels.repeat_interleave(n_concepts, dim=0), keep_patches=keep)
        z = out.last_hidden[:, k + 1 :].reshape(len(pixels), n_concepts, n_concepts, -1)
        own = z[:, torch.arange(n_concepts), torch.arange(n_concepts)]  # concept m from its own view
        return self.batch_normalised(self.hash_head(own + self.specificity.unsqueeze(0)).flatten(1))

    def batch_normalised(self, sub_codes: torch.Tensor) -> torch.Tensor:
        """(B, K) codes normalised with this batch's statistics and the code's BN affine, leaving the BN's
        running statistics untouched (for the extra views of L_loc and L_mix)."""
        return F.batch_norm(sub_codes, None, None, self.bn.weight, self.bn.bias, training=True)

    def mix_loss(self, pixels: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """L_mix (``ConceptHashConfig.mix_weight``): codes of pasted-together images against the centre slices
        of the image each concept looks at (``losses.mix_loss``).

        Image i gets a random rectangle of whole patches (a quarter to three quarters of each side) from
        image ``perm[i]`` of the batch. Batch statistics normalise the codes (running ones stay untouched).
        """
        batch = len(pixels)
        grid = self.backbone.grid_size
        perm = torch.randperm(batch).to(pixels.device)
        sizes = [torch.randint(max(1, g // 4), max(1, 3 * g // 4) + 1, (batch,)) for g in grid]
        starts = [torch.randint(0, 1 << 30, (batch,)) % (g - n + 1) for g, n in zip(grid, sizes, strict=True)]
        mixed, inside = paste_rectangles(pixels, perm, grid, starts, sizes)

        output = self.read_out(self.run_tower(mixed, attention_layers="last"), batch_statistics=True)
        attention = output.concept_attention.detach()
        share = (attention * inside.flatten(1)[:, None].to(attention.dtype)).sum(-1)
        share = share / attention.sum(-1).clamp_min(1e-12)
        own, other = torch.sign(centres[labels]), torch.sign(centres[labels[perm]])
        return losses.mix_loss(output.u, share, own, other)

    def loss(
        self,
        output: ConceptHashOutput,
        labels: torch.Tensor,
        pixels: torch.Tensor | None = None,
        permutations: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every loss term and the weighted total (L_loc needs the batch's ``pixels``). With
        ``permutations`` (``config.recolour``: how each image was recoloured) the code terms aim at the
        recoloured images' value combinations and L_cd sees only the images whose combination is a class."""
        cfg = self.config
        centers = self.hash_centres()
        classes, features = labels, output.concept_features
        if permutations is not None:
            centers, labels, species = self.recoloured_targets(labels, permutations)
            keep = species >= 0
            classes, features = species[keep], features[keep]
        # With centres_from_local the whole-image code follows the centres but does not move them: only L_loc
        # (local views, each concept seeing its own patches) shapes them.
        targets = centers.detach() if cfg.centres_from_local and cfg.locality_weight > 0 else centers
        terms = {
            "clf": losses.clf_loss(output.u, targets, labels, cfg.scale, cfg.margin),
            "quan": losses.quan_loss(output.u, targets, labels, cfg.scale, cfg.margin),
            "cd": losses.cd_loss(
                features, self.concept_positions, self.class_prototypes, classes, cfg.scale, cfg.margin
            ),
        }
        if output.concept_attention is not None:
            terms["csd"] = losses.csd_loss(output.concept_attention)
            if cfg.focus_weight > 0:
                terms["focus"] = losses.focus_loss(output.concept_attention)
        if cfg.locality_weight > 0 and cfg.mode == "concepts":
            if pixels is None or output.concept_attention is None:
                raise ValueError("L_loc needs the batch's pixels and the concepts' last-layer attention.")
            local = self.local_codes(pixels, output.concept_attention)
            terms["loc"] = losses.clf_loss(local, centers, labels, cfg.scale, cfg.margin) + losses.quan_loss(
                local, centers, labels, cfg.scale, cfg.margin
            )
        if cfg.bit_weight > 0:
            terms["bit"] = losses.bit_loss(output.u, targets, labels)
        if cfg.mix_weight > 0:  # (the config allows it with concept tokens only)
            if pixels is None:
                raise ValueError("L_mix needs the batch's pixels.")
            terms["mix"] = self.mix_loss(pixels, labels, centers.detach())
        weights = {
            "mix": cfg.mix_weight,
            "bit": cfg.bit_weight,
            "clf": cfg.clf_weight,
            "quan": cfg.quan_weight,
            "cd": cfg.cd_weight,
            "csd": cfg.csd_weight,
            "loc": cfg.locality_weight,
            "focus": cfg.focus_weight,
        }
        terms["total"] = sum(weights[name] * value for name, value in terms.items())
        return terms

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Continuous codes u for a batch (eval mode; call ``.eval()`` first)."""
        chunks = [
            self.forward(pixels[i : i + batch_size].to(self.backbone.device), attention_layers="none").u
            for i in range(0, len(pixels), batch_size)
        ]
        return torch.cat(chunks).cpu()

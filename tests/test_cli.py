"""The ``conceptlens`` command line, end to end on tiny models."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from core.cli import main
from core.data.toybirds import PARTS, SPECIES

TINY = [
    "--data",
    "toybirds",
    "--train-per-class",
    "2",
    "--test-per-class",
    "1",
    "--image-size",
    "32",
    "--device",
    "cpu",
]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_toybirds_render_writes_images_masks_and_metadata(tmp_path, capsys):
    code, _, err = run(
        capsys,
        "toybirds",
        "render",
        "--out",
        str(tmp_path / "birds"),
        "--count",
        "5",
        "--split",
        "test",
        "--seed",
        "2",
        "--image-size",
        "32",
    )
    assert code == 0, err
    with open(tmp_path / "birds" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(5))
    assert all(r["split"] == "test" and r["seed"] == "2" for r in rows)
    assert len(list((tmp_path / "birds" / "images").iterdir())) == 5
    assert len(list((tmp_path / "birds" / "masks").iterdir())) == 5 * len(PARTS)
    code, _, err = run(capsys, "toybirds", "render", "--out", str(tmp_path / "birds"), "--count", "5")
    assert code == 2 and "birds" in err and err.count("\n") == 1


def test_toybirds_stats_measures_part_sizes_from_the_masks(capsys):
    code, out, _ = run(capsys, "toybirds", "stats", "--count", "48", "--seed", "4")
    assert code == 0
    stats = json.loads(out)
    assert set(stats["area_patches"]) == set(PARTS) and stats["patch_size"] == 8
    assert all(stats["area_patches"][part] > 3.0 for part in ("head", "wing", "body"))
    assert set(stats["patch_overlap"]) == {
        "head/wing",
        "head/body",
        "head/tail",
        "wing/body",
        "wing/tail",
        "body/tail",
    }
    code, _, err = run(capsys, "toybirds", "stats", "--count", "2", "--patch-size", "7")
    assert code == 2 and "does not divide" in err and err.count("\n") == 1


def test_concepts_show_lists_the_concepts_and_says_the_caption(capsys):
    code, out, err = run(capsys, "concepts", "show", "toybirds")
    assert code == 0 and out.splitlines()[:2] == ["red head", "yellow head"]
    from core.ceir.concept_bank import load_bank

    bank = load_bank("toybirds")
    assert out.splitlines() == bank.concepts
    assert f"{len(bank)} concepts from shipped:toybirds, each concept read as '{bank.template}'" in err
    code, out, err = run(capsys, "concepts", "show", "general")
    assert code == 0 and "read as" not in err


def test_toybirds_species_lists_every_species(capsys):
    code, out, _ = run(capsys, "toybirds", "species")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(SPECIES)
    for species, line in zip(SPECIES, lines, strict=True):
        assert line.split()[:2] == [str(species.id), species.family]
        assert species.name in line
        colours = "; ".join(f"{part}: {species.colours[part]}" for part in ("head", "wing", "body"))
        assert line.endswith(colours), line
    assert "tail" not in out  # the tail is per-image nuisance, not a species trait


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "concepthash", "--backbone", "toyclip-tiny:random", "--out", "x", "--bits", "0"],
            "positive",
        ),
        (
            ["train", "concepthash", "--backbone", "toyclip-tiny:random", "--out", "x", "--csd-weight", "-1"],
            ">= 0",
        ),
        (
            [
                "train",
                "concepthash",
                "--backbone",
                "toyclip-tiny:random",
                "--out",
                "x",
                "--csd-weight",
                "nan",
            ],
            ">= 0",
        ),
        (["train", "concepthash", "--out", "x"], "--backbone"),
        (
            [
                "train",
                "ceir",
                "--backbone",
                "b",
                "--concepts",
                "toybirds",
                "--out",
                "x",
                "--kmeans-restarts",
                "0",
            ],
            "positive",
        ),
        (["eval"], "bundle"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bits", "10", "--concepts", "3"], "cannot be split evenly"),
        (["--data", "cub200"], "needs a root directory"),
        (["--data", "imagenet:/x"], "Unknown data set 'imagenet'"),
        (["--backbone", "nope:random"], "Unknown backbone 'nope'"),
    ],
)
def test_bad_values_get_one_sentence_and_write_nothing(tmp_path, capsys, argv, message):
    args = [
        "train",
        "concepthash",
        "--backbone",
        "toyclip-tiny:random",
        "--out",
        str(tmp_path / "out"),
        *TINY,
    ]
    for i in range(0, len(argv), 2):  # later flags override earlier ones
        args += argv[i : i + 2]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_eval_of_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    code, _, err = run(capsys, "eval", str(tmp_path))
    assert code == 2 and "config.json" in err


def test_train_and_eval_concepthash_and_clip(tmp_path, capsys):
    clip_dir = tmp_path / "clip"
    code, _, err = run(
        capsys,
        "train",
        "clip",
        "--config",
        "toyclip-tiny",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        str(clip_dir),
        *TINY,
    )
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(clip_dir), "--json")
    assert code == 0, err
    clip_result = json.loads(out)
    assert clip_result["kind"] == "clip" and 0 <= clip_result["zero_shot_accuracy"] <= 1

    hash_dir = tmp_path / "hash"
    code, _, err = run(
        capsys,
        "train",
        "concepthash",
        "--backbone",
        str(clip_dir),
        "--bits",
        "6",
        "--concepts",
        "3",
        "--csd-weight",
        "0.5",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        str(hash_dir),
        *TINY,
    )
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(hash_dir), "--json", "--seed", "5")
    assert code == 0, err
    result = json.loads(out)  # stdout is exactly one JSON object
    assert {"map", "precision_at", "localization", "diversity", "subcode_part_nmi"} <= set(result)
    assert result["data"]["seed"] == 5
    assert len(result["subcode_part_nmi"]["matrix"]) == 3
    assert all(len(row) == len(PARTS) for row in result["subcode_part_nmi"]["matrix"])
    loc = result["localization"]
    assert 0 <= loc["random_baseline"] <= 1 and 0 <= loc["mean_hit_rate"] <= 1
    assert {c["part"] for c in loc["concepts"]} <= set(PARTS)


def test_python_dash_m_core_is_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "core", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "conceptlens" in proc.stdout and "train" in proc.stdout


# flag dest -> (config object, field) for every training flag that has a config field behind it
def _flag_fields():
    from core.cli import CEIR, CLIP_RUN, HASH, HASH_RUN, PROJECTION, VAE

    run = {name: name for name in ("epochs", "batch_size", "lr", "seed", "device", "precision")}
    return {
        "clip": {**{k: (CLIP_RUN, v) for k, v in run.items()}, "config": (CLIP_RUN, "config_name")},
        "concepthash": {
            **{k: (HASH_RUN, v) for k, v in run.items()},
            "optimizer": (HASH_RUN, "optimizer"),
            "weight_decay": (HASH_RUN, "weight_decay"),
            "bits": (HASH, "bits"),
            "concepts": (HASH, "n_concepts"),
            **{f"{w}_weight": (HASH, f"{w}_weight") for w in ("csd", "clf", "quan", "cd")},
            "concept_blocks": (HASH, "concept_blocks"),
            "mode": (HASH, "mode"),
        },
        "ceir": {
            **{k: (VAE, k) for k in ("epochs", "batch_size", "lr", "latent_dim", "beta")},
            "seed": (CEIR, "seed"),
            "device": (CEIR, "device"),
            "projection_steps": (PROJECTION, "steps"),
            "fidelity_cutoff": (PROJECTION, "fidelity_cutoff"),
            "near_duplicate_fraction": (CEIR, "near_duplicate_fraction"),
            "class_relevance": (CEIR, "class_relevance_fraction"),
            "activation": (CEIR, "activation_fraction"),
            "kmeans_restarts": (CEIR, "kmeans_restarts"),
            "centre_concepts": (CEIR, "centre_concepts"),
        },
    }


@pytest.mark.parametrize("model", ["clip", "concepthash", "ceir"])
def test_training_flags_default_to_the_config_dataclasses(model):
    """No default is written twice: each flag's default is the value a fresh config dataclass holds."""
    from dataclasses import fields

    from core.cli import build_parser

    extra = ["--backbone", "b"] if model != "clip" else []
    extra += ["--concepts", "toybirds"] if model == "ceir" else []
    args = build_parser().parse_args(["train", model, "--out", "o", *extra])
    for dest, (config, name) in _flag_fields()[model].items():
        assert name in {f.name for f in fields(config)}, (model, name)
        assert getattr(args, dest) == getattr(config, name), (model, dest)


def test_options_beyond_the_paper_are_grouped_off_and_named_on_home():
    """`train concepthash --help` lists the options that are not in the paper in their own group; each one is
    off by default, and a bundle trained with it says so on Home (lens.bundles.beyond_the_paper)."""
    import argparse

    from core.cli import HASH, build_parser
    from lens.bundles import beyond_the_paper

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = next(a for a in commands.choices["train"]._actions if isinstance(a, argparse._SubParsersAction))
    group = next(
        g for g in train.choices["concepthash"]._action_groups if g.title.startswith("not in the paper")
    )
    dests = [action.dest for action in group._group_actions]
    assert {
        "concept_depth",
        "locality_weight",
        "focus_weight",
        "mix_weight",
        "bit_weight",
        "part_phrases",
    } <= set(dests)
    settings = {"locality_patches"}  # a setting of L_loc, not an option of its own
    for dest in dests:
        if dest in settings:
            continue
        assert not getattr(HASH, dest), dest  # off by default
        on = {"part_phrases": {"head": ["a"]}}.get(dest, True if isinstance(getattr(HASH, dest), bool) else 2)
        named = beyond_the_paper(
            {dest: on, "locality_weight": 1.0} if dest == "centres_from_local" else {dest: on}
        )
        assert named, dest


def test_the_cli_starts_without_importing_torch():
    """``conceptlens --help`` and argument errors stay fast: the parser reads torch-free config modules."""
    code = "import sys, core.cli; core.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_from_args_fills_a_dataclass_from_flags_named_like_its_fields():
    import argparse
    from dataclasses import dataclass

    from core.settings import from_args

    @dataclass
    class Config:
        n_db: int = 1
        kinds: tuple[str, ...] = ()
        untouched: str = "default"

    args = argparse.Namespace(n_db=5, kinds=["ivf", "hnsw"], other=3)
    assert from_args(Config, args) == Config(n_db=5, kinds=("ivf", "hnsw"))
    assert from_args(Config, args, untouched="x").untouched == "x"


def test_eval_store_writes_the_bundles_own_metrics_and_nothing_else(tmp_path, capsys):
    """``eval --store`` merges a fresh eval's metrics into config.json; weights stay byte for byte; a
    metric the bundle predates appears; scores on fresh samples (--seed) are refused before any work."""
    from core.bundle import read_bundle_config

    clip_dir = tmp_path / "clip"
    code, _, err = run(
        capsys, "train", "clip", "--config", "toyclip-tiny", "--epochs", "1", "--batch-size", "16",
        "--out", str(clip_dir), *TINY,
    )  # fmt: skip
    assert code == 0, err
    config_file = clip_dir / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    stored = dict(config["metrics"])
    del config["metrics"]["zero_shot_accuracy"]  # as if trained before the metric existed
    config["metrics"]["kept"] = 1.0  # a metric this eval does not compute stays
    config_file.write_text(json.dumps(config), encoding="utf-8")
    weights = (clip_dir / "weights.safetensors").read_bytes()

    code, out, err = run(capsys, "eval", str(clip_dir), "--seed", "3", "--store")
    assert code == 2 and "--store" in err and "Traceback" not in err
    assert "zero_shot_accuracy" not in read_bundle_config(clip_dir)["metrics"]

    code, out, err = run(capsys, "eval", str(clip_dir), "--json", "--store")
    assert code == 0, err
    fresh = json.loads(out)
    metrics = read_bundle_config(clip_dir)["metrics"]
    assert metrics["zero_shot_accuracy"] == fresh["zero_shot_accuracy"] == stored["zero_shot_accuracy"]
    assert metrics["kept"] == 1.0
    assert not {"kind", "bundle", "data"} & set(metrics), "what the report says about the run is not a metric"
    assert (clip_dir / "weights.safetensors").read_bytes() == weights
    assert "Stored the metrics" in err


@pytest.mark.parametrize("name", ["toy-ceir", "toy-hash-csd"])
def test_eval_names_its_phases_on_stderr_and_prints_only_json_on_stdout(tiny_bundles, capsys, name):
    """Evaluating a large bundle takes minutes: it must not be silent, and --json must stay parseable."""
    from core.ceir.evaluate import EVALUATION_PHASES as CEIR_PHASES
    from core.concepthash.evaluate import EVALUATION_PHASES as HASH_PHASES

    code, out, err = run(capsys, "eval", str(tiny_bundles / name), "--json", "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["kind"] == ("ceir" if name == "toy-ceir" else "concepthash")
    phases = CEIR_PHASES if name == "toy-ceir" else HASH_PHASES
    named = [phase for phase in phases if phase in err]
    assert named, f"no phase named on stderr: {err[-500:]}"

"""torchrun with 2 CPU processes (gloo): the same losses as one process on the same global batch, a bundle
that loads, resumption under another world size, and the same store as a one-process encode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "toybirds", "--train-per-class", "2", "--test-per-class", "1", "--image-size", "32"]


def _quiet(*_args) -> None:
    pass


def torchrun(*args: str, timeout: float = 120) -> None:
    """``torchrun --standalone --nproc_per_node 2 -m core ARGS`` on the CPU, one thread per process."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, "-m", "core", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]


def history(bundle: Path) -> list[dict[str, float]]:
    return json.loads((bundle / "config.json").read_text())["train"]["history"]


def assert_same_curve(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    assert len(got) == len(expected)
    for row, reference in zip(got, expected, strict=True):
        assert row.keys() == reference.keys()
        for name, value in reference.items():
            assert row[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_two_processes_resume_one_process_run_with_the_same_losses(tmp_path) -> None:
    """Epoch 1 on one process, killed; epoch 2 resumed by torchrun on two processes: the loss curve is the
    one-process curve, and rank 0's bundle loads."""
    from core.concepthash.bundle import load_concepthash
    from core.concepthash.model import ConceptHashConfig
    from core.concepthash.train import TrainConfig, train_concepthash
    from core.data.spec import DataSpec

    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    model = ConceptHashConfig(bits=6, n_concepts=3)
    train = TrainConfig(epochs=2, batch_size=16, augment=False, workers=0, device="cpu")
    backbone = "toyclip-tiny:random"
    reference = train_concepthash(backbone, data, model, train, tmp_path / "one", log=_quiet)

    def killed_in_epoch_two(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_concepthash(
            backbone, data, model, train, tmp_path / "two", progress=killed_in_epoch_two, log=_quiet
        )
    assert (tmp_path / "two.ckpt").is_file()
    flags = ["--bits", "6", "--concepts", "3", "--epochs", "2", "--batch-size", "16", "--no-augment"]
    torchrun("train", "concepthash", "--backbone", backbone, *TINY, *flags, "--device", "cpu",
             "--out", str(tmp_path / "two"), "--resume")  # fmt: skip
    assert_same_curve(history(tmp_path / "two"), history(reference))
    assert not (tmp_path / "two.ckpt").exists()
    loaded = load_concepthash(tmp_path / "two", device="cpu")
    assert loaded.arrays["db_codes"].shape[1] == 6


def test_two_process_clip_training_matches_one_process(tmp_path) -> None:
    from core.backbones.train_clip import ClipTrainConfig, train_clip
    from core.data.spec import DataSpec

    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    config = ClipTrainConfig(config_name="toyclip-tiny", epochs=1, batch_size=16, device="cpu", workers=0)
    reference = train_clip(data, config, tmp_path / "one", log=_quiet)
    torchrun("train", "clip", "--config", "toyclip-tiny", *TINY, "--epochs", "1", "--batch-size", "16",
             "--device", "cpu", "--out", str(tmp_path / "two"))  # fmt: skip
    assert_same_curve(history(tmp_path / "two"), history(reference))


def test_two_process_encode_equals_one_process_encode(tiny_bundles, tmp_path) -> None:
    from core.data import toybirds
    from core.encode import EncodeConfig, encode_folder
    from core.retrieval.store import CodeStore

    toybirds.render_to_disk(tmp_path / "render", "test", 30, seed=5, image_size=32)
    folder = tmp_path / "render" / "images"
    (folder / "empty.png").write_bytes(b"")
    bundle = tiny_bundles / "toy-hash-csd"
    config = EncodeConfig(shard_size=4, batch_size=4, device="cpu")
    encode_folder(bundle, f"folder:{folder}", tmp_path / "one", config, log=_quiet)
    torchrun("encode", str(bundle), "--data", f"folder:{folder}", "--out", str(tmp_path / "two"),
             "--shard-size", "4", "--batch-size", "4", "--device", "cpu")  # fmt: skip
    one, two = CodeStore(tmp_path / "one"), CodeStore(tmp_path / "two")
    assert two.complete and two.ids == one.ids and len(two) == 30
    np.testing.assert_array_equal(two.load("codes"), one.load("codes"))
    assert [f["file"] for f in two.manifest["failed"]] == ["empty.png"]


def test_two_process_ceir_training_matches_one_process(tmp_path) -> None:
    """CEIR under torchrun: the projection and the VAE train on each rank's slice of every batch; the VAE's
    loss curve and the stored metrics are those of one process, and rank 0's bundle loads."""
    from core.ceir.bundle import load_ceir

    # 96 train images: 86 fit the projection (an even batch), the VAE's batches of 16 split in two
    data = ["--data", "toybirds", "--train-per-class", "4", "--test-per-class", "1", "--image-size", "32"]
    flags = ["--backbone", "toyclip-tiny:random", "--concepts", "toybirds", *data, "--epochs", "3",
             "--batch-size", "16", "--projection-steps", "60", "--latent-dim", "4",
             "--device", "cpu", "--kmeans-restarts", "10"]  # fmt: skip
    one = tmp_path / "one"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "core", "train", "ceir", *flags, "--out", str(one)],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    torchrun("train", "ceir", *flags, "--out", str(tmp_path / "two"))
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("one", "two")]
    assert configs[1]["concepts"] == configs[0]["concepts"]
    # float sums in another order (slices gathered, gradients averaged) drift ~1e-4 over three epochs
    curves = (configs[1]["train"]["vae_history"], configs[0]["train"]["vae_history"])
    for row, reference in zip(*curves, strict=True):
        assert row == pytest.approx(reference, rel=1e-3, abs=1e-4)
    assert configs[1]["metrics"]["acc"] == pytest.approx(configs[0]["metrics"]["acc"], abs=1e-6)
    loaded = load_ceir(tmp_path / "two", device="cpu")
    assert loaded.arrays["train_latents"].shape[1] == 4

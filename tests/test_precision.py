"""--precision: bf16 on CUDA and fp32 on the CPU by default; fp16 only on CUDA; fp32 runs without autocast."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from core.runtime import MixedPrecision, resolve_precision


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_the_cpu() -> None:
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="must be one of"):
        resolve_precision("fp8", torch.device("cpu"))


def test_fp32_has_no_autocast_and_no_loss_scaling() -> None:
    assert isinstance(MixedPrecision("fp32", torch.device("cpu")).autocast(), contextlib.nullcontext)
    bf16 = MixedPrecision.resolve("bf16", torch.device("cpu"))
    assert not bf16.scaler.is_enabled()
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_bf16_training_on_the_cpu_records_its_precision(tmp_path) -> None:
    from core.concepthash.model import ConceptHashConfig
    from core.concepthash.train import TrainConfig, train_concepthash
    from core.data.spec import DataSpec

    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    train = TrainConfig(epochs=1, batch_size=16, workers=0, device="cpu", precision="bf16")
    out = train_concepthash(
        "toyclip-tiny:random", data, ConceptHashConfig(bits=6), train, tmp_path / "b", log=print
    )
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["precision"] == "bf16" and math.isfinite(config["history"][0]["total"])


def test_ceir_refuses_a_precision_it_does_not_use(capsys) -> None:
    from core.cli import main

    argv = ["train", "ceir", "--backbone", "toyclip-tiny:random", "--concepts", "toybirds", "--out", "x"]
    assert main([*argv, "--precision", "bf16"]) == 2
    assert "CEIR trains in fp32" in capsys.readouterr().err

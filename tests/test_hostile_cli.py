"""Hostile input to the command line is refused in one sentence, before any work, and leaves nothing behind.

Built from files the tests make: broken and non-CEIR bundles given to ``label``, a file or a foreign folder as
``train --out``, a FIFO named ``*.png``, non-finite and out-of-range flags, a run whose loss becomes NaN.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.bundle import save_bundle
from core.cli import main
from core.data.images import ImageLoadError, list_image_files, load_image

TINY = ["--data", "toybirds", "--train-per-class", "1", "--test-per-class", "1", "--image-size", "32"]
TRAIN_HASH = ["train", "concepthash", "--backbone", "toyclip-tiny:random", "--device", "cpu", *TINY]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_sentence(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "bird.png"
    Image.new("RGB", (32, 32), "red").save(path)
    return path


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a training run gets as far as opening its data."""
    import core.concepthash.train as train_module

    def refuse(*_args, **_kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train_module, "open_split", refuse)


# ---------------------------------------------------------------------------------------------------------
# label BUNDLE: a folder with config.json is a bundle; one that cannot be used is refused
# ---------------------------------------------------------------------------------------------------------


def test_label_with_a_concepthash_bundle_is_refused(tmp_path, image, capsys) -> None:
    bundle = save_bundle(tmp_path / "hash", kind="concepthash", config={}, weights={"w": torch.ones(1)})
    code, out, err = run(capsys, "label", str(bundle), str(image))
    assert code == 2 and out == ""
    assert re.search(r"is a '?concepthash'? bundle.*'?ceir'? bundle", one_sentence(err))


def test_label_with_a_broken_bundle_is_refused(tmp_path, image, capsys) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    code, out, err = run(capsys, "label", str(tmp_path / "broken"), str(image))
    assert code == 2 and out == ""
    assert "broken has an invalid config.json" in one_sentence(err)


# ---------------------------------------------------------------------------------------------------------
# train --out: checked before the first step
# ---------------------------------------------------------------------------------------------------------


def test_train_out_on_a_file_is_refused_before_training(tmp_path, capsys, no_training) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, _, err = run(capsys, *TRAIN_HASH, "--out", str(target), "--overwrite")
    assert code == 2 and "a file is in the way" in one_sentence(err)
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_train_out_on_a_foreign_folder_is_refused_before_training(tmp_path, capsys, no_training) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    code, _, err = run(capsys, *TRAIN_HASH, "--out", str(tmp_path / "photos"), "--overwrite")
    assert code == 2 and "holds other files and is not a bundle" in one_sentence(err)
    assert os.listdir(tmp_path / "photos") == ["a.jpg"]


# ---------------------------------------------------------------------------------------------------------
# FIFOs and other special files are never opened for reading
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading the FIFO blocked"))
    signal.alarm(10)
    yield path
    signal.alarm(0)


def test_a_fifo_given_directly_is_refused_without_blocking(fifo: Path) -> None:
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)


def test_a_fifo_inside_a_folder_is_skipped_with_a_reason(fifo: Path, image: Path) -> None:
    files = list_image_files([fifo.parent])
    assert files == [image]


# ---------------------------------------------------------------------------------------------------------
# Numbers: finite, in range; a run whose loss becomes non-finite stops without saving
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--lr", "inf", "finite"),
        ("--csd-weight", "inf", "finite"),
        ("--weight-decay", "1e999", "finite"),
        ("--bits", "100000000", "at most"),
        ("--concepts", "5000", "at most"),
        ("--image-size", "100000", "at most"),
        ("--seed", str(2**70), "at most"),
        ("--seed", "-1", "at least 0"),
    ],
)
def test_out_of_range_numbers_are_refused_by_the_parser(flag, value, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were a check to slip, the run would write ./x here, not in the repository
    with pytest.raises(SystemExit) as exit_info:
        main([*TRAIN_HASH, "--out", "x", flag, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("template", ["a photo of a bird", "{} {}", "a {x} {}"])
def test_a_concept_template_without_one_placeholder_is_refused(template, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "ceir",
                "--backbone",
                "toyclip-tiny:random",
                "--out",
                "x",
                "--concept-template",
                template,
            ]
        )
    assert exit_info.value.code == 2
    assert "exactly once" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_run_whose_loss_becomes_nan_stops_and_keeps_the_old_bundle(tmp_path, capsys) -> None:
    good = save_bundle(tmp_path / "good", kind="concepthash", config={"run": 1}, weights={"w": torch.ones(1)})
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    argv = [
        *TRAIN_HASH,
        "--out",
        str(good),
        "--overwrite",
        "--lr",
        "1e30",
        "--batch-size",
        "8",
        "--epochs",
        "2",
    ]
    code, _, err = run(capsys, *argv)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "non-finite" in last and "was not saved" in last, err
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_device_meta_and_unavailable_mps_are_refused_in_one_sentence(capsys, no_training, tmp_path) -> None:
    for device in ("meta", "mps", "tpu"):
        code, _, err = run(capsys, *TRAIN_HASH, "--out", str(tmp_path / "x"), "--device", device)
        assert code == 2 and device in one_sentence(err)


def test_resume_names_the_setting_that_differs(tmp_path) -> None:
    from core.training import restore_training_state, save_training_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = {"train": {"lr": 0.1, "epochs": 3}, "model": {"bits": 6}}
    save_training_state(tmp_path / "c.ckpt", model, optimizer, torch.Generator(), 1, [], settings)
    other = {"train": {"lr": 0.5, "epochs": 3}, "model": {"bits": 6}}
    with pytest.raises(ValueError, match=r"train\.lr \(0\.1 in the checkpoint, 0\.5 now\)"):
        restore_training_state(tmp_path / "c.ckpt", model, optimizer, torch.Generator(), other)


def test_a_one_class_folder_is_refused_in_one_sentence(tmp_path) -> None:
    from core.data.spec import DataSpec, open_split

    (tmp_path / "only").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(ValueError, match="has one class .only.; training and evaluation need at least two"):
        open_split(DataSpec(kind="folder", root=str(tmp_path)), "train")


def test_label_on_an_empty_folder_says_no_images_were_found(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "label", str(tmp_path / "empty"), "--json")
    assert code == 2 and out == ""
    assert "No images found in" in one_sentence(err)


def test_log_lines_are_not_glued_onto_a_progress_bar(capsys) -> None:
    from core.cli import log
    from core.progress import TqdmProgress

    bar = TqdmProgress("work")
    bar(1, 3)
    log("epoch 1/3 loss=0.5")
    bar(3, 3)
    err = capsys.readouterr().err
    line = next(line for line in err.split("\n") if "epoch 1/3" in line)
    assert line.split("\r")[-1] == "epoch 1/3 loss=0.5", repr(err)


def test_newlines_in_file_names_do_not_split_the_text_output(tmp_path) -> None:
    from core.cli import printable

    assert printable(str(tmp_path / "a\nb.png")).endswith("a\\nb.png")
    assert printable("plain/é.png") == "plain/é.png"
    assert json.loads(json.dumps("a\nb")) == "a\nb"  # JSON output escapes newlines by itself


def test_label_reports_the_concept_lines_it_drops(tmp_path, image, capsys, monkeypatch) -> None:
    import core.backbones.clip as clip_module

    def stop(*_args, **_kwargs):
        raise ValueError("model loading stopped by the test")

    monkeypatch.setattr(clip_module, "load_backbone", stop)
    bank = tmp_path / "bank.txt"
    bank.write_text("red wing\nred wing\n" + "x" * 300 + "\nblue head\n")
    code, _, err = run(capsys, "label", str(image), "--concepts", str(bank))
    assert code == 2
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2 and "duplicates 'red wing'" in notes[0] and "300 characters" in notes[1], err

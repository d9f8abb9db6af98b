"""The command line as a person meets it: a subcommand's own usage for a bad flag, paths checked before any
model loads, help for every flag that needs it, honest score names, and no third-party progress bars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from core.cli import DEVICE_HELP, main
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "argv, usage",
    [
        (["eval", "BUNDLE", "--jsn"], "usage: conceptlens eval "),
        (["label", "photos/", "--jsn"], "usage: conceptlens label "),
        (
            ["train", "concepthash", "--backbone", "b", "--out", "o", "--bitz", "8"],
            "usage: conceptlens train concepthash ",
        ),
        (["concepts", "show", "general", "--jsn"], "usage: conceptlens concepts show "),
    ],
)
def test_a_bad_flag_after_a_subcommand_prints_that_subcommands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(usage), err
    assert "error: unrecognized arguments: --" in err
    assert "{toybirds," not in err, "not the top-level usage"


@pytest.mark.parametrize("argv", [["eval"], ["label"], ["train", "clip"], ["train", "ceir"]])
def test_device_has_help_text(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help text over lines
    assert exit_info.value.code == 0
    assert f"--device DEVICE {DEVICE_HELP}" in out
    assert "--verbose" in out


def run_cli(*argv: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m core ARGV`` from the repository root; also how long it took."""
    # main() called in this process (other tests) quietened third-party libraries through the environment
    quiet = ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")
    env = {key: value for key, value in os.environ.items() if key not in quiet} | {"PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "core", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return process, time.monotonic() - start


PROBE = """
import sys, time
from core.cli import main
start = time.monotonic()
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "open_clip", "timm", "transformers") if m in sys.modules)
print(code, round(time.monotonic() - start, 3), ",".join(heavy) or "-")
"""


def test_label_with_a_missing_bundle_says_so_in_under_a_second_without_loading_a_model(tmp_path):
    (tmp_path / "photos").mkdir()
    missing = tmp_path / "missing-bundle"
    process, seconds = run_cli("label", str(missing), str(tmp_path / "photos"), timeout=30)
    assert process.returncode == 2
    assert (
        process.stderr.strip()
        == f"conceptlens: error: The bundle '{missing}' does not exist (no such folder)."
    )
    assert seconds < 1.0, f"took {seconds:.2f} s"
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, "label", str(missing), str(tmp_path / "photos")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    code, _, heavy = probe.stdout.split()
    assert code == "2" and heavy == "-", f"imported before the paths were checked: {heavy}"


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (
            lambda d: ["label", str(d / "photos"), str(d / "gone.png")],
            "The image or folder '{d}/gone.png' does",
        ),
        (
            lambda d: ["label", str(d / "nothing")],
            "'{d}/nothing' does not exist: no such image, folder or bundle",
        ),
        (lambda d: ["label", str(d / "hash"), str(d / "photos")], "'{d}/hash' is a concepthash bundle;"),
        (
            lambda d: ["label", str(d / "photos"), "--concepts", str(d / "mine.txt")],
            "The concept bank file '{d}/mine.txt' does not exist.",
        ),
        (
            lambda d: ["label", str(d / "photos"), "--model", f"ViT-B-32:{d}/weights.pt"],
            "The --model file or bundle '{d}/weights.pt' does not exist.",
        ),
    ],
)
def test_label_checks_every_path_first(tmp_path, capsys, monkeypatch, make_argv, message):
    import core.ceir.concept_bank

    (tmp_path / "photos").mkdir()
    (tmp_path / "hash").mkdir()
    (tmp_path / "hash" / "config.json").write_text(json.dumps({"kind": "concepthash"}))
    monkeypatch.setattr(core.ceir.concept_bank, "load_bank", lambda *a: pytest.fail("checked after loading"))
    assert main(make_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert message.format(d=tmp_path) in err and err.count("\n") == 1


@pytest.mark.slow
def test_conse_labels_are_named_conse_and_quiet_unless_verbose(tmp_path):
    from skimage import data

    photo = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(photo)
    # a list no shipped bank holds, so the text model loads (shipped banks' embeddings come with the package)
    concepts = tmp_path / "mine.txt"
    concepts.write_text("cat\nwhiskers\ncoffee cup\nrocket\n")
    argv = ("label", str(photo), "--json", "--device", "cpu", "--concepts", str(concepts))
    quiet, _ = run_cli(*argv)
    assert quiet.returncode == 0, quiet.stderr
    report = json.loads(quiet.stdout)
    assert report["scoring"] == "conse-similarity", "ConSE's cosine is not a CLIP similarity"
    assert report["images"][0]["labels"][0]["concept"] in {"cat", "whiskers"}
    assert "Loading weights" not in quiet.stderr
    loud, _ = run_cli(*argv, "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr

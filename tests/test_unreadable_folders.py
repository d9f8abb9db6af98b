"""Unreadable folders (no permission, /proc) are skipped with a named warning, never a crash or a traceback.

These tests run as root in CI, where ``chmod 000`` does not make a folder unreadable; so :func:`deny` fakes
what the kernel does for a ``chmod 000`` folder when the user is not root: the folder itself can be stat'ed,
but listing it (``os.listdir``, ``os.scandir``, hence ``Path.iterdir`` and ``os.walk``) and stat'ing anything
inside it (``Path.is_file``, ``Path.is_dir``, ``Path.exists``) raise ``PermissionError``. ``/proc`` is used as
it is: even root cannot read some of it (``/proc/1/cwd`` in a container).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import safetensors.torch

from core.bundle import BundleError, find_broken_bundles, find_bundles, read_bundle_config


def deny(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` behave as if it were ``chmod 000`` for a non-root user (see the module docstring)."""
    folder = os.path.abspath(folder)

    def at_or_inside(path) -> bool:
        if isinstance(path, int):
            return False
        path = os.path.abspath(os.fsdecode(path))
        return path == folder or path.startswith(folder + os.sep)

    def inside(path) -> bool:
        return at_or_inside(path) and os.path.abspath(os.fsdecode(path)) != folder

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    real_stat, real_listdir, real_scandir = os.stat, os.listdir, os.scandir

    def stat(path, *args, **kwargs):
        return refuse(path) if inside(path) else real_stat(path, *args, **kwargs)

    def listdir(path="."):
        return refuse(path) if at_or_inside(path) else real_listdir(path)

    def scandir(path="."):
        return refuse(path) if at_or_inside(path) else real_scandir(path)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)


def write_bundle(path: Path, kind: str = "ceir") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"kind": kind, "format_version": 1}))
    safetensors.torch.save_file({}, str(path / "weights.safetensors"))  # a listing checks the weights too
    return path


@pytest.fixture
def bundles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """good-a, group/good-b, and a locked sub-folder holding a bundle nobody can see."""
    write_bundle(tmp_path / "good-a")
    write_bundle(tmp_path / "group" / "good-b")
    write_bundle(tmp_path / "locked" / "hidden-bundle")
    deny(monkeypatch, tmp_path / "locked")
    return tmp_path


def test_the_simulation_behaves_like_chmod_000(bundles: Path) -> None:
    locked = bundles / "locked"
    assert locked.is_dir()  # the folder itself can be stat'ed ...
    with pytest.raises(PermissionError):
        list(locked.iterdir())  # ... but not listed
    with pytest.raises(PermissionError):
        (locked / "hidden-bundle").is_dir()  # ... nor anything inside stat'ed


def test_find_bundles_skips_the_unreadable_folder_and_names_it(bundles: Path) -> None:
    assert find_bundles(bundles) == [bundles / "good-a", bundles / "group" / "good-b"]
    broken = dict(find_broken_bundles(bundles))
    assert list(broken) == [bundles / "locked"]
    reason = broken[bundles / "locked"]
    assert "cannot be read" in reason and "permission denied" in reason


def test_find_bundles_in_an_unreadable_root(bundles: Path) -> None:
    assert find_bundles(bundles / "locked") == []
    assert [path for path, _ in find_broken_bundles(bundles / "locked")] == [bundles / "locked"]
    inner = bundles / "locked" / "hidden-bundle"
    assert find_bundles(inner) == []
    assert [path for path, _ in find_broken_bundles(inner)] == [inner]


def test_read_bundle_config_of_an_unreadable_folder_is_a_bundle_error(bundles: Path) -> None:
    with pytest.raises(BundleError, match=r"hidden-bundle.*cannot be read.*permission denied"):
        read_bundle_config(bundles / "locked" / "hidden-bundle")


def test_proc_as_a_bundle_folder_neither_crashes_nor_hangs() -> None:
    import time

    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    start = time.monotonic()
    assert find_bundles("/proc") == []
    broken = find_broken_bundles("/proc")
    assert all("cannot be read" in error for _, error in broken)
    assert time.monotonic() - start < 60


# ------------------------------------------------------------------------------------------- command line


def test_cli_eval_of_an_unreadable_folder_is_one_sentence(bundles: Path, capsys) -> None:
    from core.cli import main

    code = main(["eval", str(bundles / "locked" / "hidden-bundle")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "hidden-bundle" in err and "permission denied" in err
    assert "Traceback" not in err and "PermissionError" not in err and len(err.strip().splitlines()) == 1


def test_cli_turns_any_unexpected_os_error_into_one_sentence(monkeypatch, capsys) -> None:
    import core.cli as cli

    def locked_out(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/locked")

    monkeypatch.setitem(cli.COMMANDS, "eval", locked_out)
    assert cli.main(["eval", "anything"]) == 2
    _, err = capsys.readouterr()
    assert err.strip() == "conceptlens: error: cannot use /data/locked: permission denied."


def test_cli_label_skips_an_unreadable_sub_folder_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    from PIL import Image

    from core.cli import main

    (tmp_path / "photos" / "locked").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "photos" / "red.png")
    Image.new("RGB", (64, 48), (30, 30, 200)).save(tmp_path / "photos" / "locked" / "blue.png")
    deny(monkeypatch, tmp_path / "photos" / "locked")
    argv = ["label", str(tmp_path / "photos"), "--model", "toyclip-tiny:random", "--json", "--device", "cpu"]
    code = main(argv)
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 1
    assert [image["file"] for image in report["images"]] == [str(tmp_path / "photos" / "red.png")]
    assert [failure["file"] for failure in report["failed"]] == [str(tmp_path / "photos" / "locked")]
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "locked" in skipped[0] and "permission denied" in skipped[0]
    assert "Traceback" not in err


def test_cli_label_of_an_unreadable_folder_named_directly(tmp_path: Path, monkeypatch, capsys) -> None:
    from core.cli import main

    locked = tmp_path / "locked"
    locked.mkdir()
    deny(monkeypatch, locked)
    code = main(["label", str(locked), "--model", "toyclip-tiny:random", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code in (1, 2)
    assert "locked" in err and "permission denied" in err and "Traceback" not in err


def test_list_image_files_reports_unreadable_folders(tmp_path: Path, monkeypatch) -> None:
    from core.data.images import ImageLoadError, list_image_files

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.png").write_bytes(b"x")
    deny(monkeypatch, tmp_path / "b")
    problems: list[ImageLoadError] = []
    assert list_image_files([tmp_path], on_error=problems.append) == [tmp_path / "a" / "x.png"]
    assert len(problems) == 1 and problems[0].source_name == str(tmp_path / "b")
    assert "permission denied" in str(problems[0])


# ---------------------------------------------------------------------------------------------- dashboard


def _home(monkeypatch, roots: str):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", roots)
    return AppTest.from_file(str(HOME), default_timeout=120).run()


def test_home_with_an_unreadable_sub_folder_lists_the_rest_and_warns(tiny_bundles, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_bundles / "toy-ceir", tmp_path / "good-ceir")
    shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "locked" / "toy-hash-csd")
    deny(monkeypatch, tmp_path / "locked")
    app = _home(monkeypatch, str(tmp_path))
    assert not app.exception, [e.value for e in app.exception]
    warnings = [w.value for w in app.sidebar.warning]
    assert any("locked" in w and "permission denied" in w for w in warnings), warnings
    assert set(app.dataframe[0].value["bundle"]) == {"good-ceir"}
    for page in ("open_world", "retrieval"):
        app.switch_page(f"views/{page}.py").run()
        assert not app.exception, (page, [e.value for e in app.exception])


def test_home_with_proc_as_the_extra_folder(tiny_bundles, monkeypatch):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    app = _home(monkeypatch, str(tiny_bundles))
    app.sidebar.text_input(key="extra_bundle_root").set_value("/proc").run()
    assert not app.exception, [e.value for e in app.exception]
    assert not [e.value for e in app.error if "Traceback" in e.value]
    assert {"toy-ceir", "toy-clip"} <= set(app.dataframe[0].value["bundle"])


def test_home_with_an_extra_folder_inside_an_unreadable_one(tiny_bundles, tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    deny(monkeypatch, tmp_path / "locked")
    app = _home(monkeypatch, str(tiny_bundles))
    app.sidebar.text_input(key="extra_bundle_root").set_value(str(tmp_path / "locked" / "inner")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("inner" in e.value for e in app.sidebar.error), [e.value for e in app.sidebar.error]
    assert {"toy-ceir", "toy-clip"} <= set(app.dataframe[0].value["bundle"])

"""Bad input: one line on stderr (what, where, how to fix), exit 2, no traceback, nothing written."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_mnist_dir
from tuitrain.cli import main
from tuitrain.train.data import FILES

ROOT = Path(__file__).resolve().parents[2]

GOOD = """name = "p"
title = "A preset"

[defaults]
model = "model_a"
epochs = 1
batch_size = 32
lr = 0.003
device = "cpu"
"""


def preset_with(tmp_path: Path, old: str, new: str) -> Path:
    text = GOOD.replace(old, new) if old else GOOD + new
    assert text != GOOD
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def run_main(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tuitrain") and ": error: " in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("lr = 0.003", "lr = ", ("p.toml: TOML syntax error at line 8, column", "Fix the syntax")),
        (
            'title = "A preset"',
            'title = "A preset"\ncolour = "red"',
            ("p.toml:3:", "colour: unknown key", "Known: name"),
        ),
        ("epochs = 1", 'epochs = "3"', ("p.toml:6:", "epochs = '3'", "valid integer")),
        ("lr = 0.003", "lr = 1", ()),  # an integer is a fine float: no error (checked below)
        ("lr = 0.003", "lr = 0", ("p.toml:8:", "lr = 0", "greater than 0")),
        ("lr = 0.003", "lr = -0.1", ("p.toml:8:", "greater than 0")),
        ("epochs = 1", "epochs = 0", ("p.toml:6:", "epochs = 0", "greater than or equal to 1")),
        ("batch_size = 32", "batch_size = 0", ("p.toml:7:", "batch_size = 0")),
        ('model = "model_a"', 'model = "vgg"', ("p.toml:5:", "model = 'vgg'", "'model_a'")),
        ('model = "model_a"', 'activation = "gelu"', ("p.toml:5:", "activation = 'gelu'", "'relu'")),
        ('model = "model_a"', 'optimizer = "rmsprop"', ("p.toml:5:", "optimizer = 'rmsprop'", "'adam'")),
        ('device = "cpu"', 'device = "tpu"', ("p.toml:9:", "device = 'tpu'", "'cuda'")),
        ('model = "model_a"', 'colour = "red"', ("p.toml:5:", "unknown setting 'colour'", "Known:")),
        ("", "\n[grid]\nlr = []\n", ("p.toml:12:", "grid.lr is an empty list")),
        ("epochs = 1", "epochs = 1\nsubset = 60001", ("p.toml:7:", "subset = 60001", "60,000 training images")),
        ("", "\n[grid]\nlr = [0.1, -1.0]\n", ("p.toml:12:", "lr = -1.0")),
        ("", "\n[grid]\n" + "".join(f"seed{i} = [1]\n" for i in range(1)), ("unknown setting 'seed0'",)),
        ("", "\n[grid]\nseed = " + str(list(range(40))) + "\nlr = " + str([0.1] * 40) + "\n", ("more than 1000",)),
    ],
)
def test_bad_preset_values(tmp_path: Path, capsys, old: str, new: str, needles: tuple[str, ...]) -> None:
    path = preset_with(tmp_path, old, new)
    runs = tmp_path / "runs"
    code, err = run_main(
        capsys, ["--preset", str(path), "--no-ui", "--runs-dir", str(runs), "--data-dir", str(tmp_path / "nodata")]
    )
    if not needles:  # valid preset: gets as far as the (missing) data
        assert_clean_error(code, err, "no such folder")
    else:
        assert_clean_error(code, err, *needles)
    assert not runs.exists()


def test_unknown_preset_lists_available(tmp_path: Path, capsys) -> None:
    code, err = run_main(capsys, ["--preset", "nope", "--no-ui", "--runs-dir", str(tmp_path / "runs")])
    assert_clean_error(code, err, "unknown preset 'nope'", "Available:", "smoke", "path to a .toml")
    code, err = run_main(capsys, ["--preset", str(tmp_path / "missing.toml"), "--no-ui"])
    assert_clean_error(code, err, "missing.toml: no such preset file")


@pytest.mark.parametrize("damage", ["missing", "truncated", "bad_gzip", "bad_magic", "label_range", "count_mismatch"])
def test_missing_or_corrupt_data(tmp_path: Path, tiny_preset: Path, capsys, damage: str) -> None:
    data = write_mnist_dir(tmp_path / "data", n_train=64, n_test=16)
    images = data / (FILES["train_images"] + ".gz")
    labels = data / (FILES["train_labels"] + ".gz")
    raw = gzip.decompress(images.read_bytes())
    if damage == "missing":
        images.unlink()
        needles = ("train-images-idx3-ubyte",)
    elif damage == "truncated":
        images.write_bytes(gzip.compress(raw[:-100]))
        needles = ("train-images-idx3-ubyte",)
    elif damage == "bad_gzip":
        blob = bytearray(images.read_bytes())
        blob[20:60] = b"\xff" * 40
        images.write_bytes(bytes(blob))
        needles = ("train-images-idx3-ubyte", "intact copy")
    elif damage == "bad_magic":
        images.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))
        needles = ("wrong magic number",)
    elif damage == "label_range":
        lab = bytearray(gzip.decompress(labels.read_bytes()))
        lab[8] = 42
        labels.write_bytes(gzip.compress(bytes(lab)))
        needles = ("label 42 out of range",)
    else:
        lab = gzip.decompress(labels.read_bytes())
        labels.write_bytes(gzip.compress(lab[:-3]))
        needles = ()
    runs = tmp_path / "runs"
    code, err = run_main(
        capsys, ["--preset", str(tiny_preset), "--no-ui", "--runs-dir", str(runs), "--data-dir", str(data)]
    )
    assert_clean_error(code, err, str(data.name), *needles)
    assert not runs.exists()  # a data error writes nothing


def test_unwritable_runs_folder_checked_before_anything(
    tmp_path: Path, tiny_preset: Path, mnist_dir: Path, capsys
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_main(
        capsys,
        ["--preset", str(tiny_preset), "--no-ui", "--runs-dir", str(blocker / "runs"), "--data-dir", str(mnist_dir)],
    )
    assert_clean_error(code, err, "runs folder is not writable", "--runs-dir")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = run_main(
            capsys,
            ["--preset", str(tiny_preset), "--no-ui", "--runs-dir", str(locked / "runs"), "--data-dir", str(mnist_dir)],
        )
        assert_clean_error(code, err, "runs folder is not writable")


def test_device_cuda_without_cuda(tmp_path: Path, tiny_preset: Path, capsys, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(
        capsys, ["--preset", str(tiny_preset), "--no-ui", "--device", "cuda", "--runs-dir", str(tmp_path / "runs")]
    )
    assert_clean_error(code, err, "--device cuda", "no CUDA device", "--device auto or cpu")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--bogus"], ("unrecognized arguments: --bogus", "--help")),
        (["--epochs", "0", "--no-ui", "--preset", "smoke"], ("--epochs", "at least 1")),
        (["--lr", "-1", "--no-ui", "--preset", "smoke"], ("--lr",)),
        (["--lr", "abc", "--no-ui", "--preset", "smoke"], ("expected a number",)),
        (["--batch-size", "x", "--no-ui", "--preset", "smoke"], ("--batch-size", "whole number")),
        (["--device", "tpu", "--no-ui", "--preset", "smoke"], ("--device", "invalid choice")),
        (["--no-ui"], ("--no-ui needs --preset",)),
        # more images than the dataset has: refused, not trained on 60,000 and recorded as 99999999
        (["--subset", "99999999", "--no-ui", "--preset", "smoke"], ("--subset 99999999", "60,000 training images")),
        (["--test-subset", "10001", "--no-ui", "--preset", "smoke"], ("--test-subset 10001", "10,000 test images")),
        (["schema", "--what"], ("unrecognized arguments",)),
    ],
)
def test_bad_cli_arguments(tmp_path: Path, capsys, argv: list[str], needles: tuple[str, ...]) -> None:
    try:
        code = main(argv + ["--runs-dir", str(tmp_path / "runs")] if argv[0] != "schema" else argv)
    except SystemExit as exc:  # argparse exits
        code = exc.code
    err = capsys.readouterr().err
    assert_clean_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


@pytest.mark.subprocess
def test_bad_input_end_to_end_in_a_process(tmp_path: Path) -> None:
    """The real entry point: exit status 2, one line, no traceback, nothing written."""
    path = preset_with(tmp_path, "lr = 0.003", "lr = 0")
    out = subprocess.run(
        [sys.executable, "-m", "tuitrain", "--preset", str(path), "--no-ui", "--runs-dir", str(tmp_path / "runs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "p.toml:8: lr = 0" in out.stderr
    assert not (tmp_path / "runs").exists()

"""A preset with your own model ("module:Attr" in a file beside the preset): trained, recorded, resumed and
compared like a built-in one; each wrong model gets one line naming the key, exit 2, before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.test_bad_input import assert_clean_error, run_main
from tuitrain.compare import Comparison
from tuitrain.records import read_record

MODELS = """
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)


def five_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 5))


def flat_input():
    return nn.Linear(784, 10)  # a batch of (N, 1, 28, 28) images does not fit


def not_a_module():
    return 42


WIDTH = 3
"""

PRESET = """name = "mine"
title = "My own model"

[defaults]
model = "{model}"
model_args = {args}
epochs = 2
batch_size = 32
lr = 0.003
device = "cpu"

[grid]
lr = [0.003, 0.01]
"""


def write_preset(folder: Path, model: str = "my_models:Net", args: str = "{ hidden = 16 }") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_models.py").write_text(MODELS)
    path = folder / "mine.toml"
    path.write_text(PRESET.format(model=model, args=args))
    return path


def train_args(preset: Path, mnist_dir: Path, runs: Path) -> list[str]:
    return ["--preset", str(preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)]


def test_preset_with_a_model_beside_it_trains_resumes_and_compares(tmp_path, mnist_dir, capsys, monkeypatch):
    preset = write_preset(tmp_path / "experiment")
    monkeypatch.chdir(tmp_path)  # not the preset's folder: the module is found beside the preset all the same
    runs = tmp_path / "runs"
    code, err = run_main(
        capsys, ["--preset", str(preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)]
    )
    assert code == 0, err
    paths = sorted(runs.glob("*/*.json"))
    records = [read_record(p) for p in paths]
    assert [r.status for r in records] == ["completed", "completed"]
    for r in records:
        assert r.spec.model == "my_models:Net" and r.spec.model_args == {"hidden": 16}
        assert r.spec.model_dir == str((tmp_path / "experiment").resolve())
        assert len(r.epochs) == 2 and r.epochs[-1].test_accuracy > 30  # it learned: chance is 10%
    comparison = Comparison.from_paths(paths)
    assert comparison.differing_params() == ["lr"]
    # resumed like a built-in run: an interrupted run's checkpoint restores this model's weights
    data = json.loads(paths[1].read_text())
    data["status"], data["epochs"] = "interrupted", data["epochs"][:1]  # its losses are in its series log
    paths[1].write_text(json.dumps(data))
    code, err = run_main(capsys, ["--resume", str(paths[1]), "--no-ui", "--data-dir", str(mnist_dir)])
    assert code == 0, err
    resumed = read_record(paths[1])
    assert resumed.status == "completed" and len(resumed.epochs) == 2 and len(resumed.resumed_at) == 1


@pytest.mark.parametrize(
    ("model", "args", "needles"),
    [
        ("nomodule:Net", "{}", ("model = 'nomodule:Net'", "no module named 'nomodule'")),
        ("my_models:Missing", "{}", ("model = 'my_models:Missing'", "has no attribute 'Missing'")),
        ("my_models:WIDTH", "{}", ("model = 'my_models:WIDTH'", "not an nn.Module class or factory")),
        ("my_models:not_a_module", "{}", ("not an nn.Module",)),
        ("my_models:Net", "{ width = 3 }", ("model_args", "unexpected keyword argument 'width'")),
        ("my_models:five_classes", "{}", ("gave (2, 5); expected (2, 10) logits",)),
        ("my_models:flat_input", "{}", ("a forward pass on a batch of shape (2, 1, 28, 28) failed",)),
        ("Net", "{}", ("model = 'Net'", "'module:Attr'")),
    ],
)
def test_each_wrong_model_is_one_line_and_exit_2(tmp_path, mnist_dir, capsys, model, args, needles):
    preset = write_preset(tmp_path / "experiment", model, args)
    runs = tmp_path / "runs"
    code, err = run_main(
        capsys, ["--preset", str(preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)]
    )
    assert_clean_error(code, err, str(preset), *needles)
    assert not runs.exists()  # refused before anything was written


def test_other_datasets_need_their_folder_and_are_recorded(tmp_path, mnist_dir, capsys):
    preset = tmp_path / "fashion.toml"
    preset.write_text(
        'name = "fashion"\ntitle = "Fashion"\n[defaults]\nmodel = "model_a"\nepochs = 1\ndevice = "cpu"\n'
        'dataset = "fashion_mnist"\n'
    )
    runs = tmp_path / "runs"
    code, err = run_main(capsys, ["--preset", str(preset), "--no-ui", "--runs-dir", str(runs)])
    assert_clean_error(code, err, "dataset = 'fashion_mnist'", "--data-dir")
    code, err = run_main(
        capsys, ["--preset", str(preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)]
    )
    assert code == 0, err
    (path,) = runs.glob("*/*.json")
    assert read_record(path).spec.dataset == "fashion_mnist"

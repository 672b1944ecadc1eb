"""Preset files: the shipped ones, grid expansion, labels, overrides and broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuitrain.core.errors import PresetError
from tuitrain.presets import available_presets, find_preset, load_preset_file

ASSIGNMENT = {"smoke", "model_a_vs_b", "activations", "lr_sweep", "resnet_vs_alexnet"}


def test_shipped_presets_are_valid() -> None:
    assert ASSIGNMENT <= set(available_presets())
    for name in ASSIGNMENT:
        preset = find_preset(name)
        runs = preset.expand()
        assert runs and preset.title
        for run in runs:
            if name != "smoke":
                assert (run.spec.optimizer, run.spec.batch_size, run.spec.epochs) == ("adam", 64, 10)


def test_assignment_sweeps() -> None:
    lr = find_preset("lr_sweep").expand()
    assert [r.label for r in lr] == ["lr=0.1", "lr=0.01", "lr=0.001"]
    assert {r.spec.model for r in lr} == {"model_b"}
    acts = find_preset("activations").expand()
    assert [r.spec.activation for r in acts] == ["relu", "sigmoid", "tanh"]
    assert {r.spec.model for r in acts} == {"model_a"}
    ab = find_preset("model_a_vs_b").expand()
    assert [(r.label, r.spec.model, r.spec.lr) for r in ab] == [("Model A", "model_a", 0.001), ("Model B", "model_b", 0.001)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_grid_times_runs_and_overrides(tmp_path: Path) -> None:
    preset = load_preset_file(write(tmp_path, """
name = "g"
title = "grid"
[defaults]
epochs = 3
[grid]
activation = ["relu", "tanh"]
lr = [0.1, 0.01]
[[runs]]
model = "model_a"
[[runs]]
label = "B"
model = "model_b"
"""))
    runs = preset.expand()
    assert len(runs) == 8
    assert runs[0].label == "model=model_a, activation=relu, lr=0.1"
    assert runs[-1].label == "B, activation=tanh, lr=0.01"
    overridden = preset.expand({"epochs": 1, "lr": 0.5})
    assert {r.spec.epochs for r in overridden} == {1}
    assert {r.spec.lr for r in overridden} == {0.5}


def test_path_or_name(tiny_preset: Path) -> None:
    assert find_preset(str(tiny_preset)).name == "tiny"
    with pytest.raises(PresetError, match="unknown preset 'nope'. Available: .*lr_sweep"):
        find_preset("nope")


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\ntitle = "t"\n[defaults\n', "TOML syntax error.*line 3"),
        ('name = "x"\ntitle = "t"\ncolour = 1\n', "colour: unknown key"),
        ('name = "x"\n', "title: Field required"),
        ('name = "x"\ntitle = "t"\n[defaults]\nlearning_rate = 0.1\n', "unknown setting 'learning_rate'"),
        ('name = "x"\ntitle = "t"\n[defaults]\nlr = -1\n', "lr = -1: Input should be greater than 0"),
        ('name = "x"\ntitle = "t"\n[defaults]\nepochs = 0\n', "epochs = 0"),
        ('name = "x"\ntitle = "t"\n[defaults]\nbatch_size = "big"\n', "batch_size = 'big'"),
        ('name = "x"\ntitle = "t"\n[defaults]\nmodel = "vgg"\n', "model = 'vgg'"),
        ('name = "x"\ntitle = "t"\n[grid]\nactivation = ["relu", "gelu"]\n', "activation = 'gelu'"),
        ('name = "x"\ntitle = "t"\n[grid]\nlr = []\n', "grid.lr is an empty list"),
        ('name = "x"\ntitle = "t"\n[[runs]]\nmodle = "model_a"\n', "runs\\[1\\]: unknown setting 'modle'"),
        ('name = "bad name!"\ntitle = "t"\n', "name: String should match"),
    ],
)
def test_broken_preset_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PresetError, match=message) as info:
        load_preset_file(path)
    assert str(path) in str(info.value)

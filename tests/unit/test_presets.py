"""Preset files: the shipped ones, grid expansion, labels, overrides and broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuitrain.catalog import slug
from tuitrain.core.errors import PresetError, TuitrainError
from tuitrain.presets import Preset, available_presets, find_preset, load_preset_file

ASSIGNMENT = {"smoke", "model_a_vs_b", "activations", "lr_sweep", "resnet_vs_alexnet"}


def test_shipped_presets_are_valid() -> None:
    assert set(available_presets()) >= ASSIGNMENT
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
    assert [(r.label, r.spec.model, r.spec.lr) for r in ab] == [
        ("Model A", "model_a", 0.001),
        ("Model B", "model_b", 0.001),
    ]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_grid_times_runs_and_overrides(tmp_path: Path) -> None:
    preset = load_preset_file(
        write(
            tmp_path,
            """
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
""",
        )
    )
    runs = preset.expand()
    assert len(runs) == 8
    assert runs[0].label == "model=model_a, activation=relu, lr=0.1"
    assert runs[-1].label == "B, activation=tanh, lr=0.01"
    overridden = preset.expand({"epochs": 1, "lr": 0.5})
    assert {r.spec.epochs for r in overridden} == {1}
    assert {r.spec.lr for r in overridden} == {0.5}


def test_a_sweep_over_model_args_is_labelled_and_filed_by_its_keys(tmp_path: Path) -> None:
    grid = """
name = "widths"
title = "widths"
[defaults]
model = "my_models:Net"
[grid]
model_args = [{ hidden = 16 }, { hidden = 32, depth = 2 }]
"""
    runs = load_preset_file(write(tmp_path, grid)).expand()
    assert [r.label for r in runs] == ["hidden=16", "hidden=32, depth=2"]
    assert [slug(r.label) for r in runs] == ["hidden=16", "hidden=32_depth=2"]  # the run files' names
    explicit = grid.split("[grid]")[0] + "[[runs]]\nmodel_args = { hidden = 8 }\n[[runs]]\nmodel_args = {}\n"
    runs = load_preset_file(write(tmp_path, explicit)).expand()
    assert [r.label for r in runs] == ["hidden=8", "model_args={}"]


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


def test_override_of_a_swept_key_collapses_the_axis_and_labels_follow(tmp_path: Path) -> None:
    lr = find_preset("lr_sweep")
    runs = lr.expand({"lr": 0.05})
    assert [(r.label, r.spec.lr) for r in runs] == [("lr=0.05", 0.05)]
    assert lr.replaced_sweeps({"lr": 0.05, "epochs": 1}) == ["--lr 0.05 replaces the sweep over lr"]
    assert lr.replaced_sweeps({"epochs": 1}) == []
    preset = load_preset_file(
        write(
            tmp_path,
            """
name = "g"
title = "grid"
[grid]
activation = ["relu", "tanh"]
batch_size = [32, 64]
[[runs]]
label = "Adam, lr 0.1"
lr = 0.1
[[runs]]
label = "slow"
lr = 0.001
[[runs]]
label = "SGD"
optimizer = "sgd"
""",
        )
    )
    runs = preset.expand({"batch_size": 16, "lr": 0.05})
    # one run per remaining combination: the two runs that differed only in lr collapse into the first
    assert [r.label for r in runs] == [
        "Adam, lr 0.05, activation=relu, batch_size=16",
        "Adam, lr 0.05, activation=tanh, batch_size=16",
        "SGD, activation=relu, batch_size=16",
        "SGD, activation=tanh, batch_size=16",
    ]
    assert {(r.spec.lr, r.spec.batch_size) for r in runs} == {(0.05, 16)}
    assert preset.replaced_sweeps({"lr": 0.05, "batch_size": 16}) == [
        "--batch-size 16 replaces the sweep over batch_size",
        "--lr 0.05 replaces the sweep over lr",
    ]
    # a label that rests on a setting its run chose gets the new value appended
    assert [r.label for r in preset.expand({"lr": 0.05, "activation": "relu", "batch_size": 8})[:1]] == [
        "Adam, lr 0.05, activation=relu, batch_size=8"
    ]
    fast = load_preset_file(
        write(
            tmp_path,
            'name = "f"\ntitle = "t"\n[[runs]]\nlabel = "fast"\nlr = 0.1\n[[runs]]\nlabel = "B"\nmodel = "model_a"\n',
        )
    )
    assert [r.label for r in fast.expand({"lr": 0.05})] == ["fast, lr=0.05", "B"]


def test_a_run_cannot_set_what_the_grid_sweeps(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "x"\ntitle = "t"\n[grid]\nlr = [0.1, 0.01]\n[[runs]]\nlabel = "fast"\nlr = 0.1\n')
    with pytest.raises(PresetError, match=r"p.toml:7: runs\[1\] sets lr, which the grid sweeps"):
        load_preset_file(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 100000}, "--batch-size 100000: must be at most 65536."),
        ({"lr": 20.0}, "--lr 20: must be at most 10."),
        ({"epochs": 20000}, "--epochs 20000: must be at most 10000."),
        ({"seed": 2**63}, f"--seed {2**63}: must be at most {2**63 - 1}."),
    ],
)
def test_out_of_range_override_names_the_option(overrides: dict, message: str) -> None:
    with pytest.raises(TuitrainError) as info:
        find_preset("smoke").expand(overrides)
    assert str(info.value) == message
    assert not isinstance(info.value, PresetError)


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\ntitle = "clear\\u001b[2J"\n', r"p.toml:2: title holds a control character \(\\x1b\)"),
        (
            'name = "x"\ntitle = "t"\ndescription = "bell\\u0007"\n',
            r"p.toml:3: description holds a control character \(\\x07\)",
        ),
        (
            'name = "x"\ntitle = "t"\n[[runs]]\nmodel = "model_a"\n[[runs]]\nlabel = "two\\nlines"\n',
            r"p.toml:6: runs\[2\].label holds a control character \(\\n\)",
        ),
        (
            'name = "x"\ntitle = "t"\n[[runs]]\nlabel = "back\\rover"\n',
            r"p.toml:4: runs\[1\].label holds a control character \(\\r\)",
        ),
    ],
)
def test_control_characters_are_refused_in_presets(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        load_preset_file(write(tmp_path, text))


def test_multiline_description_is_fine(tmp_path: Path) -> None:
    text = 'name = "x"\ntitle = "t"\ndescription = """\nTwo\n\tlines."""\n'
    assert load_preset_file(write(tmp_path, text)).description == "Two\n\tlines."


def test_named_presets_are_named_after_their_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "quick.toml").write_text('name = "fast"\ntitle = "t"\n', encoding="utf-8")
    (folder / "good.toml").write_text('name = "good"\ntitle = "t"\n', encoding="utf-8")
    monkeypatch.setenv("TUITRAIN_PRESETS_DIR", str(folder))
    assert find_preset("good").name == "good"
    with pytest.raises(
        PresetError,
        match=r"quick.toml:1: name = 'fast' differs from the file name; .*rename the file "
        r"to fast.toml or set name = 'quick'",
    ):
        find_preset("quick")
    with pytest.raises(PresetError, match=r"unknown preset 'fast'.*quick.toml says name = 'fast'"):
        find_preset("fast")
    # passed by path from elsewhere, any file name will do; its runs are saved under its name
    elsewhere = tmp_path / "elsewhere" / "quick.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text('name = "fast"\ntitle = "t"\n', encoding="utf-8")
    assert find_preset(str(elsewhere)).name == "fast"


def test_a_preset_is_checked_as_it_is_made_not_when_expanded() -> None:
    """Validation is the model's (pydantic validators): a preset with a bad run cannot exist, expanded or not."""
    with pytest.raises(PresetError, match=r"^p: grid.lr is an empty list"):
        Preset(name="p", title="P", grid={"lr": []})
    with pytest.raises(PresetError, match=r"^p: runs\[2\]: unknown setting 'learning_rate'"):
        Preset(name="p", title="P", runs=[{"lr": 0.1}, {"learning_rate": 0.1}])
    with pytest.raises(PresetError, match=r"^p: lr = '0.1': Input should be a valid number"):
        Preset(name="p", title="P", defaults={"lr": "0.1"})  # strictly typed, as the file's TOML is

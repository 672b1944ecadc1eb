"""Repeats across seeds: presets and the command line train every run once per seed, labelled by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuitrain.cli import build_parser, overrides_from
from tuitrain.core.errors import PresetError, TuitrainError
from tuitrain.presets import SEEDS_KEY, Preset, load_preset_file, parse_seeds


def sweep(**extra) -> Preset:
    return Preset(name="p", title="P", defaults={"model": "model_a", "epochs": 1}, grid={"lr": [0.1, 0.01]}, **extra)


def test_seeds_repeat_every_run_with_readable_labels() -> None:
    runs = sweep().expand({SEEDS_KEY: [0, 1, 2]})
    assert [r.label for r in runs] == [
        "lr=0.1, seed=0",
        "lr=0.1, seed=1",
        "lr=0.1, seed=2",
        "lr=0.01, seed=0",
        "lr=0.01, seed=1",
        "lr=0.01, seed=2",
    ]
    # the label never contradicts the spec
    assert [(r.spec.lr, r.spec.seed) for r in runs] == [(0.1, 0), (0.1, 1), (0.1, 2), (0.01, 0), (0.01, 1), (0.01, 2)]


def test_preset_file_seeds_and_cli_seeds_win(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\ntitle = "P"\nseeds = [3, 4]\n[defaults]\nepochs = 1\n[grid]\nlr = [0.1, 0.01]\n')
    preset = load_preset_file(path)
    assert [r.spec.seed for r in preset.expand()] == [3, 4, 3, 4]
    assert [r.spec.seed for r in preset.expand({SEEDS_KEY: [7]})] == [7, 7]
    # a single --seed replaces the file's seeds: one run per setting, as without seeds
    assert [(r.label, r.spec.seed) for r in preset.expand({"seed": 9})] == [("lr=0.1", 9), ("lr=0.01", 9)]


def test_seed_set_in_two_places_is_refused() -> None:
    with pytest.raises(TuitrainError, match="--seed and --seeds"):
        sweep().expand({SEEDS_KEY: [0, 1], "seed": 3})
    with pytest.raises(PresetError, match="set it in one place"):
        Preset(name="p", title="P", grid={"seed": [0, 1]}, seeds=[0, 1]).expand()
    with pytest.raises(PresetError, match="repeats a seed"):
        sweep(seeds=[1, 1]).expand()


def test_cli_seeds_and_repeats() -> None:
    parse = build_parser().parse_args
    assert overrides_from(parse(["--seeds", "0,2,5"]))[SEEDS_KEY] == [0, 2, 5]
    assert overrides_from(parse(["--repeats", "3"]))[SEEDS_KEY] == [0, 1, 2]
    assert SEEDS_KEY not in overrides_from(parse(["--seed", "4"]))
    with pytest.raises(TuitrainError, match="give one of them"):
        overrides_from(parse(["--seeds", "0,1", "--repeats", "2"]))
    for bad in ("a,b", "-1,2", "1,1", ","):
        with pytest.raises(TuitrainError, match="--seeds"):
            parse_seeds(bad)


def test_resume_plan_lists_every_seeds_run(tmp_path: Path) -> None:
    from tuitrain.session import PresetInvocation

    invocation = PresetInvocation.prepare(sweep(), runs_dir=tmp_path, overrides={SEEDS_KEY: [0, 1]})
    assert len(invocation.runs) == 4
    assert len(set(invocation.files)) == 4  # one run file per seed: --resume finds each
    assert all("seed=" in f for f in invocation.files)

"""--executor ray without a cluster: the extra not installed, Ray options without --executor ray, how many runs
the cluster's resources hold at once."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuitrain import cli
from tuitrain.core.errors import TuitrainError
from tuitrain.executors.ray import (
    ADDRESS_ENV,
    INSTALL_HINT,
    RayCluster,
    RayOptions,
    cluster_capacity,
    plan_ray_jobs,
)


def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, "GPU": gpus}}


def test_without_ray_installed_one_line_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_preset: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = cli.main(["--preset", str(tiny_preset), "--no-ui", "--executor", "ray", "--runs-dir", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err == f"tuitrain: error: {INSTALL_HINT}\n"
    assert not (tmp_path / "r").exists()


def test_ray_options_need_executor_ray(capsys: pytest.CaptureFixture[str], tiny_preset: Path) -> None:
    assert cli.main(["--preset", str(tiny_preset), "--no-ui", "--gpus-per-run", "0.5"]) == 2
    assert capsys.readouterr().err == "tuitrain: error: --gpus-per-run goes with --executor ray.\n"


def test_capacity_counts_runs_that_fit_on_each_alive_node() -> None:
    nodes = [node(4, 1), node(2), node(8, 2, alive=False)]
    assert cluster_capacity(nodes, RayOptions()) == 6  # 1 CPU a run
    assert cluster_capacity(nodes, RayOptions(cpus_per_run=3)) == 1
    assert cluster_capacity(nodes, RayOptions(gpus_per_run=0.5)) == 2  # only the first node has a GPU
    assert cluster_capacity(nodes, RayOptions(gpus_per_run=2)) == 0


def test_jobs_auto_is_what_the_cluster_holds_and_a_number_caps_it() -> None:
    assert plan_ray_jobs("auto", runs=6, capacity=4) == 4
    assert plan_ray_jobs("auto", runs=3, capacity=4) == 3
    assert plan_ray_jobs(2, runs=6, capacity=4) == 2
    assert plan_ray_jobs(8, runs=6, capacity=4) == 6  # the runs beyond the cluster's room wait for a worker


def test_an_embedded_cluster_is_said_to_start_and_one_at_an_address_to_be_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ray")
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert RayCluster(RayOptions()).starting() == "starting an embedded Ray cluster"
    assert RayCluster(RayOptions(address="10.0.0.1:6379")).starting() == "joining the Ray cluster at 10.0.0.1:6379"


def test_no_authentication_token_is_one_line_saying_what_to_run() -> None:
    ray = pytest.importorskip("ray")
    from ray._private.authentication.authentication_constants import (
        TOKEN_AUTH_ENABLED_BUT_NO_TOKEN_FOUND_ERROR_MESSAGE,
    )

    def init(**_: object) -> None:
        raise ray.exceptions.AuthenticationError(TOKEN_AUTH_ENABLED_BUT_NO_TOKEN_FOUND_ERROR_MESSAGE)

    cluster = RayCluster(RayOptions(address="auto"))  # "auto": no port to check first
    cluster.ray = SimpleNamespace(init=init, exceptions=ray.exceptions, shutdown=lambda: None)
    with pytest.raises(TuitrainError) as caught:
        cluster.connect()
    assert str(caught.value) == (
        "--executor ray: cannot join the Ray cluster at auto: no authentication token on this machine: a cluster "
        "with token authentication needs RAY_AUTH_MODE=token and the head node's token here: copy its "
        "~/.ray/auth_token (`ray get-auth-token` on the head prints it), or set RAY_AUTH_TOKEN"
    )

"""--executor ray on real Ray clusters on this machine, every node on a loopback address other than 127.0.0.1
(Ray would swap 127.0.0.1 for the machine's interface address): one single-node cluster for the session, and a
two-node one for the spreading and node-loss tests. Every cluster is a `ray start --block` process group that the
tests started and stop."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, write_mnist_dir
from tuitrain import catalog
from tuitrain.records import RunRecord, read_record

pytest.importorskip("ray", reason='ray is not installed (pip install -e ".[ray]"; CI installs it)')

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TIMEOUT_S = 300
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


@dataclass
class Node:
    proc: subprocess.Popen

    def stop(self) -> None:
        """Stop this node at once, as a machine that goes away: its `ray start --block` process group (ours)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.proc.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    nodes: list[Node]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_env(tmp: Path) -> dict[str, str]:
    """The environment of the nodes and drivers: a fresh token of their own (`ray start --head` with token
    authentication needs one; ~/.ray/auth_token may not exist, and a user's own stays unused)."""
    token = tmp / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_TMPDIR": str(tmp),
        "RAY_AUTH_MODE": "token",  # token authentication for every node and driver, as the README says
        "RAY_AUTH_TOKEN_PATH": str(token),
        "TUITRAIN_RAY_NODE_IP": "127.0.0.2",
        "TUITRAIN_CPU_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def start_node(env: dict[str, str], *args: str) -> Node:
    proc = subprocess.Popen(
        [RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopped as one, and only what it started
    )
    return Node(proc)


def wait_for_cpus(env: dict[str, str], address: str, cpus: int) -> None:
    """Until the cluster has `cpus` CPUs (every node joined)."""
    code = (
        "import ray, time\n"
        f"ray.init(address={address!r}, _node_ip_address='127.0.0.2', logging_level='ERROR')\n"
        f"while ray.cluster_resources().get('CPU', 0) < {cpus}: time.sleep(0.2)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, timeout=120, check=True, capture_output=True)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One single-node cluster (2 CPUs, on 127.0.0.2) for the whole session."""
    tmp = tmp_path_factory.mktemp("ray")
    env = ray_env(tmp)
    port = free_port("127.0.0.2")
    head = start_node(
        env, "--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--include-dashboard=false", "--num-cpus=2"
    )
    cluster = Cluster(f"127.0.0.2:{port}", env, [head])
    try:
        wait_for_cpus(env, cluster.address, 2)
        yield cluster
    finally:
        head.stop()


@pytest.fixture
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head (127.0.0.2) and a second node (127.0.0.3), 1 CPU each."""
    env = ray_env(tmp_path_factory.mktemp("ray"))  # a short path: Ray's socket paths must fit in 107 bytes
    port = free_port("127.0.0.2")
    head = start_node(env, "--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--include-dashboard=false")
    cluster = Cluster(f"127.0.0.2:{port}", env, [head])
    try:
        time.sleep(3)  # the second node needs the head's GCS up
        cluster.nodes.append(start_node(env, f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3"))
        wait_for_cpus(env, cluster.address, 2)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.stop()


def tuitrain(cluster: Cluster, tmp_path: Path, preset: Path, *extra: str, executor: str = "ray") -> subprocess.Popen:
    data = tmp_path / "data"
    if not data.exists():
        write_mnist_dir(data, n_train=512, n_test=64)
    ray_args = ["--executor", "ray", "--ray-address", cluster.address] if executor == "ray" else []
    return subprocess.Popen(
        [sys.executable, "-m", "tuitrain", "--preset", str(preset), "--no-ui", "--data-dir", str(data)]
        + ray_args
        + list(extra),
        cwd=tmp_path,
        env={**cluster.env, "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def records(runs: Path) -> list[RunRecord]:
    return [read_record(p) for p in catalog.run_paths(runs)]


def wait_running(runs: Path, proc: subprocess.Popen, count: int, epochs: int = 1) -> list[RunRecord]:
    """Until `count` runs are running with at least `epochs` epochs saved."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        live = [r for r in records(runs) if r.status == "running" and len(r.epochs) >= epochs]
        if len(live) >= count:
            return live
        time.sleep(0.1)
    raise AssertionError("the runs did not get going in time")


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out, err


def test_ray_gives_the_batch_losses_of_local(ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path) -> None:
    code, out, err = finish(tuitrain(ray_cluster, tmp_path, tiny_preset, "--runs-dir", "ray-runs"))
    assert code == 0, err
    assert "Traceback" not in err and err.strip() == "", err  # Ray's output stays off the terminal
    code, _, err = finish(
        tuitrain(ray_cluster, tmp_path, tiny_preset, "--runs-dir", "local-runs", "--jobs", "2", executor="local")
    )
    assert code == 0, err
    on_ray, local = records(tmp_path / "ray-runs"), records(tmp_path / "local-runs")
    assert [r.label for r in on_ray] == [r.label for r in local]
    for a, b in zip(on_ray, local):
        assert a.status == "completed"
        assert a.batch_losses == b.batch_losses and a.batch_losses
        assert a.env.node_id and len(a.env.node_id) == 56
        assert b.env.node_id is None
    assert "up to 2 run(s) at a time" in out


def test_ctrl_c_saves_every_running_run_interrupted(ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path) -> None:
    proc = tuitrain(ray_cluster, tmp_path, tiny_preset, "--epochs", "200")
    wait_running(tmp_path / "runs", proc, 2)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    assert [r.status for r in records(tmp_path / "runs")] == ["interrupted", "interrupted"]
    assert "Continue with: tuitrain --resume" in out


def test_a_killed_worker_crashes_its_run_only_and_resume_continues_it(
    ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path
) -> None:
    proc = tuitrain(ray_cluster, tmp_path, tiny_preset, "--epochs", "60")
    victim = wait_running(tmp_path / "runs", proc, 2)[0]
    os.kill(victim.env.pid, signal.SIGKILL)  # the Ray worker process training it
    code, _, err = finish(proc)
    assert code == 1, err
    by_label = {r.label: r for r in records(tmp_path / "runs")}
    crashed = by_label.pop(victim.label)
    assert crashed.status == "crashed"
    assert crashed.error and "Ray worker" in crashed.error and "gone" in crashed.error
    assert [r.status for r in by_label.values()] == ["completed"]
    folder = next((tmp_path / "runs").iterdir())
    resumed = subprocess.run(
        [sys.executable, "-m", "tuitrain", "--resume", str(folder), "--data-dir", str(tmp_path / "data")]
        + ["--executor", "ray", "--ray-address", ray_cluster.address],
        cwd=tmp_path,
        env={**ray_cluster.env, "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr
    done = {r.label: r for r in records(tmp_path / "runs")}
    assert done[victim.label].status == "completed" and len(done[victim.label].epochs) == 60
    assert done[victim.label].resumed_at


def test_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path: Path, tiny_preset: Path) -> None:
    cluster = Cluster(f"127.0.0.2:{free_port('127.0.0.2')}", ray_env(tmp_path), [])  # nothing listens there
    code, _, err = finish(tuitrain(cluster, tmp_path, tiny_preset))
    assert code == 2
    assert err.startswith("tuitrain: error: --executor ray: cannot reach the Ray cluster at 127.0.0.2:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_cluster_too_small_for_one_run_is_refused(ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path) -> None:
    code, _, err = finish(tuitrain(ray_cluster, tmp_path, tiny_preset, "--gpus-per-run", "1"))
    assert code == 2
    assert "no node of the cluster can hold one run" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_joining_without_a_token_is_one_line_saying_what_to_run(
    ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path
) -> None:
    env = {k: v for k, v in ray_cluster.env.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    (tmp_path / "home").mkdir()
    cluster = Cluster(ray_cluster.address, {**env, "HOME": str(tmp_path / "home")}, [])  # no ~/.ray/auth_token
    code, _, err = finish(tuitrain(cluster, tmp_path, tiny_preset))
    assert code == 2
    assert err.startswith(
        f"tuitrain: error: --executor ray: cannot join the Ray cluster at {cluster.address}: no authentication "
        "token on this machine:"
    )
    assert "~/.ray/auth_token" in err and "`ray get-auth-token`" in err and "RAY_AUTH_TOKEN" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_run_waiting_for_room_is_said_once(ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path) -> None:
    """Three workers on a cluster that holds one run at a time: two wait for room, and say it once each."""
    proc = tuitrain(ray_cluster, tmp_path, tiny_preset, "--cpus-per-run", "2", "--jobs", "3", "--seeds", "0,1")
    code, out, err = finish(proc)
    assert code == 0, err
    assert f"Ray: joining the Ray cluster at {ray_cluster.address}…" in out
    waiting = [line for line in out.splitlines() if "waiting for room on the Ray cluster" in line]
    # runs 2 and 3 wait (run 1 goes to the worker with room), each said once; one of them may have started
    # before its worker said it waits
    expected = {
        f"[activation={act}, seed={seed}] Run {n}/4: waiting for room on the Ray cluster"
        for n, act, seed in [(2, "relu", 1), (3, "tanh", 0)]
    }
    assert waiting and set(waiting) <= expected and len(set(waiting)) == len(waiting), waiting


def node_of(pid: int, node: Node) -> bool:
    """Whether process `pid` descends from `node`'s `ray start` process."""
    while pid > 1:
        if pid == node.proc.pid:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_a_sweep_spreads_over_two_nodes_and_survives_losing_one(
    two_nodes: Cluster, tmp_path: Path, tiny_preset: Path
) -> None:
    proc = tuitrain(two_nodes, tmp_path, tiny_preset, "--seeds", "0,1", "--epochs", "60")
    live = wait_running(tmp_path / "runs", proc, 2)
    assert len({r.env.node_id for r in live}) == 2  # one run on each node
    second = two_nodes.nodes[1]
    on_second = next(r for r in live if node_of(r.env.pid, second))
    second.stop()
    code, _, err = finish(proc)
    assert code == 1, err
    statuses = {r.label: r.status for r in records(tmp_path / "runs")}
    assert statuses.pop(on_second.label) == "crashed"
    assert list(statuses.values()) == ["completed"] * 3


APP_ON_RAY = """
import asyncio, sys
from pathlib import Path
from tuitrain.core.ray_options import RayOptions
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.run import RunScreen

async def drive() -> None:
    app = TuitrainApp(preset=sys.argv[1], runs_dir=Path("runs"), data_dir=Path(sys.argv[2]), jobs=2,
                      ray=RayOptions(address=sys.argv[3]))
    async with app.run_test(size=(120, 40)) as pilot:
        while not (isinstance(app.screen, RunScreen) and app.screen.done):
            await pilot.pause(0.2)
            assert type(app.screen).__name__ != "ErrorScreen", app.screen.query("Static").first().render()
        print(app.screen.note)

asyncio.run(drive())
"""


def test_the_app_trains_on_ray(ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path) -> None:
    """In the app, sys.stdout and sys.stderr are Textual's, without file descriptors, which ray.init needs."""
    data = write_mnist_dir(tmp_path / "data", n_train=512, n_test=64)
    result = subprocess.run(
        [sys.executable, "-c", APP_ON_RAY, str(tiny_preset), str(data), ray_cluster.address],
        cwd=tmp_path,
        env={**ray_cluster.env, "TUITRAIN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Finished (2 completed)" in result.stdout
    assert [r.env.node_id is not None for r in records(tmp_path / "runs")] == [True, True]


def test_stop_and_pause_reach_ray_runs_through_the_driver(
    ray_cluster: Cluster, tmp_path: Path, tiny_preset: Path, capsys: pytest.CaptureFixture
) -> None:
    """`tuitrain pause|unpause|stop` from another process: the driver holds the folder, takes the request and
    forwards it to the actors, as the app's keys are."""
    from tuitrain.cli import main
    from tuitrain.remote_control import read_state

    proc = tuitrain(ray_cluster, tmp_path, tiny_preset, "--epochs", "500")
    running = wait_running(tmp_path / "runs", proc, 2)
    folder = next((tmp_path / "runs").iterdir())
    assert main(["pause", str(tmp_path / "runs")]) == 0  # the newest live invocation there
    assert "paused activation=relu, activation=tanh" in capsys.readouterr().out
    state = read_state(folder)
    assert state is not None and sorted(state.paused) == sorted(r.id for r in running)
    assert state.holder.startswith(f"pid {proc.pid} ")  # the driver, not an actor
    assert main(["unpause", str(folder)]) == 0
    assert read_state(folder).paused == []
    assert main(["stop", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "stopping every run; no more start" in out and out.count(": interrupted") == 2
    code, _, err = finish(proc)
    assert code == 1, err  # stopped early: not every run completed
    assert [r.status for r in records(tmp_path / "runs")] == ["interrupted", "interrupted"]
    assert main(["stop", str(folder)]) == 2

"""MAME clients placed by Ray (``train --ray``, ``TempestVecEnv(launcher="ray")``) on a local Ray instance with
2 CPUs: training, a killed MAME and a killed actor replaced, a node without the ROMs or MAME named in the error.

Needs the ``[ray]`` extra (CI installs it: these tests must run there, not skip)."""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'tempest-gym[ray]'")

from restart_checks import kill_and_check_cut, step_n  # noqa: E402

from tempest_gym.bridge.ray_launcher import RayLauncher, RayNodeError  # noqa: E402
from tempest_gym.cli import train  # noqa: E402
from tempest_gym.env.vec_env import TempestVecEnv  # noqa: E402
from tempest_gym.errors import MameNotFoundError, RomsNotFoundError  # noqa: E402

NODE = socket.gethostname()


def alive(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_train_with_two_ray_placed_clients_on_a_local_ray(rompath, tmp_path, caplog):
    """``train --ray`` without an address starts a local Ray instance (2 CPUs), places both clients on it, trains,
    and shuts the instance down at the end. (First in this file: no Ray is running yet.)"""
    assert not ray.is_initialized()
    caplog.set_level(logging.INFO, logger="tempest_gym.bridge.ray_launcher")
    logs = tmp_path / "logs"
    rc = train.main(
        ["--ray", "--env-kwargs", "ray_num_cpus:2", "-f", str(logs), "-n", "3000", "--num-envs", "2",
         "--rompath", rompath, "--save-freq", "-1", "--seed", "4", "--hyperparams", "learning_starts:500",
         "buffer_size:20000", "batch_size:32", "train_freq:4"]
    )  # fmt: skip
    assert rc == 0
    text = caplog.text
    assert "starting a local Ray instance with 2 CPU(s)" in text
    assert "slot 0: MAME pid" in text and "slot 1: MAME pid" in text and f"on Ray node {NODE}" in text
    assert not ray.is_initialized(), "the local instance train started is shut down when it ends"
    from tempest_gym.hybrid_dqn import HybridDQN

    run = logs / "hybrid_dqn" / "TempestMAME-v0_1"
    model = HybridDQN.load(run / "TempestMAME-v0.zip", device="cpu")
    assert model.num_timesteps >= 3000 and model._n_updates > 0
    assert (run / "monitor.csv").is_file()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for the tests below (TempestVecEnv uses the running connection)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_killed_mame_and_a_dead_actor_are_replaced(local_ray, rompath):
    env = TempestVecEnv(num_envs=2, rompath=rompath, expert=False, seed=2, launcher="ray")
    try:
        env.reset()
        procs = env.cluster.procs
        assert all(p.where.startswith(f"Ray node {NODE}") for p in procs)
        # the run's token reaches MAME through its settings file (0600), not its command line
        for p in procs:
            assert env.cluster.token not in Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
            environ = Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
            cfg = Path(next(e for e in environ if e.startswith(b"TEMPEST_GYM_CONFIG=")).split(b"=", 1)[1].decode())
            assert cfg.stat().st_mode & 0o777 == 0o600 and f"token={env.cluster.token}" in cfg.read_text()
        before = step_n(env, 200)[-1][0]

        # slot 1: its MAME is SIGKILLed; the actor stays and starts a new MAME
        old_pid, old_actor, old_run = procs[1].pid, procs[1].actor, env.cluster.clients[1].run_id
        obs, _, dones, infos = kill_and_check_cut(env, 1, old_pid, before)
        assert procs[1].pid != old_pid and procs[1].actor is old_actor and env.cluster.clients[1].run_id != old_run
        assert env.cluster.restarts.tolist() == [0, 1]

        # slot 0: its actor is killed (MAME goes with it); a new actor, placed by Ray, takes over
        old_actor, old_pid0 = procs[0].actor, procs[0].pid
        ray.kill(old_actor)
        for _, _, dones, infos in step_n(env, 200):
            if infos[0].get("client_restarted"):
                assert dones[0] and infos[0]["TimeLimit.truncated"] and not infos[0]["agent_in_control"]
                break
        else:
            pytest.fail("the slot whose actor was killed was not replaced within 200 steps")
        assert procs[0].actor is not old_actor and procs[0].dead is None and procs[0].pid != old_pid0
        assert not alive(old_pid0), "the dead actor's MAME went with it"
        assert env.cluster.restarts.tolist() == [1, 1]
        later = step_n(env, 400)
        assert any(s[3][0]["control"] for s in later) and any(s[3][1]["control"] for s in later), "both play again"
        assert env.observation_space.contains(later[-1][0][0])
    finally:
        pids = [p.pid for p in env.cluster.procs if p.pid]
        scratch = Path(tempfile.gettempdir()) / f"tempest-ray-{env.cluster._launcher.run}"
        assert scratch.is_dir()
        env.close()
    time.sleep(0.5)
    assert pids and not any(alive(pid) for pid in pids), "no MAME left behind"
    assert not scratch.exists(), "the scratch directories are removed, the dead actor's included"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rompath": "/nonexistent/roms"}, RomsNotFoundError, "ROM path /nonexistent/roms .*is not a directory"),
        ({"mame": "/nonexistent/mame"}, MameNotFoundError, "MAME not found at /nonexistent/mame"),
    ],
    ids=["missing-roms", "missing-mame"],
)
def test_a_node_without_the_roms_or_mame_is_named_in_a_clear_error(local_ray, rompath, kwargs, error, message):
    env = TempestVecEnv(num_envs=1, expert=False, launcher="ray", **{"rompath": rompath, **kwargs})
    t0 = time.monotonic()
    try:
        with pytest.raises(error, match=rf"Ray node {NODE}\b.*: {message}"):
            env.reset()
    finally:
        env.close()
    assert time.monotonic() - t0 < 30, "reported at once, not after a timeout"


def test_no_free_cpu_is_reported_not_a_hang(local_ray, rompath):
    """A third client on 2 CPUs cannot be placed: a clear error after connect_timeout, with the cluster's CPUs."""
    env = TempestVecEnv(num_envs=3, rompath=rompath, mame="/bin/true", expert=False, launcher="ray",
                        connect_timeout=10)  # fmt: skip
    try:
        with pytest.raises(RayNodeError, match=r"(?s)slot 2 within \d+ s: each MAME actor needs a free CPU.*2 CPU"):
            env.reset()
    finally:
        env.close()


def test_where_clients_connect():
    """Clients on the trainer's node use loopback; others the trainer's Ray node IP (listening everywhere), or
    they are told that a loopback trainer cannot be reached."""
    launcher = object.__new__(RayLauncher)
    launcher.trainer_ip = "10.0.0.1"
    assert launcher.connect_hosts("0.0.0.0") == {"10.0.0.1": "127.0.0.1", "*": "10.0.0.1"}
    assert launcher.connect_hosts("127.0.0.1") == {"10.0.0.1": "127.0.0.1", "*": None}
    assert launcher.connect_hosts("10.0.0.1") == {"*": "10.0.0.1"}


def test_ray_and_remote_exclude_each_other(capsys):
    with pytest.raises(ValueError, match="launcher='ray' starts the clients itself"):
        TempestVecEnv(num_envs=1, launcher="ray", remote=True)
    assert train.main(["--ray", "--remote", "-n", "10"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_a_node_without_the_package_is_named_in_a_clear_error(rompath, tmp_path):
    """The actors' Python cannot import tempest_gym (as on a node where it is not installed): the error names the
    node and says to install the package there. (Last in this file: it runs its own Ray instance, whose workers
    find a broken tempest_gym first.)"""
    fake = tmp_path / "node" / "tempest_gym"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no tempest-gym on this node (simulated)')\n")
    ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"working_dir": str(fake.parent)})
    env = TempestVecEnv(num_envs=1, rompath=rompath, expert=False, launcher="ray")
    try:
        with pytest.raises(RayNodeError, match=rf"(?s)Ray node {NODE}\b.*tempest-gym is not importable there.*"
                           "simulated"):  # fmt: skip
            env.reset()
    finally:
        env.close()
        ray.shutdown()

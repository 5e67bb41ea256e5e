"""Supervised emulators on the real game: crashed or hung MAME is replaced and training goes on."""

from __future__ import annotations

import os
import signal
import time

import pytest
from restart_checks import kill_and_check_cut, step_n

from tempest_gym.bridge.server import Server
from tempest_gym.env.vec_env import TempestVecEnv
from tempest_gym.errors import ClientDisconnectedError


def test_killed_mame_is_restarted_and_stepping_continues(rompath):
    env = TempestVecEnv(num_envs=2, rompath=rompath, expert=False, seed=2)
    try:
        env.reset()
        steps = step_n(env, 300)
        before = steps[-1][0]
        old_pid, old_run = env.cluster.procs[1].pid, env.cluster.clients[1].run_id
        # the episode in flight on slot 1 is cut (truncated, its last good observation kept); slot 0 is untouched
        obs, _, dones, infos = kill_and_check_cut(env, 1, old_pid, before)
        assert infos[1]["run_id"] != old_run and env.cluster.procs[1].pid != old_pid
        assert env.cluster.restarts.tolist() == [0, 1]
        later = step_n(env, 600)
        assert any(s[3][1]["control"] for s in later), "the new client plays again"
        assert env.observation_space.contains(later[-1][0][1])
    finally:
        env.close()


def test_a_slot_that_keeps_failing_gives_up_with_the_last_output(rompath, tmp_path):
    """A client whose MAME always dies at once is restarted max_restarts times, then the error names it."""
    env = TempestVecEnv(num_envs=1, rompath=rompath, expert=False, max_restarts=2)
    try:
        env.reset()
        step_n(env, 10)
        env.cluster.config.restart_backoff = 0.1
        # from now on the Lua client refuses its settings at start (exit 3) every time it is restarted
        for p in env.cluster.procs:
            p.settings["transport"] = "carrier-pigeon"
        os.kill(env.cluster.procs[0].pid, signal.SIGKILL)
        with pytest.raises(ClientDisconnectedError, match=r"(?s)failed 3 times in a row.*unknown transport"):
            step_n(env, 5)
    finally:
        env.close()


def test_client_reconnects_when_the_server_comes_back(rompath):
    """The server goes away under a running MAME (reconnect=1): MAME stays alive, waits, and comes back
    to a new server on the same port with a fresh handshake (a new run id)."""
    env = TempestVecEnv(num_envs=1, rompath=rompath, expert=False, supervise=False, client_settings={"reconnect": 1})
    try:
        env.reset()
        step_n(env, 100)
        cluster = env.cluster
        proc, port, old_run = cluster.procs[0], cluster.server.port, cluster.clients[0].run_id
        cluster.server.close()  # the "trainer" dies: listening socket and connection gone
        cluster._detach(0)
        time.sleep(2.0)
        assert proc.poll() is None, "MAME keeps running while the server is away"
        server = Server(port=port)
        cluster.server = server
        got = server.accept({0}, env.layout.size, env.layout.hash, timeout=30)
        cluster._attach(0, got[0])
        assert got[0].run_id != old_run
        arr = cluster.receive_states()
        assert arr["type"][0] == 2 and proc.poll() is None
        step_n(env, 100)
    finally:
        env.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_clients_are_supervised_and_rejoin(rompath):
    """python -m tempest_gym.client runs the MAMEs; the trainer listens (remote=True). A killed remote MAME
    is restarted by its supervisor and takes its slot back."""
    import subprocess
    import sys

    port = free_port()
    cmd = [sys.executable, "-m", "tempest_gym.cli.client", "--server", f"127.0.0.1:{port}", "--num", "2",
           "--rompath", rompath, "-v"]  # fmt: skip
    sup = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    env = TempestVecEnv(num_envs=2, rompath=rompath, expert=False, remote=True, port=port)
    try:
        env.reset()
        step_n(env, 200)
        children = subprocess.run(["pgrep", "-P", str(sup.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        later = step_n(env, 300)
        assert any(i.get("client_restarted") for s in later for i in s[3]) and env.cluster.restarts.sum() == 1
        obs = later[-1][0]
        assert env.observation_space.contains(obs[0]) and env.observation_space.contains(obs[1])
    finally:
        env.close()
        sup.send_signal(signal.SIGINT)
        out, _ = sup.communicate(timeout=30)
    assert "stopped (1 restart(s))" in out, out

"""Bad input and broken set-ups give clear errors (real MAME where it matters)."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

from tempest_gym.bridge.mame import find_mame, find_rompath, verify_roms
from tempest_gym.bridge.paths import lua_dir
from tempest_gym.env.vec_env import TempestVecEnv
from tempest_gym.errors import (
    ClientDisconnectedError,
    ClientTimeoutError,
    MameNotFoundError,
    PortInUseError,
    RomsNotFoundError,
)


def fake_mame(tmp_path: Path, body: str) -> str:
    """A stand-in MAME binary: passes -verifyroms, then runs ``body``."""
    path = tmp_path / "fake-mame"
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = "-verifyroms" ] || [ "$1" = "-verifyroms" ]; then echo "romset tempest1 is good"; exit 0; fi\n'
        + body
        + "\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_roms(tmp_path: Path) -> str:
    (tmp_path / "roms" / "tempest1").mkdir(parents=True)
    return str(tmp_path / "roms")


def test_missing_mame_is_named(tmp_path):
    with pytest.raises(MameNotFoundError, match="apt-get install"):
        find_mame(tmp_path / "no-such-mame")
    env = TempestVecEnv(mame=str(tmp_path / "no-such-mame"), rompath=fake_roms(tmp_path), expert=False)
    with pytest.raises(MameNotFoundError, match="no-such-mame"):
        env.reset()


def test_missing_roms_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("TEMPEST_ROMS", raising=False)
    with pytest.raises(RomsNotFoundError, match="--rompath"):
        find_rompath(None)
    with pytest.raises(RomsNotFoundError, match="not a directory"):
        find_rompath(tmp_path / "nowhere")
    with pytest.raises(RomsNotFoundError, match="no tempest1"):
        find_rompath(tmp_path)
    monkeypatch.setenv("TEMPEST_ROMS", str(tmp_path))
    with pytest.raises(RomsNotFoundError, match=r"\$TEMPEST_ROMS"):
        find_rompath(None)


@pytest.mark.skipif(not (os.path.exists("/usr/games/mame")), reason="needs Debian's MAME for -verifyroms")
def test_bad_roms_are_reported_by_verifyroms(tmp_path):
    roms = tmp_path / "roms" / "tempest1"
    roms.mkdir(parents=True)
    (roms / "136002-113.d1").write_bytes(b"\x00" * 2048)
    with pytest.raises(RomsNotFoundError, match="missing or bad"):
        verify_roms(find_mame(), str(tmp_path / "roms"))


def test_bad_settings_rejected_before_starting():
    with pytest.raises(ValueError, match="start_level 2 is not selectable"):
        TempestVecEnv(start_level=2, expert=False)
    with pytest.raises(ValueError, match="lives"):
        TempestVecEnv(lives=7, expert=False)
    with pytest.raises(ValueError, match="max_spin"):
        TempestVecEnv(max_spin=40, expert=False)
    with pytest.raises(TypeError, match="'live' \\(did you mean 'lives'\\?\\)"):
        TempestVecEnv(live=2, expert=False)


def test_env_hands_the_emulator_settings_to_the_cluster_config():
    env = TempestVecEnv(num_envs=2, seed=4, lives=2, step_timeout=9.0, mame_args=["-x"], expert=False)
    cfg = env.cluster_config
    assert (cfg.num_envs, cfg.seed, cfg.lives, cfg.step_timeout, cfg.mame_args) == (2, 4, 2, 9.0, ("-x",))
    assert cfg.death_penalty == env.death_penalty == 1000, "the env and the Lua client subtract the same penalty"


def test_port_in_use(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        port = blocker.getsockname()[1]
        env = TempestVecEnv(port=port, mame=fake_mame(tmp_path, "sleep 30"), rompath=fake_roms(tmp_path), expert=False)
        with pytest.raises(PortInUseError, match="already in use"):
            env.reset()
    finally:
        blocker.close()


def test_client_that_never_connects_times_out(tmp_path):
    env = TempestVecEnv(
        mame=fake_mame(tmp_path, "sleep 30"), rompath=fake_roms(tmp_path), connect_timeout=2, expert=False
    )
    with pytest.raises(ClientTimeoutError, match=r"slot\(s\) \[0\] did not connect"):
        env.reset()
    env.close()


def test_client_that_dies_at_start_shows_its_output(tmp_path):
    env = TempestVecEnv(
        mame=fake_mame(tmp_path, 'echo "tempest1: required files are missing"; exit 2'),
        rompath=fake_roms(tmp_path),
        expert=False,
    )
    with pytest.raises(ClientDisconnectedError, match="(?s)exit code 2.*required files are missing"):
        env.reset()


def test_layout_mismatch_is_refused_naming_both_sides(rompath, tmp_path):
    src = (lua_dir() / "state_layout.tsv").read_text()
    (tmp_path / "old_layout.tsv").write_text(src.replace("player_alive\t1\t0\t1\t1", "player_alive\t1\t0\t2\t2"))
    env = TempestVecEnv(rompath=rompath, expert=False, client_settings={"layout": str(tmp_path / "old_layout.tsv")})
    # the server refuses (REJECT with the reason); the client prints it and exits, which is reported
    with pytest.raises(ClientDisconnectedError, match="(?s)exit code 3.*state layout mismatch") as exc:
        env.reset()
    assert f"{env.layout.hash:08x}" in str(exc.value)
    env.close()


def test_lua_configuration_error_is_reported(rompath):
    env = TempestVecEnv(rompath=rompath, expert=False, client_settings={"transport": "carrier-pigeon"})
    with pytest.raises(ClientDisconnectedError, match="unknown transport carrier-pigeon"):
        env.reset()


def test_client_killed_mid_run_is_reported_without_supervision(rompath):
    env = TempestVecEnv(rompath=rompath, expert=False, supervise=False)
    try:
        env.reset()
        for _ in range(50):
            env.step(np.zeros((1, 2), np.float32))
        os.kill(env.cluster.procs[0].pid, signal.SIGKILL)
        with pytest.raises(ClientDisconnectedError, match=r"(?s)slot 0.*SIGKILL"):
            for _ in range(100):
                env.step(np.zeros((1, 2), np.float32))
    finally:
        env.close()


@pytest.mark.parametrize("transport, pipeline", [("emufile", True), ("luasocket", False)])
def test_other_transports_and_unpipelined_mode_step_the_game(rompath, transport, pipeline):
    env = TempestVecEnv(rompath=rompath, expert=False, transport=transport, pipeline=pipeline, seed=5)
    try:
        env.reset()
        control = 0
        fines = []
        for _ in range(400):
            obs, _, _, infos = env.step(np.array([[1.0, -3 / 31]], np.float32))
            if infos[0]["control"] and infos[0]["agent_in_control"]:
                control += 1
                fines.append(int(env.layout.raw(obs[0])[env.layout.index("player_fine")]))
    finally:
        env.close()
    assert control > 100
    steps = np.diff(fines) % 256
    assert np.mean(steps == 3) > 0.9  # a negative spinner raises the fine position by 3 per tick

"""Shared steps of the restart tests (local supervision and Ray-placed clients): the same guarantees, one check."""

from __future__ import annotations

import os
import signal

import numpy as np


def step_n(env, n, action=(1.0, 0.2)):
    """``n`` steps with one constant action for every env: the list of ``env.step`` results."""
    acts = np.tile(np.array(action, np.float32), (env.num_envs, 1))
    return [env.step(acts) for _ in range(n)]


def kill_and_check_cut(env, slot: int, pid: int, before: np.ndarray):
    """SIGKILL ``pid`` (``slot``'s MAME) and check the next step cuts only that slot's episode: truncated, marked
    restarted, out of the agent's control (the action in flight never ran) and ending on ``before[slot]``, its
    last good observation. Returns that step's ``(obs, rewards, dones, infos)``."""
    os.kill(pid, signal.SIGKILL)
    obs, rewards, dones, infos = step_n(env, 1)[0]
    assert dones[slot] and infos[slot]["TimeLimit.truncated"] and infos[slot]["client_restarted"]
    assert not infos[slot]["agent_in_control"], "the action that was in flight never ran: no transition"
    np.testing.assert_array_equal(infos[slot]["terminal_observation"], before[slot])
    others = [i for i in range(env.num_envs) if i != slot]
    assert not any("client_restarted" in infos[i] for i in others)
    return obs, rewards, dones, infos

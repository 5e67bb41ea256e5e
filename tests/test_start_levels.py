"""start_levels: each new game starts at a level drawn from a list (so training sees later levels early)."""

from __future__ import annotations

import numpy as np
import pytest

from tempest_gym.bridge.cluster import ClusterConfig
from tempest_gym.env.vec_env import TempestVecEnv


def test_unselectable_start_levels_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"start_levels \[10\] are not selectable"):
        ClusterConfig(start_levels=(9, 10)).validate()


def test_each_game_starts_at_one_of_the_listed_levels(rompath):
    env = TempestVecEnv(num_envs=1, rompath=rompath, start_levels=(9, 17), lives=2, seed=3)
    try:
        env.reset()
        level = env.layout.index("level")
        starts, was_in_control = [], False
        for _ in range(6000):  # standing still without firing: each game is over quickly
            obs, _, _, infos = env.step(np.zeros((1, 2), np.float32))
            in_control = bool(infos[0]["control"])
            if in_control and not was_in_control and obs[0, env.layout.index("lives")] * 6 >= 2:
                starts.append(int(round(obs[0, level] * 99)))
            was_in_control = in_control
    finally:
        env.close()
    assert len(starts) >= 2, starts
    assert set(starts) <= {9, 17}, starts

"""TempestVecEnv mechanics against synthetic clients that speak the real protocol (no MAME, no ROMs)."""

from __future__ import annotations

import numpy as np
import pytest

from tempest_gym.bridge.synthetic_client import write_wrapper
from tempest_gym.env.vec_env import TempestVecEnv, decode_actions


@pytest.fixture
def synthetic(tmp_path):
    (tmp_path / "roms" / "tempest1").mkdir(parents=True)
    return {"mame": write_wrapper(tmp_path), "rompath": str(tmp_path / "roms")}


def test_decode_actions_rounds_and_clamps():
    fz, spin = decode_actions(np.array([[0.4, 1.0], [0.6, -1.0], [2.5, 0.5], [9.0, 3.0], [-1.0, -0.01]]), 31)
    assert fz.tolist() == [0, 1, 2, 3, 0]
    assert spin.tolist() == [31, -31, 16, 31, 0]
    with pytest.raises(ValueError, match="finite"):
        decode_actions(np.array([[np.nan, 0.0]]), 31)


def test_lockstep_episodes_and_infos(synthetic):
    env = TempestVecEnv(num_envs=3, expert=False, seed=1, **synthetic)
    try:
        obs = env.reset()
        assert obs.shape == (3, env.layout.size) and env.observation_space.contains(obs[0])
        episodes = 0
        for t in range(1300):
            a = np.array([[3.0, 0.5], [1.0, -1.0], [0.0, 0.0]], np.float32)
            obs, rewards, dones, infos = env.step(a)
            assert rewards.dtype == np.float32 and dones.shape == (3,)
            if t > 0:
                np.testing.assert_allclose(infos[0]["executed_action"], [3.0, 16 / 31], atol=1e-6)
                np.testing.assert_allclose(infos[1]["executed_action"], [1.0, -1.0])
                assert all(i["agent_in_control"] for i in infos)
            for i in np.flatnonzero(dones):
                episodes += 1
                # the synthetic client dies every 600 ticks; the reset observation is tick 1
                assert infos[i]["episode"]["l"] == (599 if t < 600 else 600)
                np.testing.assert_array_equal(infos[i]["terminal_observation"], obs[i])
        assert episodes == 6
    finally:
        env.close()


def test_truncation_reset_and_seed(synthetic):
    env = TempestVecEnv(num_envs=2, expert=False, max_episode_steps=100, **synthetic)
    try:
        env.seed(5)
        env.reset()
        truncated = 0
        for _ in range(250):
            _, _, dones, infos = env.step(np.zeros((2, 2), np.float32))
            truncated += sum(bool(d and i["TimeLimit.truncated"]) for d, i in zip(dones, infos))
        assert truncated == 4
        env.reset()  # a second reset sends RESET to running clients and returns fresh observations
        assert [i["agent_in_control"] for i in env.reset_infos] == [False, False]
    finally:
        env.close()


def test_step_before_reset_is_refused(synthetic):
    env = TempestVecEnv(num_envs=1, expert=False, **synthetic)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((1, 2), np.float32))
    env.close()


def test_request_reset_restarts_only_the_named_instance(synthetic):
    env = TempestVecEnv(num_envs=2, expert=False, **synthetic)
    try:
        env.reset()
        for _ in range(50):
            env.step(np.zeros((2, 2), np.float32))
        env.request_reset([1])
        _, _, dones, infos = env.step(np.zeros((2, 2), np.float32))
        assert dones.tolist() == [False, True]
        assert infos[1]["reset"] and infos[1]["TimeLimit.truncated"] and not infos[1]["agent_in_control"]
        _, _, dones, infos = env.step(np.zeros((2, 2), np.float32))
        assert not dones.any() and infos[1]["agent_in_control"]
    finally:
        env.close()


def test_full_reset_cancels_pending_instance_resets(synthetic):
    env = TempestVecEnv(num_envs=2, expert=False, **synthetic)
    try:
        env.reset()
        env.step(np.zeros((2, 2), np.float32))
        env.request_reset([1])
        assert env._reset_next.tolist() == [False, True] and env._resets.tolist() == [1, 1]
        env.reset()  # restarts every instance: the request is void
        _, _, dones, infos = env.step(np.zeros((2, 2), np.float32))
        assert not dones.any() and not any("episode" in i for i in infos)
        assert env._resets.tolist() == [1, 1]
    finally:
        env.close()


def test_expert_labels_after_the_reply_are_the_same_labels(synthetic):
    """With ``expert_after_reply`` a step's infos get their labels during the next step (after its actions went
    out) or at once through ``expert_actions``; they are the labels computed before the reply."""
    runs = {}
    for after in (False, True):
        env = TempestVecEnv(num_envs=3, seed=2, expert_after_reply=after, **synthetic)
        try:
            env.reset()
            steps, asked = [], []
            for t in range(30):
                _, _, _, infos = env.step(np.tile([[1.0, 0.25]], (3, 1)).astype(np.float32))
                if after and t > 0:
                    np.testing.assert_array_equal(env.previous_expert_actions, np.stack(
                        [i["expert_action"] for i in steps[-1]]))  # fmt: skip
                if after:
                    assert "expert_action" not in infos[0]
                    if t % 3 == 0:  # some asked for before the next step, the rest filled in after its reply
                        asked.append(env.expert_actions([2, 0]))
                        assert "expert_action" in infos[2] and "expert_action" not in infos[1]
                steps.append(infos)
            env.step(np.zeros((3, 2), np.float32))
            runs[after] = np.stack([[i["expert_action"] for i in infos] for infos in steps])
        finally:
            env.close()
    np.testing.assert_array_equal(runs[True], runs[False])
    np.testing.assert_array_equal(np.stack(asked), runs[False][::3][:, [2, 0]])

"""Gymnasium and SB3 API conformance on the real game."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import VecMonitor

import tempest_gym  # noqa: F401  (registers TempestMAME-v0)
from tempest_gym.env.gym_env import TempestEnv


def test_sb3_check_env_passes_on_the_single_env(rompath):
    env = TempestEnv(rompath=rompath, expert=False)
    try:
        check_env(env, warn=False)
    finally:
        env.close()


def test_gym_make_single_env_plays_through_a_death(rompath):
    env = gym.make("TempestMAME-v0", rompath=rompath, expert=False, lives=2)
    try:
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs) and "control" in info
        for _ in range(3000):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            if terminated:
                assert info["episode"]["l"] > 0 and not truncated
                obs, info = env.reset()  # continues the game with the next life
                assert env.observation_space.contains(obs)
                break
        else:
            raise AssertionError("no death in 3,000 random ticks")
    finally:
        env.close()


def test_gym_make_vec_uses_the_vector_entry_point(rompath):
    envs = gym.make_vec(
        "TempestMAME-v0", num_envs=2, vectorization_mode="vector_entry_point", rompath=rompath, expert=False
    )
    try:
        obs, infos = envs.reset(seed=1)
        assert obs.shape == (2, envs.single_observation_space.shape[0])
        assert infos["control"].shape == (2,)
        finished = 0
        for _ in range(2000):
            obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
            if terminated.any():
                assert infos["_final_obs"][terminated].all()
                finished += int(terminated.sum())
        assert finished >= 1
    finally:
        envs.close()


def test_sb3_vecmonitor_reports_episodes(rompath):
    venv = VecMonitor(tempest_gym.make_tempest_vec_env(num_envs=1, rompath=rompath, expert=False, lives=2))
    try:
        venv.reset()
        episodes = []
        for _ in range(3000):
            _, _, dones, infos = venv.step(np.array([[1.0, 0.3]], np.float32))
            episodes += [i["episode"] for i, d in zip(infos, dones) if d]
            if episodes:
                break
        assert episodes and episodes[0]["l"] > 0
    finally:
        venv.close()

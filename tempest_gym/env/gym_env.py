"""Gymnasium faces of the same engine: ``TempestEnv`` (one instance) and ``TempestVectorEnv``.

Both wrap :class:`~tempest_gym.env.vec_env.TempestVecEnv`, which owns the MAME processes; see its
module docstring for what a step, an episode and a reset mean here. ``gym.make("TempestMAME-v0")``
gives the single env; ``gym.make_vec("TempestMAME-v0", num_envs=N, vectorization_mode="vector_entry_point")``
gives N instances in one process (cheaper than N single envs: one server, one lockstep loop).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from tempest_gym.env.vec_env import TempestVecEnv


class TempestEnv(gym.Env):
    """One MAME instance as a ``gymnasium.Env``.

    ``reset()`` right after an episode ended continues the game (the next life, or the new game
    the client starts after game over) instead of restarting it; a ``reset()`` mid-episode, or
    one with a new seed, starts a fresh game from the boot save state.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("num_envs", None)
        self._vec = TempestVecEnv(num_envs=1, **kwargs)
        self.observation_space = self._vec.observation_space
        self.action_space = self._vec.action_space
        self._continue: tuple[np.ndarray, dict[str, Any]] | None = None
        self.layout = self._vec.layout

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._continue is not None and seed is None:
            obs, info = self._continue
            self._continue = None
            return obs, info
        self._continue = None
        if seed is not None:
            self._vec.seed(seed)
        obs = self._vec.reset()
        return obs[0], dict(self._vec.reset_infos[0])

    def step(self, action):
        obs, rewards, dones, infos = self._vec.step(np.asarray(action, dtype=np.float32).reshape(1, 2))
        info = dict(infos[0])
        terminated = bool(dones[0]) and not info.get("TimeLimit.truncated", False)
        truncated = bool(dones[0]) and info.get("TimeLimit.truncated", False)
        if dones[0]:
            terminal = info.pop("terminal_observation")
            self._continue = (obs[0], {k: v for k, v in info.items() if k != "episode"})
            return terminal, float(rewards[0]), terminated, truncated, info
        return obs[0], float(rewards[0]), terminated, truncated, info

    def close(self) -> None:
        self._vec.close()
        super().close()


class TempestVectorEnv(VectorEnv):
    """N MAME instances as a ``gymnasium.vector.VectorEnv`` (same-step autoreset)."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        self._vec = TempestVecEnv(num_envs=num_envs, **kwargs)
        self.num_envs = num_envs
        self.single_observation_space = self._vec.observation_space
        self.single_action_space = self._vec.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.layout = self._vec.layout

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, int):
            self._vec.seed(seed)
        elif seed is not None:
            self._vec._seeds = list(seed)
        obs = self._vec.reset()
        return obs, _stack_infos(self._vec.reset_infos)

    def step(self, actions):
        obs, rewards, dones, infos = self._vec.step(np.asarray(actions, dtype=np.float32))
        truncated = np.array([bool(d and i.get("TimeLimit.truncated", False)) for d, i in zip(dones, infos)])
        terminated = dones & ~truncated
        if dones.any():
            final = np.zeros_like(obs)
            for i in np.flatnonzero(dones):
                final[i] = infos[i].pop("terminal_observation")
                infos[i]["final_obs"] = final[i]
        return obs, rewards, terminated, truncated, _stack_infos(infos)

    def close_extras(self, **kwargs: Any) -> None:
        self._vec.close()


def _stack_infos(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """List-of-dicts infos -> Gymnasium's dict of arrays with ``_key`` presence masks."""
    out: dict[str, Any] = {}
    n = len(infos)
    keys = {k for info in infos for k in info}
    for k in sorted(keys):
        present = np.array([k in info for info in infos])
        values = [info.get(k) for info in infos]
        if all(isinstance(v, np.ndarray) for v in values if v is not None) and present.all():
            out[k] = np.stack(values)
        else:
            arr = np.empty(n, dtype=object)
            arr[:] = values
            out[k] = arr
        out[f"_{k}"] = present
    return out

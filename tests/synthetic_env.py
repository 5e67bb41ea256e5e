"""A small synthetic hybrid-action task that behaves like TempestVecEnv's interface, for fast tests.

State: which choice ``c`` pays this step (one-hot over ``n_choices``), a target ``t`` in [-1, 1], and whether
the agent is in control. Action: ``Box([0, -1], [n_choices - 1, 1])`` (choice, parameter), as in Tempest.

Reward for choice ``k`` with executed parameter ``x`` (``w`` = ``width``):

* ``k == c``: ``max(0, 1 - |x - t| / w)``        (best choice; its best parameter depends on the state)
* ``k == c + 1``: ``0.5 * max(0, 1 - |x + t| / w)`` (second best, with the *opposite* best parameter: one
  shared parameter for all choices cannot serve both, per-choice parameters can)
* ``k == c + 2``: ``-1`` and the episode terminates  (deadly)
* otherwise 0.

Episodes last ``max_steps`` unless terminated (then ``truncated``). With ``uncontrolled_prob`` > 0 the next
state is, with that probability, a "cut-scene" whose action is ignored: ``info["agent_in_control"]`` is False
on the step that answers it and ``info["executed_action"]`` is what ran (zeros). With ``quantize=q`` the
executed parameter is rounded to multiples of ``1/q`` (like Tempest's spinner, ``q = 31``), so executed and
commanded actions differ. ``info["expert_action"]`` is the optimal action for the *returned* observation
(also in the reset infos).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv


class HybridChoiceEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(
        self,
        n_choices: int = 4,
        max_steps: int = 16,
        width: float = 0.3,
        quantize: int | None = None,
        uncontrolled_prob: float = 0.0,
        with_expert: bool = True,
    ) -> None:
        super().__init__()
        self.n_choices = n_choices
        self.max_steps = max_steps
        self.width = width
        self.quantize = quantize
        self.uncontrolled_prob = uncontrolled_prob
        self.with_expert = with_expert
        self.observation_space = spaces.Box(-1.0, 1.0, (n_choices + 2,), np.float32)
        self.action_space = spaces.Box(
            np.array([0.0, -1.0], np.float32), np.array([n_choices - 1, 1.0], np.float32), dtype=np.float32
        )
        self._c = 0
        self._t = 0.0
        self._control = True
        self._steps = 0

    # ------------------------------------------------------------------ helpers
    def _new_state(self) -> None:
        self._control = not (self.uncontrolled_prob and self.np_random.random() < self.uncontrolled_prob)
        self._c = int(self.np_random.integers(self.n_choices))
        self._t = float(np.round(self.np_random.uniform(-1.0, 1.0), 3))

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n_choices + 2, dtype=np.float32)
        if self._control:
            obs[self._c] = 1.0
            obs[self.n_choices] = self._t
        obs[self.n_choices + 1] = 1.0 if self._control else 0.0
        return obs

    def expert_action(self) -> np.ndarray:
        """Optimal action for the current state."""
        return np.array([self._c, self._t], dtype=np.float32)

    def reward(self, k: int, x: float) -> tuple[float, bool]:
        c, t, w = self._c, self._t, self.width
        if k == c:
            return max(0.0, 1.0 - abs(x - t) / w), False
        if k == (c + 1) % self.n_choices:
            return 0.5 * max(0.0, 1.0 - abs(x + t) / w), False
        if k == (c + 2) % self.n_choices:
            return -1.0, True
        return 0.0, False

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"control": self._control}
        if self.with_expert:
            info["expert_action"] = self.expert_action()
        return info

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._steps = 0
        self._new_state()
        self._control = True
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(2)
        in_control = self._control
        if in_control:
            k = int(np.clip(np.rint(a[0]), 0, self.n_choices - 1))
            x = float(np.clip(a[1], -1.0, 1.0))
            if self.quantize:
                x = float(np.rint(x * self.quantize) / self.quantize)
            reward, terminated = self.reward(k, x)
            executed = np.array([k, x], dtype=np.float32)
        else:
            reward, terminated = 0.0, False
            executed = np.zeros(2, dtype=np.float32)
        self._steps += 1
        truncated = not terminated and self._steps >= self.max_steps
        self._new_state()
        info = self._info()
        info["agent_in_control"] = in_control
        info["executed_action"] = executed
        return self._obs(), float(reward), terminated, truncated, info


def evaluate(model_predict: Any, n_episodes: int = 30, seed: int = 1000, **env_kwargs: Any) -> float:
    """Mean episode return of ``model_predict(obs) -> action`` on fresh envs (no expert involved)."""
    env = HybridChoiceEnv(**env_kwargs)
    total = 0.0
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(model_predict(obs))
            total += r
            done = term or trunc
    return total / n_episodes


class LayoutObsEnv(gym.Env):
    """Tempest-shaped observations: random valid values of ``lua/state_layout.tsv`` (each ``raw / scale``), the
    Tempest action space, reward = minus the distance of the parameter to a state feature. For plumbing tests
    of the exact uint8 replay codes, not for learning."""

    def __init__(self, max_steps: int = 50) -> None:
        super().__init__()
        from tempest_gym.bridge.layout import default_layout
        from tempest_gym.env.vec_env import hybrid_action_space

        self.layout = default_layout()
        self.observation_space = spaces.Box(self.layout.low, self.layout.high, dtype=np.float32)
        self.action_space = hybrid_action_space()
        self.max_steps = max_steps
        self._steps = 0
        self._obs = np.zeros(self.layout.size, np.float32)

    def _draw(self) -> np.ndarray:
        lo, hi = self.layout.lo.astype(np.int64), self.layout.hi.astype(np.int64)
        raw = self.np_random.integers(lo, hi + 1)
        self._obs = (raw / self.layout.scale.astype(np.float64)).astype(np.float32)
        return self._obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._steps = 0
        return self._draw(), {"expert_action": np.array([1.0, 0.0], np.float32)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -abs(float(action[1]) - float(self._obs[self.layout.index("pulse_phase")]))
        self._steps += 1
        return self._draw(), reward, False, self._steps >= self.max_steps, {"expert_action": np.array([1.0, 0.0])}


class LayoutVecEnv(DummyVecEnv):
    """A DummyVecEnv exposing ``layout`` the way TempestVecEnv does."""

    def __init__(self, n_envs: int = 2, **kwargs: Any) -> None:
        super().__init__([lambda: LayoutObsEnv(**kwargs) for _ in range(n_envs)])
        self.layout = self.envs[0].unwrapped.layout

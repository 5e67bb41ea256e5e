"""Who plays: the expert, random actions, or a trained model, as one ``(obs, infos) -> actions`` function.

The command-line tools choose among them with ``--algo`` (``tempest_gym.cli.common.make_player``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Policy = Callable[[np.ndarray, list[dict]], np.ndarray]


def random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random actions in the Box encoding (fire/zap in [0, 3], spinner in [-1, 1])."""
    return np.stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)], axis=1).astype(np.float32)


def random_policy(seed: int = 0) -> Policy:
    rng = np.random.default_rng(seed)
    return lambda obs, infos: random_actions(rng, obs.shape[0])


def expert_policy(env, seed: int = 0) -> Policy:
    from tempest_gym.policies.expert import TempestExpert

    expert = TempestExpert(layout=env.layout, max_spin=env.max_spin, seed=seed)
    return lambda obs, infos: expert.predict_batch(obs)


def model_policy(model, deterministic: bool = True) -> Policy:
    """A trained SB3 model acting alone (no expert override, no exploration when deterministic)."""

    def act(obs: np.ndarray, infos: list[dict]) -> np.ndarray:
        actions, _ = model.predict(obs, deterministic=deterministic)
        return actions

    return act

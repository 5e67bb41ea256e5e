"""Who plays: the expert, random actions, or a trained model, as one ``(obs, infos) -> actions`` function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Policy = Callable[[np.ndarray, list[dict]], np.ndarray]
BUILTIN = ("expert", "random")


def random_policy(seed: int = 0) -> Policy:
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, infos: list[dict]) -> np.ndarray:
        n = obs.shape[0]
        return np.stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)], axis=1).astype(np.float32)

    return act


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


def make_policy(algo: str, env, seed: int = 0, folder: str = "logs", model_path: str | None = None,
                exp_id: int = 0, load_best: bool = False, deterministic: bool = True, env_id: str = "TempestMAME-v0",
                ) -> Policy:  # fmt: skip
    if algo == "random":
        return random_policy(seed)
    if algo == "expert":
        return expert_policy(env, seed)
    from tempest_gym.cli.zoo import load_trained_model

    model = load_trained_model(algo, env_id, folder=folder, model_path=model_path, exp_id=exp_id,
                               load_best=load_best, env=env)  # fmt: skip
    return model_policy(model, deterministic)

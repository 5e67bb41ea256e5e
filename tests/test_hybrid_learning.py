"""Budgeted learning test: HybridDQN beats a random policy clearly on the synthetic hybrid task.

Fixed seeds and step budgets; no timing. The task (tests/synthetic_env.py) needs the right choice for the state
*and* a state-dependent parameter per choice, and punishes one choice with termination. A random policy scores
about -0.8 per episode, the optimum 16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_env import HybridChoiceEnv, evaluate

from tempest_gym.hybrid_dqn import HybridDQN

th.set_num_threads(1)


def random_baseline() -> float:
    rng = np.random.default_rng(0)
    return evaluate(lambda _obs: np.array([rng.integers(4), rng.uniform(-1, 1)], np.float32), n_episodes=50)


def train(steps: int, spinner_bins: int | None, expert: bool) -> HybridDQN:
    env = DummyVecEnv([lambda: HybridChoiceEnv() for _ in range(4)])
    model = HybridDQN(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=20_000,
        learning_starts=500,
        batch_size=64,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=100,
        gamma=0.9,
        exploration_fraction=0.3,
        expert_ratio="lin_0.3_0.0" if expert else 0.0,
        demo_loss_coef=1.0 if expert else 0.0,
        replay_buffer_kwargs=dict(boundary_size=10_000),
        policy_kwargs=dict(net_arch=[64, 64], spinner_bins=spinner_bins),
        seed=0,
    )
    return model.learn(steps)


@pytest.mark.parametrize(
    ("spinner_bins", "expert", "steps"),
    [(None, True, 6_000), (11, True, 6_000), (None, False, 12_000)],
    ids=["hybrid-expert", "binned-expert", "hybrid-pure-rl"],
)
def test_beats_random_policy(spinner_bins, expert, steps):
    baseline = random_baseline()
    model = train(steps, spinner_bins, expert)
    # evaluation: the greedy model alone, no expert, fresh seeds
    score = evaluate(lambda obs: model.predict(obs, deterministic=True)[0], n_episodes=30)
    assert baseline < 0
    assert score > baseline + 4.0, (score, baseline)

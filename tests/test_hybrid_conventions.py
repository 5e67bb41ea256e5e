"""HybridDQN as an SB3 user expects it: schedule strings for the learning rate, a seeded and uniform random
branch in ``predict(deterministic=False)``, and ``train/learning_rate`` logged with the background learner."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_env import HybridChoiceEnv

from tempest_gym.hybrid_dqn import HybridDQN

th.set_num_threads(1)


# ------------------------------------------------------------------ HybridDQN
def vec_env(n: int = 2) -> DummyVecEnv:
    return DummyVecEnv([lambda: HybridChoiceEnv() for _ in range(n)])


def small_model(env=None, **kw) -> HybridDQN:
    args = dict(
        buffer_size=5_000,
        learning_starts=100,
        batch_size=32,
        train_freq=1,
        target_update_interval=50,
        seed=0,
        policy_kwargs=dict(net_arch=[32, 32]),
        replay_buffer_kwargs=dict(boundary_size=2_500),
    )
    args.update(kw)
    return HybridDQN("MlpPolicy", env if env is not None else vec_env(), **args)


@pytest.mark.parametrize("bins", [None, 7])
def test_learning_rate_accepts_schedule_strings(tmp_path, bins):
    m = small_model(learning_rate="lin_3e-4", policy_kwargs=dict(net_arch=[32, 32], spinner_bins=bins))
    assert m.lr_schedule(1.0) == pytest.approx(3e-4) and m.lr_schedule(0.5) == pytest.approx(1.5e-4)
    m._current_progress_remaining = 0.5
    m.set_logger(Logger(folder=None, output_formats=[]))
    m.train(gradient_steps=0, batch_size=32)
    assert m.policy.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-4)
    m.save(tmp_path / "m.zip")
    loaded = HybridDQN.load(tmp_path / "m.zip")
    assert loaded.learning_rate == "lin_3e-4" and loaded.lr_schedule(0.0) == pytest.approx(0.0)
    loaded = HybridDQN.load(tmp_path / "m.zip", learning_rate="lin_1e-3_1e-4")
    assert loaded.lr_schedule(0.0) == pytest.approx(1e-4)
    assert small_model(learning_rate="const_2e-4").lr_schedule(0.3) == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="cannot read schedule"):
        small_model(learning_rate="fast")


def explore_model(**kw) -> HybridDQN:
    return small_model(exploration_initial_eps=1.0, exploration_final_eps=1.0, **kw)


def test_stochastic_predict_is_uniform_seeded_and_uses_the_model_parameter():
    obs = np.random.default_rng(1).uniform(-1, 1, (8000, 6)).astype(np.float32)
    m = explore_model()
    global_state = np.random.get_state()[1].copy()
    actions, _ = m.predict(obs, deterministic=False)
    assert np.array_equal(np.random.get_state()[1], global_state), "numpy's global generator is left alone"
    counts = np.bincount(m.spec.choices(actions), minlength=4) / len(obs)
    # uniform over the 4 choices (binomial sd 0.005), not 1/6, 1/3, 1/3, 1/6 from rounding a uniform float
    assert np.abs(counts - 0.25).max() < 0.025, counts
    # the same seed gives the same actions; another seed other ones
    np.testing.assert_array_equal(explore_model().predict(obs, deterministic=False)[0], actions)
    assert not np.array_equal(explore_model(seed=1).predict(obs, deterministic=False)[0], actions)
    # without noise the parameter is exactly the model's parameter for the drawn choice
    m = explore_model(param_noise="none")
    actions, _ = m.predict(obs[:64], deterministic=False)
    with th.no_grad():
        _, per_choice = m.policy.act(m.policy.obs_to_tensor(obs[:64])[0])
    choice = m.spec.choices(actions)
    np.testing.assert_allclose(actions[:, 1], per_choice.numpy()[np.arange(64), choice], rtol=1e-6)
    # one observation in, one action out; deterministic=True stays greedy
    single, _ = m.predict(obs[0], deterministic=False)
    assert single.shape == (2,)
    greedy, _ = m.predict(obs[:64], deterministic=True)
    np.testing.assert_array_equal(greedy, m.policy.predict(obs[:64], deterministic=True)[0])
    assert m.action_space.contains(single)


def test_learning_rate_is_logged_with_the_background_learner(tmp_path):
    m = small_model(
        learning_rate="lin_1e-3", learning_starts=200, async_learner=True, max_replay_ratio=0.25, policy_sync_interval=5
    )
    m.set_logger(configure(str(tmp_path), ["csv"]))
    m.learn(1_000, log_interval=4)
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["train/learning_rate"]) for r in rows if r.get("train/learning_rate")]
    assert lrs, "train/learning_rate was never logged"
    assert all(0 <= lr <= 1e-3 for lr in lrs) and lrs == sorted(lrs, reverse=True)

"""``FitUpdatesToBudget`` (``train --max-seconds``, on by default): updates per round shrink to fit the budget,
never grow past the recipe's, and the recipe's value is what the model holds after training.

Deterministic without timing assertions: a budget already spent fits one update per round whatever the machine's
speed, an unreachable one fits the recipe's value, and the arithmetic is checked on a fake clock.
"""

from __future__ import annotations

import types

import gymnasium as gym
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

from tempest_gym.training.callbacks import FitUpdatesToBudget


class UpdatesPerRound(BaseCallback):
    """Records the model's ``gradient_steps`` and update count at each round's start."""

    def __init__(self) -> None:
        super().__init__(0)
        self.rounds: list[tuple[int, int]] = []

    def _on_rollout_start(self) -> None:
        self.rounds.append((self.model.gradient_steps, self.model._n_updates))

    def _on_step(self) -> bool:
        return True


def train_dqn(seconds: float) -> tuple[DQN, FitUpdatesToBudget, UpdatesPerRound]:
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_starts=100, train_freq=50, gradient_steps=8,
                batch_size=16, policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")  # fmt: skip
    fit, seen = FitUpdatesToBudget(seconds, margin_s=0.0, verbose=0), UpdatesPerRound()
    model.learn(600, callback=[fit, seen])
    return model, fit, seen


def test_a_spent_budget_fits_one_update_per_round_and_the_recipe_is_restored():
    model, fit, seen = train_dqn(seconds=1e-6)
    assert fit.fitted == 1
    steps = [seen.rounds[k + 1][1] - seen.rounds[k][1] for k in range(len(seen.rounds) - 1)]
    assert steps[:2] == [0, 0]  # collecting up to learning_starts: no updates
    assert steps[2] == 8  # the first training round: no rates measured yet, the recipe's value
    assert set(steps[3:]) == {1}  # then one update per round
    assert model.gradient_steps == 8  # what a saved model holds


def test_an_ample_budget_keeps_the_recipe():
    model, fit, seen = train_dqn(seconds=1e9)
    assert fit.fitted == 8
    assert {g for g, _ in seen.rounds} == {8}
    assert model.gradient_steps == 8


def test_the_fit_arithmetic_on_a_fake_clock():
    clock = types.SimpleNamespace(t=0.0)
    model = types.SimpleNamespace(gradient_steps=600, train_freq=TrainFreq(1000, TrainFrequencyUnit.STEP),
                                  n_envs=2, _total_timesteps=620_000, _n_updates=0, num_timesteps=0,
                                  logger=types.SimpleNamespace(record=lambda *a, **k: None))  # fmt: skip
    fit = FitUpdatesToBudget(6300, margin_s=0.0, smoothing=1.0, verbose=0)
    fit.clock = lambda: clock.t
    fit.init_callback(model)
    fit.on_training_start({}, {})

    def round_(collect_s: float, train_s: float, updates: int) -> None:
        fit.on_rollout_start()
        clock.t += collect_s
        model.num_timesteps += 2000
        fit.on_rollout_end()
        clock.t += train_s
        model._n_updates += updates

    round_(2.0, 100.0, 1000)  # 1,000 steps/s; the first training: 10 updates/s
    round_(2.0, 60.0, 600)
    # 104 s spent; 616,000 steps left take 616 s; this round and 308 more share 5,580 s at 0.1 s an update
    assert fit.fitted == int((6300 - 104 - 616) / (309 * 0.1)) == 180
    assert model.gradient_steps == 180
    model._total_timesteps = 10_000  # few steps left: the recipe's value, never more
    round_(2.0, 18.0, 180)
    assert fit.fitted == 600
    fit.on_training_end()
    assert model.gradient_steps == 600


@pytest.mark.parametrize("unit", [TrainFrequencyUnit.EPISODE])
def test_rounds_counted_in_episodes_are_left_alone(unit):
    model = types.SimpleNamespace(gradient_steps=4, train_freq=TrainFreq(1, unit), _learner=None)
    fit = FitUpdatesToBudget(1.0)
    fit.init_callback(model)
    fit.configured = 4
    assert not fit._active()

"""The ``-P`` live summary renders real figures during and after training (synthetic clients, no MAME)."""

from __future__ import annotations

import re

import pytest
from stable_baselines3.common.vec_env import VecMonitor

from tempest_gym.bridge.synthetic_client import write_wrapper
from tempest_gym.env.vec_env import TempestVecEnv
from tempest_gym.hybrid_dqn import HybridDQN
from tempest_gym.hybrid_dqn.buffer import SOURCE_EXPERT, SOURCE_MODEL, SOURCE_RANDOM
from tempest_gym.training.callbacks import LiveSummaryCallback, TempestMetricsCallback


@pytest.mark.parametrize("async_learner", [True, False])
def test_live_summary_shows_progress_and_learner_figures(tmp_path, capsys, async_learner):
    (tmp_path / "roms" / "tempest1").mkdir(parents=True)
    env = VecMonitor(TempestVecEnv(num_envs=2, mame=write_wrapper(tmp_path), rompath=str(tmp_path / "roms")))
    try:
        model = HybridDQN("MlpPolicy", env, learning_starts=200, batch_size=32, buffer_size=10_000,
                          policy_kwargs={"net_arch": [32]}, async_learner=async_learner, seed=0)  # fmt: skip
        metrics = TempestMetricsCallback(interval_s=0.2)
        summary = LiveSummaryCallback(2_000, metrics, refresh_s=0.0)
        model.learn(2_000, callback=[metrics, summary])
    finally:
        env.close()
    out = capsys.readouterr().out
    assert "2000/2000 steps" in out.replace(",", "")
    final = out[out.rindex("steps  "):]  # the last rendered screen
    assert re.search(r"episodes\s+\d+ \(last 100\)", final)
    learner = re.search(r"updates/s, policy lag\s+(\S+)", final).group(1)
    if async_learner:  # the learner's last figures stay on screen after it has stopped
        assert re.fullmatch(r"\d+\.\d,", learner), final
    else:
        assert learner == "sync"
    assert out.endswith("\n")
    shown = re.search(r"expert / random / model\s+(\S+) / (\S+) / (\S+)", final).groups()
    totals = model.source_totals  # indexed by source code: model, random, expert
    expected = totals[[SOURCE_EXPERT, SOURCE_RANDOM, SOURCE_MODEL]] / totals.sum()
    assert [float(x) for x in shown] == pytest.approx(expected, abs=0.006)
    assert totals[SOURCE_EXPERT] > 0 and totals[SOURCE_RANDOM] > 0  # all three labels are exercised

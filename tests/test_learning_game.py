"""Real-game smoke tests of the learning recipe: the documented DAgger command at a tiny budget (all phases:
expert-driven warm-up, pre-training, synchronous rounds with the model driving, final updates), its weights-only
export, and the released model loaded by ``evaluate`` and ``enjoy`` through ``--released``."""

from __future__ import annotations

import json

import numpy as np

from tempest_gym.bridge.paths import released_model
from tempest_gym.cli import enjoy, evaluate, train
from tempest_gym.cli.zoo import default_config_file

DAGGER_YML = default_config_file("hybrid_dqn").parent / "hybrid_dqn_dagger.yml"
BINNED_YML = DAGGER_YML.with_name("hybrid_dqn_dagger_binned.yml")
TINY = ["-n", "1600", "--num-envs", "1", "--seed", "4", "--save-freq", "-1", "--hyperparams", "learning_starts:400",
        "pretrain_steps:30", "final_steps:20", "train_freq:300", "gradient_steps:10", "target_update_interval:15",
        "batch_size:32", "buffer_size:20000"]  # fmt: skip


def train_tiny(config, tmp_path, rompath, capsys):
    """Train by ``config`` at the tiny budget, check that every phase ran, and return the run folder."""
    logs = tmp_path / "logs"
    rc = train.main(["--algo", "hybrid_dqn", "-conf", str(config), "-f", str(logs), "--rompath", rompath, *TINY])
    assert rc == 0
    out = capsys.readouterr().out
    assert "pre-training: 30/30 updates" in out and "final updates: 20/20 updates" in out
    return logs / "hybrid_dqn" / "TempestMAME-v0_1"


def test_dagger_recipe_runs_every_phase_and_exports_weights(rompath, tmp_path, capsys):
    from tempest_gym.hybrid_dqn import HybridDQN

    run = train_tiny(DAGGER_YML, tmp_path, rompath, capsys)
    model = HybridDQN.load(run / "TempestMAME-v0.zip", device="cpu")
    assert model._n_updates >= 30 + 20 + 10
    assert model.policy.categorical_actor
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    assert "train/actor_label_acc" in header and "train/demo_margin_loss" in header
    weights = tmp_path / "weights.zip"
    model.save_weights(weights)
    assert weights.stat().st_size < (run / "TempestMAME-v0.zip").stat().st_size
    again = HybridDQN.load(weights, device="cpu")
    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    averaged = HybridDQN.load(run / "TempestMAME-v0_averaged.zip", device="cpu")  # the recipe's weight_average
    assert averaged.weight_average == model.weight_average > 0
    assert averaged.predict(obs, deterministic=True)[0].shape == (8, *model.action_space.shape)


def test_binned_recipe_trains_the_binned_head_with_the_same_phases(rompath, tmp_path, capsys):
    """The side-by-side of docs/results.md: the dagger recipe with only the head changed."""
    from tempest_gym.hybrid_dqn import HybridDQN
    from tempest_gym.hybrid_dqn.policies import BinnedQPolicy

    model = HybridDQN.load(train_tiny(BINNED_YML, tmp_path, rompath, capsys) / "TempestMAME-v0.zip", device="cpu")
    assert isinstance(model.policy, BinnedQPolicy) and model.policy.n_bins == 63
    assert type(model.policy.q_net.features_extractor).__name__ == "TempestLanesExtractor"


def test_released_model_plays_through_evaluate_and_enjoy(rompath, tmp_path, capsys):
    path = released_model()
    assert path.stat().st_size < 10_000_000, "the released model is weights only, a few MB"
    rc = evaluate.main(["--released", "--games", "1", "--max-ticks", "400", "--rompath", rompath,
                        "--out", str(tmp_path / "eval")])  # fmt: skip
    assert rc == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["settings"]["model"] == str(path)
    assert len(result["games"]) == 1
    capsys.readouterr()
    rc = enjoy.main(["--released", "-n", "300", "--rompath", rompath, "--headless"])
    assert rc == 0
    assert f"Loading {path}" in capsys.readouterr().out

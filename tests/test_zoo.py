"""Zoo-style configuration handling (no MAME)."""

from __future__ import annotations

import pytest
import torch as th

from tempest_gym.cli.train import parse_args, prepare
from tempest_gym.cli.zoo import check_keys, find_model, parse_override, parse_policy_kwargs, parse_schedule
from tempest_gym.hybrid_dqn import HybridDQN


def test_policy_kwargs_strings_are_evaluated_safely():
    kw = parse_policy_kwargs("dict(net_arch=[256, 128], spinner_bins=11, activation_fn=nn.Tanh, extra={'a': -1})")
    assert kw == {"net_arch": [256, 128], "spinner_bins": 11, "activation_fn": th.nn.Tanh, "extra": {"a": -1}}
    for evil in ("__import__('os').system('true')", "open('/etc/passwd')", "dict(a=print)"):
        with pytest.raises(ValueError, match="not allowed"):
            parse_policy_kwargs(evil)
    with pytest.raises(ValueError, match="must evaluate to a dict"):
        parse_policy_kwargs("[1, 2]")


def test_schedules_and_overrides():
    s = parse_schedule("lin_0.5_0.1")
    assert s(1.0) == pytest.approx(0.5) and s(0.0) == pytest.approx(0.1)
    assert parse_schedule("gaussian") == "gaussian"
    assert parse_override(["learning_rate:3e-4", "async_learner:false", 'policy_kwargs:"dict(spinner_bins=7)"']) == {
        "learning_rate": 3e-4,
        "async_learner": False,
        "policy_kwargs": {"spinner_bins": 7},
    }
    with pytest.raises(ValueError, match="key:value"):
        parse_override(["learning_rate=3"])


def test_unknown_keys_are_refused_with_suggestions():
    with pytest.raises(ValueError, match="did you mean learning_rate"):
        check_keys({"learning_rat": 1e-4}, HybridDQN, "test.yml")
    with pytest.raises(ValueError, match="not supported"):
        check_keys({"normalize": True}, HybridDQN, "test.yml")
    check_keys({"n_timesteps": 1, "env_kwargs": {}, "expert_ratio": 0.5}, HybridDQN, "test.yml")


def test_shipped_config_prepares_and_cli_overrides_win():
    args = parse_args(["--num-envs", "3", "--start-level", "5", "-n", "1234", "--hyperparams", "n_steps:7"])
    hp, env_kwargs, n_timesteps, policy, saved = prepare(args)
    assert n_timesteps == 1234 and policy == "MlpPolicy"
    assert env_kwargs["num_envs"] == 3 and env_kwargs["start_level"] == 5
    assert hp["n_steps"] == 7 and callable(hp["expert_ratio"])
    assert saved["n_envs"] == 2, "config.yml keeps the YAML; CLI args go to args.yml"


def test_find_model_picks_latest_run(tmp_path):
    for run in (1, 2):
        d = tmp_path / "hybrid_dqn" / f"TempestMAME-v0_{run}"
        d.mkdir(parents=True)
        (d / "rl_model_100_steps.zip").write_bytes(b"x")
    (tmp_path / "hybrid_dqn" / "TempestMAME-v0_2" / "rl_model_900_steps.zip").write_bytes(b"x")
    assert find_model(str(tmp_path), "hybrid_dqn", "TempestMAME-v0").name == "rl_model_900_steps.zip"
    assert find_model(str(tmp_path), "hybrid_dqn", "TempestMAME-v0", exp_id=1).parent.name == "TempestMAME-v0_1"
    with pytest.raises(FileNotFoundError, match="best_model"):
        find_model(str(tmp_path), "hybrid_dqn", "TempestMAME-v0", load_best=True)
    with pytest.raises(FileNotFoundError, match="no hybrid_dqn run"):
        find_model(str(tmp_path / "none"), "hybrid_dqn", "TempestMAME-v0")


def test_find_model_prefers_the_averaged_weights_unless_told(tmp_path):
    run = tmp_path / "hybrid_dqn" / "TempestMAME-v0_1"
    run.mkdir(parents=True)
    for name in ("TempestMAME-v0.zip", "TempestMAME-v0_averaged.zip", "rl_model_100_steps.zip"):
        (run / name).write_bytes(b"x")
    assert find_model(str(tmp_path), "hybrid_dqn", "TempestMAME-v0").name == "TempestMAME-v0_averaged.zip"
    final = find_model(str(tmp_path), "hybrid_dqn", "TempestMAME-v0", averaged=False)
    assert final.name == "TempestMAME-v0.zip"
    assert find_model(str(tmp_path), "hybrid_dqn", "TempestMAME-v0", checkpoint=100).name == "rl_model_100_steps.zip"

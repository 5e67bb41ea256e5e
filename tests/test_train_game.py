"""Real-game smoke test: train hybrid_dqn briefly on one MAME instance, then enjoy the result."""

from __future__ import annotations

import pytest

from tempest_gym import enjoy, train


@pytest.mark.parametrize("async_learner", [True, False])
def test_train_then_enjoy(rompath, tmp_path, async_learner, capsys):
    logs = tmp_path / "logs"
    rc = train.main(
        ["--algo", "hybrid_dqn", "-f", str(logs), "-n", "2000", "--num-envs", "1", "--rompath", rompath,
         "--save-freq", "1000", "--seed", "3", "--hyperparams", "learning_starts:300", "buffer_size:20000",
         f"async_learner:{str(async_learner).lower()}", "batch_size:64"]
    )  # fmt: skip
    assert rc == 0
    run = logs / "hybrid_dqn" / "TempestMAME-v0_1"
    for name in ("TempestMAME-v0.zip", "rl_model_1000_steps.zip", "rl_model_2000_steps.zip", "monitor.csv",
                 "TempestMAME-v0/config.yml", "TempestMAME-v0/args.yml"):  # fmt: skip
        assert (run / name).is_file(), name
    capsys.readouterr()
    rc = enjoy.main(["--algo", "hybrid_dqn", "-f", str(logs), "-n", "1500", "--rompath", rompath, "--headless"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"Loading {run / 'TempestMAME-v0.zip'}" in out
    assert "steps" in out.splitlines()[-1]

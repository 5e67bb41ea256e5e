"""Real-game smoke test: train hybrid_dqn briefly on one MAME instance, then enjoy the result."""

from __future__ import annotations

import pytest

from tempest_gym.cli import enjoy, train


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


def test_resume_continues_from_the_newest_checkpoint_with_its_replay_buffer(rompath, tmp_path, capsys):
    from tempest_gym.hybrid_dqn import HybridDQN

    logs = tmp_path / "logs"
    common = ["-f", str(logs), "--num-envs", "1", "--rompath", rompath, "--seed", "5"]
    rc = train.main([*common, "-n", "1200", "--save-freq", "500", "--save-replay-buffer", "--hyperparams",
                     "learning_starts:200", "buffer_size:20000", "batch_size:32"])  # fmt: skip
    assert rc == 0
    run = logs / "hybrid_dqn" / "TempestMAME-v0_1"
    assert (run / "rl_model_1000_steps.zip").is_file() and (run / "rl_model_replay_buffer_1000_steps.pkl").is_file()
    capsys.readouterr()
    rc = train.main([*common, "--resume", str(run), "-n", "2000", "--save-freq", "500"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "from rl_model_1000_steps.zip with its replay buffer" in out and "1,000 to go" in out
    final = HybridDQN.load(run / "TempestMAME-v0.zip", device="cpu")
    assert final.num_timesteps == 2000
    assert final._n_updates > 0
    assert (run / "resumed_1.monitor.csv").is_file() and (run / "monitor.csv").is_file()
    assert (run / "progress_resumed_1.csv").is_file() and (run / "progress.csv").is_file()
    assert not (logs / "hybrid_dqn" / "TempestMAME-v0_2").exists(), "a resume writes into the same run"

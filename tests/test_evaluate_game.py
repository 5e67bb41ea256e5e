"""Evaluation protocol and training metrics on the real game."""

from __future__ import annotations

import json

import pytest

from tempest_gym.cli import evaluate, train


def check_eval(path, start_level: int, lives: int, games: int) -> dict:
    data = json.loads(path.read_text())
    assert len(data["games"]) == games
    for g in data["games"]:
        assert g["score"] >= 0 and g["ticks"] > 0
        assert g["max_level"] >= start_level and g["start_level"] == start_level
        lost = sum(g["lives_lost"].values())
        assert lost <= lives + 2, "at most the lives of a game (plus bonus lives)"
        assert g["truncated"] or lost >= lives, "a game that was not cut short ends with all lives lost"
        assert all(int(level) >= start_level for level in g["lives_lost"])
    s = data["summary"]
    assert s["score"]["min"] <= s["score"]["median"] <= s["score"]["max"]
    assert (path.parent / "eval.md").read_text().count("\n| ") >= games + 3
    return data


@pytest.mark.parametrize("algo, games, max_ticks", [("random", 1, 2500), ("expert", 2, 1200)])
def test_evaluate_builtin_players(rompath, tmp_path, algo, games, max_ticks):
    """The expert rarely dies: its games are cut at max_ticks and the instance starts a fresh one."""
    out = tmp_path / algo
    rc = evaluate.main(["--algo", algo, "--games", str(games), "--rompath", rompath, "--lives", "2",
                        "--start-level", "3", "--max-ticks", str(max_ticks), "--out", str(out)])  # fmt: skip
    assert rc == 0
    data = check_eval(out / "eval.json", start_level=3, lives=2, games=games)
    if algo == "expert":
        assert data["games"][0]["score"] != data["games"][1]["score"], "a fresh game with a new seed"


def test_train_writes_metrics_then_evaluate_the_model(rompath, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs, tb = tmp_path / "logs", tmp_path / "tb"
    rc = train.main(["-f", str(logs), "-n", "1500", "--num-envs", "1", "--rompath", rompath, "--save-freq", "-1",
                     "-tb", str(tb), "--eval-freq", "1000", "--eval-games", "1", "--hyperparams", "learning_starts:200",
                     "buffer_size:10000", "batch_size:32", "async_learner:true"])  # fmt: skip
    assert rc == 0
    run = logs / "hybrid_dqn" / "TempestMAME-v0_1"
    acc = EventAccumulator(str(next(tb.iterdir())))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for name in ("env/ticks_per_s", "env/frames_per_s_mean", "rollout/expert_frac", "rollout/model_frac",
                 "rollout/expert_ratio", "rollout/exploration_rate", "train/loss", "train/q_mean", "train/q_std",
                 "learner/updates_per_s", "learner/policy_lag", "replay/size", "rollout/inference_ms_p50",
                 "rollout/inference_ms_p99", "eval/score_mean", "eval/level_mean"):  # fmt: skip
        assert name in scalars, name
    evals = json.loads((run / "evaluations.json").read_text())
    assert evals and evals[0]["timesteps"] >= 1000 and (run / "best_model.zip").is_file()
    rc = evaluate.main(["--algo", "hybrid_dqn", "-f", str(logs), "--games", "1", "--rompath", rompath, "--lives", "2",
                        "--max-ticks", "3000"])  # fmt: skip
    assert rc == 0
    check_eval(run / "eval" / "eval.json", start_level=1, lives=2, games=1)

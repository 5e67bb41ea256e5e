"""Checkpoints survive kill -9 at any moment; atomic writes never leave a truncated file."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tempest_gym.training.checkpoints import atomic_write, checkpoints, latest_checkpoint, remove_stale_temporaries

HERE = Path(__file__).resolve().parent


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "model.zip"
    atomic_write(target, lambda f: f.write(b"good"))

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_kill_9_during_checkpoint_writes_leaves_the_previous_one_loadable(tmp_path):
    from tempest_gym.hybrid_dqn import HybridDQN

    out = tmp_path / "run"
    out.mkdir()
    rng = random.Random(0)
    interrupted_mid_write = 0
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, str(HERE / "checkpoint_writer.py"), str(out), "60000"],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first complete save of this round
        assert line.startswith("saved"), line
        time.sleep(rng.uniform(0.0, 0.6))  # the writer saves back to back: this lands inside a save
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        interrupted_mid_write += any(out.glob(".*.tmp-*"))
        model_path, replay_path = latest_checkpoint(out)
        assert replay_path is not None, f"round {round_}: the replay buffer of {model_path.name} is missing"
        model = HybridDQN.load(model_path, device="cpu")
        model.load_replay_buffer(replay_path)
        assert model.replay_buffer.size() == 60000
        assert len(checkpoints(out)) <= 2  # keep=2
        remove_stale_temporaries(out)
    assert interrupted_mid_write >= 2, "the kills should have hit writes in progress"

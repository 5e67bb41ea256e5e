"""Checkpoints that survive a crash at any moment.

Every file is written to a temporary name in the same folder, flushed and fsynced, then renamed over
the final name (``os.replace`` is atomic on POSIX) and the folder is fsynced. A ``kill -9`` mid-save
leaves at worst a stray ``.*.tmp-<pid>`` file, never a truncated checkpoint, so the previous one stays
loadable. The callback keeps the newest ``keep`` checkpoints (model zip, plus the replay buffer when
asked). A checkpoint holds what resuming needs: weights, optimizers, step counters and schedule progress
(SB3's zip), and optionally the replay buffer (pickled straight from the arrays, no second copy in RAM).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from stable_baselines3.common.callbacks import BaseCallback

CHECKPOINT_RE = re.compile(r"^rl_model_(\d+)_steps\.zip$")


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(file)`` on a temporary file, then move it into place atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def save_model(model, path: str | Path) -> Path:
    return atomic_write(path, model.save)


def save_replay_buffer(model, path: str | Path) -> Path:
    return atomic_write(path, model.save_replay_buffer)


def replay_path_for(model_path: Path) -> Path:
    m = CHECKPOINT_RE.match(model_path.name)
    steps = m.group(1) if m else "final"
    return model_path.with_name(f"rl_model_replay_buffer_{steps}_steps.pkl")


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(steps, path) of the complete checkpoints in a run folder, oldest first."""
    found = []
    for p in Path(run_dir).iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, Path | None]:
    """The newest checkpoint of a run and its replay buffer (None if it was not saved)."""
    found = checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint (rl_model_<steps>_steps.zip) in {run_dir}")
    model = found[-1][1]
    replay = replay_path_for(model)
    return model, replay if replay.is_file() else None


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Delete temporaries left by a process killed mid-save; returns how many."""
    n = 0
    for p in Path(run_dir).glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


class AtomicCheckpointCallback(BaseCallback):
    """Every ``save_freq`` env steps: ``rl_model_<steps>_steps.zip`` (+ replay buffer), keeping the last ``keep``."""

    def __init__(self, save_freq: int, save_path: str | Path, keep: int = 3, replay_buffer: bool = False,
                 verbose: int = 0) -> None:  # fmt: skip
        super().__init__(verbose)
        self.save_freq = int(save_freq)
        self.save_path = Path(save_path)
        self.keep = max(1, int(keep))
        self.replay_buffer = replay_buffer
        self._next = 0

    def _on_training_start(self) -> None:
        remove_stale_temporaries(self.save_path)
        self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.save_freq
            self.save()
        return True

    def save(self) -> Path:
        path = self.save_path / f"rl_model_{self.num_timesteps}_steps.zip"
        # the replay buffer first, the model last: a checkpoint exists once its zip does, and then it is whole
        if self.replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            save_replay_buffer(self.model, replay_path_for(path))
        save_model(self.model, path)
        if self.verbose:
            print(f"checkpoint {path}", flush=True)
        kept = checkpoints(self.save_path)
        for _, old in kept[: -self.keep]:
            with contextlib.suppress(OSError):
                old.unlink()
        live = {replay_path_for(p) for _, p in kept[-self.keep :]}
        for pkl in self.save_path.glob("rl_model_replay_buffer_*_steps.pkl"):
            if pkl not in live:  # pruned, or orphaned by a crash between the buffer and the model
                with contextlib.suppress(OSError):
                    pkl.unlink()
        return path

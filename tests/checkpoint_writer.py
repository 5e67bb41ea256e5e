"""Helper process for tests/test_checkpoints.py: saves checkpoints back to back until killed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv

from tempest_gym.bridge.layout import default_layout
from tempest_gym.hybrid_dqn import HybridDQN
from tempest_gym.training.checkpoints import AtomicCheckpointCallback, checkpoints

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from learner import SpacesOnly  # noqa: E402


def main(out: str, transitions: int) -> None:
    th.set_num_threads(1)
    layout = default_layout()
    model = HybridDQN("MlpPolicy", DummyVecEnv([SpacesOnly]), buffer_size=transitions * 2, learning_starts=10**9,
                      replay_buffer_kwargs=dict(layout=layout), seed=0)  # fmt: skip
    rng = np.random.default_rng(0)
    raw = rng.integers(layout.lo.astype(np.int64), layout.hi.astype(np.int64) + 1, size=(transitions + 1, layout.size))
    obs = (raw / layout.scale.astype(np.float64)).astype(np.float32)
    for t in range(transitions):
        model.replay_buffer.add_step(obs[t], obs[t + 1], np.array([[1.0, 0.5]], np.float32), np.ones(1),
                                     np.zeros(1, bool), np.zeros(1, bool))  # fmt: skip
    cb = AtomicCheckpointCallback(1, out, keep=2, replay_buffer=True)
    cb.init_callback(model)
    done = checkpoints(out)
    model.num_timesteps = done[-1][0] + 1 if done else 1
    while True:
        cb.save()
        print(f"saved {model.num_timesteps}", flush=True)
        model.num_timesteps += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

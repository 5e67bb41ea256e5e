"""Learner benchmark: HybridDQN gradient updates per second at batch 256, hybrid head vs binned head.

Each update is what the learner really does: sample 256 transitions with 3-step returns from a filled
CompactReplayBuffer (Tempest layout codes), double-Q TD loss, demonstration loss on the expert rows, Q step,
and for the hybrid head the actor step. Observations are random valid Tempest observations (D = 245), 25% of
the transitions flagged as expert. Prints updates/s and the share of the time spent sampling. CPU with
``--threads`` torch threads (default 1: the emulators need the other cores); the CUDA device too when one is available.

    python benchmarks/learner.py [--updates 200] [--net 256 256] [--bins 11] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from tempest_gym.bridge.layout import default_layout
from tempest_gym.env.vec_env import hybrid_action_space
from tempest_gym.hybrid_dqn import HybridDQN


class SpacesOnly(gym.Env):
    """Tempest's observation and action spaces, nothing else (the model needs an env to read spaces from)."""

    def __init__(self) -> None:
        layout = default_layout()
        self.observation_space = spaces.Box(layout.low, layout.high, dtype=np.float32)
        self.action_space = hybrid_action_space()

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


def filled_model(bins: int | None, net: list[int], device: str, fill: int, threads: int) -> HybridDQN:
    layout = default_layout()
    env = DummyVecEnv([SpacesOnly])
    model = HybridDQN(
        "MlpPolicy" if bins is None else "BinnedMlpPolicy",
        env,
        buffer_size=max(fill, 1000),
        batch_size=256,
        n_steps=3,
        replay_buffer_kwargs=dict(layout=layout),
        policy_kwargs=dict(net_arch=net) if bins is None else dict(net_arch=net, spinner_bins=bins),
        device=device,
        torch_num_threads=threads,
        seed=0,
    )
    rng = np.random.default_rng(0)
    raw = rng.integers(layout.lo.astype(np.int64), layout.hi.astype(np.int64) + 1, size=(fill + 1, layout.size))
    obs = (raw / layout.scale.astype(np.float64)).astype(np.float32)
    buf = model.replay_buffer
    for t in range(0, fill, 1000):
        n = min(1000, fill - t)
        for i in range(n):  # one env, one transition per call, as the algorithm adds them
            actions = np.array([[rng.integers(4), rng.uniform(-1, 1)]], np.float32)
            buf.add_step(
                obs[t + i],
                obs[t + i + 1],
                actions,
                rng.normal(size=1),
                rng.random(1) < 0.002,
                np.zeros(1, bool),
                sources=np.array([2 if rng.random() < 0.25 else 0]),
            )
    model.current_demo_coef = 1.0
    return model


def measure(model: HybridDQN, updates: int) -> tuple[float, float]:
    model.policy.set_training_mode(True)
    for _ in range(5):
        model._gradient_step(256)
    if model.device.type == "cuda":
        th.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(updates):
        model._gradient_step(256)
    if model.device.type == "cuda":
        th.cuda.synchronize()
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(updates):
        model.replay_buffer.sample(256)
    sampling = time.perf_counter() - t0
    return updates / total, sampling / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--fill", type=int, default=50_000)
    parser.add_argument("--net", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--bins", type=int, default=11)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    devices = [("cpu", t) for t in args.threads]
    if th.cuda.is_available():
        devices.append(("cuda", 1))
    print(f"batch 256, n_steps 3, net_arch {args.net} (actor the same), D = 245, {args.fill:,} transitions in replay")
    print(f"{'head':28s} {'device':14s} {'updates/s':>10s} {'sampling share':>15s}")
    for bins in (None, args.bins):
        head = "hybrid (MP-DQN + actor)" if bins is None else f"binned ({4 * bins} joint Q)"
        for device, threads in devices:
            model = filled_model(bins, args.net, device, args.fill, threads)
            rate, share = measure(model, args.updates)
            where = f"{device} ({threads} thr)" if device == "cpu" else th.cuda.get_device_name(0)[:14]
            print(f"{head:28s} {where:14s} {rate:10.1f} {share:14.0%}")


if __name__ == "__main__":
    main()

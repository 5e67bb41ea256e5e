"""Replay buffer benchmark: CompactReplayBuffer vs SB3's (n-step) ReplayBuffer, side by side, Tempest-sized.

Prints bytes per transition at the configured capacity (2M by default), add throughput (vectorised env steps
of ``--envs`` envs, in transitions/s) and sample throughput at batch 256 with 3-step returns (in batches/s and
transitions/s). Observations are random but valid Tempest observations (every feature ``raw / scale`` from
``lua/state_layout.tsv``), drawn from a pre-generated pool so that the benchmark measures the buffers, not the
random generator. Both buffers get the same capacity and the same fill; memory for the unfilled part of both
is only reserved (numpy zero pages), so ``--fill`` below ``--capacity`` keeps the benchmark's RAM modest.

    python benchmarks/replay.py [--capacity 2000000] [--fill 400000] [--envs 8] [--batches 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer

from tempest_gym.bridge.layout import default_layout
from tempest_gym.env.vec_env import hybrid_action_space
from tempest_gym.hybrid_dqn import CompactReplayBuffer


def obs_pool(n: int, seed: int = 0) -> np.ndarray:
    layout = default_layout()
    rng = np.random.default_rng(seed)
    raw = rng.integers(layout.lo.astype(np.int64), layout.hi.astype(np.int64) + 1, size=(n, layout.size))
    return (raw / layout.scale.astype(np.float64)).astype(np.float32)


def sb3_bytes(buf: NStepReplayBuffer) -> int:
    arrays = (buf.observations, buf.next_observations, buf.actions, buf.rewards, buf.dones, buf.timeouts)
    return sum(a.nbytes for a in arrays)


def fill(buf, kind: str, steps: int, envs: int, pool: np.ndarray, rng: np.random.Generator) -> float:
    """Add ``steps`` vectorised steps; returns seconds spent inside the buffer's add."""
    actions = np.stack([rng.integers(0, 4, envs), rng.uniform(-1, 1, envs)], axis=1).astype(np.float32)
    rewards = rng.normal(size=envs).astype(np.float32)
    no = np.zeros(envs, dtype=bool)
    infos = [{} for _ in range(envs)]
    n = len(pool)
    spent = 0.0
    for t in range(steps):
        i = (t * envs) % (n - 2 * envs)
        obs, nxt = pool[i : i + envs], pool[i + envs : i + 2 * envs]
        done = no if t % 500 else ~no  # an episode end every 500 steps per env
        t0 = time.perf_counter()
        if kind == "compact":
            buf.add_step(obs, nxt, actions, rewards, done, no)
        else:
            buf.add(obs, nxt, actions, rewards, done, infos)
        spent += time.perf_counter() - t0
    return spent


def sample_rate(buf, batches: int, batch_size: int = 256) -> float:
    buf.sample(batch_size)
    t0 = time.perf_counter()
    for _ in range(batches):
        buf.sample(batch_size)
    return batches / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=2_000_000)
    parser.add_argument("--fill", type=int, default=400_000, help="transitions added to each buffer")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()
    th.set_num_threads(1)
    layout = default_layout()
    obs_space = spaces.Box(layout.low, layout.high, dtype=np.float32)
    act_space = hybrid_action_space()
    pool = obs_pool(20_000)
    steps = args.fill // args.envs
    print(
        f"D = {layout.size} features, capacity {args.capacity:,} transitions, {args.envs} envs, "
        f"fill {steps * args.envs:,} transitions, batch 256, n_steps 3, torch threads 1"
    )
    rows = []
    kinds = ["compact"] + ([] if args.skip_sb3 else ["sb3"])
    for kind in kinds:
        rng = np.random.default_rng(1)
        if kind == "compact":
            buf = CompactReplayBuffer(
                args.capacity, obs_space, act_space, device="cpu", n_envs=args.envs, n_steps=3, layout=layout, seed=0
            )
            name = f"CompactReplayBuffer ({type(buf.codec).__name__}, {buf.codec.dtype})"
            per = buf.bytes_per_transition
        else:
            buf = NStepReplayBuffer(args.capacity, obs_space, act_space, device="cpu", n_envs=args.envs, n_steps=3)
            name = "SB3 NStepReplayBuffer (float32 obs, next_obs)"
            per = sb3_bytes(buf) / (buf.buffer_size * args.envs)
        add_s = fill(buf, kind, steps, args.envs, pool, rng)
        add_rate = steps * args.envs / add_s
        rate = sample_rate(buf, args.batches)
        rows.append((name, per, per * args.capacity / 1e9, add_rate, rate))
        del buf
    print(
        f"{'buffer':48s} {'B/transition':>12s} {'GB @ cap':>9s} {'add trans/s':>12s} {'batches/s':>10s} "
        f"{'sampled trans/s':>16s}"
    )
    for name, per, gb, add_rate, rate in rows:
        print(f"{name:48s} {per:12.1f} {gb:9.2f} {add_rate:12,.0f} {rate:10,.0f} {rate * 256:16,.0f}")


if __name__ == "__main__":
    main()

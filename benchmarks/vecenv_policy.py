"""The Python side's ceiling: decisions/s of policy + TempestVecEnv on synthetic clients.

    python benchmarks/vecenv_policy.py [--clients 1 2 4 8 16] [--seconds 5]

Synthetic clients (``tempest_gym.bridge.synthetic_client``) speak the real protocol at full speed with no
emulation, so what is measured is the server, the lockstep loop, state parsing, infos, and the
acting policy: the rate MAME instances could be served at if emulation were free. For each
client count it reports steps/s and decisions/s (steps x clients) for: the env alone (constant
action), the env + the rule-based expert in infos, and the env + HybridDQN's greedy policy
(batched inference across all clients, 1 torch thread). Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th

from tempest_gym.bridge.synthetic_client import write_wrapper
from tempest_gym.env.vec_env import TempestVecEnv


def measure(n: int, seconds: float, mode: str, tmp: str) -> float:
    mame = write_wrapper(tmp)
    env = TempestVecEnv(num_envs=n, rompath=str(Path(tmp) / "roms"), mame=mame, expert=(mode == "expert"))
    model = None
    try:
        obs = env.reset()
        if mode == "model":
            from tempest_gym.hybrid_dqn import HybridDQN

            model = HybridDQN("MlpPolicy", env, buffer_size=10_000, learning_starts=10**9, device="cpu")
        action = np.zeros((n, 2), np.float32)
        steps = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if model is not None:
                action, _ = model.predict(obs, deterministic=True)
            obs, _, _, _ = env.step(action)
            steps += 1
        return steps / (time.perf_counter() - t0)
    finally:
        env.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    th.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "roms" / "tempest1").mkdir(parents=True)
        print(f"{'clients':>7} {'mode':>7} {'steps/s':>9} {'decisions/s':>12}")
        for n in args.clients:
            for mode in ("env", "expert", "model"):
                sps = measure(n, args.seconds, mode, tmp)
                print(f"{n:>7} {mode:>7} {sps:>9,.0f} {sps * n:>12,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

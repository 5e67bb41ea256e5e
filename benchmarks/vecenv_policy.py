"""The Python side's ceiling: decisions/s of policy + TempestVecEnv on synthetic clients.

    python benchmarks/vecenv_policy.py [--clients 1 2 4 8 16] [--seconds 5] [--modes ...]

Synthetic clients (``tempest_gym.bridge.synthetic_client``, one process each) speak the real protocol at full
speed with no emulation, so what is measured is the server, the lockstep loop, state parsing, infos, and the
acting policy: the rate MAME instances could be served at if emulation were free. For each client count it
reports steps/s, decisions/s (steps x clients) and the server process's CPU time per step, for:

* ``env``: the env alone (constant action);
* ``labels``: the env + the rule-based expert's label for every observation, computed after the reply
  (``expert_after_reply``, as HybridDQN collects);
* ``labels_now``: the same labels computed before the observations are returned (the env's default);
* ``model``: the env + HybridDQN's greedy policy (batched inference across all clients, 1 torch thread);
* ``model+labels``: both, as a training run collects (without the updates).

The model is ``HybridDQN("MlpPolicy")`` (the default MLP) unless ``--recipe FILE.yml`` names a training recipe,
whose own model is built (e.g. ``zoo_configs/hybrid_dqn_dagger.yml``: the lane extractor and the categorical
parameter network, what the released model runs).

On a machine with few cores the clients share them with the server: the server's CPU per step is the figure
that carries over to a machine where the emulators run elsewhere. Figures only, no assertions.
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

MODES = ("env", "labels", "labels_now", "model", "model+labels")


def make_model(env: TempestVecEnv, recipe: str | None):
    from tempest_gym.hybrid_dqn import HybridDQN

    if recipe is None:
        return HybridDQN("MlpPolicy", env, buffer_size=10_000, learning_starts=10**9, device="cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from learner import recipe_model

    return recipe_model(recipe, "cpu", 1000, 1)


def measure(n: int, seconds: float, mode: str, tmp: str, recipe: str | None = None) -> tuple[float, float]:
    """(steps/s, server CPU seconds per step)."""
    mame = write_wrapper(tmp)
    env = TempestVecEnv(num_envs=n, rompath=str(Path(tmp) / "roms"), mame=mame, expert="labels" in mode,
                        expert_after_reply=mode != "labels_now")  # fmt: skip
    model = None
    try:
        obs = env.reset()
        if mode.startswith("model"):
            model = make_model(env, recipe)
        action = np.zeros((n, 2), np.float32)
        for _ in range(20):  # warm up
            obs, _, _, _ = env.step(action)
        steps = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            if model is not None:
                action, _ = model.predict(obs, deterministic=True)
            obs, _, _, _ = env.step(action)
            steps += 1
        return steps / (time.perf_counter() - t0), (time.process_time() - c0) / steps
    finally:
        env.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--recipe", default=None, help="a training recipe (Zoo YAML) whose model acts in the model modes")
    args = p.parse_args()
    th.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "roms" / "tempest1").mkdir(parents=True)
        print(f"{'clients':>7} {'mode':>12} {'steps/s':>9} {'decisions/s':>12} {'server us/step':>15}")
        for n in args.clients:
            for mode in args.modes:
                sps, cpu = measure(n, args.seconds, mode, tmp, args.recipe)
                print(f"{n:>7} {mode:>12} {sps:>9,.0f} {sps * n:>12,.0f} {cpu * 1e6:>15,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

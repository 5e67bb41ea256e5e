"""Acting benchmark: what one greedy decision of a recipe's model costs the trainer, per call and per row.

During collection the trainer asks the acting policy for every env's action before it replies to the
emulators (``HybridDQN._model_actions``: observations to tensor, the extractor, the parameter network, the
Q-network, back to numpy), one batched call per step. At the batch of a small run (1-2 emulators) that call is
bound by per-operation overhead, not arithmetic: on an Intel Xeon VM py-spy found ~44% of run `fit1`'s
collection samples there (halving it did not measurably speed 2-MAME collection: docs/results.md). Random valid Tempest
observations; 1 torch thread, as during collection; figures only, no assertions.

    python benchmarks/acting.py [--recipe zoo_configs/hybrid_dqn_dagger.yml ...] [--batch 1 2 16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learner import recipe_model  # noqa: E402

from tempest_gym.bridge.layout import default_layout  # noqa: E402


def observations(n: int, seed: int = 0) -> np.ndarray:
    layout = default_layout()
    rng = np.random.default_rng(seed)
    raw = rng.integers(layout.lo.astype(np.int64), layout.hi.astype(np.int64) + 1, size=(n, layout.size))
    return (raw / layout.scale.astype(np.float64)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", nargs="+", default=["zoo_configs/hybrid_dqn_dagger.yml"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 16])
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    th.set_num_threads(1)
    print(f"{'recipe':<34} {'batch':>5} {'us/call':>9} {'decisions/s':>12}")
    for conf in args.recipe:
        model = recipe_model(conf, "cpu", 1000, 1)
        for batch in args.batch:
            pool = [observations(batch, seed) for seed in range(64)]  # new arrays: no cached grid is reused
            for obs in pool[:10]:
                model._model_actions(obs)
            calls, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                model._model_actions(pool[calls % len(pool)])
                calls += 1
            per_call = (time.perf_counter() - t0) / calls
            print(f"{Path(conf).name:<34} {batch:>5} {per_call * 1e6:>9.0f} {batch / per_call:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()

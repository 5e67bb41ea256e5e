"""Learner benchmark: HybridDQN gradient updates per second at batch 256, hybrid head vs binned head.

Each update is what the learner really does: sample 256 transitions with 3-step returns from a filled
CompactReplayBuffer (Tempest layout codes), double-Q TD loss, demonstration loss on the expert rows, Q step,
and for the hybrid head the actor step. Observations are random valid Tempest observations (D = 245), 25% of
the transitions flagged as expert. Prints updates/s and the share of the time spent sampling. CPU with
``--threads`` torch threads (default 1: the emulators need the other cores); the CUDA device too when one is available.

``--recipe`` builds the model of a training recipe instead (its policy, extractor, heads, ``n_steps``, ``bf16``,
``demo_on_labels`` with an expert label on every transition), at ``--batch`` sizes: what a run of that recipe
updates per second on this machine, and on a GPU when there is one.

    python benchmarks/learner.py [--updates 200] [--net 256 256] [--bins 11] [--threads 1]
    python benchmarks/learner.py --recipe zoo_configs/hybrid_dqn_dagger.yml zoo_configs/hybrid_dqn_dagger_binned.yml \
        [--batch 256 1024] [--threads 1 2] [--no-cpu] [--check-graph]

On a CUDA device each recipe is measured eagerly and with the update replayed as a CUDA graph (``cuda_graph``,
the default there), side by side on the same model. ``--check-graph`` first trains three copies of each recipe's
model from the same weights on the same batches (eager, eager, graph) and prints how far apart their weights
end: the graph replays exactly what an eager update with a ``capturable`` Adam does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from tempest_gym.bridge.layout import default_layout
from tempest_gym.cli.zoo import load_hyperparams, preprocess
from tempest_gym.env.vec_env import hybrid_action_space
from tempest_gym.hybrid_dqn import HybridDQN
from tempest_gym.hybrid_dqn.cuda_graph import make_capturable


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
    fill_replay(model, fill)
    return model


def recipe_model(conf: str, device: str, fill: int, threads: int) -> HybridDQN:
    """The model a Zoo recipe trains (``TempestMAME-v0`` section), its replay filled with labelled transitions."""
    hp = load_hyperparams(conf, "TempestMAME-v0")
    for key in ("n_timesteps", "n_envs", "env_kwargs"):
        hp.pop(key, None)
    policy = hp.pop("policy", "MlpPolicy")
    hp = preprocess(hp)
    hp.update(buffer_size=max(fill, 1000), device=device, torch_num_threads=threads, sync_threads=threads, seed=0,
              async_learner=False, replay_buffer_kwargs=dict(layout=default_layout()))  # fmt: skip
    model = HybridDQN(policy, DummyVecEnv([SpacesOnly]), **hp)
    fill_replay(model, fill, labels=True)
    return model


def fill_replay(model: HybridDQN, fill: int, labels: bool = False) -> None:
    """``fill`` random valid transitions, one ``add_step`` each as the algorithm adds them; 25% expert-driven."""
    layout = default_layout()
    rng = np.random.default_rng(0)
    raw = rng.integers(layout.lo.astype(np.int64), layout.hi.astype(np.int64) + 1, size=(fill + 1, layout.size))
    obs = (raw / layout.scale.astype(np.float64)).astype(np.float32)
    for i in range(fill):
        actions = np.array([[rng.integers(4), rng.uniform(-1, 1)]], np.float32)
        label = dict(expert_actions=np.array([[rng.integers(4), rng.uniform(-1, 1)]], np.float32)) if labels else {}
        model.replay_buffer.add_step(obs[i], obs[i + 1], actions, rng.normal(size=1), rng.random(1) < 0.002,
                                     np.zeros(1, bool), sources=np.array([2 if rng.random() < 0.25 else 0]),
                                     **label)  # fmt: skip
    model.current_demo_coef = 1.0


def measure(model: HybridDQN, updates: int, batch: int = 256) -> tuple[float, float]:
    """Updates per second (``_gradient_step``, what every training phase runs) and the share spent sampling."""
    model.policy.set_training_mode(True)
    sync = th.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    for _ in range(5):
        model._gradient_step(batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(updates):
        model._gradient_step(batch)
    sync()
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(updates):
        model.replay_buffer.sample(batch)
    sampling = time.perf_counter() - t0
    return updates / total, sampling / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--fill", type=int, default=50_000)
    parser.add_argument("--net", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--bins", type=int, default=11)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--recipe", nargs="+", default=None, help="Zoo YAML recipes to measure instead")
    parser.add_argument("--batch", type=int, nargs="+", default=[256], help="batch sizes (with --recipe)")
    parser.add_argument("--no-cpu", action="store_true", help="only the CUDA device")
    parser.add_argument("--check-graph", action="store_true", help="with --recipe on CUDA: graph vs eager weights")
    args = parser.parse_args()
    devices = [] if args.no_cpu else [("cpu", t) for t in args.threads]
    if th.cuda.is_available():
        devices.append(("cuda", 1))
    if args.recipe:
        measure_recipes(args, devices)
        return
    print(f"batch 256, n_steps 3, net_arch {args.net} (actor the same), D = 245, {args.fill:,} transitions in replay")
    print(f"{'head':28s} {'device':14s} {'updates/s':>10s} {'sampling share':>15s}")
    for bins in (None, args.bins):
        head = "hybrid (MP-DQN + actor)" if bins is None else f"binned ({4 * bins} joint Q)"
        for device, threads in devices:
            model = filled_model(bins, args.net, device, args.fill, threads)
            rate, share = measure(model, args.updates)
            where = f"{device} ({threads} thr)" if device == "cpu" else th.cuda.get_device_name(0)[:14]
            print(f"{head:28s} {where:14s} {rate:10.1f} {share:14.0%}")


def measure_recipes(args: argparse.Namespace, devices: list[tuple[str, int]]) -> None:
    if args.check_graph and th.cuda.is_available():
        for conf in args.recipe:
            check_graph(conf, args.fill)
    print(f"{args.fill:,} labelled transitions in replay; updates/s of each recipe's own model and update")
    print(f"{'recipe':34s} {'device':20s} {'batch':>6s} {'updates/s':>10s} {'samples/s':>10s} {'sampling share':>15s}")
    for conf in args.recipe:
        name = Path(conf).name
        for device, threads in devices:
            model = recipe_model(conf, device, args.fill, threads)
            modes = [(f"{device} ({threads} thr)", False)]
            if device == "cuda":
                gpu = th.cuda.get_device_name(0).replace("NVIDIA ", "")[:10]
                modes = [(f"{gpu} eager", False), (f"{gpu} CUDA graph", True)]
            for where, graph in modes:
                for batch in args.batch:
                    model.cuda_graph = graph
                    rate, share = measure(model, args.updates, batch)
                    print(f"{name:34s} {where:20s} {batch:6d} {rate:10.1f} {rate * batch:10.0f} {share:14.0%}",
                          flush=True)  # fmt: skip


def check_graph(conf: str, fill: int, updates: int = 40, batch: int = 256) -> None:
    """Three copies from the same weights and batches: eager with plain Adam, eager with ``capturable`` Adam (what
    the graph needs), CUDA graph. The last two should end bit-identical; the first differs from them by float
    rounding (capturable Adam computes its bias corrections on the device), which training amplifies."""
    for bf16 in dict.fromkeys((bool(load_hyperparams(conf, "TempestMAME-v0").get("bf16", False)), False)):
        ends = []
        for graph, capturable in ((False, False), (False, True), (True, True)):
            model = recipe_model(conf, "cuda", fill, 1)
            start = th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()
            model.cuda_graph, model.bf16 = graph, bf16
            for opt in (model.policy.optimizer, model.policy.actor_optimizer):
                if capturable and opt is not None:
                    make_capturable(opt)
            model.policy.set_training_mode(True)
            for _ in range(updates):
                model._gradient_step(batch)
            ends.append(th.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
        moved = float((ends[0] - start).norm())
        plain, graphed = float((ends[0] - ends[1]).norm()) / moved, float((ends[1] - ends[2]).norm()) / moved
        print(f"{Path(conf).name} ({'bf16' if bf16 else 'float32'}), {updates} updates, weights' distance relative "
              f"to how far they moved: eager plain vs capturable Adam {plain:.2e}; eager vs CUDA graph (both "
              f"capturable) {graphed:.2e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

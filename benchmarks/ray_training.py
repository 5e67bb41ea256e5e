"""Training speed with MAME clients placed by Ray vs started locally, side by side in one run.

    python benchmarks/ray_training.py --rompath ../shared/roms [--steps 6000] [--warmup 1500] [--rounds 2]

Each round trains hybrid_dqn from scratch (zoo_configs/hybrid_dqn.yml, with a small replay buffer and
``learning_starts`` so that learning runs during the measurement) once per launcher, in alternating order
(the machine's load drifts; compare within a round):

* ``local``  the N MAME clients are subprocesses of the trainer (the default);
* ``ray``    the N MAME clients are Ray actors on a local Ray instance the run starts (``train --ray``).

Prints env steps/s (all instances together) between step ``--warmup`` and the end, so the start-up (Ray's
included) is left out, the start-up time itself, the load average, and where the CPU went in the measured
window (Linux /proc): the trainer, the MAME processes, Ray's own processes. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from stable_baselines3.common.callbacks import BaseCallback

from tempest_gym.cli.common import algo_class, make_env
from tempest_gym.cli.train import parse_args, prepare


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process ("trainer") and of its descendants: MAME ("mame"), Ray's processes, the
    actors included ("ray"), from /proc. (A local Ray instance is started by this process, so it is one of them.)"""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                exe = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        procs[int(pid)] = (int(stat[1]), (int(stat[11]) + int(stat[12])) / tick, exe)
    me = os.getpid()
    out = {"trainer": procs.get(me, (0, 0.0, ""))[1], "mame": 0.0, "ray": 0.0}
    for ppid, used, exe in procs.values():
        p, seen = ppid, 0
        while p not in (me, 0, 1) and p in procs and seen < 64:  # is it a descendant of this process?
            p, seen = procs[p][0], seen + 1
        if p == me:
            out["mame" if exe.endswith("mame") else "ray"] += used
    return out


class Clock(BaseCallback):
    """Times the run from the first step and from step ``warmup`` to the end, and the CPU used meanwhile."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup
        self.t_first = self.t_warm = self.t_end = 0.0
        self.n_warm = 0
        self.cpu_warm: dict[str, float] = {}
        self.cpu_end: dict[str, float] = {}

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if not self.t_first:
            self.t_first = now
        if not self.t_warm and self.num_timesteps >= self.warmup:
            self.t_warm, self.n_warm = now, self.num_timesteps
            self.cpu_warm = cpu_seconds()
        self.t_end = now
        return True

    def _on_training_end(self) -> None:
        self.cpu_end = cpu_seconds()

    def cpu_share(self) -> str:
        """CPU used per part in the measured window, in % of one core."""
        dt = self.t_end - self.t_warm
        return ", ".join(f"{k} {100 * (self.cpu_end[k] - self.cpu_warm.get(k, 0.0)) / dt:.0f}%" for k in self.cpu_end)


def run(launcher: str, args: argparse.Namespace) -> tuple[float, float, str]:
    """(steps/s after the warm-up, seconds from creating the env to its first step, CPU use by part)."""
    argv = ["--num-envs", str(args.num_envs), "--rompath", args.rompath, "--seed", "1", "--hyperparams",
            "buffer_size:100000", f"learning_starts:{args.warmup // 2}"]  # fmt: skip
    if launcher == "ray":
        argv += ["--ray", "--env-kwargs", f"ray_num_cpus:{args.num_envs}"]
    hp, env_kwargs, _, policy, _ = prepare(parse_args(argv))
    t0 = time.perf_counter()
    env = make_env(seed=1, **env_kwargs)
    try:
        model = algo_class("hybrid_dqn")(policy, env, seed=1, verbose=0, **hp)
        clock = Clock(args.warmup)
        model.learn(args.steps, callback=clock)
    finally:
        env.close()
    return (model.num_timesteps - clock.n_warm) / (clock.t_end - clock.t_warm), clock.t_first - t0, clock.cpu_share()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rompath", default=os.environ.get("TEMPEST_ROMS"))
    p.add_argument("--num-envs", type=int, default=2)
    p.add_argument("--steps", type=int, default=6000, help="env steps per run, all instances together")
    p.add_argument("--warmup", type=int, default=1500, help="steps left out of the rate")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    starts: dict[str, list[float]] = {"local": [], "ray": []}
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    for r in range(args.rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        for launcher in order:
            rate, start, cpu = run(launcher, args)
            rates[launcher].append(rate)
            starts[launcher].append(start)
            print(f"round {r + 1} {launcher:5s}: {rate:7.1f} steps/s, start-up {start:5.1f} s, "
                  f"load {os.getloadavg()[0]:.2f}; CPU (% of a core): {cpu}", flush=True)  # fmt: skip
    loc, ray = statistics.median(rates["local"]), statistics.median(rates["ray"])
    print(f"\n{args.num_envs} clients, {args.steps} steps per run, medians over {args.rounds} round(s):")
    print(f"  local: {loc:.1f} steps/s (start-up {statistics.median(starts['local']):.1f} s)")
    print(f"  ray:   {ray:.1f} steps/s (start-up {statistics.median(starts['ray']):.1f} s)")
    print(f"  ray / local = {ray / loc:.3f}")


if __name__ == "__main__":
    main()

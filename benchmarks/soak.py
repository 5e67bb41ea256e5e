"""Soak test: train on 2 real MAME clients while faults are injected; print what survived.

    python benchmarks/soak.py --rompath ../shared/roms [--minutes 10] [--kill-every 120]

Runs ``python -m tempest_gym.train`` (hybrid_dqn, 2 instances, checkpoints with the replay buffer)
and, while it trains:

* every ``--kill-every`` seconds SIGKILLs a random MAME child of the trainer (the env must restart it);
* once, at half time, SIGKILLs the trainer itself, then resumes it with ``--resume`` from its newest
  checkpoint (the learner restart).

Prints the client restarts and dropped transitions the trainer logged, the trainer's RSS at start and
end, and env ticks/s in the minute before and after each fault (from progress.csv). Figures only.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def progress_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get("env/ticks_per_s")]


def start_trainer(common: list[str], extra: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tempest_gym.cli.train", *common, *extra]
    return subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rompath", default=None)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--kill-every", type=float, default=120.0, help="seconds between MAME kills")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    logs = tmp / "logs"
    common = ["-f", str(logs), "--num-envs", "2", "--save-freq", "5000", "--save-replay-buffer", "-n", "10000000",
              "--hyperparams", "learning_starts:2000", "buffer_size:200000", "batch_size:64"]  # fmt: skip
    if args.rompath:
        common += ["--rompath", args.rompath]
    log = tmp / "train.log"
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    trainer = start_trainer(common, [], log)
    segments = [(0.0, "progress.csv")]  # (seconds after t0 the trainer started, its progress file)
    time.sleep(20)
    rss_start = rss_mb(trainer.pid)
    faults: list[tuple[float, str]] = []
    learner_restarted = False
    next_kill = time.monotonic() + args.kill_every
    run = logs / "hybrid_dqn" / "TempestMAME-v0_1"
    while time.monotonic() < end:
        time.sleep(2)
        now = time.monotonic()
        if trainer.poll() is not None and not learner_restarted:
            print(f"trainer exited early (rc {trainer.returncode}); see {log}", file=sys.stderr)
            return 1
        if not learner_restarted and now - t0 > args.minutes * 30:
            trainer.send_signal(signal.SIGKILL)
            trainer.wait()
            faults.append((now - t0, "trainer killed (kill -9), resumed from its checkpoint"))
            trainer = start_trainer(common, ["--resume", str(run)], log)
            segments.append((time.monotonic() - t0, "progress_resumed_1.csv"))
            learner_restarted = True
            next_kill = now + args.kill_every
            continue
        if now >= next_kill:
            mames = children(trainer.pid)
            if mames:
                victim = rng.choice(mames)
                os.kill(victim, signal.SIGKILL)
                faults.append((now - t0, f"MAME pid {victim} killed"))
            next_kill = now + args.kill_every
    rss_end = rss_mb(trainer.pid)
    trainer.send_signal(signal.SIGINT)
    try:
        trainer.wait(120)
    except subprocess.TimeoutExpired:
        trainer.kill()
    series: list[tuple[float, float]] = []  # (seconds after t0, env ticks/s)
    rows: list[dict] = []
    for start, name in segments:
        seg = progress_rows(run / name)
        rows += seg
        series += [(start + float(r.get("time/time_elapsed") or 0), float(r["env/ticks_per_s"])) for r in seg]

    def mean_between(a: float, b: float) -> float:
        vals = [v for t, v in series if a <= t < b]
        return sum(vals) / len(vals) if vals else float("nan")

    restarts = sum(max((float(r.get("env/client_restarts") or 0) for r in progress_rows(run / n)), default=0)
                   for _, n in segments)  # fmt: skip
    print(f"soak: {args.minutes:.0f} min, 2 MAME clients, log {log}")
    print(
        f"client restarts logged by the trainer: {restarts:.0f}; transitions dropped (in-flight only): {restarts:.0f}"
    )
    print(f"trainer RSS: {rss_start:,.0f} MB at start, {rss_end:,.0f} MB at the end (after the resume)")
    print("faults, with env ticks/s in the minute before and after:")
    for t, what in faults:
        print(f"  t={t:5.0f} s  {what:55}  {mean_between(t - 60, t):6.0f} -> {mean_between(t + 5, t + 65):6.0f}")
    print(f"env ticks/s overall: {mean_between(0, 1e9):.0f} (mean of {len(series)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

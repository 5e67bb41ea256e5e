"""What the bridge costs: bare MAME vs. MAME talking to TempestVecEnv, side by side in one run.

    python benchmarks/bridge_overhead.py --rompath ../shared/roms [--seconds 10] [--rounds 2]

For N = 1 and N = 2 instances it measures, interleaved round by round (the machine's load
drifts: every bridge run is compared with the no-op runs just before and after it):

* ``noop``      MAME running tempest1 with a Lua frame callback that does nothing;
* ``bridge``    the full bridge (state extraction, rewards, one STATE + one ACTION per tick,
                lockstep VecEnv stepping with random actions), pipelined reply (the default);
* ``unpiped``   the same with the reply read at once (``pipeline=False``);
* ``labels``    (``--labels``) the bridge with the expert labelling every observation after the reply, as
                HybridDQN trains.

Prints emulated video frames/s (summed over instances), decisions/s (agent steps summed over
instances) and the ratio of frames/s to the no-op baseline. No assertions: figures only.

``--breakdown`` adds one profiled bridge run per N (the Lua client's ``profile`` setting, see
lua/tempest_gym/profile.lua): per tick, the client's time in emulation, its own work (reading RAM, building the
state, packing and sending it, the game flow) and waiting for replies, and the Python side's CPU time per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tempest_gym.bridge.mame import find_mame, find_rompath
from tempest_gym.env.vec_env import TempestVecEnv

NOOP_LUA = """
local frames, t0 = 0, nil
local tps = emu.osd_ticks_per_second()
local target = tonumber(os.getenv("BENCH_FRAMES"))
emu.register_frame_done(function()
  frames = frames + 1
  if frames == 60 then t0 = emu.osd_ticks() end
  if frames == 60 + target then
    print(string.format("BENCH frames=%d seconds=%.6f", target, (emu.osd_ticks() - t0) / tps))
    io.stdout:flush()
    os.exit(0)
  end
end, "noop")
"""


def noop_fps(mame: str, rompath: str, n: int, frames: int) -> float:
    """Summed frames/s of n concurrent MAME processes with a do-nothing frame callback."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "noop.lua"
        script.write_text(NOOP_LUA)
        procs = []
        for i in range(n):
            d = Path(tmp) / f"p{i}"
            d.mkdir()
            cmd = [
                mame,
                "tempest1",
                "-rompath",
                rompath,
                "-noreadconfig",
                "-video",
                "none",
                "-sound",
                "none",
                "-nothrottle",
                "-skip_gameinfo",
                "-nonvram_save",
                "-autoboot_script",
                str(script),
            ]
            env = {"SDL_VIDEODRIVER": "dummy", "BENCH_FRAMES": str(frames), "PATH": "/usr/bin:/bin"}
            procs.append(
                subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            )
        total = 0.0
        for p in procs:
            out, _ = p.communicate(timeout=600)
            line = next(ln for ln in out.splitlines() if ln.startswith("BENCH"))
            secs = float(line.split("seconds=")[1])
            total += frames / secs
        return total


def bridge_fps(
    rompath: str, n: int, seconds: float, pipeline: bool, labels: bool = False
) -> tuple[float, float, float]:
    """(frames/s summed, decisions/s summed, fraction of ticks under agent control). ``labels``: the expert labels
    every observation after the reply, as training does."""
    env = TempestVecEnv(num_envs=n, rompath=rompath, expert=labels, expert_after_reply=labels, pipeline=pipeline,
                        seed=7)  # fmt: skip
    rng = np.random.default_rng(0)
    try:
        env.reset()
        for _ in range(200):  # past boot
            env.step(np.stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)], 1))
        f0 = env.last_states["frame"].astype(np.int64).copy()
        steps = control = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            _, _, _, infos = env.step(np.stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)], 1))
            steps += 1
            control += sum(i["control"] for i in infos)
        dt = time.perf_counter() - t0
        frames = (env.last_states["frame"].astype(np.int64) - f0).sum()
    finally:
        env.close()
    return frames / dt, steps * n / dt, control / (steps * n)


LUA_SECTIONS = (
    ("read", "read RAM ($0000-$03FF)"),
    ("state", "state, flags, rewards, scaling"),
    ("send", "pack + send STATE"),
    ("flow", "game flow (frames without agent control)"),
    ("wait_next_frame", "wait: pipelined reply (next frame)"),
    ("wait_at_tick", "wait: reply at the tick (no slack)"),
)


def breakdown(rompath: str, n: int, seconds: float) -> None:
    """One profiled bridge run: where each client's wall time goes, per tick, and Python's CPU per step."""
    with tempfile.TemporaryDirectory() as tmp:
        env = TempestVecEnv(num_envs=n, rompath=rompath, expert=False, seed=7, workdir=tmp,
                            client_settings={"profile": "profile.txt"})  # fmt: skip
        rng = np.random.default_rng(0)
        try:
            env.reset()
            for _ in range(200):
                env.step(np.stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)], 1))
            steps, in_step = 0, 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds:
                a = np.stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)], 1)
                ts = time.process_time()
                env.step(a)
                in_step += time.process_time() - ts
                steps += 1
            cpu = time.process_time() - c0
        finally:
            env.close()
        print(f"\nwhere the time goes, N={n} (the client: whole run from its first frame; Python: the measured "
              f"{seconds:.0f} s)")  # fmt: skip
        for slot in range(n):
            prof = {}
            path = os.path.join(tmp, f"slot{slot}", "profile.txt")
            with open(path) as f:
                lines = f.read().splitlines()
            for line in lines:
                name, count, secs = line.split()
                prof[name] = (int(count), float(secs))
            wall = prof["wall"][1]
            ticks = prof["send"][0]
            frames = prof["frame"][0]
            callbacks = prof["frame"][1]
            waits = sum(prof.get(k, (0, 0.0))[1] for k in ("wait_next_frame", "wait_at_tick"))
            own = callbacks - waits
            print(f"  client {slot}: {ticks:,} ticks, {frames / ticks:.2f} frames/tick, {wall / ticks * 1e6:,.0f} us "
                  f"of wall time per tick")  # fmt: skip
            print(f"    {'emulation (outside the frame callback)':42} {(wall - callbacks) / ticks * 1e6:8.1f} us/tick "
                  f"{(wall - callbacks) / wall:6.1%}")  # fmt: skip
            print(f"    {'client work (callback minus waits)':42} {own / ticks * 1e6:8.1f} us/tick {own / wall:6.1%}")
            for key, label in LUA_SECTIONS:
                count, secs = prof.get(key, (0, 0.0))
                print(f"      {label:40} {secs / ticks * 1e6:8.1f} us/tick {secs / wall:6.1%}  ({count:,} calls)")
            other = own - sum(prof.get(k, (0, 0.0))[1] for k, _ in LUA_SECTIONS[:4])
            print(f"      {'the rest of the callback':40} {other / ticks * 1e6:8.1f} us/tick {other / wall:6.1%}")
            print(f"    {'waiting for replies':42} {waits / ticks * 1e6:8.1f} us/tick {waits / wall:6.1%}")
        print(f"  Python: {cpu / steps * 1e6:,.0f} us CPU per step ({in_step / steps * 1e6:,.0f} in env.step), "
              f"{steps:,} steps")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rompath", default=None)
    p.add_argument("--seconds", type=float, default=10.0, help="wall seconds per bridge measurement")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    p.add_argument("--breakdown", action="store_true", help="also profile one bridge run per N (see above)")
    p.add_argument("--no-unpiped", action="store_true", help="skip the unpipelined runs")
    p.add_argument("--labels", action="store_true", help="also the bridge with the expert's labels (see above)")
    args = p.parse_args()
    mame, rompath = find_mame(), find_rompath(args.rompath)
    configs = (("bridge", True),) if args.no_unpiped else (("bridge", True), ("unpiped", False))
    if args.labels:
        configs += (("labels", True),)
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for n in args.instances:
            # every bridge run is bracketed by no-op runs (noop, bridge, noop, unpiped, noop) and compared with the
            # mean of the two: the machine's load drifts, and a baseline from a minute earlier misleads.
            # A no-op run emulates about as many frames as the bridge does in `seconds`.
            base = noop_fps(mame, rompath, n, frames=int(800 * args.seconds))
            results.setdefault(("noop", n), []).append((base, 0.0, 0.0))
            line = f"round {r + 1}, N={n}: noop {base:,.0f}"
            for name, piped in configs:
                got = bridge_fps(rompath, n, args.seconds, piped, labels=name == "labels")
                after = noop_fps(mame, rompath, n, frames=int(800 * args.seconds))
                results.setdefault((name, n), []).append(got)
                results[("noop", n)].append((after, 0.0, 0.0))
                ratios.setdefault((name, n), []).append(got[0] / (0.5 * (base + after)))
                line += f", {name} {got[0]:,.0f}, noop {after:,.0f}"
                base = after
            print(line + " frames/s", file=sys.stderr, flush=True)
    print(f"\nbridge overhead, {args.rounds} round(s), medians; frames/s and decisions/s summed over N; ratio: to the "
          "mean of the no-op runs just before and after (min-max over rounds)")  # fmt: skip
    print(f"{'config':10} {'N':>2} {'frames/s':>10} {'decisions/s':>12} {'ratio':>7} {'min-max':>13} {'control':>8}")
    for n in args.instances:
        for name in ("noop", *(c for c, _ in configs)):
            rows = results[(name, n)]
            fps = statistics.median(x[0] for x in rows)
            dps = statistics.median(x[1] for x in rows)
            ctl = statistics.median(x[2] for x in rows)
            rs = ratios.get((name, n), [1.0])
            print(
                f"{name:10} {n:>2} {fps:>10,.0f} {dps:>12,.0f} {statistics.median(rs):>7.3f} "
                f"{min(rs):>6.3f}-{max(rs):.3f} {ctl if name != 'noop' else float('nan'):>8.2f}"
            )
    if args.breakdown:
        for n in args.instances:
            breakdown(rompath, n, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

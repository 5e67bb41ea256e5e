"""Watch a policy play: ``python -m tempest_gym.enjoy --algo expert -n 20000 --num-envs 2 --rompath DIR``.

Prints one line per finished episode (one life) and a summary at the end. ``--algo`` is
``expert`` (the rule-based teacher), ``random``, or a trained algorithm loaded from a Zoo-style
log folder (``-f logs/``) or a model file (``--model``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tempest_gym.cli.common import (
    add_emulator_args,
    add_player_args,
    exit_codes,
    make_env,
    make_player,
    resolve_player,
    starting,
)
from tempest_gym.training.recording import ActionLog, collect_videos


@dataclass
class EpisodeLog:
    """Per-episode results and the summary printed at the end."""

    episodes: list[dict] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def add(self, env_index: int, ep: dict) -> None:
        self.episodes.append(ep)
        end = "game over" if ep.get("game_over") else ""
        print(
            f"episode {len(self.episodes):4d}  env {env_index}  score {ep['score']:>8,}  points {ep['points']:>7,}  "
            f"level {ep['level']:3d}  length {ep['l']:6,} ticks  return {ep['r']:8.2f}  {end}",
            flush=True,
        )

    def summary(self, steps: int) -> str:
        dt = time.monotonic() - self.start
        if not self.episodes:
            return f"no episode finished in {steps:,} steps ({dt:.1f} s); run longer with -n"
        pts = np.array([e["points"] for e in self.episodes])
        lvl = np.array([e["level"] for e in self.episodes])
        length = np.array([e["l"] for e in self.episodes])
        return (
            f"{len(self.episodes)} episodes in {steps:,} steps ({dt:.1f} s, {steps / dt:,.0f} steps/s): "
            f"points per episode mean {pts.mean():,.0f} median {np.median(pts):,.0f} max {pts.max():,}; "
            f"level mean {lvl.mean():.2f} max {lvl.max()}; length mean {length.mean():,.0f} ticks"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tempest_gym.enjoy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_player_args(p, algo="expert")
    p.add_argument("-n", "--n-timesteps", type=int, default=10_000, help="env steps (ticks per instance x instances)")
    p.add_argument("--episodes", type=int, default=0, help="stop after this many episodes (0: use -n)")
    add_emulator_args(p)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the greedy ones")
    p.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="write a video of each episode (MP4 with ffmpeg, else MNG) and per-instance action logs",
    )
    p.add_argument("--record-size", default="480x360", help="video size WxH (MAME -snapsize)")
    view = p.add_mutually_exclusive_group()
    view.add_argument(
        "--headless",
        dest="headless",
        action="store_true",
        default=None,
        help="no window, full speed (default when there is no display)",
    )
    view.add_argument("--window", dest="headless", action="store_false", help="a normal MAME window at game speed")
    args = p.parse_args(argv)
    resolve_player(p, args, argv)
    return args


@exit_codes
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headless = args.headless
    if headless is None:
        headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    from tempest_gym.env.vec_env import decode_actions

    record = Path(args.record) if args.record else None
    extra: dict = {}
    if record is not None:
        work = Path(tempfile.mkdtemp(prefix="mame-", dir=_mkdir(record)))
        extra = dict(client_settings={"record": "mng"}, mame_args=("-snapsize", args.record_size),
                     workdir=str(work), keep_workdir=True)  # fmt: skip
    with starting():
        env = make_env(args, expert=False, headless=headless, **extra)
    settings = {"start_level": args.start_level, "lives": args.lives, "max_spin": env.max_spin,
                "layout_hash": env.layout.hash, "algo": args.algo}  # fmt: skip
    logs = [ActionLog(dict(settings, seed=args.seed + i)) for i in range(env.num_envs)]
    log = EpisodeLog()
    steps = 0
    try:
        with starting():
            policy = make_player(args, env, deterministic=not args.stochastic)
        obs = env.reset()
        infos = env.reset_infos
        print(f"playing {args.algo} on {args.num_envs} MAME instance(s), start level {args.start_level}", flush=True)
        while steps < args.n_timesteps:
            actions = policy(obs, infos)
            if record is not None:
                fz, spin = decode_actions(actions, env.max_spin)
                for i in range(env.num_envs):
                    logs[i].add(fz[i], spin[i])
            obs, _, dones, infos = env.step(actions)
            steps += env.num_envs
            for i in np.flatnonzero(dones):
                log.add(int(i), infos[i]["episode"])
                logs[i].end_episode(infos[i]["episode"])
            if args.episodes and len(log.episodes) >= args.episodes:
                break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        env.close()
        if record is not None:
            save_recordings(record, work, logs)
    print(log.summary(steps), flush=True)
    return 0


def _mkdir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def save_recordings(record: Path, work: Path, logs: list[ActionLog]) -> None:
    """Videos to ``record/env<i>/``, action logs to ``record/env<i>.actions.npz``; drop MAME's scratch dir."""
    for i, alog in enumerate(logs):
        videos = collect_videos(work / f"slot{i}" / "snap", record / f"env{i}")
        path = alog.save(record / f"env{i}.actions.npz")
        print(f"env {i}: {len(videos)} video(s) in {record / f'env{i}'}; action log {path} "
              f"(replay: python -m tempest_gym.replay {path})", flush=True)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

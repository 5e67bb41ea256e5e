"""Replay an action log: ``python -m tempest_gym.replay recordings/env0.actions.npz [--rompath DIR]``.

Starts one MAME instance with the settings stored in the log (seed, start level, lives), sends the
logged actions tick by tick, and checks that every episode ends at the same step with the same
score. Exit code 0 when the replay matches, 1 when it diverges. ``--record DIR`` writes videos of
the replay; ``--window`` shows it in a MAME window at game speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tempest_gym.cli.common import add_emulator_args, exit_codes, make_env, starting
from tempest_gym.training.recording import ActionLog, collect_videos


def replay(log: ActionLog, rompath: str | None = None, mame: str | None = None, headless: bool = True,
           record: Path | None = None) -> list[dict]:  # fmt: skip
    """Play the log; returns the episodes seen (dicts with end step, score, points, level)."""
    s = log.settings
    extra: dict = {}
    work = None
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="mame-", dir=record))
        extra = dict(client_settings={"record": "mng"}, workdir=str(work), keep_workdir=True)
    env = make_env(num_envs=1, rompath=rompath, mame=mame, seed=int(s["seed"]), start_level=int(s["start_level"]),
                   lives=int(s["lives"]), max_spin=int(s["max_spin"]), expert=False, headless=headless,
                   **extra)  # fmt: skip
    if env.layout.hash != s.get("layout_hash", env.layout.hash):
        print("warning: the log was written with another state layout; the replay may still match", file=sys.stderr)
    episodes = []
    try:
        env.reset()
        actions = np.stack([np.array(log.fz, np.float32), np.array(log.spin, np.float32) / env.max_spin], axis=1)
        for t, a in enumerate(actions):
            _, _, dones, infos = env.step(a[None])
            if dones[0]:
                ep = infos[0]["episode"]
                episodes.append({"end": t, "score": ep["score"], "points": ep["points"], "level": ep["level"]})
    finally:
        env.close()
        if work is not None and record is not None:
            collect_videos(work / "slot0" / "snap", record)
            shutil.rmtree(work, ignore_errors=True)
    return episodes


@exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tempest_gym.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("log", help="an action log written by enjoy --record (envN.actions.npz)")
    add_emulator_args(p, include=("rompath", "mame"))  # the rest comes from the log
    p.add_argument("--record", default=None, metavar="DIR", help="write videos of the replayed episodes")
    p.add_argument("--window", action="store_true", help="show the replay in a MAME window at game speed")
    args = p.parse_args(argv)
    # any failure to replay (a bad log, no MAME, a client that dies) is exit code 2; 1 means "differs"
    with starting():
        log = ActionLog.load(args.log)
        episodes = replay(log, args.rompath, args.mame, headless=not args.window,
                          record=Path(args.record) if args.record else None)  # fmt: skip
    ok = len(episodes) >= len(log.episode_end)
    for k, want_end in enumerate(log.episode_end):
        got = episodes[k] if k < len(episodes) else None
        match = got is not None and got["end"] == want_end and got["score"] == log.episode_score[k]
        ok &= match
        got_text = f"step {got['end']:,} score {got['score']:,}" if got else "missing"
        print(f"episode {k + 1}: logged step {want_end:,} score {log.episode_score[k]:,}; replayed {got_text}"
              f"  {'ok' if match else 'DIFFERENT'}")  # fmt: skip
    print(f"replay of {len(log.fz):,} steps {'matches' if ok else 'DIFFERS from'} the log")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

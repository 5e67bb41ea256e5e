"""Evaluate a player over whole games: ``python -m tempest_gym.evaluate --algo hybrid_dqn -f logs/ --games 10``.

``--algo`` is a trained algorithm (loaded from a Zoo log folder with ``-f``, or ``--model PATH``),
``expert`` or ``random``. The model acts alone: no expert override and no exploration (unless
``--epsilon``). Writes ``eval.json`` and ``eval.md`` (per-game table and mean/median/min/max)
into ``--out`` (default: ``<run folder>/eval`` for a trained model, ``eval/<algo>`` otherwise).
Same seeds and settings give comparable runs (see tempest_gym/training/evaluation.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tempest_gym.cli.common import (
    PLAYERS,
    add_emulator_args,
    add_player_args,
    exit_codes,
    make_env,
    make_player,
    model_path,
    resolve_player,
    starting,
)
from tempest_gym.training.evaluation import epsilon_policy, evaluate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempest_gym.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_player_args(p)
    p.add_argument("--games", type=int, default=10, help="games to play (each until game over)")
    p.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action per tick")
    p.add_argument("--max-ticks", type=int, default=100_000, help="stop a game after this many ticks")
    p.add_argument("--out", default=None, help="output folder for eval.json and eval.md")
    add_emulator_args(p, num_help="MAME instances playing in parallel")
    args = p.parse_args(argv)
    resolve_player(p, args, argv)
    return args


@exit_codes
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with starting():
        env = make_env(args, expert=False)
    try:
        with starting():
            policy = make_player(args, env)
            if args.out:
                out = Path(args.out)
            elif args.algo in PLAYERS:
                out = Path("eval") / args.algo
            else:
                out = model_path(args).parent / "eval"
        settings = {k: getattr(args, k) for k in ("env", "games", "start_level", "lives", "num_envs", "seed",
                                                  "epsilon", "max_ticks", "model", "load_best")}  # fmt: skip
        if args.algo not in PLAYERS:
            settings["model"] = str(model_path(args))  # the file -f found (averaged or final weights), not just --model
        print(f"evaluating {args.algo}: {args.games} games, start level {args.start_level}", flush=True)

        def report(g):
            lost = ", ".join(f"L{lv}:{n}" for lv, n in sorted(g.lives_lost.items()))
            print(f"game on env {g.env}: score {g.score:,}  highest level {g.max_level}  ticks {g.ticks:,}  "
                  f"lives lost {lost}{'  (truncated)' if g.truncated else ''}", flush=True)  # fmt: skip

        result = evaluate(env, epsilon_policy(policy, args.epsilon, args.seed), args.algo, args.games, settings,
                          max_ticks=args.max_ticks, on_game=report)  # fmt: skip
    finally:
        env.close()
    j, m = result.save(out)
    s = result.summary()
    print(f"score mean {s['score']['mean']:,.0f} median {s['score']['median']:,.0f}; highest level mean "
          f"{s['max_level']['mean']:.2f}; wrote {j} and {m}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

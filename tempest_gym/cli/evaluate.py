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

from tempest_gym import ENV_ID
from tempest_gym.errors import TempestGymError
from tempest_gym.training.agents import BUILTIN, make_policy
from tempest_gym.training.evaluation import epsilon_policy, evaluate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempest_gym.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--algo", default=None, help="hybrid_dqn, expert or random")
    p.add_argument("--released", action="store_true",
                   help="the released hybrid_dqn model (models/hybrid_dqn_tempest.zip); sets --algo and --model")
    p.add_argument("--env", default=ENV_ID, choices=[ENV_ID], help="environment id")
    p.add_argument("-f", "--folder", default="logs", help="Zoo-style log folder (trained algorithms)")
    p.add_argument("--model", default=None, help="model .zip (instead of -f)")
    p.add_argument("--exp-id", type=int, default=0, help="run number in the log folder (0: latest)")
    p.add_argument("--load-best", action="store_true", help="best_model.zip instead of the last model")
    p.add_argument("--games", type=int, default=10, help="games to play (each until game over)")
    p.add_argument("--start-level", type=int, default=1)
    p.add_argument("--lives", type=int, default=3)
    p.add_argument("--num-envs", type=int, default=1, help="MAME instances playing in parallel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action per tick")
    p.add_argument("--max-ticks", type=int, default=100_000, help="stop a game after this many ticks")
    p.add_argument("--rompath", default=None)
    p.add_argument("--mame", default=None)
    p.add_argument("--out", default=None, help="output folder for eval.json and eval.md")
    args = p.parse_args(argv)
    if args.released:
        from tempest_gym.bridge.paths import released_model

        if args.algo not in (None, "hybrid_dqn") and "--algo" in (argv if argv is not None else sys.argv):
            p.error("--released is a hybrid_dqn model; leave --algo out or say --algo hybrid_dqn")
        try:
            args.algo, args.model = "hybrid_dqn", str(released_model())
        except FileNotFoundError as exc:
            p.error(str(exc))
    elif args.algo is None:
        p.error("--algo is required (hybrid_dqn, expert or random), or --released")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tempest_gym.env.vec_env import TempestVecEnv

    try:
        env = TempestVecEnv(num_envs=args.num_envs, rompath=args.rompath, mame=args.mame,
                            start_level=args.start_level, lives=args.lives, seed=args.seed, expert=False)  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    try:
        policy = make_policy(args.algo, env, seed=args.seed, folder=args.folder, model_path=args.model,
                             exp_id=args.exp_id, load_best=args.load_best)  # fmt: skip
        if out is None:
            out = Path("eval") / args.algo
            if args.algo not in BUILTIN:
                from tempest_gym.cli.zoo import find_model

                model = Path(args.model) if args.model else find_model(args.folder, args.algo, args.env,
                                                                       args.exp_id, args.load_best)  # fmt: skip
                out = model.parent / "eval"
        settings = {k: getattr(args, k) for k in ("env", "games", "start_level", "lives", "num_envs", "seed",
                                                  "epsilon", "max_ticks", "model", "load_best")}  # fmt: skip
        print(f"evaluating {args.algo}: {args.games} games, start level {args.start_level}", flush=True)

        def report(g):
            lost = ", ".join(f"L{lv}:{n}" for lv, n in sorted(g.lives_lost.items()))
            print(f"game on env {g.env}: score {g.score:,}  highest level {g.max_level}  ticks {g.ticks:,}  "
                  f"lives lost {lost}{'  (truncated)' if g.truncated else ''}", flush=True)  # fmt: skip

        result = evaluate(env, epsilon_policy(policy, args.epsilon, args.seed), args.algo, args.games, settings,
                          max_ticks=args.max_ticks, on_game=report)  # fmt: skip
    except (TempestGymError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        env.close()
    j, m = result.save(out)
    s = result.summary()
    print(f"score mean {s['score']['mean']:,.0f} median {s['score']['median']:,.0f}; highest level mean "
          f"{s['max_level']['mean']:.2f}; wrote {j} and {m}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

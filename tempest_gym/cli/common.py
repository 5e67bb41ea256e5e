"""The CLI toolkit: what every tempest-gym command shares, as ``rl_zoo3/utils.py`` does for the Zoo's tools.

* :data:`ALGOS` and :func:`algo_class` - the trainable algorithms, by the name ``--algo`` takes;
* argument groups - :func:`add_emulator_args` (``--rompath --mame --start-level --lives --seed --num-envs``) and
  :func:`add_player_args` (``--algo --released --env -f --model --exp-id --load-best``);
* factories - :func:`make_env` (the env every tool plays on), :func:`load_model` (a trained model: a file, or
  the latest run of a Zoo log folder) and :func:`make_player` (expert, random or a trained model);
* :func:`exit_codes` - the one error-to-exit-code wrapper around every tool's ``main``: 0 done, 1 failed while
  running, 2 could not start (bad arguments, configuration, missing MAME or ROMs; see :func:`starting`),
  130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tempest_gym import ENV_ID
from tempest_gym.errors import TempestGymError

#: trainable algorithms: name -> "module:class"
ALGOS: dict[str, str] = {"hybrid_dqn": "tempest_gym.hybrid_dqn:HybridDQN"}
#: players that need no model file
PLAYERS = ("expert", "random")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: errors that end a tool with a message instead of a traceback
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (TempestGymError, FileNotFoundError, ValueError, KeyError)
#: the emulator group's options (dests), in the order TempestVecEnv takes them
EMULATOR_ARGS = ("num_envs", "rompath", "mame", "start_level", "lives", "seed")


def algo_class(name: str) -> type:
    """The algorithm class ``--algo name`` means (imported only when asked for)."""
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(ALGOS)}")
    module, cls = ALGOS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``--server``, ``--listen``) -> (host, port); IPv6 hosts may be bracketed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------ errors and exit codes
class CliError(Exception):
    """Ends a tool with ``error: <message>`` and ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def starting(what: str = "") -> Iterator[None]:
    """Errors raised while a tool sets up (arguments, config files, MAME, ROMs, the env) exit with code 2."""
    try:
        yield
    except CliError:
        raise
    except (*EXPECTED_ERRORS, TypeError) as exc:
        raise CliError(f"{what}{exc}", EXIT_USAGE) from exc


def exit_codes(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a tool's ``main(argv) -> code``: expected errors become ``error: ...`` on stderr and an exit code.

    Errors from :func:`starting` exit with 2, other expected errors (``EXPECTED_ERRORS``) with 1, Ctrl-C with 130;
    anything else is a bug and keeps its traceback.
    """

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return int(main(argv) or EXIT_OK)
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.code
        except EXPECTED_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


# ------------------------------------------------------------------ argument groups
def add_emulator_args(
    parser: argparse.ArgumentParser,
    *,
    include: Sequence[str] = EMULATOR_ARGS,
    num_envs: int | None = 1,
    start_level: int | None = 1,
    lives: int | None = 3,
    seed: int = 0,
    num_flags: Sequence[str] = ("--num-envs",),
    num_help: str = "MAME instances",
) -> argparse._ArgumentGroup:
    """``--rompath --mame --start-level --lives --seed --num-envs`` (those in ``include``).

    A default of None means "not given": the value then comes from elsewhere (train: the YAML's env_kwargs).
    """
    g = parser.add_argument_group("emulator")
    if "num_envs" in include:
        g.add_argument(*num_flags, dest="num_envs", type=int, default=num_envs, help=num_help)
    if "rompath" in include:
        g.add_argument("--rompath", default=None, help="directory holding tempest1/ (default: $TEMPEST_ROMS)")
    if "mame" in include:
        g.add_argument("--mame", default=None, help="MAME binary (default: $TEMPEST_MAME, mame, /usr/games/mame)")
    if "start_level" in include:
        g.add_argument("--start-level", type=int, default=start_level, help="level every game starts on (1, 3, 5, ...)")
    if "lives" in include:
        g.add_argument("--lives", type=int, default=lives, help="lives per game: 2, 3, 4 or 5 (the dip switch)")
    if "seed" in include:
        g.add_argument("--seed", type=int, default=seed, help="seed of the games (and of the model)")
    return g


def emulator_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The emulator group's values that were given (not None), as TempestVecEnv arguments."""
    return {k: getattr(args, k) for k in EMULATOR_ARGS if getattr(args, k, None) is not None}


def add_player_args(parser: argparse.ArgumentParser, *, algo: str | None = None) -> argparse._ArgumentGroup:
    """Who plays: ``--algo`` (a trained algorithm, expert or random), ``--released`` and where a model is
    (``--env -f --model --exp-id --load-best``); call :func:`resolve_player` after parsing."""
    g = parser.add_argument_group("player")
    g.add_argument("--algo", default=algo, help=f"{', '.join(ALGOS)}, {' or '.join(PLAYERS)}")
    g.add_argument("--released", action="store_true",
                   help="the released hybrid_dqn model (models/hybrid_dqn_tempest.zip); sets --algo and --model")
    g.add_argument("--env", default=ENV_ID, choices=[ENV_ID], help="environment id")
    g.add_argument("-f", "--folder", default="logs", help="Zoo-style log folder of trained agents")
    g.add_argument("--model", default=None, help="path of a saved model .zip (instead of -f)")
    g.add_argument("--exp-id", type=int, default=0, help="run number in the log folder (0: latest)")
    g.add_argument("--load-best", action="store_true", help="best_model.zip instead of the last model")
    g.add_argument("--final-weights", action="store_true",
                   help="with -f: the run's final weights (<env>.zip) even where it saved averaged ones "
                        "(<env>_averaged.zip, loaded by default)")
    return g  # fmt: skip


def resolve_player(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> None:
    """``--released`` -> ``--algo hybrid_dqn --model <released model>``; without it, ``--algo`` is required."""
    if args.released:
        from tempest_gym.bridge.paths import released_model

        if args.algo not in (None, "hybrid_dqn") and "--algo" in (argv if argv is not None else sys.argv):
            parser.error("--released is a hybrid_dqn model; leave --algo out or say --algo hybrid_dqn")
        try:
            args.algo, args.model = "hybrid_dqn", str(released_model())
        except FileNotFoundError as exc:
            parser.error(str(exc))
    elif args.algo is None:
        parser.error(f"--algo is required ({', '.join(ALGOS)}, {' or '.join(PLAYERS)}), or --released")


# ------------------------------------------------------------------ factories
def make_env(args: argparse.Namespace | None = None, **kwargs: Any):
    """The env a tool plays on: a ``TempestVecEnv`` from the emulator group's values, updated by ``kwargs``."""
    from tempest_gym.env.vec_env import TempestVecEnv

    return TempestVecEnv(**{**(emulator_kwargs(args) if args is not None else {}), **kwargs})


def model_path(args: argparse.Namespace) -> Path:
    """The model file the player group names: ``--model``, or the run in ``-f`` (latest, or ``--exp-id``; its
    averaged weights where it saved them, unless ``--final-weights``)."""
    from tempest_gym.cli.zoo import find_model

    if args.model:
        return Path(args.model)
    return find_model(args.folder, args.algo, args.env, args.exp_id, args.load_best,
                      averaged=not getattr(args, "final_weights", False))  # fmt: skip


def load_model(algo: str, path: str | Path, env: Any = None, device: str = "auto", **kwargs: Any) -> Any:
    """Load a trained model of ``algo`` from ``path`` (``kwargs`` go to the algorithm's ``load``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} not found")
    print(f"Loading {path}", flush=True)
    return algo_class(algo).load(str(path), env=env, device=device, **kwargs)


def make_player(args: argparse.Namespace, env: Any, deterministic: bool = True):
    """The player group's choice as an ``(obs, infos) -> actions`` function (see ``training/agents.py``)."""
    from tempest_gym.training.agents import expert_policy, model_policy, random_policy

    if args.algo == "random":
        return random_policy(args.seed)
    if args.algo == "expert":
        return expert_policy(env, args.seed)
    algo_class(args.algo)  # an unknown --algo is named as such, before its model file is looked for
    return model_policy(load_model(args.algo, model_path(args), env=env), deterministic)

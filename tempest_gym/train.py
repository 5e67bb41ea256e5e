"""Train an agent on N headless MAME instances, RL-Zoo style.

    python -m tempest_gym.train --algo hybrid_dqn --env TempestMAME-v0 --rompath DIR -P

Hyperparameters come from ``zoo_configs/<algo>.yml`` (section ``TempestMAME-v0``), overridden by
``--hyperparams key:value``. Logs go to ``<log-folder>/<algo>/TempestMAME-v0_<n>/``: the final
model ``TempestMAME-v0.zip``, checkpoints ``rl_model_<steps>_steps.zip``, ``best_model.zip`` (with
``--eval-freq``), ``monitor.csv``, and ``TempestMAME-v0/{config.yml,args.yml,command.txt}``.
The model is saved on Ctrl-C and on errors too, so a crash loses at most the replay buffer.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from tempest_gym import ENV_ID
from tempest_gym.errors import TempestGymError
from tempest_gym.zoo import (
    check_keys,
    default_config_file,
    latest_run_id,
    load_hyperparams,
    parse_override,
    parse_policy_kwargs,
    preprocess,
)

ALGOS = {"hybrid_dqn": "tempest_gym.hybrid_dqn:HybridDQN"}


def algo_class(name: str) -> type:
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(ALGOS)}")
    module, cls = ALGOS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tempest_gym.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--algo", default="hybrid_dqn", choices=sorted(ALGOS))
    p.add_argument("--env", default=ENV_ID, help="environment id (only TempestMAME-v0)")
    p.add_argument("-conf", "--conf-file", default=None, help="hyperparameter YAML (default zoo_configs/<algo>.yml)")
    p.add_argument("-f", "--log-folder", default="logs")
    p.add_argument("-n", "--n-timesteps", type=int, default=-1, help="override n_timesteps from the YAML")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-freq", type=int, default=-1, help="evaluate every N env steps (-1: never)")
    p.add_argument(
        "--eval-games",
        "--eval-episodes",
        dest="eval_games",
        type=int,
        default=3,
        help="whole games (until game over) per evaluation, the model acting alone",
    )
    p.add_argument("--eval-envs", type=int, default=1, help="extra MAME instances for evaluation")
    p.add_argument("--max-seconds", type=float, default=0, help="stop after this wall-clock budget (0: none)")
    p.add_argument("--save-freq", type=int, default=100_000, help="checkpoint every N env steps (-1: never)")
    p.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard log dir")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar")
    p.add_argument("-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE")
    p.add_argument("-i", "--trained-agent", default="", help="continue training this model .zip")
    p.add_argument("--num-envs", type=int, default=None, help="override env_kwargs num_envs (MAME instances)")
    p.add_argument("--rompath", default=None, help="directory holding tempest1 (default $TEMPEST_ROMS)")
    p.add_argument("--mame", default=None, help="MAME binary")
    p.add_argument("--start-level", type=int, default=None)
    p.add_argument(
        "--remote",
        action="store_true",
        help="no local MAME: wait for --num-envs clients started with python -m tempest_gym.client",
    )
    p.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="where the server listens (default 127.0.0.1, a free port; remote hosts need e.g. 0.0.0.0:9000)",
    )
    p.add_argument("--token", default=None, help="shared secret for clients (default $TEMPEST_TOKEN; off loopback)")
    p.add_argument("--device", default="auto")
    p.add_argument("-v", "--verbose", type=int, default=1)
    p.add_argument("--save-replay-buffer", action="store_true", help="also save the replay buffer at the end")
    return p.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], int, str, dict[str, Any]]:
    """Hyperparameters -> (algo kwargs, env kwargs, n_timesteps, policy, saved config)."""
    cls = algo_class(args.algo)
    conf = Path(args.conf_file) if args.conf_file else default_config_file(args.algo)
    hp = load_hyperparams(conf, args.env)
    check_keys(hp, cls, str(conf))
    overrides = parse_override(args.hyperparams)
    check_keys(overrides, cls, "--hyperparams")
    hp.update(overrides)
    saved = OrderedDict(sorted(copy.deepcopy(hp).items()))  # the YAML as given; CLI args go to args.yml
    n_timesteps = args.n_timesteps if args.n_timesteps > 0 else int(hp.pop("n_timesteps", 1_000_000))
    hp.pop("n_timesteps", None)
    env_kwargs = hp.pop("env_kwargs", {}) or {}
    if isinstance(env_kwargs, str):
        env_kwargs = parse_policy_kwargs(env_kwargs)
    for key, value in (("num_envs", args.num_envs), ("rompath", args.rompath), ("mame", args.mame),
                       ("start_level", args.start_level)):  # fmt: skip
        if value is not None:
            env_kwargs[key] = value
    if args.listen:
        from tempest_gym.client import parse_server

        env_kwargs["host"], env_kwargs["port"] = parse_server(args.listen)
    if args.remote:
        env_kwargs["remote"] = True
    if args.token is not None:
        env_kwargs["token"] = args.token
    policy = hp.pop("policy", "HybridQPolicy")
    return preprocess(hp), env_kwargs, n_timesteps, policy, saved


def run_folder(args: argparse.Namespace) -> Path:
    log_path = Path(args.log_folder) / args.algo
    save_path = log_path / f"{args.env}_{latest_run_id(log_path, args.env) + 1}"
    (save_path / args.env).mkdir(parents=True, exist_ok=False)
    return save_path


def make_logger(save_path: Path, tensorboard_log: str | None, stdout: bool):
    """SB3 logger writing progress.csv into the run folder, TensorBoard events (with -tb), and stdout."""
    from stable_baselines3.common.logger import Logger, make_output_format

    formats = [make_output_format("csv", str(save_path))]
    if stdout:
        formats.append(make_output_format("stdout", str(save_path)))
    if tensorboard_log:
        formats.append(make_output_format("tensorboard", str(Path(tensorboard_log) / save_path.name)))
    return Logger(str(save_path), formats)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.env != ENV_ID:
        print(f"error: unknown env {args.env!r}; tempest-gym provides {ENV_ID}", file=sys.stderr)
        return 2
    try:
        hp, env_kwargs, n_timesteps, policy, saved = prepare(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.vec_env import VecMonitor

    from tempest_gym.callbacks import EvalGamesCallback, LiveSummaryCallback, StopAfterSeconds, TempestMetricsCallback
    from tempest_gym.vec_env import TempestVecEnv

    cls = algo_class(args.algo)
    save_path = run_folder(args)
    params_path = save_path / args.env
    with open(params_path / "config.yml", "w") as f:
        yaml.dump(dict(saved), f)
    with open(params_path / "args.yml", "w") as f:
        yaml.dump(OrderedDict(sorted(vars(args).items())), f)
    (params_path / "command.txt").write_text(" ".join(getattr(sys, "orig_argv", sys.argv)) + "\n")
    print(f"Log path: {save_path}", flush=True)

    try:
        env = VecMonitor(TempestVecEnv(seed=args.seed, **env_kwargs), str(save_path), info_keywords=("score", "level"))
    except (ValueError, TypeError) as exc:
        print(f"error: bad env_kwargs {env_kwargs}: {exc}", file=sys.stderr)
        return 2
    eval_env = None
    model = None
    try:
        n_envs = env.num_envs
        metrics = TempestMetricsCallback()
        callbacks = [metrics]
        if args.save_freq > 0:
            callbacks.append(CheckpointCallback(max(args.save_freq // n_envs, 1), str(save_path), "rl_model"))
        evals = None
        if args.eval_freq > 0:
            if args.eval_envs < 1:
                raise ValueError("--eval-freq needs --eval-envs >= 1 (evaluation runs on its own MAME instances)")
            eval_kwargs = dict(env_kwargs, num_envs=args.eval_envs, expert=False)

            def make_eval_env():
                return TempestVecEnv(seed=args.seed + 10_000, **eval_kwargs)

            evals = EvalGamesCallback(make_eval_env, args.eval_freq, games=args.eval_games, log_path=save_path,
                                      best_model_save_path=save_path, verbose=args.verbose)  # fmt: skip
            callbacks.append(evals)
        if args.max_seconds > 0:
            callbacks.append(StopAfterSeconds(args.max_seconds))
        if args.progress:
            callbacks.append(LiveSummaryCallback(n_timesteps, metrics, evals))
        tb = args.tensorboard_log or None
        if args.trained_agent:
            if not os.path.isfile(args.trained_agent):
                raise FileNotFoundError(f"--trained-agent {args.trained_agent} not found")
            print(f"Continuing from {args.trained_agent}", flush=True)
            model = cls.load(args.trained_agent, env=env, verbose=args.verbose, device=args.device, **hp)
        else:
            model = cls(policy, env, seed=args.seed, verbose=args.verbose, device=args.device, **hp)
        model.set_logger(make_logger(save_path, tb, stdout=args.verbose > 0 and not args.progress))
        model.learn(
            n_timesteps,
            callback=callbacks,
            reset_num_timesteps=not args.trained_agent,
        )
    except KeyboardInterrupt:
        print("interrupted: saving the model", file=sys.stderr)
    except (TempestGymError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if model is not None:
            model.save(str(save_path / f"{args.env}.zip"))
            print(f"Saved model to {save_path / (args.env + '.zip')}", flush=True)
            if args.save_replay_buffer:
                model.save_replay_buffer(str(save_path / "replay_buffer.pkl"))
        env.close()
        if eval_env is not None:
            eval_env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train an agent on N headless MAME instances, RL-Zoo style.

    python -m tempest_gym.train --algo hybrid_dqn --env TempestMAME-v0 --rompath DIR -P

Hyperparameters come from ``zoo_configs/<algo>.yml`` (section ``TempestMAME-v0``), overridden by
``--hyperparams key:value``; the env's arguments from its ``env_kwargs`` (and ``n_envs``), updated by
``--env-kwargs key:value`` and by flags such as ``--num-envs``. Logs go to
``<log-folder>/<algo>/TempestMAME-v0_<n>/``: the final model ``TempestMAME-v0.zip``, checkpoints
``rl_model_<steps>_steps.zip``, ``best_model.zip`` (with ``--eval-freq``), ``monitor.csv``, and
``TempestMAME-v0/{config.yml,args.yml,command.txt}``.
The model is saved on Ctrl-C and on errors too, so a crash loses at most the replay buffer.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from tempest_gym import ENV_ID
from tempest_gym.cli.common import (
    ALGOS,
    add_emulator_args,
    algo_class,
    emulator_kwargs,
    exit_codes,
    make_env,
    parse_server,
    starting,
)
from tempest_gym.cli.zoo import (
    check_env_keys,
    check_keys,
    default_config_file,
    latest_run_id,
    load_hyperparams,
    parse_override,
    parse_policy_kwargs,
    preprocess,
    requested_num_envs,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tempest_gym.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--algo", default="hybrid_dqn", choices=sorted(ALGOS))
    p.add_argument("--env", default=ENV_ID, choices=[ENV_ID], help="environment id")
    p.add_argument("-conf", "--conf-file", default=None, help="hyperparameter YAML (default zoo_configs/<algo>.yml)")
    p.add_argument("-f", "--log-folder", default="logs")
    p.add_argument("-n", "--n-timesteps", type=int, default=-1, help="override n_timesteps from the YAML")
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
    p.add_argument(
        "--eval-max-ticks",
        type=int,
        default=20_000,
        help="cut an evaluation game after this many ticks (a good player's game can last for hours)",
    )
    p.add_argument("--max-seconds", type=float, default=0, help="stop after this wall-clock budget (0: none)")
    p.add_argument(
        "--fit-updates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --max-seconds: fewer gradient_steps per round where the learner is too slow for all the "
        "n_timesteps to fit the budget (measured as the run goes; never more than configured)",
    )
    p.add_argument("--save-freq", type=int, default=100_000, help="checkpoint every N env steps (-1: never)")
    p.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard log dir")
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar")
    p.add_argument("-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE")
    p.add_argument(
        "--env-kwargs",
        nargs="+",
        default=None,
        metavar="KEY:VALUE",
        help="TempestVecEnv arguments, e.g. lives:1 death_penalty:500 (update the YAML's env_kwargs)",
    )
    p.add_argument("-i", "--trained-agent", default="", help="continue training this model .zip")
    # None: the YAML's env_kwargs decide (num_envs, start_level, lives)
    add_emulator_args(p, num_envs=None, start_level=None, lives=None,
                      num_help="MAME instances (overrides n_envs and env_kwargs num_envs)")  # fmt: skip
    p.add_argument(
        "--remote",
        action="store_true",
        help="no local MAME: wait for --num-envs clients started with python -m tempest_gym.client",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="start the --num-envs MAME clients as Ray actors (one CPU each, spread over the cluster's nodes; "
        "pip install 'tempest-gym[ray]'): on the Ray cluster at ADDRESS (auto: $RAY_ADDRESS, else the one started "
        "on this host with `ray start`), or without ADDRESS on a new local Ray instance",
    )
    p.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="where the server listens (default 127.0.0.1, a free port; remote hosts need e.g. 0.0.0.0:9000)",
    )
    p.add_argument("--token", default=None,
                   help="the run's token for clients (default $TEMPEST_TOKEN, else a random one per run; required off "
                   "loopback; prefer $TEMPEST_TOKEN, a command line is public)")  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("-v", "--verbose", type=int, default=1)
    p.add_argument(
        "--save-replay-buffer",
        action="store_true",
        help="also save the replay buffer with each checkpoint and at the end (~275 B per transition)",
    )
    p.add_argument("--keep-checkpoints", type=int, default=3, help="newest checkpoints to keep")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its newest checkpoint (weights, optimizer, counters, schedules, and "
        "the replay buffer if it was saved), in the same folder and towards the same n_timesteps",
    )
    return p.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], int, str, dict[str, Any]]:
    """Hyperparameters -> (algo kwargs, env kwargs, n_timesteps, policy, saved config)."""
    cls = algo_class(args.algo)
    if args.resume:  # the run's own config.yml, and the budget it was started with
        conf = Path(args.resume) / args.env / "config.yml"
        if not conf.is_file():
            raise FileNotFoundError(f"{args.resume} is not a run folder ({conf} is missing)")
        hp = yaml.safe_load(conf.read_text()) or {}
        started = yaml.safe_load((conf.parent / "args.yml").read_text()) or {}
        if args.n_timesteps <= 0 and int(started.get("n_timesteps", -1)) > 0:
            args.n_timesteps = int(started["n_timesteps"])
    else:
        conf = Path(args.conf_file) if args.conf_file else default_config_file(args.algo)
        hp = load_hyperparams(conf, args.env)
    check_keys(hp, cls, str(conf))
    num_envs = requested_num_envs(hp, str(conf))
    overrides = parse_override(args.hyperparams)
    check_keys(overrides, cls, "--hyperparams")
    num_envs = requested_num_envs(overrides, "--hyperparams") or num_envs
    hp.update(overrides)
    saved = OrderedDict(sorted(copy.deepcopy(hp).items()))  # the YAML as given; CLI args go to args.yml
    n_timesteps = args.n_timesteps if args.n_timesteps > 0 else int(hp.pop("n_timesteps", 1_000_000))
    hp.pop("n_timesteps", None)
    hp.pop("n_envs", None)  # the Zoo's key: one TempestVecEnv owns all instances, so it is env_kwargs num_envs
    env_kwargs = hp.pop("env_kwargs", {}) or {}
    if isinstance(env_kwargs, str):
        env_kwargs = parse_policy_kwargs(env_kwargs)
    cli_env_kwargs = parse_override(args.env_kwargs, "--env-kwargs")
    num_envs = requested_num_envs({"env_kwargs": cli_env_kwargs}, "--env-kwargs") or num_envs
    env_kwargs.update(cli_env_kwargs)
    if num_envs is not None:
        env_kwargs["num_envs"] = num_envs
    env_kwargs.update({k: v for k, v in emulator_kwargs(args).items() if k != "seed"})  # the seed is separate
    if args.listen:
        env_kwargs["host"], env_kwargs["port"] = parse_server(args.listen)
    if args.remote:
        env_kwargs["remote"] = True
    if args.ray is not None:
        if args.remote:
            raise ValueError("--ray starts the clients itself and --remote waits for clients started by hand: "
                             "choose one")  # fmt: skip
        env_kwargs["launcher"] = "ray"
        if args.ray:
            env_kwargs["ray_address"] = args.ray
        else:  # a local Ray instance: a CPU per MAME actor, those of the evaluation env included
            needed = int(env_kwargs.get("num_envs", 1)) + (args.eval_envs if args.eval_freq > 0 else 0)
            env_kwargs.setdefault("ray_num_cpus", max(needed, os.cpu_count() or 1))
    if args.token is not None:
        env_kwargs["token"] = args.token
    check_env_keys(env_kwargs, "env_kwargs")
    policy = hp.pop("policy", "HybridQPolicy")
    return preprocess(hp), env_kwargs, n_timesteps, policy, saved


def run_folder(args: argparse.Namespace) -> Path:
    log_path = Path(args.log_folder) / args.algo
    save_path = log_path / f"{args.env}_{latest_run_id(log_path, args.env) + 1}"
    (save_path / args.env).mkdir(parents=True, exist_ok=False)
    return save_path


def make_logger(save_path: Path, tensorboard_log: str | None, stdout: bool, suffix: str = ""):
    """SB3 logger writing progress.csv into the run folder, TensorBoard events (with -tb), and stdout."""
    from stable_baselines3.common.logger import Logger, make_output_format

    formats = [make_output_format("csv", str(save_path), suffix)]
    if stdout:
        formats.append(make_output_format("stdout", str(save_path)))
    if tensorboard_log:
        formats.append(make_output_format("tensorboard", str(Path(tensorboard_log) / save_path.name)))
    return Logger(str(save_path), formats)


@exit_codes
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with starting():
        hp, env_kwargs, n_timesteps, policy, saved = prepare(args)

    from stable_baselines3.common.vec_env import VecMonitor

    from tempest_gym.training.callbacks import (
        EvalGamesCallback,
        FitUpdatesToBudget,
        LiveSummaryCallback,
        StopAfterSeconds,
        TempestMetricsCallback,
    )
    from tempest_gym.training.checkpoints import (
        AtomicCheckpointCallback,
        atomic_write,
        latest_checkpoint,
        save_model,
        save_replay_buffer,
    )

    cls = algo_class(args.algo)
    command = " ".join(getattr(sys, "orig_argv", sys.argv)) + "\n"
    suffix = ""
    if args.resume:
        save_path = Path(args.resume)
        with starting():
            resume_model, resume_replay = latest_checkpoint(save_path)
        suffix = f"_resumed_{len(list(save_path.glob('progress*.csv')))}"
        with open(save_path / args.env / "command.txt", "a") as f:
            f.write(command)
        print(f"Resuming {save_path} from {resume_model.name}" + (" with its replay buffer" if resume_replay else ""))
    else:
        save_path = run_folder(args)
        params_path = save_path / args.env
        # plain mappings, so yaml.safe_load reads them back (resume, tools)
        with open(params_path / "config.yml", "w") as f:
            yaml.safe_dump(dict(saved), f, sort_keys=False)
        with open(params_path / "args.yml", "w") as f:
            yaml.safe_dump(dict(sorted(vars(args).items())), f, sort_keys=False)
        (params_path / "command.txt").write_text(command)
    print(f"Log path: {save_path}", flush=True)

    # a resumed run writes its episodes to resumed_<k>.monitor.csv (VecMonitor would overwrite monitor.csv)
    monitor = str(save_path / f"resumed{suffix[len('_resumed') :]}") if suffix else str(save_path)
    with starting(f"bad env_kwargs {env_kwargs}: "):
        env = VecMonitor(make_env(seed=args.seed, **env_kwargs), monitor, info_keywords=("score", "level"))
    model = None
    try:
        metrics = TempestMetricsCallback()
        callbacks = [metrics]
        if args.save_freq > 0:
            callbacks.append(AtomicCheckpointCallback(args.save_freq, save_path, args.keep_checkpoints,
                                                      args.save_replay_buffer, verbose=args.verbose))  # fmt: skip
        evals = None
        if args.eval_freq > 0:
            if args.eval_envs < 1:
                raise ValueError("--eval-freq needs --eval-envs >= 1 (evaluation runs on its own MAME instances)")
            eval_kwargs = dict(env_kwargs, num_envs=args.eval_envs, expert=False)

            def make_eval_env():
                return make_env(seed=args.seed + 10_000, **eval_kwargs)

            evals = EvalGamesCallback(make_eval_env, args.eval_freq, games=args.eval_games, log_path=save_path,
                                      best_model_save_path=save_path, max_ticks=args.eval_max_ticks,
                                      verbose=args.verbose)  # fmt: skip
            callbacks.append(evals)
        if args.max_seconds > 0:
            callbacks.append(StopAfterSeconds(args.max_seconds))
            if args.fit_updates:
                callbacks.append(FitUpdatesToBudget(args.max_seconds, verbose=args.verbose))
        if args.progress:
            callbacks.append(LiveSummaryCallback(n_timesteps, metrics, evals))
        tb = args.tensorboard_log or None
        continuing = bool(args.trained_agent or args.resume)
        if args.resume:
            model = cls.load(str(resume_model), env=env, verbose=args.verbose, device=args.device)
            if resume_replay is not None:
                model.load_replay_buffer(str(resume_replay))
            n_timesteps = max(n_timesteps - model.num_timesteps, 0)
            print(f"at {model.num_timesteps:,} steps; {n_timesteps:,} to go", flush=True)
        elif args.trained_agent:
            if not os.path.isfile(args.trained_agent):
                raise FileNotFoundError(f"--trained-agent {args.trained_agent} not found")
            print(f"Continuing from {args.trained_agent}", flush=True)
            model = cls.load(args.trained_agent, env=env, verbose=args.verbose, device=args.device, **hp)
        else:
            model = cls(policy, env, seed=args.seed, verbose=args.verbose, device=args.device, **hp)
        model.set_logger(make_logger(save_path, tb, stdout=args.verbose > 0 and not args.progress, suffix=suffix))
        model.learn(n_timesteps, callback=callbacks, reset_num_timesteps=not continuing)
    except KeyboardInterrupt:
        print("interrupted: saving the model", file=sys.stderr)
    finally:  # also after an error (exit code 1): a crash loses at most the replay buffer
        if model is not None:
            save_model(model, save_path / f"{args.env}.zip")
            print(f"Saved model to {save_path / (args.env + '.zip')}", flush=True)
            if getattr(model, "has_average", False):
                averaged = save_path / f"{args.env}_averaged.zip"
                with model.averaged_weights():
                    atomic_write(averaged, model.save_weights)
                print(f"Saved the averaged weights to {averaged}", flush=True)
            if args.save_replay_buffer:
                save_replay_buffer(model, save_path / "replay_buffer.pkl")
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

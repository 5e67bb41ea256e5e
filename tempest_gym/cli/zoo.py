"""RL-Zoo-style hyperparameter files and log folders, without pulling in rl_zoo3.

rl_zoo3 builds N single envs through its own factory and depends on ~40 packages; here one
``TempestVecEnv`` owns all emulators, so we keep only the conventions users know: YAML per
algorithm keyed by env id, ``lin_<x>`` schedules, ``policy_kwargs`` as a Python-literal string,
``--hyperparams key:value`` overrides, and ``logs/<algo>/<env>_<n>/`` folders.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import inspect
import os
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the tempest_gym package
ZOO_KEYS = {"n_timesteps", "n_envs", "policy", "env_kwargs", "normalize", "frame_stack", "callback", "env_wrapper"}
UNSUPPORTED = {"normalize", "frame_stack", "callback", "env_wrapper"}


def parse_schedule(value: Any) -> Any:
    """``"lin_1e-4"``, ``"lin_0.5_0.02"``, ``"const_0.1"`` -> an SB3 schedule; anything else unchanged."""
    if isinstance(value, str) and value.strip().lower().startswith(("lin_", "const_")):
        from tempest_gym.hybrid_dqn.schedules import parse_schedule as to_schedule

        return to_schedule(value)
    return value


_SAFE_NAMES = {"True": True, "False": False, "None": None}


def _torch_names() -> dict[str, Any]:
    """Names a YAML ``policy_kwargs`` string may use: activations and our features extractor."""
    import torch as th

    from tempest_gym.hybrid_dqn.features import TempestLanesExtractor

    return {
        "nn.ReLU": th.nn.ReLU,
        "nn.Tanh": th.nn.Tanh,
        "nn.SiLU": th.nn.SiLU,
        "nn.ELU": th.nn.ELU,
        "nn.LeakyReLU": th.nn.LeakyReLU,
        "nn.GELU": th.nn.GELU,
        "TempestLanesExtractor": TempestLanesExtractor,
    }


def parse_policy_kwargs(text: str | dict) -> dict[str, Any]:
    """Evaluate a Zoo ``policy_kwargs`` string safely: literals, ``dict(...)`` and ``nn.<Activation>``."""
    if isinstance(text, dict):
        return text
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"policy_kwargs {text!r} is not a Python expression: {exc.msg}") from None
    names = _torch_names()

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            return {kw.arg: ev(kw.value) for kw in node.keywords}
        if isinstance(node, ast.Name) and node.id in _SAFE_NAMES:
            return _SAFE_NAMES[node.id]
        dotted = ast.unparse(node)
        for prefix in ("", "th.", "torch."):
            if dotted.startswith(prefix) and dotted[len(prefix) :] in names:
                return names[dotted[len(prefix) :]]
        allowed = "literals, dict(...), nn.<Activation>, TempestLanesExtractor"
        raise ValueError(f"policy_kwargs: {dotted!r} is not allowed ({allowed} only)")

    value = ev(tree.body)
    if not isinstance(value, dict):
        raise ValueError(f"policy_kwargs must evaluate to a dict, got {type(value).__name__}")
    return value


def config_dirs() -> list[Path]:
    """Where the shipped hyperparameter files may be, in order.

    ``tempest_gym/zoo_configs/`` (an installed package: setup.py installs the checkout's top-level
    ``zoo_configs/`` there as package data), then ``zoo_configs/`` beside the package (a checkout, or
    an editable install).
    """
    return [PACKAGE_DIR / "zoo_configs", PACKAGE_DIR.parent / "zoo_configs"]


def default_config_file(algo: str) -> Path:
    """The shipped ``<algo>.yml``, whether tempest-gym runs from a checkout or an installed wheel."""
    candidates = [d / f"{algo}.yml" for d in config_dirs()]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no hyperparameter file for {algo!r} (tried {tried}); pass one with -conf")


def load_hyperparams(conf_file: str | os.PathLike, env_id: str) -> dict[str, Any]:
    """The env's section of a Zoo YAML file (``yaml.safe_load``), unprocessed."""
    path = Path(conf_file)
    if not path.is_file():
        raise FileNotFoundError(f"hyperparameter file {path} not found")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if env_id not in data:
        raise KeyError(f"{path} has no section for {env_id!r} (sections: {', '.join(map(str, data)) or 'none'})")
    return dict(data[env_id])


def parse_override(items: list[str] | None, flag: str = "--hyperparams") -> dict[str, Any]:
    """``--hyperparams learning_rate:1e-4 env_kwargs:"dict(num_envs=2)"`` -> dict (YAML-typed values).

    ``--env-kwargs start_level:5 lives:1`` is read the same way (``flag`` names it in errors).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if ":" not in item:
            raise ValueError(f"{flag} expects key:value, got {item!r}")
        key, raw = item.split(":", 1)
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
        if key in ("env_kwargs", "policy_kwargs") and isinstance(value, str):
            value = parse_policy_kwargs(value)
        out[key] = value
    return out


def check_keys(hyperparams: dict[str, Any], algo_class: type, source: str) -> None:
    """Refuse keys the algorithm does not take, with the closest valid names."""
    import difflib

    params = set(inspect.signature(algo_class.__init__).parameters) - {"self", "env", "policy"}
    valid = params | ZOO_KEYS
    for key in hyperparams:
        if key in UNSUPPORTED:
            raise ValueError(f"{source}: {key!r} is not supported by tempest-gym's trainer")
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"{source}: unknown hyperparameter {key!r} for {algo_class.__name__}{hint}")


def requested_num_envs(hyperparams: dict[str, Any], source: str) -> int | None:
    """The number of emulators a set of hyperparameters asks for, or None.

    The Zoo's top-level ``n_envs`` and ``env_kwargs: {num_envs: N}`` (the VecEnv's own name) mean the
    same thing here, since one ``TempestVecEnv`` owns all instances; given both, they must agree.
    """
    env_kwargs = hyperparams.get("env_kwargs") or {}
    if isinstance(env_kwargs, str):
        env_kwargs = parse_policy_kwargs(env_kwargs)
    values = {k: v for k, v in (("n_envs", hyperparams.get("n_envs")), ("env_kwargs num_envs",
              env_kwargs.get("num_envs"))) if v is not None}  # fmt: skip
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}")
    if len(set(values.values())) > 1:
        raise ValueError(f"{source}: n_envs ({values['n_envs']}) and env_kwargs num_envs "
                         f"({values['env_kwargs num_envs']}) disagree; give one of them")  # fmt: skip
    return next(iter(values.values()), None)


def check_env_keys(env_kwargs: dict[str, Any], source: str) -> None:
    """Refuse env_kwargs ``TempestVecEnv`` does not take, with the closest valid names."""
    import difflib

    from tempest_gym.env.vec_env import env_arguments

    valid = env_arguments() - {"seed"}
    for key in env_kwargs:
        if key == "seed":
            raise ValueError(f"{source}: the env's seed comes from --seed, not from env_kwargs")
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"{source}: TempestVecEnv takes no argument {key!r}{hint}")


def preprocess(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Strings -> schedules and dicts; returns a new dict ready for the algorithm's constructor."""
    out = {}
    for key, value in hyperparams.items():
        if key in ("policy_kwargs", "env_kwargs", "replay_buffer_kwargs") and isinstance(value, str):
            value = parse_policy_kwargs(value)
        out[key] = parse_schedule(value)
    return out


def latest_run_id(log_path: str | os.PathLike, env_id: str) -> int:
    best = 0
    for path in glob.glob(os.path.join(str(log_path), env_id + "_[0-9]*")):
        run = path.rsplit("_", 1)[-1]
        if run.isdigit() and path[: -len(run) - 1].endswith(env_id):
            best = max(best, int(run))
    return best


def find_model(
    folder: str,
    algo: str,
    env_id: str,
    exp_id: int = 0,
    load_best: bool = False,
    checkpoint: int | None = None,
    averaged: bool = True,
) -> Path:
    """The model file of a Zoo run: last, best, or a checkpoint; latest run by default.

    "Last" is the run's averaged weights (``<env>_averaged.zip``) where training saved them, as ``weight_average``
    does (they play better than the final weights: docs/results.md), unless ``averaged`` is false; then the final
    model (``<env>.zip``), then the newest checkpoint."""
    log_path = Path(folder) / algo
    if exp_id == 0:
        exp_id = latest_run_id(log_path, env_id)
        if exp_id == 0:
            raise FileNotFoundError(f"no {algo} run for {env_id} under {log_path}; train one or pass --model")
    run = log_path / f"{env_id}_{exp_id}"
    if checkpoint is not None:
        candidates = [run / f"rl_model_{checkpoint}_steps.zip"]
    elif load_best:
        candidates = [run / "best_model.zip"]
    else:
        candidates = [run / f"{env_id}.zip", *sorted(run.glob("rl_model_*_steps.zip"), key=_steps, reverse=True)]
        if averaged:
            candidates.insert(0, run / f"{env_id}_averaged.zip")
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no model in {run} (looked for {', '.join(c.name for c in candidates[:3])})")


def _steps(path: Path) -> int:
    try:
        return int(path.stem.split("_")[2])
    except (IndexError, ValueError):
        return -1

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

ROOT = Path(__file__).resolve().parent.parent
ZOO_KEYS = {"n_timesteps", "policy", "env_kwargs", "normalize", "frame_stack", "callback", "env_wrapper"}
UNSUPPORTED = {"normalize", "frame_stack", "callback", "env_wrapper"}


def parse_schedule(value: Any) -> Any:
    """``"lin_1e-4"``, ``"lin_0.5_0.02"``, ``"const_0.1"`` -> an SB3 schedule; anything else unchanged."""
    if isinstance(value, str) and value.strip().lower().startswith(("lin_", "const_")):
        from tempest_gym.hybrid_dqn.schedules import parse_schedule as to_schedule

        return to_schedule(value)
    return value


_SAFE_NAMES = {"True": True, "False": False, "None": None}


def _torch_names() -> dict[str, Any]:
    import torch as th

    return {
        "nn.ReLU": th.nn.ReLU,
        "nn.Tanh": th.nn.Tanh,
        "nn.SiLU": th.nn.SiLU,
        "nn.ELU": th.nn.ELU,
        "nn.LeakyReLU": th.nn.LeakyReLU,
        "nn.GELU": th.nn.GELU,
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
        raise ValueError(f"policy_kwargs: {dotted!r} is not allowed (literals, dict(...), nn.<Activation> only)")

    value = ev(tree.body)
    if not isinstance(value, dict):
        raise ValueError(f"policy_kwargs must evaluate to a dict, got {type(value).__name__}")
    return value


def default_config_file(algo: str) -> Path:
    return ROOT / "zoo_configs" / f"{algo}.yml"


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


def parse_override(items: list[str] | None) -> dict[str, Any]:
    """``--hyperparams learning_rate:1e-4 env_kwargs:"dict(num_envs=2)"`` -> dict (YAML-typed values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if ":" not in item:
            raise ValueError(f"--hyperparams expects key:value, got {item!r}")
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
    folder: str, algo: str, env_id: str, exp_id: int = 0, load_best: bool = False, checkpoint: int | None = None
) -> Path:
    """The model file of a Zoo run: last (``<env>.zip``), best, or a checkpoint; latest run by default."""
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
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no model in {run} (looked for {', '.join(c.name for c in candidates[:3])})")


def _steps(path: Path) -> int:
    try:
        return int(path.stem.split("_")[2])
    except (IndexError, ValueError):
        return -1


def load_trained_model(
    algo: str,
    env_id: str,
    folder: str = "logs",
    model_path: str | None = None,
    exp_id: int = 0,
    load_best: bool = False,
    env: Any = None,
    device: str = "auto",
) -> Any:
    """Load a model the way ``enjoy``/``evaluate`` need it: an explicit file, or the latest Zoo run."""
    from tempest_gym.train import algo_class

    path = Path(model_path) if model_path else find_model(folder, algo, env_id, exp_id, load_best)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} not found")
    print(f"Loading {path}", flush=True)
    return algo_class(algo).load(str(path), env=env, device=device)

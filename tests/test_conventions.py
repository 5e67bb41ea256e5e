"""What an SB3 / RL Zoo user expects: the Zoo's YAML keys and flags, configs installed with the package, VecEnv
index semantics and a name that does not shadow SB3's (no MAME). HybridDQN's part: test_hybrid_conventions.py."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml

import tempest_gym
from tempest_gym.bridge.synthetic_client import write_wrapper
from tempest_gym.cli.train import parse_args, prepare
from tempest_gym.cli.zoo import default_config_file
from tempest_gym.env.vec_env import TempestVecEnv

th.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ Zoo YAML and flags
def write_conf(tmp_path: Path, section: dict) -> str:
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump({"TempestMAME-v0": section}))
    return str(path)


def test_zoo_top_level_n_envs_is_the_number_of_instances(tmp_path):
    hp, env_kwargs, _, _, saved = prepare(parse_args([]))
    assert env_kwargs["num_envs"] == 2 and "n_envs" not in hp, "the shipped YAML uses the Zoo's n_envs"
    assert saved["n_envs"] == 2, "config.yml keeps the key as written"
    conf = write_conf(tmp_path, {"n_envs": 3, "env_kwargs": {"lives": 2}})
    _, env_kwargs, *_ = prepare(parse_args(["-conf", conf]))
    assert env_kwargs == {"num_envs": 3, "lives": 2}
    # the VecEnv's own name still works, and both at once must agree
    conf = write_conf(tmp_path, {"n_envs": 3, "env_kwargs": {"num_envs": 3}})
    assert prepare(parse_args(["-conf", conf]))[1]["num_envs"] == 3
    conf = write_conf(tmp_path, {"n_envs": 3, "env_kwargs": {"num_envs": 4}})
    with pytest.raises(ValueError, match="disagree"):
        prepare(parse_args(["-conf", conf]))
    with pytest.raises(ValueError, match="positive integer"):
        prepare(parse_args(["-conf", write_conf(tmp_path, {"n_envs": 0})]))


def test_n_envs_precedence_file_hyperparams_env_kwargs_flag(tmp_path):
    conf = write_conf(tmp_path, {"n_envs": 3})
    assert prepare(parse_args(["-conf", conf, "--hyperparams", "n_envs:4"]))[1]["num_envs"] == 4
    # --hyperparams env_kwargs replaces the file's env_kwargs, the file's n_envs still counts
    _, env_kwargs, *_ = prepare(parse_args(["-conf", conf, "--hyperparams", 'env_kwargs:"dict(lives=1)"']))
    assert env_kwargs == {"num_envs": 3, "lives": 1}
    args = ["-conf", conf, "--hyperparams", "n_envs:4", "--env-kwargs", "num_envs:5"]
    assert prepare(parse_args(args))[1]["num_envs"] == 5
    assert prepare(parse_args([*args, "--num-envs", "6"]))[1]["num_envs"] == 6


def test_env_kwargs_flag_updates_the_yaml_env_kwargs():
    args = parse_args(["--env-kwargs", "lives:1", "death_penalty:500", "reward_obj_scale:1e-3", "--start-level", "5"])
    hp, env_kwargs, _, _, saved = prepare(args)
    assert env_kwargs["lives"] == 1 and env_kwargs["death_penalty"] == 500
    assert env_kwargs["reward_obj_scale"] == pytest.approx(1e-3) and env_kwargs["start_level"] == 5
    assert env_kwargs["reward_subj_scale"] == 0.01, "keys not given keep the YAML's values"
    assert "lives" not in saved["env_kwargs"] or saved["env_kwargs"]["lives"] == 3, "CLI args go to args.yml"
    with pytest.raises(ValueError, match="--env-kwargs expects key:value"):
        prepare(parse_args(["--env-kwargs", "lives=1"]))
    with pytest.raises(ValueError, match="did you mean lives"):
        prepare(parse_args(["--env-kwargs", "live:1"]))
    with pytest.raises(ValueError, match="--seed"):
        prepare(parse_args(["--env-kwargs", "seed:3"]))


def test_shipped_config_is_package_data_found_without_the_checkout(tmp_path):
    """Build the package as a wheel would hold it; import it from there, away from the checkout."""
    build = tmp_path / "site"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "-d", str(build)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (build / "tempest_gym" / "zoo_configs" / "hybrid_dqn.yml").is_file()
    assert not (build / "zoo_configs").exists() and not (tmp_path / "zoo_configs").exists()
    # the expert goes with the package; no generic top-level "policies" module lands in site-packages
    assert (build / "tempest_gym" / "policies" / "expert.py").is_file() and not (build / "policies").exists()
    code = (
        "import tempest_gym, tempest_gym.cli.zoo as z, tempest_gym.policies.expert; "
        "print(tempest_gym.__file__); print(z.default_config_file('hybrid_dqn')); "
        "print(sorted(z.load_hyperparams(z.default_config_file('hybrid_dqn'), 'TempestMAME-v0')))"
    )
    env = dict(os.environ, PYTHONPATH=str(build))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(build), "imported the built package, not the checkout"
    assert Path(out[1]) == build / "tempest_gym" / "zoo_configs" / "hybrid_dqn.yml"
    assert "n_envs" in out[2]


def test_default_config_file_in_a_checkout_and_a_clear_error():
    assert default_config_file("hybrid_dqn").is_file()
    with pytest.raises(FileNotFoundError, match="-conf"):
        default_config_file("no_such_algo")


# ------------------------------------------------------------------ VecEnv index semantics and names
@pytest.fixture
def synthetic(tmp_path):
    (tmp_path / "roms" / "tempest1").mkdir(parents=True)
    return {"mame": write_wrapper(tmp_path), "rompath": str(tmp_path / "roms")}


def test_set_attr_honours_indices(synthetic):
    env = TempestVecEnv(num_envs=3, expert=False, **synthetic)
    try:
        env.set_attr("reward_obj_scale", 0.5)
        assert env.get_attr("reward_obj_scale") == [0.5, 0.5, 0.5]
        env.set_attr("reward_obj_scale", 0.25, indices=[2, 0, 1])
        env.set_attr("reward_obj_scale", 0.125, indices=range(3))
        assert env.reward_obj_scale == 0.125
        for partial in (1, [0, 2], [-1]):
            with pytest.raises(ValueError, match="shared by all 3 instances"):
                env.set_attr("reward_obj_scale", 9.0, indices=partial)
        assert env.reward_obj_scale == 0.125, "a refused set_attr changes nothing"
        with pytest.raises(IndexError):
            env.set_attr("reward_obj_scale", 9.0, indices=[0, 1, 2, 3])
        assert env.get_attr("max_spin", indices=[-1]) == [31]
    finally:
        env.close()


def test_env_method_runs_once_per_index(synthetic):
    env = TempestVecEnv(num_envs=3, expert=False, **synthetic)
    try:
        calls = []

        def probe(*args, **kwargs):
            calls.append((args, kwargs))
            return len(calls)

        env.probe = probe  # type: ignore[attr-defined]
        assert env.env_method("probe", 1, key="v") == [1, 2, 3]
        assert calls == [((1,), {"key": "v"})] * 3
        assert env.env_method("probe", indices=[2, 0]) == [4, 5]
        assert env.env_method("probe", indices=1) == [6]
        assert env.env_method("probe", indices=np.int64(0)) == [7]
        with pytest.raises(IndexError):
            env.env_method("probe", indices=[3])
    finally:
        env.close()


def test_make_tempest_vec_env_and_the_deprecated_alias(synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = tempest_gym.make_tempest_vec_env(num_envs=2, expert=False, **synthetic)
    assert isinstance(env, TempestVecEnv) and env.num_envs == 2
    env.close()
    with pytest.warns(DeprecationWarning, match="make_tempest_vec_env"):
        env = tempest_gym.make_vec_env(num_envs=1, expert=False, **synthetic)
    assert isinstance(env, TempestVecEnv) and env.num_envs == 1
    env.close()

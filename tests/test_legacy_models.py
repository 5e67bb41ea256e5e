"""Model files saved before the package layout changed (issue 9) still load and act the same.

The fixtures in ``tests/fixtures/`` were written by the code at commit 51b06f8, whose zips pickle the policy
class and the action spec as ``policies.hybrid.*`` (SB3 stores classes by module path): one weights-only file
(``HybridDQN.save_weights``, ``net_arch=[8]``) per head, one full checkpoint with its replay buffer, and the
greedy actions each model took on 16 fixed observations (``pre_layout_expected.json``). The weights were
perturbed after a few updates, so a model that silently kept its fresh initialisation would act differently.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_env import HybridChoiceEnv

from tempest_gym.hybrid_dqn import BinnedQPolicy, HybridDQN, HybridQPolicy

th.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "pre_layout_expected.json").read_text())
OBS = np.asarray(EXPECTED["obs"], dtype=np.float32)


def assert_acts_as_recorded(model: HybridDQN, expected: list) -> None:
    """The same choices, and the same parameters up to float rounding: the fixtures were recorded on an AMD EPYC
    CPU, and another CPU's matrix-multiply kernels sum in another order (1 ulp apart on an Intel Xeon with AVX-512);
    a model that kept its fresh initialisation would be off by far more."""
    actions = model.predict(OBS, deterministic=True)[0]
    expected_actions = np.asarray(expected, np.float32)
    np.testing.assert_array_equal(actions[:, 0], expected_actions[:, 0])
    np.testing.assert_allclose(actions[:, 1], expected_actions[:, 1], rtol=1e-6, atol=1e-6)


def load(name: str, **kwargs) -> HybridDQN:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = HybridDQN.load(FIXTURES / name, **kwargs)
    failed = [str(w.message) for w in caught if "deserialize" in str(w.message)]
    assert not failed, failed
    return model


@pytest.mark.parametrize("head", ["hybrid", "binned", "categorical"])
def test_pre_layout_weights_only_file_loads_and_acts_the_same(head):
    model = load(f"pre_layout_{head}_weights.zip")
    assert_acts_as_recorded(model, EXPECTED[head])
    assert model.policy.spec.n_choices == 4 and model.spec.n_choices == 4
    # one class held both heads then (policies.hybrid.HybridQPolicy); now each head has its own
    assert type(model.policy) is (BinnedQPolicy if head == "binned" else HybridQPolicy)
    assert model.policy.categorical_actor == (head == "categorical")


def test_pre_layout_checkpoint_and_replay_buffer_resume(tmp_path):
    env = DummyVecEnv([lambda: HybridChoiceEnv() for _ in range(2)])
    model = load("pre_layout_hybrid_full.zip", env=env)
    expected = EXPECTED["hybrid_full"]
    assert_acts_as_recorded(model, EXPECTED["hybrid"])
    assert model.num_timesteps == expected["num_timesteps"] and model._n_updates == expected["n_updates"]
    model.load_replay_buffer(FIXTURES / "pre_layout_hybrid_replay.pkl")
    assert model.replay_buffer.size() == expected["replay_size"]
    np.testing.assert_array_equal(model.replay_buffer.stored_actions(), np.asarray(expected["replay_actions"]))
    model.learn(20, reset_num_timesteps=False)  # and training carries on
    assert model.num_timesteps == expected["num_timesteps"] + 20
    model.save(tmp_path / "resaved.zip")
    assert np.array_equal(load(str(tmp_path / "resaved.zip")).predict(OBS, deterministic=True)[0],
                          model.predict(OBS, deterministic=True)[0])  # fmt: skip


def test_old_paths_load_without_a_top_level_policies_package(monkeypatch):
    """An installed tempest-gym has no top-level ``policies`` package; the old paths resolve all the same."""
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "policies" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delitem(sys.modules, "policies", raising=False)
    model = load("pre_layout_binned_weights.zip")
    assert_acts_as_recorded(model, EXPECTED["binned"])
    assert "policies" not in sys.modules and "policies.hybrid" not in sys.modules, "the aliases are gone after loading"

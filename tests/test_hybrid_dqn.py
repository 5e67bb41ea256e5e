"""HybridDQN: action selection, what gets stored, target updates, schedules, save/load."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecMonitor
from synthetic_env import HybridChoiceEnv

from tempest_gym.hybrid_dqn import HybridDQN, parse_schedule
from tempest_gym.hybrid_dqn.buffer import SOURCE_EXPERT, SOURCE_MODEL, SOURCE_RANDOM
from tempest_gym.hybrid_dqn.policies import BinnedQPolicy, HybridQPolicy

th.set_num_threads(1)

SMALL = dict(net_arch=[32, 32])


def vec_env(n: int = 4, **kw: Any) -> DummyVecEnv:
    return DummyVecEnv([lambda: HybridChoiceEnv(**kw) for _ in range(n)])


class Recorder(VecEnvWrapper):
    """Keeps every step's commanded actions and infos."""

    def __init__(self, venv):
        super().__init__(venv)
        self.steps: list[tuple[np.ndarray, list[dict]]] = []
        self.resets: list[np.ndarray] = []
        self._actions: np.ndarray | None = None

    def reset(self):
        obs = self.venv.reset()
        self.resets.append(np.array(obs, copy=True))
        return obs

    def step_async(self, actions):
        self._actions = np.array(actions, copy=True)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.steps.append((self._actions, [dict(i) for i in infos]))
        return obs, rewards, dones, infos


def model(env, **kw: Any) -> HybridDQN:
    args: dict[str, Any] = dict(
        buffer_size=5_000, learning_starts=100, batch_size=32, train_freq=1, target_update_interval=50, seed=0
    )
    args.update(kw)
    args.setdefault("policy_kwargs", SMALL)
    # the synthetic episodes are very short: a boundary entry every few transitions
    args.setdefault("replay_buffer_kwargs", dict(boundary_size=args["buffer_size"] // 2))
    return HybridDQN("MlpPolicy", env, **args)


def test_expert_override_frequency_matches_ratio():
    m = model(
        vec_env(4), expert_ratio=0.3, exploration_initial_eps=0.5, exploration_final_eps=0.5, learning_starts=10**9
    )
    m.learn(4000)
    counts = m.source_totals
    assert counts.sum() == 4000
    # binomial(4000, 0.3): mean 1200, sd 29; 4 sd bounds
    assert abs(counts[SOURCE_EXPERT] - 1200) < 4 * 29
    # warm-up: every non-expert action is random
    assert counts[SOURCE_MODEL] == 0 and counts[SOURCE_RANDOM] == 4000 - counts[SOURCE_EXPERT]
    # after warm-up, epsilon 0.5 of the remaining 70%
    m2 = model(
        vec_env(4),
        expert_ratio=0.3,
        exploration_initial_eps=0.5,
        exploration_final_eps=0.5,
        learning_starts=0,
        train_freq=1000,
    )
    m2.learn(4000)
    assert abs(m2.source_totals[SOURCE_RANDOM] - 1400) < 4 * np.sqrt(4000 * 0.35 * 0.65)
    assert abs(m2.source_totals[SOURCE_EXPERT] - 1200) < 4 * 29


def test_expert_ratio_schedule_string_and_no_expert_env():
    m = model(vec_env(2), expert_ratio="lin_1.0_0.0", learning_starts=10**9)
    m.learn(2000)
    # linear from 1 to 0: about half the actions are the expert's over the whole run
    assert 0.4 < m.source_totals[SOURCE_EXPERT] / 2000 < 0.6
    assert m.current_expert_ratio == pytest.approx(0.0, abs=1e-3)
    m2 = model(vec_env(2, with_expert=False), expert_ratio=1.0, learning_starts=10**9)
    m2.learn(200)
    assert m2.source_totals[SOURCE_EXPERT] == 0  # no expert in infos: never overridden


def test_expert_actions_follow_the_returned_observations():
    """The expert action used must be the one for the observation being answered (also after auto-resets)."""
    env = Recorder(vec_env(3, max_steps=5))
    m = model(env, expert_ratio=1.0, learning_starts=10**9)
    m.learn(300)
    obs = m.replay_buffer.stored_observations()
    actions = m.replay_buffer.stored_actions()
    # with expert_ratio 1, every stored action is the expert's for that observation: choice c, parameter t
    np.testing.assert_array_equal(actions[:, 0], obs[:, :4].argmax(axis=1))
    np.testing.assert_allclose(actions[:, 1], obs[:, 4], atol=1e-3)  # observations went through float16


def test_stored_action_is_the_executed_one_and_only_in_control():
    env = Recorder(vec_env(3, quantize=31, uncontrolled_prob=0.3))
    m = model(env, expert_ratio=0.2, learning_starts=200, train_freq=4)
    m.learn(1500)
    expected = [info["executed_action"] for _, infos in env.steps for info in infos if info["agent_in_control"]]
    commanded = [a[i] for a, infos in env.steps for i, info in enumerate(infos) if info["agent_in_control"]]
    stored = m.replay_buffer.stored_actions()
    assert 0 < len(stored) == len(expected) < 1500  # uncontrolled transitions were dropped
    np.testing.assert_array_equal(stored, np.stack(expected))
    assert not np.array_equal(stored, np.stack(commanded))  # quantisation: commanded != executed
    # rewards of uncontrolled steps never reach the buffer
    assert m.replay_buffer.size() == sum(i["agent_in_control"] for _, infos in env.steps for i in infos)


def params_equal(a: th.nn.Module, b: th.nn.Module) -> bool:
    return all(th.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("bins", [None, 5])
def test_target_update_every_interval_gradient_steps(bins):
    m = model(vec_env(2), learning_starts=10**9, target_update_interval=3, policy_kwargs=dict(SMALL, spinner_bins=bins))
    m.learn(200)  # fills the buffer, no training
    pairs = m.policy.target_pairs()
    assert len(pairs) == (2 if bins is None else 1)
    for update in range(1, 8):
        m.train(gradient_steps=1, batch_size=16)
        assert m._n_updates == update
        for online, target in pairs:
            assert params_equal(online, target) == (update % 3 == 0), (update, type(online.head).__name__)


def test_polyak_target_update():
    m = model(vec_env(2), learning_starts=10**9, target_update_interval=2, tau=0.25)
    m.learn(100)
    before = [p.clone() for p in m.policy.q_net_target.parameters()]
    m.train(gradient_steps=2, batch_size=16)
    for old, new, online in zip(before, m.policy.q_net_target.parameters(), m.policy.q_net.parameters(), strict=True):
        assert th.allclose(new, 0.75 * old + 0.25 * online, atol=1e-6)


def test_parse_schedule():
    assert parse_schedule(0.3)(0.1) == 0.3
    assert parse_schedule("0.3")(0.5) == 0.3
    assert parse_schedule("lin_0.5")(0.5) == pytest.approx(0.25)
    lin = parse_schedule("lin_0.5_0.02")
    assert lin(1.0) == pytest.approx(0.5) and lin(0.0) == pytest.approx(0.02)
    frac = parse_schedule("lin_1_0_0.25")
    assert frac(0.875) == pytest.approx(0.5) and frac(0.5) == 0.0
    with pytest.raises(ValueError):
        parse_schedule("cos_1")


@pytest.mark.parametrize("bins", [None, 7])
def test_save_load_round_trip(tmp_path, bins):
    env = VecMonitor(vec_env(2))
    m = model(env, learning_starts=100, policy_kwargs=dict(SMALL, spinner_bins=bins), expert_ratio="lin_0.5_0.1")
    m.learn(600)
    assert m._n_updates > 0
    path = tmp_path / "model.zip"
    m.save(path)
    loaded = HybridDQN.load(path, env=VecMonitor(vec_env(2)))
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 6)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    for k in ("num_timesteps", "_n_updates", "_current_progress_remaining", "exploration_rate", "current_expert_ratio"):
        assert getattr(loaded, k) == getattr(m, k), k
    assert type(loaded.policy) is (HybridQPolicy if bins is None else BinnedQPolicy)
    assert bins is None or loaded.policy.spinner_bins == bins
    for a, b in zip(
        m.policy.optimizer.state_dict()["state"].values(),
        loaded.policy.optimizer.state_dict()["state"].values(),
        strict=True,
    ):
        assert th.equal(a["exp_avg"], b["exp_avg"])
    loaded.learn(200, reset_num_timesteps=False)  # continues from the saved progress
    assert loaded.num_timesteps == 800


def test_replay_buffer_save_load(tmp_path):
    m = model(vec_env(2), learning_starts=10**9, buffer_size=100_000)
    m.learn(500)
    path = tmp_path / "replay.pkl"
    m.save_replay_buffer(path)
    assert path.stat().st_size < 100_000  # only the filled part is written
    other = model(vec_env(2), learning_starts=10**9, buffer_size=100_000)
    other.load_replay_buffer(path)
    np.testing.assert_array_equal(other.replay_buffer.stored_observations(), m.replay_buffer.stored_observations())
    np.testing.assert_array_equal(other.replay_buffer.stored_actions(), m.replay_buffer.stored_actions())
    assert other.replay_buffer.open_slot.max() == -1  # the newest transitions became gaps
    other.learn(100)
    assert other.replay_buffer.size() == 600
    buf = io.BytesIO()
    m.save_replay_buffer(buf)
    assert buf.getbuffer().nbytes > 0


def test_layout_detected_through_wrappers():
    class LayoutVecEnv(DummyVecEnv):
        layout = "a layout"

    from tempest_gym.hybrid_dqn import find_layout

    assert find_layout(VecMonitor(LayoutVecEnv([lambda: HybridChoiceEnv()]))) == "a layout"
    assert find_layout(vec_env(1)) is None


def test_layout_env_stores_exact_uint8_codes_and_set_env_after_envless_load(tmp_path):
    from synthetic_env import LayoutVecEnv

    from tempest_gym.hybrid_dqn import Float16Codec, LayoutCodec

    env = Recorder(LayoutVecEnv(2))
    m = model(env, learning_starts=100, buffer_size=2_000)
    assert isinstance(m.replay_buffer.codec, LayoutCodec)
    assert m.replay_buffer.bytes_per_transition < 400
    m.learn(300)
    stored = m.replay_buffer.stored_observations()
    assert len(stored) == 300
    np.testing.assert_array_equal(stored[:2], env.resets[-1])  # bit-exact
    path = tmp_path / "m.zip"
    m.save(path)
    loaded = HybridDQN.load(path)  # no env: nothing tells the buffer about the layout
    assert isinstance(loaded.replay_buffer.codec, Float16Codec)
    loaded.set_env(LayoutVecEnv(2))
    assert isinstance(loaded.replay_buffer.codec, LayoutCodec)
    loaded.learn(150, reset_num_timesteps=False)
    assert loaded.replay_buffer.size() == 150


def test_weight_average_is_the_moving_average_of_the_online_weights_and_swaps_back():
    m = model(vec_env(2), weight_average=0.9, learning_starts=50, train_freq=50, gradient_steps=5)
    snapshots: list[list[th.Tensor]] = []
    step_average = m._update_average

    def recording() -> None:
        step_average()
        snapshots.append([p.detach().clone() for p in m._online_parameters()])

    m._update_average = recording  # type: ignore[method-assign]
    m.learn(400)
    del m._update_average  # the instance's wrapper, which save() would try to pickle
    assert len(snapshots) >= 10
    expected = snapshots[0]
    for snap in snapshots[1:]:
        expected = [0.9 * e + 0.1 * s for e, s in zip(expected, snap, strict=True)]
    assert m._average is not None
    for avg, exp in zip(m._average, expected, strict=True):
        th.testing.assert_close(avg, exp)
    raw = [p.detach().clone() for p in m._online_parameters()]
    assert not all(th.equal(a, r) for a, r in zip(m._average, raw, strict=True))
    buf = io.BytesIO()
    with m.averaged_weights():
        for p, avg in zip(m._online_parameters(), m._average, strict=True):
            assert th.equal(p, avg)
        m.save_weights(buf)
    for p, r in zip(m._online_parameters(), raw, strict=True):
        assert th.equal(p, r)
    buf.seek(0)
    loaded = HybridDQN.load(buf, device="cpu")
    for p, avg in zip(loaded._online_parameters(), m._average, strict=True):
        assert th.equal(p, avg)
    assert not loaded.has_average  # it starts again from the loaded weights


def test_weight_average_off_by_default_and_checked():
    m = model(vec_env(2), learning_starts=50, train_freq=50, gradient_steps=2)
    m.learn(200)
    assert not m.has_average
    with pytest.raises(RuntimeError, match="no averaged weights"), m.averaged_weights():
        pass
    with pytest.raises(ValueError, match="weight_average"):
        model(vec_env(2), weight_average=1.0)

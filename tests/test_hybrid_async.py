"""Background learner: replay-ratio cap, weight publication without tearing, clean stop, error propagation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_env import HybridChoiceEnv

from tempest_gym.hybrid_dqn import AsyncLearner, BackgroundLearner, HybridDQN, WeightPublisher
from tempest_gym.hybrid_dqn.policies import HybridQPolicy

th.set_num_threads(1)


def learner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hybrid-dqn-learner"]


def async_model(**kw) -> HybridDQN:
    env = DummyVecEnv([lambda: HybridChoiceEnv() for _ in range(2)])
    args = dict(
        buffer_size=5_000,
        learning_starts=200,
        batch_size=32,
        async_learner=True,
        max_replay_ratio=0.25,
        policy_sync_interval=5,
        target_update_interval=20,
        replay_buffer_kwargs=dict(boundary_size=2_500),
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
    )
    args.update(kw)
    return HybridDQN("MlpPolicy", env, **args)


def test_publisher_snapshots_are_private_copies():
    pub = WeightPublisher()
    w = {"a": th.zeros(3)}
    assert pub.pull(0) == (0, None)
    v = pub.publish(w)
    w["a"] += 1  # training continues in place after publishing
    version, snap = pub.pull(0)
    assert version == v == 1 and th.equal(snap["a"], th.zeros(3))
    assert pub.pull(version) == (1, None)


def test_no_torn_weights_while_learner_writes():
    """A learner rewrites every parameter to one value per update; every snapshot seen must be one version."""
    net = th.nn.Sequential(th.nn.Linear(64, 64), th.nn.Linear(64, 64))
    with th.no_grad():
        for p in net.parameters():
            p.zero_()  # version 0, published at start
    pub = WeightPublisher()
    counter = {"n": 0}

    def step():
        counter["n"] += 1
        with th.no_grad():
            for p in net.parameters():
                p.fill_(float(counter["n"]))

    learner = BackgroundLearner(step, lambda: 500, lambda: pub.publish(net.state_dict()), sync_interval=1)
    learner.start()
    seen, version = set(), 0
    while learner.running and learner.updates < 500:  # then it idles at its cap
        version, snap = pub.pull(version)
        if snap is not None:
            values = th.cat([t.flatten() for t in snap.values()]).unique()
            assert len(values) == 1, "a snapshot mixed two versions"
            seen.add(float(values[0]))
    learner.stop()
    learner.raise_if_failed()
    assert len(seen) > 1 and not learner_threads()


def test_async_learn_respects_replay_ratio_and_stops():
    m = async_model()
    m.learn(2_000)
    assert not learner_threads() and m._learner is None and m.acting_policy is None
    cap = 0.25 * (2_000 - 200)
    assert 0 < m._n_updates <= cap
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 6)).astype(np.float32)
    actions, _ = m.predict(obs, deterministic=True)
    assert actions.shape == (8, 2)


def test_acting_policy_follows_published_weights():
    m = async_model(max_replay_ratio=1.0, policy_sync_interval=1)
    seen_versions = []
    original = AsyncLearner.sync

    def spy(learner):
        original(learner)
        assert learner is m._learner and m.acting_policy is learner.acting
        seen_versions.append(learner.acting_version)
        # what acts is exactly the snapshot of that version (when no newer one was published meanwhile)
        version, snap = learner.publisher.pull(-1)
        if snap is not None and version == learner.acting_version:
            state = learner.acting.state_dict()
            assert all(th.equal(state[k], v) for k, v in snap.items())
        assert learner.policy_lag >= 0

    AsyncLearner.sync = spy  # type: ignore[method-assign]
    try:
        m.learn(1_500)
    finally:
        AsyncLearner.sync = original  # type: ignore[method-assign]
    assert max(seen_versions) > 1  # it moved on from the initial weights


def test_learner_error_is_raised_in_main_thread():
    m = async_model()
    calls = {"n": 0}

    def broken(batch_size):
        calls["n"] += 1
        raise ValueError("boom in the learner")

    m._gradient_step = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="background learner failed") as info:
        m.learn(3_000)
    assert isinstance(info.value.__cause__, ValueError)
    assert calls["n"] == 1
    assert not learner_threads() and m._learner is None


def test_learner_stops_when_main_thread_fails():
    m = async_model()

    class Stop(Exception):
        pass

    from stable_baselines3.common.callbacks import BaseCallback

    class Failing(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps > 600:
                raise Stop
            return True

    with pytest.raises(Stop):
        m.learn(3_000, callback=Failing())
    assert not learner_threads() and m._learner is None


def test_save_during_async_learning(tmp_path):
    m = async_model()
    from stable_baselines3.common.callbacks import CheckpointCallback

    m.learn(1_200, callback=CheckpointCallback(save_freq=300, save_path=str(tmp_path), name_prefix="ck"))
    files = sorted(tmp_path.glob("ck_*.zip"))
    assert files
    loaded = HybridDQN.load(files[-1])
    assert type(loaded.policy) is HybridQPolicy

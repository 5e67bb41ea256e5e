"""The Q policies: action encoding from the space, MP-DQN pass isolation (HybridQPolicy), the binned head
(BinnedQPolicy), predict()."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from tempest_gym.hybrid_dqn import HybridDQN
from tempest_gym.hybrid_dqn.policies import (
    BinnedQPolicy,
    HybridActionSpec,
    HybridQPolicy,
    QPolicy,
    invert_gradients,
)

th.set_num_threads(1)

OBS = spaces.Box(-1.0, 1.0, (6,), np.float32)


def space(c_lo: float, c_hi: float, p_lo: float, p_hi: float) -> spaces.Box:
    return spaces.Box(np.array([c_lo, p_lo], np.float32), np.array([c_hi, p_hi], np.float32), dtype=np.float32)


def make(action_space: spaces.Box, spinner_bins=None, **kw) -> QPolicy:
    th.manual_seed(0)
    if spinner_bins is not None:
        return BinnedQPolicy(OBS, action_space, lambda _: 1e-3, net_arch=[32, 32], spinner_bins=spinner_bins, **kw)
    return HybridQPolicy(OBS, action_space, lambda _: 1e-3, net_arch=[32, 32], **kw)


def test_spec_reads_counts_and_range_from_the_space():
    spec = HybridActionSpec.from_space(space(2, 6, -3, 5))
    assert (spec.n_choices, spec.choice_low, spec.param_low, spec.param_high) == (5, 2, -3.0, 5.0)
    acts = spec.encode(np.array([0, 4]), np.array([9.0, -1.0]))
    np.testing.assert_array_equal(acts, [[2, 5], [6, -1]])
    np.testing.assert_array_equal(spec.choices(np.array([[2.4, 0], [5.6, 0], [99, 0]])), [0, 4, 4])
    with pytest.raises(ValueError, match="integer bounds"):
        HybridActionSpec.from_space(space(0, 3.5, -1, 1))
    with pytest.raises(ValueError, match="shape"):
        HybridActionSpec.from_space(spaces.Box(-1, 1, (3,), np.float32))


@pytest.mark.parametrize("bins", [None, 7])
def test_predict_returns_box_actions_in_range(bins):
    act_space = space(1, 3, -2, 2)
    policy = make(act_space, spinner_bins=bins)
    obs = np.random.default_rng(0).uniform(-1, 1, (50, 6)).astype(np.float32)
    actions, _ = policy.predict(obs, deterministic=True)
    assert actions.shape == (50, 2)
    assert set(np.unique(actions[:, 0])) <= {1.0, 2.0, 3.0}
    assert (actions[:, 1] >= -2).all() and (actions[:, 1] <= 2).all()
    if bins:
        bins_values = np.linspace(-2, 2, 7)
        assert np.abs(actions[:, 1, None] - bins_values[None, :]).min(axis=1).max() < 1e-6
    single, _ = policy.predict(obs[0], deterministic=True)
    np.testing.assert_allclose(single, actions[0], atol=1e-6)  # batch-size dependent float rounding


@pytest.mark.parametrize("bins", [None, 7])
def test_lean_batch_predict_gives_sb3_predicts_actions(bins):
    """QPolicy.predict skips SB3's wrapper for a Box batch (the per-step path): same actions, same dtype."""
    from stable_baselines3.common.policies import BasePolicy

    policy = make(space(1, 3, -2, 2), spinner_bins=bins)
    obs = np.random.default_rng(1).uniform(-1, 1, (16, 6)).astype(np.float32)
    lean, _ = policy.predict(obs, deterministic=True)
    wrapped, _ = BasePolicy.predict(policy, obs, deterministic=True)
    assert lean.dtype == wrapped.dtype == np.float32
    np.testing.assert_array_equal(lean, wrapped)
    choice, params = policy.act_numpy(obs.astype(np.float64))  # other dtypes are converted as SB3 does
    np.testing.assert_array_equal(choice + 1, lean[:, 0])


def test_mp_dqn_choice_sees_only_its_own_parameter():
    policy = make(space(0, 3, -1, 1))
    obs = th.rand(8, 6)
    features = policy._features(obs, policy.q_net)
    head = policy.q_net.head
    params = th.rand(8, 4) * 2 - 1
    q = head(features, params)
    for k in range(4):
        other = params.clone()
        other[:, [j for j in range(4) if j != k]] = th.rand(8, 3)
        assert th.allclose(head(features, other)[:, k], q[:, k], atol=1e-6)  # only x_k matters for Q_k
        choice = th.full((8,), k, dtype=th.long)
        assert th.allclose(head.forward_choice(features, choice, params[:, k]), q[:, k], atol=1e-5)


def test_binned_head_snaps_parameters_to_nearest_bin():
    policy = make(space(0, 3, -1, 1), spinner_bins=[-1.0, -0.2, 0.0, 0.2, 1.0])
    assert policy.n_bins == 5 and policy.actor is None and not policy.categorical_actor
    p = th.tensor([-0.95, -0.61, -0.59, -0.05, 0.11, 0.6, 0.61])
    assert policy.param_to_bin(p).tolist() == [0, 0, 1, 2, 3, 3, 4]
    np.testing.assert_allclose(policy.snap_params(p.numpy()), [-1, -1, -0.2, 0, 0.2, 0.2, 1])
    q_all = policy._q_all(th.rand(3, 6))
    assert q_all.shape == (3, 4, 5)


def test_invert_gradients_keeps_parameters_in_bounds():
    params = th.tensor([-1.0, 0.0, 1.0, 1.5, -1.5])
    up = invert_gradients(th.ones(5), params, -1.0, 1.0)
    down = invert_gradients(-th.ones(5), params, -1.0, 1.0)
    np.testing.assert_allclose(up.numpy(), [1.0, 0.5, 0.0, -0.25, 1.25])  # beyond the top: pushed back down
    np.testing.assert_allclose(down.numpy(), [0.0, -0.5, -1.0, -1.25, 0.25])


def test_actor_climbs_a_bimodal_q_instead_of_averaging():
    """Q(x) has two equal peaks at -0.7 and +0.7 and a dip at 0 (the 'left or right' spinner case).

    Regressing onto sampled good actions would average them to ~0, the worst place; the Q-gradient actor
    must end near one of the peaks for every choice.
    """
    policy = make(space(0, 3, -1, 1))
    head = policy.q_net.head

    def bimodal(features, params):  # replaces the learned Q-network for this test
        return -((params.abs() - 0.7) ** 2)

    head.forward = bimodal  # type: ignore[method-assign]
    obs = th.rand(64, 6) * 2 - 1
    policy.q_net.requires_grad_(False)
    for _ in range(300):
        loss, _, _ = policy.actor_loss(obs)
        policy.actor_optimizer.zero_grad()
        loss.backward()
        policy.actor_optimizer.step()
    with th.no_grad():
        params = policy._actor_params(obs)
    assert (params.abs() - 0.7).abs().max() < 0.1


def test_heads_are_chosen_by_alias_and_old_style_spinner_bins_still_selects_the_binned_head():
    from stable_baselines3.common.vec_env import DummyVecEnv
    from synthetic_env import HybridChoiceEnv

    def model(policy, **policy_kwargs):
        env = DummyVecEnv([HybridChoiceEnv])
        return HybridDQN(policy, env, buffer_size=100, policy_kwargs=dict(net_arch=[8], **policy_kwargs))

    assert type(model("MlpPolicy").policy) is HybridQPolicy
    assert type(model("BinnedMlpPolicy").policy) is BinnedQPolicy and model("BinnedMlpPolicy").policy.n_bins == 11
    assert type(model("MlpPolicy", spinner_bins=None).policy) is HybridQPolicy
    old_style = model("MlpPolicy", spinner_bins=5)  # configs written when one class held both heads
    assert type(old_style.policy) is BinnedQPolicy and old_style.policy.n_bins == 5
    assert old_style.policy_class is BinnedQPolicy and old_style.policy_kwargs["spinner_bins"] == 5
    # old model files name the class itself (SB3 pickles it): the same rule applies
    assert type(model(HybridQPolicy, spinner_bins=5).policy) is BinnedQPolicy
    with pytest.raises(TypeError, match="spinner_bins"):
        HybridQPolicy(OBS, space(0, 3, -1, 1), lambda _: 1e-3, spinner_bins=5)  # the class alone has one head


def test_demonstration_losses_are_means_over_the_labelled_rows_only():
    """The update weighs every row by its label mask (no ``nonzero``: a CUDA graph records it): the margin and
    imitation losses of a batch equal those of its labelled rows alone, and a batch without labels gives 0."""
    policy = make(space(0, 3, -1, 1), param_classes=9)
    assert isinstance(policy, HybridQPolicy)
    rng = np.random.default_rng(1)
    n = 12
    obs = th.as_tensor(rng.uniform(-1, 1, (n, 6)), dtype=th.float32)
    choice = th.as_tensor(rng.integers(0, 4, n))
    param = th.as_tensor(rng.uniform(-1, 1, n), dtype=th.float32)
    mask = th.as_tensor(rng.random(n) < 0.5)
    mask[0], mask[1] = True, False
    label_choice = th.where(mask, th.as_tensor(rng.integers(0, 4, n)), 0)  # as the buffer gives them: 0 unlabelled
    label_param = th.where(mask, th.as_tensor(rng.uniform(-1, 1, n), dtype=th.float32), 0.0)

    def losses(rows: th.Tensor, m: th.Tensor) -> dict[str, th.Tensor]:
        _, stats = policy.categorical_update_losses(
            obs[rows], obs[rows], choice[rows], param[rows], lambda v: v, m, label_choice[rows], label_param[rows],
            0.8, 1.0, 1.0, 0.0, 3,
        )  # fmt: skip
        return stats

    whole = losses(th.arange(n), mask)
    labelled = losses(mask.nonzero().squeeze(1), th.ones(int(mask.sum()), dtype=th.bool))
    for key in ("demo_margin_loss", "actor_imitation", "actor_label_acc"):
        assert float(whole[key]) == pytest.approx(float(labelled[key]), rel=1e-5, abs=1e-6), key
    assert float(whole["demo_margin_loss"]) > 0
    none = losses(th.arange(n), th.zeros(n, dtype=th.bool))
    assert float(none["demo_margin_loss"]) == 0.0 and float(none["actor_imitation"]) == 0.0

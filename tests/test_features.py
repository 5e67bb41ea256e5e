"""TempestLanesExtractor: rotation invariance on closed tubes, open-tube masking, shapes, YAML construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from tempest_gym.bridge.layout import default_layout
from tempest_gym.cli.zoo import parse_policy_kwargs
from tempest_gym.env.vec_env import hybrid_action_space
from tempest_gym.hybrid_dqn.features import GRID_CHANNELS, NLANES, TempestLanesExtractor
from tempest_gym.hybrid_dqn.policies import BinnedQPolicy, CategoricalParamActor, HybridQPolicy

th.set_num_threads(1)
LAYOUT = default_layout()
SPACE = spaces.Box(LAYOUT.low, LAYOUT.high, dtype=np.float32)


def random_raw(n: int, seed: int = 0, open_tube: bool = False) -> np.ndarray:
    """Random but consistent raw observations: relative lanes agree with absolute ones, lanes in range."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(LAYOUT.lo.astype(np.int64), LAYOUT.hi.astype(np.int64) + 1, size=(n, LAYOUT.size))
    s = LAYOUT.slices
    raw[:, s["well_open"]] = int(open_tube)
    top = 15 if open_tube else 16
    lane = rng.integers(0, top, n)
    raw[:, s["player_lane"].start] = lane
    raw[:, s["player_fine"].start] = lane * 16 + rng.integers(0, 16, n)
    e_lane = rng.integers(0, top, (n, 7))
    raw[:, s["enemy_lane"]] = e_lane
    rel = e_lane - lane[:, None]
    raw[:, s["enemy_rel_lane"]] = rel if open_tube else (rel + 8) % 16 - 8
    for group in ("eshot_rel_lane", "pshot_rel_lane"):
        raw[:, s[group]] = rng.integers(-8, 8, (n, s[group].stop - s[group].start))
    if open_tube:
        for group in ("spike", "threat", "pending"):
            raw[:, s[group].start + 15] = 0  # lane 15 does not exist on open tubes
    return raw


def to_obs(raw: np.ndarray) -> th.Tensor:
    return th.as_tensor((raw / LAYOUT.scale).astype(np.float32))


def rotate(raw: np.ndarray, k: int) -> np.ndarray:
    """The same closed-tube situation with every lane number shifted by k (player included)."""
    out = raw.copy()
    s = LAYOUT.slices
    out[:, s["player_lane"].start] = (raw[:, s["player_lane"].start] + k) % 16
    out[:, s["player_fine"].start] = (raw[:, s["player_fine"].start] + 16 * k) % 256
    out[:, s["enemy_lane"]] = (raw[:, s["enemy_lane"]] + k) % 16
    for group in ("spike", "threat", "pending"):
        out[:, s[group]] = np.roll(raw[:, s[group]], k, axis=1)
    return out


def test_shapes_and_player_lane_at_index_8():
    ex = TempestLanesExtractor(SPACE, conv_channels=(8, 8), features_dim=32)
    raw = random_raw(5)
    obs = to_obs(raw)
    assert ex(obs).shape == (5, 32)
    grid = ex.lane_grid(obs)
    assert grid.shape == (5, GRID_CHANNELS, NLANES)
    lane = raw[:, LAYOUT.slices["player_lane"].start]
    spike = raw[:, LAYOUT.slices["spike"]]
    np.testing.assert_allclose(grid[:, 1, 8].numpy(), spike[np.arange(5), lane] / 240.0, rtol=1e-6)
    np.testing.assert_allclose(grid[:, 1, 9].numpy(), spike[np.arange(5), (lane + 1) % 16] / 240.0, rtol=1e-6)
    assert TempestLanesExtractor(SPACE, conv_channels=(8,), features_dim=0).features_dim == 8 * 16 + int(
        ex.keep.numel()
    ) + 1
    with pytest.raises(ValueError, match="245-value"):
        TempestLanesExtractor(spaces.Box(-1, 1, (10,), np.float32))


def test_rotating_a_closed_tube_and_the_player_together_changes_nothing():
    th.manual_seed(0)
    ex = TempestLanesExtractor(SPACE, conv_channels=(16, 16), features_dim=64)
    raw = random_raw(64, seed=1)
    base = ex(to_obs(raw))
    for k in (1, 5, 15):
        np.testing.assert_allclose(ex(to_obs(rotate(raw, k))).detach().numpy(), base.detach().numpy(), atol=1e-5)
    # and it is not blind: moving only the enemies does change it
    moved = raw.copy()
    moved[:, LAYOUT.slices["enemy_rel_lane"]] = (moved[:, LAYOUT.slices["enemy_rel_lane"]] + 9) % 16 - 8
    assert not th.allclose(ex(to_obs(moved)), base)


def test_open_tube_lanes_beyond_the_ends_are_masked():
    ex = TempestLanesExtractor(SPACE)
    raw = random_raw(32, seed=2, open_tube=True)
    grid = ex.lane_grid(to_obs(raw)).numpy()
    lane = raw[:, LAYOUT.slices["player_lane"].start]
    absolute = lane[:, None] + np.arange(16)[None, :] - 8
    exists = (absolute >= 0) & (absolute <= 14)
    np.testing.assert_array_equal(grid[:, 0, :], exists.astype(np.float32))
    assert (grid[:, 1:4, :][~np.broadcast_to(exists[:, None, :], grid[:, 1:4, :].shape)] == 0).all()
    # an enemy in the lane next to the player shows up one column right of the player's
    e = raw[:, LAYOUT.slices["enemy_rel_lane"]]
    present = raw[:, LAYOUT.slices["enemy_present"]] == 1
    rows, slots = np.nonzero(present & (e == 1))
    assert len(rows) > 0
    occupied = grid[:, 4:9, 9].max(axis=1)  # any enemy type at relative lane +1
    assert (occupied[rows] > 0).all()


@pytest.mark.parametrize("head", ["hybrid", "binned"])
def test_both_heads_build_with_it_from_yaml_policy_kwargs(head):
    text = (
        "dict(net_arch=[32], features_extractor_class=TempestLanesExtractor, "
        "features_extractor_kwargs=dict(conv_channels=[8], features_dim=16)"
        + (", param_classes=63, actor_arch=[32])" if head == "hybrid" else ", spinner_bins=9)")
    )
    kwargs = parse_policy_kwargs(text)
    policy = (HybridQPolicy if head == "hybrid" else BinnedQPolicy)(SPACE, hybrid_action_space(), lambda _: 1e-3,
                                                                    **kwargs)  # fmt: skip
    assert isinstance(policy.q_net.features_extractor, TempestLanesExtractor)
    if head == "hybrid":
        assert isinstance(policy.actor.head, CategoricalParamActor)
    actions, _ = policy.predict(to_obs(random_raw(4)).numpy(), deterministic=True)
    assert actions.shape == (4, 2)
    if head == "hybrid":  # the categorical parameter is one of the 63 executable spinner deltas
        np.testing.assert_allclose(actions[:, 1] * 31, np.rint(actions[:, 1] * 31), atol=1e-4)


def reference_grid(ex: TempestLanesExtractor, obs: th.Tensor) -> th.Tensor:
    """The grid built channel by channel, one scatter per channel: what ``lane_grid`` computes in one product."""
    raw = th.round(obs.float() * ex.scale)
    s = LAYOUT.slices

    def g(name):
        return raw[:, s[name]] if s[name].stop - s[name].start > 1 else raw[:, s[name].start]

    lanes = th.arange(NLANES)
    absolute = g("player_lane").long()[:, None] + (lanes - 8)[None, :]
    valid = th.where((g("well_open") > 0.5)[:, None], (absolute >= 0) & (absolute <= 14), th.ones_like(absolute) > 0)
    validf, idx = valid.float(), absolute % NLANES
    channels = [validf] + [th.gather(g(n), 1, idx) * validf / hi for n, hi in (("spike", 240.0), ("threat", 240.0),
                                                                            ("pending", 8.0))]  # fmt: skip

    def scatter(rel, present, values):
        hit = ((rel.long() + 8)[..., None] == lanes) & present[..., None]
        return (hit.float() * values[..., None]).amax(dim=1)

    present, rel = g("enemy_present") > 0.5, g("enemy_rel_lane")
    proximity = ((256.0 - g("enemy_depth")) / 240.0).clamp(0.0, 1.1)
    channels += [scatter(rel, present & (g(n) > 0.5), proximity) for n in
                 ("enemy_flipper", "enemy_pulsar", "enemy_tanker", "enemy_spiker", "enemy_fuseball")]  # fmt: skip
    channels += [scatter(rel, present, g(n)) for n in
                 ("enemy_toward", "enemy_flipping", "enemy_at_rim", "enemy_shootable")]  # fmt: skip
    channels.append(scatter(rel, present & (g("enemy_flipping") > 0.5), g("enemy_lane_up")))
    channels.append(scatter(rel, present, g("enemy_cargo") / 3.0))
    es = ((256.0 - g("eshot_depth")) / 240.0).clamp(0.0, 1.1)
    channels.append(scatter(g("eshot_rel_lane"), g("eshot_present") > 0.5, es))
    channels.append(scatter(g("pshot_rel_lane"), g("pshot_present") > 0.5, g("pshot_depth") / 255.0))
    return th.stack(channels, dim=1)


@pytest.mark.parametrize("open_tube", [False, True])
def test_the_grid_in_one_product_equals_one_scatter_per_channel(open_tube):
    ex = TempestLanesExtractor(SPACE, conv_channels=(8,), features_dim=0)
    obs = to_obs(random_raw(512, seed=3, open_tube=open_tube))
    assert th.equal(ex.lane_grid(obs), reference_grid(ex, obs))


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_the_lane_convolution_is_a_circular_conv1d(kernel):
    from tempest_gym.hybrid_dqn.features import LaneConv

    th.manual_seed(0)
    conv = LaneConv(GRID_CHANNELS, 24, kernel)
    x = th.randn(64, GRID_CHANNELS, NLANES)
    p = kernel // 2
    expected = th.nn.functional.conv1d(th.nn.functional.pad(x, (p, p), mode="circular"), conv.weight, conv.bias)
    assert th.allclose(conv(x), expected, atol=1e-5)
    assert set(conv.state_dict()) == {"weight", "bias"}  # the parameters of the nn.Conv1d it replaces

"""Unit tests of the rule-based expert on hand-built observations (no MAME needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tempest_gym.bridge.layout import default_layout
from tempest_gym.policies.expert import TempestExpert, flipper_speed

L = default_layout()
TYPES = ("enemy_flipper", "enemy_pulsar", "enemy_tanker", "enemy_spiker", "enemy_fuseball")


def put(raw: np.ndarray, group: str, value, index: int = 0) -> None:
    s = L[group]
    assert s.start + index < s.stop, f"{group}[{index}] out of range"
    raw[s.start + index] = value


def base(lane: int = 8, open_: bool = False, level: int = 1, **extra) -> np.ndarray:
    """Raw integers of a plain in-game, in-control tick with an empty tube."""
    raw = np.zeros(L.size, dtype=np.int64)
    for g, v in {
        "in_game": 1,
        "agent_control": 1,
        "gs_play": 1,
        "player_alive": 1,
        "level": level,
        "lives": 3,
        "zaps_left": 2,
        "pulse_phase": -40,
        "pulsar_kill_depth": 0xA0,
        "pending_total": 5,
        "player_lane": lane,
        "player_fine": lane * 16 + 8,
        "player_depth": 0x10,
        "well_open": int(open_),
    }.items():
        put(raw, g, v)
    put(raw, "well_shape", 1, 8 if open_ else 0)
    for g, v in extra.items():
        put(raw, g, v)
    return raw


def rel_lane(raw: np.ndarray, lane: int) -> int:
    p = raw[L["player_lane"].start]
    if raw[L["well_open"].start]:
        return lane - p
    return (lane - p + 8) % 16 - 8


def enemy(
    raw: np.ndarray,
    slot: int,
    kind: str,
    lane: int,
    depth: int,
    toward: bool = True,
    flipping: bool = False,
    up: bool = False,
    flip_step: int = 0,
    cargo: int = 0,
) -> None:
    pdepth = raw[L["player_depth"].start]
    put(raw, "enemy_present", 1, slot)
    put(raw, f"enemy_{kind}", 1, slot)
    put(raw, "enemy_lane", lane, slot)
    put(raw, "enemy_rel_lane", rel_lane(raw, lane), slot)
    put(raw, "enemy_depth", depth, slot)
    put(raw, "enemy_toward", int(toward), slot)
    put(raw, "enemy_flipping", int(flipping), slot)
    put(raw, "enemy_flip_step", flip_step if flipping else 0, slot)
    put(raw, "enemy_lane_up", int(up), slot)
    put(raw, "enemy_at_rim", int(depth == pdepth), slot)
    put(raw, "enemy_cargo", cargo, slot)
    if kind == "fuseball":
        shootable = flipping and depth != 0x10
    else:
        shootable = flipping or depth != 0x10
    put(raw, "enemy_shootable", int(shootable), slot)
    lane_threat = raw[L["threat"].start + lane]
    put(raw, "threat", max(lane_threat, min(256 - depth, 240)), lane)


def eshot(raw: np.ndarray, slot: int, lane: int, depth: int) -> None:
    put(raw, "eshot_present", 1, slot)
    put(raw, "eshot_rel_lane", rel_lane(raw, lane), slot)
    put(raw, "eshot_depth", depth, slot)


def obs_of(*raws: np.ndarray) -> np.ndarray:
    r = np.stack(raws).astype(np.float64)
    r = np.clip(r, L.lo, L.hi)
    return (r / L.scale).astype(np.float32)


def act(raw: np.ndarray, expert: TempestExpert | None = None) -> np.ndarray:
    expert = expert or TempestExpert()
    return expert.predict_batch(obs_of(raw))[0]


def landing_lane(raw: np.ndarray, action: np.ndarray, max_spin: int = 31) -> int:
    """Where the game puts the player: fine -= round(spinner * max_spin), wrapped or clamped."""
    fine = raw[L["player_fine"].start] - int(np.rint(action[1] * max_spin))
    fine = min(max(fine, 0), 0xEF) if raw[L["well_open"].start] else fine % 256
    return fine >> 4


def fires(action: np.ndarray) -> bool:
    return int(np.rint(action[0])) & 1 == 1


def zaps(action: np.ndarray) -> bool:
    return int(np.rint(action[0])) & 2 == 2


# ---------------------------------------------------------------------------------------- tests


def test_layout_round_trip_of_the_helpers():
    raw = base(lane=3)
    enemy(raw, 0, "flipper", 5, 100)
    assert np.array_equal(L.raw(obs_of(raw))[0], raw)


def test_neutral_action_without_control():
    raw = base(agent_control=0)
    enemy(raw, 0, "flipper", 5, 100)
    eshot(raw, 0, 8, 20)
    assert act(raw).tolist() == [0.0, 0.0]


def test_positive_spinner_lowers_the_lane():
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 5, 100)  # target three lanes lower: full speed, positive spinner
    a = act(raw)
    assert a[1] == pytest.approx(1.0)
    assert landing_lane(raw, a) < 8
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 11, 100)
    a = act(raw)
    assert a[1] == pytest.approx(-1.0)
    assert landing_lane(raw, a) > 8


def test_dead_beat_to_the_lane_centre():
    raw = base(lane=8)
    put(raw, "player_fine", 8 * 16 + 3)  # off centre in lane 8
    enemy(raw, 0, "flipper", 9, 100)  # target lane 9: centre 152
    a = act(raw)
    assert np.rint(a[1] * 31) == (8 * 16 + 3) - (9 * 16 + 8)  # exactly the distance, one tick
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 8, 100)  # already there: hold still
    assert act(raw)[1] == 0.0


def test_max_spin_scales_the_spinner():
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 9, 100)
    a = act(raw, TempestExpert(max_spin=10))
    assert a[1] == pytest.approx(-1.0)  # 16 units away, 10 per tick at most
    raw = base(lane=8)
    put(raw, "player_fine", 8 * 16 + 12)
    enemy(raw, 0, "flipper", 8, 100)
    a = act(raw, TempestExpert(max_spin=10))
    assert np.rint(a[1] * 10) == 4


def test_wraps_on_closed_tubes_only():
    raw = base(lane=1)
    enemy(raw, 0, "flipper", 14, 100)  # closed: 1 -> 0 -> 15 -> 14 is the short way (lane falls)
    a = act(raw)
    assert a[1] > 0
    assert landing_lane(raw, a) in (15, 0)
    raw = base(lane=1, open_=True)
    enemy(raw, 0, "flipper", 14, 100)  # open: no wrap, the lane must rise
    a = act(raw)
    assert a[1] < 0
    assert landing_lane(raw, a) > 1


def test_open_tube_lane_15_does_not_exist():
    raw = base(lane=14, open_=True)
    ex = TempestExpert()
    e = ex.explain(obs_of(raw))
    assert e["danger"][0, 15] < 0
    assert not e["reach"][0, 15]


def test_avoids_the_lane_of_a_pulsing_pulsar():
    raw = base(lane=8, level=17, pulse_lethal=1, pulse_phase=4, pulse_rising=1)
    enemy(raw, 0, "pulsar", 8, 0x60)  # above the lethal depth 0xA0 in the player's lane
    a = act(raw)
    assert landing_lane(raw, a) != 8
    # the same pulsar deeper than the lethal depth and climbing slowly is not a threat yet
    raw = base(lane=8, level=17, pulse_lethal=0, pulse_phase=-60, pulse_rising=0)
    enemy(raw, 0, "pulsar", 8, 0xE0)
    assert landing_lane(raw, act(raw)) == 8


def test_does_not_hunt_into_a_pulsar_lane():
    raw = base(lane=8, level=17, pulse_lethal=1, pulse_phase=8, pulse_rising=1)
    enemy(raw, 0, "pulsar", 10, 0x40)  # shootable, close, but lethal while pulsing
    enemy(raw, 1, "flipper", 5, 0xC0)
    e = TempestExpert().explain(obs_of(raw))
    assert e["target"][0] != 10
    assert landing_lane(raw, e["action"][0]) != 10


def test_dodges_an_enemy_shot_about_to_reach_the_rim():
    raw = base(lane=8)
    eshot(raw, 0, 8, 0x14)
    a = act(raw)
    assert landing_lane(raw, a) != 8
    # a far shot is no reason to leave (and it is shot at)
    raw = base(lane=8)
    eshot(raw, 0, 8, 0xA0)
    a = act(raw)
    assert landing_lane(raw, a) == 8
    assert fires(a)


def test_never_lands_on_a_rim_chaser_or_where_it_flips():
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 6, 0x10, up=True)  # chaser in lane 6 heading up toward lane 7
    enemy(raw, 1, "flipper", 5, 0x80)  # target behind it
    for _ in range(3):
        a = act(raw)
        assert landing_lane(raw, a) not in (6, 7)
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 8, 0x10, flipping=True, up=False, flip_step=5)  # flipping from 8 into 7
    a = act(raw)
    assert landing_lane(raw, a) != 7


def test_fires_only_with_something_to_hit():
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 8, 0x90)
    assert fires(act(raw))
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 8, 0x10)  # sitting on the rim: cannot be shot, and we leave
    a = act(raw)
    assert landing_lane(raw, a) != 8
    raw = base(lane=8)
    assert not fires(act(raw))  # empty tube
    put(raw, "spike", 100, 8)
    assert fires(act(raw))  # a spike in the lane: cut it down


def test_fuseball_is_avoided_on_its_line_and_below():
    raw = base(lane=8, level=11)
    enemy(raw, 0, "fuseball", 8, 0x10)  # at the rim on line 8: lethal in lane 8 and, moving down, lane 7
    e = TempestExpert().explain(obs_of(raw))
    assert e["danger"][0, 8] <= 1 and e["danger"][0, 7] <= 1
    assert landing_lane(raw, e["action"][0]) not in (7, 8)


def test_zaps_when_trapped_and_releases_the_button():
    raw = base(lane=8)
    # rim chasers in lanes 6 and 10, two more flipping from lane 8 into lanes 7 and 9 (pivot
    # lines 8 and 9), and a flipper arriving in lane 8: no lane within reach survives the tick
    enemy(raw, 0, "flipper", 8, 0x10, flipping=True, up=False)
    enemy(raw, 1, "flipper", 9, 0x10, flipping=True, up=True)
    enemy(raw, 2, "flipper", 6, 0x10)
    enemy(raw, 3, "flipper", 10, 0x10)
    enemy(raw, 4, "flipper", 8, 0x11)
    assert zaps(act(raw))
    one_left = raw.copy()
    put(one_left, "zaps_left", 1)  # the second, one-kill zap is kept for exactly this
    assert zaps(act(one_left))
    raw2 = raw.copy()
    put(raw2, "zap_active", 1)  # the zap runs: release the button so the next one is a new press
    assert not zaps(act(raw2))
    raw3 = raw.copy()
    put(raw3, "zaps_left", 0)
    assert not zaps(act(raw3))
    calm = base(lane=8)
    enemy(calm, 0, "flipper", 3, 0x90)
    assert not zaps(act(calm))


def test_dive_goes_to_a_lane_without_spike_and_shoots_the_spike():
    raw = base(lane=8, gs_play=0, gs_dive=1, player_diving=1, player_depth=0x20)
    for ln in range(16):
        put(raw, "spike", 0 if ln in (5, 13) else 60, ln)
    a = act(raw)
    assert a[1] > 0  # lane 5 is the nearest clear lane, below
    assert fires(a)  # and the spike in the current lane is shot at
    put(raw, "player_lane", 5)
    put(raw, "player_fine", 5 * 16 + 8)
    a = act(raw)
    assert landing_lane(raw, a) == 5
    assert not zaps(a)  # no zapping in the dive


def test_hunts_the_closest_enemy_and_prefers_near_lanes():
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 4, 0x30)
    enemy(raw, 1, "flipper", 9, 0xE0)
    assert TempestExpert().explain(obs_of(raw))["target"][0] == 4  # far lane but about to arrive
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 2, 0x90)
    enemy(raw, 1, "flipper", 9, 0x98)
    assert TempestExpert().explain(obs_of(raw))["target"][0] == 9  # as urgent, much closer


def test_batch_rows_are_independent():
    a = base(lane=8)
    enemy(a, 0, "flipper", 5, 100)
    b = base(lane=2, open_=True)
    enemy(b, 0, "flipper", 9, 60)
    c = base(agent_control=0)
    d = base(lane=8)
    eshot(d, 0, 8, 0x14)
    batch = TempestExpert().predict_batch(obs_of(a, b, c, d))
    assert batch.shape == (4, 2) and batch.dtype == np.float32
    for i, r in enumerate((a, b, c, d)):
        assert np.array_equal(batch[i], act(r))
    assert batch[0, 1] > 0 and batch[1, 1] < 0 and batch[2].tolist() == [0, 0]


def random_obs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(L.lo.astype(int), L.hi.astype(int) + 1, size=(n, L.size))
    raw[:, L["agent_control"]] = 1
    return (raw / L.scale).astype(np.float32)


def test_deterministic_for_a_seed_and_within_bounds():
    obs = random_obs(64, 1)
    x1, x2 = TempestExpert(seed=3), TempestExpert(seed=3)
    a1 = np.concatenate([x1.predict_batch(obs) for _ in range(3)])
    a2 = np.concatenate([x2.predict_batch(obs) for _ in range(3)])
    assert np.array_equal(a1, a2)
    x1.seed(3)
    assert np.array_equal(x1.predict_batch(obs), a1[:64])
    assert np.all((a1[:, 0] >= 0) & (a1[:, 0] <= 3) & (a1[:, 1] >= -1) & (a1[:, 1] <= 1))
    assert np.all(a1[:, 0] == np.rint(a1[:, 0]))


def test_a_batch_computed_in_parts_with_its_tie_break_is_the_whole_batch():
    """What labels after the reply rely on: drawing the tie-break first and computing the rows in any parts gives
    the whole batch's actions, and leaves the generator where predicting the batch leaves it."""
    obs = random_obs(40, 2)
    whole = TempestExpert(seed=5)
    expected = [whole.predict_batch(obs) for _ in range(2)]
    parts = TempestExpert(seed=5)
    for want in expected:
        noise = parts.draw_tie_break(len(obs))
        got = np.zeros_like(want)
        for rows in (np.array([3, 17, 39]), np.arange(0, 40, 2), np.arange(1, 40, 2)):
            got[rows] = parts.predict_batch(obs[rows], noise[rows])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="tie_break"):
        parts.predict_batch(obs[:2], noise[:3])


def test_predict_sb3_style():
    raw = base(lane=8)
    enemy(raw, 0, "flipper", 5, 100)
    ex = TempestExpert()
    a, state = ex.predict(obs_of(raw)[0])
    assert state is None and a.shape == (2,)
    b, _ = ex.predict(obs_of(raw, raw))
    assert b.shape == (2, 2)
    assert np.array_equal(b[0], a)


def test_rejects_bad_shapes_and_max_spin():
    with pytest.raises(ValueError):
        TempestExpert().predict_batch(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        TempestExpert(max_spin=0)


def test_flipper_speed_table():
    assert flipper_speed(np.array([1]))[0] == pytest.approx(44 / 32)
    assert flipper_speed(np.array([8]))[0] == pytest.approx(79 / 32)
    assert flipper_speed(np.array([17]))[0] == pytest.approx(81 / 32)
    assert flipper_speed(np.array([16]))[0] == pytest.approx(96 / 32)  # the table drops at 17
    v = flipper_speed(np.arange(0, 120))
    assert np.all((v > 1.3) & (v < 6.0))

"""CompactReplayBuffer: n-step returns, chains across envs, uncontrolled ticks, codecs, boundary ring, pickling,
expert labels."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from tempest_gym.bridge.layout import default_layout
from tempest_gym.hybrid_dqn.buffer import DONE, LOST, CompactReplayBuffer
from tempest_gym.hybrid_dqn.codecs import Float16Codec, LayoutCodec, make_codec

th.set_num_threads(1)

ACTION_SPACE = spaces.Box(np.array([0.0, -1.0], np.float32), np.array([3.0, 1.0], np.float32), dtype=np.float32)
OBS_SPACE = spaces.Box(-1e6, 1e6, (3,), np.float32)


def make_buffer(n_envs: int, n_steps: int = 3, gamma: float = 0.5, size: int = 100, **kw) -> CompactReplayBuffer:
    return CompactReplayBuffer(
        size,
        OBS_SPACE,
        ACTION_SPACE,
        device="cpu",
        n_envs=n_envs,
        n_steps=n_steps,
        gamma=gamma,
        obs_codec="float32",
        **kw,
    )


def o(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def step(buf, obs, nxt, rewards, term=(0, 0), trunc=(0, 0), store=(1, 1), actions=None):
    n = buf.n_envs
    actions = np.zeros((n, 2), np.float32) if actions is None else np.asarray(actions, np.float32)
    buf.add_step(
        obs,
        nxt,
        actions,
        np.array(rewards, np.float32),
        np.array(term, bool),
        np.array(trunc, bool),
        np.array(store, bool),
    )


def test_nstep_hand_computed_two_envs_terminal_truncation_uncontrolled_tick():
    """gamma = 0.5, n = 3. Slots in write order (storing envs ascending each step):

    step 0: env0 t0 r=1 (slot 0)          env1 t0 r=1 (slot 1)
    step 1: env0 t1 r=2 (slot 2)          env1 not in control, r=8 (joined to slot 1: its successor is slot 4)
    step 2: env0 t2 r=4 TERMINAL (slot 3) env1 t2 r=2 (slot 4)
    step 3: env0 t3 r=8 (slot 5, open)    env1 t3 r=4 TRUNCATED (slot 6)
    """
    buf = make_buffer(2)
    # observations: (env, time, 0); terminal observations (env, time, 9); reset observations (env, time, 5)
    step(buf, o((0, 0, 0), (1, 0, 0)), o((0, 1, 0), (1, 1, 0)), [1, 1])
    step(buf, o((0, 1, 0), (1, 1, 0)), o((0, 2, 0), (1, 2, 0)), [2, 8], store=(1, 0))
    step(buf, o((0, 2, 0), (1, 2, 0)), o((0, 3, 9), (1, 3, 0)), [4, 2], term=(1, 0))
    step(buf, o((0, 3, 5), (1, 3, 0)), o((0, 4, 0), (1, 4, 9)), [8, 4], trunc=(0, 1))
    assert buf.size() == 7
    w = buf.nstep_targets(np.arange(7))
    expected = {
        # slot: (return, steps, done, bootstrap observation)
        0: (1 + 0.5 * 2 + 0.25 * 4, 3, True, (0, 3, 9)),
        # the uncontrolled tick's reward and discount join slot 1, which leads to slot 4 (never to (1, 1, 0))
        1: (1 + 0.5 * 8 + 0.25 * 2 + 0.125 * 4, 3, False, (1, 4, 9)),
        2: (2 + 0.5 * 4, 2, True, (0, 3, 9)),
        3: (4, 1, True, (0, 3, 9)),
        4: (2 + 0.5 * 4, 2, False, (1, 4, 9)),  # truncation: bootstrap from the terminal observation
        5: (8, 1, False, (0, 4, 0)),  # open: newest of env0, next obs pending
        6: (4, 1, False, (1, 4, 9)),
    }
    for slot, (ret, steps, done, boot) in expected.items():
        assert w["returns"][slot] == pytest.approx(ret), slot
        assert w["steps"][slot] == steps, slot
        assert w["done"][slot] == done, slot
        np.testing.assert_array_equal(w["boot_codes"][slot], np.array(boot, np.float32), err_msg=str(slot))
    s = buf._get_samples(np.array([0, 1, 4]))
    np.testing.assert_allclose(s.discounts[:, 0].numpy(), [0.125, 0.5**4, 0.25])
    np.testing.assert_array_equal(s.steps.numpy(), [3, 3, 2])
    np.testing.assert_array_equal(s.dones[:, 0].numpy(), [1, 0, 0])
    np.testing.assert_array_equal(s.observations.numpy(), o((0, 0, 0), (1, 0, 0), (1, 2, 0)))


def test_nstep_window_capped_at_n_and_linked_next_observation():
    buf = make_buffer(1, n_steps=3, gamma=0.9)
    for t in range(6):
        step(buf, o((0, t, 0)), o((0, t + 1, 0)), [t + 1], term=(0,), trunc=(0,), store=(1,))
    w = buf.nstep_targets(np.arange(6))
    assert w["returns"][0] == pytest.approx(1 + 0.9 * 2 + 0.81 * 3)
    assert list(w["steps"]) == [3, 3, 3, 3, 2, 1]  # the newest windows end at the open transition
    np.testing.assert_array_equal(w["boot_codes"][0], [0, 3, 0])  # obs of slot 3, read from the chain
    np.testing.assert_array_equal(w["boot_codes"][5], [0, 6, 0])  # pending


def reference_nstep(episodes_by_env, n, gamma):
    """Plain-Python n-step targets from per-env lists of (slot, rewards, next_obs, break_after, done): ``rewards``
    of the transition's own tick and of the uncontrolled ticks that followed it."""
    out = {}
    for seq in episodes_by_env:
        for j, (slot, *_rest) in enumerate(seq):
            ret, disc, k = 0.0, 1.0, 0
            while True:
                _, rewards, nxt, brk, done = seq[j + k]
                for r in rewards:
                    ret += disc * r
                    disc *= gamma
                k += 1
                if brk or k == n:
                    out[slot] = (ret, k, done, nxt, disc)
                    break
    return out


@settings(max_examples=40, deadline=None)
@given(
    n_envs=st.integers(1, 3),
    n=st.integers(1, 4),
    plan=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
)
def test_nstep_matches_reference(n_envs, n, plan):
    """Random interleavings of terminations, truncations and uncontrolled steps, several envs, against a
    reference that walks tick by tick."""
    gamma = 0.7
    rng = np.random.default_rng(len(plan))
    buf = make_buffer(n_envs, n_steps=n, gamma=gamma, size=1000)
    cur = [np.array([e, 0, 0], np.float32) for e in range(n_envs)]
    seqs: list[list] = [[] for _ in range(n_envs)]
    slot, counter = 0, 1
    for kinds in plan:
        obs, nxt, rew, term, trunc, store = [], [], [], [], [], []
        for e in range(n_envs):
            kind = kinds[e % 3]  # 0: terminate, 1: truncate, 2: not stored, else continue
            counter += 1
            r = float(rng.integers(-5, 6))
            t, tr, s = kind == 0, kind == 1, kind != 2
            nx = np.array([e, counter, 9 if (t or tr) else 0], np.float32)
            obs.append(cur[e])
            nxt.append(nx)
            rew.append(r)
            term.append(t)
            trunc.append(tr)
            store.append(s)
            if not s and seqs[e] and not seqs[e][-1][3]:
                last = seqs[e][-1]  # an uncontrolled tick continues the previous stored transition
                last[1].append(r)
                last[2] = nx
                last[3] = t or tr
                last[4] = t
            if s:
                seqs[e].append([slot, [r], nx, t or tr, t])
                slot += 1
            cur[e] = np.array([e, counter, 5], np.float32) if (t or tr) else nx
        step(buf, np.stack(obs), np.stack(nxt), rew, term, trunc, store)
    for seq in seqs:
        if seq:
            seq[-1][3] = True  # newest: open
    ref = reference_nstep(seqs, n, gamma)
    assert buf.size() == len(ref)
    if not ref:
        return
    slots = np.array(sorted(ref))
    w = buf.nstep_targets(slots)
    for i, s in enumerate(slots):
        ret, k, done, nxt, disc = ref[s]
        assert w["returns"][i] == pytest.approx(ret, abs=1e-5)  # joined rewards are stored as float32
        assert w["steps"][i] == k
        assert w["done"][i] == done
        if not done:
            assert w["discount"][i] == pytest.approx(disc)
        np.testing.assert_array_equal(w["boot_codes"][i], nxt)


def tempest_raw_obs(rng: np.random.Generator, n: int) -> np.ndarray:
    layout = default_layout()
    raw = rng.integers(layout.lo.astype(np.int64), layout.hi.astype(np.int64) + 1, size=(n, layout.size))
    return (raw / layout.scale.astype(np.float64)).astype(np.float32)


def test_layout_codec_round_trip_is_exact_for_every_code():
    layout = default_layout()
    codec = LayoutCodec.from_layout(layout)
    # every possible raw value of every feature (features with fewer values repeat their last one)
    raw = np.minimum(layout.lo[None, :] + np.arange(256)[:, None], layout.hi[None, :]).astype(np.float64)
    obs = (raw / layout.scale.astype(np.float64)).astype(np.float32)
    codes = codec.encode(obs)
    assert codes.dtype == np.uint8
    assert codec.arithmetic_exact  # the fast decoding path applies to Tempest's layout
    np.testing.assert_array_equal(codec.decode(codes), obs)  # bit-exact
    codec.arithmetic_exact = False  # the table path (used when float32 arithmetic would not be exact)
    np.testing.assert_array_equal(codec.decode(codes), obs)
    np.testing.assert_array_equal(codes.astype(np.float64), raw - layout.lo)


def test_layout_codec_refuses_non_layout_values():
    codec = LayoutCodec.from_layout(default_layout())
    obs = tempest_raw_obs(np.random.default_rng(0), 1)
    obs[0, 0] = 0.5  # in_game is 0 or 1
    with pytest.raises(ValueError, match="not an exact raw/scale value"):
        codec.encode(obs)
    obs[0, 0] = 7.0
    with pytest.raises(ValueError, match="outside its layout range"):
        codec.encode(obs)


def test_tempest_buffer_round_trips_observations_exactly():
    layout = default_layout()
    obs_space = spaces.Box(layout.low, layout.high, dtype=np.float32)
    buf = CompactReplayBuffer(500, obs_space, ACTION_SPACE, device="cpu", n_envs=4, layout=layout)
    assert isinstance(buf.codec, LayoutCodec)
    assert buf.bytes_per_transition < 400
    rng = np.random.default_rng(1)
    cur = tempest_raw_obs(rng, 4)
    seen = []
    for _ in range(50):
        nxt = tempest_raw_obs(rng, 4)
        done = rng.random(4) < 0.1
        buf.add_step(cur, nxt, np.zeros((4, 2)), np.ones(4), done, np.zeros(4, bool))
        seen.append(cur)
        cur = np.where(done[:, None], tempest_raw_obs(rng, 4), nxt)
    np.testing.assert_array_equal(buf.stored_observations(), np.concatenate(seen))
    s = buf._get_samples(np.arange(buf.size()))
    np.testing.assert_array_equal(s.observations.numpy(), np.concatenate(seen))
    assert s.observations.dtype == th.float32


def test_auto_codec_choice_and_float16_error_bound():
    layout = default_layout()
    tempest_space = spaces.Box(layout.low, layout.high, dtype=np.float32)
    assert isinstance(make_codec(tempest_space, "auto", layout), LayoutCodec)
    generic = spaces.Box(-10.0, 10.0, (5,), np.float32)
    codec = make_codec(generic, "auto", layout)  # layout does not match this space: float16
    assert isinstance(codec, Float16Codec)
    x = np.random.default_rng(0).uniform(-10, 10, (1000, 5)).astype(np.float32)
    err = np.abs(codec.decode(codec.encode(x)) - x)
    assert (err <= np.maximum(np.abs(x) * 2.0**-11, 2.0**-25)).all()
    assert make_codec(spaces.Box(0, 255, (4,), np.uint8)).dtype == np.uint8


def test_executed_action_and_source_are_stored():
    buf = make_buffer(2)
    step(buf, o((0, 0, 0), (1, 0, 0)), o((0, 1, 0), (1, 1, 0)), [0, 0], actions=[[2, 0.25], [3, -1 / 31]])
    buf.add_step(
        o((0, 1, 0), (1, 1, 0)),
        o((0, 2, 0), (1, 2, 0)),
        np.array([[1, 0.5], [0, 1]], np.float32),
        np.zeros(2),
        np.zeros(2, bool),
        np.zeros(2, bool),
        sources=np.array([2, 1]),
    )
    np.testing.assert_array_equal(
        buf.stored_actions(), np.array([[2, 0.25], [3, -1 / 31], [1, 0.5], [0, 1]], np.float32)
    )
    np.testing.assert_array_equal(buf.stored_sources(), [0, 0, 2, 1])


def test_ring_wraps_and_keeps_chains_valid():
    buf = make_buffer(2, n_steps=3, gamma=0.5, size=10)
    for t in range(23):
        step(buf, o((0, t, 0), (1, t, 0)), o((0, t + 1, 0), (1, t + 1, 0)), [1, 1])
    assert buf.full and buf.size() == 10
    w = buf.nstep_targets(np.arange(10))
    # every window walks its own env's chain: bootstrap obs are the same env, 1..3 steps later
    obs = buf.obs
    for slot in range(10):
        assert w["boot_codes"][slot][0] == obs[slot][0]
        assert w["boot_codes"][slot][1] - obs[slot][1] == w["steps"][slot]
    s = buf.sample(64)
    assert s.observations.shape == (64, 3)


def test_small_boundary_ring_skips_lost_bootstraps():
    buf = make_buffer(1, n_steps=2, size=50, boundary_size=4)
    with pytest.warns(UserWarning, match="boundary_size"):
        for t in range(20):  # every transition truncated: 20 boundary entries through a ring of 4
            step(buf, o((0, t, 0)), o((0, t, 9)), [1], term=(0,), trunc=(1,), store=(1,))
    assert buf.lost_count == 16
    assert ((buf.flags[:16] & LOST) != 0).all()
    s = buf.sample(200)
    # only the 4 transitions that still have their bootstrap observation are drawn
    assert set(s.observations[:, 1].tolist()) <= {16.0, 17.0, 18.0, 19.0}
    np.testing.assert_array_equal(s.next_observations[:, 1], s.observations[:, 1])
    # terminal transitions do not need theirs: never skipped
    buf2 = make_buffer(1, n_steps=2, size=50, boundary_size=4)
    for t in range(20):
        step(buf2, o((0, t, 0)), o((0, t, 9)), [1], term=(1,), trunc=(0,), store=(1,))
    assert buf2.lost_count == 0 and (buf2.flags[:20] & DONE).all()
    assert len(set(buf2.sample(400).observations[:, 1].tolist())) > 4


def test_pickle_round_trip_trims_unfilled_capacity():
    buf = make_buffer(2, size=100_000)
    for t in range(30):
        step(buf, o((0, t, 0), (1, t, 0)), o((0, t + 1, 0), (1, t + 1, 0)), [t, -t], trunc=(t % 7 == 6, 0))
    blob = pickle.dumps(buf, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(blob) < 100_000  # 60 transitions, not the 100k-slot arrays
    loaded = pickle.loads(blob)
    np.testing.assert_array_equal(loaded.stored_observations(), buf.stored_observations())
    a, b = loaded.nstep_targets(np.arange(60)), buf.nstep_targets(np.arange(60))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # it keeps growing after loading, chains intact
    step(loaded, o((0, 30, 0), (1, 30, 0)), o((0, 31, 0), (1, 31, 0)), [1, 1])
    assert loaded.size() == 62 and len(loaded.obs) == 100_000
    assert loaded.nstep_targets(np.array([58]))["steps"][0] == 2  # slot 58 (env0, t=29) links to slot 60


def test_sb3_style_add_uses_infos():
    buf = make_buffer(2)
    infos = [
        {"agent_in_control": True, "executed_action": np.array([1, 0.5], np.float32)},
        {"agent_in_control": False, "executed_action": np.zeros(2, np.float32)},
    ]
    buf.add(
        o((0, 0, 0), (1, 0, 0)), o((0, 1, 0), (1, 1, 0)), np.array([[3, 1], [3, 1]]), np.ones(2), np.zeros(2), infos
    )
    assert buf.size() == 1
    np.testing.assert_array_equal(buf.stored_actions(), [[1, 0.5]])


def test_bytes_per_transition_figure():
    layout = default_layout()
    buf = CompactReplayBuffer(
        160_000, spaces.Box(layout.low, layout.high, dtype=np.float32), ACTION_SPACE, device="cpu", layout=layout
    )
    # 245 uint8 codes + 21 B of fields + a 16th of a boundary entry (245 + 4 B); pending is negligible
    assert buf.bytes_per_transition == pytest.approx(245 + 21 + 249 / 16, abs=0.01)  # 281.56 B


# ---------------------------------------------------------------------------------------------- expert labels
def test_expert_labels_round_trip_through_add_and_sample():
    """Every stored transition keeps the expert's label for its observation, whoever acted; rows without one
    sample as choice -1, parameter 0."""
    buf = make_buffer(3, n_steps=2)
    labels = np.array([[2, 0.25], [3, -1 / 31], [1, 0.5]], np.float32)
    for t in range(4):
        buf.add_step(
            o((0, t, 0), (1, t, 0), (2, t, 0)),
            o((0, t + 1, 0), (1, t + 1, 0), (2, t + 1, 0)),
            np.array([[0, 0.1], [1, 0.2], [2, 0.3]], np.float32),  # what ran: not the labels
            np.zeros(3),
            np.zeros(3, bool),
            np.zeros(3, bool),
            store=np.array([True, True, t != 1]),  # env2 not in control at t=1: no transition, no label
            sources=np.array([0, 1, 2]),  # model, random, expert
            expert_actions=labels + np.float32(t),  # the expert's action for obs at t (choices clip to 0..3)
            expert_valid=np.array([True, t % 2 == 0, True]),
        )
    actions, valid = buf.stored_expert_labels()
    sources = buf.stored_sources()
    obs = buf.stored_observations()
    assert len(valid) == 11
    for row in range(11):
        env, t = int(obs[row, 0]), int(obs[row, 1])
        assert sources[row] == env
        expected_valid = env != 1 or t % 2 == 0
        assert valid[row] == expected_valid, (env, t)
        if expected_valid:
            label = labels[env] + t
            np.testing.assert_allclose(actions[row], [min(label[0], 3), np.clip(label[1], -1, 1)], rtol=1e-6)
        else:
            assert np.isnan(actions[row]).all()
    s = buf._get_samples(np.arange(11))
    assert s.expert_choices.dtype == th.int64 and s.expert_params.dtype == th.float32
    np.testing.assert_array_equal(s.expert_choices.numpy() >= 0, valid)
    np.testing.assert_array_equal(s.expert_choices.numpy()[valid], actions[valid, 0])
    np.testing.assert_array_equal(s.expert_params.numpy()[valid], actions[valid, 1])
    assert (s.expert_choices.numpy()[~valid] == -1).all() and (s.expert_params.numpy()[~valid] == 0).all()
    # random batches carry the labels of the drawn observations
    r = buf.sample(256)
    env_of = r.observations[:, 0].long().numpy()
    t_of = r.observations[:, 1].long().numpy()
    has = (env_of != 1) | (t_of % 2 == 0)
    np.testing.assert_array_equal(r.expert_choices.numpy() >= 0, has)
    np.testing.assert_allclose(
        r.expert_params.numpy()[has], np.clip(labels[env_of[has], 1] + t_of[has], -1, 1), rtol=1e-6
    )


def test_no_expert_actions_means_no_labels_and_slots_are_relabelled_when_reused():
    buf = make_buffer(1, size=4)
    for t in range(4):
        step(buf, o((0, t, 0)), o((0, t + 1, 0)), [0], term=(0,), trunc=(0,), store=(1,))
    assert not buf.stored_expert_labels()[1].any()
    for t in range(4, 8):  # the ring wraps: every slot gets its new transition's label
        buf.add_step(o((0, t, 0)), o((0, t + 1, 0)), np.zeros((1, 2)), np.zeros(1), np.zeros(1, bool),
                     np.zeros(1, bool), expert_actions=np.array([[1, 0.5]]))  # fmt: skip
    actions, valid = buf.stored_expert_labels()
    assert valid.all()
    np.testing.assert_array_equal(actions, np.tile([1, 0.5], (4, 1)))
    for t in range(8, 10):
        step(buf, o((0, t, 0)), o((0, t + 1, 0)), [0], term=(0,), trunc=(0,), store=(1,))
    assert buf.stored_expert_labels()[1].tolist() == [True, True, False, False]


def test_labels_survive_pickling_and_old_pickles_load_without_labels():
    buf = make_buffer(2, size=1000)
    for t in range(10):
        buf.add_step(o((0, t, 0), (1, t, 0)), o((0, t + 1, 0), (1, t + 1, 0)), np.zeros((2, 2)), np.ones(2),
                     np.zeros(2, bool), np.zeros(2, bool), store=np.array([True, t % 3 != 1]),
                     expert_actions=np.array([[1, t / 10], [2, -t / 10]]))  # fmt: skip
    loaded = pickle.loads(pickle.dumps(buf))
    for a, b in zip(loaded.stored_expert_labels(), buf.stored_expert_labels(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.gap_ticks[: loaded.pos], buf.gap_ticks[: buf.pos])
    # a buffer pickled before labels and joined ticks existed: no labels, no joins, and it keeps growing
    state = buf.__getstate__()
    for k in ("gap_ticks", "e_choice", "e_param", "open_return", "max_gap_ticks"):
        del state[k]
    old = CompactReplayBuffer.__new__(CompactReplayBuffer)
    old.__setstate__(state)
    assert not old.stored_expert_labels()[1].any()
    s = old._get_samples(np.arange(old.size()))
    assert (s.expert_choices == -1).all() and (s.expert_params == 0).all()
    np.testing.assert_allclose(s.discounts[:, 0].numpy(), 0.5 ** s.steps.numpy())
    old.close_open_transitions()
    step(old, o((0, 10, 0), (1, 10, 0)), o((0, 11, 0), (1, 11, 0)), [1, 1])
    assert len(old.obs) == 1000 and len(old.e_choice) == 1000 and old.stored_expert_labels()[1].sum() == 0
    old.sample(64)


# ---------------------------------------------------------------------------------------------- uncontrolled ticks
def chain_buffer(cut_ticks: int, cut_reward: float = 0.0, n_steps: int = 3, **kw) -> CompactReplayBuffer:
    """Toy chain, gamma 0.9: A (controlled, r 0) -> ``cut_ticks`` cut-scene ticks C (uncontrolled, r
    ``cut_reward`` each) -> B (controlled, r 1, terminal). Observations (state, tick, 0): A 1, C 2, B 3."""
    buf = make_buffer(1, n_steps=n_steps, gamma=0.9, **kw)
    step(buf, o((1, 0, 0)), o((2 if cut_ticks else 3, 1, 0)), [0], term=(0,), trunc=(0,), store=(1,))
    for k in range(cut_ticks):
        nxt = (2, k + 2, 0) if k + 1 < cut_ticks else (3, k + 2, 0)
        step(buf, o((2, k + 1, 0)), o(nxt), [cut_reward], term=(0,), trunc=(0,), store=(0,))
    step(buf, o((3, cut_ticks + 1, 0)), o((4, cut_ticks + 2, 9)), [1], term=(1,), trunc=(0,), store=(1,))
    return buf


@pytest.mark.parametrize("cut_ticks", [1, 3])
@pytest.mark.parametrize("n_steps", [1, 3])
def test_uncontrolled_ticks_join_the_chain_toy(cut_ticks, n_steps):
    """The target of A is its true value gamma ** (1 + cut_ticks) (0.81 for one cut-scene tick), never a
    bootstrap from the cut-scene state C, which no transition trains."""
    buf = chain_buffer(cut_ticks, n_steps=n_steps)
    assert buf.size() == 2  # A and B; the cut-scene ticks are no transitions
    w = buf.nstep_targets(np.array([0, 1]))
    true_q_a = 0.9 ** (1 + cut_ticks)
    if n_steps == 1:
        # one transition: bootstrap from B (whose own target is 1, terminal) with the discount of all ticks
        assert w["returns"][0] == 0 and not w["done"][0]
        assert w["discount"][0] == pytest.approx(true_q_a)
        np.testing.assert_array_equal(w["boot_codes"][0], [3, cut_ticks + 1, 0])
        assert w["returns"][0] + w["discount"][0] * w["returns"][1] == pytest.approx(true_q_a)
    else:
        assert w["done"][0] and w["steps"][0] == 2
        assert w["returns"][0] == pytest.approx(true_q_a)
    assert w["done"][1] and w["returns"][1] == 1
    s = buf._get_samples(np.array([0]))
    target = s.rewards[0, 0] + (1 - s.dones[0, 0]) * s.discounts[0, 0] * 1.0  # Q(B) = 1
    assert float(target) == pytest.approx(true_q_a, rel=1e-6)


def test_rewards_of_uncontrolled_ticks_are_kept_and_discounted_per_tick():
    buf = chain_buffer(3, cut_reward=0.5)
    w = buf.nstep_targets(np.array([0]))
    assert w["returns"][0] == pytest.approx(0.9 * 0.5 + 0.81 * 0.5 + 0.729 * 0.5 + 0.9**4 * 1)
    assert buf.gap_ticks[0] == 3 and buf.gap_ticks[1] == 0


def test_open_transition_during_a_stretch_is_consistent():
    """In the middle of a stretch the newest transition bootstraps from the newest observation with the
    discount and rewards so far (a correct target at every moment)."""
    buf = make_buffer(1, n_steps=3, gamma=0.9)
    step(buf, o((1, 0, 0)), o((2, 1, 0)), [1], term=(0,), trunc=(0,), store=(1,))
    step(buf, o((2, 1, 0)), o((2, 2, 0)), [2], term=(0,), trunc=(0,), store=(0,))
    w = buf.nstep_targets(np.array([0]))
    assert w["returns"][0] == pytest.approx(1 + 0.9 * 2) and w["discount"][0] == pytest.approx(0.81)
    np.testing.assert_array_equal(w["boot_codes"][0], [2, 2, 0])


@pytest.mark.parametrize("kind", ["terminated", "truncated"])
def test_episode_end_during_uncontrolled_stretch_ends_the_transition(kind):
    """A (r 0) -> cut-scene tick (r 0.5) -> cut-scene tick (r -1) where the episode ends."""
    buf = make_buffer(1, n_steps=3, gamma=0.9)
    term, trunc = (kind == "terminated",), (kind == "truncated",)
    step(buf, o((1, 0, 0)), o((2, 1, 0)), [0], term=(0,), trunc=(0,), store=(1,))
    step(buf, o((2, 1, 0)), o((2, 2, 0)), [0.5], term=(0,), trunc=(0,), store=(0,))
    step(buf, o((2, 2, 0)), o((2, 3, 9)), [-1], term=term, trunc=trunc, store=(0,))
    assert buf.open_slot[0] == -1
    # the next episode starts a new chain
    step(buf, o((1, 0, 5)), o((2, 1, 5)), [7], term=(0,), trunc=(0,), store=(1,))
    w = buf.nstep_targets(np.array([0, 1]))
    assert w["returns"][0] == pytest.approx(0.9 * 0.5 - 0.81) and w["steps"][0] == 1
    assert w["done"][0] == (kind == "terminated")
    if kind == "truncated":
        assert w["discount"][0] == pytest.approx(0.729)
        np.testing.assert_array_equal(w["boot_codes"][0], [2, 3, 9])  # the terminal observation
    assert w["returns"][1] == 7 and w["steps"][1] == 1


def test_too_long_stretch_ends_the_chain_as_truncation():
    buf = make_buffer(1, n_steps=3, gamma=0.9, max_gap_ticks=3)
    step(buf, o((1, 0, 0)), o((2, 1, 0)), [1], term=(0,), trunc=(0,), store=(1,))
    for k in range(5):
        step(buf, o((2, k + 1, 0)), o((2, k + 2, 0)), [1], term=(0,), trunc=(0,), store=(0,))
    step(buf, o((3, 6, 0)), o((3, 7, 0)), [1], term=(0,), trunc=(0,), store=(1,))
    assert buf.gap_ticks[0] == 3
    w = buf.nstep_targets(np.array([0]))
    assert w["steps"][0] == 1 and not w["done"][0]
    assert w["returns"][0] == pytest.approx(1 + 0.9 + 0.81 + 0.729)
    assert w["discount"][0] == pytest.approx(0.9**4)
    np.testing.assert_array_equal(w["boot_codes"][0], [2, 4, 0])
    with pytest.raises(ValueError, match="max_gap_ticks"):
        make_buffer(1, max_gap_ticks=70_000)

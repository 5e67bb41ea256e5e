"""A rule-based Tempest expert: a policy over the observation vector, vectorised over N envs.

The rules (docs/expert.md has the long version and the measured results):

* **Danger map.** For every lane, an estimate of how many ticks until standing in it kills:
  rim chasers (0 in their lane, soon in the lane they flip toward), enemies and enemy shots
  about to reach the rim, pulsing pulsars above the lethal depth, fuseballs near the rim on
  the line they ride, and during the dive the spikes the player is about to pass.
* **Landing.** Only the player's position at the end of a tick counts, so each tick the
  spinner delta is chosen among all deltas in ``[-max_spin, max_spin]`` so that the landing
  lane is not lethal and the landing point is as close as possible to the centre of the
  target lane (dead-beat control, saturated at ``max_spin``; this can jump a lane).
* **Target.** Lanes reachable without crossing a lethal lane are scored: the most urgent
  shootable enemy (closest to the rim, deepest last, spikers last) counting its lane distance,
  minus danger. With nothing to hunt: stay, prefer short spikes near the end of a level; in the
  dive, the nearest lane without a spike (or with the shortest one, shooting it down).
* **Fire** when something the shot can hit is in the lane (a shootable or climbing enemy, an
  enemy shot, a spike, a flipping enemy on one of the lane's lines) or the player lands on its
  hunting target this tick; otherwise keep the shot slots free.
* **Zap** (a fresh press each time, released while the zap runs) when no landing is safe or
  even the best one is lethal within 2 ticks, when several lanes next to the player turn lethal
  while the full zap is unused, and, as zaps recharge every level, to spend an unused full zap
  once no enemies are pending and three or more are in the tube.

Only ticks with ``agent_control`` get a real action; all others get the neutral ``[0, 0]``.
"""

from __future__ import annotations

import numpy as np

from tempest_gym.bridge.constants import MAX_SPIN, NLANES
from tempest_gym.bridge.layout import StateLayout, default_layout

FAR = 1.0e3  # "no danger": ticks


def flipper_speed(level: np.ndarray) -> np.ndarray:
    """Flipper climb speed in depth units per tick (docs/ram.md 2.10, ``TINVIN``)."""
    lv = np.clip(np.asarray(level, dtype=np.float64), 1, 99)
    byte = np.select(
        [lv <= 8, lv <= 16, lv <= 25, lv <= 32, lv <= 39, lv <= 48, lv <= 64],
        [
            44 + 5 * (lv - 1),
            np.interp(lv, [9, 10, 13, 14, 15], [81, 84, 88, 92, 96]),
            81 + 3 * (lv - 17),
            99 + 3 * (lv - 26),
            108 + 3 * (lv - 33),
            110 + (lv - 40),
            120 + (lv - 49),
        ],
        175,
    )
    return byte / 32.0


#: flipper_speed of the integer levels 0..99 (levels are integers: a table lookup gives the same values)
_FLIPPER_SPEED = flipper_speed(np.arange(100))


_KIDS_OFFSETS = np.array([-2, -1, 0, 1])  # a fuse-carrying tanker's children: lanes el - 2 .. el + 1
_SPLIT_OFFSETS = np.array([-1, 0, 1])  # a pulsar-carrying tanker's children: lanes el - 1 .. el + 1


class _Marks:
    """The danger map's sources, gathered column block by column block: lanes, ticks and masks shaped (N, slots) (or
    broadcastable to it), written into preallocated (N, width) arrays (no per-source broadcast copies)."""

    __slots__ = ("lanes", "t", "ok", "k")

    def __init__(self, n: int, width: int) -> None:
        self.lanes = np.empty((n, width), dtype=np.int64)
        self.t = np.empty((n, width), dtype=np.float64)
        self.ok = np.empty((n, width), dtype=bool)
        self.k = 0

    def add(self, lanes, t, mask) -> None:
        k, w = self.k, mask.shape[1]
        self.lanes[:, k : k + w] = lanes
        self.t[:, k : k + w] = t
        self.ok[:, k : k + w] = mask
        self.k = k + w

    def add_offsets(self, lanes, offsets: np.ndarray, t, mask) -> None:
        """``add(lanes + off, t, mask)`` for every ``off`` in ``offsets``, in one pass."""
        n, w = mask.shape
        k, m = self.k, len(offsets) * w
        self.lanes[:, k : k + m].reshape(n, len(offsets), w)[:] = lanes[:, None, :] + offsets[None, :, None]
        self.t[:, k : k + m].reshape(n, len(offsets), w)[:] = np.asarray(t, dtype=np.float64)[:, None, :]
        self.ok[:, k : k + m].reshape(n, len(offsets), w)[:] = mask[:, None, :]
        self.k = k + m

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.k
        return self.lanes[:, :k], self.t[:, :k], self.ok[:, :k]


class TempestExpert:
    """Rule-based policy over ``TempestVecEnv`` observations (Box action encoding)."""

    # tuning knobs (ticks unless noted)
    horizon = 3.0  # a lane lethal within this many ticks is not a place to stay or target
    lane_cost = 10.0  # depth units one lane of travel is worth when ranking targets
    chaser_next = 2.0  # ticks until a rim chaser may land in the next lane of its direction
    zap_close = 2  # near-rim threats within 2 lanes that trigger the (first, full) zap

    def __init__(self, layout: StateLayout | None = None, max_spin: int = MAX_SPIN, seed: int = 0) -> None:
        self.layout = layout or default_layout()
        if not 1 <= int(max_spin) <= MAX_SPIN:
            raise ValueError(f"max_spin must be in 1..{MAX_SPIN}, got {max_spin}")
        self.max_spin = int(max_spin)
        self._steps = np.arange(-self.max_spin, self.max_spin + 1)
        self._lanes = np.arange(NLANES)
        self._step_cost = 1e-3 * np.abs(self._steps)[None, :]  # prefer the smaller of equally good deltas
        self._ks = np.arange(1, NLANES)
        self._edge = np.zeros(NLANES)  # open tubes: the end lanes, dead ends when sweepers come
        self._edge[[0, 14]] = 40.0
        self._edge[[1, 13]] = 15.0
        # each feature group's columns: a slice, or the column of a one-feature group
        self._cols = {name: (sl if sl.stop - sl.start > 1 else sl.start) for name, sl in self.layout.slices.items()}
        self.seed(seed)

    # ------------------------------------------------------------------ public API
    def seed(self, seed: int) -> None:
        """Reset the tie-break generator (the policy is deterministic given the seed)."""
        self._seed = int(seed)
        self._rng = np.random.default_rng(self._seed)

    def predict(self, observation, state=None, episode_start=None, deterministic=True) -> tuple[np.ndarray, None]:
        """SB3-style: one observation (D,) gives one action (2,), a batch (N, D) gives (N, 2)."""
        obs = np.asarray(observation, dtype=np.float32)
        actions = self.predict_batch(obs.reshape(-1, self.layout.size))
        return (actions[0] if obs.ndim == 1 else actions), None

    def predict_batch(self, obs: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
        """(N, D) observations -> (N, 2) float32 actions: [fire/zap index, spinner in [-1, 1]].

        ``tie_break``: the rows of an earlier :meth:`draw_tie_break` to use instead of drawing new ones (rows are
        independent, so a batch's rows can be computed in parts, in any order, with the same results).
        """
        return self.explain(obs, tie_break)["action"]

    def draw_tie_break(self, n: int) -> np.ndarray:
        """The tie-break noise (n, 16) that :meth:`explain` draws for n observations (advancing the generator)."""
        return self._rng.uniform(0.0, 1e-3, size=(n, NLANES))

    # ------------------------------------------------------------------ the rules
    def explain(self, obs: np.ndarray, tie_break: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The action plus the intermediate arrays (danger map, target lane, ...) for debugging (``tie_break``: see
        :meth:`predict_batch`)."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.layout.size:
            raise ValueError(f"expected observations of shape (N, {self.layout.size}), got {obs.shape}")
        L = self.layout
        raw = L.raw(obs)
        n = raw.shape[0]
        rows = np.arange(n)

        cols = self._cols
        is1 = raw == 1  # the flags, all compared at once

        def g(name: str) -> np.ndarray:
            return raw[:, cols[name]]

        def flag(name: str) -> np.ndarray:
            return is1[:, cols[name]]

        ctrl = flag("agent_control")
        diving = flag("gs_dive") | flag("player_diving")
        playing = flag("gs_play") & ~diving
        open_ = flag("well_open")
        lane = g("player_lane")
        fine = g("player_fine")
        pdepth = g("player_depth")
        level = np.maximum(g("level"), 1)
        vf = _FLIPPER_SPEED[np.minimum(level, 99)]  # flipper / tanker climb speed (flipper_speed(level))
        vshot = vf + 2.0  # enemy shot speed (Flipper - 64/32)

        present = flag("enemy_present")
        e_lane = g("enemy_lane")
        e_depth = g("enemy_depth")
        toward = flag("enemy_toward")
        flipping = flag("enemy_flipping")
        flip_step = g("enemy_flip_step")
        cargo = g("enemy_cargo")
        up = flag("enemy_lane_up")
        at_rim = flag("enemy_at_rim") & present
        shootable = flag("enemy_shootable") & present
        flipper, pulsar = flag("enemy_flipper"), flag("enemy_pulsar")
        tanker, spiker, fuse = flag("enemy_tanker"), flag("enemy_spiker"), flag("enemy_fuseball")
        es_present = flag("eshot_present")
        es_rel = g("eshot_rel_lane")
        es_depth = g("eshot_depth")
        spike = g("spike")  # (N, 16): 0 none, else 256 - tip depth
        pulse_lethal = flag("pulse_lethal")
        pulse_phase = g("pulse_phase")
        pulse_rising = flag("pulse_rising")
        kill_depth = g("pulsar_kill_depth")
        zaps_left = g("zaps_left")
        zap_active = flag("zap_active")
        pending_total = g("pending_total")

        # ---------------------------------------------------------------- danger map
        # dt[n, lane]: ticks until standing in the lane kills (FAR: not foreseen). Every source
        # adds (lane, ticks, mask) arrays shaped (N,) or (N, slots); they are applied at once.
        marks = _Marks(n, 20 * g("enemy_present").shape[1] + g("eshot_present").shape[1])
        mark = marks.add

        col = (slice(None), None)  # per-env scalars against (N, slots) arrays
        # pulse: ticks until pulsars are lethal (step 4/6/8 per tick; the swing is about -64..+15)
        pstep = np.where(level >= 65, 8.0, np.where(level >= 49, 6.0, 4.0))
        t_pulse = np.where(
            pulse_lethal,
            0.0,
            np.where(pulse_rising, np.ceil(-pulse_phase / pstep) - 1.0, (pulse_phase + 64.0) / pstep + 16.0 / pstep),
        )
        t_pulse = np.maximum(t_pulse, 0.0)[col]
        kd = kill_depth[col]
        v1 = vf[col]

        p = present & ~diving[col]
        el, ed = e_lane, e_depth.astype(np.float64)
        fl, u, rim = flipping, up, at_rim
        grabber = p & (flipper | pulsar)
        dest = np.where(u, el, el - 1)  # flipping: the lane it lands in (pivot line = el)
        step_dir = np.where(u, 1, -1)
        # rim chasers: deadly in their lane; soon in the next lane of their direction
        sit = grabber & rim & ~fl
        mark(el, 0.0, sit)
        mark(el + step_dir, self.chaser_next, sit)
        flip_rim = grabber & rim & fl
        mark(dest, 1.0, flip_rim)
        mark(dest + step_dir, 1.0 + self.chaser_next, flip_rim)
        # climbing grabbers: the lane where they arrive at the rim
        t_arrive = np.maximum(ed - pdepth[col], 0.0) / v1
        mark(np.where(fl, dest, el), t_arrive, grabber & ~rim & toward)
        # tankers split near the rim into two grabbers in the lanes beside them...
        tk = p & tanker & toward
        mark(el - 1, t_arrive, tk)
        mark(el + 1, t_arrive, tk)
        # ...fuseball children ride lines el - 1 and el + 1 at twice the speed: lanes el - 2..el + 1
        tkf = p & tanker & (cargo == 3)
        t_kids = np.maximum(t_arrive / 2.0, 1.0)
        marks.add_offsets(el, _KIDS_OFFSETS, t_kids, tkf)
        # ...and pulsar children are lethal at once when split above the lethal depth while pulsing
        tkp = p & tanker & (cargo == 2) & (ed < kd + 16)
        marks.add_offsets(el, _SPLIT_OFFSETS, np.broadcast_to(np.maximum(t_pulse, 1.0), tkp.shape), tkp)
        # pulsing pulsars above the lethal depth (one climbing counts from when it crosses it)
        t_cross = np.where(ed < kd, 0.0, (ed - kd + 1.0) / v1)
        pz = p & pulsar & ((ed < kd) | toward)
        t_pz = np.maximum(t_pulse, t_cross)
        mark(el, t_pz, pz & ~fl)
        mark(dest, np.maximum(t_pz, 1.0), pz & fl)
        # fuseballs: lethal at the rim in the lane whose clockwise line is the one they ride
        # (el). Starting a move down sets el to the line below at once, so lane el - 1 is as
        # dangerous; a move up only changes el on arrival at the next line.
        fz = p & fuse
        t_fuse = t_arrive / 2.0
        eighths = flip_step.astype(np.float64)
        mark(el, t_fuse, fz)
        t_down = np.where(fl & ~u, np.maximum(eighths, 1.0), 1.0)  # moving down: reaches el, goes on
        mark(el - 1, np.maximum(t_fuse, t_down), fz)
        mark(el + 1, np.maximum(t_fuse, np.maximum(8.0 - eighths, 1.0)), fz & fl & u)
        # enemy shots reaching the rim
        t_shot = np.maximum(es_depth - pdepth[col], 0.0) / vshot[col]
        mark(lane[col] + es_rel, t_shot, es_present & ~diving[col])

        dt = np.full((n, NLANES), FAR)
        lanes_m, t_m, ok_m = marks.arrays()
        ok_m = ok_m & (~open_[col] | ((lanes_m >= 0) & (lanes_m <= 14)))
        r_m = np.broadcast_to(rows[col], lanes_m.shape)
        np.minimum.at(dt, (r_m[ok_m], lanes_m[ok_m] % NLANES), t_m[ok_m])

        # the dive: a spike kills when the player passes its tip (enemies are gone then)
        tip = np.where(spike > 0, 256 - spike, 0).astype(np.float64)
        dive_speed = 3.0
        t_spike = np.where(spike > 0, np.maximum(tip - pdepth[:, None], 0.0) / dive_speed, FAR)
        dt = np.where(diving[:, None], t_spike, dt)
        dt[open_, 15] = -1.0  # lane 15 does not exist on open tubes

        # ---------------------------------------------------------------- reachable lanes
        # walk both ways from the player's lane; a lane lethal within one tick blocks the walk
        passable = dt > 1.0
        ks = self._ks
        rows_c = rows[:, None]
        dist = np.full((n, NLANES), np.inf)  # signed lane steps to reach each lane
        for sgn in (-1, 1):  # lower first, so that the higher way wins ties; then keep the shorter
            path = lane[:, None] + sgn * ks[None, :]
            lanes_p = path % NLANES
            in_range = ~open_[:, None] | ((path >= 0) & (path <= 14))
            ok = np.logical_and.accumulate(in_range & passable[rows_c, lanes_p], axis=1)
            cand = np.where(ok, sgn * ks[None, :].astype(np.float64), np.inf)
            if sgn < 0:  # dist is all inf: every candidate is kept (|cand| <= inf)
                dist[rows_c, lanes_p] = cand
                continue
            cur = dist[rows_c, lanes_p]
            dist[rows_c, lanes_p] = np.where(np.abs(cand) <= np.abs(cur), cand, cur)
        dist[rows, lane] = 0.0
        reach = np.isfinite(dist)
        absd = np.where(reach, np.abs(dist), 99.0)

        # ---------------------------------------------------------------- lane values
        # hunt: the most urgent shootable enemy counts for its aim lane(s)
        hunt = np.full((n, NLANES), -np.inf)
        # can it be shot now or on its way up? (rim enemies only while flipping; fuseballs sideways)
        target_ok = present & playing[col] & (shootable | (~at_rim & ~fuse))
        urgency = ed - pdepth[col]  # depth units above the rim
        urgency = urgency + np.where(spiker, 96.0, 0.0) + np.where(toward, 0.0, 32.0) + np.where(tanker, 8.0, 0.0)
        # a fuse-carrying tanker shot near the rim releases two fast fuseballs next to us
        urgency = urgency + np.where(tanker & (cargo == 3) & (ed < 0x80), 400.0, 0.0)
        value = 400.0 - urgency
        # a flipping enemy can be hit from both lanes of its pivot line; its landing lane first
        for aim, v in ((np.where(fl, dest, el), value), (np.where(fl, np.where(u, el - 1, el), el), value - 8.0)):
            ok = target_ok & (~open_[col] | ((aim >= 0) & (aim <= 14)))
            np.maximum.at(hunt, (np.broadcast_to(rows[col], aim.shape)[ok], aim[ok] % NLANES), v[ok])
        has_hunt = np.isfinite(hunt)
        score = np.where(has_hunt, hunt, 0.0) - self.lane_cost * absd
        score = np.where(has_hunt, score + 1000.0, score)  # hunting beats idling
        # danger: never target lethal lanes; lanes lethal soon only as a last resort
        score = score - np.where(dt <= self.horizon, 5000.0 - 100.0 * np.maximum(dt, 0.0), 0.0)
        # spikes: in the dive (and when the level is about to end) prefer lanes without them
        endgame = playing & (pending_total == 0)
        spike_w = np.where(diving, 20.0, np.where(endgame, 1.0, 0.0))
        score = score - spike_w[:, None] * spike / 16.0
        score = np.where(diving[:, None] & (spike == 0), score + 500.0, score)
        # open tubes: the end lanes are dead ends when rim fuseballs or chasers sweep toward them
        sweepers = (g("count_fuseball") > 0) | (g("chasers") > 0)
        score = score - np.where((open_ & sweepers)[:, None], self._edge[None, :], 0.0)
        score = score - np.where(reach, 0.0, 1.0e6)
        if tie_break is None:
            tie_break = self.draw_tie_break(n)
        elif np.shape(tie_break) != score.shape:
            raise ValueError(f"tie_break must have shape {score.shape}, got {np.shape(tie_break)}")
        score = score + tie_break  # deterministic tie-break
        target = np.argmax(score, axis=1)
        tdist = dist[rows, target]
        tdist = np.where(np.isfinite(tdist), tdist, 0.0)

        # ---------------------------------------------------------------- spinner
        # desired landing point in "unwrapped" fine units, then the best safe delta this tick
        centre = lane * 16 + 8
        goal = np.where(open_, target * 16 + 8, centre + tdist.astype(np.int64) * 16)
        unwrapped = fine[:, None] - self._steps[None, :]
        landing = np.where(open_[:, None], np.clip(unwrapped, 0, 0xEF), unwrapped % 256)
        cost = np.abs(np.where(open_[:, None], landing, unwrapped) - goal[:, None]).astype(np.float64)
        land_lane = landing >> 4
        land_dt = dt[rows[:, None], land_lane]
        cost = cost + np.where(land_dt <= 1.0, 1.0e5 - 1.0e3 * np.maximum(land_dt, 0.0), 0.0)
        cost = cost + np.where((land_dt > 1.0) & (land_dt <= self.horizon), 200.0 / np.maximum(land_dt, 1.0), 0.0)
        cost = cost + self._step_cost
        best = np.argmin(cost, axis=1)
        spin = self._steps[best]
        safe_landing = land_dt[rows, best] > 1.0

        # ---------------------------------------------------------------- fire
        pivot_here = fl & ((el == lane[col]) | (el == (lane[col] + 1) % NLANES))
        coming = present & ~at_rim & (el == lane[col]) & ~fuse
        in_lane = ((shootable & ((el == lane[col]) | pivot_here)) | coming).any(axis=1)
        shot_in_lane = (es_present & (es_rel == 0)).any(axis=1)
        spike_here = spike[rows, lane] > 0
        land_target = land_lane[rows, best] == target
        fire = in_lane | shot_in_lane | spike_here | (has_hunt[rows, target] & land_target)

        # ---------------------------------------------------------------- zap
        can_zap = playing & (zaps_left > 0) & ~zap_active
        rel = (self._lanes[None, :] - lane[:, None] + 8) % NLANES - 8
        rel = np.where(open_[:, None], self._lanes[None, :] - lane[:, None], rel)
        near = np.abs(rel) <= self.zap_close
        crowd = ((dt <= 1.0) & near & (dt >= 0)).sum(axis=1)
        trapped = land_dt[rows, best] <= 2.0  # even the best landing is lethal within 2 ticks
        # the zaps recharge every level: spend the full one at the latest once the last enemies are in
        cleanup = (zaps_left == 2) & (pending_total == 0) & (g("enemies_in_tube") >= 3)
        zap = can_zap & (~safe_landing | trapped | ((zaps_left == 2) & (crowd >= 2)) | cleanup)

        fz = np.where(fire, 1, 0) + np.where(zap, 2, 0)
        action = np.zeros((n, 2), dtype=np.float32)
        action[:, 0] = np.where(ctrl, fz, 0)
        action[:, 1] = np.where(ctrl, spin / self.max_spin, 0.0)
        return {
            "action": action,
            "danger": dt,
            "reach": reach,
            "score": score,
            "target": target,
            "spin": np.where(ctrl, spin, 0),
            "fire": fire & ctrl,
            "zap": zap & ctrl,
        }

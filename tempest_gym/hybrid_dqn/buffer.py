"""Compact n-step replay for hybrid actions: each observation stored once, as uint8 layout codes when possible.

Layout (``C`` = ``buffer_size`` transitions over all envs, one ring in write order; ``D`` observation size):

=============  ===========  =====================================================================
array          shape        content
=============  ===========  =====================================================================
``obs``        (C, D)       observation the action answered (codec dtype: uint8 for Tempest)
``choice``     (C,)         executed discrete choice index, uint8
``param``      (C,)         executed parameter, float32 (exact: Tempest's k/31 is not a float16)
``reward``     (C,)         float32: its reward plus the discounted rewards of the joined uncontrolled ticks
``flags``      (C,)         uint8: DONE, TRUNC, GAP, OPEN, LOST bits and the 2-bit action source
``next_ptr``   (C,)         int32: where the next observation is (see below)
``gap_ticks``  (C,)         uint16: uncontrolled ticks joined after it (its discount is ``gamma ** (1 + gap)``)
``e_choice``   (C,)         uint8: the expert's choice for ``obs`` (255: no label)
``e_param``    (C,)         float32: the expert's parameter for ``obs`` (0 where no label)
``b_obs``      (Cb, D)      next observations that are not the next stored one (episode ends, gaps)
``b_owner``    (Cb,)        int32: transition owning each boundary entry
``pending``    (N, D)       next observation of each env's newest transition
=============  ===========  =====================================================================

The next observation of a transition is never stored twice. Each env's transitions form a chain: when env
``i`` stores a new transition, its previous one gets ``next_ptr`` = the new slot (the new ``obs`` *is* its next
observation). Until then the newest transition is OPEN and its next observation waits in ``pending[i]``.
When the chain breaks (the episode ended: DONE/TRUNC; or ``close_open_transitions``: GAP), the next
observation goes to the boundary ring ``b_obs`` and ``next_ptr`` points there. Because the ring is in write
order, a successor is always newer than its predecessor, so a live transition's chain never points into
overwritten data. The boundary ring is smaller (default ``C // 16``); when it wraps while the owner is still
live, the owner is flagged LOST and sampling skips it unless it is terminal (a terminal target does not need the
next observation). ``lost_count`` reports it; raise ``boundary_size`` if it is not zero.

Ticks out of the agent's control (the env steps, ``store`` False: cut-scenes, the zoom between levels) do not
break the chain: they are *joined* to the env's newest transition, whose ``reward`` gains each such tick's
reward discounted by ``gamma`` per tick, whose ``gap_ticks`` counts them and whose pending next observation
follows the env. When the env stores again, that transition's successor is the new one, ``gamma ** (1 + gap)``
later: no target bootstraps from an uncontrolled state, which no transition would train (only an open one in
the middle of a stretch does, from the newest uncontrolled observation, with the discount so far). If the
episode ends during the stretch, the transition ends there (DONE: no bootstrap; TRUNC: bootstrap from the
terminal observation). A stretch of ``max_gap_ticks`` ticks ends the chain as a truncation.

Bytes per transition: ``D * itemsize + 21 + (D * itemsize + 4) * Cb / C``; for Tempest (D = 245, uint8) and
the default ``Cb = C / 16`` that is 281.6 B, against 1,980 B for SB3's float32 ``ReplayBuffer`` (obs and
next_obs; the 1,620 B often quoted is for D = 200). 2M transitions: 563 MB. The arrays
are allocated on the first ``add`` with ``np.zeros``, whose pages the OS only maps when written, so resident
memory grows with the fill level.

n-step returns are computed at sample time by walking ``next_ptr`` (``n_steps`` vectorised numpy passes over
the batch, no per-sample Python): the window stops at the first DONE (no bootstrap), TRUNC, GAP or OPEN
transition (bootstrap from that transition's next observation), else after ``n_steps`` transitions. Each
transition discounts what follows it by ``gamma ** (1 + gap_ticks)``: the bootstrap discount is their product
(``gamma ** steps`` without uncontrolled ticks). It never crosses an episode end or a gap, and never mixes envs.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from tempest_gym.hybrid_dqn.codecs import ObsCodec, make_codec
from tempest_gym.hybrid_dqn.policies import HybridActionSpec

DONE = 1  # the episode terminated after this transition: no bootstrap
TRUNC = 2  # the episode was truncated (time limit) after it: bootstrap from its next observation
GAP = 4  # chain broken by close_open_transitions (env reset or replaced): bootstrap from its next observation
OPEN = 8  # newest transition of its env: next observation in ``pending``
LOST = 16  # its boundary next-observation was overwritten
SRC_SHIFT = 5  # bits 5-6: action source
BOUNDARY = DONE | TRUNC | GAP
STOP = BOUNDARY | OPEN

SOURCE_MODEL, SOURCE_RANDOM, SOURCE_EXPERT = 0, 1, 2
SOURCE_NAMES = ("model", "random", "expert")
NO_LABEL = 255  # e_choice of a transition without the expert's label

# per-transition arrays (same length, trimmed together when pickled); boundary ring arrays
TRANSITION_ARRAYS = ("obs", "choice", "param", "reward", "flags", "next_ptr", "gap_ticks", "e_choice", "e_param")
BOUNDARY_ARRAYS = ("b_obs", "b_owner")


class HybridReplaySamples(NamedTuple):
    """A batch; the first six fields mean what they mean in SB3's ``ReplayBufferSamples``."""

    observations: th.Tensor
    actions: th.Tensor  # (B, 2) executed action in the Box encoding
    next_observations: th.Tensor  # observation to bootstrap from (end of the n-step window)
    dones: th.Tensor  # (B, 1) 1.0 if the window ends with a termination
    rewards: th.Tensor  # (B, 1) discounted n-step return
    discounts: th.Tensor  # (B, 1) gamma ** steps, the bootstrap discount
    choices: th.Tensor  # (B,) int64 choice index
    params: th.Tensor  # (B,) float32 parameter
    sources: th.Tensor  # (B,) int64: 0 model, 1 random, 2 expert
    steps: th.Tensor  # (B,) int64: transitions in the window (1..n_steps)
    expert_choices: th.Tensor  # (B,) int64: the expert's choice for ``observations``, -1 where no label
    expert_params: th.Tensor  # (B,) float32: the expert's parameter for ``observations``, 0 where no label


class CompactReplayBuffer(ReplayBuffer):
    """Replay buffer for ``HybridDQN`` (see the module doc for the storage layout).

    It subclasses SB3's ``ReplayBuffer`` so that SB3's ``save_replay_buffer``/``load_replay_buffer`` accept it,
    but shares none of its storage (``ReplayBuffer.__init__`` is not called: it would allocate float32 arrays).

    :param buffer_size: capacity in transitions, over all envs together (SB3 divides by ``n_envs``; not here)
    :param observation_space: observation space (a Box)
    :param action_space: the hybrid ``Box((2,))`` action space
    :param device: torch device of the sampled tensors
    :param n_envs: number of envs adding transitions each step
    :param optimize_memory_usage: must be False (the memory optimisation is built in)
    :param handle_timeout_termination: must be True (truncations always bootstrap)
    :param n_steps: n of the n-step return
    :param gamma: discount factor
    :param obs_codec: ``"auto"``, ``"layout"``, ``"float16"``, ``"float32"``, ``"raw"`` or an ``ObsCodec``
    :param layout: the env's ``StateLayout`` (enables the exact uint8 codes)
    :param boundary_size: capacity of the boundary ring (default ``max(buffer_size // 16, 4 * n_envs)``)
    :param seed: seed of the sampling generator
    :param max_gap_ticks: longest run of uncontrolled ticks joined to a transition; a longer one ends its chain
        as a truncation (``gamma ** max_gap_ticks`` should be negligible)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_steps: int = 3,
        gamma: float = 0.99,
        obs_codec: str | ObsCodec = "auto",
        layout: Any = None,
        boundary_size: int | None = None,
        seed: int | None = None,
        max_gap_ticks: int = 1000,
    ) -> None:
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        if optimize_memory_usage:
            raise ValueError("CompactReplayBuffer stores each observation once already: optimize_memory_usage=False")
        if not handle_timeout_termination:
            raise ValueError("CompactReplayBuffer always bootstraps truncations (handle_timeout_termination=True)")
        if buffer_size < n_envs or buffer_size >= 2**31:
            raise ValueError(f"buffer_size must be in [n_envs, 2**31), got {buffer_size}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if not 1 <= max_gap_ticks <= np.iinfo(np.uint16).max:
            raise ValueError(f"max_gap_ticks must be in [1, 65535], got {max_gap_ticks}")
        self.optimize_memory_usage = False
        self.handle_timeout_termination = True
        self.spec = HybridActionSpec.from_space(action_space)
        if self.spec.n_choices > 255:
            raise ValueError("at most 255 discrete choices")
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        self.max_gap_ticks = int(max_gap_ticks)
        self.codec = make_codec(observation_space, obs_codec, layout)
        self.obs_dim = int(np.prod(self.obs_shape))
        self.boundary_size = int(boundary_size or max(buffer_size // 16, 4 * n_envs))
        if self.boundary_size < n_envs:
            raise ValueError(f"boundary_size must be >= n_envs, got {self.boundary_size}")
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._allocated = False
        self.b_pos = 0
        self.b_full = False
        self.pending = np.zeros((n_envs, self.obs_dim), dtype=self.codec.dtype)
        self.open_slot = np.full(n_envs, -1, dtype=np.int64)
        self.open_return = np.zeros(n_envs, dtype=np.float64)  # exact reward of each open transition, joins included
        self.lost_count = 0
        self._warned_lost = False

    # ------------------------------------------------------------------ storage
    @property
    def lock(self) -> threading.RLock:
        """Held while adding and while sampling; hold it to read a consistent buffer from another thread."""
        return self._lock

    def _allocate(self) -> None:
        c, cb, d = self.buffer_size, self.boundary_size, self.obs_dim
        self.obs = np.zeros((c, d), dtype=self.codec.dtype)
        self.choice = np.zeros(c, dtype=np.uint8)
        self.param = np.zeros(c, dtype=np.float32)
        self.reward = np.zeros(c, dtype=np.float32)
        self.flags = np.zeros(c, dtype=np.uint8)
        self.next_ptr = np.zeros(c, dtype=np.int32)
        self.gap_ticks = np.zeros(c, dtype=np.uint16)
        self.e_choice = np.full(c, NO_LABEL, dtype=np.uint8)
        self.e_param = np.zeros(c, dtype=np.float32)
        self.b_obs = np.zeros((cb, d), dtype=self.codec.dtype)
        self.b_owner = np.full(cb, -1, dtype=np.int32)
        self._allocated = True

    def _ensure_capacity(self) -> None:
        """Allocate on first use; after loading a trimmed pickle, grow the arrays back to full capacity."""
        if not self._allocated:
            self._allocate()
            return
        if len(self.obs) < self.buffer_size or len(self.b_obs) < self.boundary_size:
            old = {k: getattr(self, k) for k in (*TRANSITION_ARRAYS, *BOUNDARY_ARRAYS)}
            self._allocate()
            for k, v in old.items():
                getattr(self, k)[: len(v)] = v

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays at full capacity (whether or not allocated yet)."""
        item = self.codec.dtype.itemsize
        per = self.obs_dim * item + 1 + 4 + 4 + 1 + 4 + 2 + 1 + 4
        return self.buffer_size * per + self.boundary_size * (self.obs_dim * item + 4) + self.pending.nbytes

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / self.buffer_size

    def reset(self) -> None:
        with self._lock:
            super().reset()
            self.b_pos = 0
            self.b_full = False
            self.open_slot[:] = -1
            if self._allocated:
                self.b_owner[:] = -1
            self.lost_count = 0

    # ------------------------------------------------------------------ adding
    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3-compatible ``add``: reads ``TimeLimit.truncated``, ``agent_in_control`` and ``executed_action``."""
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & done
        store = np.array([bool(info.get("agent_in_control", True)) for info in infos])
        action = np.asarray(action, dtype=np.float32).reshape(self.n_envs, 2)
        executed = np.stack(
            [np.asarray(info.get("executed_action", action[i]), np.float32) for i, info in enumerate(infos)]
        )
        self.add_step(obs, next_obs, executed, reward, done & ~truncated, truncated, store)

    def add_step(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        store: np.ndarray | None = None,
        sources: np.ndarray | None = None,
        *,
        expert_actions: np.ndarray | None = None,
        expert_valid: np.ndarray | None = None,
    ) -> None:
        """Add one vectorised env step.

        :param obs: (N, ...) observations the actions answered
        :param next_obs: (N, ...) next observations (the *terminal* observation where the episode ended)
        :param actions: (N, 2) executed actions, Box encoding
        :param rewards: (N,) rewards (also those of envs that do not store: they join the env's chain)
        :param terminated: (N,) episode ended by termination (wins over ``truncated``)
        :param truncated: (N,) episode ended by truncation
        :param store: (N,) which envs' transitions to keep (False: the agent was not in control). Such a tick
            is joined to the env's newest transition (reward, discount and next observation; see the module
            doc), or ends it where the episode ended.
        :param sources: (N,) action source (0 model, 1 random, 2 expert)
        :param expert_actions: (N, 2) the expert's action for ``obs`` (Box encoding), whoever acted
        :param expert_valid: (N,) which rows of ``expert_actions`` are labels (default: all, when given)
        """
        n = self.n_envs
        store = np.ones(n, dtype=bool) if store is None else np.asarray(store, dtype=bool).reshape(n)
        sources = np.zeros(n, dtype=np.uint8) if sources is None else np.asarray(sources).reshape(n).astype(np.uint8)
        terminated = np.asarray(terminated, dtype=bool).reshape(n)
        truncated = np.asarray(truncated, dtype=bool).reshape(n) & ~terminated
        if expert_actions is None:
            e_valid = np.zeros(n, dtype=bool)
            e_actions = np.zeros((n, 2), dtype=np.float32)
        else:
            e_actions = np.asarray(expert_actions, dtype=np.float32).reshape(n, 2)
            e_valid = np.ones(n, dtype=bool) if expert_valid is None else np.asarray(expert_valid, bool).reshape(n)
            e_valid = e_valid & np.isfinite(e_actions).all(axis=1)
        env_ids = np.flatnonzero(store)
        m = len(env_ids)
        if m > self.buffer_size:
            raise ValueError(f"buffer_size {self.buffer_size} is smaller than the {m} transitions of one step")
        actions = np.asarray(actions, dtype=np.float32).reshape(n, 2)[env_ids]
        # encode first: a bad observation raises before anything changes
        codes = self.codec.encode(np.asarray(obs).reshape(n, self.obs_dim)[env_ids])
        all_next_codes = self.codec.encode(np.asarray(next_obs).reshape(n, self.obs_dim))
        all_rewards = np.asarray(rewards, dtype=np.float32).reshape(n)
        e_choice = np.where(e_valid, self.spec.choices(e_actions), NO_LABEL).astype(np.uint8)
        e_param = np.where(e_valid, self.spec.params(e_actions), 0.0).astype(np.float32)
        with self._lock:
            self._ensure_capacity()
            if m:
                self._write(
                    env_ids,
                    codes,
                    all_next_codes[env_ids],
                    actions,
                    all_rewards[env_ids],
                    terminated[env_ids],
                    truncated[env_ids],
                    sources[env_ids],
                    e_choice[env_ids],
                    e_param[env_ids],
                )
            # ticks out of the agent's control join the envs' newest transitions (after the write, which forgets
            # newest transitions that it overwrote)
            self._join_uncontrolled(
                np.flatnonzero(~store & (self.open_slot >= 0)), all_next_codes, all_rewards, terminated, truncated
            )

    def _write(
        self,
        env_ids: np.ndarray,
        codes: np.ndarray,
        next_codes: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        term: np.ndarray,
        trunc: np.ndarray,
        sources: np.ndarray,
        e_choice: np.ndarray,
        e_param: np.ndarray,
    ) -> None:
        m = len(env_ids)
        slots = (self.pos + np.arange(m)) % self.buffer_size
        if self.full or self.pos + m > self.buffer_size:
            # overwriting the oldest transitions: forget any that were still some env's open transition
            self.open_slot[np.isin(self.open_slot, slots)] = -1
        # link each storing env's open transition to its new slot: the new obs is its next obs
        prev = self.open_slot[env_ids]
        has = prev >= 0
        self.flags[prev[has]] &= np.uint8(~OPEN & 0xFF)
        self.next_ptr[prev[has]] = slots[has]
        ended = term | trunc
        self.obs[slots] = codes
        self.choice[slots] = self.spec.choices(actions)
        self.param[slots] = self.spec.params(actions)
        self.reward[slots] = rewards
        self.gap_ticks[slots] = 0
        self.e_choice[slots] = e_choice
        self.e_param[slots] = e_param
        self.open_return[env_ids] = rewards
        flags = (sources.astype(np.uint8) << SRC_SHIFT) | np.where(term, DONE, 0) | np.where(trunc, TRUNC, 0)
        self.flags[slots] = np.where(ended, flags, flags | OPEN).astype(np.uint8)
        # chain still open: the next observation waits in pending
        oe = env_ids[~ended]
        self.next_ptr[slots[~ended]] = oe
        self.pending[oe] = next_codes[~ended]
        self.open_slot[oe] = slots[~ended]
        # episode ended: the terminal observation goes to the boundary ring (next_ptr -1 first, so that the
        # allocation cannot mistake a new transition for the old owner of a recycled entry)
        end_slots = slots[ended]
        self.next_ptr[end_slots] = -1
        b = self._alloc_boundary(len(end_slots))
        self.b_obs[b] = next_codes[ended]
        self.next_ptr[end_slots] = b
        self.b_owner[b] = end_slots
        self.open_slot[env_ids[ended]] = -1
        self.pos += m
        if self.pos >= self.buffer_size:
            self.full = True
            self.pos -= self.buffer_size

    def _alloc_boundary(self, count: int) -> np.ndarray:
        b = (self.b_pos + np.arange(count)) % self.boundary_size
        if count and (self.b_full or self.b_pos + count > self.boundary_size):
            owner = self.b_owner[b]
            ok = owner >= 0
            o, bo = owner[ok], b[ok]
            f = self.flags[o]
            live = ((f & BOUNDARY) != 0) & ((f & (OPEN | LOST)) == 0) & (self.next_ptr[o] == bo)
            self.flags[o[live]] |= np.uint8(LOST)
            needed = int((live & ((f & DONE) == 0)).sum())
            if needed:
                self.lost_count += needed
                if not self._warned_lost:
                    self._warned_lost = True
                    warnings.warn(
                        f"CompactReplayBuffer: boundary_size={self.boundary_size} is too small for the episode "
                        "ends and gaps in the buffer; transitions whose bootstrap observation was overwritten "
                        "are skipped when sampling (see lost_count). Raise boundary_size.",
                        stacklevel=3,
                    )
        self.b_pos += count
        if self.b_pos >= self.boundary_size:
            self.b_full = True
            self.b_pos %= self.boundary_size
        return b

    def _join_uncontrolled(
        self,
        env_ids: np.ndarray,
        next_codes: np.ndarray,
        rewards: np.ndarray,
        term: np.ndarray,
        trunc: np.ndarray,
    ) -> None:
        """One tick out of the agent's control for each of ``env_ids`` (all with an open transition): add its
        reward, discounted by the ticks since that transition, extend its discount by one tick and move its
        pending next observation along; end it where the episode ended or the stretch is too long."""
        if len(env_ids) == 0:
            return
        slots = self.open_slot[env_ids]
        ticks = self.gap_ticks[slots].astype(np.int64) + 1  # ticks from the transition's own to this one
        self.open_return[env_ids] += np.power(self.gamma, ticks) * rewards[env_ids].astype(np.float64)
        self.reward[slots] = self.open_return[env_ids].astype(np.float32)
        self.gap_ticks[slots] = ticks.astype(np.uint16)
        self.pending[env_ids] = next_codes[env_ids]
        t, tr = term[env_ids], trunc[env_ids]
        self._close_open(env_ids[t], DONE)
        self._close_open(env_ids[~t & (tr | (ticks >= self.max_gap_ticks))], TRUNC)

    def _close_open(self, env_ids: np.ndarray, kind: int) -> None:
        """End the open transitions of ``env_ids`` as ``kind`` (DONE, TRUNC or GAP): move their pending next
        observation to the boundary ring."""
        if len(env_ids) == 0:
            return
        b = self._alloc_boundary(len(env_ids))
        slots = self.open_slot[env_ids]
        self.b_obs[b] = self.pending[env_ids]
        self.flags[slots] = (self.flags[slots] & np.uint8(~OPEN & 0xFF)) | np.uint8(kind)
        self.next_ptr[slots] = b
        self.b_owner[b] = slots
        self.open_slot[env_ids] = -1

    def close_open_transitions(self, n_envs: int | None = None) -> None:
        """Mark every env's newest transition as a GAP (call when the env is reset outside an episode end, or
        before continuing with different envs); optionally change the number of envs."""
        with self._lock:
            if self._allocated:
                self._ensure_capacity()
                self._close_open(np.flatnonzero(self.open_slot >= 0), GAP)
            if n_envs is not None and n_envs != self.n_envs:
                self.n_envs = int(n_envs)
                self.pending = np.zeros((self.n_envs, self.obs_dim), dtype=self.codec.dtype)
                self.open_slot = np.full(self.n_envs, -1, dtype=np.int64)
                self.open_return = np.zeros(self.n_envs, dtype=np.float64)

    # ------------------------------------------------------------------ sampling
    def nstep_targets(self, slots: np.ndarray, env: VecNormalize | None = None) -> dict[str, np.ndarray]:
        """n-step windows starting at ``slots`` (numpy, for sampling and for tests; call under ``lock``).

        Returns ``returns``, ``steps`` (transitions in the window), ``discount`` (bootstrap discount: ``gamma``
        to the power of the ticks in the window, joined uncontrolled ticks included), ``end`` (last slot of the
        window), ``done``, ``valid`` and ``boot_codes`` (codes of the observation to bootstrap from).
        """
        slots = np.asarray(slots, dtype=np.int64)
        ret = np.zeros(len(slots), dtype=np.float64)
        steps = np.zeros(len(slots), dtype=np.int64)
        cur = slots.copy()
        end = slots.copy()
        alive = np.ones(len(slots), dtype=bool)
        disc = np.ones(len(slots), dtype=np.float64)
        for k in range(self.n_steps):
            r = self.reward[cur]
            if env is not None:
                r = self._normalize_reward(r, env)
            ret += np.where(alive, disc * r.astype(np.float64), 0.0)
            disc = np.where(alive, disc * np.power(self.gamma, 1.0 + self.gap_ticks[cur]), disc)
            end = np.where(alive, cur, end)
            steps += alive
            alive &= (self.flags[cur] & STOP) == 0
            if k + 1 < self.n_steps:
                cur = np.where(alive, self.next_ptr[cur], cur)
        fe = self.flags[end]
        ptr = self.next_ptr[end]
        done = (fe & DONE) != 0
        valid = done | ((fe & LOST) == 0)
        boot = np.empty((len(slots), self.obs_dim), dtype=self.codec.dtype)
        m_open = (fe & OPEN) != 0
        m_bnd = (fe & BOUNDARY) != 0
        m_lnk = ~(m_open | m_bnd)
        boot[m_open] = self.pending[ptr[m_open]]
        boot[m_bnd] = self.b_obs[ptr[m_bnd]]
        boot[m_lnk] = self.obs[ptr[m_lnk]]
        return {
            "returns": ret,
            "steps": steps,
            "discount": disc,
            "end": end,
            "done": done,
            "valid": valid,
            "boot_codes": boot,
        }

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> HybridReplaySamples:  # type: ignore[override]
        """Uniform sample of ``batch_size`` transitions (with replacement) with their n-step targets."""
        with self._lock:
            size = self.size()
            if size == 0:
                raise RuntimeError("cannot sample an empty replay buffer")
            slots = self._rng.integers(0, size, size=batch_size)
            win = self.nstep_targets(slots, env)
            for _ in range(64):  # only LOST windows are redrawn; rare unless boundary_size is far too small
                bad = ~win["valid"]
                if not bad.any():
                    break
                slots[bad] = self._rng.integers(0, size, size=int(bad.sum()))
                redo = self.nstep_targets(slots[bad], env)
                for k, v in redo.items():
                    win[k][bad] = v
            else:
                raise RuntimeError("could not draw valid transitions: boundary_size is far too small")
            rows = self._rows(slots)
        return self._to_samples(*rows, win, env)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> HybridReplaySamples:  # type: ignore[override]
        """The transitions at the given slots (no redraw of LOST ones)."""
        with self._lock:
            slots = np.asarray(batch_inds, dtype=np.int64)
            win = self.nstep_targets(slots, env)
            rows = self._rows(slots)
        return self._to_samples(*rows, win, env)

    def _rows(self, slots: np.ndarray) -> tuple[np.ndarray, ...]:
        """Copies of the per-transition fields at ``slots`` (under ``lock``)."""
        e_choice = self.e_choice[slots]
        return (
            self.obs[slots],
            self.choice[slots].astype(np.int64),
            self.param[slots].copy(),
            ((self.flags[slots] >> SRC_SHIFT) & 3).astype(np.int64),
            np.where(e_choice == NO_LABEL, -1, e_choice.astype(np.int64)),
            self.e_param[slots].copy(),
        )

    def _to_samples(
        self,
        obs_codes: np.ndarray,
        choice: np.ndarray,
        param: np.ndarray,
        sources: np.ndarray,
        e_choice: np.ndarray,
        e_param: np.ndarray,
        win: dict[str, np.ndarray],
        env: VecNormalize | None,
    ) -> HybridReplaySamples:
        shape = (len(choice), *self.obs_shape)
        obs = self._normalize_obs(self.codec.decode(obs_codes).reshape(shape), env)
        next_obs = self._normalize_obs(self.codec.decode(win["boot_codes"]).reshape(shape), env)
        actions = self.spec.encode(choice, param)
        t = self.to_torch
        return HybridReplaySamples(
            observations=t(obs),  # type: ignore[arg-type]
            actions=t(actions),
            next_observations=t(next_obs),  # type: ignore[arg-type]
            dones=t(win["done"].astype(np.float32)[:, None]),
            rewards=t(win["returns"].astype(np.float32)[:, None]),
            discounts=t(win["discount"].astype(np.float32)[:, None]),
            choices=t(choice),
            params=t(param),
            sources=t(sources),
            steps=t(win["steps"]),
            expert_choices=t(e_choice),
            expert_params=t(e_param),
        )

    def to_torch(self, array: np.ndarray, copy: bool = False) -> th.Tensor:
        """Arrays here are fresh copies already: hand them to torch without another copy."""
        return th.as_tensor(array, device=self.device)

    # ------------------------------------------------------------------ inspection
    def stored_sources(self) -> np.ndarray:
        """Source of every live transition, oldest first (metrics, tests)."""
        with self._lock:
            idx = self._live_slots()
            return ((self.flags[idx] >> SRC_SHIFT) & 3).astype(np.int64) if len(idx) else np.zeros(0, np.int64)

    def stored_actions(self) -> np.ndarray:
        """Executed actions (n, 2) of every live transition, oldest first (Box encoding)."""
        with self._lock:
            idx = self._live_slots()
            if not len(idx):
                return np.zeros((0, 2), np.float32)
            return self.spec.encode(self.choice[idx], self.param[idx])

    def stored_expert_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The expert's label of every live transition, oldest first: actions (n, 2) in the Box encoding (NaN
        where none) and whether there is one (n,)."""
        with self._lock:
            idx = self._live_slots()
            if not len(idx):
                return np.zeros((0, 2), np.float32), np.zeros(0, bool)
            valid = self.e_choice[idx] != NO_LABEL
            actions = self.spec.encode(np.where(valid, self.e_choice[idx], 0), self.e_param[idx])
            actions[~valid] = np.nan
            return actions, valid

    def stored_observations(self) -> np.ndarray:
        """Decoded observations of every live transition, oldest first."""
        with self._lock:
            idx = self._live_slots()
            if not len(idx):
                return np.zeros((0, *self.obs_shape), np.float32)
            return self.codec.decode(self.obs[idx]).reshape(len(idx), *self.obs_shape)

    def _live_slots(self) -> np.ndarray:
        if self.full:
            return (self.pos + np.arange(self.buffer_size)) % self.buffer_size
        return np.arange(self.pos)

    # ------------------------------------------------------------------ pickling (save/load_replay_buffer)
    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the lock, and only the filled part of arrays that are not full yet.

        Pickle protocol 5 (SB3's ``save_to_pkl``) writes contiguous numpy arrays straight from their memory,
        so saving needs no second copy of the buffer. Loading a trimmed buffer keeps the trimmed arrays; the
        first ``add`` grows them back (briefly holding both: full capacity plus the filled part).
        """
        with self._lock:
            state = self.__dict__.copy()
        del state["_lock"]
        if self._allocated and not self.full:
            for k in TRANSITION_ARRAYS:
                state[k] = state[k][: self.pos]
        if self._allocated and not self.b_full:
            for k in BOUNDARY_ARRAYS:
                state[k] = state[k][: self.b_pos]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        # buffers pickled before the expert labels and the joined uncontrolled ticks: no labels, no joins
        self.__dict__.setdefault("max_gap_ticks", 1000)
        if "open_return" not in state:
            self.open_return = np.zeros(self.n_envs, dtype=np.float64)
            if self._allocated:
                has = self.open_slot >= 0
                self.open_return[has] = self.reward[self.open_slot[has]]
        if self._allocated:
            c = len(self.obs)
            defaults = {"gap_ticks": (np.uint16, 0), "e_choice": (np.uint8, NO_LABEL), "e_param": (np.float32, 0)}
            for k, (dtype, fill) in defaults.items():
                if k not in state:
                    setattr(self, k, np.full(c, fill, dtype=dtype))

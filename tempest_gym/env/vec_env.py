"""``TempestVecEnv``: N real MAME instances as one Stable-Baselines3 ``VecEnv``.

Semantics (docs/env.md has the long version, with the infos and the index-taking methods):

* one step = one game tick (~27 per emulated second) of every instance, in lockstep;
* the action is the hybrid action encoded as ``Box([0, -1], [3, 1])``: column 0 rounds to the
  fire/zap index (0 none, 1 fire, 2 zap, 3 fire+zap), column 1 times ``max_spin`` is the
  spinner delta for the tick (positive = lane number decreases, as the game's knob does);
* the Lua client plays the parts the agent does not control (starting games, level select,
  initials, death and level-transition sequences). Those ticks are still steps, flagged
  ``info["control"] == False``; the action answering them is ignored, and the next step's
  ``info["agent_in_control"]`` says whether the previous action really ran as the agent's.
  ``info["executed_action"]`` is what ran (clamped and rounded), for replay buffers;
* an episode is one life: it ends (``terminated``) on the tick the player dies. There is no
  reset between lives, so the observation returned with ``done`` is the death tick itself
  (also in ``terminal_observation``). ``info["episode"]`` (also ``info["tempest_episode"]``,
  which wrappers such as VecMonitor leave alone) has the return, length, score, points and
  level. The game carries on, and after game over the client starts a new game by itself.
  ``reset()`` after the first starts fresh games from a save state taken at boot.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from tempest_gym.bridge import protocol
from tempest_gym.bridge.cluster import ClusterConfig, MameCluster
from tempest_gym.bridge.constants import MAX_SPIN, NUM_FIRE_ZAP
from tempest_gym.bridge.layout import StateLayout, default_layout

FIRE_ZAP_NAMES = ("none", "fire", "zap", "fire+zap")
F_CONTROL, F_APPLIED, F_GAME_OVER = protocol.F_CONTROL, protocol.F_APPLIED, protocol.F_GAME_OVER
F_NEW_GAME, F_LEVEL_UP = protocol.F_NEW_GAME, protocol.F_LEVEL_UP

ExpertFactory = Callable[[StateLayout, int, int], Any]
#: the keyword arguments TempestVecEnv hands to ClusterConfig
CLUSTER_ARGUMENTS = frozenset(f.name for f in fields(ClusterConfig))


def env_arguments() -> set[str]:
    """Every keyword argument ``TempestVecEnv`` takes: its own and ClusterConfig's."""
    own = set(inspect.signature(TempestVecEnv.__init__).parameters) - {"self", "cluster_kwargs"}
    return own | CLUSTER_ARGUMENTS


def hybrid_action_space() -> spaces.Box:
    """Fire/zap index in [0, 3] (rounded) and spinner in [-1, 1]."""
    return spaces.Box(low=np.array([0.0, -1.0], np.float32), high=np.array([3.0, 1.0], np.float32), dtype=np.float32)


_ACTION_LOW = np.array([0.0, -1.0], dtype=np.float32)
_ACTION_HIGH = np.array([NUM_FIRE_ZAP - 1, 1.0], dtype=np.float32)


def decode_actions(actions: np.ndarray, max_spin: int) -> tuple[np.ndarray, np.ndarray]:
    """Box actions (N, 2) -> fire/zap index (N,) in 0..3 and integer spinner delta (N,).

    The fire/zap column is rounded and clipped to 0..3 (clipping to integer bounds first rounds the same), the
    spinner clipped to [-1, 1], scaled by ``max_spin`` (in float32) and rounded: both columns in one pass."""
    a = np.asarray(actions, dtype=np.float32).reshape(-1, 2)
    if not np.isfinite(a).all():
        raise ValueError(f"actions must be finite, got {a}")
    scaled = np.minimum(np.maximum(a, _ACTION_LOW), _ACTION_HIGH) * np.array([1, max_spin], dtype=np.float32)
    both = np.rint(scaled).astype(np.int64)
    fz, spin = both[:, 0], both[:, 1]
    return fz, spin


def _default_expert(layout: StateLayout, max_spin: int, seed: int) -> Any:
    from tempest_gym.policies.expert import TempestExpert

    return TempestExpert(layout=layout, max_spin=max_spin, seed=seed)


class ExpertLabels:
    """The expert's actions for one batch of observations (the batch a step or reset returned), computed when asked
    for: all at once, or some rows first (the envs the expert drives, before the actions are sent) and the rest
    later (after they are sent, while the emulators run).

    An expert with ``draw_tie_break(n)`` and ``predict_batch(obs, tie_break)`` (the rule-based one) has its random
    tie-break drawn for the whole batch when the observations arrive, as computing the whole batch at once would draw
    it, and each row is computed with its own part: the labels are the same however the batch is cut. Any other
    expert computes the whole batch in one call, the first time any row is asked for.
    """

    __slots__ = ("expert", "obs", "tie_break", "actions", "done", "targets")

    def __init__(self, expert: Any, obs: np.ndarray, targets: list[list[dict[str, Any]]]) -> None:
        self.expert = expert
        self.obs = obs
        self.tie_break = expert.draw_tie_break(len(obs)) if hasattr(expert, "draw_tie_break") else None
        self.actions: np.ndarray | None = None
        self.done = np.zeros(len(obs), dtype=bool)
        self.targets = targets  # per env, the info dicts that get "expert_action" once it is known

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def compute(self, indices: np.ndarray | None = None) -> None:
        """Compute the rows in ``indices`` (default: all) that are not known yet, and put them in their infos."""
        todo = np.flatnonzero(~self.done) if indices is None else np.unique(np.asarray(indices, dtype=np.int64))
        if indices is not None:
            todo = todo[~self.done[todo]]
        if len(todo) == 0:
            return
        if self.actions is None and (self.tie_break is None or len(todo) == len(self.obs)):
            # the whole batch in one call, exactly as an expert is asked without after-reply labels
            args = () if self.tie_break is None else (self.tie_break,)
            self.actions = self.expert.predict_batch(self.obs, *args)
            todo = np.arange(len(self.obs))
        else:
            if self.actions is None:
                self.actions = np.zeros((len(self.obs), 2), dtype=np.float32)
            self.actions[todo] = self.expert.predict_batch(self.obs[todo], self.tie_break[todo])
        self.done[todo] = True
        actions = self.actions
        for i in todo.tolist():
            for info in self.targets[i]:
                info["expert_action"] = actions[i]

    def get(self, indices: np.ndarray | None = None) -> np.ndarray:
        """(k, 2) float32 labels of the rows in ``indices`` (default: all), computing the missing ones now."""
        self.compute(indices)
        assert self.actions is not None
        rows = self.actions if indices is None else self.actions[np.asarray(indices, dtype=np.int64)]
        return np.asarray(rows, dtype=np.float32)


class TempestVecEnv(VecEnv):
    """N headless MAME processes playing ``tempest1``, stepped in lockstep (see module doc).

    :param num_envs: MAME instances
    :param seed: seed of instance 0's games (instance i: ``seed + i``) and of the expert
    :param reward_obj_scale: weight of the points (the objective reward)
    :param reward_subj_scale: weight of the lane shaping (the subjective reward)
    :param death_penalty: points subtracted from the objective reward on a death
    :param max_spin: the spinner delta of action ``1.0`` (1..31)
    :param max_episode_steps: truncate lives longer than this (None: never)
    :param expert: label every observation with the expert's action (``info["expert_action"]``): True for the
        rule-based expert, a factory ``(layout, max_spin, seed) -> expert``, or False/None for no labels
    :param expert_after_reply: compute the expert's labels after the next step's actions have gone out, while the
        emulators run, instead of before returning the observations: ``info["expert_action"]`` of a step's infos is
        filled in during the next step (or when :meth:`expert_actions` asks for it); :meth:`expert_actions` gives
        the labels of chosen envs at once, :attr:`previous_expert_actions` those of the observations the last step
        answered. ``HybridDQN`` switches this on while it learns. The labels are the same either way
    :param layout: the observation layout (default: the packaged ``lua/state_layout.tsv``)
    :param cluster_kwargs: how to start and reach the emulators, any field of
        :class:`~tempest_gym.bridge.cluster.ClusterConfig`: ``rompath``, ``mame``, ``start_level``, ``lives``,
        ``host``, ``port``, ``token``, ``transport``, ``pipeline``, ``connect_timeout``, ``step_timeout``,
        ``headless``, ``workdir``, ``keep_workdir``, ``supervise``, ``max_restarts``, ``remote``, ``trace_ram``,
        ``client_settings``, ``mame_args``, ``launcher`` (``"local"``, or ``"ray"``: the clients as Ray actors on
        the cluster at ``ray_address``, else a local Ray instance), ...
    """

    metadata = {"render_modes": []}
    render_mode = None

    def __init__(
        self,
        num_envs: int = 1,
        seed: int = 0,
        reward_obj_scale: float = 0.01,
        reward_subj_scale: float = 0.01,
        death_penalty: int = 1000,
        max_spin: int = MAX_SPIN,
        max_episode_steps: int | None = None,
        expert: ExpertFactory | None | bool = True,
        expert_after_reply: bool = False,
        layout: StateLayout | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        self.layout = layout or default_layout()
        if not 1 <= max_spin <= MAX_SPIN:
            raise ValueError(f"max_spin must be in 1..{MAX_SPIN}, got {max_spin}")
        obs_space = spaces.Box(low=self.layout.low, high=self.layout.high, dtype=np.float32)
        super().__init__(num_envs, obs_space, hybrid_action_space())
        unknown = sorted(set(cluster_kwargs) - CLUSTER_ARGUMENTS)
        if unknown:
            near = {k: difflib.get_close_matches(k, env_arguments(), 1) for k in unknown}
            hints = [f"{k!r}" + "".join(f" (did you mean {m!r}?)" for m in near[k]) for k in unknown]
            raise TypeError(f"TempestVecEnv got unexpected keyword argument(s) {', '.join(hints)}")
        self.cluster_config = ClusterConfig(num_envs=num_envs, seed=seed, death_penalty=death_penalty, **cluster_kwargs)
        self.cluster_config.validate()
        self.cluster = MameCluster(self.cluster_config, self.layout)
        self.reward_obj_scale = float(reward_obj_scale)
        self.reward_subj_scale = float(reward_subj_scale)
        self.max_spin = int(max_spin)
        self.max_episode_steps = max_episode_steps
        self.base_seed = int(seed)
        self.death_penalty = int(death_penalty)
        if expert is True:
            expert = _default_expert
        self.expert = expert(self.layout, self.max_spin, self.base_seed) if expert else None
        self._after_reply = bool(expert_after_reply)
        self._labels: ExpertLabels | None = None  # the expert's labels of the newest observations
        self._previous_labels: ExpertLabels | None = None  # ...and of those the last step's actions answered
        self._actions: np.ndarray | None = None
        self._ep_return = np.zeros(num_envs, dtype=np.float64)
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._ep_start = np.zeros(num_envs, dtype=np.float64)
        self._ep_points = np.zeros(num_envs, dtype=np.int64)
        self._zero = np.zeros(num_envs, dtype=np.int64)
        self.total_steps = 0
        self.last_states: np.ndarray | None = None
        self._prev_obs: np.ndarray | None = None
        self._reset_next = np.zeros(num_envs, dtype=bool)
        self._resets = np.ones(num_envs, dtype=np.int64)

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        seeds = [s if s is not None else self.base_seed + i for i, s in enumerate(self._seeds)]
        if not self.cluster.started:
            self.cluster.config.seed = seeds[0]
            self.cluster.start()
            arr = self.cluster.receive_states()
        else:
            self.cluster.send_actions(self._zero, self._zero, protocol.CMD_RESET, np.array(seeds) & 0x7FFFFFFF)
            arr = self.cluster.receive_states()
        self._finish_labels()
        self._reset_next[:] = False  # this reset already restarted every instance
        self._reset_seeds()
        self._reset_options()
        now = time.monotonic()
        self._ep_return[:] = 0.0
        self._ep_len[:] = 0
        self._ep_start[:] = now
        self._ep_points[:] = 0
        obs = np.array(arr["obs"], dtype=np.float32)
        self.last_states = arr
        self.reset_infos = self._infos(arr)
        self._label(obs, [[info] for info in self.reset_infos])
        self._prev_obs = obs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        if not self.cluster.started:
            raise RuntimeError("call reset() before step()")
        fz, spin = decode_actions(self._actions, self.max_spin)
        self._actions = None
        resetting = self._reset_next
        self._reset_next = np.zeros(self.num_envs, dtype=bool)
        if resetting.any():
            seeds = (self.base_seed + np.arange(self.num_envs) + 7919 * self._resets) & 0x7FFFFFFF
            self._resets += resetting
            self.cluster.send_actions(fz, spin, np.where(resetting, protocol.CMD_RESET, protocol.CMD_NONE), seeds)
        else:
            self.cluster.send_actions(fz, spin)
        # the actions are out and the emulators are running: label the observations they answered (if not yet)
        self._finish_labels()
        arr = self.cluster.receive_states()
        self.last_states = arr
        obs = np.array(arr["obs"], dtype=np.float32)
        rewards = (self.reward_obj_scale * arr["reward_obj"] + self.reward_subj_scale * arr["reward_subj"]).astype(
            np.float32
        )
        flags = arr["flags"]
        terminated = (flags & protocol.F_DEATH) != 0
        # a replaced client (crashed MAME) or a requested reset cuts the episode short (truncation)
        restarted = self.cluster.restarted | resetting
        terminated &= ~restarted
        self._ep_return += rewards
        self._ep_len += 1
        # points scored in play: the objective reward without the death penalty (bonuses are already
        # filtered out and the 1,000,000 wrap of the 6-digit score is handled by the client)
        self._ep_points += np.rint(arr["reward_obj"] + self.death_penalty * terminated).astype(np.int64)
        self.total_steps += self.num_envs
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps:
            truncated = (self._ep_len >= self.max_episode_steps) & ~terminated
        # a replaced client (crashed or hung MAME) cuts its episode short: a truncation whose terminal
        # observation is the last one the old client sent; the new client starts a new episode
        truncated |= restarted
        dones = terminated | truncated
        infos = self._infos(arr)
        label_targets = [[info] for info in infos]
        for i in np.flatnonzero(restarted):
            infos[i]["client_restarted" if self.cluster.restarted[i] else "reset"] = True
            infos[i]["agent_in_control"] = False
            # the instance started over (new client or new game) and obs[i] is its first observation, not the
            # terminal one: like an auto-resetting VecEnv, keep that observation's info (its expert action) here
            self.reset_infos[i] = dict(infos[i])
            label_targets[i].append(self.reset_infos[i])
        self._label(obs, label_targets)
        if dones.any():
            now = time.monotonic()
            for i in np.flatnonzero(dones):
                info = infos[i]
                info["terminal_observation"] = (self._prev_obs[i] if restarted[i] else obs[i]).copy()
                info["TimeLimit.truncated"] = bool(truncated[i])
                info["episode"] = info["tempest_episode"] = {
                    "r": float(self._ep_return[i]),
                    "l": int(self._ep_len[i]),
                    "t": round(now - self._ep_start[i], 6),
                    "score": int(arr["score"][i]),
                    "points": int(self._ep_points[i]),
                    "level": int(arr["level"][i]),
                    "game_over": bool(flags[i] & protocol.F_GAME_OVER),
                }
                self._ep_return[i] = 0.0
                self._ep_len[i] = 0
                self._ep_start[i] = now
                self._ep_points[i] = 0
        self._prev_obs = obs
        return obs, rewards, dones, infos

    def request_reset(self, indices: Iterable[int]) -> None:
        """Start fresh games on these instances at the next step (their episodes end as truncated).

        Unlike ``reset()``, the other instances carry on. Each reset uses a new seed, so repeated resets
        of one instance play different games (and the same sequence of games for the same base seed).
        """
        for i in indices:
            self._reset_next[int(i)] = True

    def _infos(self, arr: np.ndarray) -> list[dict[str, Any]]:
        """One info per env (without the expert's label: :meth:`_label` adds it)."""
        executed = np.empty((len(arr), 2), dtype=np.float32)  # np.stack's result, without its cost per call
        executed[:, 0] = arr["exec_fz"]
        executed[:, 1] = arr["exec_spin"] / self.max_spin
        # one field view and one conversion per column, not per env; the flag bits as plain ints
        columns = ("flags", "score", "level", "lives", "gamestate", "frame", "reward_obj", "reward_subj")
        flags, score, level, lives, gamestate, frame, r_obj, r_subj = (arr[k].tolist() for k in columns)
        run_ids = [c.run_id if c is not None else 0 for c in self.cluster.clients]
        rows = (flags, executed, score, level, lives, gamestate, frame, r_obj, r_subj, run_ids)
        return [
            {
                "control": (f & F_CONTROL) != 0,
                "agent_in_control": (f & F_APPLIED) != 0,
                "executed_action": x,
                "score": sc,
                "level": lv,
                "lives": li,
                "gamestate": gs,
                "frame": fr,
                "reward_obj": ro,
                "reward_subj": rs,
                "game_over": (f & F_GAME_OVER) != 0,
                "new_game": (f & F_NEW_GAME) != 0,
                "level_up": (f & F_LEVEL_UP) != 0,
                "run_id": rid,
            }
            for f, x, sc, lv, li, gs, fr, ro, rs, rid in zip(*rows, strict=True)
        ]

    # ------------------------------------------------------------------ the expert's labels
    def _label(self, obs: np.ndarray, targets: list[list[dict[str, Any]]]) -> None:
        """Start labelling a new batch of observations: now, or (``expert_after_reply``) when asked or after the
        next actions are sent."""
        if self.expert is None:
            return
        self._labels = ExpertLabels(self.expert, obs, targets)
        if not self._after_reply:
            self._labels.compute()

    def _finish_labels(self) -> None:
        """Label whatever is left of the newest observations (after the actions answering them went out)."""
        if self._labels is not None:
            self._labels.compute()
            self._previous_labels = self._labels

    @property
    def expert_after_reply(self) -> bool:
        """Whether the expert's labels are computed after the next actions are sent (see the class doc)."""
        return self._after_reply

    @expert_after_reply.setter
    def expert_after_reply(self, value: bool) -> None:
        self._after_reply = bool(value)
        if not self._after_reply and self._labels is not None:
            self._labels.compute()  # labels at once from now on: complete the newest infos too

    def expert_actions(self, indices: Iterable[int] | np.ndarray | None = None) -> np.ndarray | None:
        """The expert's actions (k, 2) for the newest observations of the envs in ``indices`` (default: all),
        computed now where still missing (their infos get them too); None without an expert or observations."""
        if self._labels is None:
            return None
        return self._labels.get(None if indices is None else np.fromiter(indices, dtype=np.int64))

    @property
    def previous_expert_actions(self) -> np.ndarray | None:
        """The expert's actions (N, 2) for the observations the last step's actions answered (None before a step or
        without an expert): the labels of the transitions that step made."""
        return None if self._previous_labels is None else self._previous_labels.get()

    def close(self) -> None:
        self.cluster.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self._seeds = [seed + i for i in range(self.num_envs)]
        if self.expert is not None and hasattr(self.expert, "seed"):
            self.expert.seed(seed)
        return self._seeds

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the instances in ``indices`` (default: all).

        All instances live in this one object and share its attributes (reward scales, ``max_spin``, ...),
        so the indices must name every instance: setting one for only some of them cannot be honoured and
        raises ``ValueError`` rather than changing the others too.
        """
        targets = self._get_indices(indices)
        if set(targets) != set(range(self.num_envs)):
            raise ValueError(
                f"TempestVecEnv attributes are shared by all {self.num_envs} instances: cannot set {attr_name!r} "
                f"for indices {sorted(set(targets))} only (use indices=None)"
            )
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call ``method_name`` once per index (default: every instance) and return the results in order.

        As SB3 documents for ``VecEnv.env_method``: one call per targeted instance. All instances live in this
        one object, so each call goes to its method; methods that act on particular instances take them as an
        argument (``request_reset(indices)``): call those directly.
        """
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def _get_indices(self, indices: VecEnvIndices) -> list[int]:
        """``None``, an index or an iterable of indices -> a list of indices (negative ones count from the end)."""
        if indices is None:
            return list(range(self.num_envs))
        items = [indices] if isinstance(indices, (int, np.integer)) else list(indices)
        out = []
        for i in items:
            if not -self.num_envs <= int(i) < self.num_envs:
                raise IndexError(f"env index {i} out of range for {self.num_envs} instances")
            out.append(int(i) % self.num_envs)
        return out

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.cluster.close()

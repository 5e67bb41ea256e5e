"""HybridDQN: SB3's ``DQN`` for a (discrete choice, continuous parameter) action, plus an expert, n-step returns,
demonstration losses, a compact replay buffer and an optional background learner.

What SB3 does, it still does here: ``OffPolicyAlgorithm``'s ``learn`` loop, ``collect_rollouts``, model setup,
logging, saving and loading. What is new lives in its own place:

* the **heads** (``policies.py``): ``MlpPolicy`` (MP-DQN hybrid head) or ``BinnedMlpPolicy`` (binned head);
* **who acts** (:meth:`HybridDQN._sample_action`): per env and step, and the transition remembers which,

  1. the **expert** with probability ``expert_ratio`` (``infos[i]["expert_action"]``, the expert's action for the
     observation in ``obs[i]``; envs without that key simply never get it);
  2. **random** with probability ``epsilon``: a uniformly random choice with the *model's* parameter for that
     choice plus noise (before ``learning_starts``: a uniformly random parameter);
  3. the **model** otherwise (greedy);
* **what is stored** (:meth:`HybridDQN._store_transition`): only transitions whose action really ran as the
  agent's (``infos[i]["agent_in_control"]``, default True), with the action that ran
  (``infos[i]["executed_action"]``, default the commanded one) and the expert's label for the observation, in the
  compact n-step buffer (``buffer.py``, ``codecs.py``);
* **the update** (:meth:`HybridDQN.train`): n-step double-Q TD, plus DQfD-style demonstration losses on expert
  transitions (or every labelled one, ``demo_on_labels``), plus the parameter network's step; pre-training when
  ``learning_starts`` is reached and final updates at the end (:meth:`HybridDQN.offline_updates`);
* the **background learner** (``learner.py``): with ``async_learner`` the updates run in a thread for the whole
  ``learn`` call and a copy of the policy acts;
* **schedules** as strings (``schedules.py``), weights-only files (:meth:`HybridDQN.save_weights`), and files
  saved before the package layout changed (``legacy.py``).
"""

from __future__ import annotations

import io
import pathlib
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule, TrainFreq
from stable_baselines3.common.utils import (
    LinearSchedule,
    is_vectorized_observation,
    polyak_update,
    update_learning_rate,
)
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from tempest_gym.hybrid_dqn.buffer import SOURCE_EXPERT, SOURCE_MODEL, SOURCE_NAMES, SOURCE_RANDOM, CompactReplayBuffer
from tempest_gym.hybrid_dqn.codecs import LayoutCodec
from tempest_gym.hybrid_dqn.cuda_graph import GraphedUpdate
from tempest_gym.hybrid_dqn.learner import AsyncLearner, TrainStats, replay_ratio
from tempest_gym.hybrid_dqn.legacy import legacy_policy_state, moved_modules, select_head
from tempest_gym.hybrid_dqn.policies import (
    TARGET_PREFIXES,
    BinnedQPolicy,
    HybridActionSpec,
    HybridQPolicy,
    QPolicy,
    masked_mean,
)
from tempest_gym.hybrid_dqn.schedules import ScheduleLike, parse_schedule

SelfHybridDQN = TypeVar("SelfHybridDQN", bound="HybridDQN")

PARAM_NOISES = ("gaussian", "uniform", "none")


def find_layout(env: VecEnv | None) -> Any:
    """The env's exact observation layout (``TempestVecEnv.layout``) through SB3 wrappers, or None."""
    if env is None:
        return None
    for candidate in (env, getattr(env, "unwrapped", None)):
        layout = getattr(candidate, "layout", None) if candidate is not None else None
        if layout is not None:
            return layout
    try:
        values = env.get_attr("layout")
    except Exception:  # noqa: BLE001 - generic envs simply have none
        return None
    return values[0] if values else None


class HybridDQN(OffPolicyAlgorithm):
    """DQN for hybrid actions encoded as ``Box([c_lo, p_lo], [c_hi, p_hi])`` (see ``tempest_gym.hybrid_dqn.policies``).

    :param policy: the head: ``"MlpPolicy"`` (= ``HybridQPolicy``, the MP-DQN hybrid head) or ``"BinnedMlpPolicy"``
        (= ``BinnedQPolicy``, ``spinner_bins`` values); ``policy_kwargs`` go to it: ``net_arch``, ``actor_arch``,
        ``param_classes``, ``spinner_bins``, ``activation_fn``, ``actor_lr_scale``, ... (``spinner_bins`` with the
        hybrid alias also selects the binned head: that is how it was chosen before the heads were two classes)
    :param env: the environment (any SB3 VecEnv or gymnasium env with that action space)
    :param learning_rate: learning rate: a float, a schedule (callable of progress remaining) or a string such
        as ``"lin_3e-4"`` (see ``schedules.py``)
    :param buffer_size: replay capacity in transitions, all envs together
    :param learning_starts: env steps (transitions) before learning; before that non-expert actions are random
    :param batch_size: minibatch size
    :param tau: target update coefficient: 1 = hard copy every ``target_update_interval`` updates, < 1 =
        Polyak averaging at that interval (use ``target_update_interval=1`` for the usual soft update)
    :param gamma: discount factor
    :param train_freq: env steps between training rounds (synchronous mode), as in SB3
    :param gradient_steps: gradient steps per training round (-1: as many as env transitions collected)
    :param replay_buffer_class: a ``CompactReplayBuffer`` subclass (default ``CompactReplayBuffer``)
    :param replay_buffer_kwargs: its extra arguments (``obs_codec``, ``boundary_size``, ``layout``, ...)
    :param n_steps: n of the n-step return
    :param target_update_interval: **gradient updates** between target updates. Unlike SB3's DQN (env steps),
        because with the background learner the number of updates per env step varies. SB3 DQN's value in
        env steps corresponds to ``target_update_interval * train_freq * n_envs / gradient_steps`` here.
    :param exploration_fraction: fraction of training over which epsilon decays (if no ``exploration_schedule``)
    :param exploration_initial_eps: initial epsilon
    :param exploration_final_eps: final epsilon
    :param exploration_schedule: optional schedule (float, callable or "lin_..." string) replacing the three above
    :param expert_ratio: probability of taking the expert's action (float, callable or "lin_A_B[_F]" string)
    :param param_noise: noise added to the model's parameter on random-choice steps: "gaussian", "uniform", "none"
    :param param_noise_scale: its scale as a fraction of the parameter half-range (std for gaussian,
        half-width for uniform)
    :param demo_loss_coef: weight of the demonstration loss on expert transitions (schedule; 0 disables)
    :param demo_margin: DQfD margin of the large-margin loss (in reward units)
    :param demo_param_coef: weight of the parameter regression toward the expert's (hybrid head), relative to
        ``demo_loss_coef``; the error is measured in half-ranges
    :param demo_on_labels: apply the demonstration losses to every transition the expert labelled (its action
        for the observation, stored with each transition, DAgger-style), not only to expert-driven ones
    :param actor_q_coef: categorical parameter network (``param_classes``): weight of moving its mode toward
        the candidate value the Q-network prefers (0: imitation only)
    :param actor_candidates: how many of the actor's most likely values the Q-network scores for that
    :param pretrain_steps: gradient updates run at once when ``learning_starts`` is reached (demonstrations
        first, as in DQfD); the emulators wait meanwhile
    :param final_steps: gradient updates run at the end of ``learn`` on everything collected (emulators wait)
    :param weight_average: decay of an exponential moving average of the online weights, stepped after every
        update (0: off; 0.9995 averages about the last 2,000 updates); ``averaged_weights()`` swaps it in, and
        ``train`` saves it beside the final model as ``<env>_averaged.zip`` (weights only)
    :param sync_threads: torch threads whenever the emulators wait for the learner (synchronous training
        rounds, pre-training, final updates), when the cores are the learner's (None: ``torch_num_threads``)
    :param bf16: run the forward passes of the updates under CPU/GPU bfloat16 autocast (faster matrix
        multiplies; losses and optimiser state stay float32)
    :param cuda_graph: on a GPU, record the update as a CUDA graph and replay it (``cuda_graph.py``: the update is
        launch-bound there); no effect on a CPU
    :param double_q: double-Q targets (online network chooses, target network evaluates)
    :param max_grad_norm: gradient clipping norm
    :param async_learner: train in a background thread while the env steps (see ``learner.py``)
    :param max_replay_ratio: cap on gradient updates per env transition in async mode (default: the synchronous
        ratio ``gradient_steps / (train_freq * n_envs)``)
    :param policy_sync_interval: async mode: updates between publications of the acting weights
    :param torch_num_threads: ``torch.set_num_threads`` value (None: leave torch's default). Small by default
        because the emulators need the CPU (measured 7x faster training with 1 thread next to them)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: tensorboard log directory
    :param policy_kwargs: policy arguments
    :param verbose: verbosity
    :param seed: seed
    :param device: torch device ("auto": CUDA when available)
    :param _init_setup_model: build the networks now
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": HybridQPolicy,
        "HybridQPolicy": HybridQPolicy,
        "BinnedMlpPolicy": BinnedQPolicy,
        "BinnedQPolicy": BinnedQPolicy,
    }
    policy: QPolicy
    replay_buffer: CompactReplayBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[QPolicy],
        env: GymEnv | str,
        learning_rate: float | str | Schedule = 1e-4,
        buffer_size: int = 2_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[CompactReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        n_steps: int = 3,
        target_update_interval: int = 2_500,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.02,
        exploration_schedule: ScheduleLike | None = None,
        expert_ratio: ScheduleLike = "lin_0.5_0.02",
        param_noise: str = "gaussian",
        param_noise_scale: float = 0.2,
        demo_loss_coef: ScheduleLike = 1.0,
        demo_margin: float = 0.8,
        demo_param_coef: float = 1.0,
        demo_on_labels: bool = False,
        actor_q_coef: float = 0.0,
        actor_candidates: int = 3,
        pretrain_steps: int = 0,
        final_steps: int = 0,
        weight_average: float = 0.0,
        sync_threads: int | None = None,
        bf16: bool = False,
        cuda_graph: bool = True,
        double_q: bool = True,
        max_grad_norm: float = 10.0,
        async_learner: bool = False,
        max_replay_ratio: float | None = None,
        policy_sync_interval: int = 10,
        torch_num_threads: int | None = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=None,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=False,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        if param_noise not in PARAM_NOISES:
            raise ValueError(f"param_noise must be one of {PARAM_NOISES}, got {param_noise!r}")
        if target_update_interval < 1:
            raise ValueError(f"target_update_interval must be >= 1, got {target_update_interval}")
        self.target_update_interval = int(target_update_interval)
        self.exploration_fraction = exploration_fraction
        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.exploration_schedule_spec = exploration_schedule
        self.expert_ratio = expert_ratio
        self.param_noise = param_noise
        self.param_noise_scale = float(param_noise_scale)
        self.demo_loss_coef = demo_loss_coef
        self.demo_margin = float(demo_margin)
        self.demo_param_coef = float(demo_param_coef)
        self.demo_on_labels = bool(demo_on_labels)
        self.actor_q_coef = float(actor_q_coef)
        self.actor_candidates = int(actor_candidates)
        self.pretrain_steps = int(pretrain_steps)
        self.final_steps = int(final_steps)
        if not 0.0 <= weight_average < 1.0:
            raise ValueError(f"weight_average is a decay in [0, 1), got {weight_average}")
        self.weight_average = float(weight_average)
        self._average: list[th.Tensor] | None = None  # the online weights' moving average (weight_average > 0)
        self.sync_threads = sync_threads
        self.bf16 = bool(bf16)
        self.cuda_graph = bool(cuda_graph)
        self._graphed: GraphedUpdate | None = None  # built at the first update on a GPU
        self._pretrained = False
        self._weights_only = False  # set only while save_weights() writes
        self.double_q = bool(double_q)
        self.max_grad_norm = float(max_grad_norm)
        self.async_learner = bool(async_learner)
        self.max_replay_ratio = max_replay_ratio
        self.policy_sync_interval = int(policy_sync_interval)
        self.torch_num_threads = torch_num_threads
        # current schedule values (set in _setup_model and _on_step)
        self.exploration_rate = 0.0
        self.current_expert_ratio = 0.0
        self.current_demo_coef = 0.0
        self._n_calls = 0
        self._rng: np.random.Generator | None = None
        # per-step bookkeeping; runtime objects below are not saved
        self.source_totals = np.zeros(3, dtype=np.int64)  # commanded actions by source, all time
        self._window_sources = np.zeros(3, dtype=np.int64)  # since the last log dump
        self._window_stored = 0
        self._stats = TrainStats()
        self._learner: AsyncLearner | None = None  # while learn() runs with async_learner
        self._last_sources = np.zeros(0, dtype=np.uint8)  # who chose the actions of the step being taken
        # while learning on a TempestVecEnv: the env that labels after the reply, and its setting before learn()
        self._labels_env: Any = None
        self._labels_env_was: bool | None = None
        self._latencies: deque[float] = deque(maxlen=2000)  # seconds per batched inference call
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        """SB3's (learning rate, seed, replay buffer, policy, train frequency), with the compact n-step buffer built
        first from this algorithm's arguments (SB3 keeps a buffer that exists), then the schedules."""
        if self.torch_num_threads is not None:
            th.set_num_threads(int(self.torch_num_threads))
        self.spec = HybridActionSpec.from_space(self.action_space)
        self.policy_class, self.policy_kwargs = select_head(self.policy_class, self.policy_kwargs)
        if self.replay_buffer_class is None:
            self.replay_buffer_class = CompactReplayBuffer
        if not issubclass(self.replay_buffer_class, CompactReplayBuffer):
            raise ValueError(f"HybridDQN needs a CompactReplayBuffer, got {self.replay_buffer_class.__name__}")
        if self.replay_buffer is None:
            self._setup_replay_buffer()
        with warnings.catch_warnings():  # "n_steps is ignored with a custom replay buffer": ours takes n_steps
            warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored")
            super()._setup_model()
        self._graphed = None
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        if self.exploration_schedule_spec is None:
            self.exploration_schedule: Schedule = LinearSchedule(
                self.exploration_initial_eps, self.exploration_final_eps, self.exploration_fraction
            )
        else:
            self.exploration_schedule = parse_schedule(self.exploration_schedule_spec)
        self.expert_ratio_schedule = parse_schedule(self.expert_ratio)
        self.demo_loss_schedule = parse_schedule(self.demo_loss_coef)
        self._update_schedules()
        self._expert_actions = np.zeros((self.n_envs, 2), dtype=np.float32)
        self._expert_valid = np.zeros(self.n_envs, dtype=bool)

    def _setup_lr_schedule(self) -> None:
        """SB3's, also taking the schedule strings (``"lin_3e-4"``) documented for every schedule here."""
        self.lr_schedule = parse_schedule(self.learning_rate)

    def _setup_replay_buffer(self) -> None:
        assert self.replay_buffer_class is not None
        kwargs = dict(self.replay_buffer_kwargs)
        kwargs.setdefault("n_steps", self.n_steps)
        kwargs.setdefault("gamma", self.gamma)
        kwargs.setdefault("seed", None if self.seed is None else self.seed + 1)
        if "layout" not in kwargs:
            kwargs["layout"] = find_layout(self.env)
        self.replay_buffer = self.replay_buffer_class(
            self.buffer_size,
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            **kwargs,
        )

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env``, plus: the newest stored transitions become gaps (the env changed), and an empty
        replay buffer is rebuilt when the new env offers an exact layout it was not built with (a model loaded
        without env gets a float16 buffer; ``set_env(tempest_env)`` switches it to the uint8 layout codes).
        """
        super().set_env(env, force_reset)
        buf = self.replay_buffer
        layout = find_layout(self.env)
        if buf is not None and buf.size() == 0 and layout is not None and not isinstance(buf.codec, LayoutCodec):
            self.replay_buffer = None
            self._setup_replay_buffer()
        elif buf is not None:
            buf.close_open_transitions(self.n_envs)
        self._expert_actions = np.zeros((self.n_envs, 2), dtype=np.float32)
        self._expert_valid = np.zeros(self.n_envs, dtype=bool)

    def set_random_seed(self, seed: int | None = None) -> None:
        super().set_random_seed(seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def _update_schedules(self) -> None:
        p = self._current_progress_remaining
        self.exploration_rate = float(self.exploration_schedule(p))
        self.current_expert_ratio = float(self.expert_ratio_schedule(p))
        self.current_demo_coef = float(self.demo_loss_schedule(p))

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        env_reset = reset_num_timesteps or self._last_obs is None
        if env_reset and self.replay_buffer is not None:
            # the env restarts: the newest stored transitions no longer lead to the next observations
            self.replay_buffer.close_open_transitions(self.n_envs)
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        self._use_labels_after_reply()
        if env_reset:
            self._expert_valid[:] = False
            reset_infos = self._reset_infos()
            for i, info in enumerate(reset_infos[: self.n_envs]):
                self._read_expert(i, info)
        if self._labels_env is not None:
            self._expert_valid[:] = True  # the env labels every observation (when asked, or after the reply)
        self._update_schedules()
        if self.async_learner:
            self._start_learner()
        return result

    def _use_labels_after_reply(self) -> None:
        """A TempestVecEnv with an expert computes its labels after the reply while this learns: only the envs the
        expert drives get theirs before the actions go out (:meth:`_select_actions` asks for them), the others'
        come with the next step (:meth:`_store_step` reads them). What is stored is the same either way."""
        env = self.env.unwrapped if self.env is not None else None
        if getattr(env, "expert", None) is None or not hasattr(env, "expert_after_reply"):
            self._labels_env = None
            return
        if self._labels_env_was is None:
            self._labels_env_was = env.expert_after_reply
        env.expert_after_reply = True
        self._labels_env = env

    def _restore_labels_env(self) -> None:
        env, was = self._labels_env, self._labels_env_was
        self._labels_env, self._labels_env_was = None, None
        if env is not None and was is not None:
            env.expert_after_reply = was

    def _reset_infos(self) -> list[dict[str, Any]]:
        # SB3 wrappers (VecMonitor, ...) do not pass reset_infos through: read the innermost VecEnv's
        env = self.env.unwrapped if self.env is not None else None
        return list(getattr(env, "reset_infos", None) or [])

    def _read_expert(self, i: int, info: dict[str, Any]) -> None:
        action = info.get("expert_action")
        self._expert_valid[i] = action is not None
        if action is not None:
            self._expert_actions[i] = np.asarray(action, dtype=np.float32).reshape(2)

    # ------------------------------------------------------------------ acting
    @property
    def acting_policy(self) -> QPolicy | None:
        """The background learner's acting copy of the policy (None without a running learner)."""
        return self._learner.acting if self._learner is not None else None

    def _acting(self) -> QPolicy:
        return self._learner.acting if self._learner is not None else self.policy

    def _model_actions(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy choice (n,) and per-choice parameters (n, K) of the acting policy."""
        t0 = time.perf_counter()
        out = self._acting().act_numpy(obs)
        self._latencies.append(time.perf_counter() - t0)
        return out

    def _param_noise(self, size: int) -> np.ndarray:
        assert self._rng is not None
        scale = self.param_noise_scale * self.spec.param_half_range
        if self.param_noise == "gaussian":
            return self._rng.normal(0.0, scale, size)
        if self.param_noise == "uniform":
            return self._rng.uniform(-scale, scale, size)
        return np.zeros(size)

    def _select_actions(self, obs: np.ndarray, learning_starts: int) -> tuple[np.ndarray, np.ndarray]:
        """Actions (n, 2) in the Box encoding and their sources (n,) for the current observations."""
        assert self._rng is not None
        n, spec, rng = len(obs), self.spec, self._rng
        warmup = self.num_timesteps < learning_starts
        use_expert = (rng.random(n) < self.current_expert_ratio) & self._expert_valid[:n]
        eps = 1.0 if warmup else self.exploration_rate
        use_random = ~use_expert & (rng.random(n) < eps)
        use_model = ~use_expert & ~use_random
        random_choice = rng.integers(0, spec.n_choices, n)
        choices = np.zeros(n, dtype=np.int64)
        params = np.zeros(n, dtype=np.float32)
        if use_model.any() or (use_random.any() and not warmup):
            greedy, per_choice = self._model_actions(obs)
            choices[use_model] = greedy[use_model]
            params[use_model] = per_choice[use_model, greedy[use_model]]
        if use_random.any():
            r = np.flatnonzero(use_random)
            choices[r] = random_choice[r]
            if warmup:
                p = rng.uniform(spec.param_low, spec.param_high, len(r))
            else:
                p = per_choice[r, random_choice[r]] + self._param_noise(len(r))
            params[r] = self._acting().snap_params(np.clip(p, spec.param_low, spec.param_high).astype(np.float32))
        actions = spec.encode(choices, params)
        if self._labels_env is not None:
            if use_expert.any():  # computed now for these envs only; the others' labels come after the reply
                actions[use_expert] = self._labels_env.expert_actions(np.flatnonzero(use_expert))
        else:
            actions[use_expert] = self._expert_actions[:n][use_expert]
        sources = np.full(n, SOURCE_MODEL, dtype=np.uint8)
        sources[use_random] = SOURCE_RANDOM
        sources[use_expert] = SOURCE_EXPERT
        return actions, sources

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Greedy actions in the Box encoding; with ``deterministic=False``, epsilon-random ones as in SB3's DQN.

        The random action is training's: a uniformly random choice with the model's parameter for that choice
        plus ``param_noise``, drawn from the model's seeded generator (``seed``), never numpy's global one.
        """
        policy = self._acting()
        if deterministic or self.exploration_rate <= 0:
            return policy.predict(observation, state, episode_start, deterministic=True)
        assert self._rng is not None
        spec, rng = self.spec, self._rng
        vectorized = is_vectorized_observation(observation, policy.observation_space)
        greedy, per_choice = policy.act_numpy(observation)
        n = len(greedy)
        choices = greedy.astype(np.int64)
        params = per_choice[np.arange(n), choices].astype(np.float32)
        r = np.flatnonzero(rng.random(n) < self.exploration_rate)
        if len(r):
            choices[r] = rng.integers(0, spec.n_choices, len(r))
            p = per_choice[r, choices[r]] + self._param_noise(len(r))
            params[r] = policy.snap_params(np.clip(p, spec.param_low, spec.param_high).astype(np.float32))
        actions = spec.encode(choices, params)
        return (actions if vectorized else actions[0]), state

    # ------------------------------------------------------------------ collecting
    # SB3's collect_rollouts runs unchanged; these two hooks are where HybridDQN differs from it
    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Who acts this step (see the module doc): the expert, random or the model; the sources are kept for
        :meth:`_store_transition`. The acting weights are brought up to date with the background learner first."""
        if self._learner is not None:
            self._learner.sync()
        assert self._last_obs is not None
        actions, self._last_sources = self._select_actions(self._last_obs, learning_starts)  # type: ignore[arg-type]
        return actions, actions

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store what really ran, with its source and the expert's label (:meth:`_store_step`); tell the learner."""
        self._store_step(replay_buffer, buffer_action, self._last_sources, new_obs, reward, dones, infos)  # type: ignore[arg-type]
        if self._learner is not None:
            self._learner.notify()

    def _store_step(
        self,
        replay_buffer: CompactReplayBuffer,
        actions: np.ndarray,
        sources: np.ndarray,
        new_obs: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store the in-control transitions with their executed actions and the expert's labels (uncontrolled
        ticks join the env's newest transition in the buffer); read the next expert actions."""
        if self._vec_normalize_env is not None:
            new_obs_ = self._vec_normalize_env.get_original_obs()
            reward_ = self._vec_normalize_env.get_original_reward()
        else:
            self._last_original_obs, new_obs_, reward_ = self._last_obs, new_obs, rewards
        next_obs = np.array(new_obs_, copy=True)
        n = len(infos)
        truncated = np.zeros(n, dtype=bool)
        store = np.ones(n, dtype=bool)
        executed = np.array(actions, dtype=np.float32, copy=True)
        # the expert's label for the observation these actions answered (whoever acted), before the new infos
        # replace it with the one for the next observation
        labels_env = self._labels_env
        if labels_env is not None:
            # labelled after the actions went out, while the emulators ran (the env's newest step did it)
            expert_actions = np.asarray(labels_env.previous_expert_actions[:n], dtype=np.float32)
            expert_valid = self._expert_valid[:n].copy()
        else:
            expert_actions = self._expert_actions[:n].copy()
            expert_valid = self._expert_valid[:n].copy()
        reset_infos: list[dict[str, Any]] | None = None
        for i, info in enumerate(infos):
            store[i] = bool(info.get("agent_in_control", True))
            if info.get("executed_action") is not None:
                executed[i] = np.asarray(info["executed_action"], dtype=np.float32).reshape(2)
            expert_info = info
            if dones[i]:
                truncated[i] = bool(info.get("TimeLimit.truncated", False))
                terminal = info.get("terminal_observation")
                if terminal is not None:
                    # an auto-resetting VecEnv (DummyVecEnv, ...) returns the reset observation in new_obs and its
                    # infos (with its expert action) in reset_infos; Tempest does not reset, obs is the death tick
                    if not np.array_equal(terminal, new_obs[i]):
                        reset_infos = self._reset_infos() if reset_infos is None else reset_infos
                        expert_info = reset_infos[i] if i < len(reset_infos) else {}
                    if self._vec_normalize_env is not None:
                        terminal = self._vec_normalize_env.unnormalize_obs(terminal)
                    next_obs[i] = terminal
            if labels_env is None:
                self._read_expert(i, expert_info)
        if labels_env is not None:
            self._expert_valid[:n] = True  # every new observation has a label coming
        dones = np.asarray(dones, dtype=bool)
        replay_buffer.add_step(
            self._last_original_obs,
            next_obs,
            executed,
            reward_,
            dones & ~truncated,
            truncated,
            store,
            sources,
            expert_actions=expert_actions,
            expert_valid=expert_valid,
        )
        counts = np.bincount(sources, minlength=3)
        self.source_totals += counts
        self._window_sources += counts
        self._window_stored += int(store.sum())
        self._last_obs = new_obs
        if self._vec_normalize_env is not None:
            self._last_original_obs = new_obs_

    def _on_step(self) -> None:
        """Update the schedules (exploration, expert ratio, demo weight) after each env step."""
        self._n_calls += 1
        self._update_schedules()
        self.logger.record("rollout/exploration_rate", self.exploration_rate)
        self.logger.record("rollout/expert_ratio", self.current_expert_ratio)
        if self._learner is not None:
            # how many updates behind the learner the weights that just acted were
            self.logger.record_mean("learner/policy_lag", self._learner.policy_lag)

    def dump_logs(self) -> None:
        total = int(self._window_sources.sum())
        if total:
            for name, count in zip(SOURCE_NAMES, self._window_sources, strict=True):
                self.logger.record(f"rollout/{name}_frac", count / total)
            self.logger.record("rollout/stored_frac", self._window_stored / total)
        self._stats.flush(self.logger)
        if self._learner is not None:
            # train() logs it in synchronous mode; the learner thread applies the schedule at the same progress
            self.logger.record("train/learning_rate", float(self.lr_schedule(self._current_progress_remaining)))
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
            self._learner.record(self.logger)
        self.logger.record("replay/size", self.replay_buffer.size())
        if self._latencies:
            lat = np.array(self._latencies) * 1000.0
            self.logger.record("rollout/inference_ms_p50", float(np.percentile(lat, 50)))
            self.logger.record("rollout/inference_ms_p99", float(np.percentile(lat, 99)))
            self._latencies.clear()
        if self.replay_buffer.lost_count:
            self.logger.record("replay/lost", self.replay_buffer.lost_count)
        super().dump_logs()
        self._window_sources[:] = 0
        self._window_stored = 0

    # ------------------------------------------------------------------ training
    def _apply_learning_rate(self) -> float:
        lr = float(self.lr_schedule(self._current_progress_remaining))
        update_learning_rate(self.policy.optimizer, lr)
        if self.policy.actor_optimizer is not None:
            update_learning_rate(self.policy.actor_optimizer, lr * self.policy.actor_lr_scale)
        return lr

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """SB3 calls this between rollouts once ``learning_starts`` is reached. The first call runs the pre-training
        (``pretrain_steps``); then ``gradient_steps`` updates, unless the background learner trains meanwhile."""
        if not self._pretrained:
            self._pretrained = True
            self.offline_updates(self.pretrain_steps, "pre-training")
        if self._learner is not None:
            return
        with self._sync_threads():
            self.policy.set_training_mode(True)
            self.logger.record("train/learning_rate", self._apply_learning_rate())
            for _ in range(gradient_steps):
                self._gradient_step(batch_size)
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
            self._stats.flush(self.logger)

    def _autocast(self) -> Any:
        if not self.bf16:
            return nullcontext()
        # a CUDA graph records no autocast cache (PyTorch's CUDA-graph notes ask for cache_enabled=False)
        capturing = self.device.type == "cuda" and th.cuda.is_current_stream_capturing()
        return th.autocast(device_type=self.device.type, dtype=th.bfloat16, cache_enabled=not capturing)

    def _labels(self, data: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Rows with a demonstration label, and the label: (mask, choice, parameter).

        With ``demo_on_labels`` every transition the expert labelled counts (it labels every observation, also
        the ones the model drove); otherwise only the expert-driven ones, labelled by what they executed.
        """
        if self.demo_on_labels and getattr(data, "expert_choices", None) is not None:
            mask = data.expert_choices >= 0
            return mask, data.expert_choices.clamp(min=0), data.expert_params
        return data.sources == SOURCE_EXPERT, data.choices, data.params

    def _gradient_step(self, batch_size: int) -> None:
        """One update on a fresh sample (replayed as a CUDA graph on a GPU, see ``cuda_graph.py``), then the
        bookkeeping: update count, target networks, statistics."""
        data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
        graphed = self._graphed_update()
        if graphed is None:
            stats = self._update(data)
        else:
            lrs = tuple(g["lr"] for opt in graphed.optimizers for g in opt.param_groups)
            stats = graphed(data, key=(batch_size, self.current_demo_coef, lrs))
        self._n_updates += 1
        self._update_average()
        if self._n_updates % self.target_update_interval == 0:
            self._update_targets()
        self._stats.add(stats)

    def _graphed_update(self) -> GraphedUpdate | None:
        """The update as a CUDA graph when ``cuda_graph`` is on and the model lives on a GPU (built once)."""
        if not self.cuda_graph or self.device.type != "cuda":
            return None
        if self._graphed is None:
            optimizers = [self.policy.optimizer]
            if self.policy.actor_optimizer is not None:
                optimizers.append(self.policy.actor_optimizer)
            self._graphed = GraphedUpdate(self._update, optimizers)
        return self._graphed

    def _update(self, data: Any) -> dict[str, th.Tensor]:
        """Losses, backward pass and optimiser steps of one update; returns its statistics (0-d tensors).

        TD (Huber, n-step, double Q) + demonstration loss, then the actor (hybrid head). No host
        synchronisation and fixed shapes: a CUDA graph can record it.
        """
        policy = self.policy
        obs, choice, param = data.observations, data.choices, data.params
        demo_coef = self.current_demo_coef
        demo_mask, demo_choice, demo_param = self._labels(data)
        if policy.categorical_actor:
            return self._categorical_update(data, demo_coef, demo_mask, demo_choice, demo_param)
        with self._autocast():
            with th.no_grad():
                next_v = policy.bootstrap_values(data.next_observations, self.double_q).float()
                target = data.rewards[:, 0] + (1.0 - data.dones[:, 0]) * data.discounts[:, 0] * next_v
            q = policy.q_taken(obs, choice, param).float()
            td_loss = F.smooth_l1_loss(q, target)
            loss = td_loss
            stats: dict[str, Any] = {"loss": td_loss.detach(), "q_mean": q.detach().mean(), "q_std": q.detach().std()}
            # a CUDA graph needs fixed shapes: every row, weighed by the mask; eagerly only the labelled rows,
            # which costs a quarter of that when a quarter is labelled (hybrid_dqn.yml: -20% updates/s on a CPU)
            if demo_coef > 0 and (self._graphed is not None or bool(demo_mask.any())):
                rows = slice(None) if self._graphed is not None else demo_mask.nonzero().squeeze(1)
                o, c, p = obs[rows], demo_choice[rows], demo_param[rows]
                q_demo = policy.q_taken(o, c, p).float() if self.demo_on_labels else q[rows]
                margin = policy.large_margin_loss(o, c, p, q_demo, self.demo_margin).float()
                margin = masked_mean(margin, demo_mask[rows])
                loss = loss + demo_coef * margin
                stats["demo_margin_loss"] = margin.detach()
        policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.q_net.parameters(), self.max_grad_norm)
        policy.optimizer.step()
        if policy.actor is not None:
            assert isinstance(policy, HybridQPolicy) and policy.actor_optimizer is not None
            # the actor's gradient goes through Q; Q's own weights need no gradient here
            policy.q_net.requires_grad_(False)
            try:
                with self._autocast():  # the categorical actor never gets here (_categorical_update)
                    actor_loss, q_actor, demo_param_loss = policy.actor_loss(
                        obs, demo_mask.float(), demo_choice, demo_param, demo_coef * self.demo_param_coef
                    )
                    stats["actor_q"] = q_actor
                    if "demo_margin_loss" in stats:
                        stats["demo_param_loss"] = demo_param_loss
                policy.actor_optimizer.zero_grad()
                actor_loss.float().backward()
            finally:
                policy.q_net.requires_grad_(True)
            th.nn.utils.clip_grad_norm_(policy.actor.parameters(), self.max_grad_norm)
            policy.actor_optimizer.step()
        stats["demo_frac"] = demo_mask.float().mean()
        return stats

    def _categorical_update(self, data: Any, demo_coef: float, demo_mask: th.Tensor, demo_choice: th.Tensor,
                            demo_param: th.Tensor) -> dict[str, th.Tensor]:
        """The hybrid head with a categorical parameter network: one graph, one backward, both optimisers."""
        policy = self.policy
        assert isinstance(policy, HybridQPolicy)
        assert policy.actor is not None and policy.actor_optimizer is not None

        def td_target(next_v: th.Tensor) -> th.Tensor:
            return data.rewards[:, 0] + (1.0 - data.dones[:, 0]) * data.discounts[:, 0] * next_v

        with self._autocast():
            loss, stats = policy.categorical_update_losses(
                data.observations, data.next_observations, data.choices, data.params, td_target,
                demo_mask, demo_choice, demo_param, self.demo_margin, demo_coef, demo_coef * self.demo_param_coef,
                self.actor_q_coef, self.actor_candidates, self.double_q,
            )
        policy.optimizer.zero_grad()
        policy.actor_optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.q_net.parameters(), self.max_grad_norm)
        th.nn.utils.clip_grad_norm_(policy.actor.parameters(), self.max_grad_norm)
        policy.optimizer.step()
        policy.actor_optimizer.step()
        stats["demo_frac"] = demo_mask.float().mean()
        return stats

    # ------------------------------------------------------------------ weight averaging
    def _online_parameters(self) -> list[th.Tensor]:
        """The parameters acting uses: the policy's, without the target networks (copies)."""
        return [p for name, p in self.policy.named_parameters() if not name.startswith(TARGET_PREFIXES)]

    def _update_average(self) -> None:
        """One step of the exponential moving average of the online weights (``weight_average`` is its decay).

        The last updates of a run at a constant learning rate leave the weights swinging around what the data
        supports; their average is a steadier policy to release (Polyak averaging, SWA). It starts from the
        weights of the first update after a start or a load; it is not saved in checkpoints.
        """
        if self.weight_average <= 0.0:
            return
        with th.no_grad():
            online = self._online_parameters()
            if self._average is None:
                self._average = [p.detach().clone() for p in online]
            else:
                polyak_update(online, self._average, 1.0 - self.weight_average)  # SB3's, as for the targets

    @property
    def has_average(self) -> bool:
        return self._average is not None

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The averaged weights in the policy for the duration (e.g. to save or evaluate them), then back."""
        if self._average is None:
            raise RuntimeError("no averaged weights: weight_average is 0 or no update has run yet")
        online = self._online_parameters()
        with self._learner.pause() if self._learner is not None else nullcontext(), th.no_grad():
            kept = [p.detach().clone() for p in online]
            th._foreach_copy_(online, self._average)
            try:
                yield
            finally:
                th._foreach_copy_(online, kept)

    def _update_targets(self) -> None:
        for online, target in self.policy.target_pairs():
            polyak_update(online.parameters(), target.parameters(), self.tau)
            with th.no_grad():  # buffers are copied (integer ones too: polyak_update cannot scale those)
                for src, dst in zip(online.buffers(), target.buffers(), strict=True):
                    dst.copy_(src)

    # ------------------------------------------------------------------ background learner
    def _start_learner(self) -> None:
        assert isinstance(self.train_freq, TrainFreq)
        ratio = replay_ratio(self.max_replay_ratio, self.train_freq, self.n_envs, self.gradient_steps)
        start = max(self.learning_starts, self._num_timesteps_at_start)

        def allowed_updates() -> int:  # the replay-ratio cap, for this learn() call
            if self.num_timesteps <= start or self.replay_buffer.size() == 0:
                return 0
            return int(ratio * (self.num_timesteps - start))

        def step() -> None:
            self._apply_learning_rate()
            self._gradient_step(self.batch_size)

        self._latencies = deque(maxlen=2000)
        self._learner = AsyncLearner(self.policy, step, allowed_updates, lambda: self._n_updates,
                                     self.policy_sync_interval)  # fmt: skip
        self._learner.start()

    def _stop_learner(self, raise_error: bool) -> None:
        learner, self._learner = self._learner, None
        if learner is not None:
            learner.stop(raise_error)

    def learn(
        self: SelfHybridDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "HybridDQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfHybridDQN:
        """SB3's ``learn``. With ``async_learner`` the updates run in a background thread while it runs (started by
        ``_setup_learn``, stopped when the loop ends, its error raised here); then ``final_steps`` updates."""
        try:
            super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
            self._stop_learner(raise_error=True)
        finally:
            self._stop_learner(raise_error=False)  # after an error: stop it all the same
            self._restore_labels_env()
        if self.num_timesteps > self.learning_starts:
            self.offline_updates(self.final_steps, "final updates")
        return self

    @contextmanager
    def _sync_threads(self) -> Iterator[None]:
        """Torch threads for updates the emulators wait for (all the cores are the learner's then)."""
        if self.sync_threads is None:
            yield
            return
        before = th.get_num_threads()
        th.set_num_threads(int(self.sync_threads))
        try:
            yield
        finally:
            th.set_num_threads(before)

    def offline_updates(self, steps: int, what: str = "offline updates") -> None:
        """``steps`` gradient updates on the replay buffer now, while the env waits (pre-training, final updates).

        The background learner, if any, is paused meanwhile. Progress is printed every 2,000 updates (verbose)
        and the losses are logged as usual.
        """
        if steps <= 0 or self.replay_buffer.size() == 0:
            return
        t0 = time.perf_counter()
        if self.verbose:
            print(f"HybridDQN: {what}: {steps:,} updates on {self.replay_buffer.size():,} transitions", flush=True)
        with self._learner.pause() if self._learner is not None else nullcontext(), self._sync_threads():
            self.policy.set_training_mode(True)
            self.logger.record("train/learning_rate", self._apply_learning_rate())
            for i in range(1, steps + 1):
                self._gradient_step(self.batch_size)
                if i % 2000 == 0 or i == steps:
                    if self.verbose:
                        rate = i / (time.perf_counter() - t0)
                        print(f"HybridDQN: {what}: {i:,}/{steps:,} updates ({rate:.0f}/s)", flush=True)
                    self._stats.flush(self.logger)
                    self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
                    self.logger.dump(step=self.num_timesteps)
            self.policy.set_training_mode(False)
        if self._learner is not None:
            self._learner.publish()

    # ------------------------------------------------------------------ saving
    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_learner", "_last_sources", "_stats", "_latencies",
                "_weights_only", "_labels_env", "_labels_env_was", "_graphed", "_average"]  # fmt: skip

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        if self._weights_only:
            return ["policy"], []
        state_dicts = ["policy", "policy.optimizer"]
        if self.policy.actor_optimizer is not None:
            state_dicts.append("policy.actor_optimizer")
        return state_dicts, []

    def get_parameters(self) -> dict[str, dict]:
        """SB3's ``get_parameters``; for a weights-only save, the online networks only (targets are copies)."""
        params = super().get_parameters()
        # a CUDA-graph run's optimisers are capturable (cuda_graph.py), which a CPU cannot step: saved as plain ones
        for state in params.values():
            for group in state.get("param_groups", []):
                if group.get("capturable"):
                    group["capturable"] = False
        if self._weights_only:
            params["policy"] = {k: v for k, v in params["policy"].items() if not k.startswith(TARGET_PREFIXES)}
        return params

    def save_weights(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Save what acting needs: hyperparameters and the online networks; no optimiser state, no replay.

        A file of this kind loads with ``HybridDQN.load`` like any other (the target networks start as copies
        of the online ones, the optimisers fresh): it is how a trained policy is released (``models/``).
        """
        self._weights_only = True
        try:
            self.save(path)
        finally:
            self._weights_only = False

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, dict],
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """SB3's ``set_parameters``; also takes a weights-only file (:meth:`save_weights`) and an old one's policy."""
        self._graphed = None  # a recording holds the optimisers' old state tensors: record again
        self._average = None  # the average starts again from the loaded weights
        params = load_path_or_dict
        if isinstance(params, dict) and "policy" in params:
            params = {**params, "policy": legacy_policy_state(params["policy"], self.policy.state_dict())}
        if isinstance(params, dict) and "policy" in params and "policy.optimizer" not in params:
            policy = params["policy"]
            if not any(k.startswith(TARGET_PREFIXES) for k in policy):
                full = self.policy.state_dict()
                policy = dict(policy)
                for key in full:
                    if key.startswith(TARGET_PREFIXES):
                        online = key.replace("_target.", ".", 1)
                        if online in policy:
                            policy[key] = policy[online]
            super().set_parameters({"policy": policy}, exact_match=False, device=device)
            missing = set(self.policy.state_dict()) - set(policy)
            if missing:
                raise ValueError(f"weights-only file lacks {sorted(missing)[:5]}...")
            return
        super().set_parameters(params, exact_match, device)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """SB3's ``save``; while the background learner runs, between two of its updates."""
        with self._learner.pause() if self._learner is not None else nullcontext():
            super().save(path, exclude, include)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfHybridDQN],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfHybridDQN:
        """SB3's ``load``; also reads files saved before the package layout changed (see ``legacy.py``)."""
        with moved_modules():
            return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """SB3's ``load_replay_buffer``; the newest transitions of each env become gaps (their env moved on)."""
        with moved_modules():
            super().load_replay_buffer(path, truncate_last_traj)
        assert isinstance(self.replay_buffer, CompactReplayBuffer), "HybridDQN needs a CompactReplayBuffer"
        self.replay_buffer.close_open_transitions(self.n_envs)

"""Q policies for a hybrid action: one discrete choice plus one continuous parameter.

SB3 has no Tuple action space, so the action is encoded as a ``Box`` of shape ``(2,)``: column 0 is the
discrete choice (integer bounds ``low[0]..high[0]``, rounded by the env), column 1 the continuous parameter
in ``[low[1], high[1]]``. For Tempest that is fire/zap (4 choices) and the spinner.

Two heads, two classes with one interface (:class:`QPolicy`), so that they can be compared on the same runs:

* **hybrid** (:class:`HybridQPolicy`, alias ``MlpPolicy``; P-DQN / MP-DQN family): a deterministic *parameter
  network* (actor) proposes one parameter per discrete choice; the Q-network scores every choice with its own
  parameter. Following
  MP-DQN, choice ``k`` sees only parameter ``k`` (the others are masked to zero), so the value of one choice
  cannot leak into another's parameter gradient. The actor is trained to *maximise* Q through the Q-network's
  gradient, never by regressing onto the mean of sampled targets: that regression is what made an earlier
  continuous spinner head "regress to the mean" (averaging a left and a right move into standing still).
  With per-choice parameters and gradient ascent, each parameter climbs to one mode of Q.
* **binned** (:class:`BinnedQPolicy`, alias ``BinnedMlpPolicy``, ``spinner_bins=K``): the parameter is cut into
  ``K`` values and each (choice, bin) pair gets its own Q-value, ``n_choices * K`` outputs in all. Plain (double)
  DQN; no actor.

The algorithm (``tempest_gym.hybrid_dqn.HybridDQN``) only uses :class:`QPolicy`'s interface (:meth:`~QPolicy.act`,
:meth:`~QPolicy.q_taken`, :meth:`~QPolicy.bootstrap_values`, :meth:`~QPolicy.large_margin_loss`) and, when the
head has a parameter network, :meth:`HybridQPolicy.actor_loss` (or the categorical network's joint update).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class HybridActionSpec:
    """What the ``Box((2,))`` action encoding means, read from the env's action space (never hard-coded)."""

    n_choices: int
    choice_low: int
    param_low: float
    param_high: float

    @classmethod
    def from_space(cls, space: spaces.Space) -> HybridActionSpec:
        if not isinstance(space, spaces.Box) or space.shape != (2,):
            raise ValueError(f"hybrid actions need a Box of shape (2,) [choice, parameter], got {space}")
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"hybrid action bounds must be finite, got low={low} high={high}")
        if low[0] != np.rint(low[0]) or high[0] != np.rint(high[0]) or high[0] < low[0]:
            raise ValueError(f"the choice column needs integer bounds low <= high, got [{low[0]}, {high[0]}]")
        if not high[1] > low[1]:
            raise ValueError(f"the parameter column needs low < high, got [{low[1]}, {high[1]}]")
        return cls(int(high[0] - low[0]) + 1, int(low[0]), float(low[1]), float(high[1]))

    @property
    def param_center(self) -> float:
        return 0.5 * (self.param_low + self.param_high)

    @property
    def param_half_range(self) -> float:
        return 0.5 * (self.param_high - self.param_low)

    def choices(self, actions: np.ndarray) -> np.ndarray:
        """Box actions (..., 2) -> choice index (...) in ``0..n_choices-1`` (rounded and clipped as the env does)."""
        a = np.asarray(actions, dtype=np.float64)
        return np.clip(np.rint(a[..., 0]) - self.choice_low, 0, self.n_choices - 1).astype(np.int64)

    def params(self, actions: np.ndarray) -> np.ndarray:
        """Box actions (..., 2) -> parameter (...), clipped into range."""
        return np.clip(np.asarray(actions, dtype=np.float32)[..., 1], self.param_low, self.param_high)

    def encode(self, choices: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Choice index and parameter -> Box actions (n, 2) float32."""
        c = np.asarray(choices, dtype=np.float32).reshape(-1) + self.choice_low
        p = np.clip(np.asarray(params, dtype=np.float32).reshape(-1), self.param_low, self.param_high)
        return np.stack([c, p], axis=1).astype(np.float32)


class MPQNetwork(nn.Module):
    """MP-DQN Q-network: ``Q_k(s, x_k)`` for every choice ``k``, each pass seeing only its own parameter.

    MP-DQN feeds ``[features, x * e_k]`` (the parameter vector masked to entry ``k``) through one MLP, once per
    choice, and keeps output ``k`` of pass ``k``. The first layer is linear, so its output for pass ``k`` is
    ``W_s f + b + W_p[:, k] x_k``: the state part is computed once and only the rest of the network runs
    ``n_choices`` times. Same function as MP-DQN, a fraction of the cost.
    """

    def __init__(self, features_dim: int, n_choices: int, net_arch: list[int], activation_fn: type[nn.Module]) -> None:
        super().__init__()
        if len(net_arch) == 0:
            raise ValueError("the hybrid Q-network needs at least one hidden layer (net_arch=[...])")
        self.features_dim = features_dim
        self.n_choices = n_choices
        # one Linear over [features, masked parameters], exactly MP-DQN's input layer (and its init)
        self.input_layer = nn.Linear(features_dim + n_choices, net_arch[0])
        self.body = nn.Sequential(activation_fn(), *create_mlp(net_arch[0], n_choices, net_arch[1:], activation_fn))

    def _state_part(self, features: th.Tensor) -> th.Tensor:
        w = self.input_layer.weight[:, : self.features_dim]
        return F.linear(features, w, self.input_layer.bias)

    def _param_weights(self) -> th.Tensor:
        # contiguous: broadcasting the strided (transposed) slice costs 4x more than copying its 4 x hidden floats
        return self.input_layer.weight[:, self.features_dim :].t().contiguous()  # (n_choices, hidden)

    def forward(self, features: th.Tensor, params: th.Tensor) -> th.Tensor:
        """(B, F), (B, K) -> (B, K): ``Q_k(s, params[:, k])`` for every k."""
        b, k = params.shape
        h = th.addcmul(self._state_part(features)[:, None, :], params[:, :, None], self._param_weights()[None])
        # 2-D through the body: on CPU, Linear on a 3-D input goes through much slower batched kernels
        out = self.body(h.reshape(b * k, -1)).view(b, k, k)  # pass k, output j
        return out.diagonal(dim1=1, dim2=2)

    def forward_choice(self, features: th.Tensor, choice: th.Tensor, param: th.Tensor) -> th.Tensor:
        """(B, F), (B,), (B,) -> (B,): Q of one given (choice, parameter) per row, a single pass."""
        h = self._state_part(features) + param[:, None] * self._param_weights()[choice]
        return self.body(h).gather(1, choice[:, None]).squeeze(1)


class ParamActor(nn.Module):
    """Deterministic parameter network: one parameter per choice, a *linear* output around the range's centre.

    No tanh: a squashed output saturates (its gradient vanishes at the bounds) and the parameters freeze at
    ``low``/``high``, which is what the first version of this head did on the synthetic task. Bounds are kept
    by inverting gradients instead (see :meth:`HybridQPolicy.actor_loss`), and outputs are clamped where used.
    """

    def __init__(
        self,
        features_dim: int,
        n_choices: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        low: float,
        high: float,
    ) -> None:
        super().__init__()
        layers = create_mlp(features_dim, n_choices, net_arch, activation_fn)
        last = [m for m in layers if isinstance(m, nn.Linear)][-1]
        # start near the middle of the range with small, state-dependent differences (DDPG-style init),
        # so that early Q gradients, not the initial weights, decide where each parameter goes
        nn.init.uniform_(last.weight, -3e-3, 3e-3)
        nn.init.zeros_(last.bias)
        self.mu = nn.Sequential(*layers)
        self.register_buffer("center", th.tensor(0.5 * (low + high), dtype=th.float32))
        self.register_buffer("half_range", th.tensor(0.5 * (high - low), dtype=th.float32))

    def forward(self, features: th.Tensor) -> th.Tensor:
        return self.center + self.half_range * self.mu(features)


class CategoricalParamActor(nn.Module):
    """Parameter network as a classifier: per choice, logits over ``n_values`` evenly spaced parameter values.

    The parameter of choice ``k`` is the *mode* of its distribution (the value with the largest logit). Why not
    one regressed value: the expert's spinner stands still on most ticks and moves at full speed otherwise; a
    squared-error regression toward such a target lands between the modes (a slow drift when it should stand
    still), and a deterministic policy gradient through Q is mostly noise for a one-tick spinner move. A
    classifier keeps "stand still" and "move there" as separate values and picks one. For Tempest, 63 values
    over ``[-1, 1]`` are exactly the 63 spinner deltas the game can execute in one tick (``-31..31``).
    """

    def __init__(
        self,
        features_dim: int,
        n_choices: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        low: float,
        high: float,
        n_values: int,
    ) -> None:
        super().__init__()
        if n_values < 2:
            raise ValueError(f"param_classes must be >= 2, got {n_values}")
        self.n_choices, self.n_values = n_choices, n_values
        self.logits_net = nn.Sequential(*create_mlp(features_dim, n_choices * n_values, net_arch, activation_fn))
        self.register_buffer("values", th.linspace(low, high, n_values, dtype=th.float32))

    def logits(self, features: th.Tensor) -> th.Tensor:
        """(B, F) -> (B, K, n_values)."""
        return self.logits_net(features).view(-1, self.n_choices, self.n_values)

    def value_index(self, params: th.Tensor) -> th.Tensor:
        """Index of the nearest value of each parameter (any shape)."""
        mids = 0.5 * (self.values[1:] + self.values[:-1])
        return th.bucketize(params.contiguous(), mids)

    def forward(self, features: th.Tensor) -> th.Tensor:
        """(B, F) -> (B, K): each choice's parameter, the mode of its distribution."""
        return self.values[self.logits(features).argmax(dim=2)]


def masked_mean(values: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Mean of ``values`` over the rows where ``mask`` is true (0 when none is), without a host synchronisation:
    the losses on labelled rows are computed on every row and weighed, so that an update has fixed shapes and
    can be captured as a CUDA graph (``cuda_graph.py``)."""
    mask = mask.bool()
    return th.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1).to(values.dtype)


def not_taken(index: th.Tensor, n: int) -> th.Tensor:
    """(B, n) bool: true everywhere except at each row's ``index`` (the DQfD margin's ``l(a_E, a)``).
    A comparison instead of ``one_hot``, which checks its input's range on the host."""
    return th.arange(n, device=index.device) != index[:, None]


def invert_gradients(grad: th.Tensor, params: th.Tensor, low: float, high: float) -> th.Tensor:
    """Hausknecht & Stone (2016) bounded-parameter gradients, as used by P-DQN and MP-DQN.

    An ascent direction that pushes a parameter up is scaled by ``(high - p) / (high - low)``, one that pushes
    it down by ``(p - low) / (high - low)``: the step shrinks to zero at the bound and reverses beyond it, so
    parameters stay in range without a squashing function whose gradient would vanish there.
    """
    width = high - low
    return grad * th.where(grad > 0, (high - params) / width, (params - low) / width)


class _Net(nn.Module):
    """A features extractor plus a head (each network owns its extractor, as in SB3's DQN and TD3)."""

    def __init__(self, features_extractor: BaseFeaturesExtractor, head: nn.Module) -> None:
        super().__init__()
        self.features_extractor = features_extractor
        self.head = head


#: state_dict prefixes of the networks that act (the background learner publishes them) and of their targets
ONLINE_PREFIXES = ("q_net.", "actor.")
TARGET_PREFIXES = ("q_net_target.", "actor_target.")


class QPolicy(BasePolicy):
    """What both heads share: the action spec, the Q-network with its target and optimiser, acting, SB3's
    ``predict``. A head subclasses it (:class:`HybridQPolicy`, :class:`BinnedQPolicy`) with its networks and the
    head-specific methods the algorithm calls: :meth:`act`, :meth:`snap_params`, :meth:`q_taken`,
    :meth:`bootstrap_values` and :meth:`large_margin_loss`; a head with a parameter network (``actor`` not None)
    adds its ``actor_loss``.

    :param observation_space: observation space
    :param action_space: ``Box`` of shape (2,): integer choice bounds, then the parameter range
    :param lr_schedule: learning rate schedule (``lr_schedule(1)`` is the initial rate)
    :param net_arch: hidden layers of the Q-network (default ``[256, 256]``)
    :param activation_fn: activation function
    :param features_extractor_class: features extractor (one instance per network)
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: SB3's image normalisation switch
    :param optimizer_class: optimizer of every network
    :param optimizer_kwargs: its keyword arguments (without the learning rate)
    """

    #: the hybrid head's parameter network is a classifier (``param_classes``): one joint update for both networks
    categorical_actor = False

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
        )
        self.spec = HybridActionSpec.from_space(action_space)
        self.net_arch = list(net_arch) if net_arch is not None else [256, 256]
        self.activation_fn = activation_fn
        # the parameter network, if the head has one (instance attributes: nn.Module keeps submodules apart)
        self.actor: _Net | None = None
        self.actor_target: _Net | None = None
        self.actor_optimizer: th.optim.Optimizer | None = None

    # ------------------------------------------------------------------ construction
    def _build(self, lr_schedule: Schedule) -> None:
        """The Q-network, its target and its optimiser (a head with a parameter network adds those after)."""
        self.q_net = self.make_q_net()
        self.q_net_target = self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.requires_grad_(False)
        self.q_net_target.train(False)
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.q_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def make_q_net(self) -> _Net:
        raise NotImplementedError

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def set_training_mode(self, mode: bool) -> None:
        actor_mode = mode if self.actor is None else self.actor.training
        if self.training == mode and self.q_net.training == mode and actor_mode == mode:
            return  # already so: no walk over every submodule (SB3's predict asks before each call)
        self.q_net.train(mode)
        if self.actor is not None:
            self.actor.train(mode)
        self.training = mode

    def online_state_dict(self) -> dict[str, th.Tensor]:
        """The weights of the networks that act (what the background learner publishes to the acting copy)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ONLINE_PREFIXES)}

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs for target-network updates."""
        pairs: list[tuple[nn.Module, nn.Module]] = [(self.q_net, self.q_net_target)]
        if self.actor is not None:
            assert self.actor_target is not None
            pairs.append((self.actor, self.actor_target))
        return pairs

    def _features(self, obs: PyTorchObs, net: _Net) -> th.Tensor:
        return self.extract_features(obs, net.features_extractor)

    # ------------------------------------------------------------------ what the algorithm uses
    def act(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Greedy choice (B,) and each choice's parameter (B, K)."""
        raise NotImplementedError

    def snap_params(self, params: np.ndarray) -> np.ndarray:
        """Parameters as the head can express them (identity unless it has a fixed set of values)."""
        return params

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _is_batch(self, observation: Any) -> bool:
        """A batch of Box observations, the shape every env step hands over (the case :meth:`act_numpy` serves)."""
        return (
            isinstance(observation, np.ndarray)
            and isinstance(self.observation_space, spaces.Box)
            and observation.shape[1:] == self.observation_space.shape
        )

    def act_numpy(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`act` on a batch of observations, in numpy: greedy choice (n,) and each choice's parameter (n, K).

        The acting path of every env step. A Box batch becomes one tensor (no copy for float32) and runs under
        ``inference_mode``; SB3's ``obs_to_tensor`` (which also takes dicts and single observations) is used for
        anything else."""
        self.set_training_mode(False)
        if self._is_batch(observation):
            obs_tensor: PyTorchObs = th.as_tensor(observation, device=self.device)
        else:
            obs_tensor, _ = self.obs_to_tensor(observation)
        with th.inference_mode():
            choice, params = self.act(obs_tensor)
        return choice.cpu().numpy(), params.cpu().numpy()

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict`` (greedy: a Q policy has no stochastic mode of its own), with a lean path for a batch.

        For a Box batch the actions come from :meth:`act_numpy` and :meth:`HybridActionSpec.encode`: the same
        actions as SB3's wrapper (whose Box clip has nothing to do: the choice is an index, the parameter already
        in range), without its checks and conversions, which cost a third of the inference on 16 observations.
        """
        if not self._is_batch(observation):
            return super().predict(observation, state, episode_start, deterministic)
        choice, params = self.act_numpy(observation)
        return self.spec.encode(choice, params[np.arange(len(choice)), choice]), state

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        choice, params = self.act(observation)
        param = params.gather(1, choice[:, None]).squeeze(1)
        return th.stack([choice.to(param.dtype) + self.spec.choice_low, param], dim=1)

    def q_taken(self, obs: PyTorchObs, choice: th.Tensor, param: th.Tensor) -> th.Tensor:
        """(B,) online Q of the stored actions."""
        raise NotImplementedError

    def bootstrap_values(self, next_obs: PyTorchObs, double_q: bool = True) -> th.Tensor:
        """(B,) value of the next observations for the TD target (call under ``no_grad``)."""
        raise NotImplementedError

    def large_margin_loss(
        self, obs: PyTorchObs, choice: th.Tensor, param: th.Tensor, q_expert: th.Tensor, margin: float
    ) -> th.Tensor:
        """(B,) DQfD large-margin loss ``max_a [Q(s,a) + l(a_E,a)] - Q(s,a_E)``, ``q_expert = Q(s, a_E)``."""
        raise NotImplementedError


class HybridQPolicy(QPolicy):
    """The hybrid head (P-DQN / MP-DQN): a parameter network proposes one parameter per choice, the Q-network
    scores each choice at its parameter (:class:`MPQNetwork`). Alias ``MlpPolicy``.

    Takes :class:`QPolicy`'s parameters, and:

    :param actor_arch: hidden layers of the parameter network (default: ``net_arch``)
    :param actor_lr_scale: the parameter network's learning rate is ``actor_lr_scale`` times the Q-network's
    :param param_classes: ``None`` for a deterministic regressed parameter per choice (:class:`ParamActor`,
        trained by the deterministic policy gradient); an int ``M`` for a parameter network that classifies among
        ``M`` evenly spaced values (:class:`CategoricalParamActor`, trained by imitation and by moving its mode
        toward the candidate value the Q-network prefers)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        actor_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        actor_lr_scale: float = 1.0,
        param_classes: int | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        self.actor_arch = list(actor_arch) if actor_arch is not None else list(self.net_arch)
        self.actor_lr_scale = float(actor_lr_scale)
        self.param_classes = None if param_classes is None else int(param_classes)
        self._build(lr_schedule)

    @property
    def categorical_actor(self) -> bool:  # type: ignore[override]
        """True when the parameter network is a classifier (``param_classes``)."""
        return self.param_classes is not None

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.actor = self.make_actor()
        self.actor_target = self.make_actor()
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.actor_target.requires_grad_(False)
        self.actor_target.train(False)
        self.actor_optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.actor.parameters(), lr=lr_schedule(1) * self.actor_lr_scale, **self.optimizer_kwargs
        )

    def make_q_net(self) -> _Net:
        fe = self.make_features_extractor()
        return _Net(fe, MPQNetwork(fe.features_dim, self.spec.n_choices, self.net_arch, self.activation_fn)).to(
            self.device
        )

    def make_actor(self) -> _Net:
        fe = self.make_features_extractor()
        s = self.spec
        head: nn.Module
        if self.param_classes is not None:
            head = CategoricalParamActor(
                fe.features_dim, s.n_choices, self.actor_arch, self.activation_fn, s.param_low, s.param_high,
                self.param_classes,
            )
        else:
            head = ParamActor(
                fe.features_dim, s.n_choices, self.actor_arch, self.activation_fn, s.param_low, s.param_high
            )
        return _Net(fe, head).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(actor_arch=self.actor_arch, actor_lr_scale=self.actor_lr_scale, param_classes=self.param_classes)
        return data

    # ------------------------------------------------------------------ building blocks
    def _actor_params(self, obs: PyTorchObs, target: bool = False, clamp: bool = True) -> th.Tensor:
        net = self.actor_target if target else self.actor
        assert net is not None
        params = net.head(self._features(obs, net))
        return params.clamp(self.spec.param_low, self.spec.param_high) if clamp else params

    def _q_all(self, obs: PyTorchObs, params: th.Tensor, target: bool = False) -> th.Tensor:
        """(B, K) Q of each choice at ``params``."""
        net = self.q_net_target if target else self.q_net
        return net.head(self._features(obs, net), params)

    # ------------------------------------------------------------------ what the algorithm uses
    def act(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Greedy choice (B,) and each choice's parameter (B, K): the parameter network's."""
        params = self._actor_params(obs)
        return self._q_all(obs, params).argmax(dim=1), params

    def q_taken(self, obs: PyTorchObs, choice: th.Tensor, param: th.Tensor) -> th.Tensor:
        """(B,) online Q of the stored actions."""
        return self.q_net.head.forward_choice(self._features(obs, self.q_net), choice, param)

    def bootstrap_values(self, next_obs: PyTorchObs, double_q: bool = True) -> th.Tensor:
        """(B,) value of the next observations for the TD target (call under ``no_grad``).

        Next parameters from the *target* parameter network (stable, as in DDPG/TD3); the choice is picked by the
        online Q-network (double Q) or the target one, and scored by the target Q-network.
        """
        params = self._actor_params(next_obs, target=True)
        if double_q:
            choice = self._q_all(next_obs, params).argmax(dim=1)
            features = self._features(next_obs, self.q_net_target)
            param = params.gather(1, choice[:, None]).squeeze(1)
            return self.q_net_target.head.forward_choice(features, choice, param)
        return self._q_all(next_obs, params, target=True).max(dim=1).values

    def large_margin_loss(
        self, obs: PyTorchObs, choice: th.Tensor, param: th.Tensor, q_expert: th.Tensor, margin: float
    ) -> th.Tensor:
        """(B,) DQfD large-margin loss ``max_a [Q(s,a) + l(a_E,a)] - Q(s,a_E)``, ``q_expert = Q(s, a_E)``.

        The alternatives are the other choices with the parameter network's parameters (detached: this loss
        shapes the Q-network only; pushing the actor to *worse* parameters would lower those Q-values too, which
        is exactly the wrong lesson).
        """
        k = self.spec.n_choices
        with th.no_grad():
            params = self._actor_params(obs)
        q_alt = self._q_all(obs, params)
        q_alt = q_alt + margin * not_taken(choice, k).to(q_alt.dtype)
        q_alt = q_alt.scatter(1, choice[:, None], q_expert[:, None].to(q_alt.dtype))
        return q_alt.max(dim=1).values - q_expert

    def actor_loss(
        self,
        obs: PyTorchObs,
        demo_mask: th.Tensor | None = None,
        choice: th.Tensor | None = None,
        param: th.Tensor | None = None,
        demo_coef: float = 0.0,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Hybrid head: ``(surrogate loss, mean sum_k Q_k(s, x_k(s)), demo part)``; backpropagate the first.

        Deterministic policy gradient: ``g = dQ_k/dx_k`` from the online Q-network, at the actor's parameters,
        every choice's parameter climbing its own Q; ``g`` goes through :func:`invert_gradients` and the
        surrogate ``-(g * x).sum()`` hands it to the actor. On demonstration rows, ``demo_coef`` times the
        squared error (in half-ranges) of the expert's choice's parameter to the expert's parameter is added.
        Call with the Q-network's weights frozen (only the actor should step).
        """
        params = self._actor_params(obs, clamp=False)
        x = params.detach().requires_grad_(True)
        q = self._q_all(obs, x)
        (grad,) = th.autograd.grad(q.sum(), x)
        grad = invert_gradients(grad, x.detach(), self.spec.param_low, self.spec.param_high)
        loss = -(grad * params).sum(dim=1).mean()
        demo = th.zeros((), device=params.device)
        if demo_mask is not None and demo_coef > 0:
            assert choice is not None and param is not None
            err = (params.gather(1, choice[:, None]).squeeze(1) - param) / self.spec.param_half_range
            demo = masked_mean(err.square(), demo_mask)
            loss = loss + demo_coef * demo
        return loss, q.detach().sum(dim=1).mean(), demo.detach()


    def categorical_update_losses(
        self,
        obs: PyTorchObs,
        next_obs: PyTorchObs,
        choice: th.Tensor,
        param: th.Tensor,
        td_target_fn: Any,
        label_mask: th.Tensor,
        label_choice: th.Tensor,
        label_param: th.Tensor,
        margin: float,
        margin_coef: float,
        imitation_coef: float,
        q_coef: float,
        candidates: int,
        double_q: bool = True,
    ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """All losses of one update of the hybrid head with a categorical parameter network, in one graph.

        The same math as :meth:`q_taken` + :meth:`bootstrap_values` + :meth:`large_margin_loss` plus the
        parameter network's losses, but each network's features are computed once per batch (the lane
        extractor is the expensive part on a CPU) and one backward pass serves both networks: the actor's
        loss does not go through Q, so the Q-network and the actor have disjoint gradients.
        ``td_target_fn(next_values) -> targets`` adds the n-step rewards and discounts.

        The parameter network's losses:

        * **imitation**: cross-entropy of every choice's distribution to the expert's parameter, on the rows with
          a label (``label_mask``), weighted by ``imitation_coef``. The expert's spinner does not depend on its
          fire/zap choice, so every choice learns it;
        * **Q improvement**: per choice, the ``candidates`` most likely values are scored by the online
          Q-network and the best becomes a cross-entropy target, weighted by ``q_coef``: the mode moves to a
          value Q prefers among those the actor already finds plausible (policy improvement by sampling, instead
          of a gradient through a one-tick move that Q hardly resolves).
        """
        assert self.actor is not None and self.actor_target is not None
        head: CategoricalParamActor = self.actor.head  # type: ignore[assignment]
        q_head: MPQNetwork = self.q_net.head  # type: ignore[assignment]
        with th.no_grad():
            next_params = self.actor_target.head(self._features(next_obs, self.actor_target))
            f_next_t = self._features(next_obs, self.q_net_target)
            if double_q:
                next_choice = q_head(self._features(next_obs, self.q_net), next_params).argmax(dim=1)
            else:
                next_choice = self.q_net_target.head(f_next_t, next_params).argmax(dim=1)
            next_param = next_params.gather(1, next_choice[:, None]).squeeze(1)
            target = td_target_fn(self.q_net_target.head.forward_choice(f_next_t, next_choice, next_param).float())
        f_q = self._features(obs, self.q_net)
        q = q_head.forward_choice(f_q, choice, param).float()
        td = F.smooth_l1_loss(q, target)
        loss = td
        stats: dict[str, th.Tensor] = {"loss": td.detach(), "q_mean": q.detach().mean(), "q_std": q.detach().std()}
        logits = head.logits(self._features(obs, self.actor))  # (B, K, M)
        modes = logits.detach().argmax(dim=2)
        # every row goes through the losses and the mask weighs them: no host synchronisation (``any``,
        # ``nonzero``) in the update, which a CUDA graph cannot capture; unlabelled rows carry choice 0, param 0
        if margin_coef > 0:
            q_alt = q_head(f_q, head.values[modes]).float()
            q_e = q_head.forward_choice(f_q, label_choice, label_param).float()
            q_alt = q_alt + margin * not_taken(label_choice, self.spec.n_choices).to(q_alt.dtype)
            q_alt = q_alt.scatter(1, label_choice[:, None], q_e[:, None])
            m = masked_mean(q_alt.max(dim=1).values - q_e, label_mask)
            loss = loss + margin_coef * m
            stats["demo_margin_loss"] = m.detach()
        logp = F.log_softmax(logits.float(), dim=2)
        if imitation_coef > 0:
            target_idx = head.value_index(label_param)
            nll = -logp.gather(2, target_idx[:, None, None].expand(-1, logp.shape[1], 1)).squeeze(2).mean(dim=1)
            imit = masked_mean(nll, label_mask)
            loss = loss + imitation_coef * imit
            stats["actor_imitation"] = imit.detach()
            stats["actor_label_acc"] = masked_mean((modes == target_idx[:, None]).float().mean(dim=1), label_mask)
        if q_coef > 0 and candidates > 1:
            with th.no_grad():
                top = logits.detach().topk(min(candidates, head.n_values), dim=2).indices  # (B, K, C)
                f_d = f_q.detach()
                q_c = th.stack([q_head(f_d, head.values[top[:, :, c]]) for c in range(top.shape[2])], dim=2)
                best = top.gather(2, q_c.argmax(dim=2, keepdim=True))  # (B, K, 1)
            improve = -logp.gather(2, best).mean()
            loss = loss + q_coef * improve
            stats["actor_q_improve"] = improve.detach()
        return loss, stats


class BinnedQPolicy(QPolicy):
    """The binned head: the parameter is cut into ``K`` values and each (choice, value) pair gets its own Q-value,
    ``n_choices * K`` outputs in all. Plain (double) DQN, no parameter network. Alias ``BinnedMlpPolicy``.

    Takes :class:`QPolicy`'s parameters, and:

    :param spinner_bins: an int ``K`` for ``K`` evenly spaced parameter values, or an increasing sequence of
        parameter values
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        spinner_bins: int | Sequence[float] = 11,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        self.spinner_bins = spinner_bins
        if isinstance(spinner_bins, (int, np.integer)):
            if spinner_bins < 2:
                raise ValueError(f"spinner_bins must be >= 2, got {spinner_bins}")
            bins = np.linspace(self.spec.param_low, self.spec.param_high, int(spinner_bins))
        else:
            bins = np.asarray(spinner_bins, dtype=np.float64)
            if bins.ndim != 1 or len(bins) < 2 or not (np.diff(bins) > 0).all():
                raise ValueError(f"spinner_bins must be an increasing sequence of >= 2 values, got {spinner_bins}")
            if bins[0] < self.spec.param_low or bins[-1] > self.spec.param_high:
                raise ValueError(f"spinner_bins {bins} outside the parameter range of {action_space}")
        self.register_buffer("bin_values", th.as_tensor(bins, dtype=th.float32))
        self._build(lr_schedule)

    @property
    def n_bins(self) -> int:
        return int(self.bin_values.numel())

    def make_q_net(self) -> _Net:
        fe = self.make_features_extractor()
        head = nn.Sequential(*create_mlp(fe.features_dim, self.spec.n_choices * self.n_bins, self.net_arch,
                                         self.activation_fn))  # fmt: skip
        return _Net(fe, head).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(spinner_bins=self.spinner_bins)
        return data

    # ------------------------------------------------------------------ building blocks
    def _q_all(self, obs: PyTorchObs, target: bool = False) -> th.Tensor:
        """(B, K, n_bins) joint Q-values."""
        net = self.q_net_target if target else self.q_net
        return net.head(self._features(obs, net)).view(-1, self.spec.n_choices, self.n_bins)

    def param_to_bin(self, params: th.Tensor) -> th.Tensor:
        """Nearest bin index of each parameter."""
        mids = 0.5 * (self.bin_values[1:] + self.bin_values[:-1])
        return th.bucketize(params.contiguous(), mids)

    # ------------------------------------------------------------------ what the algorithm uses
    def act(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Greedy choice (B,) and each choice's parameter (B, K): the value of its best bin."""
        q, best_bin = self._q_all(obs).max(dim=2)
        return q.argmax(dim=1), self.bin_values[best_bin]

    def snap_params(self, params: np.ndarray) -> np.ndarray:
        """Move parameters to the nearest bin value."""
        bins = self.bin_values.cpu().numpy()
        mids = 0.5 * (bins[1:] + bins[:-1])
        return bins[np.searchsorted(mids, params)].astype(np.float32)

    def q_taken(self, obs: PyTorchObs, choice: th.Tensor, param: th.Tensor) -> th.Tensor:
        """(B,) online Q of the stored actions (the parameter's nearest bin)."""
        q = self._q_all(obs).view(-1, self.spec.n_choices * self.n_bins)
        joint = choice * self.n_bins + self.param_to_bin(param)
        return q.gather(1, joint[:, None]).squeeze(1)

    def bootstrap_values(self, next_obs: PyTorchObs, double_q: bool = True) -> th.Tensor:
        """(B,) value of the next observations for the TD target (call under ``no_grad``): double DQN over the
        joint (choice, bin) actions."""
        q_target = self._q_all(next_obs, target=True).flatten(1)
        if double_q:
            joint = self._q_all(next_obs).flatten(1).argmax(dim=1)
            return q_target.gather(1, joint[:, None]).squeeze(1)
        return q_target.max(dim=1).values

    def large_margin_loss(
        self, obs: PyTorchObs, choice: th.Tensor, param: th.Tensor, q_expert: th.Tensor, margin: float
    ) -> th.Tensor:
        """(B,) DQfD large-margin loss over every other joint action, the expert's bin being the nearest one."""
        k = self.spec.n_choices
        q_alt = self._q_all(obs).flatten(1)
        joint = choice * self.n_bins + self.param_to_bin(param)
        q_alt = q_alt + margin * not_taken(joint, k * self.n_bins).to(q_alt.dtype)
        return q_alt.max(dim=1).values - q_expert


#: SB3-style aliases (``HybridDQN("MlpPolicy", env)``, ``HybridDQN("BinnedMlpPolicy", env)``)
MlpPolicy = HybridQPolicy
BinnedMlpPolicy = BinnedQPolicy

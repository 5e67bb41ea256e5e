"""HybridDQN: DQN for Tempest's hybrid (fire/zap choice, spinner parameter) action, as an SB3 algorithm.

See docs/hybrid_dqn.md. Public names:

* :class:`HybridDQN` - the algorithm (``HybridDQN("MlpPolicy", env, ...)``);
* :class:`CompactReplayBuffer`, :class:`HybridReplaySamples` - its replay buffer and samples;
* :class:`LayoutCodec`, :class:`Float16Codec`, :class:`RawCodec`, :func:`make_codec` - observation storage;
* :func:`parse_schedule` - numbers, callables and "lin_A_B" strings as schedules;
* :class:`BackgroundLearner`, :class:`WeightPublisher` - the background learner's parts.
"""

from tempest_gym.hybrid_dqn.buffer import CompactReplayBuffer, HybridReplaySamples
from tempest_gym.hybrid_dqn.codecs import Float16Codec, LayoutCodec, ObsCodec, RawCodec, make_codec
from tempest_gym.hybrid_dqn.hybrid_dqn import HybridDQN, find_layout
from tempest_gym.hybrid_dqn.learner import BackgroundLearner, WeightPublisher
from tempest_gym.hybrid_dqn.policies import HybridActionSpec, HybridQPolicy
from tempest_gym.hybrid_dqn.schedules import parse_schedule

__all__ = [
    "BackgroundLearner",
    "CompactReplayBuffer",
    "Float16Codec",
    "HybridActionSpec",
    "HybridDQN",
    "HybridQPolicy",
    "HybridReplaySamples",
    "LayoutCodec",
    "ObsCodec",
    "RawCodec",
    "WeightPublisher",
    "find_layout",
    "make_codec",
    "parse_schedule",
]

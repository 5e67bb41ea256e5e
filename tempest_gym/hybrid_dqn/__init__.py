"""HybridDQN: DQN for Tempest's hybrid (fire/zap choice, spinner parameter) action, as an SB3 algorithm.

See docs/hybrid_dqn.md. The package holds the algorithm and everything it is made of, as SB3's ``dqn/`` does:

* ``hybrid_dqn`` - :class:`HybridDQN` (``HybridDQN("MlpPolicy", env, ...)``), SB3's DQN plus what is new;
* ``policies`` - the two heads, :class:`HybridQPolicy` (``MlpPolicy``) and :class:`BinnedQPolicy`
  (``BinnedMlpPolicy``), and :class:`HybridActionSpec` (what the ``Box`` action encoding means);
* ``buffer``, ``codecs`` - :class:`CompactReplayBuffer` (compact n-step replay) and its observation codecs;
* ``learner`` - the background learner (:class:`AsyncLearner` over :class:`BackgroundLearner` and
  :class:`WeightPublisher`);
* ``features`` - ``TempestLanesExtractor``, a features extractor that sees the tube from the player;
* ``schedules`` - :func:`parse_schedule`: numbers, callables and "lin_A_B" strings as schedules;
* ``legacy`` - model files and configurations from before the package layout changed.
"""

from tempest_gym.hybrid_dqn.buffer import CompactReplayBuffer, HybridReplaySamples
from tempest_gym.hybrid_dqn.codecs import Float16Codec, LayoutCodec, ObsCodec, RawCodec, make_codec
from tempest_gym.hybrid_dqn.hybrid_dqn import HybridDQN, find_layout
from tempest_gym.hybrid_dqn.learner import AsyncLearner, BackgroundLearner, WeightPublisher
from tempest_gym.hybrid_dqn.policies import BinnedQPolicy, HybridActionSpec, HybridQPolicy, QPolicy
from tempest_gym.hybrid_dqn.schedules import parse_schedule

__all__ = [
    "AsyncLearner",
    "BackgroundLearner",
    "BinnedQPolicy",
    "CompactReplayBuffer",
    "Float16Codec",
    "HybridActionSpec",
    "HybridDQN",
    "HybridQPolicy",
    "HybridReplaySamples",
    "LayoutCodec",
    "ObsCodec",
    "QPolicy",
    "RawCodec",
    "WeightPublisher",
    "find_layout",
    "make_codec",
    "parse_schedule",
]

"""The environment: N MAME instances as one SB3 ``VecEnv`` and as Gymnasium envs (docs/env.md).

* ``vec_env`` - :class:`TempestVecEnv`, stepping the bridge's lockstep cluster; its action encoding and the
  expert's label for every observation (``info["expert_action"]``);
* ``gym_env`` - ``TempestEnv`` (one instance, ``gym.make("TempestMAME-v0")``) and ``TempestVectorEnv``.

Imports only ``tempest_gym.bridge`` and the rule-based expert.
"""

"""tempest-gym: Atari's Tempest (1981) in real MAME as a Gymnasium / Stable-Baselines3 environment.

``import tempest_gym`` registers ``TempestMAME-v0`` with Gymnasium. For SB3 use
:func:`make_tempest_vec_env`, which returns a :class:`~tempest_gym.env.vec_env.TempestVecEnv` owning N
headless MAME processes (docs/env.md).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__version__ = "0.1.0"
ENV_ID = "TempestMAME-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="tempest_gym.env.gym_env:TempestEnv",
        vector_entry_point="tempest_gym.env.gym_env:TempestVectorEnv",
        nondeterministic=False,
    )


def make_tempest_vec_env(num_envs: int = 1, **kwargs: Any):
    """N headless MAME instances as one SB3 VecEnv (see TempestVecEnv for the keyword arguments).

    Not a drop-in for ``stable_baselines3.common.env_util.make_vec_env``: it takes no env id or factory,
    since one ``TempestVecEnv`` owns all instances.
    """
    from tempest_gym.env.vec_env import TempestVecEnv

    return TempestVecEnv(num_envs=num_envs, **kwargs)


def make_vec_env(num_envs: int = 1, **kwargs: Any):
    """Deprecated alias of :func:`make_tempest_vec_env` (it shadowed SB3's ``make_vec_env``, whose signature
    differs)."""
    import warnings

    warnings.warn(
        "tempest_gym.make_vec_env is deprecated: use tempest_gym.make_tempest_vec_env (same arguments). "
        "It is not SB3's make_vec_env, which takes an env id and builds one env per instance.",
        DeprecationWarning,
        stacklevel=2,
    )
    return make_tempest_vec_env(num_envs, **kwargs)


__all__ = ["ENV_ID", "make_tempest_vec_env", "make_vec_env", "__version__"]

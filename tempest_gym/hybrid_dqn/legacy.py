"""Model files and configurations from before the package layout changed (issue 9) still work.

* SB3 pickles classes by module path, so a zip or a replay buffer written by earlier versions names
  ``policies.hybrid.HybridQPolicy`` and ``policies.hybrid.HybridActionSpec``; those now live in
  :mod:`tempest_gym.hybrid_dqn.policies`. :func:`moved_modules` makes the old paths import as the new modules
  while a file is read (``HybridDQN.load`` and ``load_replay_buffer`` use it); nothing stays registered after.
* The two heads were one class, ``HybridQPolicy``, the binned one chosen by ``spinner_bins=K``; they are two now
  (``MlpPolicy``, ``BinnedMlpPolicy``). :func:`select_head` maps the old choice (in old files and in configs that
  say ``policy: MlpPolicy`` with ``spinner_bins``) to the binned class, and :func:`legacy_policy_state` drops the
  empty ``bin_values`` buffer the old class carried for the hybrid head.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

#: old module path -> the module that holds its classes now
MOVED_MODULES = {"policies.hybrid": "tempest_gym.hybrid_dqn.policies"}


@contextmanager
def moved_modules() -> Iterator[None]:
    """While active, ``import policies.hybrid`` (what unpickling an old file does) gives the new module."""
    added: list[str] = []
    for old, new in MOVED_MODULES.items():
        parent = old.rpartition(".")[0]
        if parent and parent not in sys.modules and importlib.util.find_spec(parent) is None:
            sys.modules[parent] = types.ModuleType(parent)  # an install has no top-level "policies"
            added.append(parent)
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
            added.append(old)
    try:
        yield
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


def select_head(policy_class: type, policy_kwargs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The policy class and arguments for a head chosen the old way: ``HybridQPolicy`` with ``spinner_bins=K``
    means ``BinnedQPolicy`` (``spinner_bins=None`` is dropped: it meant the hybrid head)."""
    from tempest_gym.hybrid_dqn.policies import BinnedQPolicy, HybridQPolicy

    if policy_class is not HybridQPolicy or "spinner_bins" not in policy_kwargs:
        return policy_class, policy_kwargs
    kwargs = dict(policy_kwargs)
    if kwargs["spinner_bins"] is None:
        del kwargs["spinner_bins"]
        return policy_class, kwargs
    return BinnedQPolicy, kwargs


def legacy_policy_state(state: dict[str, Any], expected: Iterable[str]) -> dict[str, Any]:
    """A policy state_dict without the empty ``bin_values`` buffer old hybrid heads had (``expected``: the keys
    of the policy it is loaded into)."""
    if "bin_values" in state and "bin_values" not in set(expected) and state["bin_values"].numel() == 0:
        return {k: v for k, v in state.items() if k != "bin_values"}
    return state

"""Model files saved before the package layout changed (issue 9) still load.

SB3 pickles classes by module path, so a zip or a replay buffer written by earlier versions names
``policies.hybrid.HybridQPolicy`` and ``policies.hybrid.HybridActionSpec``; those now live in
:mod:`tempest_gym.hybrid_dqn.policies`. :func:`moved_modules` makes the old paths import as the new modules
while a file is read (``HybridDQN.load`` and ``load_replay_buffer`` use it); nothing stays registered after.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

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

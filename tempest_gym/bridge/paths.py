"""Where the Lua client and the released model live, whether running from a checkout or an installed wheel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENTRY_SCRIPT = "autoboot.lua"
#: the folder holding the ``tempest_gym`` package: a checkout's root (or site-packages, for an installed wheel)
CHECKOUT = Path(__file__).resolve().parents[2]


def lua_dir() -> Path:
    """Directory holding ``autoboot.lua`` and ``state_layout.tsv``.

    Order: ``$TEMPEST_LUA_DIR``; the ``lua/`` folder beside this package (a checkout or an
    editable install); ``<prefix>/share/tempest-gym/lua`` (a regular install, see setup.py).
    """
    candidates = []
    env = os.environ.get("TEMPEST_LUA_DIR")
    if env:
        candidates.append(Path(env))
    candidates.append(CHECKOUT / "lua")
    candidates.append(Path(sys.prefix) / "share" / "tempest-gym" / "lua")
    for c in candidates:
        if (c / ENTRY_SCRIPT).is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"tempest-gym's Lua client ({ENTRY_SCRIPT}) not found; tried: {tried}")


#: the released hybrid_dqn policy (weights only), trained by the command in docs/results.md
RELEASED_MODEL = "hybrid_dqn_tempest.zip"


def released_model() -> Path:
    """The released model: the checkout's ``models/`` folder, or ``<prefix>/share/tempest-gym/models``."""
    candidates = [
        CHECKOUT / "models" / RELEASED_MODEL,
        Path(sys.prefix) / "share" / "tempest-gym" / "models" / RELEASED_MODEL,
    ]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"the released model ({RELEASED_MODEL}) was not found; tried: {tried}")

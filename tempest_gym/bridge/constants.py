"""Game and wire constants, defined once for Python; ``lua/tempest_gym/constants.lua`` is the Lua client's copy
(tests/test_protocol.py checks that the two agree). Facts about the game: docs/ram.md."""

from __future__ import annotations

#: lanes of the tube (closed tubes wrap around, open ones have 15 usable lanes)
NLANES = 16
#: fire/zap indices of the action: 0 none, 1 fire, 2 zap, 3 both
NUM_FIRE_ZAP = 4
#: the game clamps the spinner delta of one tick to +-31 (16 units per lane)
MAX_SPIN = 31
#: the start levels the game offers, in the order of its table (docs/ram.md 2.3)
START_LEVELS = (1, 3, 5, 7, 9, 11, 13, 15, 17, 20, 22, 24, 26, 28, 31, 33, 36, 40, 44, 47, 49, 52, 56, 60,
                63, 65, 73, 81)  # fmt: skip
#: lives per game the dip switch offers
LIVES = (2, 3, 4, 5)
#: the slot a remote client asks for in its HELLO when any free one will do (WELCOME names the one it got)
ANY_SLOT = 0xFFFF

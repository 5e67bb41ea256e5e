-- tempest-gym: game and wire constants, the Lua client's copy of tempest_gym/bridge/constants.py
-- (tests/test_protocol.py checks that the two agree). Facts about the game: docs/ram.md.

local constants = {}

-- the game clamps the spinner delta of one tick to +-31 (16 units per lane)
constants.MAX_SPIN = 31
-- the start levels the game offers, in the order of its table (docs/ram.md 2.3)
constants.START_LEVELS = { 1, 3, 5, 7, 9, 11, 13, 15, 17, 20, 22, 24, 26, 28, 31, 33, 36, 40, 44, 47, 49, 52, 56,
	60, 63, 65, 73, 81 }
-- lives per game -> the dip switch bits that select them
constants.LIVES_DIP = { [2] = 0xC0, [3] = 0x00, [4] = 0x40, [5] = 0x80 }
-- the slot a client asks for in its HELLO when any free one will do (WELCOME names the one it got)
constants.ANY_SLOT = 0xFFFF

return constants

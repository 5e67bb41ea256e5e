-- tempest-gym: everything the agent does not control. Presses start (free play), picks the
-- start level on the "rate yourself" screen, enters initials after a high score, and
-- patches the rev-1 anti-piracy trap. Also owns the button fields, so the agent's fire/zap
-- and the flow's presses go through one place.

local constants = require("tempest_gym.constants")

local gameflow = {}

local START_LEVELS = constants.START_LEVELS
local LIVES_DIP = constants.LIVES_DIP
local FREE_PLAY = 2

local GS_SELECT, GS_INITIALS = 0x16, 0x12

function gameflow.start_index(level)
	for i, l in ipairs(START_LEVELS) do
		if l == level then
			return i - 1
		end
	end
	return nil
end

local function field(ports, tag, name)
	local port = ports[tag]
	local f = port and port.fields[name]
	if not f then
		error("MAME input " .. tag .. " / " .. name .. " not found: is this tempest1?")
	end
	return f
end

function gameflow.new(machine, cfg)
	local ports = machine.ioport.ports
	local mem = machine.devices[":maincpu"].spaces["program"]
	local fire = field(ports, ":BUTTONSP1", "P1 Button 1")
	local zap = field(ports, ":BUTTONSP1", "P1 Button 2")
	local start = field(ports, ":IN2", "1 Player Start")
	local function index_of(level)
		local i = gameflow.start_index(level)
		if not i then
			error("start_level " .. tostring(level) .. " is not selectable; choose one of "
				.. table.concat(START_LEVELS, ", "))
		end
		return i
	end
	local level_index = index_of(cfg.start_level)
	-- start_levels: a start level drawn per game, so that training also sees the later levels early
	local level_choices = {}
	for text in string.gmatch(cfg.start_levels or "", "[^,%s]+") do
		local level = math.tointeger(tonumber(text))
		level_choices[#level_choices + 1] = index_of(level)
	end
	local lives_dip = LIVES_DIP[cfg.lives]
	if not lives_dip then
		error("lives must be 2, 3, 4 or 5, not " .. tostring(cfg.lives))
	end

	local self = {}
	local rng = (cfg.seed * 2654435761 + 12345) & 0x7FFFFFFF
	local start_after = 0 -- frame from which start may be pressed
	local was_in_game = false
	local buttons = { fire = false, zap = false }

	local function next_delay()
		rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
		return (rng >> 16) % 64
	end

	local function next_level()
		if #level_choices > 0 then
			rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
			level_index = level_choices[(rng >> 16) % #level_choices + 1]
		end
	end

	local function set(f, key, on)
		if buttons[key] ~= on then
			buttons[key] = on
			if on then
				f:set_value(1)
			else
				f:clear_value()
			end
		end
	end

	-- dip switches: free play (credits forced to 2), lives per game
	function self.setup()
		field(ports, ":DSW1", "Coinage").user_value = FREE_PLAY
		field(ports, ":DSW2", "Lives").user_value = lives_dip
		self.patch_rom()
	end

	-- rev 1 (tempest1) corrupts zero page once the score passes ~170k (WEL ZQVAVG): NOP the INC
	function self.patch_rom()
		mem:write_direct_u8(0xA591, 0xEA)
		mem:write_direct_u8(0xA592, 0xEA)
	end

	-- a new boot (process start or a reset from the boot save state); frame = now
	function self.restart(frame, seed)
		if seed then
			rng = (seed * 2654435761 + 12345) & 0x7FFFFFFF
		end
		self.release()
		start:clear_value()
		buttons.start = false
		was_in_game = false
		-- the game clears RAM at ~frame 39 after boot: presses before that are lost
		start_after = frame + 60 + next_delay()
		next_level()
	end

	function self.release()
		set(fire, "fire", false)
		set(zap, "zap", false)
	end

	-- the agent's action: fz = 0 none, 1 fire, 2 zap, 3 both; spin = signed delta for $50
	function self.apply(fz, spin)
		set(fire, "fire", (fz & 1) ~= 0)
		set(zap, "zap", (fz & 2) ~= 0)
		mem:write_u8(0x50, spin & 0xFF)
	end

	-- called every video frame in which the agent does not own the controls
	function self.frame(frame, gs, mode)
		local in_game = (mode & 0x80) ~= 0
		if was_in_game and not in_game then
			-- game over and back in attract: wait a seed-dependent moment, then start again
			start_after = frame + next_delay()
			next_level()
		end
		was_in_game = in_game
		if not in_game then
			self.release()
			local t = frame - start_after
			set(start, "start", t >= 0 and t % 30 < 3) -- start is edge-triggered: pulse it
			return
		end
		set(start, "start", false)
		if gs == GS_SELECT then
			-- "rate yourself": allow our index, put the cursor on it, tap fire to confirm
			if mem:read_u8(0x127) < level_index then
				mem:write_u8(0x127, level_index)
			end
			mem:write_u8(0x200, level_index)
			set(fire, "fire", frame % 8 >= 4 and frame % 8 < 7)
			set(zap, "zap", false)
		elseif gs == GS_INITIALS then
			set(fire, "fire", frame % 20 < 3)
			set(zap, "zap", false)
		else
			self.release()
		end
	end

	return self
end

return gameflow

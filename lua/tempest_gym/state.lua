-- tempest-gym: Tempest RAM -> the flat state vector described by lua/state_layout.tsv.
--
-- RAM facts (addresses, encodings) are in docs/ram.md. Each tick the
-- client reads $0000-$03FF once with read_range and hands the bytes here as a table R with
-- R[addr + 1] = byte. Features are written by group name into the layout's slots, so the
-- order lives only in the layout file; `check_complete` catches a layout row with no code.

local state = {}

local RAM_BYTES = 0x400 -- everything below is in $0000-$03FF

local TYPE_GROUP = { [0] = "enemy_flipper", "enemy_pulsar", "enemy_tanker", "enemy_spiker", "enemy_fuseball" }
local FUSEBALL, TANKER = 4, 2
local RIM = 0x10

local function s8(x)
	if x >= 0x80 then
		return x - 0x100
	end
	return x
end

local function bcd(x)
	local v = (x >> 4) * 10 + (x & 0x0F)
	if v > 99 then
		return 99
	end
	return v
end

-- lane offset d folded into -8..7 on a closed tube (lanes wrap), unchanged on an open one
local function lane_offset(d, open)
	if not open then
		return ((d + 8) & 0x0F) - 8
	end
	return d
end
state.lane_offset = lane_offset

local function clamp(x, lo, hi)
	if x < lo then
		return lo
	elseif x > hi then
		return hi
	end
	return x
end

-- Builds an extractor bound to a layout. Returns a table with
--   read(mem) -> R                     (one read_range, bytes as a table)
--   extract(R, raw) -> info            (fills raw[1..n] with integers; info has the decoded
--                                       facts the client needs: gs, mode, lane, alive, ...)
--   normalise(raw, out)                (out[i] = raw[i] / scale[i], clamped to [lo, hi])
function state.new(L)
	local base = L.base
	local n = L.count
	local lo, hi = L.lo, L.hi
	local inv = {}
	for i = 1, n do
		inv[i] = 1.0 / L.scale[i]
	end

	local function need(group)
		local b = base[group]
		if not b then
			error("state_layout.tsv has no feature group '" .. group .. "' that state.lua fills")
		end
		return b
	end
	-- resolve every group once, so a renamed layout row fails at start, not mid-game
	local B = {}
	for _, g in ipairs({
		"in_game", "agent_control", "gs_play", "gs_dive", "gs_zoom", "gs_other", "player_alive", "level",
		"well_shape", "well_open", "lives", "score_100k", "score_1k", "score_10", "zaps_left", "zap_active",
		"pulse_lethal", "pulse_phase", "pulse_rising", "pulsar_kill_depth", "pending_total",
		"enemies_in_tube", "chasers", "count_flipper", "count_pulsar", "count_tanker", "count_spiker",
		"count_fuseball", "player_shots", "enemy_shots", "player_lane", "player_fine", "player_depth",
		"player_diving", "pshot_present", "pshot_rel_lane", "pshot_depth", "enemy_present",
		"enemy_flipper", "enemy_pulsar", "enemy_tanker", "enemy_spiker", "enemy_fuseball", "enemy_lane",
		"enemy_rel_lane", "enemy_depth", "enemy_toward", "enemy_flipping", "enemy_flip_step",
		"enemy_lane_up", "enemy_at_rim", "enemy_cargo", "enemy_shootable", "eshot_present",
		"eshot_rel_lane", "eshot_depth", "spike", "threat", "pending",
	}) do
		B[g] = need(g)
	end
	for _, g in ipairs(L.groups) do
		if not B[g.name] then
			error("state_layout.tsv feature group '" .. g.name .. "' is not produced by state.lua")
		end
	end

	local ex = {}
	local byte = string.byte
	local threat, pend = {}, {}
	local info = {}

	-- one read_range of $0000-$03FF (7 us; a read_u8 loop costs ~80x more). Returns the
	-- bytes as a table R with R[addr + 1] = byte, and the raw string (for tracing)
	function ex.read(mem)
		local ram = mem:read_range(0, RAM_BYTES - 1, 8)
		return { byte(ram, 1, RAM_BYTES) }, ram
	end

	function ex.extract(R, raw)
		local gs, mode = R[0x00 + 1], R[0x05 + 1]
		local in_game = (mode & 0x80) ~= 0
		local alive = (R[0x201 + 1] & 0x80) == 0
		local playing, diving, zooming = gs == 0x04, gs == 0x20, gs == 0x18
		local control = in_game and alive and (playing or diving)
		local open = R[0x111 + 1] ~= 0
		local plane = R[0x200 + 1] & 0x0F
		local pdepth = R[0x202 + 1]
		local dive_flag = (R[0x106 + 1] & 0x80) ~= 0
		local curwav = R[0x9F + 1]
		local level = (curwav < 99) and (curwav + 1) or 0

		raw[B.in_game] = in_game and 1 or 0
		raw[B.agent_control] = control and 1 or 0
		raw[B.gs_play] = playing and 1 or 0
		raw[B.gs_dive] = diving and 1 or 0
		raw[B.gs_zoom] = zooming and 1 or 0
		raw[B.gs_other] = (playing or diving or zooming) and 0 or 1
		raw[B.player_alive] = alive and 1 or 0
		raw[B.level] = level
		local shape = R[0x112 + 1] & 0x0F
		for k = 0, 15 do
			raw[B.well_shape + k] = (k == shape) and 1 or 0
		end
		raw[B.well_open] = open and 1 or 0
		raw[B.lives] = clamp(R[0x48 + 1], 0, 6)
		raw[B.score_100k] = bcd(R[0x42 + 1])
		raw[B.score_1k] = bcd(R[0x41 + 1])
		raw[B.score_10] = bcd(R[0x40 + 1])
		raw[B.zaps_left] = clamp(2 - R[0x3AA + 1], 0, 2)
		local suztim = R[0x125 + 1]
		raw[B.zap_active] = (suztim >= 1 and suztim <= 19) and 1 or 0
		local pulson = s8(R[0x148 + 1])
		raw[B.pulse_lethal] = (pulson >= 0) and 1 or 0
		raw[B.pulse_phase] = pulson
		raw[B.pulse_rising] = (s8(R[0x147 + 1]) > 0) and 1 or 0
		raw[B.pulsar_kill_depth] = R[0x157 + 1]
		raw[B.pending_total] = clamp(R[0x3AB + 1], 0, 63)
		raw[B.enemies_in_tube] = clamp(R[0x108 + 1], 0, 7)
		raw[B.chasers] = clamp(R[0x109 + 1], 0, 7)
		raw[B.count_flipper] = clamp(R[0x142 + 1], 0, 7)
		raw[B.count_pulsar] = clamp(R[0x143 + 1], 0, 7)
		raw[B.count_tanker] = clamp(R[0x144 + 1], 0, 7)
		raw[B.count_spiker] = clamp(R[0x145 + 1], 0, 7)
		raw[B.count_fuseball] = clamp(R[0x146 + 1], 0, 7)
		raw[B.player_shots] = clamp(R[0x135 + 1], 0, 8)
		raw[B.enemy_shots] = clamp(R[0xA6 + 1], 0, 4)
		raw[B.player_lane] = plane
		raw[B.player_fine] = R[0x51 + 1]
		raw[B.player_depth] = pdepth
		raw[B.player_diving] = dive_flag and 1 or 0

		for l = 0, 15 do
			threat[l], pend[l] = 0, 0
		end

		-- player shots: 8 slots
		for k = 0, 7 do
			local d = R[0x2D3 + k + 1]
			if d ~= 0 then
				raw[B.pshot_present + k] = 1
				raw[B.pshot_rel_lane + k] = lane_offset((R[0x2AD + k + 1] & 0x0F) - plane, open)
				raw[B.pshot_depth + k] = d
			else
				raw[B.pshot_present + k], raw[B.pshot_rel_lane + k], raw[B.pshot_depth + k] = 0, 0, 0
			end
		end

		-- enemies: 7 slots. While diving they are neither drawn nor moved (CURMOD), so a
		-- player cannot see them: report them absent.
		local enemies_visible = not dive_flag
		for i = 0, 6 do
			local d = R[0x2DF + i + 1]
			for t = 0, 4 do
				raw[B[TYPE_GROUP[t]] + i] = 0
			end
			if d ~= 0 and enemies_visible then
				local a1, a2 = R[0x283 + i + 1], R[0x28A + i + 1]
				local lane = R[0x2B9 + i + 1] & 0x0F
				local l2 = R[0x2CC + i + 1]
				local etype = a1 & 0x07
				local flipping = (a1 & 0x80) ~= 0
				local rot = (a1 & 0x40) ~= 0
				local at_rim = d == pdepth
				if etype <= 4 then
					raw[B[TYPE_GROUP[etype]] + i] = 1
				end
				raw[B.enemy_present + i] = 1
				raw[B.enemy_lane + i] = lane
				raw[B.enemy_rel_lane + i] = lane_offset(lane - plane, open)
				raw[B.enemy_depth + i] = d
				raw[B.enemy_toward + i] = ((a2 & 0x80) == 0) and 1 or 0
				raw[B.enemy_flipping + i] = flipping and 1 or 0
				raw[B.enemy_flip_step + i] = flipping and (l2 & 0x0F) or 0
				-- bit 6 = counter-clockwise (lane rising), except fuseballs, which use the opposite sense
				if etype == FUSEBALL then
					rot = not rot
				end
				raw[B.enemy_lane_up + i] = rot and 1 or 0
				raw[B.enemy_at_rim + i] = at_rim and 1 or 0
				raw[B.enemy_cargo + i] = (etype == TANKER) and (a2 & 0x03) or 0
				local shootable
				if etype == FUSEBALL then
					shootable = (l2 & 0x80) ~= 0 and d ~= RIM
				else
					shootable = flipping or d ~= RIM
				end
				raw[B.enemy_shootable + i] = shootable and 1 or 0
				local p = 256 - d
				if p > threat[lane] then
					threat[lane] = p
				end
			else
				raw[B.enemy_present + i], raw[B.enemy_lane + i], raw[B.enemy_rel_lane + i] = 0, 0, 0
				raw[B.enemy_depth + i], raw[B.enemy_toward + i], raw[B.enemy_flipping + i] = 0, 0, 0
				raw[B.enemy_flip_step + i], raw[B.enemy_lane_up + i], raw[B.enemy_at_rim + i] = 0, 0, 0
				raw[B.enemy_cargo + i], raw[B.enemy_shootable + i] = 0, 0
			end
		end

		-- enemy shots: 4 slots
		for m = 0, 3 do
			local d = R[0x2DB + m + 1]
			if d ~= 0 then
				local lane = R[0x2B5 + m + 1] & 0x0F
				raw[B.eshot_present + m] = 1
				raw[B.eshot_rel_lane + m] = lane_offset(lane - plane, open)
				raw[B.eshot_depth + m] = d
				local p = 256 - d
				if p > threat[lane] then
					threat[lane] = p
				end
			else
				raw[B.eshot_present + m], raw[B.eshot_rel_lane + m], raw[B.eshot_depth + m] = 0, 0, 0
			end
		end

		-- pending enemies: a slot is live when its countdown $0243+j is nonzero (lane 0 is real)
		if gs ~= 0x24 then -- the high-score fireworks reuse $0203-$0382 for particles
			for j = 0, 63 do
				if R[0x243 + j + 1] ~= 0 then
					local lane = R[0x203 + j + 1] & 0x0F
					pend[lane] = pend[lane] + 1
				end
			end
		end

		for l = 0, 15 do
			local tip = R[0x3AC + l + 1]
			raw[B.spike + l] = (tip ~= 0) and clamp(256 - tip, 1, 240) or 0
			raw[B.threat + l] = clamp(threat[l], 0, 240)
			raw[B.pending + l] = clamp(pend[l], 0, 8)
		end

		info.gs, info.mode, info.in_game, info.alive = gs, mode, in_game, alive
		info.control, info.playing, info.diving, info.open = control, playing, diving, open
		info.lane, info.depth, info.level, info.lives = plane, pdepth, level, R[0x48 + 1]
		info.score = bcd(R[0x42 + 1]) * 10000 + bcd(R[0x41 + 1]) * 100 + bcd(R[0x40 + 1])
		info.pulson, info.pulpot, info.dive_flag = pulson, R[0x157 + 1], dive_flag
		return info
	end

	function ex.normalise(raw, out)
		for i = 1, n do
			local v = raw[i]
			if v < lo[i] then
				v = lo[i]
			elseif v > hi[i] then
				v = hi[i]
			end
			out[i] = v * inv[i]
		end
		return out
	end

	-- true when every slot of raw is set (used once at start-up against the first tick)
	function ex.check_complete(raw)
		for i = 1, n do
			if raw[i] == nil then
				error("state.lua left feature " .. L.names[i] .. " unset")
			end
		end
	end

	return ex
end

return state

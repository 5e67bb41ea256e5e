-- tempest-gym: client settings. Nothing is hard-coded: values come from the file named by
-- $TEMPEST_GYM_CONFIG (key=value lines, written by the Python launcher), then from
-- $TEMPEST_GYM_<KEY> environment variables, which win.

local config = {}

local DEFAULTS = {
	host = "127.0.0.1",
	port = 0, -- required
	slot = 0, -- which env index this instance is (reported in the handshake); -1: any free slot
	seed = 0, -- varies the frames idled before each game start, so instances diverge
	start_level = 1, -- must be one of the game's selectable start levels
	start_levels = "", -- if set, e.g. "1,9,17": each new game starts at one of these, drawn per game (seeded)
	lives = 3, -- 2, 3, 4 or 5 (dip switch)
	transport = "auto", -- auto | luasocket | emufile
	pipeline = 1, -- 1: read the reply one video frame after sending the state, when there is slack
	pipeline_slack = 2, -- ...i.e. when FRTIMR ($53) at the tick is at most this (see client.lua)
	connect_timeout = 30, -- seconds to connect and complete the handshake
	reply_timeout = 60, -- seconds to wait for each action
	death_penalty = 1000, -- points subtracted from the objective reward on a death
	bonus_threshold = 6000, -- score jumps this large are level/start bonuses, not play
	token = "", -- the run's token (the launcher writes it into the settings file, never onto a command line)
	token_file = "", -- if token is empty: read the token from this file at every (re)connection
	reconnect = 0, -- 1: when the server goes away, keep MAME alive and reconnect with backoff
	reconnect_max = 0, -- give up (exit 5) after this many seconds of failed reconnects; 0 = never
	layout = "", -- path of state_layout.tsv (default: beside the script)
	trace = "", -- if set, append seq (u32) + RAM $0000-$03FF for every sent state (tests)
	record = "", -- "mng" or "avi": record each episode (life) to episode_NNNN.<fmt> in the snapshot dir
	profile = "", -- if set, write where the client's time goes to this file (see tempest_gym/profile.lua)
	verbose = 0,
}

local NUMERIC = {
	port = true, slot = true, seed = true, pipeline_slack = true, start_level = true, lives = true, pipeline = true,
	connect_timeout = true, reply_timeout = true, reconnect = true, reconnect_max = true, death_penalty = true, bonus_threshold = true,
	verbose = true,
}

local function set(cfg, key, value, origin)
	if DEFAULTS[key] == nil then
		error(string.format("unknown setting %q (from %s)", key, origin))
	end
	if NUMERIC[key] then
		local n = tonumber(value)
		if n == nil then
			error(string.format("setting %s=%q (from %s) is not a number", key, value, origin))
		end
		value = math.tointeger(n) or n
	end
	cfg[key] = value
end

function config.load()
	local cfg = {}
	for k, v in pairs(DEFAULTS) do
		cfg[k] = v
	end
	local path = os.getenv("TEMPEST_GYM_CONFIG")
	if path and path ~= "" then
		local f, err = io.open(path, "r")
		if not f then
			error("cannot read TEMPEST_GYM_CONFIG " .. path .. ": " .. tostring(err))
		end
		local lineno = 0
		for line in f:lines() do
			lineno = lineno + 1
			if line:match("%S") and not line:match("^%s*#") then
				local k, v = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
				if not k then
					f:close()
					error(string.format("%s:%d: expected key=value", path, lineno))
				end
				set(cfg, k, v, path .. ":" .. lineno)
			end
		end
		f:close()
	end
	for k in pairs(DEFAULTS) do
		local v = os.getenv("TEMPEST_GYM_" .. k:upper())
		if v and v ~= "" then
			set(cfg, k, v, "$TEMPEST_GYM_" .. k:upper())
		end
	end
	if cfg.transport ~= "auto" and cfg.transport ~= "luasocket" and cfg.transport ~= "emufile" then
		error("unknown transport " .. tostring(cfg.transport) .. " (auto, luasocket or emufile)")
	end
	if cfg.record ~= "" and cfg.record ~= "mng" and cfg.record ~= "avi" then
		error("record must be mng or avi, not " .. tostring(cfg.record))
	end
	if cfg.port <= 0 or cfg.port > 65535 then
		error("no server port: set port= in $TEMPEST_GYM_CONFIG or $TEMPEST_GYM_PORT")
	end
	return cfg
end

return config

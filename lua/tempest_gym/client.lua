-- tempest-gym: the per-frame bridge. Every game tick ($0003 changes, ~27 Hz) it extracts
-- the state, computes the rewards and sends one STATE; the server answers with one ACTION.
--
-- Pipelining: when $0003 changes the game has already read this tick's input, so an action
-- that arrives on the next video frame still lands on the next tick. With pipeline=1 the
-- state is sent at the tick and the reply is read one frame later, so the round trip
-- overlaps the emulation of that frame instead of stalling it.

local config = require("tempest_gym.config")
local constants = require("tempest_gym.constants")
local layout = require("tempest_gym.layout")
local protocol = require("tempest_gym.protocol")
local state = require("tempest_gym.state")
local rewards = require("tempest_gym.rewards")
local gameflow = require("tempest_gym.gameflow")
local transport = require("tempest_gym.transport")
local profile = require("tempest_gym.profile")

local client = {}

local EXIT_QUIT, EXIT_CONFIG, EXIT_ERROR, EXIT_LOST = 0, 3, 4, 5
local ANY_SLOT = constants.ANY_SLOT
local BOOT_STATE = "tempest_gym_boot"
local MAX_SPIN = constants.MAX_SPIN

local started = false
local subscriptions = {} -- newer MAME returns notifier handles that must stay referenced

local function log(msg)
	io.stderr:write("[tempest-gym] " .. msg .. "\n")
	io.stderr:flush()
end

local function on_frame_done(fn)
	if emu.add_machine_frame_notifier then
		subscriptions[#subscriptions + 1] = emu.add_machine_frame_notifier(fn)
	else
		emu.register_frame_done(fn, "tempest_gym")
	end
end

local function on_stop(fn)
	if emu.add_machine_stop_notifier then
		subscriptions[#subscriptions + 1] = emu.add_machine_stop_notifier(fn)
	else
		emu.register_stop(fn, "tempest_gym")
	end
end

function client.start(lua_dir)
	if started then -- a soft reset re-runs the autoboot script in the same Lua state
		return
	end
	started = true

	local conn
	local function fatal(code, msg)
		log(msg)
		if conn then
			pcall(conn.send, conn, protocol.bye(msg))
			conn:close()
		end
		os.exit(code)
	end

	local ok, cfg = pcall(config.load)
	if not ok then
		fatal(EXIT_CONFIG, "configuration error: " .. tostring(cfg))
	end
	local layout_path = (cfg.layout ~= "" and cfg.layout) or (lua_dir .. "/state_layout.tsv")
	local L
	ok, L = pcall(layout.load, layout_path)
	if not ok then
		fatal(EXIT_CONFIG, tostring(L))
	end

	local machine = manager.machine
	local mem = machine.devices[":maincpu"].spaces["program"]
	local ex, flow
	ok, ex = pcall(state.new, L)
	if ok then
		ok, flow = pcall(gameflow.new, machine, cfg)
		if not ok then
			ex = flow
		end
	end
	if not ok then
		fatal(EXIT_CONFIG, tostring(ex))
	end
	local rw = rewards.new(cfg)
	local pack_state = protocol.state_packer(L.count)
	local prof = (cfg.profile ~= "") and profile.new(cfg.profile) or nil -- nil: no timing at all

	-- connect and handshake; every (re)connection is a new run with a fresh random run id, so
	-- the server never stitches the old and the new stream together
	math.randomseed((emu.osd_ticks() ~ os.time() ~ ((cfg.slot & 0xFFFF) << 20)) & 0x7FFFFFFFFFFF)
	local slot = (cfg.slot < 0) and ANY_SLOT or cfg.slot
	-- the token: from the settings, or (a trainer on this host that made up its own) from a file that
	-- only this user can read, read again at every connection since a restarted trainer has a new one
	local function current_token()
		if cfg.token ~= "" or cfg.token_file == "" then
			return cfg.token
		end
		local f = io.open(cfg.token_file, "r")
		if not f then
			return ""
		end
		local t = f:read("l") or ""
		f:close()
		return (t:gsub("^%s+", ""):gsub("%s+$", ""))
	end
	-- refusals that a later try may not get: every slot was taken, the server was flooded, or the token
	-- file was not (re)written yet
	local function retryable(reason)
		if reason:find("^no free slot") or reason:find("try again later", 1, true) then
			return true
		end
		return cfg.token == "" and cfg.token_file ~= "" and reason:find("token", 1, true) ~= nil
	end
	local function handshake()
		local c, backend = transport.connect(cfg)
		if not c then
			return nil, backend
		end
		local run_hi, run_lo = math.random(0, 0xFFFFFFFF), math.random(0, 0xFFFFFFFF)
		local flags = ((backend == "luasocket") and 1 or 0) | ((cfg.pipeline ~= 0) and 2 or 0)
		local desc = string.format("%s; mame %s; %s", _VERSION, emu.app_version(), backend)
		local token = current_token()
		local sent, err = c:send(protocol.hello(L.count, L.hash, run_hi, run_lo, slot, flags, desc, token))
		if not sent then
			c:close()
			return nil, "handshake send failed: " .. tostring(err)
		end
		local body
		body, err = protocol.receive(c, cfg.connect_timeout)
		if not body then
			c:close()
			return nil, "no handshake answer from the server: " .. tostring(err)
		end
		local kind, detail, assigned = protocol.parse(body)
		if kind == protocol.REJECT then
			c:close()
			local why = "server refused the connection: " .. tostring(detail)
			if cfg.reconnect ~= 0 and retryable(tostring(detail)) then
				return nil, why -- try again with backoff
			end
			fatal(EXIT_CONFIG, why)
		elseif kind ~= protocol.WELCOME then
			c:close()
			fatal(EXIT_CONFIG, "expected WELCOME, got message type " .. tostring(kind))
		end
		if cfg.verbose ~= 0 then
			log(string.format("connected (%s), layout %d features hash %08x, slot %d", backend, L.count, L.hash,
				assigned))
		end
		return c
	end

	-- the server went away (or refused us for now): with reconnect=1 keep MAME alive and retry with
	-- backoff (sleeping, not spinning, and with emulation paused), then carry on with the same game on
	-- a new run
	local function sleep(seconds)
		if transport.sleep then
			transport.sleep(seconds)
		else
			os.execute(string.format("sleep %.2f", seconds))
		end
	end
	local function handshake_retrying(reason)
		log(reason .. "; reconnecting")
		local give_up = (cfg.reconnect_max > 0) and (transport.now() + cfg.reconnect_max) or math.huge
		local wait = 0.25
		while true do
			local c, e = handshake()
			if c then
				log("reconnected")
				return c
			end
			if transport.now() + wait > give_up then
				fatal(EXIT_LOST, "gave up reconnecting after " .. cfg.reconnect_max .. " s: " .. tostring(e))
			end
			sleep(wait)
			wait = math.min(wait * 2, 10)
		end
	end
	local function reconnect(reason)
		if cfg.reconnect == 0 then
			fatal(EXIT_LOST, reason)
		end
		conn:close()
		conn = nil
		conn = handshake_retrying(reason)
	end

	local err
	conn, err = handshake()
	if not conn then
		if cfg.reconnect == 0 then
			fatal(EXIT_LOST, err)
		end
		conn = handshake_retrying(err)
	end

	flow.setup()
	local pipeline = cfg.pipeline ~= 0
	local raw, vals = {}, {}
	local frame = 0
	local seq = 0
	local last_tick = nil
	local prev_dead, prev_in_game, prev_level = nil, nil, nil
	local awaiting = false -- a STATE was sent and its ACTION not read yet
	local awaiting_control = false -- ...and that state gave the agent control
	local agent_owns_inputs = false
	local exec_fz, exec_spin, applied = 0, 0, false
	local new_game_pending = false
	local boot_saved = false
	local checked = false

	-- per-episode video: MAME writes what the screen shows (also with -video none) into its
	-- snapshot directory; an episode ends on the death tick, like the env's
	local video = machine.video
	local episode = 0
	local function next_recording()
		if cfg.record == "" then
			return
		end
		if video.is_recording then
			video:end_recording()
		end
		episode = episode + 1
		video:begin_recording(string.format("episode_%04d.%s", episode, cfg.record), cfg.record)
	end
	local function stop_recording()
		if cfg.record ~= "" and video.is_recording then
			video:end_recording()
		end
	end

	local function reset_trackers(seed)
		last_tick, prev_dead, prev_in_game, prev_level = nil, nil, nil, nil
		exec_fz, exec_spin, applied = 0, 0, false
		agent_owns_inputs = false
		rw.reset()
		flow.restart(frame, seed)
	end

	local function receive_action()
		local b, e = protocol.receive(conn, cfg.reply_timeout)
		if not b then
			reconnect("lost the server while waiting for an action: " .. tostring(e))
			awaiting, applied = false, false
			flow.release()
			agent_owns_inputs = false
			return false
		end
		local k, command, fz, spin, rseq, arg = protocol.parse(b)
		if k ~= protocol.ACTION then
			fatal(EXIT_ERROR, "expected ACTION, got message type " .. tostring(k))
		end
		if command == protocol.CMD_QUIT then
			if cfg.verbose ~= 0 then
				log("server asked to quit")
			end
			stop_recording()
			if prof then
				prof.write()
			end
			conn:close()
			os.exit(EXIT_QUIT)
		end
		if rseq ~= seq then
			fatal(EXIT_ERROR, string.format("ACTION answers state %d, expected %d (stream out of step)", rseq, seq))
		end
		awaiting = false
		if command == protocol.CMD_RESET then
			flow.release()
			machine:load(BOOT_STATE)
			reset_trackers(arg)
			new_game_pending = false
			next_recording()
			return true -- the load happens after this callback: nothing more this frame
		end
		if awaiting_control then
			if spin > MAX_SPIN then
				spin = MAX_SPIN
			elseif spin < -MAX_SPIN then
				spin = -MAX_SPIN
			end
			fz = fz & 3
			flow.apply(fz, spin)
			exec_fz, exec_spin, applied = fz, spin, true
			agent_owns_inputs = true
		else
			exec_fz, exec_spin, applied = 0, 0, false
		end
	end

	local trace
	if cfg.trace ~= "" then
		trace = io.open(cfg.trace, "wb")
		if not trace then
			fatal(EXIT_CONFIG, "cannot write trace file " .. cfg.trace)
		end
	end

	local function tick(R, ram)
		local t = prof and prof.now()
		local info = ex.extract(R, raw)
		if not checked then
			ex.check_complete(raw)
			checked = true
		end
		local dead = not info.alive
		local death = info.in_game and (info.playing or info.diving) and dead and prev_dead == false
		prev_dead = dead
		local f = 0
		if info.control then
			f = f | protocol.F_CONTROL
		end
		if applied then
			f = f | protocol.F_APPLIED
		end
		if death then
			next_recording()
			f = f | protocol.F_DEATH
			if info.lives <= 1 then
				f = f | protocol.F_GAME_OVER
			end
		end
		if info.in_game and prev_in_game == false then
			new_game_pending = true
		end
		-- flag the first tick after NEWGAM ($00) has run: the score is back at 0 from there on
		if new_game_pending and info.in_game and info.gs ~= 0x00 then
			f = f | protocol.F_NEW_GAME
			new_game_pending = false
		end
		if info.in_game and prev_level and info.level > prev_level and prev_level > 0 then
			f = f | protocol.F_LEVEL_UP
		end
		prev_in_game, prev_level = info.in_game, info.level
		if f & protocol.F_NEW_GAME ~= 0 then
			rw.reset() -- the score went back to 0: not a reward
		end
		local r_obj, r_subj = rw.step(info, R, death)
		ex.normalise(raw, vals)
		if prof then
			prof.add("state", t) -- extraction, flags, rewards, scaling
			t = prof.now()
		end
		seq = (seq + 1) & 0xFFFFFFFF
		if trace then -- before the send: when Python has the state, the trace has it too
			trace:write(string.pack("<I4", seq), ram)
			trace:flush()
		end
		local ok_send, e = conn:send(pack_state(f, info.gs, info.level, info.lives & 0xFF, exec_fz, exec_spin,
			seq, frame & 0xFFFFFFFF, info.score, r_obj, r_subj, vals))
		if prof then
			prof.add("send", t) -- packing and sending the STATE
			prof.tick()
		end
		if not ok_send then
			reconnect("lost the server while sending a state: " .. tostring(e))
			flow.release()
			agent_owns_inputs = false
			return -- no state went out: nothing to wait for; the next tick sends one
		end
		exec_fz, exec_spin, applied = 0, 0, false
		awaiting, awaiting_control = true, info.control
		if not info.control and agent_owns_inputs then
			flow.release()
			agent_owns_inputs = false
		end
	end

	local function step()
		frame = frame + 1
		if not boot_saved then
			-- the reset point: a save state of the freshly booted machine (scheduled; written
			-- after this callback). Loading it later gives a new game in ~0.1 s.
			machine:save(BOOT_STATE)
			boot_saved = true
			flow.restart(frame, cfg.seed)
			next_recording()
		end
		if awaiting then
			local t = prof and prof.now()
			local loaded = receive_action()
			if prof then
				prof.add("wait_next_frame", t) -- the pipelined reply, read one frame after its state
			end
			if loaded then
				return
			end
		end
		-- most frames are not ticks: one byte tells, the full RAM read waits for a tick
		local qframe = mem:read_u8(0x03)
		local gs, mode
		if qframe ~= last_tick then
			last_tick = qframe
			local t = prof and prof.now()
			local R, ram = ex.read(mem)
			if prof then
				prof.add("read", t)
			end
			tick(R, ram)
			-- Pipeline only with slack: the game's next loop starts when its IRQ counter FRTIMR ($53)
			-- reaches 9 (4.1 IRQs per video frame), and fire needs 2 IRQ samples to debounce. Measured:
			-- with FRTIMR <= 2 at the tick a reply applied one frame later lands on the next tick every
			-- time; from 4 on it mostly misses it. Otherwise read the reply now. (No state went out
			-- when the send failed and the client reconnected: then there is nothing to wait for.)
			if awaiting and (not pipeline or R[0x53 + 1] > cfg.pipeline_slack) then
				t = prof and prof.now()
				local loaded = receive_action()
				if prof then
					prof.add("wait_at_tick", t) -- no slack for pipelining: the reply is read at once
				end
				if loaded then
					return
				end
			end
			gs, mode = R[0x00 + 1], R[0x05 + 1] -- this frame's bytes: nothing in tick() writes them
		end
		if not agent_owns_inputs then
			local t = prof and prof.now()
			flow.frame(frame, gs or mem:read_u8(0x00), mode or mem:read_u8(0x05))
			if prof then
				prof.add("flow", t)
			end
		end
	end

	on_frame_done(function()
		local t = prof and prof.now()
		if prof then
			prof.frame()
		end
		local okf, e = pcall(step)
		if prof then
			prof.add("frame", t) -- the whole frame callback, waits included
		end
		if not okf then
			fatal(EXIT_ERROR, "Lua error: " .. tostring(e))
		end
	end)
	-- MAME 0.251 with the system Lua 5.3 segfaults at exit after any autoboot script unless
	-- the script leaves through os.exit from the stop callback (docs/mame.md 2)
	on_stop(function()
		stop_recording()
		if prof then
			prof.write()
		end
		if conn then
			pcall(conn.send, conn, protocol.bye("MAME is stopping"))
			conn:close()
		end
		os.exit(EXIT_QUIT)
	end)
end

return client

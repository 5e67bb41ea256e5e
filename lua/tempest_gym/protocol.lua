-- tempest-gym: message formats. Must match tempest_gym/bridge/protocol.py byte for byte.
-- Every message is a u32 little-endian body length followed by the body; the body's first
-- byte is the message type. One string.pack per message: no per-value packing loops.

local protocol = {}

protocol.MAGIC = "TMPG"
protocol.VERSION = 2
protocol.MAX_MESSAGE = 64 * 1024

protocol.HELLO, protocol.STATE, protocol.BYE = 0x01, 0x02, 0x03
protocol.WELCOME, protocol.REJECT, protocol.ACTION = 0x81, 0x82, 0x83

protocol.F_CONTROL = 0x01
protocol.F_APPLIED = 0x02
protocol.F_DEATH = 0x04
protocol.F_GAME_OVER = 0x08
protocol.F_NEW_GAME = 0x10
protocol.F_LEVEL_UP = 0x20

protocol.CMD_NONE, protocol.CMD_RESET, protocol.CMD_QUIT = 0, 1, 2

local pack, unpack = string.pack, string.unpack
local tunpack = table.unpack

function protocol.hello(layout_count, layout_hash, run_id_hi, run_id_lo, slot, flags, client, token)
	local body = pack("<Bc4HHI4I4I4I2I2s1s1", protocol.HELLO, protocol.MAGIC, protocol.VERSION,
		layout_count, layout_hash, run_id_hi, run_id_lo, slot, flags, client:sub(1, 255), token:sub(1, 255))
	return pack("<s4", body)
end

function protocol.bye(reason)
	reason = tostring(reason):sub(1, 1000)
	return pack("<s4", pack("<Bs2", protocol.BYE, reason))
end

-- The state format is built once for the layout's feature count: header + n float32.
-- Header: type, flags, gamestate, level, lives, exec_fz, exec_spin (i8), pad,
--         seq, frame, score (u32), reward_obj, reward_subj (f32).
function protocol.state_packer(n)
	local fmt = "<I4BBBBBBbBI4I4I4ff" .. string.rep("f", n)
	local body_len = 28 + 4 * n
	return function(flags, gs, level, lives, exec_fz, exec_spin, seq, frame, score, r_obj, r_subj, values)
		return pack(fmt, body_len, protocol.STATE, flags, gs, level, lives, exec_fz, exec_spin, 0,
			seq, frame, score, r_obj, r_subj, tunpack(values, 1, n))
	end
end

-- Parse a server body. Returns kind, fields...
--   WELCOME -> kind, version, slot
--   REJECT  -> kind, reason
--   ACTION  -> kind, command, fz, spin, seq, arg
function protocol.parse(body)
	local kind = body:byte(1)
	if kind == protocol.ACTION then
		if #body ~= 12 then
			error(string.format("ACTION of %d bytes, expected 12", #body))
		end
		local _, command, fz, spin, seq, arg = unpack("<BBBbI4I4", body)
		return kind, command, fz, spin, seq, arg
	elseif kind == protocol.WELCOME then
		local _, version, slot = unpack("<BHH", body)
		return kind, version, slot
	elseif kind == protocol.REJECT then
		local _, reason = unpack("<Bs2", body)
		return kind, reason
	end
	error(string.format("unexpected message type 0x%02x from server", kind or -1))
end

-- Read one message body through a transport connection; nil, err on timeout/close.
function protocol.receive(conn, timeout_s)
	local hdr, err = conn:recv_exact(4, timeout_s)
	if not hdr then
		return nil, err
	end
	local n = unpack("<I4", hdr)
	if n == 0 or n > protocol.MAX_MESSAGE then
		return nil, string.format("bad message length %d from server (stream corrupt)", n)
	end
	return conn:recv_exact(n, timeout_s)
end

return protocol

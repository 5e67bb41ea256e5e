-- tempest-gym: reads lua/state_layout.tsv, the single source of truth for the state vector.
-- The expansion and the FNV-1a hash must match tempest_gym/bridge/layout.py exactly.

local layout = {}

local function split_tabs(line)
	local cols = {}
	for col in (line .. "\t"):gmatch("([^\t]*)\t") do
		cols[#cols + 1] = col
	end
	return cols
end

-- 32-bit FNV-1a over a string (Lua 5.3+ integers are 64-bit, so the product never overflows)
function layout.fnv1a32(s)
	local h = 0x811C9DC5
	for i = 1, #s do
		h = ((h ~ s:byte(i)) * 0x01000193) & 0xFFFFFFFF
	end
	return h
end

-- Returns { names = {...}, scale = {...}, lo = {...}, hi = {...}, base = {group -> first index},
--           count = n, hash = h }. Indices are 1-based (Lua); base[g] + k is slot k (0-based).
function layout.load(path)
	local f, err = io.open(path, "r")
	if not f then
		error("cannot open state layout " .. path .. ": " .. tostring(err))
	end
	local L = { names = {}, scale = {}, lo = {}, hi = {}, base = {}, groups = {} }
	local canon = {}
	local lineno = 0
	for line in f:lines() do
		lineno = lineno + 1
		line = line:gsub("\r$", "")
		if line:match("%S") and not line:match("^%s*#") then
			local c = split_tabs(line)
			if #c ~= 6 then
				f:close()
				error(string.format("%s:%d: expected 6 tab-separated columns, got %d", path, lineno, #c))
			end
			local name, count = c[1], math.tointeger(tonumber(c[2]))
			local lo, hi, scale = math.tointeger(tonumber(c[3])), math.tointeger(tonumber(c[4])),
				math.tointeger(tonumber(c[5]))
			if not (count and lo and hi and scale) then
				f:close()
				error(string.format("%s:%d: count/lo/hi/scale must be integers", path, lineno))
			end
			L.base[name] = #L.names + 1
			L.groups[#L.groups + 1] = { name = name, count = count, lo = lo, hi = hi }
			for k = 0, count - 1 do
				local full = (count == 1) and name or (name .. "_" .. k)
				local i = #L.names + 1
				L.names[i], L.lo[i], L.hi[i], L.scale[i] = full, lo, hi, scale
				canon[#canon + 1] = string.format("%s:%d:%d:%d\n", full, lo, hi, scale)
			end
		end
	end
	f:close()
	L.count = #L.names
	L.hash = layout.fnv1a32(table.concat(canon))
	return L
end

return layout

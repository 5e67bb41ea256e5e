-- tempest-gym: where the client's time goes (setting profile=PATH; benchmarks/bridge_overhead.py --breakdown).
-- Sections are timed with the host's tick counter and written to PATH as "name count seconds" lines, plus
-- "wall 1 seconds" since the first frame, every `every` ticks and when the client stops. Off (nil) unless set.

local profile = {}

function profile.new(path, every)
	local clock, tps = emu.osd_ticks, emu.osd_ticks_per_second()
	local total, count = {}, {}
	local t0 = nil
	local ticks = 0
	local self = { now = clock }

	-- add the time since `since` (a self.now() value) to section `name`
	function self.add(name, since)
		local dt = clock() - since
		total[name] = (total[name] or 0) + dt
		count[name] = (count[name] or 0) + 1
	end

	function self.frame()
		t0 = t0 or clock()
	end

	function self.write()
		local f = io.open(path, "w")
		if not f then
			return
		end
		f:write(string.format("wall 1 %.9f\n", t0 and (clock() - t0) / tps or 0))
		for name, t in pairs(total) do
			f:write(string.format("%s %d %.9f\n", name, count[name], t / tps))
		end
		f:close()
	end

	function self.tick()
		ticks = ticks + 1
		if ticks % (every or 2048) == 0 then
			self.write()
		end
	end

	return self
end

return profile

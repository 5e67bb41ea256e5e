-- tempest-gym: the two per-tick rewards, sent separately (Python scales and mixes them).
--
-- objective: points scored since the previous tick, in game points. Start-level bonuses are
--   not play: they arrive at the end of a level (states $0E/$18) as one jump of >= 6,000
--   points, so jumps in those states or above `bonus_threshold` are dropped. A death costs
--   `death_penalty` points. A new game resets the score to 0; that drop is not a reward.
-- subjective: small shaping while the agent is in control: -1 when the player's lane is
--   threatened (an enemy shot about to reach the rim, a pulsing pulsar or a fuseball near
--   the rim in the lane, a rim chaser next door), +1 when it is safe and holds a target the
--   player can shoot, else 0. With the default scales a kill (150+ points) outweighs
--   hundreds of ticks of shaping.

local lane_offset = require("tempest_gym.state").lane_offset

local rewards = {}

local RIM = 0x10

local function lane_danger(R, lane, open)
	local pdepth = R[0x202 + 1]
	-- enemy shots close to the rim in this lane
	for m = 0, 3 do
		local d = R[0x2DB + m + 1]
		if d ~= 0 and d <= 0x30 and (R[0x2B5 + m + 1] & 0x0F) == lane then
			return true
		end
	end
	local pulson = R[0x148 + 1]
	local pulsing = pulson < 0x80 or pulson >= 0xF8 -- lethal now or within a couple of ticks
	local pulpot = R[0x157 + 1]
	for i = 0, 6 do
		local d = R[0x2DF + i + 1]
		if d ~= 0 then
			local a1 = R[0x283 + i + 1]
			local etype, flipping = a1 & 0x07, (a1 & 0x80) ~= 0
			local elane = R[0x2B9 + i + 1] & 0x0F
			if etype == 1 and elane == lane and not flipping and pulsing and d < pulpot then
				return true
			elseif etype == 4 and elane == lane and d <= 0x20 then
				return true
			elseif d == pdepth and etype ~= 4 then
				local delta = lane_offset(elane - lane, open)
				if delta >= -1 and delta <= 1 then
					return true
				end
			end
		end
	end
	return false
end

local function lane_has_target(R, lane)
	for i = 0, 6 do
		local d = R[0x2DF + i + 1]
		if d ~= 0 and d ~= RIM and (R[0x2B9 + i + 1] & 0x0F) == lane and (R[0x283 + i + 1] & 0x07) ~= 4 then
			return true
		end
	end
	return false
end

function rewards.new(cfg)
	local self = { prev_score = nil }

	function self.reset()
		self.prev_score = nil
	end

	-- info: decoded facts from state.extract; death: the death edge fired on this tick
	function self.step(info, R, death)
		local obj = 0
		local score = info.score
		if self.prev_score ~= nil and info.in_game then
			-- the 6-digit score wraps at 1,000,000 (the expert gets there); a new game resets the
			-- tracker (client.lua), so a drop can only be a wrap
			local delta = (score - self.prev_score) % 1000000
			local gs = info.gs
			if delta > 0 and delta < cfg.bonus_threshold and gs ~= 0x0E and gs ~= 0x18 then
				obj = delta
			end
		end
		self.prev_score = score
		if death then
			obj = obj - cfg.death_penalty
		end
		local subj = 0
		if info.control then
			if lane_danger(R, info.lane, info.open) then
				subj = -1
			elseif lane_has_target(R, info.lane) then
				subj = 1
			end
		end
		return obj, subj
	end

	return self
end

return rewards

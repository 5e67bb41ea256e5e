-- tempest-gym autoboot script for MAME 0.251+ (Lua 5.3 or 5.4):
--   mame tempest1 -autoboot_script lua/autoboot.lua
-- Settings come from $TEMPEST_GYM_CONFIG / $TEMPEST_GYM_* (see tempest_gym/config.lua).
local source = debug.getinfo(1, "S").source:gsub("^@", "")
local dir = source:match("^(.*)[/\\]") or "."
if not package.path:find(dir .. "/?.lua", 1, true) then
	package.path = dir .. "/?.lua;" .. package.path
end
require("tempest_gym.client").start(dir)

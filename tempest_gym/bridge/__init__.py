"""The emulator bridge: everything between Python and the MAME processes running ``lua/``.

* ``protocol`` - the wire format (docs/protocol.md), the Python half of ``lua/tempest_gym/protocol.lua``;
* ``layout`` - the observation layout read from ``lua/state_layout.tsv`` (docs/state.md);
* ``constants`` - game and wire constants (lanes, spinner limit, start levels, lives, any-slot), the Python half
  of ``lua/tempest_gym/constants.lua``;
* ``paths`` - where the Lua client and the released model are;
* ``mame`` - finding MAME and the ROMs, starting and supervising one MAME process;
* ``server`` - the TCP server and its handshake;
* ``cluster`` - N clients stepped in lockstep (the engine under ``tempest_gym.env``);
* ``synthetic_client`` - a stand-in for MAME that speaks the protocol at full speed (tests, benchmarks).

Nothing here imports from the layers above (env, algorithm, training, cli).
"""

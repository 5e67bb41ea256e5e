"""A stand-in for MAME that speaks the real protocol at full speed (no emulation).

Used as the ``mame`` binary (through a tiny wrapper script, see :func:`write_wrapper`) to measure
the Python side's ceiling (``benchmarks/vecenv_policy.py``) and to test env mechanics without
ROMs. It reads the same ``$TEMPEST_GYM_CONFIG`` file as the Lua client, answers
``-verifyroms`` like MAME, sends valid observations drawn from the layout's ranges, and dies
every ``death_every`` ticks so episodes end.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np

from tempest_gym.bridge import protocol
from tempest_gym.bridge.layout import default_layout


def read_config(path: str) -> dict[str, str]:
    cfg = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            cfg[k.strip()] = v.strip()
    return cfg


def recv_body(sock: socket.socket, decoder: protocol.FrameDecoder) -> bytes:
    """The server's next message body (the protocol's own framing)."""
    while (body := decoder.next_body()) is None:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed")
        decoder.feed(chunk)
    return body


def run(cfg: dict[str, str], death_every: int = 600, pool: int = 64) -> int:
    layout = default_layout()
    slot = int(cfg.get("slot", 0))
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    raw = rng.integers(layout.lo, layout.hi + 1, size=(pool, layout.size))
    bodies = [row.tobytes() for row in (raw / layout.scale).astype("<f4")]  # the features' wire bytes
    sock = socket.create_connection((cfg.get("host", "127.0.0.1"), int(cfg["port"])), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hello = protocol.Hello(protocol.PROTOCOL_VERSION, layout.size, layout.hash, int(rng.integers(2**62)), slot, 0,
                           "synthetic client", cfg.get("token", ""))  # fmt: skip
    sock.sendall(protocol.encode_hello(hello))
    decoder = protocol.FrameDecoder()
    reply = recv_body(sock, decoder)
    if reply[0] != protocol.WELCOME:
        print(f"refused: {protocol.decode_reject(reply)}", file=sys.stderr)
        return 3
    seq = 0
    lives, score = 3, 0
    exec_fz = exec_spin = 0
    applied = False
    pack_state = protocol.pack_state
    while True:
        seq += 1
        death = seq % death_every == 0
        flags = protocol.F_CONTROL | (protocol.F_APPLIED if applied else 0) | (protocol.F_DEATH if death else 0)
        if death:
            lives -= 1
            if lives == 0:
                flags |= protocol.F_GAME_OVER
                lives = 3
        score += 150 if seq % 40 == 0 else 0
        sock.sendall(pack_state(flags, 4, 1, lives, exec_fz, exec_spin, seq, seq * 2, score,
                                150.0 if seq % 40 == 0 else 0.0, 0.0, bodies[seq % pool]))  # fmt: skip
        command, fz, spin, rseq, _arg = protocol.decode_action(recv_body(sock, decoder))
        if command == protocol.CMD_QUIT:
            return 0
        if rseq != seq:
            print(f"ACTION answers {rseq}, expected {seq}", file=sys.stderr)
            return 4
        exec_fz, exec_spin, applied = fz, spin, True
        if command == protocol.CMD_RESET:
            score, lives, applied = 0, 3, False


def write_wrapper(directory: str | os.PathLike) -> str:
    """An executable that runs this module; pass it as ``mame=`` to TempestVecEnv."""
    path = Path(directory) / "synthetic-mame"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tempest_gym.bridge.synthetic_client "$@"\n')
    path.chmod(0o755)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-verifyroms" in argv:
        print("romset tempest1 is good")
        return 0
    cfg_path = os.environ.get("TEMPEST_GYM_CONFIG")
    if not cfg_path:
        print("TEMPEST_GYM_CONFIG is not set", file=sys.stderr)
        return 3
    try:
        return run(read_config(cfg_path))
    except (ConnectionError, OSError) as exc:
        print(f"synthetic client: {exc}", file=sys.stderr)
        return 5


if __name__ == "__main__":
    sys.exit(main())

"""Wire protocol between the MAME Lua client and the Python server (see docs/protocol.md).

Every message is ``u32 little-endian body length`` + body; the body's first byte is its type.
Lengths are exact and bounded, so partial reads are reassembled (:class:`FrameDecoder`) and a
corrupt stream is detected instead of silently desynchronising.  ``lua/tempest_gym/protocol.lua``
is the other half; the formats below must stay identical to the ``string.pack`` formats there.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"TMPG"
PROTOCOL_VERSION = 2
MAX_MESSAGE = 64 * 1024  # bytes in one body; a state is ~1 KB, anything bigger is garbage

# message types (client -> server)
HELLO = 0x01
STATE = 0x02
BYE = 0x03
# message types (server -> client)
WELCOME = 0x81
REJECT = 0x82
ACTION = 0x83

# STATE flags
F_CONTROL = 0x01  # the action answering this state will be executed as the agent's
F_APPLIED = 0x02  # the previous answer was executed as the agent's action (a real transition)
F_DEATH = 0x04  # the player died on this tick: the episode ends here
F_GAME_OVER = 0x08  # ...and it was the last life
F_NEW_GAME = 0x10  # a new game started since the previous state
F_LEVEL_UP = 0x20  # the level number increased since the previous state

# ACTION commands
CMD_NONE = 0
CMD_RESET = 1  # start a fresh game from the boot save state; arg = seed
CMD_QUIT = 2  # exit MAME cleanly

#: the STATE header, field by field in wire order (struct code, little-endian): the header's ``struct``, its numpy
#: dtype (:func:`state_dtype`) and :class:`StateHeader` all derive from this table
STATE_FIELDS = (
    ("type", "B"),
    ("flags", "B"),
    ("gamestate", "B"),
    ("level", "B"),
    ("lives", "B"),
    ("exec_fz", "B"),
    ("exec_spin", "b"),
    ("pad", "B"),
    ("seq", "I"),
    ("frame", "I"),
    ("score", "I"),
    ("reward_obj", "f"),
    ("reward_subj", "f"),
)
#: the ACTION body, field by field in wire order
ACTION_FIELDS = (
    ("type", "B"),
    ("command", "B"),
    ("fz", "B"),
    ("spin", "b"),
    ("seq", "I"),
    ("arg", "I"),
)
_NUMPY = {"B": "u1", "b": "i1", "H": "<u2", "I": "<u4", "f": "<f4"}

_LEN = struct.Struct("<I")
_HELLO = struct.Struct("<B4sHHIIIHH")
STATE_HEADER = struct.Struct("<" + "".join(code for _, code in STATE_FIELDS))
_STATE_NAMES = tuple(name for name, _ in STATE_FIELDS)
_REASON = struct.Struct("<BH")  # BYE and REJECT: type, u16 length, then the reason's bytes
_ACTION = struct.Struct("<" + "".join(code for _, code in ACTION_FIELDS))
#: a framed ACTION (the length, then the body) in one struct, and its size
_ACTION_FRAMED = struct.Struct("<I" + _ACTION.format[1:])
ACTION_FRAME_SIZE = _ACTION_FRAMED.size
#: a framed STATE header (the length, then the header) in one struct: one pack per message
_STATE_FRAMED = struct.Struct("<I" + STATE_HEADER.format[1:])
_HEADER_BEFORE_PAD = operator.attrgetter(*_STATE_NAMES[1 : _STATE_NAMES.index("pad")])
_HEADER_AFTER_PAD = operator.attrgetter(*_STATE_NAMES[_STATE_NAMES.index("pad") + 1 :])
_WELCOME = struct.Struct("<BHH")


def state_dtype(n_features: int) -> np.dtype:
    """numpy view of one STATE body: the header fields, then ``obs`` (n float32); ``np.frombuffer`` reads N at once."""
    return np.dtype([(name, _NUMPY[code]) for name, code in STATE_FIELDS] + [("obs", "<f4", (n_features,))])


class ProtocolError(Exception):
    """The byte stream or a message in it is invalid; the connection cannot be trusted."""


class HandshakeError(ProtocolError):
    """The client speaks another protocol version or another state layout."""


@dataclass(frozen=True)
class Hello:
    version: int
    layout_count: int
    layout_hash: int
    run_id: int
    slot: int
    flags: int
    client: str
    token: str


@dataclass(frozen=True)
class StateHeader:
    """The STATE header's fields (all of :data:`STATE_FIELDS` but ``type`` and ``pad``)."""

    flags: int
    gamestate: int
    level: int
    lives: int
    exec_fz: int
    exec_spin: int
    seq: int
    frame: int
    score: int
    reward_obj: float
    reward_subj: float


def frame(body: bytes) -> bytes:
    """Prefix a body with its length."""
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Reassembles length-prefixed bodies from arbitrary chunks (partial reads are normal)."""

    __slots__ = ("_buf", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_message = max_message

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_body(self) -> bytes | None:
        """The next complete body, or None until more bytes arrive."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (n,) = _LEN.unpack_from(buf)
        if n == 0 or n > self.max_message:
            raise ProtocolError(
                f"bad message length {n} (limit {self.max_message}); stream is corrupt or not tempest-gym"
            )
        if len(buf) < 4 + n:
            return None
        body = bytes(buf[4 : 4 + n])
        del buf[: 4 + n]
        return body


def encode_hello(hello: Hello) -> bytes:
    """Build a HELLO (Python never sends one; used by tests and synthetic clients)."""
    body = _HELLO.pack(
        HELLO,
        MAGIC,
        hello.version,
        hello.layout_count,
        hello.layout_hash,
        (hello.run_id >> 32) & 0xFFFFFFFF,
        hello.run_id & 0xFFFFFFFF,
        hello.slot,
        hello.flags,
    )
    for s in (hello.client, hello.token):
        raw = s.encode()
        if len(raw) > 255:
            raise ValueError("hello strings are limited to 255 bytes")
        body += bytes([len(raw)]) + raw
    return frame(body)


def decode_hello(body: bytes) -> Hello:
    if len(body) < _HELLO.size + 2:
        raise ProtocolError(f"HELLO too short ({len(body)} bytes)")
    kind, magic, version, count, lhash, rid_hi, rid_lo, slot, flags = _HELLO.unpack_from(body)
    if kind != HELLO:
        raise ProtocolError(f"expected HELLO (0x01) first, got message type 0x{kind:02x}")
    if magic != MAGIC:
        raise HandshakeError(f"bad magic {magic!r} (expected {MAGIC!r}): not a tempest-gym client")
    strings = []
    off = _HELLO.size
    for _ in range(2):
        if off >= len(body):
            raise ProtocolError("HELLO truncated inside its strings")
        n = body[off]
        if off + 1 + n > len(body):
            raise ProtocolError("HELLO truncated inside its strings")
        strings.append(body[off + 1 : off + 1 + n].decode("utf-8", "replace"))
        off += 1 + n
    if off != len(body):
        raise ProtocolError(f"HELLO has {len(body) - off} trailing bytes")
    return Hello(version, count, lhash, (rid_hi << 32) | rid_lo, slot, flags, strings[0], strings[1])


def check_hello(hello: Hello, layout_count: int, layout_hash: int) -> None:
    """Refuse a client whose protocol version or layout differs, naming both sides."""
    if hello.version != PROTOCOL_VERSION:
        raise HandshakeError(
            f"protocol version mismatch: client speaks v{hello.version}, server speaks "
            f"v{PROTOCOL_VERSION} ({hello.client}); run the Lua client from the same tempest-gym release"
        )
    if hello.layout_count != layout_count or hello.layout_hash != layout_hash:
        raise HandshakeError(
            "state layout mismatch: client has "
            f"{hello.layout_count} features, hash {hello.layout_hash:08x}; server has "
            f"{layout_count} features, hash {layout_hash:08x}. Both must read the same "
            "lua/state_layout.tsv"
        )


def encode_state(header: StateHeader, obs: np.ndarray | bytes) -> bytes:
    """Build a STATE (the Lua client's job; used by tests and synthetic clients). ``obs``: the features, or their
    little-endian float32 bytes."""
    data = obs if isinstance(obs, bytes) else np.asarray(obs, dtype="<f4").tobytes()
    return pack_state(*_HEADER_BEFORE_PAD(header), *_HEADER_AFTER_PAD(header), data)


def pack_state(flags: int, gamestate: int, level: int, lives: int, exec_fz: int, exec_spin: int, seq: int,
               frame: int, score: int, reward_obj: float, reward_subj: float, obs: bytes) -> bytes:  # fmt: skip
    """:func:`encode_state` from the header's fields in wire order and the features' float32 bytes, the way the
    Lua client's ``protocol.state_packer`` takes them (one pack per message; synthetic clients use this)."""
    n = STATE_HEADER.size + len(obs)
    if n > MAX_MESSAGE:
        raise ProtocolError(f"message of {n} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _STATE_FRAMED.pack(n, STATE, flags, gamestate, level, lives, exec_fz, exec_spin, 0, seq, frame, score,
                              reward_obj, reward_subj) + obs  # fmt: skip


def decode_state_header(body: bytes, n_features: int) -> StateHeader:
    expected = STATE_HEADER.size + 4 * n_features
    if len(body) != expected:
        raise ProtocolError(f"STATE of {len(body)} bytes, expected {expected} for {n_features} features")
    f = dict(zip(_STATE_NAMES, STATE_HEADER.unpack_from(body), strict=True))
    if f["type"] != STATE:
        raise ProtocolError(f"expected STATE (0x02), got message type 0x{f['type']:02x}")
    return StateHeader(**{k: v for k, v in f.items() if k not in ("type", "pad")})


def decode_state(body: bytes, n_features: int) -> tuple[StateHeader, np.ndarray]:
    header = decode_state_header(body, n_features)
    obs = np.frombuffer(body, dtype="<f4", count=n_features, offset=STATE_HEADER.size)
    return header, obs


def _decode_reason(body: bytes) -> str:
    if len(body) < _REASON.size:
        return "(no reason given)"
    _, n = _REASON.unpack_from(body)
    return body[_REASON.size : _REASON.size + n].decode("utf-8", "replace")


def decode_bye(body: bytes) -> str:
    """A client's last words: why it is leaving (a Lua error, a refused handshake...)."""
    return _decode_reason(body)


def decode_reject(body: bytes) -> str:
    """Why the server refused a client (REJECT; Python never receives one: used by tests and synthetic clients)."""
    return _decode_reason(body)


def encode_action(seq: int, fz: int, spin: int, command: int = CMD_NONE, arg: int = 0) -> bytes:
    return frame(_ACTION.pack(ACTION, command, fz, spin, seq & 0xFFFFFFFF, arg & 0xFFFFFFFF))


def _ints(values) -> list:
    return values.tolist() if isinstance(values, np.ndarray) else np.asarray(values).tolist()


def encode_actions(seq, fz, spin, command=CMD_NONE, arg=0) -> bytes:
    """N framed ACTIONs back to back, the same bytes as N :func:`encode_action` calls (client ``i``'s are
    ``[i * ACTION_FRAME_SIZE, (i + 1) * ACTION_FRAME_SIZE)``). ``command`` and ``arg`` are one value for all or one
    per client. (One ``struct`` pack per client over plain ints: cheaper than numpy up to a few dozen clients.)"""
    seq, fz, spin = _ints(seq), _ints(fz), _ints(spin)
    n = len(seq)
    command = [int(command)] * n if isinstance(command, (int, np.integer)) else _ints(command)
    arg = [int(arg)] * n if isinstance(arg, (int, np.integer)) else _ints(arg)
    pack, size = _ACTION_FRAMED.pack, _ACTION.size
    try:
        return b"".join([pack(size, ACTION, c, f, s, q & 0xFFFFFFFF, a & 0xFFFFFFFF)
                         for q, f, s, c, a in zip(seq, fz, spin, command, arg, strict=True)])  # fmt: skip
    except struct.error as exc:
        raise ValueError(f"an ACTION field is out of range: {exc}") from exc


def decode_action(body: bytes) -> tuple[int, int, int, int, int]:
    """(command, fz, spin, seq, arg) — the Lua client's job; used by tests."""
    if len(body) != _ACTION.size:
        raise ProtocolError(f"ACTION of {len(body)} bytes, expected {_ACTION.size}")
    kind, command, fz, spin, seq, arg = _ACTION.unpack(body)
    if kind != ACTION:
        raise ProtocolError(f"expected ACTION (0x83), got 0x{kind:02x}")
    return command, fz, spin, seq, arg


def encode_welcome(slot: int = 0) -> bytes:
    """WELCOME carries the slot the server assigned (remote clients may ask for any)."""
    return frame(_WELCOME.pack(WELCOME, PROTOCOL_VERSION, slot))


def encode_reject(reason: str) -> bytes:
    raw = reason.encode()[:1000]
    return frame(_REASON.pack(REJECT, len(raw)) + raw)

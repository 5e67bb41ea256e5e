"""Wire protocol: framing, round trips and refusals (no MAME needed)."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempest_gym.bridge import constants, protocol
from tempest_gym.bridge.layout import default_layout
from tempest_gym.bridge.protocol import FrameDecoder, HandshakeError, Hello, ProtocolError, StateHeader
from tempest_gym.bridge.server import Server
from tempest_gym.errors import ClientTimeoutError

LAYOUT = default_layout()
D = LAYOUT.size
LUA = Path(__file__).resolve().parent.parent / "lua" / "tempest_gym"


def make_hello(**kw) -> Hello:
    fields = dict(
        version=protocol.PROTOCOL_VERSION,
        layout_count=LAYOUT.size,
        layout_hash=LAYOUT.hash,
        run_id=0x0123456789ABCDEF,
        slot=3,
        flags=3,
        client="Lua 5.3; test",
        token="",
    )
    fields.update(kw)
    return Hello(**fields)


def make_state(seq: int = 7, flags: int = protocol.F_CONTROL, seed: int = 0) -> tuple[StateHeader, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.uniform(LAYOUT.low, LAYOUT.high).astype(np.float32)
    header = StateHeader(flags, 4, 3, 2, 1, -17, seq, 12345, 987654, 150.0, -1.0)
    return header, obs


def test_hello_round_trip():
    hello = make_hello()
    data = protocol.encode_hello(hello)
    dec = FrameDecoder()
    dec.feed(data)
    assert protocol.decode_hello(dec.next_body()) == hello
    assert dec.buffered == 0


def test_state_round_trip_and_numpy_view_agree():
    header, obs = make_state()
    data = protocol.encode_state(header, obs)
    body = data[4:]
    got_header, got_obs = protocol.decode_state(body, D)
    assert got_header == header
    np.testing.assert_array_equal(got_obs, obs)
    # the cluster parses N bodies at once through a structured dtype: same fields
    arr = np.frombuffer(body * 2, dtype=protocol.state_dtype(D))
    assert arr["exec_spin"][1] == -17 and arr["score"][0] == 987654 and arr["seq"][1] == 7
    np.testing.assert_array_equal(arr["obs"][1], obs)


def test_action_round_trip():
    data = protocol.encode_action(42, 3, -31, protocol.CMD_RESET, 99)
    assert protocol.decode_action(data[4:]) == (protocol.CMD_RESET, 3, -31, 42, 99)


def test_a_steps_actions_encoded_at_once_are_the_single_messages_back_to_back():
    seq = np.array([1, 2**32 - 1, 7, 0], np.uint32)
    fz, spin = np.array([0, 3, 1, 2]), np.array([-31, 31, 0, -1])
    command = np.array([protocol.CMD_NONE, protocol.CMD_RESET, protocol.CMD_QUIT, 0])
    arg = np.array([0, 2**31 + 3, 5, 0])
    data = protocol.encode_actions(seq, fz, spin, command, arg)
    singles = [protocol.encode_action(*map(int, row)) for row in zip(seq, fz, spin, command, arg, strict=True)]
    assert data == b"".join(singles) and len(data) == 4 * protocol.ACTION_FRAME_SIZE
    plain = [protocol.encode_action(int(q), int(f), int(p)) for q, f, p in zip(seq, fz, spin, strict=True)]
    assert protocol.encode_actions(seq, fz, spin) == b"".join(plain)
    with pytest.raises(ValueError):
        protocol.encode_actions(seq, fz, np.array([0, 0, 0, 200]))


def test_state_from_feature_bytes_is_the_same_message():
    header, obs = make_state()
    assert protocol.encode_state(header, obs.astype("<f4").tobytes()) == protocol.encode_state(header, obs)


def test_stream_split_at_every_byte():
    """Partial reads are normal on TCP: any split of a stream decodes to the same messages."""
    header, obs = make_state()
    stream = protocol.encode_hello(make_hello()) + protocol.encode_state(header, obs) + protocol.encode_action(1, 2, 3)
    expected = [stream[4 : 4 + len(protocol.encode_hello(make_hello())) - 4]]
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        bodies = []
        for part in (stream[:cut], stream[cut:]):
            dec.feed(part)
            while (b := dec.next_body()) is not None:
                bodies.append(b)
        assert len(bodies) == 3, cut
        assert bodies[0] == expected[0]
        assert protocol.decode_state(bodies[1], D)[0] == header
        assert protocol.decode_action(bodies[2]) == (0, 2, 3, 1, 0)


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
)
def test_framing_property_any_chunking(bodies, cuts):
    stream = b"".join(protocol.frame(b) for b in bodies)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    dec = FrameDecoder()
    out = []
    for a, b in zip(points, points[1:]):
        dec.feed(stream[a:b])
        while (body := dec.next_body()) is not None:
            out.append(body)
    assert out == bodies
    assert dec.buffered == 0


@settings(max_examples=200, deadline=None)
@given(prefix=st.binary(min_size=4, max_size=64))
def test_garbage_is_rejected_or_waits_never_misparsed(prefix):
    """Random bytes either need more data or raise ProtocolError; they never yield a bogus STATE."""
    dec = FrameDecoder(max_message=protocol.MAX_MESSAGE)
    dec.feed(prefix)
    try:
        body = dec.next_body()
    except ProtocolError:
        return
    if body is not None:
        with pytest.raises(ProtocolError):
            protocol.decode_state(body, D) if len(body) != 28 + 4 * D else protocol.decode_hello(body)


def test_oversized_and_zero_length_rejected():
    dec = FrameDecoder()
    dec.feed((protocol.MAX_MESSAGE + 1).to_bytes(4, "little"))
    with pytest.raises(ProtocolError, match="bad message length"):
        dec.next_body()
    dec = FrameDecoder()
    dec.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="bad message length 0"):
        dec.next_body()
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.frame(b"x" * (protocol.MAX_MESSAGE + 1))


def test_truncated_messages_rejected():
    header, obs = make_state()
    body = protocol.encode_state(header, obs)[4:]
    with pytest.raises(ProtocolError, match="expected"):
        protocol.decode_state(body[:-1], D)
    hello = protocol.encode_hello(make_hello())[4:]
    for n in (1, 10, len(hello) - 1):
        with pytest.raises(ProtocolError):
            protocol.decode_hello(hello[:n])
    with pytest.raises(ProtocolError, match="ACTION"):
        protocol.decode_action(protocol.encode_action(1, 0, 0)[4:-1])


def test_bad_magic_version_and_layout_are_named():
    body = bytearray(protocol.encode_hello(make_hello())[4:])
    body[1:5] = b"XXXX"
    with pytest.raises(HandshakeError, match="bad magic"):
        protocol.decode_hello(bytes(body))
    with pytest.raises(HandshakeError, match=rf"client speaks v9, server speaks v{protocol.PROTOCOL_VERSION}"):
        protocol.check_hello(make_hello(version=9), LAYOUT.size, LAYOUT.hash)
    bad = make_hello(layout_count=LAYOUT.size - 1, layout_hash=0xDEADBEEF)
    with pytest.raises(HandshakeError) as exc:
        protocol.check_hello(bad, LAYOUT.size, LAYOUT.hash)
    msg = str(exc.value)
    assert "deadbeef" in msg and f"{LAYOUT.hash:08x}" in msg and str(LAYOUT.size - 1) in msg


def _client(port: int, data: bytes, replies: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(4096):
                replies.append(chunk)
        except OSError:
            pass


@pytest.mark.parametrize(
    "hello, match",
    [
        (make_hello(version=1), "protocol version mismatch"),
        (make_hello(layout_hash=1), "state layout mismatch"),
        (make_hello(slot=7), "claims slot 7"),
    ],
)
def test_live_server_refuses_bad_handshake_with_reason(hello, match):
    """A bad client is answered with REJECT + reason and dropped; the server keeps waiting (then times out)."""
    server = Server()
    replies: list[bytes] = []
    t = threading.Thread(target=_client, args=(server.port, protocol.encode_hello(hello), replies))
    t.start()
    try:
        with pytest.raises(ClientTimeoutError, match=match):
            server.accept({0}, LAYOUT.size, LAYOUT.hash, timeout=2)
    finally:
        t.join(5)
        server.close()
    reply = b"".join(replies)
    assert reply[4] == protocol.REJECT
    assert match.split()[0] in reply[7:].decode()


def test_live_server_accepts_good_handshake_in_pieces():
    server = Server()
    data = protocol.encode_hello(make_hello(slot=0))

    def dribble():
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            for i in range(len(data)):
                s.sendall(data[i : i + 1])
            assert s.recv(16)[4] == protocol.WELCOME

    t = threading.Thread(target=dribble)
    t.start()
    try:
        got = server.accept({0}, LAYOUT.size, LAYOUT.hash, timeout=5)
        assert got[0].hello.run_id == 0x0123456789ABCDEF
    finally:
        t.join(5)
        for c in got.values():
            c.close()
        server.close()


def test_port_in_use_and_non_loopback_without_token():
    from tempest_gym.errors import PortInUseError

    first = Server()
    try:
        with pytest.raises(PortInUseError, match="already in use"):
            Server(port=first.port)
    finally:
        first.close()
    with pytest.raises(ValueError, match="token"):
        Server(host="0.0.0.0")


# ------------------------------------------------------------------ one definition per language, both agreeing
def lua_table(text: str, name: str) -> str:
    m = re.search(rf"constants\.{name} = \{{([^}}]*)\}}", text)
    assert m, f"constants.lua has no table {name}"
    return m.group(1)


def test_lua_constants_match_python():
    text = (LUA / "constants.lua").read_text()
    assert int(re.search(r"constants\.MAX_SPIN = (\w+)", text).group(1), 0) == constants.MAX_SPIN
    assert int(re.search(r"constants\.ANY_SLOT = (\w+)", text).group(1), 0) == constants.ANY_SLOT
    assert tuple(int(v) for v in lua_table(text, "START_LEVELS").replace(",", " ").split()) == constants.START_LEVELS
    assert tuple(sorted(int(k) for k in re.findall(r"\[(\d+)\]", lua_table(text, "LIVES_DIP")))) == constants.LIVES
    for path in LUA.glob("*.lua"):  # every other Lua module takes them from there
        if path.name != "constants.lua":
            assert not re.search(r"(MAX_SPIN|ANY_SLOT|START_LEVELS|LIVES_DIP) = [{\d]", path.read_text()), path.name


def lua_format(fmt: str) -> str:
    """A Lua ``string.pack`` format as Python ``struct``'s (the codes this protocol uses)."""
    codes = {"I4": "I", "I2": "H", "c4": "4s"}
    return "<" + "".join(codes.get(t, t) for t in re.findall(r"[A-Za-z]\d*", fmt.lstrip("<")))


def test_lua_message_formats_match_python():
    text = (LUA / "protocol.lua").read_text()
    state = re.search(r'local fmt = "([^"]+)"', text).group(1)
    assert lua_format(state).replace("<I", "<", 1) == protocol.STATE_HEADER.format, "STATE (after the length)"
    assert int(re.search(r"local body_len = (\d+) \+ 4 \* n", text).group(1)) == protocol.STATE_HEADER.size
    hello = re.search(r'pack\("(<Bc4[^"]+)"', text).group(1)
    assert lua_format(hello).removesuffix("s1s1") == protocol._HELLO.format, "HELLO (then client and token)"
    assert lua_format(re.search(r'unpack\("(<BBBb[^"]+)", body\)', text).group(1)) == protocol._ACTION.format
    assert f"#body ~= {protocol._ACTION.size}" in text
    assert 'unpack("<BHH", body)' in text and protocol._WELCOME.format == "<BHH"
    assert 'unpack("<Bs2", body)' in text and protocol._REASON.format == "<BH", "REJECT: type, u16 length, text"


def test_state_header_fields_come_from_one_table():
    names = [name for name, _ in protocol.STATE_FIELDS]
    assert list(protocol.state_dtype(D).names) == [*names, "obs"]
    assert protocol.state_dtype(D).itemsize == protocol.STATE_HEADER.size + 4 * D
    assert [f for f in StateHeader.__dataclass_fields__] == [n for n in names if n not in ("type", "pad")]

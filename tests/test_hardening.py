"""Hostile or broken peers against a live server: each is refused with a reason, good clients go on."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tempest_gym import protocol
from tempest_gym.layout import default_layout
from tempest_gym.server import ANY_SLOT, Server

LAYOUT = default_layout()


def hello(**kw) -> bytes:
    fields = dict(version=protocol.PROTOCOL_VERSION, layout_count=LAYOUT.size, layout_hash=LAYOUT.hash, run_id=1,
                  slot=0, flags=0, client="test", token="")  # fmt: skip
    fields.update(kw)
    return protocol.encode_hello(protocol.Hello(**fields))


def send_and_read(port: int, data: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        if not read:
            return b""
        try:
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out
        except OSError:
            return b""


def accept_with(server: Server, peers, slots=frozenset({0}), timeout: float = 5.0, token_ok: bool = True):
    threads = [threading.Thread(target=p, daemon=True) for p in peers]
    for t in threads:
        t.start()
    try:
        return server.accept(set(slots), LAYOUT.size, LAYOUT.hash, timeout)
    finally:
        for t in threads:
            t.join(5)


def good_client(port: int, box: list, **kw):
    def run():
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(hello(**kw))
        try:
            box.append((s, s.recv(16)))
        except OSError:  # a fuzzed peer that sent a complete valid HELLO took the slot first
            s.close()

    return run


def test_strangers_do_not_stop_a_good_client():
    server = Server(handshake_timeout=1.0)
    box: list = []
    port = server.port
    silent = socket.create_connection(("127.0.0.1", port))  # connects and says nothing
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(hello()[:10])  # half a HELLO, then stalls
    try:
        peers = [
            lambda: send_and_read(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),  # garbage
            lambda: send_and_read(port, b"\xff\xff\xff\xff" + b"x" * 100),  # oversized length
            lambda: send_and_read(port, hello(version=1)),  # old version
            good_client(port, box),
        ]
        got = accept_with(server, peers)
        assert list(got) == [0]
        assert box and box[0][1][4] == protocol.WELCOME
        time.sleep(1.5)
        server.poll(set(), LAYOUT.size, LAYOUT.hash, 0.1)  # the silent and the half one time out
        reasons = " | ".join(server.rejected)
        for needle in ("bad message length", "protocol version mismatch", "no complete handshake"):
            assert needle in reasons, (needle, reasons)
    finally:
        silent.close()
        half.close()
        for c in got.values():
            c.close()
        for s, _ in box:
            s.close()
        server.close()


def test_token_required_off_loopback_and_checked():
    with pytest.raises(ValueError, match="token"):
        Server(host="0.0.0.0", token="")
    server = Server(host="0.0.0.0", token="s3cret")
    box: list = []
    try:
        port = server.port
        wrong = []

        def good_after_the_wrong_ones():
            # accept() returns once slot 0 is taken: let the server answer both wrong tokens first
            deadline = time.monotonic() + 4.0
            while len(wrong) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            good_client(port, box, token="s3cret")()

        peers = [lambda: wrong.append(send_and_read(port, hello(token="guess"))),
                 lambda: wrong.append(send_and_read(port, hello(token=""))),
                 good_after_the_wrong_ones]  # fmt: skip
        got = accept_with(server, peers)
        assert len(wrong) == 2
        assert list(got) == [0]
        assert all(r[4] == protocol.REJECT and b"token" in r for r in wrong)
        assert sum("token" in r for r in server.rejected) == 2
    finally:
        for s, _ in box:
            s.close()
        server.close()


def test_loopback_needs_no_token_and_any_slot_is_assigned():
    server = Server()
    box: list = []
    try:
        got = accept_with(server, [good_client(server.port, box, slot=ANY_SLOT)], slots={3})
        assert list(got) == [3] and got[3].slot == 3
        assert int.from_bytes(box[0][1][7:9], "little") == 3  # WELCOME tells the client its slot
    finally:
        for s, _ in box:
            s.close()
        server.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(min_size=1, max_size=200), st.builds(lambda b, i: hello()[:i] + b,
                                                                        st.binary(max_size=40),
                                                                        st.integers(0, 40))))  # fmt: skip
def test_fuzzed_bytes_at_a_live_server_never_break_it(data):
    server = Server(handshake_timeout=0.5)
    box: list = []
    try:
        got = accept_with(server, [lambda: send_and_read(server.port, data, read=False), good_client(server.port, box)])
        assert list(got) == [0]
    finally:
        for s, _ in box:
            s.close()
        server.close()

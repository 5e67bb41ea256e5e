"""Hostile or broken peers against a live server: each is refused with a reason, good clients go on."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tempest_gym.bridge import protocol
from tempest_gym.bridge.layout import default_layout
from tempest_gym.bridge.server import ANY_SLOT, Server

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


def test_any_slot_is_assigned():
    server = Server(token="")  # a bare server checks no token; a run (MameCluster) always has one
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


# ---------------------------------------------------------------- nobody joins a run uninvited
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def knock(port: int, data: bytes, deadline_s: float = 30.0) -> bytes:
    """Connect (retrying while nobody listens yet), send ``data``, return everything the server answers."""
    t_end = time.monotonic() + deadline_s
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
            break
        except ConnectionRefusedError:
            if time.monotonic() > t_end:
                raise
            time.sleep(0.05)
    with s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def reject_reason(reply: bytes) -> str:
    assert reply[4] == protocol.REJECT, reply
    return reply[7:].decode()


@pytest.fixture
def synthetic(tmp_path):
    from tempest_gym.bridge.synthetic_client import write_wrapper

    (tmp_path / "roms" / "tempest1").mkdir(parents=True)
    return {"mame": write_wrapper(tmp_path), "rompath": str(tmp_path / "roms")}


def test_every_run_has_a_private_random_token(synthetic, monkeypatch):
    """Without --token / $TEMPEST_TOKEN a run makes up a token; its clients get it through a file only the user
    can read, never on a command line; an explicit token is used as given, and stays required off loopback."""
    import os
    import stat

    from tempest_gym.env.vec_env import TempestVecEnv

    monkeypatch.delenv("TEMPEST_TOKEN", raising=False)
    tokens = []
    for _ in range(2):
        env = TempestVecEnv(num_envs=2, expert=False, **synthetic)
        try:
            env.reset()
            token = env.cluster.token
            assert len(token) == 32 and int(token, 16) >= 0 and env.cluster.server.token == token
            tokens.append(token)
            for p in env.cluster.procs:
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    assert token.encode() not in f.read()
                with open(f"/proc/{p.pid}/environ", "rb") as f:
                    assert token.encode() not in f.read()
                cfg = p.workdir / "client.cfg"
                assert f"token={token}" in cfg.read_text()
                assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
        finally:
            env.close()
    assert tokens[0] != tokens[1]
    monkeypatch.setenv("TEMPEST_TOKEN", "from-the-environment")
    env = TempestVecEnv(num_envs=1, expert=False, **synthetic)
    try:
        env.reset()
        assert env.cluster.token == "from-the-environment"
    finally:
        env.close()
    monkeypatch.delenv("TEMPEST_TOKEN")
    env = TempestVecEnv(num_envs=1, expert=False, host="0.0.0.0", **synthetic)
    with pytest.raises(ValueError, match="not loopback"):
        env.reset()
    env.close()


def test_a_stranger_without_the_token_is_refused_on_loopback(monkeypatch):
    """The case that used to get WELCOME: a trainer waiting for remote clients on loopback, a local process
    with a valid HELLO and no token. Now it is refused; a client of this user finds the run's token in the
    private token file (as python -m tempest_gym.client does) and gets the slot."""
    import os
    import stat

    from tempest_gym.bridge import synthetic_client
    from tempest_gym.bridge.cluster import ClusterConfig, MameCluster
    from tempest_gym.bridge.server import token_file_path

    monkeypatch.delenv("TEMPEST_TOKEN", raising=False)
    port = free_port()
    cluster = MameCluster(ClusterConfig(num_envs=1, remote=True, port=port, remote_wait=60), LAYOUT)
    starting = threading.Thread(target=cluster.start, daemon=True)
    starting.start()
    legit = None
    try:
        assert "token" in reject_reason(knock(port, hello(slot=ANY_SLOT, token="")))
        assert "token" in reject_reason(knock(port, hello(slot=ANY_SLOT, token="0" * 32)))
        path = token_file_path(port)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        token = path.read_text().strip()
        cfg = {"host": "127.0.0.1", "port": str(port), "slot": str(ANY_SLOT), "token": token}
        legit = threading.Thread(target=synthetic_client.run, args=(cfg,), daemon=True)
        legit.start()
        starting.join(30)
        assert cluster.started and cluster.token == token
        assert sum("wrong or missing token" in r for r in cluster.server.rejected) == 2
        arr = cluster.receive_states()
        assert arr["type"][0] == protocol.STATE
    finally:
        cluster.close()
        starting.join(5)
        if legit is not None:
            legit.join(5)
    assert not token_file_path(port).exists(), "the token file goes with the run"


def test_a_flood_of_junk_connections_while_stepping_changes_nothing(synthetic, caplog):
    """100 junk connections while all slots are busy: every one is answered where it can be (REJECT "no free
    slot" for a valid client with the token), logged exactly once, and stepping goes on; then a client
    restart still succeeds."""
    import logging
    import os
    import re
    import signal
    from collections import Counter

    import numpy as np

    from tempest_gym.env.vec_env import TempestVecEnv

    caplog.set_level(logging.WARNING, logger="tempest_gym.bridge.server")
    env = TempestVecEnv(num_envs=2, expert=False, **synthetic)
    env.cluster_config.handshake_timeout = 2.0
    ports: list[int] = []
    replies: dict[str, list[bytes]] = {"token": [], "no token": [], "garbage": [], "silent": []}
    try:
        env.reset()
        token = env.cluster.token
        port = env.cluster.server.port

        def junk(kind: str, i: int) -> None:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            ports.append(s.getsockname()[1])
            with s:
                if kind == "closes":
                    return
                data = {"token": hello(token=token, slot=i % 2), "no token": hello(slot=ANY_SLOT),
                        "garbage": b"\x00\x00\x00\x00" + bytes(range(i)), "silent": b""}[kind]  # fmt: skip
                s.sendall(data)
                out = b""
                with contextlib.suppress(OSError):
                    while chunk := s.recv(4096):
                        out += chunk
                replies[kind].append(out)

        kinds = ["token", "no token", "garbage", "silent", "closes"]
        flood = [threading.Thread(target=junk, args=(kinds[i % 5], i), daemon=True) for i in range(100)]
        for t in flood:
            t.start()
        def logged() -> Counter:
            return Counter(
                int(m.group(1))
                for rec in caplog.records
                if (m := re.match(r"refused a connection from 127\.0\.0\.1:(\d+): ", rec.getMessage()))
            )

        zero = np.zeros((2, 2), np.float32)
        give_up = time.monotonic() + 120  # a bound for a broken server, not a speed requirement
        steps = 0
        while any(t.is_alive() for t in flood) or sum(logged().values()) < 100:
            _, _, _, infos = env.step(zero)
            steps += 1
            assert not any(i.get("client_restarted") for i in infos)
            assert time.monotonic() < give_up, f"after {steps} steps: {len(ports)} connected, {logged()} logged"
        for t in flood:
            t.join(5)
        assert env.cluster.restarts.sum() == 0
        assert len(replies["token"]) == len(replies["no token"]) == len(replies["garbage"]) == 20
        assert all(reject_reason(r).startswith("no free slot") for r in replies["token"])
        assert all("token" in reject_reason(r) for r in replies["no token"])
        assert all("bad message length" in reject_reason(r) for r in replies["garbage"])
        assert all("no complete handshake" in reject_reason(r) for r in replies["silent"])
        assert sorted(ports) == sorted(logged()), "every junk connection is logged, and only those"
        assert set(logged().values()) == {1}, "...each exactly once"

        env.cluster.config.restart_backoff = 0.1
        os.kill(env.cluster.procs[1].pid, signal.SIGKILL)
        _, _, dones, infos = env.step(zero)
        assert dones[1] and infos[1]["client_restarted"] and env.cluster.restarts.tolist() == [0, 1]
        for _ in range(50):
            env.step(zero)
    finally:
        env.close()


def test_remote_clients_without_a_free_slot_wait_and_take_over(rompath, monkeypatch):
    """Real game, a trainer on loopback with one slot and python -m tempest_gym.client running two MAMEs
    without --token: one plays (its token comes from the private token file), the other is answered
    "no free slot" and keeps retrying instead of exiting; a stranger without the token is refused while
    the game runs. When both MAMEs are killed, the slot is taken again, and no client was ever restarted
    for being refused."""
    import os
    import signal
    import subprocess
    import sys

    import numpy as np

    from tempest_gym.env.vec_env import TempestVecEnv

    monkeypatch.delenv("TEMPEST_TOKEN", raising=False)
    port = free_port()
    cmd = [sys.executable, "-m", "tempest_gym.cli.client", "--server", f"127.0.0.1:{port}", "--num", "2",
           "--rompath", rompath, "-v"]  # fmt: skip
    sup = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    env = TempestVecEnv(num_envs=1, rompath=rompath, expert=False, remote=True, port=port)
    action = np.array([[1.0, 0.2]], np.float32)
    def children() -> set[str]:
        return set(subprocess.run(["pgrep", "-P", str(sup.pid)], capture_output=True, text=True).stdout.split())

    try:
        env.reset()
        mames = children()
        assert len(mames) == 2
        stranger: list[bytes] = []
        t = threading.Thread(target=lambda: stranger.append(knock(port, hello(slot=ANY_SLOT))), daemon=True)
        t.start()
        give_up = time.monotonic() + 120  # a bound for a broken client, not a speed requirement
        while t.is_alive() or env.cluster.server.refused < 3:  # the stranger + the idle client twice
            env.step(action)
            assert time.monotonic() < give_up, env.cluster.server.rejected
        assert "token" in reject_reason(stranger[0])
        assert sum(r.startswith("no free slot") for r in env.cluster.server.rejected) >= 2
        assert children() == mames, "the refused client retried from the same MAME instead of exiting"
        for pid in mames:
            os.kill(int(pid), signal.SIGKILL)
        later = [env.step(action) for _ in range(300)]
        assert env.cluster.restarts.tolist() == [1] and any(i.get("client_restarted") for s in later for i in s[3])
        assert env.observation_space.contains(later[-1][0][0])
    finally:
        env.close()
        sup.send_signal(signal.SIGINT)
        out, _ = sup.communicate(timeout=30)
    assert "stopped (2 restart(s))" in out, out

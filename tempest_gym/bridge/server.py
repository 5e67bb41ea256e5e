"""The listening side: accepts MAME clients, checks their handshake, and frames their traffic.

One thread does everything: sockets are non-blocking and multiplexed with ``selectors`` (no
thread per client, so no GIL contention on the per-tick path).
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import os
import secrets
import select
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tempest_gym.bridge import protocol
from tempest_gym.bridge.constants import ANY_SLOT
from tempest_gym.bridge.protocol import FrameDecoder, Hello, ProtocolError
from tempest_gym.errors import ClientDisconnectedError, ClientTimeoutError, PortInUseError

log = logging.getLogger(__name__)

RECV_CHUNK = 1 << 16
SEND_TIMEOUT_S = 60.0  # a client that takes no bytes for this long is gone
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_ACCEPTS_PER_POLL = 32  # bounded work per poll: a flood is taken in slices, never all at once
MAX_PENDING = 128  # connections still in their handshake; beyond this, new ones are refused at once


def resolve_token(host: str, token: str | None, delivered: bool = False) -> tuple[str, bool]:
    """The run's token and whether it was generated: ``token``, else ``$TEMPEST_TOKEN``, else a random one.

    Off loopback the token must be given (clients on other hosts need to know it), unless the run hands it to
    every client itself (``delivered``: clients placed by Ray get it as a task argument)."""
    explicit = token or os.environ.get("TEMPEST_TOKEN", "")
    if explicit:
        return explicit, False
    if host not in LOOPBACK and not delivered:
        raise ValueError(
            f"listening on {host} (not loopback) needs a shared token: pass token=... / --token "
            "(or set TEMPEST_TOKEN) so strangers on the network cannot drive or read the game"
        )
    return secrets.token_hex(16), True


def token_file_path(port: int) -> Path:
    """Where a trainer listening on loopback ``port`` leaves its generated token for clients of the same user
    (``python -m tempest_gym.client --server 127.0.0.1:PORT`` without ``--token``)."""
    return Path.home() / ".cache" / "tempest-gym" / "tokens" / f"{socket.gethostname()}-{port}"


def write_token_file(port: int, token: str) -> Path:
    """Write ``token`` where :func:`token_file_path` says, readable by this user only (atomically)."""
    path = token_file_path(port)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_token_file(path: Path, token: str) -> None:
    """Remove a token file, unless another run has replaced it since."""
    with contextlib.suppress(OSError):
        if path.read_text().strip() == token:
            path.unlink()


class ClientConnection:
    """One accepted client: its socket, reassembly buffer and handshake facts."""

    def __init__(self, sock: socket.socket, addr: tuple, hello: Hello, decoder: FrameDecoder, slot: int) -> None:
        self.sock = sock
        self.addr = addr
        self.hello = hello
        self.decoder = decoder
        self.slot = slot
        self.closed = False

    @property
    def run_id(self) -> int:
        return self.hello.run_id

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        """Send everything. The socket is non-blocking: when the kernel buffer is full, wait until it takes
        the rest (``sendall`` would lose track of how much went out and resend it, corrupting the stream)."""
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[self.sock.send(view):]
                except BlockingIOError:
                    if not select.select([], [self.sock], [], SEND_TIMEOUT_S)[1]:
                        raise OSError(f"peer took no data for {SEND_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            self.closed = True
            raise ClientDisconnectedError(f"client slot {self.slot}: send failed ({exc})") from exc

    def pump(self) -> bool:
        """Read what is available into the decoder. False when the peer has closed."""
        while True:
            try:
                chunk = self.sock.recv(RECV_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                self.closed = True
                return False
            if not chunk:
                self.closed = True
                return False
            self.decoder.feed(chunk)
            if len(chunk) < RECV_CHUNK:
                return True

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()



class Server:
    """Listens on ``host:port`` (loopback by default; port 0 picks a free one).

    Connections are handshaken without blocking and without trusting anyone: a stranger, a
    client of another version, a wrong token, garbage bytes or a connection that says nothing
    within ``handshake_timeout`` is answered with REJECT where possible, logged once and dropped,
    and never disturbs the clients already connected. A valid client that comes while every slot
    is taken is answered REJECT "no free slot" (the owner calls :meth:`poll` with no free slots
    between steps, so nobody waits in the listen backlog).

    ``token=None`` takes ``$TEMPEST_TOKEN``; an empty token checks none (loopback only). A
    :class:`~tempest_gym.bridge.cluster.MameCluster` always passes one (see :func:`resolve_token`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.token = token if token is not None else os.environ.get("TEMPEST_TOKEN", "")
        if host not in LOOPBACK and not self.token:
            raise ValueError(
                f"listening on {host} (not loopback) needs a shared token: pass token=... / --token "
                "(or set TEMPEST_TOKEN) so strangers on the network cannot drive or read the game"
            )
        self.handshake_timeout = handshake_timeout
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is already in use (another trainer?); pick another port "
                    "or use port=0 to let the system choose a free one"
                ) from exc
            raise PortInUseError(f"cannot listen on {host}:{port}: {exc}") from exc
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ)
        self._pending: dict[socket.socket, tuple[tuple, FrameDecoder, float]] = {}
        self.rejected: list[str] = []  # reasons, newest last (for tests and reports)
        self.refused = 0  # connections refused, ever

    def poll(self, free_slots: set[int], layout_count: int, layout_hash: int, timeout: float) -> list[ClientConnection]:
        """Wait up to ``timeout`` s; return newly handshaken clients, each for one of ``free_slots``."""
        got: list[ClientConnection] = []
        free = set(free_slots)
        for key, _ in self._sel.select(timeout=max(timeout, 0.0)):
            if key.fileobj is self.sock:
                self._accept_new()
                continue
            conn = key.fileobj
            client = self._progress(conn, free, layout_count, layout_hash)  # type: ignore[arg-type]
            if client is not None:
                free.discard(client.slot)
                got.append(client)
        now = time.monotonic()
        for conn, (addr, _, t_end) in list(self._pending.items()):
            if now > t_end:
                self._drop(conn, f"client {addr} connected but sent no complete handshake within "
                                 f"{self.handshake_timeout:.0f} s", reject=True)  # fmt: skip
        return got

    def refuse_strangers(self, layout_count: int, layout_hash: int) -> None:
        """Between steps, with every slot taken: answer whoever knocked (REJECT "no free slot", or why their
        handshake is bad), log each once and drop them. Never waits; bounded work per call."""
        self.poll(set(), layout_count, layout_hash, 0.0)

    def accept(
        self,
        expected_slots: set[int],
        layout_count: int,
        layout_hash: int,
        timeout: float,
        check_alive: Callable[[], None] | None = None,
    ) -> dict[int, ClientConnection]:
        """Block until one handshaken client per expected slot (bad connections are dropped, not raised).

        ``check_alive`` is called while waiting so a MAME that died at start is reported at once.
        """
        got: dict[int, ClientConnection] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(got) < len(expected_slots):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(expected_slots - set(got))
                    why = f"; refused: {self.rejected[-1]}" if self.rejected else ""
                    raise ClientTimeoutError(
                        f"MAME client(s) for slot(s) {missing} did not connect within {timeout:.0f} s{why}"
                    )
                if check_alive:
                    check_alive()
                for c in self.poll(expected_slots - set(got), layout_count, layout_hash, min(0.2, left)):
                    got[c.slot] = c
        except BaseException:
            for c in got.values():
                c.close()
            raise
        return got

    def _accept_new(self) -> None:
        for _ in range(MAX_ACCEPTS_PER_POLL):  # the rest stay in the backlog until the next poll
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._pending) >= MAX_PENDING:
                self._drop(conn, f"client {addr}: too many connections in their handshake ({MAX_PENDING}); "
                                 "try again later", reject=True, addr=addr)  # fmt: skip
                continue
            self._pending[conn] = (addr, FrameDecoder(), time.monotonic() + self.handshake_timeout)
            self._sel.register(conn, selectors.EVENT_READ)

    def _drop(self, conn: socket.socket, reason: str, reject: bool = False, addr: tuple | None = None) -> None:
        """Refuse one connection: log it (once: it is closed here), answer REJECT when asked, close it."""
        if addr is None and conn in self._pending:
            addr = self._pending[conn][0]
        where = f"{addr[0]}:{addr[1]}" if addr else "?"
        log.warning("refused a connection from %s: %s", where, reason)
        self.refused += 1
        self.rejected.append(reason)
        del self.rejected[:-20]
        if reject:
            # the socket is non-blocking and has never been written to: a REJECT (at most ~1 KB) fits in its
            # send buffer, so this neither waits nor sends part of it
            with contextlib.suppress(OSError):
                conn.send(protocol.encode_reject(reason))
        self._forget(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def _forget(self, conn: socket.socket) -> None:
        self._pending.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn)

    def _progress(self, conn: socket.socket, free: set[int], layout_count: int, layout_hash: int):
        addr, dec, _ = self._pending[conn]
        try:
            data = conn.recv(RECV_CHUNK)
        except BlockingIOError:
            return None
        except OSError as exc:
            self._drop(conn, f"client {addr}: {exc}")
            return None
        if not data:
            self._drop(conn, f"client {addr} closed the connection during the handshake")
            return None
        dec.feed(data)
        try:
            body = dec.next_body()
            if body is None:
                return None
            hello = protocol.decode_hello(body)
            protocol.check_hello(hello, layout_count, layout_hash)
            if self.token and not hmac.compare_digest(hello.token.encode(), self.token.encode()):
                raise protocol.HandshakeError(f"client {addr} sent a wrong or missing token")
            slot = hello.slot
            if not free:
                raise protocol.HandshakeError(f"no free slot: every slot is taken (client {addr}, slot {hello.slot})")
            if slot == ANY_SLOT:
                slot = min(free)
            if slot not in free:
                raise protocol.HandshakeError(f"client {addr} claims slot {hello.slot}, free slots are {sorted(free)}")
        except ProtocolError as exc:
            self._drop(conn, str(exc), reject=True)
            return None
        self._forget(conn)
        try:
            conn.sendall(protocol.encode_welcome(slot))
        except OSError as exc:
            self._drop(conn, f"client {addr}: {exc}")
            return None
        log.info("client slot %d connected from %s: %s (run %016x)", slot, addr, hello.client, hello.run_id)
        return ClientConnection(conn, addr, hello, dec, slot)

    def close(self) -> None:
        for conn in list(self._pending):
            self._forget(conn)
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(Exception):
            self._sel.close()
        with contextlib.suppress(OSError):
            self.sock.close()

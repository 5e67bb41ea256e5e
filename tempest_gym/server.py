"""The listening side: accepts MAME clients, checks their handshake, and frames their traffic.

One thread does everything: sockets are non-blocking and multiplexed with ``selectors`` (no
thread per client, so no GIL contention on the per-tick path).
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import selectors
import socket
import time
from collections.abc import Callable

from tempest_gym import protocol
from tempest_gym.errors import ClientDisconnectedError, ClientTimeoutError, PortInUseError
from tempest_gym.protocol import FrameDecoder, Hello, ProtocolError

log = logging.getLogger(__name__)

RECV_CHUNK = 1 << 16


class ClientConnection:
    """One accepted client: its socket, reassembly buffer and handshake facts."""

    def __init__(self, sock: socket.socket, addr: tuple, hello: Hello, decoder: FrameDecoder) -> None:
        self.sock = sock
        self.addr = addr
        self.hello = hello
        self.decoder = decoder
        self.closed = False

    @property
    def slot(self) -> int:
        return self.hello.slot

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        """Send everything; the socket is non-blocking, so finish partial sends briefly blocking."""
        try:
            self.sock.sendall(data)
        except BlockingIOError:
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.setblocking(False)
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
    """Listens on ``host:port`` (loopback by default; port 0 picks a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.token = token or ""
        if host not in ("127.0.0.1", "localhost", "::1") and not self.token:
            raise ValueError(
                f"listening on {host} (not loopback) needs a shared token: pass token=... / --token "
                "(or set TEMPEST_TOKEN) so strangers on the network cannot drive or read the game"
            )
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

    def accept(
        self,
        expected_slots: set[int],
        layout_count: int,
        layout_hash: int,
        timeout: float,
        check_alive: Callable[[], None] | None = None,
    ) -> dict[int, ClientConnection]:
        """Accept one handshaken client per expected slot.

        Refused handshakes are answered with REJECT and raised (they mean a broken install).
        ``check_alive`` is called while waiting so a MAME that died at start is reported at once.
        """
        got: dict[int, ClientConnection] = {}
        pending: dict[socket.socket, tuple[tuple, FrameDecoder, float]] = {}
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while len(got) < len(expected_slots):
                now = time.monotonic()
                if now > deadline:
                    missing = sorted(expected_slots - set(got))
                    raise ClientTimeoutError(
                        f"MAME client(s) for slot(s) {missing} did not connect within {timeout:.0f} s"
                    )
                if check_alive:
                    check_alive()
                for key, _ in sel.select(timeout=min(0.2, deadline - now)):
                    if key.fileobj is self.sock:
                        try:
                            conn, addr = self.sock.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        pending[conn] = (addr, FrameDecoder(), time.monotonic() + min(timeout, 30.0))
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    addr, dec, _ = pending[conn]
                    client = self._handshake(conn, addr, dec, layout_count, layout_hash, expected_slots, got)
                    if client is not None:
                        sel.unregister(conn)
                        del pending[conn]
                        got[client.slot] = client
                for conn, (addr, _, t_end) in list(pending.items()):
                    if time.monotonic() > t_end:
                        log.warning("client %s connected but sent no handshake in time; dropped", addr)
                        sel.unregister(conn)
                        conn.close()
                        del pending[conn]
        except BaseException:
            for c in got.values():
                c.close()
            raise
        finally:
            for conn in pending:
                conn.close()
            sel.close()
        return got

    def _handshake(self, conn, addr, dec, layout_count, layout_hash, expected_slots, got):
        try:
            data = conn.recv(RECV_CHUNK)
        except BlockingIOError:
            return None
        if not data:
            raise ClientDisconnectedError(f"client {addr} closed the connection during the handshake")
        dec.feed(data)
        body = dec.next_body()
        if body is None:
            return None
        try:
            hello = protocol.decode_hello(body)
            protocol.check_hello(hello, layout_count, layout_hash)
            if self.token and not hmac.compare_digest(hello.token.encode(), self.token.encode()):
                raise protocol.HandshakeError(f"client {addr} sent a wrong or missing token")
            if hello.slot not in expected_slots or hello.slot in got:
                raise protocol.HandshakeError(
                    f"client {addr} claims slot {hello.slot}, expected one of {sorted(expected_slots - set(got))}"
                )
        except ProtocolError as exc:
            try:
                conn.setblocking(True)
                conn.sendall(protocol.encode_reject(str(exc)))
            except OSError:
                pass
            conn.close()
            raise
        conn.sendall(protocol.encode_welcome())
        log.debug("client slot %d connected from %s: %s", hello.slot, addr, hello.client)
        return ClientConnection(conn, addr, hello, dec)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

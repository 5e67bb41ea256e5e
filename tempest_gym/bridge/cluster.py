"""N MAME processes stepped in lockstep: the engine under the SB3 and Gymnasium adapters.

Per step: one ACTION goes to every client, then exactly one STATE is read back from every
client. All sockets are served by one thread through ``selectors``; the N states are parsed
in one ``np.frombuffer`` over a structured dtype, so the per-step Python cost barely grows
with N.
"""

from __future__ import annotations

import contextlib
import logging
import select
import selectors
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tempest_gym.bridge import protocol
from tempest_gym.bridge.constants import LIVES, START_LEVELS
from tempest_gym.bridge.layout import StateLayout, default_layout
from tempest_gym.bridge.mame import MameProcess, find_mame, find_rompath, verify_roms
from tempest_gym.bridge.server import ClientConnection, Server, remove_token_file, resolve_token, write_token_file
from tempest_gym.errors import ClientDisconnectedError, ClientTimeoutError, TempestGymError

if TYPE_CHECKING:
    from tempest_gym.bridge.ray_launcher import RayLauncher, RayMameProcess

log = logging.getLogger(__name__)

DOOR_INTERVAL = 0.05  # s between looks at the listening socket while stepping
EXIT_POLL_INTERVAL = 0.05  # s a step waits for states before it asks the OS whether a client process exited


def read_ram_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A client's RAM trace (``trace_ram=True``): seq numbers (T,) and RAM $0000-$03FF (T, 1024)."""
    raw = np.fromfile(path, dtype=np.dtype([("seq", "<u4"), ("ram", "u1", (1024,))]))
    return raw["seq"], raw["ram"]


class _ReplacementFailed(Exception):
    """A slot's replacement client failed as well (``kind``: the error to report if the cluster gives up)."""

    def __init__(self, why: str, kind: type[TempestGymError] = ClientDisconnectedError) -> None:
        super().__init__(why)
        self.kind = kind


@dataclass
class ClusterConfig:
    """Everything needed to start and talk to the emulators."""

    num_envs: int = 1
    rompath: str | None = None
    mame: str | None = None
    start_level: int = 1
    start_levels: tuple[int, ...] = ()  # if set, each new game starts at one of these (drawn per game, seeded)
    lives: int = 3
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None  # None/"": $TEMPEST_TOKEN, else a random one per run (required off loopback)
    transport: str = "auto"
    pipeline: bool = True
    death_penalty: int = 1000
    connect_timeout: float = 60.0
    step_timeout: float = 120.0
    reply_timeout: float = 3600.0  # how long a client waits for an action before giving up
    headless: bool = True
    workdir: str | None = None
    keep_workdir: bool = False
    mame_args: tuple[str, ...] = field(default_factory=tuple)
    supervise: bool = True  # restart a dead or hung client instead of failing
    max_restarts: int = 5  # ...but give up after this many failures in a row of one slot
    restart_backoff: float = 1.0  # seconds before the first restart; doubles per failure in a row (max 30)
    remote: bool = False  # no local MAME: wait for clients started elsewhere (python -m tempest_gym.client)
    remote_wait: float = 600.0  # seconds to wait for remote clients to (re)connect
    handshake_timeout: float = 10.0  # a connection must complete its HELLO within this
    trace_ram: bool = False  # the client writes seq + RAM $0000-$03FF per state to slotN/trace.bin
    client_settings: dict[str, object] = field(default_factory=dict)  # extra/overriding Lua settings
    launcher: str = "local"  # who starts the MAME clients: "local" (subprocesses) or "ray" (one Ray actor each)
    ray_address: str | None = None  # launcher="ray": the cluster to join (None: a running one, else a local one)
    ray_num_cpus: int | None = None  # launcher="ray", local instance: its CPUs (default: num_envs, at least all)
    ray_actor_options: dict[str, object] = field(default_factory=dict)  # launcher="ray": more actor options

    def __post_init__(self) -> None:
        self.client_settings = dict(self.client_settings or {})  # a copy: the cluster adds to it
        self.ray_actor_options = dict(self.ray_actor_options or {})
        self.mame_args = tuple(self.mame_args)
        self.start_levels = tuple(int(x) for x in self.start_levels or ())

    def validate(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.start_level not in START_LEVELS:
            raise ValueError(
                f"start_level {self.start_level} is not selectable in Tempest; choose one of {START_LEVELS}"
            )
        bad = [x for x in self.start_levels if x not in START_LEVELS]
        if bad:
            raise ValueError(f"start_levels {bad} are not selectable in Tempest; choose among {START_LEVELS}")
        if self.lives not in LIVES:
            raise ValueError(f"lives must be one of {LIVES} (the dip switch), got {self.lives}")
        if self.transport not in ("auto", "luasocket", "emufile"):
            raise ValueError(f"transport must be auto, luasocket or emufile, got {self.transport!r}")
        if self.launcher not in ("local", "ray"):
            raise ValueError(f"launcher must be 'local' or 'ray', got {self.launcher!r}")
        if self.launcher == "ray" and self.remote:
            raise ValueError("launcher='ray' starts the clients itself: it cannot be combined with remote=True")
        if self.launcher == "ray" and self.trace_ram:
            raise ValueError("trace_ram writes the trace on the client's node: use launcher='local' for it")


class MameCluster:
    """Owns the server socket, the MAME processes and one connection per slot."""

    def __init__(self, config: ClusterConfig, layout: StateLayout | None = None) -> None:
        config.validate()
        self.config = config
        self.layout = layout or default_layout()
        self.n = config.num_envs
        self.dtype = protocol.state_dtype(self.layout.size)
        self.server: Server | None = None
        self.procs: list[MameProcess | RayMameProcess] = []  # one per slot (none with remote clients)
        self.clients: list[ClientConnection | None] = [None] * self.n
        self.seq = np.zeros(self.n, dtype=np.uint32)
        self.restarts = np.zeros(self.n, dtype=np.int64)  # client restarts per slot, ever
        self.restarted = np.zeros(self.n, dtype=bool)  # slots whose client was replaced in the last receive
        self._fails_in_row = [0] * self.n
        self._ok_since = [0] * self.n  # states received since the slot's last restart
        self._broken: dict[int, str] = {}  # slots whose send failed, with why
        self._sel: selectors.BaseSelector | None = None
        self._tmp: str | None = None
        self.token = ""  # the run's token (set by start; given, or random)
        self._token_file: Path | None = None
        self._next_door_check = 0.0  # when to next answer connections that came while every slot is taken
        self._launcher: RayLauncher | None = None  # launcher="ray": places the clients as Ray actors
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Find MAME and the ROMs, listen, launch N instances and complete N handshakes."""
        cfg = self.config
        host = cfg.host
        if cfg.launcher == "ray":
            from tempest_gym.bridge.ray_launcher import RayLauncher, default_num_cpus

            self._launcher = RayLauncher(cfg.ray_address, cfg.ray_num_cpus or default_num_cpus(self.n),
                                         cfg.connect_timeout, cfg.workdir, cfg.keep_workdir,
                                         cfg.ray_actor_options)  # fmt: skip
            try:
                host = self._launcher.listen_host(cfg.host)
            except BaseException:
                self.close()
                raise
        # clients placed by Ray get the token from us (a task argument), so a random one does off loopback too
        self.token, generated = resolve_token(host, cfg.token, delivered=self._launcher is not None)
        if cfg.remote:
            self.server = Server(cfg.host, cfg.port, self.token, cfg.handshake_timeout)
            try:
                where = ""
                if generated:  # loopback: clients of this user on this host read it from a file only they can read
                    self._token_file = write_token_file(self.server.port, self.token)
                    where = (f"; this run's token is in {self._token_file} (python -m tempest_gym.client "
                             f"--server 127.0.0.1:{self.server.port} reads it there)")  # fmt: skip
                log.warning("waiting for %d remote client(s) on %s:%d%s", self.n, cfg.host, self.server.port, where)
                conns = self.server.accept(set(range(self.n)), self.layout.size, self.layout.hash, cfg.remote_wait)
            except BaseException:
                self.close()
                raise
            self._attach_all(conns)
            return
        try:
            self._launch(host)
            conns = self.server.accept(  # type: ignore[union-attr]
                set(range(self.n)),
                self.layout.size,
                self.layout.hash,
                cfg.connect_timeout,
                check_alive=self._check_processes,
            )
        except TempestGymError as exc:
            for p in self.procs:  # let a client that is exiting finish, so its last words show
                p.wait_exit(1.0)
            report = self._process_report()
            self.close()
            if not report:  # nothing started (no MAME, no ROMs, the port taken, a Ray node refused): as it is
                raise
            raise type(exc)(f"{exc}\n{report}") from exc
        except BaseException:
            self.close()
            raise
        self._attach_all(conns)

    def _launch(self, host: str) -> None:
        """Listen on ``host`` and start one client per slot: local MAME processes, or Ray actors (each checks its
        node for MAME and the ROMs; here only the trainer's side is set up)."""
        cfg = self.config
        launcher = self._launcher
        mame = rompath = ""
        if launcher is None:
            mame = find_mame(cfg.mame)
            rompath = find_rompath(cfg.rompath)
            verify_roms(mame, rompath)
        self.server = Server(host, cfg.port, self.token, cfg.handshake_timeout)
        root = Path()
        if launcher is None:
            if cfg.workdir:
                root = Path(cfg.workdir)
                root.mkdir(parents=True, exist_ok=True)
            else:
                self._tmp = tempfile.mkdtemp(prefix="tempest-gym-")
                root = Path(self._tmp)
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
        for slot in range(self.n):
            settings = {
                "host": connect_host,
                "port": self.server.port,
                "slot": slot,
                "seed": (cfg.seed + slot) & 0x7FFFFFFF,
                "start_level": cfg.start_level,
                "start_levels": ",".join(str(x) for x in cfg.start_levels),
                "lives": cfg.lives,
                "transport": cfg.transport,
                "pipeline": int(cfg.pipeline),
                "connect_timeout": int(cfg.connect_timeout),
                # the trainer may pause for minutes (evaluations, big checkpoints): a client waiting for its
                # action costs nothing, and a dead trainer is noticed anyway (closed socket, parent-death signal)
                "reply_timeout": int(max(cfg.step_timeout, cfg.reply_timeout)),
                "death_penalty": cfg.death_penalty,
                "token": self.token,  # in client.cfg, readable by this user only: never on a command line
            }
            if launcher is not None:  # the actor writes client.cfg on its node and picks the address to connect to
                settings.update(cfg.client_settings)
                self.procs.append(launcher.make_process(slot, settings, cfg.mame, cfg.rompath, cfg.headless,
                                                        cfg.mame_args, launcher.connect_hosts(host)))  # fmt: skip
                continue
            wd = root / f"slot{slot}"
            wd.mkdir(parents=True, exist_ok=True)
            if cfg.trace_ram:
                settings["trace"] = str(wd / "trace.bin")
            settings.update(cfg.client_settings)
            self.procs.append(MameProcess(slot, wd, mame, rompath, settings, cfg.headless, cfg.mame_args))
        if launcher is not None:
            launcher.start_all(self.procs)  # type: ignore[arg-type]
        else:
            for p in self.procs:
                p.start()

    def _attach_all(self, conns: dict[int, ClientConnection]) -> None:
        self._sel = selectors.DefaultSelector()
        for slot, c in conns.items():
            self._attach(slot, c)
        self.started = True

    def _attach(self, slot: int, c: ClientConnection) -> None:
        assert self._sel is not None
        self.clients[slot] = c
        self._sel.register(c.sock, selectors.EVENT_READ, slot)

    def _detach(self, slot: int) -> None:
        c = self.clients[slot]
        if c is not None:
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(c.sock)
            c.close()
        self.clients[slot] = None

    def _process_report(self) -> str:
        return "\n".join(p.describe_exit() for p in self.procs if p.proc is not None or p.starts)

    def _check_processes(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise ClientDisconnectedError(f"MAME for slot {p.slot} exited before connecting.")

    def close(self) -> None:
        """Ask clients to quit, then make sure every process is gone."""
        for c in self.clients:
            if c is not None and not c.closed:
                with contextlib.suppress(TempestGymError, OSError):
                    c.send(protocol.encode_action(0, 0, 0, protocol.CMD_QUIT))
        if self._launcher is not None:
            self._launcher.stop_all(self.procs)  # type: ignore[arg-type]
            self._launcher = None
        for p in self.procs:
            p.kill(grace=1.0)
        for c in self.clients:
            if c is not None:
                c.close()
        self.clients = [None] * self.n
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._token_file is not None:
            remove_token_file(self._token_file, self.token)
            self._token_file = None
        if self._tmp and not self.config.keep_workdir:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self.procs = []
        self.started = False

    # ------------------------------------------------------------------ stepping
    def send_actions(
        self,
        fz: np.ndarray,
        spin: np.ndarray,
        command: int | np.ndarray = protocol.CMD_NONE,
        args: np.ndarray | None = None,
    ) -> None:
        """Answer every client's last state. ``fz`` in 0..3, ``spin`` the signed tick delta; ``command`` is
        one command for all clients or one per client (e.g. RESET for some of them)."""
        data = memoryview(protocol.encode_actions(self.seq, fz, spin, command, 0 if args is None else args))
        size = protocol.ACTION_FRAME_SIZE
        for i, c in enumerate(self.clients):
            try:
                if c is None:
                    raise ClientDisconnectedError(f"slot {i} has no client")
                c.send(data[i * size : (i + 1) * size])
            except ClientDisconnectedError as exc:
                if not self.config.supervise:
                    raise self._disconnected(i, f"could not be sent its action ({exc})") from exc
                self._broken[i] = str(exc)  # receive_states replaces the client

    def receive_states(self, timeout: float | None = None) -> np.ndarray:
        """One STATE from every client, as a structured array of length N (see protocol.state_dtype).

        With ``supervise``, a client that disconnects, exits, sends garbage or stays silent past the
        timeout is replaced (its MAME restarted, or a remote one awaited) and the new client's first
        state stands in for it; ``self.restarted`` marks those slots.
        """
        assert self._sel is not None, "cluster not started"
        timeout = self.config.step_timeout if timeout is None else timeout
        self.restarted[:] = False
        bodies: list[bytes | None] = [None] * self.n
        for i, why in list(self._broken.items()):
            del self._broken[i]
            bodies[i] = self._fail(i, why)
        # bytes may already be buffered from an earlier read; the rest comes through one select for all clients
        for i, c in enumerate(self.clients):
            if bodies[i] is None:
                bodies[i] = self._guarded(i, lambda i=i, c=c: self._next_body(i, c))
        missing = [i for i, b in enumerate(bodies) if b is None]
        if missing:
            self._wait_for(bodies, missing, timeout)
        arr = np.frombuffer(b"".join(bodies), dtype=self.dtype)  # type: ignore[arg-type]
        self.seq[:] = arr["seq"]
        self._answer_the_door()
        for i in range(self.n):
            self._ok_since[i] += 1
            if self._ok_since[i] >= 100:  # a healthy stretch forgives earlier failures
                self._fails_in_row[i] = 0
        return arr

    def _wait_for(self, bodies: list[bytes | None], missing: list[int], timeout: float) -> None:
        """Wait until every slot in ``missing`` has sent its STATE (or failed and was recovered)."""
        assert self._sel is not None
        now = time.monotonic()
        deadline = now + timeout
        next_poll = now + EXIT_POLL_INTERVAL  # a step that waits less never polls: a dead client's socket says so
        while missing:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                for i in missing:
                    bodies[i] = self._fail(i, f"sent no state within {timeout:.0f} s", ClientTimeoutError)
                return
            for key, _ in self._sel.select(timeout=max(0.0, min(left, next_poll - now))):
                i = key.data
                if bodies[i] is None:
                    bodies[i] = self._guarded(i, lambda i=i: self._pump_body(i))
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + EXIT_POLL_INTERVAL
                for i in missing:
                    if bodies[i] is None and i < len(self.procs) and self.procs[i].poll() is not None:
                        bodies[i] = self._fail(i, "exited")
            missing = [i for i in missing if bodies[i] is None]

    def _answer_the_door(self) -> None:
        """Every slot is taken: answer and log whoever connected meanwhile (REJECT "no free slot", or why their
        handshake is bad). At most every DOOR_INTERVAL s, never waiting, bounded work (see Server.poll)."""
        now = time.monotonic()
        if now < self._next_door_check or self.server is None:
            return
        self._next_door_check = now + DOOR_INTERVAL
        self.server.refuse_strangers(self.layout.size, self.layout.hash)

    def _pump_body(self, i: int) -> bytes | None:
        c = self.clients[i]
        assert c is not None
        if not c.pump():
            raise ClientDisconnectedError("closed the connection")
        return self._next_body(i, c)

    def _guarded(self, i: int, read) -> bytes | None:
        """Run one client read; a failure of that client is recovered (or raised without supervision)."""
        try:
            return read()
        except (ClientDisconnectedError, protocol.ProtocolError) as exc:
            return self._fail(i, str(exc))

    def _fail(self, i: int, why: str, kind: type[TempestGymError] = ClientDisconnectedError) -> bytes:
        """Slot i's client failed: raise (no supervision, or too many failures in a row), or replace it and return
        the new client's first state. A replacement that fails too is one more failure in a row: try again."""
        cfg = self.config
        while True:
            if not cfg.supervise:
                if kind is ClientTimeoutError:
                    report = self.procs[i].describe_exit() if i < len(self.procs) else ""
                    raise ClientTimeoutError(f"no state from slot {i}: {why}\n{report}")
                raise self._disconnected(i, why)
            self._fails_in_row[i] += 1
            if self._fails_in_row[i] > cfg.max_restarts:
                raise self._disconnected(i, f"failed {self._fails_in_row[i]} times in a row (last: {why}); giving up")
            report = ""
            if i < len(self.procs):
                self.procs[i].wait_exit(0.5)  # let an exiting client's exit code and last words land
                report = self.procs[i].describe_exit()
            log.warning("client slot %d %s; replacing it (failure %d in a row)\n%s", i, why, self._fails_in_row[i],
                        report)  # fmt: skip
            self._detach(i)
            try:
                return self._replace(i)
            except _ReplacementFailed as exc:
                why, kind = str(exc), exc.kind

    def _replace(self, i: int) -> bytes:
        """Restart slot i's MAME (or await a remote client), handshake, and read its first state; raise
        ``_ReplacementFailed`` when that does not work out."""
        cfg = self.config
        assert self.server is not None
        local = i < len(self.procs)
        if local:
            proc = self.procs[i]
            proc.kill()
            time.sleep(min(cfg.restart_backoff * 2 ** (self._fails_in_row[i] - 1), 30.0))
            proc.settings["seed"] = (int(proc.settings["seed"]) + 7919) & 0x7FFFFFFF  # a different game
            try:
                proc.start()  # a Ray actor may fail to start (its node went away, no CPU free): try again
            except TempestGymError as exc:
                raise _ReplacementFailed(f"could not be restarted: {exc}", type(exc)) from exc
        wait = cfg.connect_timeout if local else cfg.remote_wait
        deadline = time.monotonic() + wait
        while self.clients[i] is None:
            if time.monotonic() > deadline:
                why = f"was not replaced: no client connected within {wait:.0f} s"
                raise _ReplacementFailed(why, ClientTimeoutError)
            if local and self.procs[i].poll() is not None:
                raise _ReplacementFailed("restarted MAME exited before connecting")
            for c in self.server.poll({i}, self.layout.size, self.layout.hash, 0.2):
                self._attach(i, c)
        c = self.clients[i]
        assert c is not None
        t_end = time.monotonic() + cfg.step_timeout
        try:
            while (body := self._next_body(i, c)) is None:
                if time.monotonic() > t_end:
                    raise ClientTimeoutError("sent no first state after restarting")
                readable, _, _ = select.select([c.sock], [], [], 0.5)
                if readable and not c.pump():
                    raise ClientDisconnectedError("closed the connection right after restarting")
        except (TempestGymError, protocol.ProtocolError) as exc:
            self._detach(i)
            raise _ReplacementFailed(str(exc)) from exc
        self.restarts[i] += 1
        self.restarted[i] = True
        self._ok_since[i] = 0
        log.warning("slot %d is back (run %016x, restart %d)", i, c.run_id, self.restarts[i])
        return body

    def _next_body(self, i: int, c: ClientConnection | None) -> bytes | None:
        assert c is not None
        body = c.decoder.next_body()
        if body is None:
            return None
        if body[0] == protocol.BYE:
            raise ClientDisconnectedError("said goodbye: " + protocol.decode_bye(body))
        if len(body) != self.dtype.itemsize or body[0] != protocol.STATE:
            raise protocol.ProtocolError(
                f"sent a {len(body)}-byte message of type 0x{body[0]:02x} where a {self.dtype.itemsize}-byte "
                "STATE was due"
            )
        return body

    def _disconnected(self, i: int, what: str) -> ClientDisconnectedError:
        report = ""
        if i < len(self.procs):
            proc = self.procs[i]
            proc.wait_exit(1.0)  # a client that hung up is usually exiting: let its last words land
            report = proc.describe_exit()
        return ClientDisconnectedError(f"MAME client slot {i} {what}.\n{report}")

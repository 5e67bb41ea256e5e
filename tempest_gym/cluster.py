"""N MAME processes stepped in lockstep: the engine under the SB3 and Gymnasium adapters.

Per step: one ACTION goes to every client, then exactly one STATE is read back from every
client. All sockets are served by one thread through ``selectors``; the N states are parsed
in one ``np.frombuffer`` over a structured dtype, so the per-step Python cost barely grows
with N.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tempest_gym import protocol
from tempest_gym.errors import ClientDisconnectedError, ClientTimeoutError, TempestGymError
from tempest_gym.layout import StateLayout, default_layout
from tempest_gym.mame import MameProcess, find_mame, find_rompath, verify_roms
from tempest_gym.server import ClientConnection, Server

log = logging.getLogger(__name__)

START_LEVELS = (1, 3, 5, 7, 9, 11, 13, 15, 17, 20, 22, 24, 26, 28, 31, 33, 36, 40, 44, 47, 49, 52, 56, 60,
                63, 65, 73, 81)  # fmt: skip


def read_ram_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A client's RAM trace (``trace_ram=True``): seq numbers (T,) and RAM $0000-$03FF (T, 1024)."""
    raw = np.fromfile(path, dtype=np.dtype([("seq", "<u4"), ("ram", "u1", (1024,))]))
    return raw["seq"], raw["ram"]


def state_dtype(n_features: int) -> np.dtype:
    """numpy view of one STATE body (must match protocol.STATE_HEADER + n float32)."""
    return np.dtype(
        [
            ("type", "u1"),
            ("flags", "u1"),
            ("gamestate", "u1"),
            ("level", "u1"),
            ("lives", "u1"),
            ("exec_fz", "u1"),
            ("exec_spin", "i1"),
            ("pad", "u1"),
            ("seq", "<u4"),
            ("frame", "<u4"),
            ("score", "<u4"),
            ("reward_obj", "<f4"),
            ("reward_subj", "<f4"),
            ("obs", "<f4", (n_features,)),
        ]
    )


@dataclass
class ClusterConfig:
    """Everything needed to start and talk to the emulators."""

    num_envs: int = 1
    rompath: str | None = None
    mame: str | None = None
    start_level: int = 1
    lives: int = 3
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    transport: str = "auto"
    pipeline: bool = True
    death_penalty: int = 1000
    connect_timeout: float = 60.0
    step_timeout: float = 120.0
    headless: bool = True
    workdir: str | None = None
    keep_workdir: bool = False
    mame_args: tuple[str, ...] = field(default_factory=tuple)
    trace_ram: bool = False  # the client writes seq + RAM $0000-$03FF per state to slotN/trace.bin
    client_settings: dict[str, object] = field(default_factory=dict)  # extra/overriding Lua settings

    def validate(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.start_level not in START_LEVELS:
            raise ValueError(
                f"start_level {self.start_level} is not selectable in Tempest; choose one of {START_LEVELS}"
            )
        if self.lives not in (2, 3, 4, 5):
            raise ValueError(f"lives must be 2, 3, 4 or 5 (the dip switch), got {self.lives}")
        if self.transport not in ("auto", "luasocket", "emufile"):
            raise ValueError(f"transport must be auto, luasocket or emufile, got {self.transport!r}")


class MameCluster:
    """Owns the server socket, the MAME processes and one connection per slot."""

    def __init__(self, config: ClusterConfig, layout: StateLayout | None = None) -> None:
        config.validate()
        self.config = config
        self.layout = layout or default_layout()
        self.n = config.num_envs
        self.dtype = state_dtype(self.layout.size)
        self.server: Server | None = None
        self.procs: list[MameProcess] = []
        self.clients: list[ClientConnection | None] = [None] * self.n
        self.seq = np.zeros(self.n, dtype=np.uint32)
        self._sel: selectors.BaseSelector | None = None
        self._tmp: str | None = None
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Find MAME and the ROMs, listen, launch N instances and complete N handshakes."""
        cfg = self.config
        mame = find_mame(cfg.mame)
        rompath = find_rompath(cfg.rompath)
        verify_roms(mame, rompath)
        self.server = Server(cfg.host, cfg.port, cfg.token)
        if cfg.workdir:
            root = Path(cfg.workdir)
            root.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.mkdtemp(prefix="tempest-gym-")
            root = Path(self._tmp)
        connect_host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "localhost") else cfg.host
        for slot in range(self.n):
            settings = {
                "host": connect_host,
                "port": self.server.port,
                "slot": slot,
                "seed": (cfg.seed + slot) & 0x7FFFFFFF,
                "start_level": cfg.start_level,
                "lives": cfg.lives,
                "transport": cfg.transport,
                "pipeline": int(cfg.pipeline),
                "connect_timeout": int(cfg.connect_timeout),
                "reply_timeout": int(max(cfg.step_timeout, 60)),
                "death_penalty": cfg.death_penalty,
                "token": cfg.token or "",
            }
            wd = root / f"slot{slot}"
            wd.mkdir(parents=True, exist_ok=True)
            if cfg.trace_ram:
                settings["trace"] = str(wd / "trace.bin")
            settings.update(cfg.client_settings)
            self.procs.append(MameProcess(slot, wd, mame, rompath, settings, cfg.headless, cfg.mame_args))
        try:
            for p in self.procs:
                p.start()
            conns = self.server.accept(
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
            raise type(exc)(f"{exc}\n{report}") from exc
        except BaseException:
            self.close()
            raise
        self._sel = selectors.DefaultSelector()
        for slot, c in conns.items():
            self.clients[slot] = c
            self._sel.register(c.sock, selectors.EVENT_READ, slot)
        self.started = True

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
        if self._tmp and not self.config.keep_workdir:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self.procs = []
        self.started = False

    # ------------------------------------------------------------------ stepping
    def send_actions(
        self, fz: np.ndarray, spin: np.ndarray, command: int = protocol.CMD_NONE, args: np.ndarray | None = None
    ) -> None:
        """Answer every client's last state. ``fz`` in 0..3, ``spin`` the signed tick delta."""
        for i, c in enumerate(self.clients):
            assert c is not None
            arg = int(args[i]) if args is not None else 0
            c.send(protocol.encode_action(int(self.seq[i]), int(fz[i]), int(spin[i]), command, arg))

    def receive_states(self, timeout: float | None = None) -> np.ndarray:
        """One STATE from every client, as a structured array of length N (see state_dtype)."""
        assert self._sel is not None, "cluster not started"
        timeout = self.config.step_timeout if timeout is None else timeout
        bodies: list[bytes | None] = [None] * self.n
        missing = self.n
        # bytes may already be buffered from an earlier read
        for i, c in enumerate(self.clients):
            body = self._next_body(i, c)
            if body is not None:
                bodies[i] = body
                missing -= 1
        deadline = time.monotonic() + timeout
        while missing:
            left = deadline - time.monotonic()
            if left <= 0:
                slow = [i for i, b in enumerate(bodies) if b is None]
                raise ClientTimeoutError(
                    f"no state from slot(s) {slow} within {timeout:.0f} s\n"
                    + "\n".join(self.procs[i].describe_exit() for i in slow if i < len(self.procs))
                )
            for key, _ in self._sel.select(timeout=min(left, 1.0)):
                i = key.data
                if bodies[i] is not None:
                    continue
                c = self.clients[i]
                if not c.pump():
                    raise self._disconnected(i, "closed the connection")
                body = self._next_body(i, c)
                if body is not None:
                    bodies[i] = body
                    missing -= 1
            if missing:
                self._check_running([i for i, b in enumerate(bodies) if b is None])
        arr = np.frombuffer(b"".join(bodies), dtype=self.dtype)  # type: ignore[arg-type]
        if (arr["type"] != protocol.STATE).any():
            bad = int(np.flatnonzero(arr["type"] != protocol.STATE)[0])
            raise protocol.ProtocolError(f"slot {bad} sent message type 0x{arr['type'][bad]:02x} instead of STATE")
        self.seq[:] = arr["seq"]
        return arr

    def _next_body(self, i: int, c: ClientConnection | None) -> bytes | None:
        assert c is not None
        body = c.decoder.next_body()
        if body is None:
            return None
        if body[0] == protocol.BYE:
            raise self._disconnected(i, "said goodbye: " + protocol.decode_bye(body))
        if len(body) != self.dtype.itemsize:
            raise protocol.ProtocolError(
                f"slot {i} sent a {len(body)}-byte message where a {self.dtype.itemsize}-byte STATE was due"
            )
        return body

    def _check_running(self, slots: list[int]) -> None:
        for i in slots:
            if i < len(self.procs) and self.procs[i].poll() is not None:
                raise self._disconnected(i, "exited")

    def _disconnected(self, i: int, what: str) -> ClientDisconnectedError:
        report = ""
        if i < len(self.procs):
            proc = self.procs[i]
            proc.wait_exit(1.0)  # a client that hung up is usually exiting: let its last words land
            report = proc.describe_exit()
        return ClientDisconnectedError(f"MAME client slot {i} {what}.\n{report}")

"""MAME clients placed by Ray (``launcher="ray"``): one Ray actor per env slot, each supervising one headless MAME.

The trainer's server listens as with local clients; the cluster (:class:`~tempest_gym.bridge.cluster.MameCluster`)
talks to each actor through a :class:`RayMameProcess`, which has the interface of a local
:class:`~tempest_gym.bridge.mame.MameProcess` (``start``, ``poll``, ``wait_exit``, ``kill``, ``describe_exit``).
So a MAME or an actor that dies is replaced by the cluster's own supervision, with the same guarantees as a
local client: the episode is truncated, the partial n-step window dropped, the restart counted
(``env/client_restarts``). An actor whose process or node is gone is replaced by a new actor, which Ray places
on a live node.

Each actor takes one CPU and actors are spread over the nodes (``scheduling_strategy="SPREAD"``). When it starts,
an actor checks its node: tempest-gym importable, MAME found, the ROMs at the path (``mame -verifyroms``); a node
that fails is named in the error (:class:`~tempest_gym.errors.MameNotFoundError`,
:class:`~tempest_gym.errors.RomsNotFoundError`, :class:`RayNodeError`), and an actor Ray cannot place is
reported after ``connect_timeout`` with the cluster's free CPUs, never a silent hang.

The run's token travels to the actor as a Ray task argument and from there into the MAME client's settings file
(mode 0600 on the node), never on a command line.

Ray is an optional dependency (``pip install 'tempest-gym[ray]'``): it is imported only when a Ray launcher is
made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tempest_gym import errors
from tempest_gym.bridge.mame import MameProcess, find_mame, find_rompath, verify_roms
from tempest_gym.bridge.server import LOOPBACK
from tempest_gym.errors import TempestGymError

log = logging.getLogger(__name__)

WILDCARD = ("0.0.0.0", "::", "")
ACTOR_DIED = -9  # what poll() says for a MAME whose actor is gone (the MAME went with it)
POLL_INTERVAL = 0.5  # s between two looks at an actor's MAME (asynchronous: poll() never waits)
CALL_TIMEOUT = 30.0  # s for a remote call that should be quick (kill, describe)
NICENESS_VAR = "RAY_worker_niceness"  # Ray's workers' nice level (default 15)


class RayNodeError(TempestGymError):
    """A Ray node cannot run a MAME client (tempest-gym not importable there, or its actor died), or Ray cannot
    place one."""


def import_ray():
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise TempestGymError(
            "launcher='ray' (train --ray) needs Ray: pip install 'tempest-gym[ray]' (Ray 2.x) on the trainer and "
            "on every emulator host"
        ) from exc
    return ray


# ---------------------------------------------------------------------------------------------- the actor
class MameActor:
    """Runs on a Ray node (one CPU): checks the node's requirements and supervises one headless MAME.

    Made a Ray actor by :class:`RayLauncher` (this module imports no Ray at import time). Methods return plain
    values; requirement failures come back as ``{"error": ..., "kind": ...}`` with the node's name, so the
    trainer re-raises them as the same :mod:`tempest_gym.errors` class."""

    def __init__(self, slot: int, run: str, workdir: str | None = None, keep_workdir: bool = False) -> None:
        import ray

        self.slot = slot
        self.node = socket.gethostname()
        self.ip = ray.util.get_node_ip_address()
        # scratch: <workdir>/slotN, else <tmp>/tempest-ray-<run>/slotN (removed at stop); a replacement actor of
        # the slot on this node takes over the directory of one that died, so none piles up
        self.own_root = not workdir
        self.root = Path(workdir) if workdir else Path(tempfile.gettempdir()) / f"tempest-ray-{run}"
        self.workdir = self.root / f"slot{slot}"
        self.keep_workdir = keep_workdir
        self.proc: MameProcess | None = None
        # Ray starts its workers at nice 15 (RAY_worker_niceness) and MAME would inherit it, losing the CPU to
        # anything else on the node (the trainer, on its own node): back to 0 where allowed (root, CAP_SYS_NICE)
        with contextlib.suppress(OSError):
            if os.getpriority(os.PRIO_PROCESS, 0) > 0:
                os.setpriority(os.PRIO_PROCESS, 0, 0)
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)

    def __repr__(self) -> str:  # how Ray's logs and dashboard name the actor
        return f"MameActor(slot={self.slot})"

    def where(self) -> dict[str, Any]:
        import tempest_gym

        return {"node": self.node, "ip": self.ip, "pid": self.proc.pid if self.proc else None, "nice": self.nice,
                "version": tempest_gym.__version__, "package": str(Path(tempest_gym.__file__).parent)}  # fmt: skip

    def start(self, settings: Mapping[str, object], mame: str | None, rompath: str | None, headless: bool,
              mame_args: Sequence[str], hosts: Mapping[str, str | None]) -> dict[str, Any]:  # fmt: skip
        """Check this node (MAME, ROMs) and (re)start MAME with ``settings``; ``hosts`` maps this node's IP (or
        ``"*"``) to the address the client connects to (None: the trainer cannot be reached from here)."""
        try:
            mame_path = find_mame(mame)
            roms = find_rompath(rompath)
            verify_roms(mame_path, roms)
        except TempestGymError as exc:
            return {"error": str(exc), "kind": type(exc).__name__, **self.where()}
        host = hosts.get(self.ip, hosts.get("*"))
        if not host:
            return {"error": "the trainer listens on loopback only, so MAME on this node cannot reach it: "
                             "listen on the network (train --listen 0.0.0.0:PORT)",
                    "kind": "RayNodeError", **self.where()}  # fmt: skip
        settings = dict(settings, host=host)
        if self.proc is None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.workdir.mkdir(mode=0o700, exist_ok=True)
            self.proc = MameProcess(self.slot, self.workdir, mame_path, roms, settings, headless, tuple(mame_args))
        else:
            self.proc.settings = settings
        try:
            self.proc.start()
        except TempestGymError as exc:
            return {"error": str(exc), "kind": type(exc).__name__, **self.where()}
        return self.where()

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait_exit(self, timeout: float) -> int | None:
        return self.proc.wait_exit(timeout) if self.proc else None

    def kill(self, grace: float = 0.0) -> None:
        if self.proc:
            self.proc.kill(grace)

    def describe_exit(self) -> str:
        return self.proc.describe_exit() if self.proc else f"MAME slot {self.slot} never started"

    def stop(self, grace: float = 0.0) -> None:
        """Kill MAME and remove the scratch directory (unless kept)."""
        self.kill(grace)
        if self.own_root and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # the last slot of the run on this node


# ---------------------------------------------------------------------------------------------- trainer side
_ray_lock = threading.Lock()
_ray_users = 0  # launchers using the Ray connection this process opened
_ray_ours = False  # whether this process started (ray.init) the connection, and so shuts it down


class RayLauncher:
    """The trainer's side: connects to Ray (or starts a local instance) and makes one :class:`RayMameProcess` per
    slot. Several launchers in one process (the training env and the evaluation env) share the connection; the
    last one closed shuts down what this process started.

    :param address: a Ray cluster's address (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None or ``""``: a
        running connection if there is one (``ray.init`` called before), else a new local Ray instance
    :param num_cpus: CPUs of a local instance (each MAME actor takes one)
    :param actor_options: more options for the actors (``ray.remote``'s), over ours: e.g. ``{"resources":
        {"mame": 1}}`` to place them only on nodes started with ``ray start --resources '{"mame": 8}'``
    """

    def __init__(self, address: str | None, num_cpus: int, connect_timeout: float = 60.0,
                 workdir: str | None = None, keep_workdir: bool = False,
                 actor_options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        global _ray_users, _ray_ours
        ray = import_ray()
        self.ray = ray
        self.connect_timeout = connect_timeout
        self.workdir = workdir
        self.keep_workdir = keep_workdir
        with _ray_lock:
            if not ray.is_initialized():
                if address:
                    log.warning("connecting to the Ray cluster at %s", address)
                    ray.init(address=address, log_to_driver=True)
                else:
                    log.warning("starting a local Ray instance with %d CPU(s)", num_cpus)
                    # its workers at nice 0, not Ray's 15: MAME runs in them and must not yield to the trainer
                    niceness = os.environ.get(NICENESS_VAR)
                    os.environ[NICENESS_VAR] = niceness or "0"
                    try:
                        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
                    finally:
                        if niceness is None:
                            del os.environ[NICENESS_VAR]
                _ray_ours = True
            _ray_users += 1
        self._closed = False
        self.run = secrets.token_hex(6)  # names the actors' scratch directories
        self.trainer_ip = ray.util.get_node_ip_address()
        options: dict[str, Any] = {
            "num_cpus": 1,
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,  # a dead actor is replaced by the cluster's supervision (a new actor, on a live node)
        }
        options.update(actor_options or {})
        self.actor_class = ray.remote(MameActor).options(**options)

    # ------------------------------------------------------------------ nodes
    def nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def node_name(self, ip: str | None) -> str:
        """The host name of the node with this IP, as Ray knows it (else the IP)."""
        if not ip:
            return "?"
        for n in self.nodes():
            if n.get("NodeManagerAddress") == ip:
                return n.get("NodeManagerHostname") or n.get("NodeName") or ip
        return ip

    def listen_host(self, host: str) -> str:
        """Where the trainer listens: ``host``, except loopback on a cluster of several nodes, where the clients on
        the other nodes could not reach it: then every interface (the run's token keeps strangers out)."""
        if host in LOOPBACK and any(n.get("NodeManagerAddress") != self.trainer_ip for n in self.nodes()):
            log.warning("the Ray cluster has other nodes: listening on 0.0.0.0 instead of %s (the run's token "
                        "keeps strangers out; --listen chooses)", host)  # fmt: skip
            return "0.0.0.0"
        return host

    def connect_hosts(self, host: str) -> dict[str, str | None]:
        """Where a client on each node connects: this node's clients over loopback; others to the address the
        trainer listens on (its Ray node IP when it listens on every interface; none when on loopback)."""
        if host in WILDCARD:
            return {self.trainer_ip: "127.0.0.1", "*": self.trainer_ip}
        if host in LOOPBACK:
            return {self.trainer_ip: "127.0.0.1", "*": None}
        return {"*": host}

    def cluster_cpus(self) -> str:
        total = self.ray.cluster_resources().get("CPU", 0)
        free = self.ray.available_resources().get("CPU", 0)
        return f"the Ray cluster has {total:g} CPU(s), {free:g} free"

    # ------------------------------------------------------------------ processes
    def make_process(self, slot: int, settings: Mapping[str, object], mame: str | None, rompath: str | None,
                     headless: bool, mame_args: Sequence[str], hosts: Mapping[str, str | None],
                     ) -> RayMameProcess:  # fmt: skip
        return RayMameProcess(self, slot, settings, mame, rompath, headless, mame_args, hosts)

    def new_actor(self, slot: int):
        return self.actor_class.remote(slot, self.run, self.workdir, self.keep_workdir)

    def start_all(self, procs: Sequence[RayMameProcess]) -> None:
        """Start every slot's actor and MAME at once (placement and node checks run in parallel)."""
        pending = [(p, p.submit_start()) for p in procs]
        deadline = time.monotonic() + self.connect_timeout
        for p, ref in pending:
            p.finish_start(ref, max(deadline - time.monotonic(), 1.0))

    def stop_all(self, procs: Sequence[RayMameProcess], grace: float = 1.0) -> None:
        """Stop every MAME and actor (in parallel), then let go of Ray."""
        refs = []
        for p in procs:
            if p.actor is not None and p.dead is None:
                with contextlib.suppress(Exception):
                    refs.append(p.actor.stop.remote(grace))
        if refs:
            with contextlib.suppress(Exception):
                self.ray.wait(refs, num_returns=len(refs), timeout=grace + 5)  # an actor never placed never answers
        for p in procs:
            p.drop_actor()
        self.close()

    def close(self) -> None:
        global _ray_users, _ray_ours
        if self._closed:
            return
        self._closed = True
        with _ray_lock:
            _ray_users -= 1
            if _ray_users <= 0 and _ray_ours:
                _ray_ours = False
                with contextlib.suppress(Exception):
                    self.ray.shutdown()


class RayMameProcess:
    """One slot's MAME on a Ray node, seen from the trainer as a :class:`~tempest_gym.bridge.mame.MameProcess`.

    ``poll()`` never waits: it returns what the last asynchronous look found (at most ``POLL_INTERVAL`` old), so
    the cluster can call it on every step. A MAME whose actor died polls as exited (``ACTOR_DIED``)."""

    def __init__(self, launcher: RayLauncher, slot: int, settings: Mapping[str, object], mame: str | None,
                 rompath: str | None, headless: bool, mame_args: Sequence[str],
                 hosts: Mapping[str, str | None]) -> None:  # fmt: skip
        self.launcher = launcher
        self.ray = launcher.ray
        self.slot = slot
        self.settings = dict(settings)
        self.mame = mame
        self.rompath = rompath
        self.headless = headless
        self.mame_args = tuple(mame_args)
        self.hosts = dict(hosts)
        self.actor = None
        self.dead: str | None = None  # why the current actor is gone (None: alive, or none yet)
        self.proc: int | None = None  # MAME's pid on its node while started (a MameProcess has its Popen here)
        self.node = "?"
        self.ip: str | None = None
        self.starts = 0
        self.started_at = 0.0
        self._rc: int | None = None
        self._poll_ref = None
        self._next_poll = 0.0

    @property
    def where(self) -> str:
        return f"Ray node {self.node}" + (f" ({self.ip})" if self.ip and self.ip != self.node else "")

    @property
    def pid(self) -> int | None:
        """MAME's process id on its node."""
        return self.proc

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """(Re)start MAME with the current settings; a new actor if the old one is gone."""
        self.finish_start(self.submit_start(), self.launcher.connect_timeout)

    def submit_start(self):
        if self.actor is None or self.dead is not None:
            self.drop_actor()
            self.actor = self.launcher.new_actor(self.slot)
            self.dead = None
        self._poll_ref = None  # a look at the previous MAME must not speak for the new one
        self._rc = None
        self._next_poll = 0.0
        return self.actor.start.remote(self.settings, self.mame, self.rompath, self.headless, self.mame_args,
                                       self.hosts)  # fmt: skip

    def finish_start(self, ref, timeout: float, retry: bool = True) -> None:
        ray = self.ray
        ready, _ = ray.wait([ref], timeout=timeout)
        if not ready:
            self.drop_actor()
            raise RayNodeError(
                f"Ray did not start the MAME actor for slot {self.slot} within {timeout:.0f} s: each MAME actor "
                f"needs a free CPU and {self.launcher.cluster_cpus()} (see `ray status`; a local instance gets "
                "ray_num_cpus, train --ray: --num-envs plus --eval-envs)"
            )
        try:
            out = ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            text = str(exc)
            ip = getattr(exc, "ip", None) or _ip_in(text)
            if isinstance(exc, ray.exceptions.RayTaskError) or IMPORT_FAILED in text:  # our code could not run
                self.ip, self.node = ip, self.launcher.node_name(ip)
                self.drop_actor()
                if IMPORT_FAILED in text:
                    raise RayNodeError(
                        f"{self.where}: tempest-gym is not importable there (install it, the same version as on "
                        f"the trainer, into the Python that runs `ray start` on that node):\n{_last_lines(text)}"
                    ) from exc
                raise RayNodeError(f"{self.where}: the MAME actor for slot {self.slot} failed:\n{text}") from exc
            self.dead = text
            if retry:  # the actor died before it could start MAME (its node went away?): once more, on a new one
                log.warning("the actor for slot %d died (%s); starting a new one", self.slot, exc)
                return self.finish_start(self.submit_start(), timeout, retry=False)
            raise RayNodeError(f"the MAME actor for slot {self.slot} died while starting: {exc}") from exc
        self.node, self.ip = out.get("node", "?"), out.get("ip")
        if "error" in out:
            kind = getattr(errors, out.get("kind", ""), None)
            if kind is None:
                kind = RayNodeError if out.get("kind") == "RayNodeError" else TempestGymError
            raise kind(f"{self.where}: {out['error']}")
        import tempest_gym

        if out.get("version") != tempest_gym.__version__ and self.starts == 0:
            log.warning("%s runs tempest-gym %s (%s), the trainer %s: install the same version on every node",
                        self.where, out.get("version"), out.get("package"), tempest_gym.__version__)  # fmt: skip
        if out.get("nice", 0) > 0 and self.starts == 0:
            log.warning("MAME on %s runs at nice %d (Ray's worker niceness) and yields the CPU to everything else "
                        "there: start Ray on that node with RAY_worker_niceness=0",
                        self.where, out["nice"])  # fmt: skip
        self.proc = out["pid"]
        self.starts += 1
        self.started_at = time.monotonic()
        log.info("slot %d: MAME pid %s on %s", self.slot, self.proc, self.where)

    # ------------------------------------------------------------------ the MameProcess interface
    def poll(self) -> int | None:
        """MAME's exit code if it has ended (``ACTOR_DIED`` if its actor is gone), else None. Never waits, and
        touches Ray at most every ``POLL_INTERVAL`` s (the cluster calls it on every step)."""
        if self.dead is not None:
            return ACTOR_DIED
        if self.actor is None or self.proc is None:
            return self._rc
        now = time.monotonic()
        if now < self._next_poll:
            return self._rc
        self._next_poll = now + POLL_INTERVAL
        if self._poll_ref is not None:
            ready, _ = self.ray.wait([self._poll_ref], timeout=0)
            if not ready:
                return self._rc
            ref, self._poll_ref = self._poll_ref, None
            self._rc = self._get(ref)
            if self.dead is not None:
                return ACTOR_DIED
        if self._rc is None:
            self._poll_ref = self.actor.poll.remote()  # looked at next time
        return self._rc

    def _get(self, ref, timeout: float | None = None) -> Any:
        """``ray.get`` that turns a dead actor into ``ACTOR_DIED`` (and remembers why) and a timeout into None."""
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.RayActorError as exc:
            self.dead = str(exc)
            return ACTOR_DIED
        except self.ray.exceptions.GetTimeoutError:
            return None

    def wait_exit(self, timeout: float) -> int | None:
        if self.actor is None or self.proc is None:
            return self._rc
        if self.dead is None:
            self._rc = self._get(self.actor.wait_exit.remote(timeout), timeout + CALL_TIMEOUT)
        return ACTOR_DIED if self.dead is not None else self._rc

    def kill(self, grace: float = 0.0) -> None:
        if self.actor is not None and self.dead is None:
            self._get(self.actor.kill.remote(grace), grace + CALL_TIMEOUT)
        self.proc = None
        self._rc = None
        self._poll_ref = None

    def describe_exit(self) -> str:
        if self.dead is not None:
            return (f"MAME slot {self.slot} (pid {self.proc}) on {self.where}: its Ray actor died (MAME went with "
                    f"it): {self.dead}")  # fmt: skip
        if self.actor is None:
            return f"MAME slot {self.slot} on {self.where}: no actor"
        text = self._get(self.actor.describe_exit.remote(), CALL_TIMEOUT)
        if self.dead is not None:
            return self.describe_exit()
        return f"on {self.where}: {text}" if isinstance(text, str) else f"MAME slot {self.slot} on {self.where}: ?"

    def log_tail(self, lines: int = 15) -> str:
        return self.describe_exit()

    def drop_actor(self) -> None:
        """Let go of the current actor (killing it, and so its MAME, if it is still there)."""
        if self.actor is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(self.actor, no_restart=True)
        self.actor = None
        self.proc = None
        self._poll_ref = None


IMPORT_FAILED = "failed to import on the worker"  # what Ray says when an actor's class cannot be loaded on a node


def _ip_in(text: str) -> str | None:
    """The node IP in a Ray error message (``ip: 10.0.0.2`` or ``ip=10.0.0.2``)."""
    m = re.search(r"\bip[:=] ?([0-9A-Fa-f.:]+[0-9A-Fa-f])", text)
    return m.group(1) if m else None


def _last_lines(text: str, n: int = 4) -> str:
    """The end of a long Ray traceback: the error itself."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def default_num_cpus(num_envs: int) -> int:
    """CPUs of a local Ray instance: one per MAME actor, at least the machine's."""
    return max(num_envs, os.cpu_count() or 1)

"""Run MAME clients on another host: ``python -m tempest_gym.client --server HOST:PORT --num N --rompath DIR``.

Starts N headless MAME instances that connect to a trainer started with ``--remote`` (see README,
"Several hosts"), and supervises them: a crashed MAME is restarted with backoff; when the trainer goes
away the Lua clients keep MAME alive and reconnect by themselves (each reconnection is a new run, so
the trainer never stitches two streams together). The server assigns slots. Every run has a token:
``--token`` or ``$TEMPEST_TOKEN`` (required when the trainer listens off loopback); a trainer on this host
that made up its own leaves it in a file only this user can read, and clients for ``127.0.0.1:PORT``
without ``--token`` read it there on every (re)connection. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tempest_gym.bridge.mame import MameProcess, find_mame, find_rompath, verify_roms
from tempest_gym.bridge.server import LOOPBACK, token_file_path
from tempest_gym.cli.common import add_emulator_args, exit_codes, parse_server, starting

log = logging.getLogger("tempest_gym.cli.client")


class ClientSupervisor:
    """N local MAME processes for a remote trainer, restarted with exponential backoff when they die."""

    def __init__(self, host: str, port: int, num: int, rompath: str, mame: str, token: str, seed: int = 0,
                 start_level: int = 1, lives: int = 3, workdir: str | None = None, max_backoff: float = 60.0,
                 token_file: str = "") -> None:  # fmt: skip
        self.root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tempest-client-"))
        self._own_root = workdir is None
        self.max_backoff = max_backoff
        self.procs: list[MameProcess] = []
        self.next_start = [0.0] * num
        self.failures = [0] * num
        self.restarts = 0
        for i in range(num):
            settings = {"host": host, "port": port, "slot": -1, "seed": (seed + i) & 0x7FFFFFFF,
                        "start_level": start_level, "lives": lives, "reconnect": 1, "token": token,
                        "token_file": token_file, "connect_timeout": 3600, "reply_timeout": 3600}  # fmt: skip
            wd = self.root / f"client{i}"
            wd.mkdir(parents=True, exist_ok=True)
            self.procs.append(MameProcess(i, wd, mame, rompath, settings))

    def start(self) -> None:
        for p in self.procs:
            p.start()
        log.info("started %d MAME client(s)", len(self.procs))

    def check(self) -> None:
        """Restart exited processes (with backoff); call regularly."""
        now = time.monotonic()
        for i, p in enumerate(self.procs):
            rc = p.poll() if p.proc is not None else None
            if p.proc is not None and rc is None:
                if now - p.started_at > 60:
                    self.failures[i] = 0  # a minute of life forgives earlier crashes
                continue
            if p.proc is not None:
                self.failures[i] += 1
                delay = min(2 ** (self.failures[i] - 1), self.max_backoff)
                self.next_start[i] = now + delay
                log.warning("MAME client %d exited (%s); restarting in %.0f s", i, p.describe_exit(), delay)
                p.proc = None
            if now >= self.next_start[i]:
                p.start()
                self.restarts += 1

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


@exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tempest_gym.client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--server", required=True, help="the trainer's HOST:PORT")
    p.add_argument("--token", default=None, help="the run's token (default $TEMPEST_TOKEN; for a trainer on "
                   "this host's loopback, the token file it wrote); prefer $TEMPEST_TOKEN: a command line is public")
    add_emulator_args(p, num_flags=("--num", "--num-envs"), num_help="MAME instances to run here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    with starting("--server: "):
        host, port = parse_server(args.server)
    with starting():
        mame, rompath = find_mame(args.mame), find_rompath(args.rompath)
        verify_roms(mame, rompath)
    token = args.token or os.environ.get("TEMPEST_TOKEN", "")
    token_file = ""
    if not token and host in LOOPBACK:
        token_file = str(token_file_path(port))  # read by the Lua clients at every (re)connection
        print(f"no --token: using the token the trainer on this host writes to {token_file}", flush=True)
    sup = ClientSupervisor(host, port, args.num_envs, rompath, mame, token, args.seed, args.start_level, args.lives,
                           token_file=token_file)  # fmt: skip
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sup.start()
    print(f"{args.num_envs} MAME client(s) playing for {host}:{port}; Ctrl-C stops them", flush=True)
    try:
        while not stop:
            sup.check()
            time.sleep(0.5)
    finally:
        sup.stop()
    print(f"stopped ({sup.restarts} restart(s))", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

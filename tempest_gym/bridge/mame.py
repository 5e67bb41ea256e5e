"""Finding MAME and the ROMs, and starting one headless MAME process per env slot.

Every instance gets its own scratch directory (cfg, nvram, save states, snapshots) and runs
with ``-noreadconfig``: a shared cfg or a saved high-score table would change the game's
trajectory and leak dip-switch settings between runs (docs/mame.md 8).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tempest_gym.bridge.paths import ENTRY_SCRIPT, lua_dir
from tempest_gym.errors import MameNotFoundError, RomsNotFoundError

GAME = "tempest1"
DEBIAN_MAME = "/usr/games/mame"
INSTALL_HINT = "install it with `sudo apt-get install -y mame lua-socket` or pass --mame PATH"

_verified: set[tuple[str, str]] = set()


def find_mame(path: str | os.PathLike | None = None) -> str:
    """The MAME binary: ``path`` if given, else ``$TEMPEST_MAME``, ``mame`` on PATH, /usr/games/mame."""
    if path:
        p = Path(path)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        found = shutil.which(str(path))
        if found:
            return found
        raise MameNotFoundError(f"MAME not found at {path!s} (not an executable file); {INSTALL_HINT}")
    env = os.environ.get("TEMPEST_MAME")
    if env:
        return find_mame(env)
    for candidate in ("mame", DEBIAN_MAME):
        found = shutil.which(candidate)
        if found:
            return found
    raise MameNotFoundError(f"MAME not found on PATH or at {DEBIAN_MAME}; {INSTALL_HINT}")


def find_rompath(rompath: str | os.PathLike | None = None) -> str:
    """The ROM directory: ``rompath`` if given, else ``$TEMPEST_ROMS``. It must hold tempest1."""
    source = "--rompath"
    if not rompath:
        rompath = os.environ.get("TEMPEST_ROMS")
        source = "$TEMPEST_ROMS"
    if not rompath:
        raise RomsNotFoundError(
            "no ROM path: pass --rompath DIR (or set TEMPEST_ROMS) pointing at a directory that "
            f"contains the {GAME} set ({GAME}/ or {GAME}.zip). tempest-gym never ships ROMs."
        )
    p = Path(rompath).expanduser()
    if not p.is_dir():
        raise RomsNotFoundError(f"ROM path {p} (from {source}) is not a directory")
    if not ((p / GAME).is_dir() or (p / f"{GAME}.zip").is_file() or (p / f"{GAME}.7z").is_file()):
        raise RomsNotFoundError(
            f"ROM path {p} (from {source}) has no {GAME}/ folder or {GAME}.zip; "
            "point it at the directory that contains the set, not at the set itself"
        )
    return str(p.resolve())


def verify_roms(mame: str, rompath: str) -> None:
    """Run ``mame -verifyroms tempest1`` once per (binary, rompath) in this process."""
    key = (mame, rompath)
    if key in _verified:
        return
    try:
        out = subprocess.run(
            [mame, "-verifyroms", GAME, "-rompath", rompath],
            capture_output=True,
            text=True,
            timeout=60,
            env=_mame_env(headless=True),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MameNotFoundError(f"could not run {mame} -verifyroms: {exc}") from exc
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or f"romset {GAME} is bad" in text:
        lines = [ln for ln in text.splitlines() if "ALSA" not in ln][-12:]
        raise RomsNotFoundError(
            f"MAME says the {GAME} ROMs in {rompath} are missing or bad (rc {out.returncode}):\n  " + "\n  ".join(lines)
        )
    _verified.add(key)


def _mame_env(headless: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if headless:
        env["SDL_VIDEODRIVER"] = "dummy"
        env.setdefault("SDL_AUDIODRIVER", "dummy")
    if extra:
        env.update(extra)
    return env


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: the client settings hold the run's token, which must appear
    neither on a command line nor in a file other users can read (the scratch directory may be shared)."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an older file may have been created with wider permissions
        f.write(text)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGKILL the emulator if the trainer dies (headless MAME ignores SIGTERM)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class MameProcess:
    """One MAME instance running our autoboot script, with its own scratch directory."""

    def __init__(
        self,
        slot: int,
        workdir: Path,
        mame: str,
        rompath: str,
        settings: Mapping[str, object],
        headless: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.slot = slot
        self.workdir = workdir
        self.mame = mame
        self.rompath = rompath
        self.settings = dict(settings)
        self.headless = headless
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mame.log"
        self.starts = 0
        self.started_at = 0.0

    def command(self) -> list[str]:
        d = self.workdir
        cmd = [
            self.mame,
            GAME,
            "-rompath",
            self.rompath,
            "-noreadconfig",
            "-skip_gameinfo",
            "-nothrottle" if self.headless else "-throttle",
            "-cfg_directory",
            str(d / "cfg"),
            "-nvram_directory",
            str(d / "nvram"),
            "-state_directory",
            str(d / "sta"),
            "-snapshot_directory",
            str(d / "snap"),
            "-autoboot_delay",
            "0",
            "-autoboot_script",
            str(lua_dir() / ENTRY_SCRIPT),
        ]
        if self.headless:
            cmd += ["-video", "none", "-sound", "none"]
        else:
            cmd += ["-window"]
        return cmd + list(self.extra_args)

    def start(self) -> None:
        """(Re)start the process with a fresh cfg/nvram, so every run starts the same way."""
        self.kill()
        for sub in ("cfg", "nvram", "sta", "snap"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "client.cfg"
        write_private(cfg_path, "".join(f"{k}={v}\n" for k, v in self.settings.items()))
        with open(self.log_path, "ab") as log:
            self.proc = self._popen(cfg_path, log)
        self.starts += 1
        self.started_at = time.monotonic()

    def _popen(self, cfg_path: Path, log) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_mame_env(self.headless, {"TEMPEST_GYM_CONFIG": str(cfg_path)}),
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            raise MameNotFoundError(f"could not start {self.mame}: {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        """Exit code if the process has ended, else None."""
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no MAME output)"
        keep = [ln for ln in text.splitlines() if ln.strip() and "snd_seq_hw_open" not in ln]
        return "\n".join(keep[-lines:]) or "(no MAME output)"

    def describe_exit(self) -> str:
        rc = self.poll()
        what = {
            2: "ROMs not found",
            3: "Lua client refused its configuration or the handshake",
            4: "Lua error",
            5: "Lua client lost the server",
            -9: "killed (SIGKILL)",
            139: "segfault",
            -11: "segfault",
        }.get(rc if rc is not None else 0, "")
        status = "still running" if rc is None else f"exit code {rc}" + (f" ({what})" if what else "")
        return f"MAME slot {self.slot} (pid {self.pid}) {status}; last output:\n{self.log_tail()}"

    def kill(self, grace: float = 0.0) -> None:
        """Stop the process: wait ``grace`` seconds for a clean exit, then SIGKILL."""
        if self.proc is None:
            return
        if grace > 0:
            self.wait_exit(grace)
        if self.proc.poll() is None:
            self.proc.kill()  # headless MAME ignores SIGTERM
            self.wait_exit(5)
        self.proc = None

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the process to end (e.g. a client that just hung up)."""
        if self.proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        return self.proc.poll()

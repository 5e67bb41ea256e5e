"""Watching and replaying: per-episode videos from MAME, and compact action logs.

Videos: the Lua client asks MAME to record each episode (life) as MNG (``record=mng``). That works
headless (``-video none``): MAME renders its snapshot bitmap for recordings regardless of the
display. MNG is compressed PNG frames (~8-20 KB per 60 Hz frame at 320x240-640x480); AVI is
uncompressed (~0.9 MB per frame at 640x480), so we use MNG and, when ``ffmpeg`` is installed,
convert each episode to MP4 (ffmpeg cannot read MNG itself: the PNG frames are split out here and
piped to it). Without ffmpeg the .mng files are kept (MAME's own ``-playback`` cannot show them,
but e.g. ImageMagick or a browser plug-in can).

Action logs: the game is deterministic for a given ROM, settings, seed and inputs, and the env
steps every instance in lockstep, so the integer actions sent to one instance replay its games
exactly (``python -m tempest_gym.replay LOG``). A log is a small ``.npz``: the fire/zap index
(uint8) and spinner delta (int8) of every step, the episode ends with their scores, and the
settings needed to start the same game.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MNG_SIGNATURE = b"\x8aMNG\r\n\x1a\n"
LOG_VERSION = 1


def mng_frames(path: str | Path) -> Iterator[bytes]:
    """The frames of an MNG file as standalone PNG images (IHDR ... IEND chunk runs)."""
    data = Path(path).read_bytes()
    if not data.startswith(MNG_SIGNATURE):
        raise ValueError(f"{path} is not an MNG file")
    off, frame = len(MNG_SIGNATURE), None
    while off + 8 <= len(data):
        (n,) = struct.unpack(">I", data[off : off + 4])
        kind = data[off + 4 : off + 8]
        chunk = data[off : off + 12 + n]
        off += 12 + n
        if kind == b"IHDR":
            frame = [chunk]
        elif frame is not None:
            frame.append(chunk)
            if kind == b"IEND":
                yield PNG_SIGNATURE + b"".join(frame)
                frame = None


def mng_to_mp4(mng: str | Path, mp4: str | Path, fps: int = 60) -> bool:
    """Convert with ffmpeg (H.264, yuv420p). False when ffmpeg is missing or fails (the MNG is kept)."""
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        return False
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "image2pipe", "-framerate", str(fps),
           "-c:v", "png", "-i", "-", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
           str(mp4)]  # fmt: skip
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        try:
            for png in mng_frames(mng):
                proc.stdin.write(png)
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        ok = proc.wait() == 0
    return ok and Path(mp4).is_file() and Path(mp4).stat().st_size > 0


def collect_videos(snap_dir: str | Path, out_dir: str | Path, convert: bool = True) -> list[Path]:
    """Move MAME's ``episode_NNNN.mng`` recordings to ``out_dir``, as MP4 when ffmpeg can convert them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for src in sorted(Path(snap_dir).glob("episode_*.*")):
        if src.stat().st_size == 0:
            continue
        mp4 = out / (src.stem + ".mp4")
        if convert and src.suffix == ".mng" and mng_to_mp4(src, mp4):
            src.unlink()
            results.append(mp4)
        else:
            dst = out / src.name
            shutil.move(str(src), dst)
            results.append(dst)
    return results


@dataclass
class ActionLog:
    """The integer actions one instance received, with episode boundaries and the settings to replay them."""

    settings: dict[str, Any]
    fz: list[int] = field(default_factory=list)
    spin: list[int] = field(default_factory=list)
    episode_end: list[int] = field(default_factory=list)  # step index (0-based) of each episode's last step
    episode_score: list[int] = field(default_factory=list)
    episode_points: list[int] = field(default_factory=list)
    episode_level: list[int] = field(default_factory=list)

    def add(self, fz: int, spin: int) -> None:
        self.fz.append(int(fz))
        self.spin.append(int(spin))

    def end_episode(self, episode: dict[str, Any]) -> None:
        self.episode_end.append(len(self.fz) - 1)
        self.episode_score.append(int(episode.get("score", 0)))
        self.episode_points.append(int(episode.get("points", 0)))
        self.episode_level.append(int(episode.get("level", 0)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.settings, log_version=LOG_VERSION)
        np.savez_compressed(
            path,
            fz=np.array(self.fz, dtype=np.uint8),
            spin=np.array(self.spin, dtype=np.int8),
            episode_end=np.array(self.episode_end, dtype=np.int64),
            episode_score=np.array(self.episode_score, dtype=np.int64),
            episode_points=np.array(self.episode_points, dtype=np.int64),
            episode_level=np.array(self.episode_level, dtype=np.int64),
            meta=np.array(json.dumps(meta)),
        )
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> ActionLog:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("log_version") != LOG_VERSION:
                raise ValueError(f"{path}: action log version {meta.get('log_version')}, expected {LOG_VERSION}")
            return cls(
                settings=meta,
                fz=z["fz"].astype(int).tolist(),
                spin=z["spin"].astype(int).tolist(),
                episode_end=z["episode_end"].tolist(),
                episode_score=z["episode_score"].tolist(),
                episode_points=z["episode_points"].tolist(),
                episode_level=z["episode_level"].tolist(),
            )

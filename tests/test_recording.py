"""Watching: a recorded episode gives a video file and an action log that replays to the same score."""

from __future__ import annotations

import numpy as np

from tempest_gym.cli import enjoy, replay
from tempest_gym.training.recording import ActionLog, mng_frames


def test_record_then_replay(rompath, tmp_path, capsys):
    out = tmp_path / "rec"
    rc = enjoy.main(["--algo", "random", "-n", "1500", "--lives", "2", "--seed", "4", "--rompath", rompath,
                     "--record", str(out), "--headless", "--record-size", "320x240"])  # fmt: skip
    assert rc == 0
    videos = sorted((out / "env0").iterdir())
    assert videos and all(v.suffix in (".mp4", ".mng") and v.stat().st_size > 1000 for v in videos)
    log = ActionLog.load(out / "env0.actions.npz")
    assert len(log.fz) == 1500 and log.episode_end, "random play dies within 1,500 ticks"
    assert len(videos) == len(log.episode_end) + 1  # one per episode, plus the unfinished last one
    capsys.readouterr()
    assert replay.main([str(out / "env0.actions.npz"), "--rompath", rompath]) == 0
    text = capsys.readouterr().out
    assert "matches the log" in text and "DIFFERENT" not in text


def test_replay_detects_a_different_game(rompath, tmp_path, capsys):
    log = ActionLog({"seed": 1, "start_level": 1, "lives": 2, "max_spin": 31})
    for t in range(600):
        log.add(1, 5 if t % 50 < 25 else -5)
    log.episode_end, log.episode_score = [100], [123_456]  # not what this input does
    path = log.save(tmp_path / "bogus.actions.npz")
    assert replay.main([str(path), "--rompath", rompath]) == 1
    assert "DIFFERENT" in capsys.readouterr().out


def test_mng_frames_split_into_pngs(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    frame = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x7f")) + chunk(b"IEND", b"")
    mng = b"\x8aMNG\r\n\x1a\n" + chunk(b"MHDR", bytes(28)) + frame * 3 + chunk(b"MEND", b"")
    (tmp_path / "x.mng").write_bytes(mng)
    pngs = list(mng_frames(tmp_path / "x.mng"))
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and p.endswith(chunk(b"IEND", b"")) for p in pngs)
    assert np.frombuffer(pngs[0][8:12], ">u4")[0] == 13  # the IHDR chunk comes first

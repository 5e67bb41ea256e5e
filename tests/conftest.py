"""Shared fixtures. Real-game tests need MAME and a tempest1 ROM set ($TEMPEST_ROMS)."""

from __future__ import annotations

import os
import shutil

import pytest


def _rom_reason() -> str | None:
    roms = os.environ.get("TEMPEST_ROMS")
    if not roms:
        return "TEMPEST_ROMS is not set: point it at a directory holding the tempest1 ROM set to run real-game tests"
    if not (os.path.isdir(os.path.join(roms, "tempest1")) or os.path.isfile(os.path.join(roms, "tempest1.zip"))):
        return f"TEMPEST_ROMS={roms} holds no tempest1/ or tempest1.zip"
    if not (shutil.which("mame") or os.path.exists("/usr/games/mame") or os.environ.get("TEMPEST_MAME")):
        return "MAME is not installed (apt-get install -y mame lua-socket)"
    return None


ROM_REASON = _rom_reason()
needs_game = pytest.mark.skipif(ROM_REASON is not None, reason=ROM_REASON or "")


@pytest.fixture(scope="session")
def rompath() -> str:
    if ROM_REASON:
        pytest.skip(ROM_REASON)
    return os.environ["TEMPEST_ROMS"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "game: needs real MAME and the tempest1 ROMs ($TEMPEST_ROMS)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "rompath" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.game)

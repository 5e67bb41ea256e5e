"""The layout file is the single source of truth; its docs and parser stay honest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tempest_gym.bridge.layout import default_layout, fnv1a32, parse_layout, render_state_doc

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = default_layout()


def test_docs_state_md_is_generated_from_the_layout():
    doc = (ROOT / "docs" / "state.md").read_text()
    assert render_state_doc(doc, LAYOUT) == doc, "run: python -m tempest_gym.bridge.layout --write docs/state.md"


def test_layout_covers_what_a_player_sees():
    assert LAYOUT.size >= 175
    for group in (
        "player_lane",
        "player_fine",
        "lives",
        "level",
        "zaps_left",
        "enemy_depth",
        "enemy_flipping",
        "eshot_depth",
        "spike",
        "well_open",
        "pulse_phase",
        "pending",
        "threat",
    ):
        assert group in LAYOUT.slices
    assert LAYOUT["enemy_depth"].stop - LAYOUT["enemy_depth"].start == 7
    assert LAYOUT["spike"].stop - LAYOUT["spike"].start == 16
    assert ((LAYOUT.hi - LAYOUT.lo) <= 255).all()
    assert (LAYOUT.low >= -1).all() and (LAYOUT.high <= 1).all()


def test_raw_round_trip_is_exact():
    rng = np.random.default_rng(0)
    raw = rng.integers(LAYOUT.lo, LAYOUT.hi + 1, size=(100, LAYOUT.size))
    obs = (raw / LAYOUT.scale).astype(np.float32)
    np.testing.assert_array_equal(LAYOUT.raw(obs), raw)


def test_hash_depends_on_names_ranges_and_order():
    text = (ROOT / "lua" / "state_layout.tsv").read_text()
    assert parse_layout(text).hash == LAYOUT.hash
    assert parse_layout(text.replace("lives\t1\t0\t6\t6", "lives\t1\t0\t7\t7")).hash != LAYOUT.hash
    lines = text.splitlines()
    i, j = (
        lines.index(next(ln for ln in lines if ln.startswith("gs_play"))),
        lines.index(next(ln for ln in lines if ln.startswith("gs_dive"))),
    )
    lines[i], lines[j] = lines[j], lines[i]
    assert parse_layout("\n".join(lines)).hash != LAYOUT.hash
    assert fnv1a32(b"") == 0x811C9DC5 and fnv1a32(b"a") == 0xE40C292C


@pytest.mark.parametrize(
    "bad, match",
    [
        ("x\t1\t0\t1", "6 tab-separated"),
        ("x\t1\t0\t300\t1\tm", "hi-lo<=255"),
        ("x\tone\t0\t1\t1\tm", "invalid literal"),
        ("x y\t1\t0\t1\t1\tm", "bad feature name"),
        ("x\t1\t0\t1\t1\tm\nx\t1\t0\t1\t1\tm", "duplicate"),
    ],
)
def test_malformed_layout_lines_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_layout(bad, source="t.tsv")

"""The observation layout, read from ``lua/state_layout.tsv`` (the single source of truth).

The Lua client reads the same file, expands it the same way and sends the feature count and
hash in its handshake; :func:`layout_hash` here must stay byte-for-byte identical to
``lua/tempest_gym/layout.lua`` so a stale script on either side is refused, not misread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tempest_gym.bridge.paths import lua_dir

LAYOUT_FILE = "state_layout.tsv"


@dataclass(frozen=True)
class FeatureGroup:
    """One row of the layout file: ``count`` consecutive features sharing a range."""

    name: str
    count: int
    lo: int
    hi: int
    scale: int
    meaning: str

    def feature_names(self) -> list[str]:
        if self.count == 1:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(self.count)]


@dataclass(frozen=True)
class StateLayout:
    """Expanded feature list plus per-feature ranges, as numpy arrays for vectorised use."""

    groups: tuple[FeatureGroup, ...]
    names: tuple[str, ...]
    lo: np.ndarray  # raw integer lower bounds, float32
    hi: np.ndarray
    scale: np.ndarray
    slices: dict[str, slice] = field(repr=False)
    hash: int = 0

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def low(self) -> np.ndarray:
        """Lowest possible normalised value per feature (for the observation space)."""
        return (self.lo / self.scale).astype(np.float32)

    @property
    def high(self) -> np.ndarray:
        return (self.hi / self.scale).astype(np.float32)

    def __getitem__(self, group: str) -> slice:
        """Column slice of a feature group: ``obs[:, LAYOUT["enemy_depth"]]`` is (N, 7)."""
        return self.slices[group]

    def index(self, feature: str) -> int:
        return self.names.index(feature)

    def raw(self, obs: np.ndarray) -> np.ndarray:
        """Exact raw integers back from normalised observations (any leading shape)."""
        return np.rint(np.asarray(obs, dtype=np.float64) * self.scale).astype(np.int32)

    def describe(self) -> str:
        return f"{self.size} features, hash {self.hash:08x}"


def fnv1a32(data: bytes) -> int:
    """32-bit FNV-1a; the Lua side implements the same function for the handshake."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def canonical_text(groups: tuple[FeatureGroup, ...]) -> bytes:
    """What the hash covers: every expanded name with its range and scale, one per line."""
    lines = []
    for g in groups:
        for name in g.feature_names():
            lines.append(f"{name}:{g.lo}:{g.hi}:{g.scale}\n")
    return "".join(lines).encode("ascii")


def parse_layout(text: str, source: str = LAYOUT_FILE) -> StateLayout:
    """Parse layout text; raises ValueError naming the line for anything malformed."""
    groups: list[FeatureGroup] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 6:
            raise ValueError(f"{source}:{lineno}: expected 6 tab-separated columns, got {len(cols)}")
        name, count, lo, hi, scale, meaning = cols
        try:
            g = FeatureGroup(name, int(count), int(lo), int(hi), int(scale), meaning.strip())
        except ValueError as exc:
            raise ValueError(f"{source}:{lineno}: {exc}") from None
        if not name.isidentifier():
            raise ValueError(f"{source}:{lineno}: bad feature name {name!r}")
        if g.count < 1 or g.scale < 1 or g.lo > g.hi or g.hi - g.lo > 255:
            raise ValueError(f"{source}:{lineno}: need count>=1, scale>=1, lo<=hi, hi-lo<=255")
        if name in seen:
            raise ValueError(f"{source}:{lineno}: duplicate feature group {name!r}")
        seen.add(name)
        groups.append(g)
    names: list[str] = []
    lo: list[int] = []
    hi: list[int] = []
    scale: list[int] = []
    slices: dict[str, slice] = {}
    for g in groups:
        start = len(names)
        names.extend(g.feature_names())
        lo += [g.lo] * g.count
        hi += [g.hi] * g.count
        scale += [g.scale] * g.count
        slices[g.name] = slice(start, len(names))
    gt = tuple(groups)
    return StateLayout(
        groups=gt,
        names=tuple(names),
        lo=np.array(lo, dtype=np.float32),
        hi=np.array(hi, dtype=np.float32),
        scale=np.array(scale, dtype=np.float32),
        slices=slices,
        hash=fnv1a32(canonical_text(gt)),
    )


def load_layout(path: str | Path | None = None) -> StateLayout:
    path = Path(path) if path is not None else lua_dir() / LAYOUT_FILE
    return parse_layout(path.read_text(encoding="utf-8"), source=str(path))


@functools.cache
def default_layout() -> StateLayout:
    """The layout shipped with this package (cached: it is read once per process)."""
    return load_layout()


def feature_table_markdown(layout: StateLayout) -> str:
    """The feature table of docs/state.md (a test checks the committed file matches)."""
    rows = [
        "| index | feature | count | raw range | value = raw / | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for g in layout.groups:
        s = layout[g.name]
        idx = str(s.start) if g.count == 1 else f"{s.start}-{s.stop - 1}"
        rows.append(f"| {idx} | `{g.name}` | {g.count} | {g.lo}..{g.hi} | {g.scale} | {g.meaning} |")
    return "\n".join(rows) + "\n"


BEGIN_MARK = "<!-- BEGIN FEATURE TABLE (generated: python -m tempest_gym.bridge.layout --write docs/state.md) -->"
END_MARK = "<!-- END FEATURE TABLE -->"


def render_state_doc(doc: str, layout: StateLayout) -> str:
    """``doc`` with the text between the feature-table markers replaced by the current table."""
    try:
        head, rest = doc.split(BEGIN_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
    except ValueError:
        raise ValueError(f"the document lacks the markers {BEGIN_MARK!r} ... {END_MARK!r}") from None
    summary = f"\n{layout.size} features, layout hash `{layout.hash:08x}`.\n\n"
    return head + BEGIN_MARK + summary + feature_table_markdown(layout) + END_MARK + tail


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tempest_gym.bridge.layout",
                                description="Show or document the state layout")  # fmt: skip
    p.add_argument("--write", metavar="DOC", help="regenerate the feature table inside DOC (docs/state.md)")
    args = p.parse_args(argv)
    layout = default_layout()
    if args.write:
        path = Path(args.write)
        path.write_text(render_state_doc(path.read_text(encoding="utf-8"), layout), encoding="utf-8")
        print(f"wrote {path}: {layout.describe()}")
    else:
        print(feature_table_markdown(layout), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

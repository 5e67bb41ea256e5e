"""Observation codecs for the compact replay buffer: how one observation row is stored.

* :class:`LayoutCodec` (Tempest): every feature is ``raw / scale`` with an integer ``raw`` in ``[lo, hi]`` and
  ``hi - lo <= 255`` (see ``lua/state_layout.tsv``), so ``raw - lo`` fits a ``uint8`` and decodes back to the
  *identical* float32. Every encode checks that round trip bit for bit, so a mismatch (a wrapper rescaling
  observations, a layout out of date) fails loudly instead of silently corrupting the buffer.
* :class:`Float16Codec` (generic float envs): half the memory of float32. Not exact: relative error at most
  2**-11 (about 5e-4) for ``|x|`` in [6.1e-5, 65504], absolute error at most 2**-25 below that; values beyond
  65504 would become ``inf``, so they are refused. Choose ``obs_codec="float32"`` when exactness matters.
* :class:`RawCodec`: store the observation's own dtype (exact; integer/image spaces, or float32 by choice).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

FLOAT16_MAX = 65504.0


class ObsCodec:
    """Interface: ``encode`` (n, D) observations to ``dtype`` codes, ``decode`` codes back to observations."""

    dtype: np.dtype
    exact: bool = True

    def encode(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class LayoutCodec(ObsCodec):
    """Lossless uint8 codes ``raw - lo`` for observations built as ``raw / scale`` (an exact ``StateLayout``).

    Decoding is ``(code + lo) / scale`` in float32 (three vectorised passes) when that reproduces, for every
    possible code, exactly the float32 the env sends (``raw / scale`` in double, rounded once to float32);
    this is checked once at construction. Otherwise decoding is a gather from that (D, 256) table (exact
    always, about 18x slower).
    """

    dtype = np.dtype(np.uint8)
    exact = True

    def __init__(self, lo: np.ndarray, hi: np.ndarray, scale: np.ndarray, layout_hash: int = 0) -> None:
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        if not (self.lo.shape == self.hi.shape == self.scale.shape and self.lo.ndim == 1):
            raise ValueError("lo, hi and scale must be 1-D arrays of the same length")
        if (self.hi - self.lo > 255).any() or (self.hi < self.lo).any() or (self.scale <= 0).any():
            raise ValueError("a layout codec needs lo <= hi, hi - lo <= 255 and scale > 0 for every feature")
        self.layout_hash = int(layout_hash)
        self.dim = len(self.lo)
        codes = np.arange(256, dtype=np.float64)
        raw = np.minimum(self.lo[:, None] + codes[None, :], self.hi[:, None])
        # the env computes raw / scale in double and sends float32; build the table the same way
        table = (raw / self.scale[:, None]).astype(np.float32)
        self._table = table.reshape(-1)
        self._offsets = (np.arange(self.dim, dtype=np.intp) * 256)[None, :]
        self._lo32 = self.lo.astype(np.float32)
        self._scale32 = self.scale.astype(np.float32)
        used = codes[None, :] <= (self.hi - self.lo)[:, None]
        arith = (codes[None, :].astype(np.float32) + self._lo32[:, None]) / self._scale32[:, None]
        self.arithmetic_exact = bool(np.array_equal(arith[used], table[used]))

    @classmethod
    def from_layout(cls, layout: Any) -> LayoutCodec:
        return cls(layout.lo, layout.hi, layout.scale, getattr(layout, "hash", 0))

    def encode(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, self.dim)
        raw = np.rint(obs.astype(np.float64) * self.scale)
        codes = raw - self.lo
        if not ((codes >= 0) & (raw <= self.hi)).all():
            bad = np.argwhere(~((codes >= 0) & (raw <= self.hi)))[0]
            raise ValueError(f"observation feature {bad[1]} = {obs[tuple(bad)]} is outside its layout range")
        codes = codes.astype(np.uint8)
        if not np.array_equal(self.decode(codes), obs):
            bad = np.argwhere(self.decode(codes) != obs)[0]
            raise ValueError(
                f"observation feature {bad[1]} = {obs[tuple(bad)]!r} is not an exact raw/scale value of the "
                "layout: the uint8 replay codes would not round-trip (a wrapper changed the observations, "
                "or the layout is stale); use replay_buffer_kwargs={'obs_codec': 'float32'} to store floats"
            )
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes).reshape(-1, self.dim)
        if self.arithmetic_exact:
            out = codes.astype(np.float32)
            out += self._lo32
            out /= self._scale32
            return out
        return self._table[codes.astype(np.intp) + self._offsets]

    def describe(self) -> str:
        return f"LayoutCodec(uint8, {self.dim} features, layout hash {self.layout_hash:08x})"


class Float16Codec(ObsCodec):
    """float16 storage for generic float observations (lossy, see the module doc for the error bound)."""

    dtype = np.dtype(np.float16)
    exact = False

    def encode(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if np.abs(obs).max(initial=0.0) > FLOAT16_MAX:
            raise ValueError(f"observation magnitude above float16's {FLOAT16_MAX}: use obs_codec='float32'")
        return obs.astype(np.float16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes).astype(np.float32)


class RawCodec(ObsCodec):
    """Store observations as they come, in ``dtype`` (exact)."""

    exact = True

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)

    def encode(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=self.dtype)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes)

    def describe(self) -> str:
        return f"RawCodec({self.dtype})"


def layout_matches(layout: Any, observation_space: spaces.Space) -> bool:
    """Whether ``layout`` describes ``observation_space`` (same size and bounds)."""
    if layout is None or not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        return False
    try:
        low = np.asarray(layout.lo, np.float64) / np.asarray(layout.scale, np.float64)
        high = np.asarray(layout.hi, np.float64) / np.asarray(layout.scale, np.float64)
    except (AttributeError, TypeError, ValueError):
        return False
    if low.shape != observation_space.shape:
        return False
    return bool(
        np.allclose(low, observation_space.low, rtol=0, atol=1e-6)
        and np.allclose(high, observation_space.high, rtol=0, atol=1e-6)
    )


def make_codec(observation_space: spaces.Space, obs_codec: str | ObsCodec = "auto", layout: Any = None) -> ObsCodec:
    """Pick a codec: ``"auto"`` = layout codes if ``layout`` matches the space, the space's own dtype for integer
    spaces, float16 for other float spaces. Also ``"layout"``, ``"float16"``, ``"float32"``, ``"raw"``."""
    if isinstance(obs_codec, ObsCodec):
        return obs_codec
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(f"the compact replay buffer stores Box observations, got {observation_space}")
    if obs_codec == "auto":
        if layout_matches(layout, observation_space):
            return LayoutCodec.from_layout(layout)
        if np.issubdtype(observation_space.dtype, np.integer) or observation_space.dtype == np.bool_:
            return RawCodec(observation_space.dtype)
        return Float16Codec()
    if obs_codec == "layout":
        if not layout_matches(layout, observation_space):
            raise ValueError("obs_codec='layout' needs a layout matching the observation space (env.layout)")
        return LayoutCodec.from_layout(layout)
    if obs_codec == "float16":
        return Float16Codec()
    if obs_codec == "float32":
        return RawCodec(np.float32)
    if obs_codec == "raw":
        return RawCodec(observation_space.dtype)
    raise ValueError(f"unknown obs_codec {obs_codec!r} (auto, layout, float16, float32, raw)")

"""A Tempest-aware SB3 features extractor: the tube seen from the player, with weights shared across lanes.

Why: the flat 245-value observation names lanes absolutely (the player in lane 3, a flipper in lane 5), so a
plain MLP must learn "the enemy two lanes to my left" 16 times over, once per player lane, from data that
visits most of those combinations rarely. An offline behaviour-cloning probe on expert-labelled states moved
the same way as the expert on 34% of its moves with the flat vector and on 93% with a player-centric grid
(docs/results.md). This module builds that grid inside the network, from the observation, so that the env,
the replay buffer and the wire format stay as they are.

* **Lane grid** ``(channels, 16)``: relative lane ``r = -8..7`` at index ``r + 8`` (index 8 is the player's
  lane), one channel per fact: the lane exists (open tubes have 15 lanes that do not wrap), spike, threat and
  pending (rolled from the per-lane arrays), the nearest enemy of each type, enemies moving toward the rim,
  flipping, flipping toward higher lanes, at the rim, shootable, tanker cargo, enemy shots and player shots.
* **Circular convolutions** over the 16 lanes share their weights across lanes; the padding wraps because on
  a closed tube relative lane -8 is the neighbour of +7. On open tubes the lanes beyond the ends are zero and
  flagged absent by the first channel, so the wrap joins zeros.
* **Globals**: every value of the observation except the ones that name absolute lanes (``player_lane``,
  ``player_fine``, ``enemy_lane`` and the three per-lane arrays, all re-expressed in the grid), plus the
  player's position inside its lane. Rotating a closed tube together with the player therefore leaves the
  features unchanged (a test checks it).

The layout (which column is what) comes from the env's ``StateLayout`` (``lua/state_layout.tsv``), the single
source of truth, never from hard-coded indices.
"""

from __future__ import annotations

import threading

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

from tempest_gym.bridge.constants import NLANES
from tempest_gym.bridge.layout import StateLayout, default_layout

#: enemy type flags, one grid channel each (nearest enemy of that type in the lane)
ENEMY_TYPES = ("enemy_flipper", "enemy_pulsar", "enemy_tanker", "enemy_spiker", "enemy_fuseball")
#: per-enemy flags shown in the grid (any enemy in the lane with the flag)
ENEMY_FLAGS = ("enemy_toward", "enemy_flipping", "enemy_at_rim", "enemy_shootable")
#: feature groups that name absolute lanes: replaced by the grid and the in-lane position
ABSOLUTE = ("player_lane", "player_fine", "enemy_lane", "spike", "threat", "pending")
GRID_CHANNELS = 1 + 3 + len(ENEMY_TYPES) + len(ENEMY_FLAGS) + 1 + 1 + 1 + 1

#: per thread: the last few (observation tensor, its grid and globals); see ``TempestLanesExtractor.inputs``
_cache = threading.local()


class LaneConv(nn.Conv1d):
    """``nn.Conv1d`` with circular padding over the lanes, computed as one matrix multiply over the unfolded
    lanes: the same parameters (state dicts load either way) and the same function, up to float rounding.

    Why: at the acting batch (one row per emulator, on the critical path of lockstep collection) a oneDNN
    convolution costs far more to set up than to run; one ``linear`` on (B * 16, C * k) columns is cheaper.
    With the one-product grid it halved a greedy decision on an Intel Xeon VM (``benchmarks/acting.py``; 2-MAME
    collection and the batch-256 update were unchanged within noise: docs/results.md, Throughput).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="circular")

    def forward(self, x: th.Tensor) -> th.Tensor:
        b, _, lanes = x.shape
        k = self.kernel_size[0]
        p = k // 2
        wrapped = th.cat([x[..., lanes - p :], x, x[..., :p]], dim=-1) if p else x
        cols = wrapped.unfold(2, k, 1).transpose(1, 2).reshape(b * lanes, -1)  # (B * 16, C * k), c major
        out = F.linear(cols, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.view(b, lanes, self.out_channels).transpose(1, 2)


class TempestLanesExtractor(BaseFeaturesExtractor):
    """Player-centric lane grid through circular convolutions, concatenated with the global values.

    :param observation_space: the env's Box observation space (its size must match the layout)
    :param conv_channels: output channels of each circular convolution over the lanes
    :param kernel_size: lanes each convolution sees (odd)
    :param features_dim: size of the final linear projection (0: no projection, the concatenation is the output)
    :param layout: the observation layout (default: the packaged ``lua/state_layout.tsv``)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        conv_channels: tuple[int, ...] | list[int] = (64, 64),
        kernel_size: int = 3,
        features_dim: int = 512,
        layout: StateLayout | None = None,
    ) -> None:
        layout = layout or default_layout()
        size = int(np.prod(observation_space.shape))
        if size != layout.size:
            raise ValueError(f"TempestLanesExtractor needs the {layout.size}-value Tempest observation, got {size}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        keep = np.ones(layout.size, dtype=bool)
        for name in ABSOLUTE:
            keep[layout[name]] = False
        n_global = int(keep.sum()) + 1  # + position inside the lane
        convs: list[nn.Module] = []
        channels = GRID_CHANNELS
        for out in conv_channels:
            conv = LaneConv(channels, out, kernel_size)
            convs += [conv, nn.ReLU()]
            channels = out
        concat_dim = channels * NLANES + n_global
        super().__init__(observation_space, features_dim if features_dim > 0 else concat_dim)
        self.convs = nn.Sequential(*convs)
        self.project = nn.Sequential(nn.Linear(concat_dim, features_dim), nn.ReLU()) if features_dim > 0 else None
        self.register_buffer("scale", th.as_tensor(layout.scale, dtype=th.float32), persistent=False)
        self.register_buffer("keep", th.as_tensor(np.flatnonzero(keep)), persistent=False)
        self._s = {g.name: layout[g.name] for g in layout.groups}

    # ------------------------------------------------------------------ the grid
    def _col(self, raw: th.Tensor, name: str) -> th.Tensor:
        s = self._s[name]
        return raw[:, s] if s.stop - s.start > 1 else raw[:, s.start]

    def lane_grid(self, obs: th.Tensor) -> th.Tensor:
        """(B, D) observations -> (B, GRID_CHANNELS, 16) player-centric grid (index 8 = the player's lane)."""
        raw = th.round(obs.float() * self.scale)
        b = raw.shape[0]
        g = self._col
        lane = g(raw, "player_lane").long()
        open_ = g(raw, "well_open") > 0.5
        lanes = th.arange(NLANES, device=raw.device)
        rel = lanes - NLANES // 2  # -8..7
        absolute = lane[:, None] + rel[None, :]
        valid = th.where(open_[:, None], (absolute >= 0) & (absolute <= 14), th.ones_like(absolute, dtype=th.bool))
        idx = absolute % NLANES
        validf = valid.float()

        def roll(name: str, hi: float) -> th.Tensor:
            return th.gather(g(raw, name), 1, idx) * validf / hi

        channels = [th.stack([validf, roll("spike", 240.0), roll("threat", 240.0), roll("pending", 8.0)], dim=1)]

        def hits(rel_lane: th.Tensor, present: th.Tensor) -> th.Tensor:
            """(B, S, 16): 1 where slot s is present in that grid column (outside 0..15 it matches none)."""
            col = rel_lane.long() + NLANES // 2
            return ((col[..., None] == lanes) & present[..., None]).float()

        # every enemy channel in one product: a slot's value is masked by its own flag first (all values are
        # >= 0, so the max over slots is the same as masking the hit), then spread over its column
        present = g(raw, "enemy_present") > 0.5
        proximity = ((256.0 - g(raw, "enemy_depth")) / 240.0).clamp(0.0, 1.1)
        flipping = (g(raw, "enemy_flipping") > 0.5).float()
        values = [proximity * (g(raw, name) > 0.5).float() for name in ENEMY_TYPES]
        values += [g(raw, name) for name in ENEMY_FLAGS]
        values += [g(raw, "enemy_lane_up") * flipping, g(raw, "enemy_cargo") / 3.0]
        enemy = hits(g(raw, "enemy_rel_lane"), present)[:, :, None, :] * th.stack(values, dim=2)[..., None]
        channels.append(enemy.amax(dim=1))  # (B, 11, 16)
        es_present = g(raw, "eshot_present") > 0.5
        es_proximity = ((256.0 - g(raw, "eshot_depth")) / 240.0).clamp(0.0, 1.1)
        eshots = hits(g(raw, "eshot_rel_lane"), es_present) * es_proximity[..., None]
        ps_present = g(raw, "pshot_present") > 0.5
        pshots = hits(g(raw, "pshot_rel_lane"), ps_present) * (g(raw, "pshot_depth") / 255.0)[..., None]
        channels += [eshots.amax(dim=1, keepdim=True), pshots.amax(dim=1, keepdim=True)]
        grid = th.cat(channels, dim=1)
        assert grid.shape == (b, GRID_CHANNELS, NLANES)
        return grid

    def global_values(self, obs: th.Tensor) -> th.Tensor:
        """(B, D) -> (B, G): the observation without its absolute-lane values, plus the in-lane position."""
        fine = th.round(obs[:, self._s["player_fine"].start].float() * 255.0)
        in_lane = th.remainder(fine, 16.0) / 15.0
        return th.cat([obs.float()[:, self.keep], in_lane[:, None]], dim=1)

    def inputs(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Grid and globals of a batch, computed once per observation tensor and thread.

        They have no weights, and one update runs up to five networks (online, target; Q and actor) over the
        same two batches: on a CPU, building the grid five times cost more than the convolutions. The cache
        holds the last 4 tensors of this thread, checked by identity and in-place version.
        """
        entries = getattr(_cache, "entries", None)
        if entries is None:
            entries = _cache.entries = []
        for ref, version, grid, glob in entries:
            if ref is obs and version == obs._version:
                return grid, glob
        grid, glob = self.lane_grid(obs), self.global_values(obs)
        entries.insert(0, (obs, obs._version, grid, glob))
        del entries[4:]
        return grid, glob

    def forward(self, observations: th.Tensor) -> th.Tensor:
        obs = observations.reshape(observations.shape[0], -1)
        if obs.requires_grad:
            grid, glob = self.lane_grid(obs), self.global_values(obs)
        else:
            grid, glob = self.inputs(observations)
        out = th.cat([self.convs(grid).flatten(1), glob], dim=1)
        return self.project(out) if self.project is not None else out

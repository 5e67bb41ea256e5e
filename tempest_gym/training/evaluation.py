"""The evaluation protocol: whole games (all lives), the policy acting alone.

A *game* runs from the tick the client starts it (``info["new_game"]``) to game over. Per game we
record the final score, the highest level reached, the lives lost on each level and the ticks
played. Runs are comparable: the same seeds and settings start the same games (the emulator is
deterministic and the env is stepped in lockstep), so two policies see the same first waves.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tempest_gym.training.agents import Policy, random_actions


@dataclass
class GameResult:
    env: int
    score: int = 0
    max_level: int = 0
    start_level: int = 0
    ticks: int = 0
    lives_lost: dict[int, int] = field(default_factory=dict)  # level -> lives lost on it
    truncated: bool = False  # stopped at max_ticks before game over
    last_display: int = field(default=0, repr=False)  # the 6-digit score shown at the last tick


@dataclass
class Evaluation:
    algo: str
    games: list[GameResult]
    settings: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"games": len(self.games)}
        for key in ("score", "max_level", "ticks"):
            vals = [getattr(g, key) for g in self.games]
            if vals:
                out[key] = {
                    "mean": float(np.mean(vals)),
                    "median": float(statistics.median(vals)),
                    "min": int(min(vals)),
                    "max": int(max(vals)),
                }
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "algo": self.algo,
            "settings": self.settings,
            "seconds": round(self.seconds, 2),
            "summary": self.summary(),
            "games": [{k: v for k, v in asdict(g).items() if k != "last_display"} for g in self.games],
        }

    def markdown(self) -> str:
        lines = [
            f"### {self.algo}: {len(self.games)} games, start level {self.settings.get('start_level')}",
            "",
            "| game | score | highest level | ticks | lives lost per level |",
            "|---|---|---|---|---|",
        ]
        for i, g in enumerate(self.games, 1):
            lost = ", ".join(f"L{lv}: {n}" for lv, n in sorted(g.lives_lost.items())) or "-"
            flag = " (truncated)" if g.truncated else ""
            lines.append(f"| {i} | {g.score:,}{flag} | {g.max_level} | {g.ticks:,} | {lost} |")
        s = self.summary()
        if self.games:
            lines += [
                "",
                "| | mean | median | min | max |",
                "|---|---|---|---|---|",
            ]
            for key, name in (("score", "score"), ("max_level", "highest level"), ("ticks", "ticks")):
                v = s[key]
                lines.append(f"| {name} | {v['mean']:,.1f} | {v['median']:,.1f} | {v['min']:,} | {v['max']:,} |")
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        j, m = d / "eval.json", d / "eval.md"
        j.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        m.write_text(self.markdown())
        return j, m


def play_games(
    env,
    policy: Policy,
    games: int,
    max_ticks: int = 100_000,
    on_game: Callable[[GameResult], None] | None = None,
) -> list[GameResult]:
    """Reset ``env`` (fresh games from the boot state) and play until ``games`` games are over.

    ``env`` is a TempestVecEnv (or a wrapper of one). Games finish in lockstep order, so for a
    deterministic policy the result is deterministic too.
    """
    obs = env.reset()
    infos = getattr(env, "unwrapped", env).reset_infos
    n = env.num_envs
    active: list[GameResult | None] = [None] * n
    done_games: list[GameResult] = []
    while len(done_games) < games:
        obs, _, dones, infos = env.step(policy(obs, infos))
        for i, info in enumerate(infos):
            g = active[i]
            if info.get("new_game") and g is None:
                # levels are known from the first controlled tick (level select is still running here)
                g = active[i] = GameResult(env=i, last_display=int(info["score"]))
            if g is None:
                continue
            g.ticks += 1
            # the display score has 6 digits and wraps at 1,000,000: count the increments
            g.score += (int(info["score"]) - g.last_display) % 1_000_000
            g.last_display = int(info["score"])
            if info["control"]:
                g.start_level = g.start_level or info["level"]
                g.max_level = max(g.max_level, info["level"])
            if dones[i] and not info.get("TimeLimit.truncated", False):
                g.lives_lost[info["level"]] = g.lives_lost.get(info["level"], 0) + 1
            over = dones[i] and info.get("game_over", False)
            if over or g.ticks >= max_ticks:
                g.truncated = not over
                if g.truncated:  # a player who never dies: end the game by starting a fresh one
                    getattr(env, "unwrapped", env).request_reset([i])
                done_games.append(g)
                active[i] = None
                if on_game:
                    on_game(g)
                if len(done_games) >= games:
                    break
    return done_games[:games]


def evaluate(env, policy: Policy, algo: str, games: int, settings: dict[str, Any], max_ticks: int = 100_000,
             on_game: Callable[[GameResult], None] | None = None) -> Evaluation:  # fmt: skip
    t0 = time.monotonic()
    results = play_games(env, policy, games, max_ticks=max_ticks, on_game=on_game)
    return Evaluation(algo=algo, games=results, settings=settings, seconds=time.monotonic() - t0)


def epsilon_policy(policy: Policy, epsilon: float, seed: int = 0) -> Policy:
    """With probability ``epsilon`` per env and tick, a uniformly random action instead."""
    if epsilon <= 0:
        return policy
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, infos: list[dict]) -> np.ndarray:
        a = np.array(policy(obs, infos), dtype=np.float32, copy=True)
        mask = rng.random(len(a)) < epsilon
        k = int(mask.sum())
        if k:
            a[mask] = random_actions(rng, k)
        return a

    return act

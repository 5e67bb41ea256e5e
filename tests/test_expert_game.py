"""The expert against uniformly random actions in the real game (needs MAME and $TEMPEST_ROMS).

One MAME instance, start level 1, the same number of ticks and a fixed seed for each policy;
the test compares totals only (no timing assertions). About 30 s of wall time.
"""

from __future__ import annotations

import numpy as np

from tempest_gym.env.vec_env import TempestVecEnv

TICKS = 3000


def play(env: TempestVecEnv, policy: str, ticks: int, seed: int) -> dict[str, float]:
    env.seed(seed)
    obs = env.reset()
    infos = env.reset_infos
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    deaths = control = points = 0
    levels = [infos[0]["level"]]
    score = infos[0]["score"]
    for _ in range(ticks):
        if policy == "expert":
            actions = np.stack([i["expert_action"] for i in infos])
        else:
            actions = rng.uniform(low, high, size=(env.num_envs, 2)).astype(np.float32)
        obs, _, dones, infos = env.step(actions)
        info = infos[0]
        control += info["control"]
        if info["new_game"]:
            score = 0
        gained = info["score"] - score
        if 0 < gained < 6000:  # start-level bonuses are not play (none from level 1 anyway)
            points += gained
        score = info["score"]
        levels.append(info["level"])
        deaths += int(dones[0])
    return {"deaths": deaths, "points": points, "max_level": max(levels), "control": control}


def test_expert_beats_random_in_the_real_game(rompath):
    env = TempestVecEnv(num_envs=1, rompath=rompath, seed=7, start_level=1, expert=True)
    try:
        expert = play(env, "expert", TICKS, seed=7)
        rand = play(env, "random", TICKS, seed=7)
    finally:
        env.close()
    print(f"\nexpert {expert}\nrandom {rand}")
    assert rand["deaths"] >= 3, "random actions should lose several lives in 3,000 ticks"
    assert expert["deaths"] < rand["deaths"]  # survives longer over the same number of ticks
    # lives last longer: ticks per death (a run without a death counts as one death at the end)
    assert TICKS / max(expert["deaths"], 1) > 2 * TICKS / rand["deaths"]
    assert expert["points"] > rand["points"]
    assert expert["max_level"] >= 3

"""How closely does a trained model imitate the expert, on the states the expert itself visits?

The expert plays (so the states are the teacher's, from start level 1 upward); on every tick where the agent is in
control the model's greedy action is computed on the same observation and compared with the expert's:

* fire/zap choice: exact agreement, and agreement of "fire pressed" alone;
* spinner, as executed (rounded to a whole delta per tick): direction agreement (left / still / right), split by
  whether the expert moves or stands still, and the mean absolute error in deltas;
* as a floor, the same figures for uniform random actions.

Prints one table; no files. Usage:
    python benchmarks/expert_agreement.py --model runs/.../best_model.zip --ticks 5000 --rompath DIR
"""

from __future__ import annotations

import argparse

import numpy as np

from tempest_gym.bridge.mame import find_rompath
from tempest_gym.env.vec_env import TempestVecEnv, decode_actions
from tempest_gym.hybrid_dqn import HybridDQN


def compare(pred: np.ndarray, ref: np.ndarray, max_spin: int) -> dict[str, float]:
    """Agreement on the actions as executed: the env rounds the spinner to a whole delta per tick."""
    p_fz, p_spin = decode_actions(pred, max_spin)
    r_fz, r_spin = decode_actions(ref, max_spin)
    moving = r_spin != 0
    same_sign = np.sign(p_spin) == np.sign(r_spin)
    return {
        "fire/zap exact": float(np.mean(p_fz == r_fz)),
        "fire pressed": float(np.mean((p_fz & 1) == (r_fz & 1))),
        "expert still": float(np.mean(~moving)),
        "spin dir (all)": float(np.mean(same_sign)),
        "spin dir (expert moves)": float(np.mean(same_sign[moving])) if moving.any() else float("nan"),
        "spin dir (expert still)": float(np.mean(same_sign[~moving])) if (~moving).any() else float("nan"),
        "spin MAE (deltas)": float(np.mean(np.abs(p_spin - r_spin))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="model zip; repeat to compare several")
    ap.add_argument("--ticks", type=int, default=5000, help="ticks of expert play to compare on")
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rompath", default=None)
    args = ap.parse_args()

    env = TempestVecEnv(num_envs=args.num_envs, rompath=find_rompath(args.rompath), seed=args.seed)
    models = [HybridDQN.load(path, device="cpu") for path in args.model]
    rng = np.random.default_rng(args.seed)
    obs_rows, expert_rows = [], []
    try:
        obs = env.reset()
        infos = [{"expert_action": a, "agent_in_control": True} for a in env.expert.predict_batch(obs)]
        steps = 0
        while steps < args.ticks:
            acts = np.stack([info["expert_action"] for info in infos]).astype(np.float32)
            control = np.array([info.get("control", True) for info in infos])
            if control.any():
                obs_rows.append(obs[control])
                expert_rows.append(acts[control])
            obs, _, _, infos = env.step(acts)
            steps += args.num_envs
    finally:
        env.close()

    obs_all = np.concatenate(obs_rows)
    ref = np.concatenate(expert_rows)
    random_actions = np.stack([rng.uniform(0, 3, len(ref)), rng.uniform(-1, 1, len(ref))], axis=1)
    rows = {"random": compare(random_actions, ref, env.max_spin)}
    for path, model in zip(args.model, models):
        pred = np.concatenate([model.predict(obs_all[i:i + 1024], deterministic=True)[0]
                               for i in range(0, len(obs_all), 1024)])  # fmt: skip
        rows[path] = compare(pred, ref, env.max_spin)
    print(f"{len(ref):,} controlled ticks of expert play (start level 1, seed {args.seed})")
    keys = list(next(iter(rows.values())))
    print("| policy | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()

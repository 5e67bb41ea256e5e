"""Learning curves: ``python -m tempest_gym.plot logs/hybrid_dqn/TempestMAME-v0_1 [RUN ...] -o curves.png``.

For each run folder it draws the mean game score and the mean highest level of the evaluations made
during training (``evaluations.json``: the model alone, whole games) against env ticks, and, thinner,
the score of the training episodes (``monitor.csv``: one life each, expert and exploration mixed in).
``--expert``/``--random`` take ``eval.json`` files from ``python -m tempest_gym.evaluate`` and draw their
mean game score and level as horizontal lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from tempest_gym.cli.common import EXIT_USAGE, CliError, exit_codes


def load_evaluations(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ticks, mean game score, mean highest level) of the evaluations made during training."""
    path = run / "evaluations.json"
    if not path.is_file():
        return np.array([]), np.array([]), np.array([])
    data = json.loads(path.read_text())
    t = np.array([e["timesteps"] for e in data], dtype=float)
    score = np.array([e["summary"]["score"]["mean"] for e in data], dtype=float)
    level = np.array([e["summary"]["max_level"]["mean"] for e in data], dtype=float)
    return t, score, level


def load_monitor(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative ticks at each episode end, game score at that end) from monitor.csv (+ resumed parts)."""
    paths = [
        run / "monitor.csv",
        *sorted(run.glob("resumed_*.monitor.csv"), key=lambda p: int(p.name[8:].split(".")[0])),
    ]
    rows = []
    for path in paths:
        if path.is_file():
            with open(path) as f:
                f.readline()  # the JSON header line
                rows += list(csv.DictReader(f))
    if not rows or "score" not in rows[0]:
        return np.array([]), np.array([])
    length = np.array([float(r["l"]) for r in rows])
    # monitor.csv interleaves all instances' episodes: their lengths sum to the env steps taken
    return np.cumsum(length), np.array([float(r["score"]) for r in rows])


def reference(path: str | None) -> tuple[float, float] | None:
    if not path:
        return None
    s = json.loads(Path(path).read_text())["summary"]
    return s["score"]["mean"], s["max_level"]["mean"]


def smooth(y: np.ndarray, k: int) -> np.ndarray:
    if len(y) < k or k <= 1:
        return y
    return np.convolve(y, np.ones(k) / k, mode="valid")


def plot(runs: list[Path], out: Path, labels: list[str] | None = None, expert: str | None = None,
         random: str | None = None, title: str = "") -> Path:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_l) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for i, run in enumerate(runs):
        name = labels[i] if labels and i < len(labels) else run.name
        color = f"C{i}"
        mt, ms = load_monitor(run)
        if len(mt):
            k = max(1, len(ms) // 30)
            ax_s.plot(mt[k - 1 :], smooth(ms, k), color=color, alpha=0.35, lw=1,
                      label=f"{name}: training lives (expert mixed in)")  # fmt: skip
        t, score, level = load_evaluations(run)
        if len(t):
            ax_s.plot(t, score, "o-", color=color, lw=2, label=f"{name}: model alone, mean game score")
            ax_l.plot(t, level, "o-", color=color, lw=2, label=f"{name}: model alone, mean highest level")
    for ref, name, style in ((reference(expert), "expert", "--"), (reference(random), "random", ":")):
        if ref:
            ax_s.axhline(ref[0], color="k", ls=style, lw=1, label=f"{name} (eval mean {ref[0]:,.0f})")
            ax_l.axhline(ref[1], color="k", ls=style, lw=1, label=f"{name} (eval mean {ref[1]:.1f})")
    ax_s.set_ylabel("game score")
    ax_s.set_yscale("log", nonpositive="clip")
    ax_l.set_ylabel("highest level")
    ax_l.set_xlabel("env ticks (all instances)")
    for ax in (ax_s, ax_l):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tempest_gym.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("runs", nargs="+", help="run folders (logs/<algo>/<env>_<n>)")
    p.add_argument("-o", "--out", default="learning_curves.png")
    p.add_argument("--labels", nargs="*", default=None)
    p.add_argument("--expert", default=None, help="eval.json of the expert")
    p.add_argument("--random", default=None, help="eval.json of random play")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise CliError(f"not a run folder: {', '.join(missing)}", EXIT_USAGE)
    out = plot(runs, Path(args.out), args.labels, args.expert, args.random, args.title)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training callbacks: Tempest metrics, whole-game evaluation, and a live one-screen summary.

All numbers go through SB3's logger (stdout, CSV, TensorBoard), so the usual SB3 tooling reads them.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from tempest_gym.hybrid_dqn.buffer import SOURCE_EXPERT, SOURCE_MODEL, SOURCE_RANDOM
from tempest_gym.training.agents import model_policy
from tempest_gym.training.evaluation import Evaluation, evaluate


class TempestMetricsCallback(BaseCallback):
    """Episode score/level and emulator speed, recorded every ``interval_s`` seconds.

    * ``episode/score``, ``episode/points``, ``episode/level``, ``episode/game_over_frac``: means over the
      episodes finished since the last record (an episode is one life);
    With ``dump`` it also makes the model dump all its logs at that pace.

    * ``env/ticks_per_s`` (agent steps of all instances per wall second), ``env/frames_per_s_<i>`` (emulated
      60 Hz video frames per wall second of instance i) and ``env/frames_per_s_mean``;
    * ``env/client_restarts`` (MAME clients replaced so far) and ``env/transitions_dropped``.
    """

    def __init__(self, interval_s: float = 10.0, dump: bool = True, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.interval_s = interval_s
        self.dump = dump
        self._eps: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._steps0 = 0
        self._frames0: np.ndarray | None = None
        self.last: dict[str, float] = {}
        self.recent_episodes: deque[dict[str, Any]] = deque(maxlen=100)

    def _on_training_start(self) -> None:
        self._t0 = time.monotonic()
        self._steps0 = self.num_timesteps

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        dones = self.locals.get("dones", [])
        for info, done in zip(infos, dones):
            # VecMonitor replaces info["episode"] with its own (r, l, t); ours survives as tempest_episode
            ep = info.get("tempest_episode", info.get("episode")) if done else None
            if ep is not None:
                self._eps.append(ep)
                self.recent_episodes.append(ep)
        frames = np.array([info.get("frame", 0) for info in infos], dtype=np.float64)
        if self._frames0 is None or len(self._frames0) != len(frames):
            self._frames0 = frames
        now = time.monotonic()
        if now - self._t0 >= self.interval_s:
            self._record(now, frames)
        return True

    def _on_training_end(self) -> None:
        # a last row, so short runs and the tail of long ones are in the logs too
        frames = np.array([i.get("frame", 0) for i in self.locals.get("infos", [])], dtype=np.float64)
        if self._frames0 is not None and len(frames) == len(self._frames0) and time.monotonic() > self._t0:
            self._record(time.monotonic(), frames)

    def _record(self, now: float, frames: np.ndarray) -> None:
        dt = now - self._t0
        values: dict[str, float] = {"env/ticks_per_s": (self.num_timesteps - self._steps0) / dt}
        assert self._frames0 is not None
        fps = np.maximum(frames - self._frames0, 0) / dt  # a restarted client counts from 0 again
        for i, f in enumerate(fps):
            values[f"env/frames_per_s_{i}"] = float(f)
        values["env/frames_per_s_mean"] = float(fps.mean()) if len(fps) else 0.0
        cluster = getattr(getattr(self.training_env, "unwrapped", None), "cluster", None)
        if cluster is not None:
            # a replaced client drops exactly its in-flight transition (the action whose result never came)
            values["env/client_restarts"] = float(cluster.restarts.sum())
            values["env/transitions_dropped"] = float(cluster.restarts.sum())
        if self._eps:
            values["episode/score"] = float(np.mean([e.get("score", 0) for e in self._eps]))
            values["episode/points"] = float(np.mean([e.get("points", 0) for e in self._eps]))
            values["episode/level"] = float(np.mean([e.get("level", 0) for e in self._eps]))
            values["episode/game_over_frac"] = float(np.mean([bool(e.get("game_over")) for e in self._eps]))
            values["episode/count"] = float(len(self._eps))
        for k, v in values.items():
            self.logger.record(k, v)
        self.last = values
        self._eps = []
        self._t0, self._steps0, self._frames0 = now, self.num_timesteps, frames
        if self.dump and hasattr(self.model, "dump_logs"):
            # a Tempest episode (one life) can last thousands of ticks, so SB3's per-episode dumps are
            # rare: write a row of every metric (CSV, TensorBoard, stdout) at a steady wall-clock pace
            self.model.dump_logs()


class StopAfterSeconds(BaseCallback):
    """Stop training after a wall-clock budget (``--max-seconds``); the model is then saved as usual."""

    def __init__(self, seconds: float) -> None:
        super().__init__(0)
        self.seconds = seconds
        self._t0 = 0.0

    def _on_training_start(self) -> None:
        self._t0 = time.monotonic()

    def _on_step(self) -> bool:
        if time.monotonic() - self._t0 >= self.seconds:
            print(f"time budget of {self.seconds:,.0f} s reached at {self.num_timesteps:,} steps", flush=True)
            return False
        return True


class FitUpdatesToBudget(BaseCallback):
    """Scale an off-policy model's ``gradient_steps`` per round down so that all of ``total_timesteps`` fit in
    ``seconds`` of wall clock (``--max-seconds``), at the rates measured so far in this run.

    Why: a recipe's rounds (collect ``train_freq`` steps per env, then ``gradient_steps`` updates) are sized for
    one machine. On a machine whose learner is slower (measured: a 2-core Intel Xeon VM runs the hybrid head's
    update at ~17/s where a 2-core AMD EPYC runs ~45/s, while MAME runs as fast) the budget would cut the run
    at half its env steps, and the steps with the model driving are what the score grew with. Here the updates
    per round shrink instead, never above the configured value, so a fast machine runs the recipe unchanged.

    Measured at each round's end: seconds per env step while collecting and seconds per update while training
    (from ``model._n_updates``; the first training call includes the pre-training, the same kind of update),
    both smoothed over recent rounds. Then ``gradient_steps = (time left - margin - steps left * collection
    rate) / (rounds left * update rate)``, clamped to ``[1, configured]``. Updates the model runs after
    ``learn`` (``final_steps``) stay outside the budget, as with ``StopAfterSeconds``. Logged as
    ``train/fitted_gradient_steps``. The configured value is restored when training ends (so it is what the
    saved model holds); a checkpoint written mid-run holds the fitted value of its round.
    """

    def __init__(self, seconds: float, margin_s: float = 60.0, smoothing: float = 0.2, verbose: int = 1) -> None:
        super().__init__(verbose)
        self.seconds = seconds
        self.margin_s = margin_s
        self.smoothing = smoothing
        self.configured = 0
        self.fitted: int | None = None
        self._t0 = self._collect_t0 = self._train_t0 = 0.0
        self._collect_steps0 = self._train_updates0 = 0
        self._step_s: float | None = None  # wall seconds per env step (all envs together) while collecting
        self._update_s: float | None = None  # wall seconds per gradient update while training
        self.clock: Callable[[], float] = time.monotonic

    def _active(self) -> bool:
        freq = getattr(self.model, "train_freq", None)
        return (
            self.configured > 0
            and getattr(freq, "unit", None) is not None
            and freq.unit.value == "step"
            and getattr(self.model, "_learner", None) is None  # a background learner does not train in rounds
        )

    def _smooth(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.smoothing * (new - old)

    def _on_training_start(self) -> None:
        self._t0 = self.clock()
        self.configured = int(getattr(self.model, "gradient_steps", 0))

    def _on_rollout_start(self) -> None:
        now = self.clock()
        updates = int(getattr(self.model, "_n_updates", 0)) - self._train_updates0
        if self._train_t0 and updates > 0:
            self._update_s = self._smooth(self._update_s, (now - self._train_t0) / updates)
        self._collect_t0, self._collect_steps0 = now, self.model.num_timesteps

    def _on_rollout_end(self) -> None:
        now = self.clock()
        steps = self.model.num_timesteps - self._collect_steps0
        if steps > 0:
            self._step_s = self._smooth(self._step_s, (now - self._collect_t0) / steps)
        self._train_t0, self._train_updates0 = now, int(getattr(self.model, "_n_updates", 0))
        if self._active() and self._step_s is not None and self._update_s is not None:
            self._fit(now)

    def _fit(self, now: float) -> None:
        model = self.model
        per_round = model.train_freq.frequency * model.n_envs
        steps_left = max(model._total_timesteps - model.num_timesteps, 0)
        rounds_left = 1 + -(-steps_left // per_round)  # this round's training, then one per round to come
        time_left = self.seconds - self.margin_s - (now - self._t0) - steps_left * self._step_s
        fitted = int(min(max(time_left / (rounds_left * self._update_s), 1), self.configured))
        if self.verbose and (self.fitted is None or abs(fitted - self.fitted) > 0.1 * self.fitted):
            print(f"fitting the budget: {fitted} of {self.configured} updates per round ({steps_left:,} steps "
                  f"left; {1 / self._update_s:.1f} updates/s, {1 / self._step_s:.0f} steps/s)", flush=True)  # fmt: skip
        self.fitted = model.gradient_steps = fitted
        self.logger.record("train/fitted_gradient_steps", fitted)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.configured > 0:
            self.model.gradient_steps = self.configured


class EvalGamesCallback(BaseCallback):
    """Every ``eval_freq`` env steps, play ``games`` whole games with the model alone on separate clients.

    Logs ``eval/score_mean`` (and median/min/max), ``eval/level_mean``, ``eval/ticks_mean``; appends each
    evaluation to ``<log_path>/evaluations.json`` (for plots); saves ``best_model.zip`` whenever the mean game
    score beats the best so far. The evaluation env is created on first use and reset before each
    evaluation, so every evaluation plays the same games (same seeds) and they are comparable.
    """

    def __init__(
        self,
        make_env: Callable[[], Any],
        eval_freq: int,
        games: int = 3,
        log_path: str | Path | None = None,
        best_model_save_path: str | Path | None = None,
        max_ticks: int = 100_000,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        self.make_env = make_env
        self.eval_freq = eval_freq
        self.games = games
        self.log_path = Path(log_path) if log_path else None
        self.best_path = Path(best_model_save_path) if best_model_save_path else None
        self.max_ticks = max_ticks
        self.env = None
        self.best_mean = -np.inf
        self.history: list[dict[str, Any]] = []
        self.last: Evaluation | None = None
        self._next = eval_freq

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq if self.eval_freq > 0 else 0
        path = self.log_path / "evaluations.json" if self.log_path else None
        if path is not None and path.is_file() and not self.history:  # a resumed run continues its history
            self.history = json.loads(path.read_text())
            if self.history:
                self.best_mean = max(e["summary"]["score"]["mean"] for e in self.history)

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps >= self._next:
            self._next += self.eval_freq
            self.run_eval()
        return True

    def run_eval(self) -> Evaluation:
        if self.env is None:
            self.env = self.make_env()
        result = evaluate(self.env, model_policy(self.model, deterministic=True), "model", self.games,
                          {"timesteps": self.num_timesteps}, max_ticks=self.max_ticks)  # fmt: skip
        s = result.summary()
        self.logger.record("eval/score_mean", s["score"]["mean"])
        self.logger.record("eval/score_median", s["score"]["median"])
        self.logger.record("eval/score_min", s["score"]["min"])
        self.logger.record("eval/score_max", s["score"]["max"])
        self.logger.record("eval/level_mean", s["max_level"]["mean"])
        self.logger.record("eval/ticks_mean", s["ticks"]["mean"])
        self.logger.record("eval/seconds", result.seconds)
        entry = {"timesteps": self.num_timesteps, "summary": s, "games": result.to_json()["games"]}
        self.history.append(entry)
        if self.log_path:
            self.log_path.mkdir(parents=True, exist_ok=True)
            (self.log_path / "evaluations.json").write_text(json.dumps(self.history, indent=1) + "\n")
        if s["score"]["mean"] > self.best_mean:
            self.best_mean = s["score"]["mean"]
            if self.best_path:
                from tempest_gym.training.checkpoints import save_model

                save_model(self.model, self.best_path / "best_model.zip")
            if self.verbose:
                print(f"eval at {self.num_timesteps:,} steps: new best mean game score {self.best_mean:,.0f}")
        elif self.verbose:
            print(f"eval at {self.num_timesteps:,} steps: mean game score {s['score']['mean']:,.0f} "
                  f"(best {self.best_mean:,.0f})")  # fmt: skip
        self.last = result
        return result

    def _on_training_end(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


class _LastValues(KVWriter):
    """A logger output that keeps the last dumped value of every key (SB3 clears them after a dump)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.values.update(key_values)

    def close(self) -> None:
        pass


class LiveSummaryCallback(BaseCallback):
    """A one-screen terminal summary (rich), updated in place, with a progress bar (``-P``)."""

    def __init__(self, total: int, metrics: TempestMetricsCallback, evals: EvalGamesCallback | None = None,
                 refresh_s: float = 1.0) -> None:  # fmt: skip
        super().__init__(0)
        self.total = total
        self.metrics = metrics
        self.evals = evals
        self.refresh_s = refresh_s
        self._live = None
        self._progress = None
        self._task = None
        self._last = 0.0
        self._t0 = 0.0
        self._learner_text = "-"

    def _on_training_start(self) -> None:
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("steps"), TimeRemainingColumn())  # fmt: skip
        self._start_steps = self.num_timesteps
        self._values = _LastValues()
        self.model.logger.output_formats.append(self._values)
        self._task = self._progress.add_task("train", total=self.total)
        self._live = Live(self._render(), refresh_per_second=2, transient=False)
        self._live.__enter__()
        self._t0 = time.monotonic()

    def _render(self):
        from rich.console import Group
        from rich.table import Table

        m = self.model
        t = Table.grid(padding=(0, 2))
        for _ in range(4):
            t.add_column()
        env = self.metrics.last
        eps = list(self.metrics.recent_episodes)
        score = np.mean([e.get("score", 0) for e in eps[-20:]]) if eps else float("nan")
        level = np.mean([e.get("level", 0) for e in eps[-20:]]) if eps else float("nan")
        totals = getattr(m, "source_totals", None)
        # source_totals is indexed by source code (model, random, expert); shown as expert / random / model
        order = [SOURCE_EXPERT, SOURCE_RANDOM, SOURCE_MODEL]
        frac = totals[order] / totals.sum() if totals is not None and totals.sum() else [np.nan] * 3
        learner = getattr(m, "_learner", None)
        stats = self._values.values
        if learner is not None:  # the learner is gone after learn() returns: keep showing its last figures
            self._learner_text = (f"{learner.updates_per_second():.1f}, "
                                  f"{stats.get('learner/policy_lag', float('nan')):.1f}")  # fmt: skip
        elif not getattr(m, "async_learner", False):
            self._learner_text = "sync"
        rows = [
            ("steps", f"{self.num_timesteps:,}", "ticks/s", f"{env.get('env/ticks_per_s', float('nan')):,.0f}"),
            ("episodes", f"{len(eps):,} (last 100)", "frames/s per client",
             f"{env.get('env/frames_per_s_mean', float('nan')):,.0f}"),
            ("score (last 20 lives)", f"{score:,.0f}", "level", f"{level:.2f}"),
            ("expert / random / model", " / ".join(f"{x:.2f}" for x in frac),
             "epsilon, expert ratio", f"{getattr(m, 'exploration_rate', 0):.3f}, "
                                      f"{getattr(m, 'current_expert_ratio', 0):.3f}"),
            ("updates", f"{getattr(m, '_n_updates', 0):,}", "updates/s, policy lag",
             self._learner_text),
            ("replay", f"{m.replay_buffer.size() if m.replay_buffer else 0:,}", "TD loss, Q mean",
             f"{stats.get('train/loss', float('nan')):.4f}, {stats.get('train/q_mean', float('nan')):.2f}"),
            ("inference p50/p99 ms", f"{stats.get('rollout/inference_ms_p50', float('nan')):.2f} / "
                                     f"{stats.get('rollout/inference_ms_p99', float('nan')):.2f}", "", ""),
        ]  # fmt: skip
        if self.evals is not None and self.evals.last is not None:
            s = self.evals.last.summary()
            rows.append(("last eval (model alone)", f"score {s['score']['mean']:,.0f}",
                         "best", f"{self.evals.best_mean:,.0f}"))  # fmt: skip
        for r in rows:
            t.add_row(*r)
        return Group(self._progress, t)

    def _on_step(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.refresh_s and self._live is not None:
            self._last = now
            self._progress.update(self._task, completed=self.num_timesteps - self._start_steps)
            self._live.update(self._render())
        return True

    def _on_training_end(self) -> None:
        if self._live is not None:
            self._progress.update(self._task, completed=self.num_timesteps - self._start_steps)
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            if not self._live.console.is_terminal:  # piped: rich leaves the last row without its newline
                self._live.console.line()
            self._live = None
        if self._values in self.model.logger.output_formats:
            self.model.logger.output_formats.remove(self._values)

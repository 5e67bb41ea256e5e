"""Background learner: gradient steps in a thread while the main thread keeps stepping the envs.

``HybridDQN`` sees one object, :class:`AsyncLearner` (``start``, ``sync``, ``notify``, ``pause``, ``stop``, and
the figures it logs); underneath, :class:`BackgroundLearner` runs the thread and :class:`WeightPublisher` hands
weights from it to the acting copy. :class:`TrainStats` collects the losses of whichever thread trains.

Why a thread and not a process: the envs are MAME processes already, so the Python main thread mostly waits on
sockets, and torch releases the GIL inside its kernels. One learner thread overlaps training with that
waiting without copying the replay buffer into another process.

Rules that keep it correct:

* the learner owns the training policy; the main thread acts with a *separate copy*. Every
  ``sync_interval`` updates the learner publishes a snapshot (fresh tensors, cloned, never written again) by
  swapping one reference under a lock; the main thread loads the newest snapshot between env steps. The
  acting weights are therefore always one complete published version, never half-copied;
* a replay-ratio cap (``allowed_updates()``, from the env step count) stops the learner from overfitting a
  small buffer when the envs are slow;
* ``step_lock`` is held for each whole update, so ``pause()`` (used by ``save``) sees consistent weights;
* an exception in the thread is kept and re-raised in the main thread by ``raise_if_failed``; ``stop`` always
  joins the thread.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit


class WeightPublisher:
    """One-slot mailbox of parameter snapshots: the learner publishes, the actor pulls the newest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._snapshot: dict[str, th.Tensor] | None = None

    @property
    def version(self) -> int:
        return self._version

    def publish(self, state_dict: dict[str, th.Tensor]) -> int:
        """Store a private copy of ``state_dict`` (copied outside the lock, swapped in under it)."""
        snapshot = {k: v.detach().clone() for k, v in state_dict.items()}
        with self._lock:
            self._version += 1
            self._snapshot = snapshot
            return self._version

    def pull(self, have_version: int) -> tuple[int, dict[str, th.Tensor] | None]:
        """``(version, snapshot)`` if newer than ``have_version``, else ``(have_version, None)``.

        The returned snapshot is never modified afterwards (publish makes a new dict), so the caller may
        load it without holding any lock.
        """
        with self._lock:
            if self._version == have_version:
                return have_version, None
            return self._version, self._snapshot


class BackgroundLearner:
    """Runs ``step_fn`` (one gradient update) in a daemon thread, at most ``allowed_updates()`` times in total.

    :param step_fn: one gradient update
    :param allowed_updates: how many updates the replay-ratio cap allows so far (called by the thread)
    :param publish_fn: called every ``sync_interval`` updates (and once at start) to publish weights
    :param sync_interval: updates between publications
    :param idle_wait: seconds to wait for new env steps when the cap is reached
    """

    def __init__(
        self,
        step_fn: Callable[[], None],
        allowed_updates: Callable[[], int],
        publish_fn: Callable[[], None],
        sync_interval: int = 10,
        idle_wait: float = 0.005,
    ) -> None:
        if sync_interval < 1:
            raise ValueError(f"sync_interval must be >= 1, got {sync_interval}")
        self.step_fn = step_fn
        self.allowed_updates = allowed_updates
        self.publish_fn = publish_fn
        self.sync_interval = int(sync_interval)
        self.idle_wait = float(idle_wait)
        self.step_lock = threading.Lock()
        self.updates = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("learner already started")
        self.publish_fn()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="hybrid-dqn-learner", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Tell the learner that env steps were added (wakes it if it waits on the replay-ratio cap)."""
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.updates >= self.allowed_updates():
                    self._wake.wait(self.idle_wait)
                    self._wake.clear()
                    continue
                with self.step_lock:
                    self.step_fn()
                self.updates += 1
                if self.updates % self.sync_interval == 0:
                    self.publish_fn()
        except BaseException as exc:  # noqa: BLE001 - anything, re-raised in the main thread
            self.error = exc

    def raise_if_failed(self) -> None:
        """Re-raise a learner error in the calling (main) thread."""
        if self.error is not None:
            err = self.error
            self.stop()
            raise RuntimeError(f"the background learner failed: {err!r}") from err

    def stop(self, timeout: float = 60.0) -> None:
        """Stop and join the thread (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the background learner did not stop within {timeout} s")

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Hold the learner between two updates (consistent weights for saving)."""
        with self.step_lock:
            yield

    def updates_per_second(self) -> float:
        elapsed = time.monotonic() - self._t0
        return self.updates / elapsed if elapsed > 0 else 0.0


class TrainStats:
    """Loss sums kept by whichever thread trains, written to the logger by the main thread.

    Values may be 0-d tensors: they are summed where they live and converted only when logged, so that an
    update on the GPU does not wait for the device once per statistic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, Any] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: dict[str, Any]) -> None:
        with self._lock:
            for k, v in values.items():
                v = v.detach() if isinstance(v, th.Tensor) else v
                self._sums[k] = self._sums[k] + v if k in self._sums else v
                self._counts[k] = self._counts.get(k, 0) + 1

    def flush(self, logger: Any) -> None:
        with self._lock:
            sums, counts = self._sums, self._counts
            self._sums, self._counts = {}, {}
        for k, v in sums.items():
            logger.record(f"train/{k}", float(v) / counts[k])


def replay_ratio(max_replay_ratio: float | None, train_freq: TrainFreq, n_envs: int, gradient_steps: int) -> float:
    """Gradient updates allowed per env transition: ``max_replay_ratio``, or the synchronous mode's ratio
    ``gradient_steps / (train_freq * n_envs)`` (``gradient_steps=-1``: one update per transition)."""
    if max_replay_ratio is not None:
        return float(max_replay_ratio)
    if train_freq.unit != TrainFrequencyUnit.STEP:
        raise ValueError("async_learner with train_freq in episodes needs an explicit max_replay_ratio")
    per_round = train_freq.frequency * n_envs
    steps = gradient_steps if gradient_steps >= 0 else per_round
    return steps / per_round


class AsyncLearner:
    """The background learner as the algorithm sees it: the training policy is the learner's, a copy of it acts.

    * :meth:`start` - publish the initial weights and start the thread;
    * :meth:`sync` - main thread, before each env step: re-raise a learner error, load the newest published weights
      into :attr:`acting` (a complete version, never a half-copied one);
    * :meth:`notify` - env transitions were stored (wakes a learner waiting on its replay-ratio cap);
    * :meth:`pause` - a context holding the learner between two updates (saving, offline updates);
    * :meth:`publish` - publish the training policy's weights now (after offline updates);
    * :meth:`stop` - stop and join the thread; ``raise_error`` re-raises what the learner died of;
    * :attr:`policy_lag` (updates the acting weights are behind) and :meth:`record` (the figures to log).

    :param policy: the training policy (it must offer ``online_state_dict()``: the weights that act)
    :param step_fn: one gradient update (run by the learner thread)
    :param allowed_updates: the replay-ratio cap: how many updates are allowed so far
    :param n_updates: the algorithm's update counter (dates every published version)
    :param sync_interval: updates between publications
    """

    def __init__(
        self,
        policy: Any,
        step_fn: Callable[[], None],
        allowed_updates: Callable[[], int],
        n_updates: Callable[[], int],
        sync_interval: int = 10,
    ) -> None:
        self.policy = policy
        self.acting = copy.deepcopy(policy)
        self.acting.set_training_mode(False)
        policy.set_training_mode(True)
        self.publisher = WeightPublisher()
        self.acting_version = 0
        self.acting_updates = 0  # learner updates contained in the acting weights
        self._n_updates = n_updates
        self._version_updates: dict[int, int] = {}  # published version -> learner updates at publication
        self.thread = BackgroundLearner(step_fn, allowed_updates, self.publish, sync_interval)

    def start(self) -> None:
        self.thread.start()

    def publish(self) -> None:
        """Publish the training policy's acting weights, dated with the update count."""
        # record the update count before the version becomes visible, so the actor never pulls a version it
        # cannot date (only one thread publishes at a time, so the next version number is known)
        version = self.publisher.version + 1
        self._version_updates[version] = self._n_updates()
        self._version_updates.pop(version - 64, None)
        self.publisher.publish(self.policy.online_state_dict())

    def sync(self) -> None:
        """Main thread, between env steps: fail if the learner failed; act with the newest published weights."""
        self.thread.raise_if_failed()
        version, snapshot = self.publisher.pull(self.acting_version)
        if snapshot is not None:
            unexpected = self.acting.load_state_dict(snapshot, strict=False).unexpected_keys
            assert not unexpected, f"unexpected keys in the published weights: {unexpected}"
            self.acting_version = version
            self.acting_updates = self._version_updates.get(version, self._n_updates())

    def notify(self) -> None:
        self.thread.notify()

    def pause(self) -> Any:
        return self.thread.pause()

    @property
    def policy_lag(self) -> int:
        """How many updates behind the learner the acting weights are."""
        return self._n_updates() - self.acting_updates

    def updates_per_second(self) -> float:
        return self.thread.updates_per_second()

    def record(self, logger: Any) -> None:
        logger.record("learner/updates_per_s", self.thread.updates_per_second())
        logger.record("learner/acting_version", self.acting_version)

    def stop(self, raise_error: bool = True) -> None:
        """Stop and join the thread; with ``raise_error``, re-raise the error the learner stopped with."""
        self.thread.stop()
        self.policy.set_training_mode(False)
        if raise_error and self.thread.error is not None:
            raise RuntimeError(f"the background learner failed: {self.thread.error!r}") from self.thread.error

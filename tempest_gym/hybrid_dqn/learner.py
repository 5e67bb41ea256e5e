"""Background learner: gradient steps in a thread while the main thread keeps stepping the envs.

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

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch as th


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

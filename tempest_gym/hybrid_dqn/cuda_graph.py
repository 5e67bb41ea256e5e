"""One learner update recorded as a CUDA graph and replayed: the GPU learner without the launch overhead.

Why: on a GPU the hybrid head's update is launch-bound, not compute-bound. On an NVIDIA H200 the torch profiler
counted ~980 kernel launches per update at batch 256 (the lane extractor's grid, the four MP-DQN passes, the
parameter network, Adam's per-tensor steps) and 2.4 ms of kernel time in a ~15 ms update: the GPU idled ~85%
of the time and the update ran only 1.4x faster than on a 2-core CPU (docs/results.md, Throughput). A CUDA graph
records those launches once and replays them with one call.

What the update must do for that, and does: the same tensor shapes every time (one graph per batch size), no
host synchronisation (``masked_mean`` instead of ``nonzero``/``any``; ``not_taken`` instead of ``one_hot``), and
optimisers whose step counters live on the GPU (``capturable``). Values the update reads from Python (the batch
size, the learning rates, the demonstration coefficient) are baked into a recording: they are the graph's
``key``, and a new key records again. In synchronous rounds a schedule changes them once per round at most
(one recording per round); with the background learner a schedule changes them at every update, so after
``THRASH_RECORDINGS`` recordings at less than ``MIN_UPDATES_PER_RECORDING`` updates each the updates go back to
eager with a warning (learning rates as device tensors would avoid that; not measured on a GPU yet).

Everything else stays outside the graph: sampling the replay (numpy, on the host), target-network updates (in
place, so the graph sees them), statistics (cloned out of the graph's memory). The first ``warmup`` calls run
eagerly on a side stream, as PyTorch's CUDA-graph notes ask, so that lazy initialisations are not recorded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch as th

#: at least this many updates per recording on average (after ``THRASH_RECORDINGS`` recordings), else eager
MIN_UPDATES_PER_RECORDING = 20
THRASH_RECORDINGS = 10


def make_capturable(optimizer: th.optim.Optimizer) -> None:
    """Switch an Adam-like optimiser to ``capturable`` (its step counters on the parameters' device).

    Also after ``load_state_dict``, which restores a CPU run's ``capturable=False`` and its step counters on the
    host."""
    for group in optimizer.param_groups:
        if "capturable" not in group:
            raise ValueError(f"{type(optimizer).__name__} cannot be captured in a CUDA graph (no capturable option)")
        group["capturable"] = True
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            step = state.get("step")
            if isinstance(step, th.Tensor) and step.device != p.device:
                state["step"] = step.to(p.device, th.float32)


class GraphedUpdate:
    """Runs ``update(batch) -> {name: 0-d tensor}`` (forward, backward, optimiser steps) as a replayed CUDA graph.

    ``batch`` is a tuple of tensors (``HybridReplaySamples``; ``None`` fields allowed): each call copies it into
    the recording's static inputs, replays, and returns clones of the statistics.

    :param update: one gradient update on a batch; must meet this module's requirements
    :param optimizers: the optimisers ``update`` steps (made capturable; their gradients are reset before recording)
    :param warmup: eager updates before the first recording
    """

    def __init__(self, update: Callable[[Any], dict[str, th.Tensor]], optimizers: Sequence[th.optim.Optimizer],
                 warmup: int = 3) -> None:  # fmt: skip
        self.update = update
        self.optimizers = list(optimizers)
        self.warmup_left = int(warmup)
        self.recordings = 0
        self.calls = 0  # after the warm-up
        self.eager = False  # set when recordings come too often
        self._key: Hashable | None = None
        self._graph: th.cuda.CUDAGraph | None = None
        self._inputs: Any = None
        self._outputs: dict[str, th.Tensor] = {}

    def __call__(self, batch: Any, key: Hashable) -> dict[str, th.Tensor]:
        for opt in self.optimizers:
            make_capturable(opt)
        if self.eager:
            return self.update(batch)
        if self.warmup_left > 0:
            self.warmup_left -= 1
            side = th.cuda.Stream()
            side.wait_stream(th.cuda.current_stream())
            with th.cuda.stream(side):
                out = self.update(batch)
            th.cuda.current_stream().wait_stream(side)
            return out
        self.calls += 1
        if self._graph is None or key != self._key:
            if self.recordings >= THRASH_RECORDINGS and self.calls < MIN_UPDATES_PER_RECORDING * self.recordings:
                warnings.warn(
                    f"CUDA graph: {self.recordings} recordings in {self.calls} updates (the key {key!r} keeps "
                    "changing: a schedule with the background learner?); the updates run eagerly from now on",
                    stacklevel=2,
                )
                self.eager, self._graph, self._outputs, self._inputs = True, None, {}, None
                return self.update(batch)
            self._record(batch, key)
        else:
            for static, new in zip(self._inputs, batch, strict=True):
                if static is not None:
                    static.copy_(new, non_blocking=True)
        assert self._graph is not None
        self._graph.replay()
        return {name: value.clone() for name, value in self._outputs.items()}

    def _record(self, batch: Any, key: Hashable) -> None:
        self._graph, self._outputs = None, {}  # the old recording's memory goes back first
        self._inputs = type(batch)(*(None if t is None else t.clone() for t in batch))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)  # the gradients are allocated inside the recording
        graph = th.cuda.CUDAGraph()
        # thread_local: the acting thread may run inference on the GPU while the learner thread records
        with th.cuda.graph(graph, capture_error_mode="thread_local"):
            self._outputs = self.update(self._inputs)
        self._graph, self._key = graph, key
        self.recordings += 1

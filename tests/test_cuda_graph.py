"""The CUDA-graph update's bookkeeping (cuda_graph.py), on a CPU: when it records, when it gives up, and that a
GPU run's optimisers save into a file a CPU can train from. The recording itself needs a GPU; the project's
device checks (``benchmarks/learner.py --check-graph``, docs/results.md) measured it bit-identical to eager
updates in float32."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv
from synthetic_env import HybridChoiceEnv

from tempest_gym.hybrid_dqn import HybridDQN, cuda_graph
from tempest_gym.hybrid_dqn.cuda_graph import GraphedUpdate, make_capturable

th.set_num_threads(1)


class Batch(NamedTuple):
    x: th.Tensor
    y: th.Tensor | None


class FakeGraph:
    """Stands for a recording: replaying runs the update on the static inputs, as the recorded kernels would."""

    def __init__(self, owner: GraphedUpdate) -> None:
        self.owner = owner

    def replay(self) -> None:
        self.owner._outputs = self.owner.update(self.owner._inputs)


@pytest.fixture
def graphed(monkeypatch) -> tuple[GraphedUpdate, list[float]]:
    seen: list[float] = []

    def update(batch: Batch) -> dict[str, th.Tensor]:
        seen.append(float(batch.x.sum()))
        return {"loss": batch.x.sum()}

    g = GraphedUpdate(update, [], warmup=0)  # the eager warm-up runs on a CUDA side stream

    def record(batch: Batch, key) -> None:  # the real one needs a GPU: same bookkeeping, no kernels
        g._inputs = type(batch)(*(None if t is None else t.clone() for t in batch))
        g._graph, g._key = FakeGraph(g), key
        g.recordings += 1

    monkeypatch.setattr(g, "_record", record)
    return g, seen


def test_records_once_per_key_and_replays_each_new_batch(graphed):
    g, seen = graphed
    outs = [g(Batch(th.full((3,), float(i)), None), key=(256, 1.0)) for i in range(30)]
    assert g.recordings == 1 and not g.eager
    assert seen == [3.0 * i for i in range(30)]  # every batch copied into the static inputs and replayed
    assert [float(o["loss"]) for o in outs] == seen
    g(Batch(th.ones(3), None), key=(256, 0.5))  # a coefficient changed: record again
    assert g.recordings == 2


def test_gives_up_on_a_key_that_changes_every_few_updates(graphed):
    g, seen = graphed
    with pytest.warns(UserWarning, match="run eagerly"):
        for i in range(40):
            g(Batch(th.full((2,), float(i)), None), key=(256, 1.0, 3e-4 * (1 - i / 100)))
    assert g.eager and g.recordings == cuda_graph.THRASH_RECORDINGS
    assert len(seen) == 40  # no update lost on the way


def test_a_gpu_runs_optimisers_save_into_a_file_a_cpu_trains_from(tmp_path):
    """A CUDA-graph run leaves its optimisers capturable, which a CPU cannot step: the file holds plain ones."""
    env = DummyVecEnv([lambda: HybridChoiceEnv() for _ in range(2)])
    model = HybridDQN("MlpPolicy", env, buffer_size=2_000, learning_starts=100, batch_size=16, train_freq=20,
                      gradient_steps=2, policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")  # fmt: skip
    model.learn(300)
    for opt in (model.policy.optimizer, model.policy.actor_optimizer):
        make_capturable(opt)  # what cuda_graph.py leaves behind on a GPU
    with pytest.raises((AssertionError, RuntimeError), match="supported devices"):  # a capturable Adam on a CPU
        model.train(gradient_steps=1, batch_size=16)
    model.save(tmp_path / "gpu_run.zip")
    loaded = HybridDQN.load(tmp_path / "gpu_run.zip", env=env, device="cpu")
    assert not any(g["capturable"] for g in loaded.policy.optimizer.param_groups)
    before = loaded._n_updates
    loaded.learn(200, reset_num_timesteps=False)
    assert loaded._n_updates > before

"""The ``device`` setting: where a run computes, and that everything lowcomm creates goes there.

No GPU is needed: torch's default device is set to ``meta`` while runs ask for ``cpu``
explicitly, so any tensor lowcomm creates without naming the run's device lands on ``meta`` and
the run fails (see :func:`test_every_algorithm_keeps_its_tensors_on_the_run_device`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import lowcomm
from lowcomm.core import tree
from lowcomm.core.device import run_device
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.engines.session import load_checkpoint
from tests.test_cli import lowcomm as cli
from tests.test_cli import one_error_line
from tests.test_conformance import LABELS, case

CPU, META = torch.device("cpu"), torch.device("meta")

# --- the setting ---------------------------------------------------------------------------


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend PyTorch sees ``count`` GPUs (no CUDA call is made)."""

    def see(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    return see


def test_cpu_and_auto_without_a_gpu_compute_on_the_cpu(gpus: Any) -> None:
    gpus(0)
    assert run_device("cpu") == CPU
    assert run_device("auto") == CPU
    assert run_device("auto", "torchdist") == CPU


def test_auto_and_cuda_with_gpus_take_the_current_gpu_or_the_ranks_own(
    gpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_device("cpu") == CPU
    assert run_device("auto") == torch.device("cuda", 0)
    assert run_device("cuda") == torch.device("cuda", 0)
    assert run_device("cuda", "torchdist") == torch.device("cuda", 1)
    assert run_device("auto", "torchdist") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(InvalidConfigError, match="LOCAL_RANK 2 has no GPU"):
        run_device("cuda", "torchdist")


NO_GPU = (
    "The 'device' parameter of the run config must be cpu or auto on this machine "
    "(PyTorch sees no CUDA GPU here). Got 'cuda'."
)


def test_cuda_without_a_gpu_is_refused_before_any_work(gpus: Any, tmp_path: Path) -> None:
    gpus(0)
    with pytest.raises(InvalidConfigError) as error:
        lowcomm.run("sgd", device="cuda", out=tmp_path / "out")
    assert str(error.value) == NO_GPU
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "compare"])
def test_cli_cuda_without_a_gpu_is_one_error_line_exit_2_nothing_written(
    command: str, gpus: Any, tmp_path: Path
) -> None:
    gpus(0)
    result = cli(command, "--device", "cuda", "--rounds", "2", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {NO_GPU}"
    assert not (tmp_path / "out").exists()


def test_an_unknown_device_names_the_choices(tmp_path: Path) -> None:
    result = cli("run", "--device", "tpu", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: The 'device' parameter of the run config must be one of 'cpu', 'cuda' or "
        "'auto'. Got 'tpu'."
    )


def test_cli_device_flag_reaches_the_saved_config(tmp_path: Path) -> None:
    flags = ["--data", "synthetic-logistic:200,4", "--workers", "3", "--rounds", "2"]
    result = cli("run", *flags, "--device", "auto", "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run.json").read_text())["config"]["device"] == "auto"


# --- the keyed streams -----------------------------------------------------------------------


def _numpy_uniform(seed: int, stream: str, workers: np.ndarray, round_: int, n: int) -> np.ndarray:
    """The reference: SplitMix64 over uint64 counters in NumPy, as the streams computed them
    before they moved to torch (so their draws, and every run's, are unchanged)."""
    words = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
    golden, mul1, mul2 = (np.uint64(word) for word in words)

    def mix(z: np.ndarray) -> np.ndarray:
        z = (z ^ (z >> np.uint64(30))) * mul1
        z = (z ^ (z >> np.uint64(27))) * mul2
        return z ^ (z >> np.uint64(31))

    tag = np.uint64(zlib.crc32(stream.encode()))
    with np.errstate(over="ignore"):
        base = mix(np.array([np.uint64(seed) ^ (tag << np.uint64(32))], dtype=np.uint64))
        base = mix(base + np.uint64(round_ + 1) * golden)
        base = mix(base + np.uint64(1) * mul1)
        keys = mix(base + (workers.astype(np.uint64) + np.uint64(1)) * golden)
        bits = mix(keys[:, None] + np.arange(1, n + 1, dtype=np.uint64)[None, :] * golden)
    return (bits >> np.uint64(11)).astype(np.float64) / float(2**53)


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3, 2**63 + 5])
def test_draws_are_the_bits_of_the_numpy_splitmix(seed: int) -> None:
    workers = np.array([0, 1, 5, 999_999, 2**40])
    for round_ in (0, 3, 10**9):
        expected = _numpy_uniform(seed, "batch", workers, round_, 17)
        drawn = Streams(seed).uniform("batch", torch.from_numpy(workers), round_, 17)
        assert np.array_equal(drawn.numpy(), expected)


def test_per_worker_rounds_draw_what_each_round_alone_draws() -> None:
    streams, workers = Streams(5), torch.tensor([2, 9, 4])
    rounds = torch.tensor([0, 7, 3])
    together = streams.uniform("epoch", workers, rounds, 6)
    for i in range(3):
        alone = streams.uniform("epoch", workers[i : i + 1], int(rounds[i]), 6)
        assert torch.equal(together[i], alone[0])


def test_draws_come_out_on_the_device_of_the_workers() -> None:
    workers = torch.arange(3, device=META)
    streams = Streams(1)
    assert streams.uniform("x", workers, 0, 4).device == META
    assert streams.integers("x", workers, 0, 4, torch.ones(3, device=META)).device == META
    assert streams.normal("x", workers, 0, 4).device == META


# --- every tensor on the run's device --------------------------------------------------------


@contextmanager
def _default_device(device: torch.device) -> Iterator[None]:
    """Torch's default device is ``device`` inside (the previous one again afterwards)."""
    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


@pytest.fixture
def meta_by_default() -> Iterator[None]:
    """Torch's default device is ``meta`` during the test."""
    with _default_device(META):
        yield


def _toy(n: int = 400, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A small binary problem (16 features: also 4 x 4 images for LeNet)."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, d))
    y = (X @ np.linspace(1, -1, d) + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return X, y


def _run(algorithm: str, rounds: int = 8, **options: Any) -> torch.Tensor:
    """Final parameters of a run of ``algorithm`` on 4 workers, on the CPU."""
    options.setdefault("data", _toy())
    result = lowcomm.run(algorithm, workers=4, rounds=rounds, device="cpu", **options)
    assert result is not None and result.divergence is None
    assert int(result.history["round"].iloc[-1]) == rounds
    return result.params


def _conformance(label: str) -> Any:
    """A conformance case (its settings, on the toy data in float64) as a test parameter."""
    name, (settings, _, _) = case(label)
    options = {"settings": settings, "dtype": "float64"}
    return pytest.param(name, options, id=label)


_SPARSE = sp.random(400, 50, density=0.1, format="csr", random_state=1)
_SPARSE_Y = (np.asarray(_SPARSE.sum(axis=1)).ravel() > 0.25).astype(np.int64)
_ORDER = {"batch_size": 16}  # 75 examples per worker: an epoch of 4 steps, so orders are sent
PLUMBING = {
    "mlp": ("sgd", {"model": "mlp"}),
    "lenet": ("sgd", {"model": "lenet"}),
    "softmax-exact-newton": (
        "local-newton",
        {"model": "softmax", "settings": {"solver": "exact"}},
    ),
    "sparse-sgd": ("sgd", {"data": (_SPARSE, _SPARSE_Y)}),
    "sparse-giant": ("giant", {"data": (_SPARSE, _SPARSE_Y)}),
    "reshuffle": ("sgd", {"settings": {"sampling": "reshuffle"}}),
    **{
        f"order-{order}": ("sgd", {"order": order, "settings": _ORDER})
        for order in ("d-rr", "so", "id-grab", "id-grab-mean", "cd-grab", "cd-grab-signs")
    },
    "cd-grab-signs-projected": (
        "sgd",
        {"order": "cd-grab-signs", "settings": {**_ORDER, "projection": 3}},
    ),
    "async-speeds-lag-cap": (
        "sgd",
        {
            "settings": {"asynchronous": True},
            "speeds": (1, 2, 3, 4),
            "seconds_per_grad": 0.01,
            "lag_cap": 1,
        },
    ),
    "local-newton-then-giant": (
        "local-newton",
        {"settings": {"adaptive": True, "then_giant": True}},
    ),
}


@pytest.mark.parametrize(
    ("algorithm", "options"),
    [
        *(_conformance(label) for label in LABELS),
        *(pytest.param(name, options, id=label) for label, (name, options) in PLUMBING.items()),
    ],
)
def test_every_algorithm_keeps_its_tensors_on_the_run_device(
    algorithm: str, options: dict[str, Any]
) -> None:
    """Runs on ``cpu`` while torch's default device is ``meta`` give the plain run's model.

    Every conformance case and the paths they do not reach (module models, sparse data, example
    orders, asynchrony) run 8 rounds twice: normally, and with ``meta`` as torch's default
    device. A tensor created without the run's device is then a ``meta`` tensor, which has no
    data: mixing it with the run's tensors, or reading it on the host (``.item()``,
    ``.numpy()``), fails the run.

    What the trick cannot see: a ``meta`` tensor used only as an index into a CPU tensor
    (``cpu[meta_index]`` is allowed), or a CPU 0-d tensor combined with a ``meta`` one. Both
    also work on CUDA (CPU indices and CPU scalars are accepted there), so neither hides a
    device error. Nothing else needed a workaround.
    """
    plain = _run(algorithm, **options)
    with _default_device(META):
        on_cpu = _run(algorithm, **options)
    assert on_cpu.device == CPU
    assert torch.equal(on_cpu, plain)


def test_a_resumed_run_loads_its_checkpoint_onto_the_run_device(
    meta_by_default: None, tmp_path: Path
) -> None:
    straight = _run("sgd")
    _run("sgd", rounds=4, out=tmp_path, checkpoint_every=4)
    resumed = _run("sgd", out=tmp_path, checkpoint_every=4, resume=True)
    assert torch.equal(resumed, straight)
    state = load_checkpoint(tmp_path, META)
    assert all(leaf.device == META for leaf in state.aggregator)


class _Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor | None


def test_tree_to_moves_every_leaf() -> None:
    moved = tree.to(_Pair(torch.zeros(2), torch.ones(2, dtype=torch.int64)), META)
    assert moved.a.device == META
    assert moved.b is not None and moved.b.device == META and moved.b.dtype == torch.int64
    assert tree.to(_Pair(torch.zeros(1), None), META).b is None

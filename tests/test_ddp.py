"""lowcomm's compressors as DDP communication hooks, on two gloo processes."""

from __future__ import annotations

import math
import re
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lowcomm import ddp
from lowcomm.compress import spec
from lowcomm.core.messages import Sparse
from tests.test_examples import run_example
from tests.test_wire import free_port, spawn

WORLD = 2
SHAPES = [(64, 32), (64,), (2, 64), (2,)]  # the MLP's parameters, in order
# With a 524-byte cap, DDP's first step sends one bucket of every parameter; then it rebuilds
# the buckets in the order the gradients were ready: the last layer and b1, then W1 alone.
BUCKET_CAP_MB = 0.0005
FIRST_BUCKETS = {0: SHAPES}
REBUILT_BUCKETS = {0: [(2,), (2, 64), (64,)], 1: [(64, 32)]}
STEPS = 150
TOPK_LOSS = 0.05  # top-k 1% with error feedback ends below it; without, above
IDENTITY_STEPS = 20
FEW_STEPS = 5
RESULT = dict[str, Any]


def bytes_by_hand(text: str, shapes: list[tuple[int, ...]]) -> int:
    """The payload bytes of one bucket of tensors of ``shapes`` (float32), per compressor."""
    sizes = [math.prod(s) for s in shapes]
    d, tensors = sum(sizes), len(sizes)
    kind, _, argument = text.partition(":")
    if kind == "identity":
        return 4 * d
    if kind == "topk":  # an int32 index and a float32 value per entry kept
        return 8 * sum(max(1, int(float(argument) * size)) for size in sizes)
    if kind in ("topk-global", "randk"):
        return 8 * max(1, int(float(argument) * d))
    if kind == "sign":  # a bit per value, a float32 scale per tensor
        return math.ceil(d / 8) + 4 * tensors
    if kind == "qsgd":  # a sign bit and ceil(log2(s + 1)) level bits per value, a norm per tensor
        bits = 1 + math.ceil(math.log2(int(argument) + 1))
        return math.ceil(d * bits / 8) + 4 * tensors
    assert kind == "lowrank"  # (n + m) r floats for an n x m tensor where that is smaller
    r = int(argument)
    views = [(s[0], math.prod(s[1:])) for s in shapes]
    return 4 * sum((n + m) * r if (n + m) * r < n * m else n * m for n, m in views)


EVERY = ["identity", "topk:0.01", "topk-global:0.01", "randk:0.05", "sign", "qsgd:4", "lowrank:2"]


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """A separable two-class problem in 32 dimensions: the sign of a random projection."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 32))
    y = (X @ rng.normal(size=32) > 0).astype(np.int64)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y)


def local_loss(model: nn.Module, rank: int) -> torch.Tensor:
    X, y = dataset()
    return F.cross_entropy(model(X[rank::WORLD]), y[rank::WORLD])


def train(model: nn.Module, rank: int, steps: int) -> float:
    """Full-batch SGD on this rank's half of the data; the full-data loss at the end."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        local_loss(model, rank).backward()
        optimizer.step()
    X, y = dataset()
    with torch.no_grad():
        return float(F.cross_entropy(model(X), y))


def hooked(compressor: str | None, *options: Any) -> nn.Module:
    """The MLP under DDP with the lowcomm hook for ``compressor``; plain DDP for None."""
    model = DistributedDataParallel(mlp(), bucket_cap_mb=BUCKET_CAP_MB)
    if compressor is not None:
        model.register_comm_hook(None, ddp.hook(compressor, *options))
    return model


def parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def first_gradients(compressor: str, rank: int) -> RESULT:
    """The first step's gradient under DDP (no error feedback) and of this rank's data alone."""
    model, local = hooked(compressor, False), mlp()
    for net in (model, local):
        local_loss(net, rank).backward()
    return {
        "ddp": [p.grad for p in model.parameters()],
        "local": [p.grad for p in local.parameters()],
    }


def scenarios(rank: int) -> dict[str, RESULT]:
    """Every scenario's results on this rank."""
    out: dict[str, RESULT] = {}
    for compressor in EVERY:
        ledger = ddp.HookLedger()
        model = hooked(compressor, True, ledger)
        steps = STEPS if compressor == "topk:0.01" else FEW_STEPS
        out[compressor] = {
            "loss": train(model, rank, steps),
            "ledger": ledger.frame(),
            "params": parameters(model),
        }
    out["topk without error feedback"] = {"loss": train(hooked("topk:0.01", False), rank, STEPS)}
    plain, identity = hooked(None), hooked("identity")
    out["plain ddp"] = {"loss": train(plain, rank, IDENTITY_STEPS), "params": parameters(plain)}
    out["identity hook"] = {
        "loss": train(identity, rank, IDENTITY_STEPS),
        "params": parameters(identity),
    }
    out["first gradients"] = {text: first_gradients(text, rank) for text in ("topk:0.01", "sign")}
    out["ragged"] = {"mean": ragged_mean(rank)}
    return out


def ragged_mean(rank: int) -> torch.Tensor:
    """The mean the all-gather exchange makes of rows with 1 and 3 sparse entries."""
    count = 1 + 2 * rank
    indices = torch.arange(count, dtype=torch.int32)[None, :] * 2
    values = torch.full((1, count), 10.0**rank)
    row = Sparse(indices, values, torch.tensor([count]), 6)
    peers = ddp._Peers(dist.group.WORLD, WORLD, torch.device("cpu"))
    future, _ = ddp._all_gather_mean(row, peers)
    return future.wait()


def _all_ranks(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    url, timeout = f"tcp://127.0.0.1:{port}", timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=url, rank=rank, world_size=WORLD, timeout=timeout)
    try:
        torch.save(scenarios(rank), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, RESULT]]:
    """Each rank's results of every scenario, from one group of two gloo processes."""
    folder = tmp_path_factory.mktemp("ddp")
    spawn(_all_ranks, free_port(), str(folder), nprocs=WORLD)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.dist
def test_topk_one_percent_with_error_feedback_trains_on_two_percent_of_dense_bytes(
    runs: list[dict[str, RESULT]],
) -> None:
    for rank in range(WORLD):
        assert (
            runs[rank]["topk:0.01"]["loss"]
            < TOPK_LOSS
            < runs[rank]["topk without error feedback"]["loss"]
        )
        per_step = runs[rank]["topk:0.01"]["ledger"].groupby("step")[["sent", "dense"]].sum()
        assert per_step.index.tolist() == list(range(STEPS))
        # 20 + 1 + 1 + 1 entries of 8 bytes against 2,242 float32 values, at every step
        assert (per_step["sent"] == 184).all() and (per_step["dense"] == 8968).all()
        assert per_step["sent"].sum() / per_step["dense"].sum() == pytest.approx(0.0205, abs=1e-4)


@pytest.mark.dist
@pytest.mark.parametrize("compressor", EVERY)
def test_every_compressor_bills_its_payload_bytes_per_bucket_and_step(
    runs: list[dict[str, RESULT]], compressor: str
) -> None:
    for rank in range(WORLD):
        ledger: pd.DataFrame = runs[rank][compressor]["ledger"]
        for record in ledger.itertuples():
            shapes = (FIRST_BUCKETS if record.step == 0 else REBUILT_BUCKETS)[record.bucket]
            assert record.dense == 4 * sum(math.prod(s) for s in shapes)
            assert record.sent == bytes_by_hand(compressor, shapes)
            # all-reduce moves the dense bucket; all-gather adds a header to the payload
            assert (record.exchanged == record.sent) == (compressor == "identity")
            assert record.exchanged >= record.sent
        assert ledger["step"].nunique() == (STEPS if compressor == "topk:0.01" else FEW_STEPS)
        assert len(ledger) == 2 * ledger["step"].nunique() - 1, "one bucket, then two"


def test_every_compressor_the_spec_knows_has_a_ddp_test() -> None:
    assert {spec.CompressorSpec(text).kind for text in EVERY} == set(spec._KINDS)


@pytest.mark.dist
@pytest.mark.parametrize("compressor", EVERY)
def test_every_rank_ends_with_the_same_model(
    runs: list[dict[str, RESULT]], compressor: str
) -> None:
    first, second = (runs[rank][compressor]["params"] for rank in range(WORLD))
    for a, b in zip(first, second, strict=True):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)


@pytest.mark.dist
def test_identity_hook_trains_bit_for_bit_as_plain_ddp(runs: list[dict[str, RESULT]]) -> None:
    for rank in range(WORLD):
        plain, hooked_ = (runs[rank][name]["params"] for name in ("plain ddp", "identity hook"))
        for a, b in zip(plain, hooked_, strict=True):
            assert torch.equal(a, b)
        assert not torch.equal(plain[0], next(mlp().parameters())), "it trained"
        assert runs[rank]["plain ddp"]["loss"] == runs[rank]["identity hook"]["loss"] < 0.5


def topk_by_hand(grad: torch.Tensor) -> torch.Tensor:
    """The top 1% of ``grad`` by magnitude (at least one entry), the rest zero."""
    flat, kept = grad.reshape(-1), torch.zeros(grad.numel())
    top = flat.abs().topk(max(1, int(0.01 * flat.numel()))).indices
    kept[top] = flat[top]
    return kept.reshape(grad.shape)


def sign_by_hand(grad: torch.Tensor) -> torch.Tensor:
    """The tensor's mean magnitude times its sign (+ for zero)."""
    return grad.abs().mean() * torch.where(grad >= 0, 1.0, -1.0)


@pytest.mark.dist
@pytest.mark.parametrize(
    ("compressor", "by_hand"), [("topk:0.01", topk_by_hand), ("sign", sign_by_hand)]
)
def test_the_hook_hands_ddp_the_mean_of_every_ranks_compressed_gradient(
    runs: list[dict[str, RESULT]], compressor: str, by_hand: Any
) -> None:
    local = [runs[rank]["first gradients"][compressor]["local"] for rank in range(WORLD)]
    expected = [(by_hand(a) + by_hand(b)) / WORLD for a, b in zip(*local, strict=True)]
    for rank in range(WORLD):
        got = runs[rank]["first gradients"][compressor]["ddp"]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


@pytest.mark.dist
def test_rows_of_different_lengths_are_padded_and_averaged(runs: list[dict[str, RESULT]]) -> None:
    expected = torch.tensor([11.0, 0, 10, 0, 10, 0]) / WORLD  # 1 at 0; 10 at 0, 2 and 4
    for rank in range(WORLD):
        assert torch.equal(runs[rank]["ragged"]["mean"], expected)


def test_an_unknown_compressor_is_refused_when_the_hook_is_made() -> None:
    with pytest.raises(ValueError, match=r"unknown compressor 'top-k:0\.01'"):
        ddp.hook("top-k:0.01")


def loopback() -> str:
    """The loopback interface's name, for gloo (which binds the hostname's address otherwise)."""
    return next(name for _, name in socket.if_nameindex() if name.startswith("lo"))


@pytest.mark.dist
@pytest.mark.slow
def test_the_torchrun_example_trains_on_digits_and_prints_the_bytes_saved() -> None:
    output = run_example(
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "examples/ddp_train.py",
        GLOO_SOCKET_IFNAME=loopback(),
        OMP_NUM_THREADS="1",
    )
    losses = [float(x) for x in re.findall(r"train loss ([\d.]+)", output)]
    assert len(losses) == 3 and losses[-1] < 0.1 < losses[0], output
    accuracy = re.search(r"test accuracy ([\d.]+)", output)
    assert accuracy is not None and float(accuracy.group(1)) > 0.85, output
    # per step: 81 + 1 + 12 + 1 entries of the 8,192 + 128 + 1,280 + 10 float32 values
    assert "sent 228,000 instead of 11,532,000 (1.98%), 11,304,000 saved" in output, output

"""``lowcomm reproduce async-msgd``: the vectorised loops equal the library, and the read-outs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lowcomm.cli import app
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.engines.session import RunResult
from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce import REPRODUCTIONS
from lowcomm.experiments.reproduce.async_msgd import (
    QUICK,
    best_mu,
    library_batches,
    net_config,
    net_seed,
    network_claims,
    pca_start,
    simulate_network,
    simulate_pca,
    study_for,
    tau_star,
)
from lowcomm.experiments.reproduce.report import Request
from lowcomm.experiments.runner import Prepared, execute, prepare

PCA_CELLS = ((0.7, 3), (0.0, 0), (0.9, 5))


def feeder(samples: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """``draw(n)``: the next n rows of ``samples``."""
    done = [0]

    def draw(count: int) -> torch.Tensor:
        start, done[0] = done[0], done[0] + count
        return samples[start : start + count]

    return draw


def library_pca(seed: int, mu: float, tau: int, rounds: int) -> tuple[Prepared, RunResult]:
    """``lowcomm run --algorithm async-msgd`` on synthetic PCA, one worker, float64."""
    config = make_config(
        {
            "algorithm": "async-msgd",
            "data": "synthetic-pca:300,6",
            "workers": 1,
            "rounds": rounds,
            "eval_every": rounds,
            "dtype": "float64",
            "seed": seed,
            "options": {"lr": 0.05, "momentum": mu, "batch_size": 1, "delay": f"const:{tau}"},
        }
    )
    prepared = prepare(config)
    result = execute(prepared)
    assert result is not None
    return prepared, result


def test_vectorised_pca_equals_library_async_msgd_on_the_same_samples() -> None:
    """Feed simulate_pca the very rows the library's worker draws (its keyed batch stream)."""
    seed, rounds = 4, 60
    prepared, _ = library_pca(seed, 0.0, 0, rounds)
    n = int(prepared.shards.sizes[0])
    X = prepared.shards.X[0, :n]
    rows = [
        int(Streams(seed).integers("batch", torch.tensor([0]), k, 1, torch.tensor([n]), 0)[0, 0])
        for k in range(rounds)
    ]
    draw = feeder(X[rows][:, None, :])  # [K, S=1, d]
    v0 = pca_start(6, [seed])
    init = prepared.problem.init_params(prepared.streams.generator("init"))
    torch.testing.assert_close(v0[0], init, rtol=0, atol=0)
    mu = torch.tensor([m for m, _ in PCA_CELLS], dtype=torch.float64)
    tau = torch.tensor([t for _, t in PCA_CELLS])
    trace = simulate_pca(v0, draw, mu, tau, 0.05, rounds, chunk=7)
    for c, (m, t) in enumerate(PCA_CELLS):
        _, result = library_pca(seed, m, t, rounds)
        torch.testing.assert_close(trace.final[c, 0], result.model, rtol=1e-10, atol=1e-12)
        sin2 = 1 - float(result.model[0]) ** 2 / float(result.model.square().sum())
        assert result.history["test_metric"].iloc[-1] == pytest.approx(sin2)


def test_vectorised_network_equals_library_async_msgd() -> None:
    study = replace(QUICK, net_updates=12, net_seeds=(1,), net_batch=8, net_lr=0.1)
    seeds = [net_seed(1, study, "float64")]
    cells = ((0.7, 3), (0.5, 0))
    mu = torch.tensor([m for m, _ in cells], dtype=torch.float64)
    tau = torch.tensor([t for _, t in cells])
    final = simulate_network(seeds, library_batches(seeds, study), mu, tau, 0.1, 12)
    for c, (m, t) in enumerate(cells):
        prepared = prepare(make_config(net_config(1, m, t, study, "float64")))
        result = execute(prepared)
        assert result is not None
        torch.testing.assert_close(final[c, 0], result.model, rtol=1e-10, atol=1e-12)
        loss = seeds[0].evaluate(final[c, 0])
        assert result.history["train_loss"].iloc[-1] == pytest.approx(loss, rel=1e-10)


def test_delay_reads_v0_before_tau_updates_and_zero_delay_is_heavy_ball() -> None:
    """Hand-rolled recursion on a fixed sample stream for two cells."""
    gen = torch.Generator().manual_seed(0)
    samples = torch.randn(30, 2, 4, generator=gen, dtype=torch.float64)
    v0 = torch.nn.functional.normalize(torch.randn(2, 4, generator=gen, dtype=torch.float64), dim=1)
    mu, tau = torch.tensor([0.6, 0.6], dtype=torch.float64), torch.tensor([0, 4])
    trace = simulate_pca(v0, feeder(samples), mu, tau, 0.1, 30, chunk=8)
    for c, delay in enumerate((0, 4)):
        iterates, previous = [v0.clone()], v0.clone()
        for k in range(30):
            stale = iterates[max(0, k - delay)]
            p = (stale * samples[k]).sum(-1, keepdim=True)
            new = (
                iterates[-1]
                + 0.6 * (iterates[-1] - previous)
                + 0.1 * (p * samples[k] - p**2 * stale)
            )
            previous = iterates[-1]
            iterates.append(new)
        torch.testing.assert_close(trace.final[c], iterates[-1], rtol=1e-12, atol=1e-14)


def test_read_outs() -> None:
    rows = pd.DataFrame(
        {"tau": [0, 1, 2, 4], "converged": [True, True, False, True], "first_hit": [5.0, 6, 7, 8]}
    )
    assert tau_star(rows) == 1
    assert math.isnan(tau_star(rows.assign(converged=False)))
    cells = pd.DataFrame(
        {"mu": [0.0, 0.5, 0.9], "converged": [True, True, False], "first_hit": [9.0, 4, 1]}
    )
    assert best_mu(cells) == 0.5


def test_network_claims_rank_mu_09() -> None:
    losses = {0.0: [0.3, 0.3, 0.3], 0.5: [0.2, 0.25, 0.2], 0.9: [0.1, 0.9, math.nan]}
    net = pd.DataFrame(
        [
            {"mu": m, "tau": t, "seed": 0, "train_loss": v}
            for m, values in losses.items()
            for t, v in zip((0, 8, 16), values, strict=True)
        ]
    )
    best, worst = network_claims(net, QUICK)
    assert best.passed and "tau=0: 0.9" in best.measured and "tau=8: 0.5" in best.measured
    assert (
        worst.passed
        and worst.measured
        == "tau=8: rank 3 of 3 (1 = least loss), tau=16: rank 3 of 3 (1 = least loss)"
    )


def test_requests() -> None:
    assert study_for(Request(Path("x"), quick=True)) == QUICK
    assert study_for(Request(Path("x"), seeds=(3, 4, 5, 6))).net_seeds == (3, 4, 5)
    with pytest.raises(InvalidConfigError):
        study_for(Request(Path("x"), data="digits"))
    assert "async-msgd" in REPRODUCTIONS


def test_quick_command_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "am"
    result = CliRunner().invoke(
        app, ["reproduce", "async-msgd", "--quick", "--seeds", "0,1,2,3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "lowcomm reproduce async-msgd --quick" in report and "## Claims" in report
    claims = json.loads((out / "claims.json").read_text())["claims"]
    assert len(claims) == 6 and {c["result"] for c in claims} <= {"PASS", "FAIL"}
    cells = pd.read_csv(out / "pca_cells.csv")
    assert len(cells) == len(QUICK.mus) * len(QUICK.taus)
    for figure in ("first-hit.png", "stationary.png", "tau-star.png"):
        assert (out / figure).is_file()

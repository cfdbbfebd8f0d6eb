"""``lowcomm reproduce async-msgd``: the PCA recursion equals the engine, the quick study's claims
equal a recomputation from its saved runs, and each claim's rule passes and fails by hand."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.engines.session import RunResult
from lowcomm.experiments.config import make_config
from lowcomm.experiments.measures import key_numbers, listed
from lowcomm.experiments.reproduce.async_msgd import (
    STUDY,
    TEXTS,
    Sizes,
    best_mu,
    cell_table,
    mu_claims,
    network_claims,
    pca_cells,
    pca_start,
    plan,
    simulate_pca,
    slope_claims,
    tau_claims,
    tau_star,
)
from lowcomm.experiments.reproduce.report import Outcome, Request
from lowcomm.experiments.runner import Prepared, execute, prepare
from lowcomm.experiments.study import run_study

PCA_CELLS = ((0.7, 3), (0.0, 0), (0.9, 5))


# --- the vectorised PCA recursion is the engine's async-msgd --------------------------------------


def feeder(samples: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """``draw(n)``: the next n rows of ``samples``."""
    done = [0]

    def draw(count: int) -> torch.Tensor:
        start, done[0] = done[0], done[0] + count
        return samples[start : start + count]

    return draw


def engine_pca(seed: int, mu: float, tau: int, rounds: int) -> tuple[Prepared, RunResult]:
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


def test_vectorised_pca_equals_the_engine_on_the_same_samples() -> None:
    """Feed simulate_pca the very rows the engine's worker draws (its keyed batch stream)."""
    seed, rounds = 4, 60
    prepared, _ = engine_pca(seed, 0.0, 0, rounds)
    n = int(prepared.shards.sizes[0])
    X = prepared.shards.X[0, :n]
    rows = [
        int(Streams(seed).integers("batch", torch.tensor([0]), k, 1, torch.tensor([n]), 0)[0, 0])
        for k in range(rounds)
    ]
    v0 = pca_start(6, [seed])
    init = prepared.problem.init_params(prepared.streams.generator("init"))
    torch.testing.assert_close(v0[0], init, rtol=0, atol=0)
    mu = torch.tensor([m for m, _ in PCA_CELLS], dtype=torch.float64)
    tau = torch.tensor([t for _, t in PCA_CELLS])
    _, _, final = simulate_pca(v0, feeder(X[rows][:, None, :]), mu, tau, 0.05, rounds)
    for c, (m, t) in enumerate(PCA_CELLS):
        _, result = engine_pca(seed, m, t, rounds)
        torch.testing.assert_close(final[c, 0], result.model, rtol=1e-10, atol=1e-12)
        sin2 = 1 - float(result.model[0]) ** 2 / float(result.model.square().sum())
        assert result.history["test_metric"].iloc[-1] == pytest.approx(sin2)


def test_delay_reads_v0_before_tau_updates_and_the_read_outs_follow_the_iterates() -> None:
    """A hand-rolled recursion on a fixed stream: final iterates, first hit, stationary error."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    samples = torch.randn(40, 2, 4, generator=gen, dtype=torch.float64) * scale
    v0 = torch.nn.functional.normalize(torch.randn(2, 4, generator=gen, dtype=torch.float64), dim=1)
    mu, tau = torch.tensor([0.6, 0.6], dtype=torch.float64), torch.tensor([0, 4])
    first, stationary, final = simulate_pca(v0, feeder(samples), mu, tau, 0.05, 40)
    for c, delay in enumerate((0, 4)):
        iterates, previous = [v0.clone()], v0.clone()
        for k in range(40):
            stale = iterates[max(0, k - delay)]
            p = (stale * samples[k]).sum(-1, keepdim=True)
            new = (
                iterates[-1]
                + 0.6 * (iterates[-1] - previous)
                + 0.05 * (p * samples[k] - p**2 * stale)
            )
            previous = iterates[-1]
            iterates.append(new)
        torch.testing.assert_close(final[c], iterates[-1], rtol=1e-12, atol=1e-14)
        sin2 = torch.stack([1 - v[:, 0] ** 2 / (v**2).sum(-1) for v in iterates[1:]])  # [k, S]
        torch.testing.assert_close(stationary[c], sin2[30:].mean(0), rtol=1e-12, atol=1e-14)
        for s in range(2):
            hits = torch.nonzero(sin2[:, s] <= 0.1)
            assert first[c, s] == (float(hits[0, 0]) + 1 if len(hits) else math.inf)


# --- the quick study, recomputed from its saved runs ---------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    out = tmp_path_factory.mktemp("reproduce") / "async-msgd"
    return run_study(STUDY, Request(out=out, quick=True, jobs=1, command="test async-msgd"))


def by_hand_cells(out: Path) -> dict[tuple[float, float], dict[tuple[float, int], dict]]:
    """Per (d, eta) and (mu, tau): lower median first hit, mean error, converged; from tables."""
    groups: dict = {}
    for path in sorted((out / "pca").glob("d*/eta*/table.parquet")):
        table = pd.read_parquet(path)
        for (d, eta, mu, tau), g in table.groupby(["d", "eta", "mu", "tau"]):
            hits = sorted(g["first_hit"])
            errors = [e if math.isfinite(e) else 1.0 for e in g["stationary"]]
            ok = [
                math.isfinite(h) and math.isfinite(e) and e <= 0.5
                for h, e in zip(g["first_hit"], g["stationary"], strict=True)
            ]
            groups.setdefault((d, eta), {})[(mu, tau)] = {
                "hit": hits[(len(hits) - 1) // 2],
                "error": sum(errors) / len(errors),
                "converged": sum(ok) / len(ok) >= 0.75,
            }
    return groups


def text(values: list[float]) -> str:
    return ", ".join("none" if math.isnan(v) else f"{v:g}" for v in values)


def falls(values: list[float]) -> bool:
    """Never rises, a missing value (NaN) ranking below every number."""
    ranked = [-math.inf if math.isnan(v) else v for v in values]
    return all(b <= a for a, b in itertools.pairwise(ranked))


def test_claims_table_equals_a_recomputation_from_the_saved_runs(quick: Outcome) -> None:
    out = quick.out
    groups = by_hand_cells(out)
    assert sorted(groups) == [(10, 0.0025), (10, 0.005), (10, 0.01)]
    measured = {}
    slopes, errors, stars_text, bests_text, proxy = [], [], [], [], []
    pooled_x, pooled_y, by_eta = [], [], {}
    ok1, ok2, ok3, ok6, ok7 = True, True, True, True, True
    for (d, eta), cells in groups.items():
        name = f"d={d:g}, eta={eta:g}"
        zero = [(mu, c["hit"]) for (mu, tau), c in sorted(cells.items()) if tau == 0]
        x = [math.log(1 - mu) for mu, h in zero if math.isfinite(h)]
        y = [math.log(h) for mu, h in zero if math.isfinite(h)]
        slope = np.polyfit(x, y, 1)[0]
        slopes.append(f"{name}: {slope:.2f}")
        ok1 &= 0.7 <= slope <= 1.3
        zero = [(mu, c["error"]) for (mu, tau), c in sorted(cells.items()) if tau == 0]
        slope = np.polyfit([math.log(1 - m) for m, _ in zero], [math.log(e) for _, e in zero], 1)[0]
        errors.append(f"{name}: {slope:.2f}")
        ok2 &= -1.3 <= slope <= -0.7
        mus, taus = sorted({m for m, _ in cells}), sorted({t for _, t in cells})
        stars = []
        for mu in mus:
            ok = [cells[(mu, t)]["converged"] for t in taus] + [False]
            stars.append(math.nan if not ok[0] else float(taus[ok.index(False) - 1]))
        stars_text.append(f"{name}: {text(stars)}")
        ok3 &= falls(stars) and (-math.inf if math.isnan(stars[-1]) else stars[-1]) < stars[0]
        for mu, star in zip(mus, stars, strict=True):
            if 1 <= star < 128:
                by_eta.setdefault((d, mu), []).append((math.log(eta), math.log(star)))
        kept = [
            (math.log(1 - m), math.log(s)) for m, s in zip(mus, stars, strict=True) if 1 <= s < 128
        ]
        if len(kept) >= 2:
            pooled_x += [a - np.mean([a for a, _ in kept]) for a, _ in kept]
            pooled_y += [b - np.mean([b for _, b in kept]) for _, b in kept]
        bests = []
        for tau in taus:
            fine = [(cells[(m, tau)]["hit"], m) for m in mus if cells[(m, tau)]["converged"]]
            bests.append(min(fine)[1] if fine else math.nan)
        bests_text.append(f"{name}: {text(bests)}")
        ok6 &= falls(bests)
        walls = [
            (cells[(m, t)]["hit"] / (t + 1), m, t)
            for (m, t) in sorted(cells)
            if cells[(m, t)]["converged"]
        ]
        low = min(w for w in walls if w[1] < 0.9)
        high = min((w[0] for w in walls if w[1] == 0.9), default=math.inf)
        proxy.append(f"{name}: {low[0]:.1f} (mu={low[1]:g}, tau={low[2]}) vs {high:.1f}")
        ok7 &= low[0] < high
    measured[1], measured[2], measured[3], measured[6], measured[7] = (
        "; ".join(slopes),
        "; ".join(errors),
        "; ".join(stars_text),
        "; ".join(bests_text),
        "; ".join(proxy),
    )
    slope = float(np.dot(pooled_x, pooled_y) / np.dot(pooled_x, pooled_x))
    measured[4] = f"{slope:.2f} from {len(pooled_x)} points"
    eta_x, eta_y = [], []
    for points in by_eta.values():
        if len(points) >= 2:
            eta_x += [a - np.mean([a for a, _ in points]) for a, _ in points]
            eta_y += [b - np.mean([b for _, b in points]) for _, b in points]
    eta_slope = float(np.dot(eta_x, eta_y) / np.dot(eta_x, eta_x))
    measured[5] = f"{eta_slope:.2f} from {len(eta_x)} points"
    losses: dict[tuple[float, int], list[float]] = {}
    for path in sorted((out / "network").glob("mu*/tau*/seed*/history.parquet")):
        mu, tau = float(path.parts[-4][2:]), int(path.parts[-3][3:])
        losses.setdefault((mu, tau), []).append(pd.read_parquet(path)["train_loss"].iloc[-1])
    mean = {k: float(np.mean(v)) for k, v in losses.items()}
    net_taus, net_mus = sorted({t for _, t in mean}), sorted({m for m, _ in mean})
    best = [min(net_mus, key=lambda m: mean[(m, t)]) for t in net_taus]
    measured[8] = ", ".join(f"tau={t}: {m:g}" for t, m in zip(net_taus, best, strict=True))
    ranks = {t: sorted(mean[(m, t)] for m in net_mus).index(mean[(0.9, t)]) + 1 for t in (8, 16)}
    measured[9] = ", ".join(f"tau={t}: rank {r} of 4 (1 = least loss)" for t, r in ranks.items())
    claims = json.loads((out / "claims.json").read_text())["claims"]
    assert len(claims) == len(TEXTS) == 9
    assert sorted(measured) == list(range(1, 10))
    for number, value in measured.items():
        assert claims[number - 1]["measured"] == value, number
    verdicts = {
        1: ok1,
        2: ok2,
        3: ok3,
        4: 1 <= slope <= 2,
        5: -1 <= eta_slope <= -0.5,
        6: ok6,
        7: ok7,
        8: falls(best),
        9: min(ranks.values()) >= 3,
    }
    for number, passed in verdicts.items():
        assert claims[number - 1]["result"] == ("PASS" if passed else "FAIL"), number
    report = quick.report.read_text()
    for number, claim in enumerate(claims, start=1):
        assert f"| {number} | {claim['claim']} |" in report
        assert f"| {claim['measured']} | **{claim['result']}** |" in report
    assert "not judged" not in {c["result"] for c in claims}


def test_quick_study_writes_its_figures_tables_and_notes(quick: Outcome) -> None:
    report = quick.report.read_text()
    for name in ("first-hit", "stationary", "tau-star", "network"):
        assert (quick.out / f"{name}.png").stat().st_size > 0
    for name in ("tau_star", "best_mu", "network"):
        assert (quick.out / f"{name}.csv").is_file()
    assert (
        "## The rule for groups with no value" in report and "$" not in report.split("## Setup")[1]
    )
    assert (quick.out / "report.html").is_file()


# --- the plan -------------------------------------------------------------------------------------


def test_plan_has_one_engine_run_per_network_cell_and_one_call_per_pca_group() -> None:
    sizes = Sizes(dims=(10, 50), lrs=(0.01,), net_mus=(0.0, 0.9), net_taus=(0, 8), net_seeds=(0, 1))
    jobs = plan(Request(Path("x")), sizes).jobs
    assert [j.key for j in jobs[:2]] == [("pca", "d50", "eta0.01"), ("pca", "d10", "eta0.01")]
    assert jobs[0].call is pca_cells and jobs[0].args == (50, 0.01, sizes, sizes.seeds)
    net = [j for j in jobs if j.config is not None]
    assert len(net) == 8 and net[3].key == ("network", "mu0", "tau8", "seed1")
    config = net[3].config
    assert config is not None and config.seed == 1 and config.algorithm == "async-msgd"
    assert config.options["delay"] == "const:8" and config.options["momentum"] == 0.0
    for job in net:  # the keys name the grid values, read back by key_numbers
        values = key_numbers(job.key)
        assert job.config is not None and job.config.seed == values["seed"]
        assert job.config.options["momentum"] == values["mu"]
        assert job.config.options["delay"] == f"const:{values['tau']:g}"
    assert key_numbers(("pca", "d50", "eta0.01")) == {"d": 50.0, "eta": 0.01}
    assert key_numbers(("network", "mu1e-05", "topk-ef", "x")) == {"mu": 1e-05}
    seeded = plan(Request(Path("x"), seeds=(5, 6, 7)), sizes)
    assert seeded.jobs[0].args[3] == (5, 6, 7) and seeded.jobs[-1].key[-1] == "seed6"
    assert plan(Request(Path("x"), quick=True)).facts["dims"] == "10"
    assert plan(Request(Path("x"), quick=True)).facts["mus"] == "0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95"
    assert listed((1, 0.5, math.nan, "1/n")) == "1, 0.5, none, 1/n" and listed((0, 1), ",") == "0,1"
    with pytest.raises(InvalidConfigError):
        plan(Request(Path("x"), data="digits"))


def test_pca_cells_rows_are_every_mu_tau_seed_of_the_group() -> None:
    sizes = Sizes(mus=(0.0, 0.5), taus=(0, 2), iters=40)
    table = pca_cells(6, 0.05, sizes, (0, 1, 2))
    assert len(table) == 12 and set(table["d"]) == {6} and set(table["eta"]) == {0.05}
    assert table[["mu", "tau", "seed"]].iloc[5].tolist() == [0.0, 2, 2]


# --- the read-outs and claims on hand-made numbers ------------------------------------------------


def runs(first: list[float], stationary: list[float], **key: float) -> pd.DataFrame:
    key = {"d": 10, "eta": 0.01, "mu": 0.0, "tau": 0} | key
    return pd.DataFrame(
        {"first_hit": first, "stationary": stationary}
        | {k: [v] * len(first) for k, v in key.items()}
    )


def test_cell_table_lower_median_diverged_seeds_and_the_converged_share() -> None:
    cells = cell_table(runs([5.0, 3.0, 9.0, 7.0], [0.1, 0.2, math.nan, 0.3]))
    row = cells.iloc[0]
    assert row["first_hit"] == 5.0  # lower median of 3, 5, 7, 9
    assert row["stationary"] == pytest.approx((0.1 + 0.2 + 1.0 + 0.3) / 4)
    assert row["share"] == 0.75 and row["converged"]
    stuck = cell_table(runs([5.0, 3.0, 9.0, math.inf], [0.1, 0.6, 0.2, 0.3])).iloc[0]
    assert stuck["share"] == 0.5 and not stuck["converged"]


def test_tau_star_and_best_mu() -> None:
    rows = pd.DataFrame(
        {"tau": [4, 0, 1, 2], "converged": [True, True, True, False], "first_hit": [8.0, 5, 6, 7]}
    )
    assert tau_star(rows) == 1
    assert tau_star(rows.assign(converged=True)) == 4
    assert math.isnan(tau_star(rows.assign(converged=False)))
    cells = pd.DataFrame(
        {"mu": [0.0, 0.5, 0.9], "converged": [True, True, False], "first_hit": [9.0, 4, 1]}
    )
    assert best_mu(cells) == 0.5
    assert math.isnan(best_mu(cells.assign(converged=False)))


def stars_table(rows: dict[tuple[int, float], list[float]], mus: list[float]) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples(list(rows), names=["d", "eta"])
    return pd.DataFrame(list(rows.values()), index=index, columns=pd.Index(mus, name="mu"))


def test_tau_star_claims_under_the_rule_for_groups_with_no_value() -> None:
    mus = [0.0, 0.5, 0.75]
    # tau* halves as (1 - mu) halves: slope 1; a group that runs out of convergent mus passes
    good = stars_table(
        {(10, 0.01): [32, 16, 8], (10, 0.005): [64, 32, 16], (50, 0.01): [16, math.nan, math.nan]},
        mus,
    )
    three, four, five = tau_claims(good, 128)
    assert three.passed and four.passed and "d=50, eta=0.01: 16, none, none" in three.measured
    assert four.measured == "1.00 from 6 points" and five.measured == "-1.00 from 6 points"
    assert five.passed  # tau* doubles as eta halves: slope -1, inside [-1, -0.5]
    # a rise after a missing value fails; so does a group where no mu converges (no decrease)
    assert not tau_claims(stars_table({(10, 0.01): [math.nan, 16, 8]}, mus), 128)[0].passed
    assert not tau_claims(stars_table({(10, 0.01): [math.nan] * 3}, mus), 128)[0].passed
    assert not tau_claims(stars_table({(10, 0.01): [32, 32, 32]}, mus), 128)[0].passed
    # tau* ~ (1 - mu)^3: slope outside [1, 2]; one step size: claim 5 not judged
    steep = tau_claims(stars_table({(10, 0.01): [64, 8, 1]}, mus), 128)
    assert not steep[1].passed and steep[1].measured == "3.00 from 3 points"
    assert steep[2].passed is None and "one step size" in steep[2].measured
    assert steep[2].measured == "not judged at quick size: one step size in the grid"
    assert steep[1].criterion == (
        "pooled slope of log tau* vs log(1-mu) in [1.0, 2.0] (one intercept per (d, eta), "
        "tau* in [1, largest tau) only)"
    )
    # censored tau* (0 or the largest tau) are left out of the slope
    assert (
        tau_claims(stars_table({(10, 0.01): [128, 16, 8]}, mus), 128)[1].measured
        == "1.00 from 2 points"
    )


def grid(
    hits: dict[tuple[float, int], float], converged: set[tuple[float, int]] | None = None
) -> pd.DataFrame:
    rows = [
        {
            "d": 10,
            "eta": 0.01,
            "mu": m,
            "tau": t,
            "first_hit": h,
            "stationary": 0.1,
            "converged": converged is None or (m, t) in converged,
        }
        for (m, t), h in hits.items()
    ]
    return pd.DataFrame(rows)


def test_best_mu_and_wall_clock_claims() -> None:
    bests = pd.DataFrame(
        [[0.9, 0.5, math.nan, math.nan]],
        index=pd.MultiIndex.from_tuples([(10, 0.01)], names=["d", "eta"]),
    )
    hits = {(0.0, 0): 100.0, (0.9, 0): 20.0, (0.0, 8): 90.0, (0.9, 8): 400.0}
    six, seven = mu_claims(bests, grid(hits))
    assert six.passed and six.measured == "d=10, eta=0.01: 0.9, 0.5, none, none"
    assert seven.passed and seven.measured == "d=10, eta=0.01: 10.0 (mu=0, tau=8) vs 20.0"
    rising = bests.copy()
    rising.iloc[0, 3] = 0.3  # none, then a value: a rise
    assert not mu_claims(rising, grid(hits))[0].passed
    slow = {**hits, (0.0, 8): 900.0}  # mu = 0 at tau = 8 now slower per worker than mu = 0.9
    assert not mu_claims(bests, grid(slow))[1].passed
    nothing = mu_claims(bests, grid(hits, converged=set()))[1]
    assert not nothing.passed and nothing.measured == "d=10, eta=0.01: inf vs inf"


def test_slope_claims() -> None:
    mus = [0.0, 0.5, 0.75, 0.875]
    hits = {(m, 0): 1000 * (1 - m) for m in mus}
    cells = grid(hits).assign(stationary=lambda c: 0.01 / (1 - c["mu"]))
    one, two = slope_claims(cells)
    assert one.passed and two.passed and one.measured == "d=10, eta=0.01: 1.00"
    assert two.measured == "d=10, eta=0.01: -1.00"
    flat = slope_claims(cells.assign(first_hit=1000 * (1 - cells["mu"]) ** 0.2, stationary=0.01))
    assert not flat[0].passed and not flat[1].passed


def test_network_claims_rank_mu_09() -> None:
    mean = pd.DataFrame(
        {0: [0.3, 0.2, 0.1], 8: [0.3, 0.25, 0.9], 16: [0.3, 0.2, math.nan]},
        index=pd.Index([0.0, 0.5, 0.9], name="mu"),
    )
    best, worst = network_claims(mean)
    assert best.passed and best.measured == "tau=0: 0.9, tau=8: 0.5, tau=16: 0.5"
    assert (
        worst.passed
        and worst.measured
        == "tau=8: rank 3 of 3 (1 = least loss), tau=16: rank 3 of 3 (1 = least loss)"
    )
    mean.loc[0.9, 16] = 0.05  # mu = 0.9 best at tau = 16: the best mu rises and 0.9 is not worst
    best, worst = network_claims(mean)
    assert not best.passed and not worst.passed

"""``lowcomm reproduce localnewton``: the quick study's claims against a recomputation from its
saved histories, the claim functions on hand-made curves, and the invariants they rely on."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.algorithms.line_search import ArmijoGrid
from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce.localnewton import (
    ADAPTIVE,
    ADAPTIVE_GIANT,
    GIANT,
    GIANT3,
    QUICK,
    SCAN,
    STUDY,
    TARGETS,
    Setting,
    Sizes,
    curve,
    history,
    judge,
    plan,
    sci,
)
from lowcomm.experiments.reproduce.report import Request
from lowcomm.experiments.study import DATASETS_ENV, run_study
from lowcomm.problems import linear

IID = Setting("toy", 8, "1/n", "iid", 0)
SORTED = Setting("toy", 8, "1/n", "sorted", 0)
TINY = Sizes(
    data=("phishing",),
    workers=(4,),
    gammas=("1/n",),
    stress=(4, "1/n"),
    sync_rounds=8,
    local_steps=(1, 2),
    adaptive_l0=3,
    sgd_lrs=(1.0,),
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The QUICK study, run once, serially."""
    out = tmp_path_factory.mktemp("reproduce") / "localnewton"
    request = Request(out=out, quick=True, command="lowcomm reproduce localnewton --quick")
    run_study(STUDY, request)
    return out


def table_rows(report: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line[2:-2].split(" | ")] for line in lines[start + 2 : end]]


def first(history: pd.DataFrame, f_star: float, target: float, column: str) -> float:
    """``column`` at the first row whose (F - F*)/F* <= target, by a plain loop; NaN if none."""
    for _, row in history.iterrows():
        if (row["train_loss"] - f_star) / f_star <= target:
            return float(row[column])
    return math.nan


def hand_claims(out: Path, setting: str, f_star: float, budget: int) -> list[tuple[str, bool]]:
    """Per target: the rounds cell and the verdict; then the adaptive L text and verdict."""
    runs = {}
    for folder in (out / setting).iterdir():
        table = pd.read_parquet(folder / "table.parquet")
        runs[folder.name] = table[table["sync_rounds"] <= budget]
    newton = sorted(  # the plan's order (ties go to the first): L1, L2, ..., adaptive, +GIANT
        (k for k in runs if k.startswith("local-newton")),
        key=lambda k: (0, int(k[14:])) if k[13] == "L" else (1, len(k)),
    )
    found = []
    for t in TARGETS:
        giant = runs[GIANT]

        def bound(column: str, giant: pd.DataFrame = giant, t: float = t) -> float:
            cost = first(giant, f_star, t, column)
            return float(giant[column].iloc[-1]) if math.isnan(cost) else cost

        def best(costs: dict[str, float]) -> tuple[str, float]:
            reached = {k: v for k, v in costs.items() if not math.isnan(v)}
            if not reached:
                return "", math.nan
            low = min(reached.values())
            return next(k for k in newton if reached.get(k) == low), low

        variant, rounds = best({k: first(runs[k], f_star, t, "sync_rounds") for k in newton})
        ok = not math.isnan(rounds) and rounds <= 0.6 * bound("sync_rounds")
        for tau in (1.0, 3.0):
            timed = {}
            for k in [*newton, GIANT]:
                frame = runs[k].assign(at=runs[k]["sim_time"] + (tau - 1) * runs[k]["sync_rounds"])
                timed[k] = frame
            ln = best({k: first(timed[k], f_star, t, "at") for k in newton})[1]
            cost = first(timed[GIANT], f_star, t, "at")
            gb = float(timed[GIANT]["at"].iloc[-1]) if math.isnan(cost) else cost
            ok = ok and not math.isnan(ln) and ln <= 0.4 * gb
        name = variant.removeprefix("local-newton-").replace("-giant", "+GIANT")
        reached = first(giant, f_star, t, "sync_rounds")
        shown = f"{reached:g}" if not math.isnan(reached) else f">{bound('sync_rounds'):g}"
        cell = (
            f"- / {shown}"
            if not variant
            else (f"{rounds:g} / {shown} = {rounds / bound('sync_rounds'):.2f} ({name})")
        )
        found.append((cell, ok))
    steps = runs[ADAPTIVE]["local_steps"].tolist()
    found.append((f"L {steps[0]:g} -> {steps[-1]:g}", steps[-1] < steps[0]))
    return found


# --- the quick study ---------------------------------------------------------------------------


@pytest.mark.shared_data
def test_quick_claims_equal_a_recomputation_from_the_saved_histories(quick: Path) -> None:
    saved = json.loads((quick / "claims.json").read_text())
    report = (quick / "report.md").read_text()
    facts = saved["facts"]
    iid = [Setting(**s) for s in facts["settings"] if s["split"] == "iid"]
    stress = [Setting(**s) for s in facts["settings"] if s["split"] != "iid"]
    assert len(iid) == len(stress) == 1  # the quick size: one iid setting and its stress test
    for listed, settings, heading in (
        (saved["claims"], iid, "## Claims"),
        (saved["sensitivity"], stress, "## Sensitivity results"),
    ):
        rows = table_rows(report, heading)
        assert [row[-1] for row in rows] == [f"**{c['result']}**" for c in listed]
        expected = []
        for s in settings:
            gamma = s.gamma.replace("/", "")
            optimum = pd.read_parquet(
                quick / "optimum" / s.data / gamma / f"s{s.seed}" / "table.parquet"
            )
            expected += hand_claims(
                quick, s.slug, float(optimum["f_star"].iloc[0]), facts["sync_rounds"]
            )
        assert len(listed) == len(expected) == 4 * len(settings)
        for claim, row, (text, ok) in zip(listed, rows, expected, strict=True):
            assert text in claim["measured"] and text in row[4]
            assert claim["passed"] is ok
    assert "not judged" not in report  # every claim is judged at the quick size


@pytest.mark.shared_data
def test_quick_writes_every_run_the_tables_and_figures(quick: Path) -> None:
    facts = json.loads((quick / "claims.json").read_text())["facts"]
    for s in facts["settings"]:
        slug = Setting(**s).slug
        runs = {p.name for p in (quick / slug).iterdir()}
        assert {ADAPTIVE, ADAPTIVE_GIANT, GIANT, "gd"} <= runs
        assert len(runs) == 4 + len(QUICK.local_steps) * (1 + len(QUICK.sgd_lrs))
    for name in ("verdicts", "targets", "optima", "tuning"):
        assert (quick / f"{name}.csv").is_file()
    for name in ("subopt-rounds", "subopt-time", "adaptive-L"):
        assert (quick / f"{name}.png").stat().st_size > 0


# --- the claim functions on hand-made curves ---------------------------------------------------


def made(
    rel: list[float], steps: list[float] | None = None, per_round: float = 1.0
) -> pd.DataFrame:
    """A history whose (F - F*)/F* is ``rel`` (F* = 1), one sync round per row."""
    n = len(rel)
    frame = pd.DataFrame(
        {
            "round": np.arange(n),
            "sync_rounds": np.arange(n),
            "sim_time": np.arange(n) * per_round,
            "train_loss": 1.0 + np.asarray(rel),
        }
    )
    return frame.assign(local_steps=steps if steps is not None else np.nan)


def curves(newton: list[float], giant: list[float], steps: list[float]) -> dict[str, pd.DataFrame]:
    found = {
        "local-newton-L2": curve(made(newton), 1.0),
        ADAPTIVE: curve(made([1.0] * len(steps), steps), 1.0),
    }
    found[GIANT] = curve(made(giant), 1.0)
    found[GIANT3] = curve(made(giant), 1.0, rounds="round")
    return found


def test_claims_pass_and_fail_on_hand_made_curves() -> None:
    # LN reaches 1e-2 at round 1, 1e-3 at round 4; GIANT at rounds 6 and 6; LN never 1e-4
    newton = [1.0, 5e-3, 5e-3, 5e-3, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4]
    giant = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5e-5, 5e-5, 5e-5, 5e-5]
    row, claims = judge(IID, curves(newton, giant, [8, 8, 7, 7, 7, 7, 7, 7, 7, 7]))
    assert [c.passed for c in claims] == [True, False, False, True]
    assert (
        claims[1].claim
        == "LocalNewton beats GIANT to (F - F*)/F* <= 1e-3 on toy, 8 workers, gamma = 1/n, iid"
    )
    assert claims[1].criterion == "rounds <= 0.6x and time <= 0.4x GIANT's (tau = 1, 3 s)"
    assert (
        claims[3].claim
        == "Adaptive L decreases during training on toy, 8 workers, gamma = 1/n, iid"
    )
    assert "1 / 6 = 0.17 (L2)" in claims[0].measured
    assert "4 / 6 = 0.67 (L2)" in claims[1].measured  # 0.67 > 0.6: FAIL on rounds alone
    assert "- / 6" in claims[2].measured
    assert claims[3].measured == "L 8 -> 7 (first lower at sync round 2)"
    assert row["holds at"] == "1e-2" and row["judged as"] == "claim"
    # the crossover: the rounds criterion holds down to 5.6e-3 (LN reaches it at round 1)
    assert "crossover: rounds 5.6e-3, time 5.6e-3" in claims[0].measured
    _, never = judge(SORTED, curves(newton, giant, [8.0] * 10))
    assert not never[3].passed and never[3].measured.endswith("(never lower)")


def test_time_criterion_fails_where_rounds_hold_and_giant_never_reaching_is_a_bound() -> None:
    newton = [1.0, 1.0, 1.0, 5e-3]  # 3 rounds
    giant = [1.0] * 6 + [5e-3]  # 6 rounds: 0.5x rounds (PASS), but time...
    found = curves(newton, giant, [3.0, 2.0])
    found["local-newton-L2"] = curve(made(newton, per_round=4.0), 1.0)  # costly local rounds
    _, claims = judge(IID, found)
    assert "3 / 6 = 0.50" in claims[0].measured and not claims[0].passed
    # GIANT never reaches 1e-2 in 4 rounds: its 4 rounds are a lower bound on its cost
    _, bounded = judge(IID, curves([1.0, 5e-3], [1.0] * 5, [3.0, 2.0]))
    assert "1 / >4 = 0.25 (L2)" in bounded[0].measured and bounded[0].passed


def test_times_at_other_latencies_are_exact(tmp_path: Path) -> None:
    base = {"data": "synthetic-logistic:300,5", "model": "logistic", "workers": 3, "rounds": 9}
    base |= {"algorithm": "giant", "dtype": "float64", "seconds_per_grad": 1e-3}
    at = {tau: history(make_config(base | {"round_latency": tau})) for tau in (1.0, 3.0)}
    derived = curve(at[1.0], 1.0)
    np.testing.assert_allclose(derived["time_3"], at[3.0]["sim_time"], rtol=1e-12)
    three = curve(at[1.0], 1.0, rounds="round")  # the 3-round count pays every engine round
    third = make_config(base | {"round_latency": 3.0, "options": {"line_search": "third-round"}})
    np.testing.assert_allclose(three["time_3"], history(third)["sim_time"], rtol=1e-12)


def test_sci_and_the_scan() -> None:
    assert [sci(t) for t in TARGETS] == ["1e-2", "1e-3", "1e-4"]
    assert sci(SCAN[0]) == "1e-1" and sci(SCAN[-1]) == "1e-6" and len(SCAN) == 21


# --- the plan ----------------------------------------------------------------------------------


def test_plan_grid_keys_and_gamma(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))  # no shared data: synthetic
    made_plan = plan(Request(out=tmp_path), dataclasses.replace(TINY, workers=(4, 8)))
    assert "the study runs on synthetic" in made_plan.note
    keys = [job.key for job in made_plan.jobs]
    assert len(set(keys)) == len(keys) and keys[0][0] == "optimum"
    assert sum(key[0] == "optimum" for key in keys) == 1  # one F* per (data, gamma, seed)
    slugs = {key[0] for key in keys if key[0] != "optimum"}
    assert slugs == {
        "synthetic-w4-g1n-iid-s0",
        "synthetic-w8-g1n-iid-s0",
        "synthetic-w4-g1n-sorted-s0",
    }
    configs = {job.key: job.args[0] for job in made_plan.jobs}
    giant = configs[("synthetic-w4-g1n-iid-s0", GIANT)]
    assert giant.rounds == 12 and giant.l2 == pytest.approx(1 / 3000)  # 3/2 x 8; 1/n
    assert configs[("synthetic-w4-g1n-iid-s0", "local-newton-L2")].rounds == 8


# --- invariants of the speed-ups ---------------------------------------------------------------


def test_lazy_backtracking_equals_the_full_grid() -> None:
    gen = torch.Generator().manual_seed(0)
    grid = ArmijoGrid(1.0, 0.5, 30, 0.1)
    for scale in (1.0, 50.0, 1e-9):
        x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
        p = scale * torch.randn(6, 4, generator=gen, dtype=torch.float64)

        def loss(z: torch.Tensor) -> torch.Tensor:
            return (z**4).sum(dim=1) + torch.cos(z).sum(dim=1)

        g = 4 * x**3 - torch.sin(x)
        slope = (g * p).sum(dim=1)
        full = grid.choose_each(loss(x), grid.trial_values(loss, x, p), slope)
        assert torch.equal(grid.backtrack_each(loss, x, p, loss(x), slope), full)


def test_csr_products_equal_dense_ones() -> None:
    gen = torch.Generator().manual_seed(1)
    A = (torch.rand(3, 400, 30, generator=gen) < 0.05).to(torch.float64)
    x, c = torch.randn(3, 30, dtype=torch.float64), torch.rand(3, 400, dtype=torch.float64)
    assert linear.csr_rows(A) is not None and linear.csr_rows(A[None][0]) is not None
    assert linear.csr_rows(torch.randn(3, 400, 30, dtype=torch.float64)) is None  # dense
    assert linear.csr_rows(A[:, :100]) is None  # too few rows: a mini-batch
    dense = torch.einsum("wbd,wd->wb", A, x)
    torch.testing.assert_close(linear.matvec(A, x), dense, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(linear.rmatvec(A, c), torch.einsum("wbd,wb->wd", A, c))
    gram = torch.einsum("wbi,wb,wbj->wij", A, c, A)
    torch.testing.assert_close(linear.weighted_gram(A, c), gram, rtol=1e-14, atol=1e-12)

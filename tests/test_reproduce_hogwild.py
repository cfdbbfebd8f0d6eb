"""``lowcomm reproduce hogwild``: the quick study's claims recomputed from its saved runs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowcomm.experiments.reproduce import hogwild
from lowcomm.experiments.reproduce.hogwild import (
    LABELS,
    QUICK,
    STUDY,
    Case,
    bounded,
    data_sets,
    plan,
    ratios,
    slope_claim,
    step_rule,
    training,
)
from lowcomm.experiments.reproduce.report import Claim, Outcome, Request
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import datasets_root, run_study

CONSTANT, LINEAR = ("const:1", "const:10", "const:100"), ("linear:1,1", "linear:4,1")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The QUICK study, serially (``--jobs 1``)."""
    out = tmp_path_factory.mktemp("reproduce") / "hogwild"
    return run_study(STUDY, Request(out=out, quick=True, command="lowcomm reproduce hogwild --q"))


# --- independent recomputation from the saved files --------------------------------------------


def f_star(out: Path, case: str, l2: str) -> float:
    """F* as the plan computed it, from ``claims.json``."""
    return float(
        json.loads((out / "claims.json").read_text())["facts"]["f_star"][f"{case}/{l2}/seed0"]
    )


def numpy_optimum(X: np.ndarray, y: np.ndarray, l2: float) -> float:
    """min_w mean log(1 + exp(-s x.w)) + l2/2 ||w||^2 by plain Newton in NumPy."""
    s, w = 2.0 * y - 1.0, np.zeros(X.shape[1])
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(s * (X @ w)))
        grad = -(X.T @ (s * p)) / len(y) + l2 * w
        hessian = (X.T * (p * (1 - p))) @ X / len(y) + l2 * np.eye(X.shape[1])
        w = w - np.linalg.solve(hessian, grad)
    return float(np.mean(np.logaddexp(0.0, -s * (X @ w))) + 0.5 * l2 * w @ w)


def final(out: Path, key: tuple[str, ...], star: float) -> tuple[float, float]:
    """Final F - F* (F when ``star`` is NaN) and test accuracy of the run saved at ``key``."""
    last = pd.read_parquet(out.joinpath(*key, "seed0", "history.parquet")).iloc[-1]
    return last["train_loss"] - (0.0 if math.isnan(star) else star), last["test_metric"]


def hand_slope(out: Path, key: tuple[str, ...]) -> tuple[float, int]:
    """Slope of log T on log K from the ledger by hand, and T at the smallest budget."""
    ledger = pd.read_csv(out.joinpath(*key, "seed0", "ledger.csv"))
    totals: dict[int, int] = {}
    for r, g in zip(ledger["round"], ledger["grad_evals"], strict=True):
        totals[r] = totals.get(r, 0) + g
    rounds, cumulative = sorted(totals), np.cumsum([totals[r] for r in sorted(totals)])
    k = int(cumulative[-1])
    grid = sorted({round(k / 10 * 10 ** (j / 7)) for j in range(8)})
    needed = [rounds[int(np.argmax(cumulative >= b))] for b in grid]
    return float(np.polyfit(np.log(grid), np.log(needed), 1)[0]), needed[0]


def hand_ratios(out: Path, group: str, split: str, l2: str, tops, bases) -> list[float]:
    case = "mlp" if group == "nonconvex" else "synthetic"
    star = math.nan if group == "nonconvex" else f_star(out, case, l2)
    gaps = {x: final(out, (group, case, split, x, "sync"), star) for x in (*tops, *bases)}
    best = min(gaps[b][0] for b in bases)
    return [gaps[t][0] / best for t in tops]


def listed(measured: str) -> list[float]:
    return [float(v) for v in measured.split("all: ")[1].split(", ")]


def test_claims_recomputed_from_histories_and_ledgers(quick: Outcome) -> None:
    out, claims = quick.out, quick.claims
    for i, schedules in ((0, LINEAR), (1, CONSTANT)):
        found = {x: [] for x in schedules}
        for history in out.glob("*/*/*/*/sync/seed0/history.parquet"):
            group, _, _, schedule, *_ = history.relative_to(out).parts
            if group in ("strong", "convex", "nonconvex") and schedule in schedules:
                found[schedule].append(hand_slope(out, history.relative_to(out).parts[:5]))
        if i == 1:  # s = 100 at K = 3,000: its 500 gradients per round pass K/10 in round 1
            assert {t for _, t in found["const:100"]} == {1} and claims[1].passed is None
            assert "s = 100" in claims[1].measured
            continue
        slopes = {x: [v for v, _ in runs] for x, runs in found.items()}
        shown = "; ".join(f"{LABELS[x]}: {min(v):.3f}-{max(v):.3f}" for x, v in slopes.items())
        assert claims[0].measured == f"min-max over {sum(map(len, slopes.values()))} runs: {shown}"
        assert claims[0].passed == all(0.45 <= v <= 0.55 for x in slopes.values() for v in x)
    expected = {
        2: [
            *hand_ratios(out, "strong", "iid", "0.1", LINEAR, CONSTANT),
            *hand_ratios(out, "strong", "sorted", "0.1", LINEAR, CONSTANT),
        ],
        3: hand_ratios(out, "convex", "sorted", "0", LINEAR, CONSTANT),
        4: hand_ratios(out, "nonconvex", "iid", "", LINEAR[:1], CONSTANT[:2])
        + hand_ratios(out, "nonconvex", "sorted", "", LINEAR[:1], CONSTANT[:2]),
        7: hand_ratios(out, "strong", "sorted", "0.1", ("poly:2",), LINEAR),
    }
    for i, values in expected.items():
        np.testing.assert_allclose(listed(claims[i].measured), values, atol=0.0051)
        bound = (lambda v: v >= 1.5) if i == 7 else (lambda v: v <= 1.5)
        assert claims[i].passed == all(bound(v) for v in values)
    star = f_star(out, "synthetic", "0.1")
    sync = final(out, ("strong", "synthetic", "sorted", "linear:1,1", "sync"), star)[0]
    caps = [
        final(out, ("async", "synthetic", "sorted", "linear:1,1", c), star)[0] / sync for c in "012"
    ]
    np.testing.assert_allclose(listed(claims[6].measured), caps, atol=0.0051)
    assert claims[6].passed == (max(caps) <= 2.0)
    accuracy = []
    for split in ("iid", "sorted"):
        acc = {
            x: final(out, ("nonconvex", "mlp", split, x, "sync"), math.nan)[1]
            for x in ("const:1", "const:10", "linear:1,1")
        }
        accuracy.append(100 * (max(acc["const:1"], acc["const:10"]) - acc["linear:1,1"]))
    np.testing.assert_allclose(listed(claims[5].measured), accuracy, atol=0.0051)
    delay = hand_ratios(out, "strong-delay", "sorted", "0.1", LINEAR, CONSTANT)
    np.testing.assert_allclose(listed(quick.sensitivity[0].measured), delay, atol=0.0051)
    quadratic = hand_ratios(out, "strong-delay", "sorted", "0.1", ("poly:2",), LINEAR)
    np.testing.assert_allclose(listed(quick.sensitivity[1].measured), quadratic, atol=0.0051)
    assert quick.sensitivity[1].passed == (quadratic[0] >= 1.5)


def test_optima_agree_with_an_independent_newton(quick: Outcome) -> None:
    train = prepare(training(QUICK.synthetic, 0)).data.train
    X, y = np.asarray(train.X, dtype=float), np.asarray(train.y)
    for l2, used in (("0.1", 0.1), ("0", 1e-10)):
        assert f_star(quick.out, "synthetic", l2) == pytest.approx(
            numpy_optimum(X, y, used), abs=1e-9
        )


def test_report_and_claims_json_agree(quick: Outcome) -> None:
    text = quick.report.read_text()
    saved = json.loads((quick.out / "claims.json").read_text())
    assert [c["result"] for c in saved["claims"]] == [c.verdict for c in quick.claims]
    assert [c["measured"] for c in saved["sensitivity"]] == [c.measured for c in quick.sensitivity]
    claims_table = text.split("## Claims", 1)[1].split("## Sensitivity", 1)[0]
    rows = [
        line for line in claims_table.splitlines() if line.startswith("| ") and line[2].isdigit()
    ]
    assert len(rows) == 8
    for row, claim in zip(rows, quick.claims, strict=True):
        assert claim.measured in row and row.endswith(f"**{claim.verdict}** |")
    assert "$" not in text.split("## Setup", 1)[1]  # every placeholder filled
    for name in ("strong", "strong-delay", "convex", "nonconvex", "async"):
        assert (quick.out / f"{name}.png").stat().st_size > 0


def test_delay_aware_steps_are_the_classic_offset_times_the_first_round(quick: Outcome) -> None:
    def step(group: str, schedule: str) -> list[float]:
        meta = json.loads(
            quick.out.joinpath(
                group, "synthetic", "sorted", schedule, "sync", "seed0", "run.json"
            ).read_text()
        )
        return [float(v) for v in meta["config"]["options"]["step"].split(":")[1].split(",")]

    for schedule, first in (("const:1", 1), ("const:100", 100), ("linear:4,1", 1), ("poly:2", 1)):
        classic, delay = step("strong", schedule), step("strong-delay", schedule)
        assert delay[:2] == classic[:2] == [2.0, 0.1]
        assert delay[2] == pytest.approx(classic[2] * 5 * first, rel=1e-5)


# --- the claim functions on hand-made numbers --------------------------------------------------


def ratio_rows(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": "strong",
            "case": "x",
            "split": "iid",
            "schedule": "linear:1,1",
            "ratio": values,
            "accuracy_gap": 0.0,
            "what": [f"row {i}" for i in range(len(values))],
        }
    )


def test_bounded_claims_pass_and_fail() -> None:
    ok = bounded("strong", ratio_rows([0.8, 1.5]), "ratio", -math.inf, 1.5)
    bad = bounded("strong", ratio_rows([0.8, 1.51]), "ratio", -math.inf, 1.5)
    assert ok.passed and not bad.passed
    assert bad.measured == "worst 1.51x (row 1); all: 0.80, 1.51"
    low = bounded("quadratic", ratio_rows([3.0, 1.4]), "ratio", 1.5, math.inf)
    assert not low.passed and low.measured.startswith("worst 1.40x (row 1)")
    assert bounded("quadratic", ratio_rows([3.0, 1.6]), "ratio", 1.5, math.inf).passed
    assert bounded("strong", ratio_rows([]), "ratio", -math.inf, 1.5).passed is False


def test_slope_claim_pass_fail_and_not_judged() -> None:
    def table(slopes: list[float], first: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {"group": "strong", "schedule": "linear:1,1", "slope": slopes, "first_rounds": first}
        )

    def claim(rows: pd.DataFrame) -> Claim:
        return slope_claim(rows, "linear", LINEAR, 0.45, 0.55)

    assert claim(table([0.46, 0.54], [3, 3])).passed
    assert claim(table([0.46, 0.56], [3, 3])).passed is False
    unjudged = claim(table([0.5, 0.5], [1, 3]))
    assert unjudged.passed is None
    assert unjudged.measured == (
        "not judged at quick size: runs of s_i = i + 1 reach K/10 in their first round"
    )
    assert unjudged.criterion == "every run's fitted slope of log T vs log K in [0.45, 0.55]"
    delayed = table([0.2], [3]).assign(group="strong-delay")  # a sensitivity run is not judged
    assert claim(pd.concat([table([0.5], [3]), delayed])).passed


def test_ratios_take_the_best_base_per_group_case_and_split() -> None:
    means = pd.DataFrame(
        {
            "group": "strong",
            "case": "x",
            "split": ["iid"] * 3 + ["sorted"] * 3,
            "cap": "sync",
            "schedule": ["const:1", "const:10", "linear:1,1"] * 2,
            "gap": [2.0, 1.0, 3.0, 4.0, 8.0, 2.0],
            "test_metric": [0.8, 0.9, 0.85, 0.7, 0.6, 0.75],
        }
    )
    found = ratios(means, ("linear:1,1",), ("const:1", "const:10"))
    assert found["ratio"].tolist() == [3.0, 0.5]
    assert found["versus"].tolist() == ["const:10", "const:1"]
    np.testing.assert_allclose(found["accuracy_gap"], [5.0, -5.0])


# --- plan, steps and grid ----------------------------------------------------------------------


def test_grid_and_step_rules() -> None:
    strong = Case("strong", "x", "d", 0.1, 1000)
    assert ("iid", "poly:2") not in strong.grid() and ("sorted", "poly:2") in strong.grid()
    delay = replace(strong, group="strong-delay")
    assert {split for split, _ in delay.grid()} == {"sorted"}
    assert step_rule(strong, "linear:1,1", 2.0, QUICK) == "hogwild:2,0.1,160"
    assert step_rule(delay, "const:10", 2.0, QUICK) == "hogwild:2,0.1,8000"  # 160 x 5 x 10
    convex = replace(strong, group="convex", l2=0.0)
    assert step_rule(convex, "const:1", 4.0, QUICK) == "inv:0.25,100"


def test_quick_plan_keys_and_missing_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quick = plan(Request(out=tmp_path, quick=True))
    keys = [job.key for job in quick.jobs]
    assert len(set(keys)) == len(keys) and not quick.note
    optima = [job for job in quick.jobs if job.call is not None]  # one F* per data set and l2
    assert [job.key for job in optima] == [
        ("optima", "synthetic", "0.1", "seed0"),
        ("optima", "synthetic", "0", "seed0"),
    ]
    assert [job.args[0][0].l2 for job in optima] == [0.1, 1e-10]
    monkeypatch.setenv("LOWCOMM_DATASETS", str(tmp_path))
    note = f"phishing, a9a not found in {tmp_path}: the study runs on synthetic data only."
    assert data_sets(hogwild.FULL, None) == ({"synthetic": hogwild.FULL.synthetic}, note)
    assert data_sets(hogwild.FULL, "synthetic-logistic:100,3")[0] == {
        "data": "synthetic-logistic:100,3"
    }


@pytest.mark.shared_data
def test_full_plan_on_the_shared_data(tmp_path: Path) -> None:
    if not (datasets_root() / "a9a" / "a9a.gz").is_file():
        pytest.skip(f"{datasets_root()} lacks a9a")
    full = plan(Request(out=tmp_path, seeds=(0,)))
    groups = pd.Series([job.key[0] for job in full.jobs]).value_counts().to_dict()
    # strong: 3 data x (5 iid + 6 sorted); delay: 3 x 6; convex 2 x 5; MLP 6; async 4;
    # F*: synthetic, phishing, a9a at l2 = 0.04, two at l2 = 0
    assert groups == {
        "strong": 33,
        "strong-delay": 18,
        "convex": 10,
        "nonconvex": 6,
        "async": 4,
        "optima": 5,
    }
    assert set(LABELS) == {job.key[3] for job in full.jobs if job.config is not None}

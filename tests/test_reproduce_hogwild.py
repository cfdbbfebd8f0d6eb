"""``lowcomm reproduce hogwild``: the report's numbers against recomputation from saved runs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.schedules import SampleSizes, delay_aware_offset
from lowcomm.experiments.measures import loglog_slope
from lowcomm.experiments.reproduce import REPRODUCTIONS
from lowcomm.experiments.reproduce.hogwild import (
    LINEAR_SLOPE,
    MAX_LINEAR_RATIO,
    Case,
    Study,
    budgets,
    delay_aware,
    jobs,
    quick_study,
    rewrite_report,
    rounds_for_budgets,
    run_study,
    study_for,
)
from lowcomm.experiments.reproduce.report import Outcome, Request

STRONG = Case(
    "tiny",
    "synthetic-logistic:400,5",
    "strong",
    300,
    l2=0.1,
    splits=("sorted",),
    schedules=("const:1", "const:10", "linear:1,1"),
)
TINY = Study(
    (STRONG, *delay_aware([STRONG]), replace(STRONG, name="tiny-convex", kind="convex", l2=0.0)),
    replace(STRONG, name="tiny-async", schedules=("linear:1,1",)),
    seeds=(0, 1),
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    out = tmp_path_factory.mktemp("reproduce") / "hogwild"
    return run_study(TINY, out, "lowcomm reproduce hogwild --test")


def history(out: Path, case: str, schedule: str, seed: int) -> pd.DataFrame:
    return pd.read_csv(out / case / "sorted" / schedule / f"seed{seed}" / "history.csv")


def test_writes_report_figures_and_runs(tiny: Outcome) -> None:
    text = tiny.report.read_text()
    assert text.startswith("# Reproduction: Hogwild!")
    assert "lowcomm reproduce hogwild --test" in text
    for name in ("strong", "convex", "rounds-vs-K", "async"):
        assert (tiny.out / f"{name}.png").stat().st_size > 0
        assert f"]({name}.png)" in text
    listed = json.loads((tiny.out / "claims.json").read_text())["claims"]
    assert [c["result"] for c in listed] == [c.verdict for c in tiny.claims]
    for claim in tiny.claims:
        assert f"**{claim.verdict}**" in text
    caps = {p.name for p in (tiny.out / "async" / "linear:1,1").iterdir()}
    assert caps == {"sync", "0", "1", "2", "none"}


def test_final_gaps_and_ratios_recomputed_from_histories(tiny: Outcome) -> None:
    out = tiny.out
    optima = json.loads((out / "optima.json").read_text())
    runs = pd.read_csv(out / "runs.csv")
    means = {}
    for case in ("tiny", "tiny-convex"):
        for schedule in STRONG.schedules:
            gaps = []
            for seed in TINY.seeds:
                h = history(out, case, schedule, seed)
                assert h["grad_evals"].iloc[-1] >= STRONG.budget
                gap = h["train_loss"].iloc[-1] - optima[f"{case}/seed{seed}"]["f_star"]
                row = runs.loc[
                    (runs["case"] == case) & (runs["schedule"] == schedule) & (runs["seed"] == seed)
                ]
                assert float(row["gap"].iloc[0]) == pytest.approx(gap, rel=1e-12)
                gaps.append(gap)
            means[case, schedule] = float(np.mean(gaps))
    ratios = pd.read_csv(out / "ratios.csv")
    for case, claim in (("tiny", tiny.claims[2]), ("tiny-convex", tiny.claims[3])):
        best = min(means[case, "const:1"], means[case, "const:10"])
        expected = means[case, "linear:1,1"] / best
        mine = ratios.loc[ratios["case"] == case, "ratio"].iloc[0]
        assert mine == pytest.approx(expected, rel=1e-12)
        assert f"worst {expected:.2f}x" in claim.measured
        assert claim.passed == (expected <= MAX_LINEAR_RATIO)


def test_slopes_and_rounds_from_ledger(tiny: Outcome) -> None:
    slopes = pd.read_csv(tiny.out / "slopes.csv")
    for schedule in STRONG.schedules:
        folder = tiny.out / "tiny" / "sorted" / schedule / "seed0"
        ledger = pd.read_csv(folder / "ledger.csv")
        k = int(pd.read_csv(folder / "history.csv")["grad_evals"].iloc[-1])
        per_round = ledger.groupby("round")["grad_evals"].sum()
        cumulative = per_round.cumsum()
        grid = budgets(k)
        by_hand = [float(cumulative.index[cumulative.to_numpy() >= b][0]) for b in grid]
        row = slopes.loc[
            (slopes["case"] == "tiny") & (slopes["schedule"] == schedule) & (slopes["seed"] == 0)
        ].iloc[0]
        assert json.loads(row["rounds_at_budgets"]) == by_hand
        assert row["slope"] == pytest.approx(loglog_slope(grid, by_hand), rel=1e-12)
    rounds = pd.read_csv(tiny.out / "runs.csv")
    const1 = rounds.loc[(rounds["case"] == "tiny") & (rounds["schedule"] == "const:1")]
    assert (const1["rounds"] == STRONG.budget // 5).all()


def test_async_ratio_recomputed(tiny: Outcome) -> None:
    optima = json.loads((tiny.out / "optima.json").read_text())
    gaps: dict[str, float] = {}
    for cap in ("sync", "0", "1", "2", "none"):
        values = []
        for seed in TINY.seeds:
            folder = tiny.out / "async" / "linear:1,1" / cap / f"seed{seed}"
            h = pd.read_csv(folder / "history.csv")
            values.append(h["train_loss"].iloc[-1] - optima[f"tiny-async/seed{seed}"]["f_star"])
        gaps[cap] = float(np.mean(values))
    table = pd.read_csv(tiny.out / "async.csv", dtype={"cap": str})
    for cap in ("0", "1", "2", "none"):
        mine = float(table.loc[table["cap"] == cap, "ratio"].iloc[0])
        assert mine == pytest.approx(gaps[cap] / gaps["sync"], rel=1e-12)
        assert f"cap {cap}: {mine:.2f}x" in tiny.claims[6].measured


def test_slope_fit_on_hand_made_data() -> None:
    k = np.array([100.0, 400.0, 1600.0, 6400.0])
    assert loglog_slope(k, 3 * np.sqrt(k)) == pytest.approx(0.5)
    assert loglog_slope(k, k / 50) == pytest.approx(1.0)
    assert LINEAR_SLOPE[0] <= loglog_slope(k, 2 * k**0.5 + 1) <= LINEAR_SLOPE[1] + 0.05


def test_rounds_for_budgets_on_a_hand_made_ledger() -> None:
    # two workers; round r gives each r gradients: cumulative 2, 6, 12, 20
    ledger = pd.DataFrame(
        {"round": [1, 1, 2, 2, 3, 3, 4, 4], "worker": [0, 1] * 4}
        | {"grad_evals": [1, 1, 2, 2, 3, 3, 4, 4]}
    )
    got = rounds_for_budgets(ledger, np.array([1, 2, 3, 12, 13, 21]))
    np.testing.assert_array_equal(got[:5], [1, 1, 2, 3, 4])
    assert math.isnan(got[5])


def test_study_for_requests(tmp_path: Path) -> None:
    quick = study_for(Request(out=tmp_path, quick=True))
    assert quick == quick_study((0,))
    assert all(c.data.startswith("synthetic") for c in quick.cases)
    full = study_for(Request(out=tmp_path, seeds=(3,)))
    assert full.seeds == (3,)
    assert {c.kind for c in full.cases} == {"strong", "convex", "nonconvex"}
    assert "hogwild" in REPRODUCTIONS


def test_rewrite_report_from_saved_runs_gives_the_same_claims(tiny: Outcome) -> None:
    again = rewrite_report(TINY, tiny.out, "lowcomm reproduce hogwild --test")
    assert again.claims == tiny.claims


def test_rounds_to_target_table_has_one_column_per_level(tiny: Outcome) -> None:
    targets = pd.read_csv(tiny.out / "targets.csv")
    h = history(tiny.out, "tiny", "const:10", 1)
    f_star = json.loads((tiny.out / "optima.json").read_text())["tiny/seed1"]["f_star"]
    gaps = h["train_loss"] - f_star
    for level in range(1, 7):
        target = (gaps.iloc[0]) * 10.0 ** (-level / 2)
        hit = h.loc[gaps <= target, "round"]
        row = targets.loc[
            (targets["case"] == "tiny")
            & (targets["schedule"] == "const:10")
            & (targets["seed"] == 1)
            & (targets["level"] == level)
        ].iloc[0]
        assert row["target"] == pytest.approx(target, rel=1e-12)
        expected = float(hit.iloc[0]) if len(hit) else math.nan
        assert row["rounds"] == pytest.approx(expected, nan_ok=True)
    text = tiny.report.read_text().split("### Rounds to target", 1)[1]
    first = next(line for line in text.splitlines() if line.startswith("| sorted"))
    assert first.count("|") == 2 + 6 + 1


def test_delay_aware_cases_are_planned_beside_and_not_judged(tiny: Outcome) -> None:
    planned = {(case.name, case.offset, schedule) for case, _, schedule, _ in jobs(TINY)}
    for schedule in STRONG.schedules:
        assert {("tiny", "classic", schedule), ("tiny-delay", "delay-aware", schedule)} <= planned
    for study in (quick_study((0,)), study_for(Request(out=Path("x"), seeds=(0,)))):
        strong = [c for c in study.cases if c.kind == "strong" and c.offset == "classic"]
        names = {c.name for c in study.cases if c.offset == "delay-aware"}
        assert names == {f"{c.name}-delay" for c in strong}
    optima = json.loads((tiny.out / "optima.json").read_text())
    for seed in TINY.seeds:
        classic, delay = optima[f"tiny/seed{seed}"], optima[f"tiny-delay/seed{seed}"]
        E = 4 * classic["L"] * 2 / STRONG.l2
        for schedule in STRONG.schedules:
            assert classic["step"][schedule] == f"hogwild:2,0.1,{E:.6g}"
            rounds = HogwildIB(HogwildIBConfig(schedule)).rounds_for_budget(5, STRONG.budget)
            offset = delay_aware_offset(E, SampleSizes(schedule), 5, rounds)
            assert delay["step"][schedule] == f"hogwild:2,0.1,{offset:.6g}"
            assert offset > E
    ratios = pd.read_csv(tiny.out / "ratios.csv")
    delay_ratio = float(ratios.loc[ratios["case"] == "tiny-delay", "ratio"].iloc[0])
    assert "tiny-delay" not in " ".join(c.measured for c in tiny.claims)
    text = tiny.report.read_text()
    assert "## Sensitivity: the delay-aware step offset (not judged)" in text
    assert f"worst {delay_ratio:.2f}x (tiny-delay" in text

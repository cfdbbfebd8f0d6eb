"""``lowcomm reproduce localnewton``: its measurements, checked by hand against the saved runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from lowcomm.cli import app
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce import REPRODUCTIONS, make_request
from lowcomm.experiments.reproduce.localnewton import (
    ADAPTIVE,
    ADAPTIVE_GIANT,
    GIANT,
    GIANT3,
    SCAN,
    SYNTHETIC,
    TARGETS,
    Setting,
    Study,
    claims_of,
    compare,
    crossover,
    curve,
    judge,
    measure,
    rounds_holds,
    run_study,
    sci,
    study_for,
    time_holds,
    within,
)
from lowcomm.experiments.reproduce.report import Outcome, Request
from lowcomm.experiments.runner import execute, prepare

TINY = Study(
    ("synthetic-logistic:400,6",),
    workers=(4,),
    gammas=("1/n",),
    splits=("iid", "sorted"),
    sync_rounds=8,
    local_steps=(1, 2),
    adaptive_l0=3,
    sgd_lrs=(0.5,),
)
LABELS = {m.key: m.label for m in TINY.methods()} | {GIANT3: "GIANT (3 rounds/iteration)"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The study at a tiny size: 2 settings, 8 sync rounds."""
    out = tmp_path_factory.mktemp("reproduce") / "localnewton"
    return run_study(TINY, out, "lowcomm reproduce localnewton --test")


def saved(out: Path, slug: str, key: str) -> pd.DataFrame:
    return pd.read_csv(out / slug / key / "history.csv")


def f_star(out: Path, slug: str) -> float:
    return float(json.loads((out / slug / "setting.json").read_text())["f_star"])


def hand_reach(history: pd.DataFrame, fstar: float, target: float, column: str) -> float:
    """``column`` at the first saved row whose (F - F*) / F* <= target, by a plain loop."""
    for _, row in history.iterrows():
        if (row["train_loss"] - fstar) / fstar <= target:
            return float(row[column])
    return math.nan


def table_rows(report: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line[2:-2].split(" | ")] for line in lines[start + 2 : end]]


def cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


# --- end to end on the tiny study ---------------------------------------------------------------


def test_writes_report_figures_claims_and_every_run(tiny: Outcome) -> None:
    out, report = tiny.out, tiny.report.read_text()
    assert tiny.report == out / "report.md"
    assert report.startswith("# Reproduction: LocalNewton")
    assert "lowcomm reproduce localnewton --test" in report
    for name in ("subopt-rounds-w4-g1n", "subopt-time-w4-g1n", "adaptive-L"):
        assert (out / f"{name}.png").stat().st_size > 0
        assert f"]({name}.png)" in report
    for setting in TINY.settings():
        assert (out / setting.slug / "setting.json").is_file()
        for method in TINY.methods():
            files = {p.name for p in (out / setting.slug / method.key).iterdir()}
            assert files == {"history.csv", "history.parquet", "run.json", "ledger.csv"}
            rounds = saved(out, setting.slug, method.key)["sync_rounds"]
            # a run that switches to GIANT may overshoot the budget; it is measured up to it
            assert rounds.iloc[-1] == 8 if method.key != ADAPTIVE_GIANT else rounds.iloc[-1] >= 8
            assert within(saved(out, setting.slug, method.key), TINY)["sync_rounds"].max() == 8
    for name in ("claims.json", "targets.csv", "tuning.csv", "study.json"):
        assert (out / name).is_file()


def test_claims_are_the_iid_settings_per_target_and_the_adaptive_rule(tiny: Outcome) -> None:
    report = tiny.report.read_text()
    rows = table_rows(report, "## Claims table")
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]  # 3 targets + adaptive, iid only
    assert [row[-1] for row in rows] == [f"**{c.verdict}**" for c in tiny.claims]
    assert all("iid" in c.claim and "sorted" not in c.claim for c in tiny.claims)
    listed = json.loads((tiny.out / "claims.json").read_text())
    assert [c["result"] for c in listed["claims"]] == [c.verdict for c in tiny.claims]
    iid, sorted_ = listed["verdicts"]
    assert (iid["judged"], sorted_["judged"]) == ("claim", "sensitivity")
    assert iid["holds"] == [c.passed for c in tiny.claims[:3]]
    assert iid["adaptive_decreased"] == tiny.claims[3].passed
    assert listed["summary"].startswith("iid split (the paper's setting, the verdict): ")
    assert "Other splits (sensitivity, not in the verdict)" in listed["summary"]
    assert listed["summary"] in report


def test_rounds_and_time_to_target_equal_a_hand_computation(tiny: Outcome) -> None:
    out = tiny.out
    rows = table_rows(tiny.report.read_text(), "### synthetic")
    keys = [*TINY.newton_keys(), GIANT, GIANT3]
    by_label = {(row[0], row[1]): row for row in rows}
    for setting in TINY.settings():
        fstar = f_star(out, setting.slug)
        short = setting.label().split(", ", 1)[1]
        for key in keys:
            history = saved(out, setting.slug, GIANT if key == GIANT3 else key)
            column = "round" if key == GIANT3 else "sync_rounds"
            # tau = 1 s in the run; GIANT's 3-round count pays it on line-search rounds too
            extra = history[column] - history["sync_rounds"]
            history = history.assign(time=history["sim_time"] + extra)
            rounds = [hand_reach(history, fstar, t, column) for t in TARGETS]
            times = [hand_reach(history, fstar, t, "time") for t in TARGETS]
            assert by_label[short, LABELS[key]][2:8] == [cell(v) for v in rounds + times]


def test_claim_cells_equal_a_hand_computation(tiny: Outcome) -> None:
    out = tiny.out
    report = tiny.report.read_text()
    rows = table_rows(report, "## Claims per setting") + table_rows(report, "## Sensitivity")
    for setting, row in zip(TINY.settings(), rows, strict=True):
        fstar = f_star(out, setting.slug)
        giant = saved(out, setting.slug, GIANT)
        for i, target in enumerate(TARGETS):
            costs = [
                hand_reach(saved(out, setting.slug, k), fstar, target, "sync_rounds")
                for k in TINY.newton_keys()
            ]
            best = min((c for c in costs if not math.isnan(c)), default=math.nan)
            theirs = hand_reach(giant, fstar, target, "sync_rounds")
            shown = row[1 + 2 * i].split(" (")[0]
            assert shown.startswith(f"{cell(best)} / ")
            denominator = theirs if not math.isnan(theirs) else giant["sync_rounds"].iloc[-1]
            expected = "-" if math.isnan(theirs) else cell(theirs)
            assert shown.split(" / ")[1].startswith(expected if expected != "-" else ">")
            if not math.isnan(best):
                assert shown.endswith(f"= {best / denominator:.2f}")


def test_adaptive_check_reads_the_saved_local_steps_column(tiny: Outcome, tmp_path: Path) -> None:
    iid = TINY.settings()[0]
    history = saved(tiny.out, iid.slug, ADAPTIVE)
    steps = history["local_steps"]
    assert tiny.claims[3].passed == bool(steps.iloc[-1] < steps.iloc[0])
    copy = tmp_path / "copy"
    shutil.copytree(tiny.out, copy)
    folder = copy / iid.slug / ADAPTIVE
    history = pd.read_parquet(folder / "history.parquet")
    history["local_steps"] = float(TINY.adaptive_l0)  # the rule never fired
    history.to_parquet(folder / "history.parquet", index=False)
    found = measure(TINY, copy)
    verdict = found.results[0].verdict
    assert verdict.steps == (3.0, 3.0) and verdict.first_decrease is None
    assert not found.claims[3].passed
    assert found.claims[3].measured == "L 3 -> 3 (never lower)"


def test_time_at_other_latencies_and_the_three_round_count_are_exact() -> None:
    base = {"data": "synthetic-logistic:300,5", "workers": 3, "dtype": "float64", "rounds": 6}

    def run(algorithm: str, options: dict[str, str], latency: float) -> pd.DataFrame:
        values = {"algorithm": algorithm, "options": options, "round_latency": latency}
        result = execute(prepare(make_config(base | values | {"seconds_per_grad": 1e-4})))
        assert result is not None
        return result.history

    giant = run("giant", {}, 1.0)
    third = run("giant", {"line_search": "third-round"}, 3.0)
    counted = curve(giant, 0.5, "round")
    np.testing.assert_array_equal(counted["rounds"], third["sync_rounds"])
    np.testing.assert_allclose(counted["time_3"], third["sim_time"])
    np.testing.assert_allclose(curve(giant, 0.5)["time_0.1"], run("giant", {}, 0.1)["sim_time"])
    newton = curve(run("local-newton", {}, 1.0), 0.5)
    np.testing.assert_allclose(newton["time_3"], run("local-newton", {}, 3.0)["sim_time"])


# --- the pieces ---------------------------------------------------------------------------------


def frame(rounds: list[float], rel: list[float]) -> pd.DataFrame:
    """A hand-made curve whose time at latency tau is tau x rounds (free compute)."""
    r = np.asarray(rounds, dtype=float)
    times = {f"time_{tau:g}": tau * r for tau in (0.1, 1.0, 3.0)}
    return pd.DataFrame({"rounds": r, "rel": rel} | times)


def test_crossover_on_hand_made_histories() -> None:
    giant = frame([0, 2, 4, 6, 8, 10, 12], [1, 0.05, 0.02, 5e-3, 5e-4, 5e-5, 5e-6])
    stalls = frame([0, 1, 2, 3], [1, 4e-4, 3e-4, 3e-4])  # stalls at 3e-4
    slow = frame([0, 1, 2, 3], [1, 0.5, 0.2, 0.1])
    curves = {"a": stalls, "b": slow, GIANT: giant}
    # rounds: 1 / 2 = 0.5 <= 0.6 down to 3e-4; time: 1 / 2 fails at loose targets
    assert crossover(rounds_holds(curves, ["a", "b"])) == pytest.approx(10 ** (-14 / 4))
    assert crossover(time_holds(curves, ["a", "b"])) == pytest.approx(10 ** (-14 / 4))
    assert not time_holds(curves, ["a", "b"])(SCAN[0])
    assert crossover(rounds_holds(curves, ["b"])) is None
    best = compare(curves, ["a", "b"], GIANT, 1e-3, "rounds", 0.6)
    assert (best.variant, best.local_newton, best.giant, best.ratio) == ("a", 1.0, 8.0, 0.125)
    assert best.cell() == "1 / 8 = 0.12"


def test_comparison_when_giant_never_reaches_uses_its_last_row_as_a_bound() -> None:
    giant = frame([0, 2, 4, 6, 8, 10], [1, 0.5, 0.1, 0.05, 0.02, 0.011])
    fast = frame([0, 1, 2, 3, 4, 5, 6, 7], [1, 0.5, 0.1, 1e-2, 1e-3, 1e-4, 1e-4, 1e-4])
    curves = {"a": fast, GIANT: giant}
    bound = compare(curves, ["a"], GIANT, 1e-3, "rounds", 0.6)
    assert math.isnan(bound.giant) and bound.giant_last == 10
    assert bound.holds and bound.cell() == "4 / >10 = 0.40"
    late = compare(curves, ["a"], GIANT, 1e-4, "rounds", 0.4)
    assert not late.holds  # 5 > 0.4 x 10: GIANT's true cost is unknown
    nobody = compare(curves, ["a"], GIANT, 1e-6, "rounds", 0.6)
    assert (nobody.variant, nobody.holds, nobody.cell()) == ("", False, "- / >10")


def adaptive_history(steps: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"sync_rounds": np.arange(len(steps), dtype=float), "local_steps": steps})


def test_verdict_per_split_and_per_target_on_hand_made_curves() -> None:
    giant = frame([0, 2, 4, 6, 8, 10, 12], [1, 0.05, 5e-3, 2e-3, 5e-4, 5e-5, 5e-6])
    # time = rounds here, so a target holds when LN / GIANT <= 0.4: 1e-2 in 1 round (GIANT 4:
    # 0.25), 1e-3 in 3 (GIANT 8: 0.375), 1e-4 in 6 (GIANT 10: 0.6, rounds only); stalls at 9e-5
    newton = frame([0, 1, 2, 3, 4, 5, 6], [1, 8e-3, 2e-3, 9e-4, 3e-4, 2e-4, 9e-5])
    curves = {"a": newton, GIANT: giant, GIANT3: giant}
    iid = Setting("synthetic-logistic:40,2", 4, "1/n", "iid", 0)
    label_sorted = Setting("synthetic-logistic:40,2", 4, "1/n", "sorted", 0)
    falling = adaptive_history([4, 4, 3, 3, 2, 2, 2])
    verdict = judge(iid, curves, falling, ["a"])
    assert verdict.holds == (True, True, False)
    assert [c.ratio for c in verdict.rounds] == [0.25, 0.375, 0.6]
    assert (verdict.steps, verdict.first_decrease) == ((4.0, 2.0), 2.0)
    assert verdict.crossover_rounds == pytest.approx(10**-4)  # 6 / 10 = 0.6 still <= 0.6
    assert verdict.crossover_time == pytest.approx(10**-3.5)  # 4 / 10 at 3.2e-4
    claims = claims_of(verdict, with_seed=False)
    assert [c.passed for c in claims] == [True, True, False, True]
    assert "<= 1e-2 on synthetic, 4 workers" in claims[0].claim
    assert "crossover: rounds 1e-4, time 3.2e-4" in claims[2].measured
    # a flat adaptive L fails its claim; a label-sorted setting is never a claim
    flat = judge(iid, curves, adaptive_history([4] * 7), ["a"])
    assert not claims_of(flat, with_seed=False)[3].passed
    sensitivity = judge(label_sorted, curves, falling, ["a"])
    assert sensitivity.holds == verdict.holds and claims_of(sensitivity, False) == []


def test_sci() -> None:
    assert [sci(1e-2), sci(10**-3.25), sci(None)] == ["1e-2", "5.6e-4", "none"]


def test_study_for_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = study_for(Request(out=tmp_path))
    assert len(full.settings()) == len(full.data) * 2 * 2 * 2
    assert full.local_steps == (1, 2, 4, 8) and full.adaptive_l0 == 8
    given = study_for(Request(out=tmp_path, quick=True, data="digits", seeds=(3,)))
    assert (given.data, given.workers, given.seeds) == (("digits",), (8,), (3,))
    assert (given.gammas, given.sync_rounds) == (("1/n",), 12)
    monkeypatch.chdir(tmp_path)  # no ../shared/datasets from here
    fallback = study_for(Request(out=tmp_path, quick=True))
    assert fallback.data == (SYNTHETIC,) and "not found" in fallback.note


@pytest.mark.parametrize(
    "values", [{"gammas": ("abc",)}, {"sync_rounds": 5}, {"seeds": (1, 1)}, {"splits": ("x",)}]
)
def test_bad_study_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        Study(("digits",), **values)  # type: ignore[arg-type]


def test_registered_under_its_command_name(tmp_path: Path) -> None:
    assert "localnewton" in REPRODUCTIONS
    request = make_request("localnewton", True, tmp_path, None, None, progress=False)
    assert request.command == f"lowcomm reproduce localnewton --quick --out {tmp_path}"


# --- the command line ---------------------------------------------------------------------------


def lowcomm(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_quick_through_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    result = lowcomm("reproduce", "localnewton", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    assert "Claims of localnewton" in result.stdout
    report = (out / "report.md").read_text()
    assert f"lowcomm reproduce localnewton --quick --out {out}" in report
    assert len(table_rows(report, "## Claims table")) == 4

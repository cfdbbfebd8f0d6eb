"""``lowcomm reproduce cdgrab``: its measures on hand-made numbers, and its report recomputed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce import REPRODUCTIONS
from lowcomm.experiments.reproduce.cdgrab import (
    LIMITS,
    QUICK,
    STUDY,
    calibration_measures,
    epoch_steps,
    herding,
    herding_measures,
    hmda_measures,
    lstm_measures,
    plan,
    run,
    speedup_measures,
    texts,
    verdicts,
)
from lowcomm.experiments.reproduce.report import Outcome, Request, claim_texts, number
from lowcomm.experiments.runner import execute, prepare
from lowcomm.experiments.study import datasets_root, run_study


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The quick study as ``lowcomm reproduce cdgrab --quick`` runs it, one job at a time."""
    out = tmp_path_factory.mktemp("reproduce") / "cdgrab"
    return run_study(STUDY, Request(out=out, quick=True, command="lowcomm reproduce cdgrab --t"))


def table_rows(report: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line[2:-2].split(" | ")] for line in lines[start + 2 : end]]


def hand_fstar(folder: Path) -> float:
    """f* of a saved run's kept training set, by SciPy's BFGS on the objective written here."""
    config = make_config(json.loads((folder / "run.json").read_text())["config"])
    train = prepare(config).data.train
    X, s = np.asarray(train.X, dtype=float).reshape(train.n, -1), 2.0 * np.asarray(train.y) - 1
    l2 = config.l2

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        margin = s * (X @ w)
        loss = np.logaddexp(0.0, -margin).mean() + 0.5 * l2 * w @ w
        grad = -(X.T @ (s / (1.0 + np.exp(margin)))) / len(s) + l2 * w
        return float(loss), grad

    found = minimize(f, np.zeros(X.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-13})
    return float(found.fun)


def final_loss(folder: Path) -> float:
    return float(pd.read_parquet(folder / "history.parquet")["train_loss"].iloc[-1])


# --- the quick study, recomputed from what it saved ---------------------------------------------


def test_quick_claims_table_and_claims_json_agree(quick: Outcome) -> None:
    rows = table_rows(quick.report.read_text(), "## Claims")
    wording = list(claim_texts("cdgrab", LIMITS | {"data": "x"}).values())[:11]  # A-D, in order
    assert [row[1] for row in rows] == [c.claim for c in quick.claims] == [t.claim for t in wording]
    assert quick.claims[0].criterion == (
        "project's calibration: final bound, max / min over m <= 1.5"
    )
    assert [row[-1] for row in rows] == [f"**{c.verdict}**" for c in quick.claims]
    listed = json.loads((quick.out / "claims.json").read_text())
    assert [c["result"] for c in listed["claims"]] == [c.verdict for c in quick.claims]
    # judged: A and C's speedup and D-RR claims; never a FAIL from the small size
    assert [c.passed for c in quick.claims] == [True] * 4 + [
        None,
        None,
        True,
        None,
        True,
        None,
        None,
    ]
    assert all(c["result"] == "not judged" for c in listed["sensitivity"])


def test_quick_herding_claims_equal_a_recomputation_from_the_saved_bounds(quick: Outcome) -> None:
    bounds = pd.concat(
        [pd.read_parquet(quick.out / "A" / f"m{m}" / "table.parquet") for m in (2, 4, 8, 16, 32)]
    )
    last = bounds[bounds["round"] == QUICK.herding_rounds]
    cd = {
        m: last[(last.m == m) & (last.method == "cd-grab")]["bound"].mean()
        for m in (2, 4, 8, 16, 32)
    }
    flat = max(cd.values()) / min(cd.values())
    assert f"({flat:.2f}x)" in quick.claims[0].measured
    assert quick.claims[0].passed == (flat <= 1.5)
    below = min(
        last[(last.m == m) & (last.method == i)]["bound"].mean() / cd[m]
        for m in (8, 16, 32)
        for i in ("id-grab-mean", "id-grab")
    )
    assert f">= {below:.2f}x" in quick.claims[1].measured
    start = bounds[(bounds["round"] == 0) & (bounds.method == "d-rr")].groupby("m")["bound"].mean()
    drr = last[last.method == "d-rr"].groupby("m")["bound"].mean() / start
    assert quick.claims[3].passed == bool(((drr >= 0.5) & (drr <= 2)).all())


def test_quick_speedup_claims_equal_a_recomputation_from_the_histories(quick: Outcome) -> None:
    folder = quick.out / "C"
    sub = {
        (m, o): final_loss(folder / f"m{m}" / o / "seed0")
        - hand_fstar(folder / f"m{m}" / o / "seed0")
        for m in (1, 2, 4, 8, 16)
        for o in ("d-rr", "cd-grab")
    }
    assert quick.claims[6].measured.startswith(f"m = 1: {number(sub[1, 'cd-grab'], 3)};")
    ratios = [sub[m, "cd-grab"] / sub[1, "cd-grab"] for m in (2, 4, 8, 16)]
    assert f"{number(min(ratios), 3)}-{number(max(ratios), 3)}x" in quick.claims[6].measured
    assert quick.claims[6].passed == (max(ratios) <= 3)
    drr = [sub[m, "d-rr"] / sub[1, "d-rr"] for m in (1, 2, 4, 8, 16)]
    assert quick.claims[8].passed == all(1 / 3 <= r <= 3 for r in drr)


def test_quick_sign_mode_runs_beside_the_faithful_server(quick: Outcome) -> None:
    folder = quick.out / "B-synthetic" / "m16"
    faithful = pd.read_parquet(folder / "cd-grab" / "seed0" / "history.parquet")
    k4 = pd.read_parquet(folder / "cd-grab-signs-k4" / "seed0" / "history.parquet")
    assert len(k4) == len(faithful) and not np.array_equal(faithful["train_loss"], k4["train_loss"])


def test_sign_mode_without_projection_is_cd_grab() -> None:
    runs = [
        execute(prepare(run("B", "synthetic-logistic:200,5", 4, o, 0, 2, lr=0.1).config), False)
        for o in ("cd-grab", "cd-grab-signs-k0")
    ]
    assert np.array_equal(runs[0].history["train_loss"], runs[1].history["train_loss"])


def test_quick_report_has_its_tables_figures_and_notes(quick: Outcome) -> None:
    report = quick.report.read_text()
    for name in ("herding", "c", "b-synthetic"):
        assert (quick.out / f"{name}.csv").is_file() and (quick.out / f"{name}.png").is_file()
    assert "## Sensitivity results" in report and "## Setup" in report and "$" not in report


# --- measures on hand-made numbers ---------------------------------------------------------------


def herding_rows(final: dict[str, list[float]], ms: list[int], start: float) -> pd.DataFrame:
    rows = []
    for method, values in final.items():
        for m, value in zip(ms, values, strict=True):
            rows += [(m, 0, method, 0, start), (m, 0, method, 5, value)]
    return pd.DataFrame(rows, columns=["m", "trial", "method", "round", "bound"])


def test_herding_measures_pass_on_the_papers_shape_and_fail_otherwise() -> None:
    ms = [2, 8, 32]
    good = {
        "cd-grab": [2.4, 2.2, 2.1],
        "id-grab-mean": [2.5, 5.0, 10.0],
        "id-grab": [3.5, 7.0, 14.0],
        "d-rr": [50.0, 48.0, 55.0],
    }
    assert [ok for _, ok in herding_measures(herding_rows(good, ms, 50.0))] == [True] * 4
    bad = good | {"cd-grab": [2.0, 4.0, 8.0], "d-rr": [10.0, 10.0, 10.0]}
    assert [ok for _, ok in herding_measures(herding_rows(bad, ms, 50.0))] == [
        False,
        False,
        True,
        False,
    ]
    flat = good | {"id-grab": [3.5, 3.6, 3.7]}  # no sqrt(m) growth
    assert [ok for _, ok in herding_measures(herding_rows(flat, ms, 50.0))][2] is False


def finals(values: dict[tuple[int, str, int], tuple[float, float]], **extra: float) -> pd.DataFrame:
    """Last-epoch rows with the given (train loss, f - f*) per (m, method, seed)."""
    rows = [
        {"m": m, "method": o, "seed": s, "train_loss": loss, "suboptimality": sub} | extra
        for (m, o, s), (loss, sub) in values.items()
    ]
    return pd.DataFrame(rows)


def test_calibration_measures_follow_the_spec_criteria() -> None:
    subs = {
        4: {"d-rr": 2e-2, "id-grab-mean": 9e-4, "id-grab": 2e-3, "cd-grab": 3e-4},
        16: {"d-rr": 3e-3, "id-grab-mean": 3e-4, "id-grab": 3e-4, "cd-grab": 4e-6},
    }
    values = {
        (m, o, s): (0.4 + v, v) for m, row in subs.items() for o, v in row.items() for s in (0, 1)
    }
    measured = calibration_measures(finals(values))
    assert [ok for _, ok in measured] == [True, True, True]
    assert measured[1][0] == "m = 4: 66.7x, m = 16: 750x"
    values[4, "cd-grab", 1] = (0.5, 3e-4)  # one seed where CD-GraB's loss is higher
    assert not calibration_measures(finals(values))[0][1]
    values[16, "cd-grab", 0] = values[16, "cd-grab", 1] = (0.4, 1e-3)  # gap shrinks with m
    assert [ok for _, ok in calibration_measures(finals(values))][1:] == [False, False]


def test_speedup_measures_follow_the_spec_criteria() -> None:
    subs = {1: {"d-rr": 6e-3, "cd-grab": 1e-5}}
    subs |= {2: {"d-rr": 3e-3, "cd-grab": 8e-6, "id-grab-mean": 3e-5}}
    subs |= {16: {"d-rr": 3e-3, "cd-grab": 2e-5, "id-grab-mean": 7e-4}}
    values = {(m, o, 0): (0.4 + v, v) for m, row in subs.items() for o, v in row.items()}
    assert [ok for _, ok in speedup_measures(finals(values))] == [True, True, True]
    values[16, "cd-grab", 0] = (0.4, 4e-5)
    values[16, "id-grab-mean", 0] = (0.4, 2e-4)
    values[16, "d-rr", 0] = (0.4, 6e-2)
    assert [ok for _, ok in speedup_measures(finals(values))] == [False, False, False]


def test_hmda_measures_compare_means_over_seeds() -> None:
    values = {(4, "cd-grab", 0): (0.30, math.nan), (4, "cd-grab", 1): (0.34, math.nan)}
    values |= {(4, "d-rr", 0): (0.25, math.nan), (4, "d-rr", 1): (0.41, math.nan)}
    table = finals(values, test_metric=0.8)
    measured = hmda_measures(table)
    text = "CD-GraB 0.320000 vs D-RR 0.330000 (-0.01; lower on 1 of 2 seeds, std 0.085)"
    assert measured == [(text, True), ("CD-GraB 80.00% vs D-RR 80.00%", True)]
    table.loc[table["method"] == "cd-grab", "train_loss"] += 0.02
    table.loc[table["method"] == "cd-grab", "test_metric"] -= 0.01
    assert [ok for _, ok in hmda_measures(table)] == [False, False]


def test_verdicts_with_a_reason_are_not_judged_and_never_measure() -> None:
    def fail() -> list[tuple[str, bool]]:
        raise AssertionError("measured")

    claims = verdicts(texts("B"), fail, "not judged at quick size: why")
    assert [(c.passed, c.measured) for c in claims] == [(None, "not judged at quick size: why")] * 2


# --- pieces --------------------------------------------------------------------------------------


def test_registered_and_quick_plan_needs_no_shared_data() -> None:
    assert "cdgrab" in REPRODUCTIONS
    jobs = plan(Request(out=Path("x"), quick=True)).jobs
    assert {j.key[0] for j in jobs} == {"A", "C", "B-synthetic", "optima"}
    assert all("shared" not in (j.config.data if j.config else "") for j in jobs)


def test_hmda_configuration_is_the_authors_script() -> None:
    jobs = plan(Request(out=Path("x"), quick=True, data="synthetic-logistic:400,6")).jobs
    hmda = [j.config for j in jobs if j.key[0] == "B-hmda" and j.config]
    assert len(hmda) == 2 * len(QUICK.hmda_seeds)
    for c in hmda:
        assert (c.workers, c.epochs, c.l2, c.intercept, c.test_fraction) == (4, 50, 0.0, True, 0.2)
        assert (c.options["batch_size"], c.options["momentum"], c.options["lr"]) == (4, 0.9, 5e-3)
        assert c.eval_every == epoch_steps(c.data, 0.2, 4, 4)[0]


def test_intercept_adds_a_bias_to_logistic_and_softmax() -> None:
    for data, dim in (("synthetic-logistic:200,5", 5), ("iris", 3 * 4)):
        base = {"data": data, "model": "auto", "rounds": 2}
        assert prepare(make_config(base)).problem.dim == dim
        classes = 1 if dim == 5 else 3
        biased = prepare(make_config(base | {"intercept": True})).problem
        assert biased.dim == dim + classes and biased.fit_intercept  # type: ignore[attr-defined]


def test_herding_balances_cd_grab_and_not_d_rr() -> None:
    table = herding(512, 8, 1, 4)
    final = table.set_index(["method", "round"])["bound"]
    assert final["cd-grab", 8] < final["cd-grab", 0] / 3
    assert final["d-rr", 8] > final["d-rr", 0] / 3
    assert set(table["method"]) == {"d-rr", "id-grab-mean", "id-grab", "cd-grab"}


def test_full_plan_without_phishing_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOWCOMM_DATASETS", str(tmp_path))
    built = plan(Request(out=tmp_path / "out"))
    assert built.note == f"phishing, wikitext-2 not found in {tmp_path}"
    assert {j.key[0] for j in built.jobs} == {"A", "C", "B-synthetic", "optima"}


@pytest.mark.shared_data
def test_full_plan_runs_the_hmda_configuration_on_phishing() -> None:
    phishing = datasets_root() / "phishing" / "phishing.gz"
    if not phishing.is_file():
        pytest.skip(f"{phishing} not found")
    built = plan(Request(out=Path("x")))
    assert not built.note
    hmda = [j for j in built.jobs if j.key[0] == "B-hmda"]
    assert {j.config.data for j in hmda if j.config} == {f"libsvm:{phishing},n_features=68"}
    assert len(hmda) == 6 and built.facts["name"] == "phishing"


def test_lstm_measures_pass_and_fail_on_the_papers_numbers() -> None:
    paper = pd.DataFrame(
        {"method": ["d-rr", "cd-grab"], "seed": [0, 0], "train_loss": [5.36, 5.31]}
        | {"test_metric": [232.0, 223.0]}
    )
    assert [ok for _, ok in lstm_measures(paper)] == [True, True]
    assert lstm_measures(paper)[1][0] == "CD-GraB 223.0 vs D-RR 232.0"
    worse = paper.assign(train_loss=[5.30, 5.31], test_metric=[220.0, 223.0])
    assert [ok for _, ok in lstm_measures(worse)] == [False, False]


def test_the_full_plan_runs_the_lstm_when_wikitext_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    words = " ".join(f"w{i % 50}" for i in range(3000))
    for name in ("valid.txt", "test.txt"):
        (folder / name).write_text(words + "\n")
    monkeypatch.setenv("LOWCOMM_DATASETS", str(tmp_path))
    lstm = [job for job in plan(Request(out=tmp_path)).jobs if job.key[0] == "D"]
    assert [job.key for job in lstm] == [
        ("D", "m4", "d-rr", "seed0"),
        ("D", "m4", "cd-grab", "seed0"),
    ]
    config = lstm[1].config
    assert config is not None and config.model == "lstm-lm" and config.order == "cd-grab"
    # 3,001 tokens in 16 streams of 187, 5 chunks of 35, cut to an even 4 steps; 2 epochs
    assert config.eval_every == 2 * 4 and config.options["unit"] == "minibatch"
    assert not [job for job in plan(Request(out=tmp_path, quick=True)).jobs if job.key[0] == "D"]

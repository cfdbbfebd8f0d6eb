"""``lowcomm reproduce cdgrab``: the study's pieces, its claims, and its report against the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.data.loaders import load_data
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce import REPRODUCTIONS
from lowcomm.experiments.reproduce.cdgrab import (
    FIGURES,
    HerdingStudy,
    LenetStudy,
    LogisticStudy,
    SignStudy,
    SpeedupStudy,
    Study,
    agreement,
    herding_claims,
    herding_trial,
    lenet_claim,
    logistic_claims,
    run_study,
    speedup_claims,
    study_for,
    synthetic_data,
    unit_vectors,
    visited,
)
from lowcomm.experiments.reproduce.report import Outcome, Request, mean_std
from lowcomm.experiments.runner import prepare
from lowcomm.ordering.balance import coordinated_pair_balance
from lowcomm.problems.logistic import newton_optimum

TINY_DATA = synthetic_data(128)
TINY = Study(
    HerdingStudy(256, (2, 4, 8), 10, 1),
    (LogisticStudy("synthetic", TINY_DATA, 0.25, 3, (0, 1), workers=(1, 2, 4)),),
    SpeedupStudy(TINY_DATA, 0.25, 3, 0, workers=(1, 2, 4)),
    SignStudy(workers=4, offline=(4, 16)),
    LenetStudy("digits", 2, (0,), workers=4, batch_size=8),
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The whole study at a tiny size (LeNet on digits); about 15 s."""
    out = tmp_path_factory.mktemp("reproduce") / "cdgrab"
    return run_study(TINY, out, "lowcomm reproduce cdgrab --test")


def table_rows(report: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line[2:-2].split(" | ")] for line in lines[start + 2 : end]]


def final_suboptimality(folder: Path) -> float:
    """A saved run's last training loss minus f*, f* recomputed by Newton from its config."""
    config = json.loads((folder / "run.json").read_text())["config"]
    prepared = prepare(make_config(config))
    train = prepared.data.train
    _, fstar = newton_optimum(prepared.problem, torch.as_tensor(train.X), torch.as_tensor(train.y))
    history = pd.read_csv(folder / "history.csv")
    return float(history["train_loss"].iloc[-1]) - fstar


# --- pieces ------------------------------------------------------------------------------------


def test_registered() -> None:
    assert "cdgrab" in REPRODUCTIONS


def test_synthetic_data_leaves_exactly_the_training_examples_asked_for() -> None:
    for train in (128, 1024, 4096):
        loaded = load_data(parse_data_spec(synthetic_data(train)), 0, 0.25)
        assert loaded.train.n == train


def test_quick_study_needs_no_shared_data_and_says_what_it_skips() -> None:
    study = study_for(Request(out=Path("x"), quick=True))
    assert [s.name for s in study.logistic] == ["synthetic"]
    assert study.lenet is None
    assert len(study.notes) == 2
    assert all("shared" not in s.data for s in study.logistic)


def test_unit_vectors_are_centred_per_worker() -> None:
    vectors = unit_vectors(np.random.default_rng(0), 3, 10, 4)
    assert np.allclose(vectors.mean(axis=1), 0.0)


def test_identity_projection_agrees_with_the_faithful_server_everywhere() -> None:
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(3, 8, 5))
    order = np.stack([rng.permutation(8) for _ in range(3)])
    faithful, signs, _ = coordinated_pair_balance(order, grads)
    following, shares = agreement(order, grads, signs, np.eye(5))
    assert shares == {"decisions": 1.0, "walks": 1.0}
    assert np.array_equal(following, faithful)


def test_herding_trial_balances_cd_grab_and_not_d_rr() -> None:
    study = HerdingStudy(512, (4,), 8, 1)
    bounds, shares = herding_trial(study, 4, 0)
    table = pd.DataFrame(bounds).set_index(["method", "round"])["bound"]
    assert table["cd-grab", 8] < table["cd-grab", 0] / 3
    assert table["d-rr", 8] > table["d-rr", 0] / 3
    assert len(shares) == study.rounds * len(study.projections)
    assert all(0.0 <= s["decisions"] <= 1.0 for s in shares)


def test_visited_reads_vectors_in_visiting_order() -> None:
    vectors = np.arange(12.0).reshape(1, 6, 2)
    order = np.array([[5, 0, 1, 2, 3, 4]])
    assert np.array_equal(visited(vectors, order)[0, 0], vectors[0, 5])


# --- claims on hand-made measurements ------------------------------------------------------------


def herding_table(final: dict[str, list[float]], ms: list[int], start: float) -> pd.DataFrame:
    rows = []
    for method, values in final.items():
        for m, value in zip(ms, values, strict=True):
            rows.append({"m": m, "trial": 0, "method": method, "round": 0, "bound": start})
            rows.append({"m": m, "trial": 0, "method": method, "round": 5, "bound": value})
    return pd.DataFrame(rows)


def test_herding_claims_pass_on_the_papers_shape_and_fail_otherwise() -> None:
    ms = [2, 8, 32]
    good = {
        "cd-grab": [2.4, 2.2, 2.1],
        "id-grab-mean": [2.5, 5.0, 10.0],
        "id-grab": [3.5, 7.0, 14.0],
        "d-rr": [50.0, 48.0, 55.0],
    }
    assert [c.passed for c in herding_claims(herding_table(good, ms, 50.0), 5)] == [True] * 4
    bad = {**good, "cd-grab": [2.0, 4.0, 8.0], "d-rr": [10.0, 10.0, 10.0]}
    assert [c.passed for c in herding_claims(herding_table(bad, ms, 50.0), 5)] == [
        False,
        False,
        True,
        False,
    ]


def run_rows(part: str, finals: dict[tuple[int, str, int], tuple[float, float]]) -> pd.DataFrame:
    """Per-epoch rows with the given (loss, suboptimality) at the last epoch."""
    rows = []
    for (m, method, seed), (loss, sub) in finals.items():
        for epoch, scale in ((0, 10.0), (2, 1.0)):
            row = {"part": part, "m": m, "method": method, "seed": seed, "epoch": epoch}
            rows.append(row | {"train_loss": loss * scale, "suboptimality": sub * scale})
    return pd.DataFrame(rows)


def test_logistic_claims_follow_the_spec_criteria() -> None:
    subs = {
        1: {"d-rr": 1e-1, "cd-grab": 1e-2},
        4: {"d-rr": 2e-2, "id-grab-mean": 9e-4, "id-grab": 2e-3, "cd-grab": 3e-4},
        16: {"d-rr": 3e-3, "id-grab-mean": 3e-4, "id-grab": 3e-4, "cd-grab": 4e-6},
    }
    finals = {
        (m, method, seed): (0.4 + sub, sub)
        for m, row in subs.items()
        for method, sub in row.items()
        for seed in (0, 1)
    }
    claims = logistic_claims(run_rows("B-x", finals), "B-x", "x")
    assert [c.passed for c in claims] == [True, True, True]
    assert "m = 4: 66.7x" in claims[1].measured
    finals[4, "cd-grab", 1] = (0.5, 3e-4)  # one seed where CD-GraB's loss is higher
    assert not logistic_claims(run_rows("B-x", finals), "B-x", "x")[0].passed


def test_speedup_claims_follow_the_spec_criteria() -> None:
    subs = {
        1: {"d-rr": 6e-3, "cd-grab": 1e-5},
        2: {"d-rr": 3e-3, "cd-grab": 8e-6, "id-grab-mean": 3e-5},
        16: {"d-rr": 3e-3, "cd-grab": 2e-5, "id-grab-mean": 7e-4},
    }
    finals = {(m, o, 0): (0.4 + v, v) for m, row in subs.items() for o, v in row.items()}
    assert [c.passed for c in speedup_claims(run_rows("C", finals))] == [True, True, True]
    finals[16, "cd-grab", 0] = (0.4, 4e-5)
    assert [c.passed for c in speedup_claims(run_rows("C", finals))] == [False, True, True]


def test_lenet_claim_states_the_noise() -> None:
    finals = {(8, "d-rr", 0): (0.30, np.nan), (8, "d-rr", 1): (0.34, np.nan)}
    finals |= {(8, "cd-grab", 0): (0.29, np.nan), (8, "cd-grab", 1): (0.33, np.nan)}
    claim = lenet_claim(run_rows("D", finals))
    assert claim.passed
    assert "lower on 2 of 2 seeds" in claim.measured and "within the seed spread" in claim.measured


# --- end to end on the tiny study ----------------------------------------------------------------


@pytest.mark.slow
def test_writes_report_figures_tables_and_every_run(tiny: Outcome) -> None:
    out, report = tiny.out, tiny.report.read_text()
    assert report.startswith("# Reproduction: CD-GraB")
    for name in (*FIGURES, "suboptimality-synthetic"):
        assert (out / f"{name}.png").stat().st_size > 0
        assert f"]({name}.png)" in report
    for name in ("herding.csv", "agreement.csv", "runs.csv", "optima.csv", "streams.csv"):
        assert (out / name).is_file()
    files = {p.name for p in (out / "B-synthetic" / "m4" / "cd-grab" / "seed1").iterdir()}
    assert files == {"history.csv", "history.parquet", "run.json"}
    assert (out / "signs" / "m4" / "cd-grab-signs-k0" / "seed0" / "run.json").is_file()


@pytest.mark.slow
def test_claims_of_every_experiment_with_a_verdict(tiny: Outcome) -> None:
    rows = table_rows(tiny.report.read_text(), "## Claims")
    assert len(rows) == len(tiny.claims) == 4 + 3 + 3 + 1
    assert [row[1][:2] for row in rows] == ["A."] * 4 + ["B "] * 3 + ["C."] * 3 + ["D."]
    assert [row[-1] for row in rows] == [f"**{c.verdict}**" for c in tiny.claims]
    listed = json.loads((tiny.out / "claims.json").read_text())["claims"]
    assert [c["result"] for c in listed] == [c.verdict for c in tiny.claims]


@pytest.mark.slow
def test_suboptimality_in_the_report_equals_a_recomputation_from_the_saved_runs(
    tiny: Outcome,
) -> None:
    out = tiny.out
    rows = table_rows(tiny.report.read_text(), "## B. Logistic regression, synthetic")
    cells = {(row[0], row[1]): row for row in rows}
    subs = {
        order: [
            final_suboptimality(out / "B-synthetic" / "m2" / order / f"seed{k}") for k in (0, 1)
        ]
        for order in ("cd-grab", "d-rr")
    }
    assert cells["2", "CD-GraB"][4] == mean_std(subs["cd-grab"], 3)
    assert cells["2", "D-RR"][4] == mean_std(subs["d-rr"], 3)
    ratio = np.mean(subs["d-rr"]) / np.mean(subs["cd-grab"])
    assert cells["2", "CD-GraB"][5] == f"{ratio:.3g}x"
    assert f"m = 2: {ratio:.3g}x" in tiny.claims[5].measured


@pytest.mark.slow
def test_sign_mode_without_projection_equals_cd_grab_in_the_runs(tiny: Outcome) -> None:
    rows = table_rows(tiny.report.read_text(), "Runs at m = 4")
    by_server = {row[0]: row for row in rows}
    assert by_server["CD-GraB signs, k = d"][1] == by_server["CD-GraB"][1]
    assert by_server["CD-GraB signs, k = d"][4] == "0"

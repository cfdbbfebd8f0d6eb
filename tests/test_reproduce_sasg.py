"""``lowcomm reproduce sasg``: its measurements, checked by hand against the saved runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from lowcomm.cli import app
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.reproduce import command_line, make_request, parse_seeds
from lowcomm.experiments.reproduce.report import (
    Claim,
    Outcome,
    Request,
    markdown_table,
    mean_std,
    number,
)
from lowcomm.experiments.reproduce.sasg import (
    QUICK,
    STUDY,
    claims,
    costs_to_target,
    plan,
    round_uploads,
    seed_means,
    skip_by_epoch,
    target_round,
)
from lowcomm.experiments.study import run_study

METHODS = ("sgd", "topk-ef", "lasg", "sasg")
FIGURES = ("accuracy-uploads", "accuracy-bits", "skip-ratio", "train-loss")


def lowcomm(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The quick study as ``lowcomm reproduce sasg --quick`` runs it (100 epochs of digits)."""
    out = tmp_path_factory.mktemp("reproduce") / "sasg"
    request = Request(out=out, quick=True, command="lowcomm reproduce sasg --test")
    return run_study(STUDY, request)


def saved(out: Path, method: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = out / method / f"seed{seed}"
    meta = json.loads((folder / "run.json").read_text())
    return pd.read_csv(folder / "history.csv"), pd.read_csv(folder / "ledger.csv"), meta


def table_rows(report: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``."""
    lines = report.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line[2:-2].split(" | ")] for line in lines[start + 2 : end]]


def hand_target(out: Path) -> float:
    """SGD's mean test accuracy at its last evaluation within 70% of the rounds."""
    rounds = saved(out, "sgd", 0)[2]["config"]["rounds"]
    at = max(r for r in range(0, rounds + 1, QUICK.eval_every) if r <= 0.7 * rounds)
    accuracies = []
    for seed in QUICK.seeds:
        history = saved(out, "sgd", seed)[0]
        accuracies.append(float(history.loc[history["round"] == at, "test_metric"].iloc[0]))
    return float(np.mean(accuracies))


def hand_uploads_to_target(out: Path, method: str, seed: int, target: float) -> float:
    """Uploads up to the first evaluation reaching ``target``, summed from the ledger."""
    history, ledger, _ = saved(out, method, seed)
    reached = [row for _, row in history.iterrows() if row["test_metric"] >= target]
    if not reached:
        return math.nan
    total = sum(
        int(r["uploads"]) for _, r in ledger.iterrows() if r["round"] <= reached[0]["round"]
    )
    assert total == reached[0]["uploads"]
    return float(total)


# --- end to end on the tiny study ---------------------------------------------------------------


def test_writes_report_figures_claims_and_every_run(tiny: Outcome) -> None:
    out = tiny.out
    assert tiny.report == out / "report.md"
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 0
        assert f"]({name}.png)" in tiny.report.read_text()
    for method in METHODS:
        for seed in QUICK.seeds:
            files = {p.name for p in (out / method / f"seed{seed}").iterdir()}
            assert files == {"history.csv", "history.parquet", "run.json", "ledger.csv"}
    for name in ("claims.json", "per_seed.csv", "summary.csv", "skip_ratio.csv", "report.html"):
        assert (out / name).is_file()
    assert tiny.report.read_text().startswith("# Reproduction: SASG")
    assert "lowcomm reproduce sasg --test" in tiny.report.read_text()


def test_claims_table_has_four_claims_with_a_verdict(tiny: Outcome) -> None:
    rows = table_rows(tiny.report.read_text(), "## Claims")
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert [row[-1] for row in rows] == [f"**{c.verdict}**" for c in tiny.claims]
    assert all(c.passed is not None for c in tiny.claims)  # the quick study judges all four
    listed = json.loads((tiny.out / "claims.json").read_text())["claims"]
    assert [c["result"] for c in listed] == [c.verdict for c in tiny.claims]


def test_uploads_to_target_equal_a_hand_computation(tiny: Outcome) -> None:
    out = tiny.out
    target = hand_target(out)
    info = json.loads((out / "claims.json").read_text())
    assert info["facts"]["target"] == f"{100 * target:.2f}"
    per_seed = pd.read_csv(out / "per_seed.csv")
    results = {row[0]: row for row in table_rows(tiny.report.read_text(), "## Results per method")}
    shown_ratio = tiny.claims[1].measured
    labels = dict(zip(METHODS, ("SGD", "Top-k with memory", "LASG", "SASG"), strict=True))
    means = {}
    for method in METHODS:
        by_hand = [hand_uploads_to_target(out, method, seed, target) for seed in QUICK.seeds]
        mine = per_seed.loc[per_seed["method"] == method].sort_values("seed")
        np.testing.assert_array_equal(mine["uploads_to_target"].to_numpy(), by_hand)
        assert results[labels[method]][1] == mean_std(by_hand)
        means[method] = float(np.mean(by_hand))
    measured = tiny.claims[0].measured
    for method, label in (("sasg", "SASG"), ("lasg", "LASG"), ("sgd", "SGD")):
        shown = "not reached" if math.isnan(means[method]) else number(means[method])
        assert f"{label} {shown}" in measured
    assert shown_ratio == f"{means['sasg'] / means['sgd']:.3f}x"
    assert tiny.claims[0].passed == (means["sasg"] < means["lasg"] < means["sgd"])
    assert tiny.claims[1].passed == (means["sasg"] <= 0.6 * means["sgd"])


def test_skip_ratio_by_epoch_comes_from_per_round_uploads(tiny: Outcome) -> None:
    skips = pd.read_csv(tiny.out / "skip_ratio.csv")
    assert set(skips["method"]) == {"lasg", "sasg"}
    for method in ("lasg", "sasg"):
        for seed in QUICK.seeds:
            _, ledger, meta = saved(tiny.out, method, seed)
            n_train, rounds = meta["data"]["n_train"], meta["config"]["rounds"]
            per_round = {r: 0 for r in range(1, rounds + 1)}
            for _, row in ledger.iterrows():
                per_round[int(row["round"])] += int(row["uploads"])
            epochs: dict[int, list[float]] = {}
            for r, uploads in per_round.items():
                epoch = (r - 1) * QUICK.workers * QUICK.batch_size // n_train + 1
                epochs.setdefault(epoch, []).append(1 - uploads / QUICK.workers)
            mine = skips.loc[(skips["method"] == method) & (skips["seed"] == seed)]
            assert mine["epoch"].tolist() == sorted(epochs)
            expected = [float(np.mean(epochs[e])) for e in sorted(epochs)]
            np.testing.assert_allclose(mine["skip_ratio"], expected, rtol=0, atol=1e-12)


# --- the pieces ---------------------------------------------------------------------------------


def test_skip_by_epoch_counts_rounds_without_records_as_all_skipped() -> None:
    records = pd.DataFrame({"round": [1, 1, 2, 4], "worker": [0, 1, 0, 1], "uploads": [1, 1, 1, 0]})
    uploads = round_uploads(records, 4)
    assert uploads.tolist() == [2, 1, 0, 0]
    # 2 workers, batch 1, 4 examples: 2 rounds per epoch
    skips = skip_by_epoch(uploads, workers=2, batch_size=1, n_train=4)
    assert skips.to_dict() == {1: 0.25, 2: 1.0}


def test_reach_is_the_first_evaluation_at_or_above_the_target() -> None:
    history = pd.DataFrame(
        {"round": [0, 10, 20], "uploads": [0, 7, 9], "bytes_up": [0, 40, 80]}
        | {"test_metric": [0.1, 0.8, 0.9]}
    )
    assert costs_to_target(history, 0.8) == {"round": 10.0, "uploads": 7.0, "bits": 320.0}
    assert all(math.isnan(v) for v in costs_to_target(history, 0.95).values())


def test_target_round_is_the_last_evaluation_within_70_percent() -> None:
    assert target_round(1600, 100) == 1100
    assert target_round(1000, 100) == 700
    assert target_round(68, 10) == 40


def frame(uploads: list[float], bits: list[float], accuracy: list[float]) -> pd.DataFrame:
    columns = {"uploads_to_target": uploads, "bits_to_target": bits, "final_accuracy": accuracy}
    return pd.DataFrame(columns, index=pd.Index(["sgd", "lasg", "sasg"], name="method"))


def test_claims_pass_on_the_paper_run_numbers() -> None:
    sgd_bits, sasg_bits = 61_000 * 407_050 * 32, 23_775 * 4_071 * 64
    paper = frame([61_000, 34_269, 23_775], [sgd_bits, 0, sasg_bits], [0.9818, 0.98, 0.9815])
    judged = claims(paper)
    assert [c.verdict for c in judged] == ["PASS"] * 4
    assert [c.criterion for c in judged] == [  # notes/sasg.claims.toml, thresholds filled
        "uploads to target: SASG < LASG < SGD",
        "SASG uploads <= 0.6x SGD's",
        "SASG uplink bits <= 1/80 of SGD's",
        "final test accuracy within 0.5 points of SGD's",
    ]
    assert judged[3].measured == "SASG 98.15%, SGD 98.18% (-0.03 points)"


def test_claims_fail_when_the_numbers_miss_or_a_target_is_not_reached() -> None:
    missed = frame([1000, 700, 650], [32e6, 0, 0.5e6], [0.95, 0.95, 0.94])
    assert [c.verdict for c in claims(missed)] == ["PASS", "FAIL", "FAIL", "FAIL"]
    unreached = frame([1000, 700, math.nan], [32e6, 0, math.nan], [0.95, 0.95, 0.95])
    verdicts = claims(unreached)
    assert [c.verdict for c in verdicts] == ["FAIL", "FAIL", "FAIL", "PASS"]
    assert "SASG not reached" in verdicts[0].measured


def test_a_method_with_a_seed_short_of_the_target_has_no_mean() -> None:
    table = pd.DataFrame(
        {"method": ["sgd", "sgd", "sasg", "sasg"], "seed": [0, 1, 0, 1]}
        | {"uploads_to_target": [100.0, 120.0, 40.0, math.nan], "diverged": [False] * 4}
    )
    mean = seed_means(table)
    assert mean.loc["sgd", "uploads_to_target"] == 110.0
    assert math.isnan(mean.loc["sasg", "uploads_to_target"])


def test_report_helpers() -> None:
    assert mean_std([1.0, 3.0]) == "2 ± 1.4"
    assert mean_std([5.0]) == "5"
    assert mean_std([1.0, math.nan]) == "-"
    assert number(23_775.4) == "23,775"
    assert markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n| --- | --- |\n| 1 | x\\|y |"
    assert Claim("c", "p", "k", "m", passed=False).verdict == "FAIL"


def test_plan_follows_the_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = plan(Request(out=tmp_path, quick=True))
    assert (quick.facts["data"], quick.facts["hidden"], quick.facts["epochs"]) == (
        "digits",
        "128",
        QUICK.small_epochs,
    )
    assert [job.key for job in quick.jobs[:2]] == [("sgd", "seed0"), ("sgd", "seed1")]
    assert quick.jobs[0].config is not None and quick.jobs[0].config.options["lr"] == 0.005
    monkeypatch.setenv("LOWCOMM_DATASETS", str(tmp_path))  # no mnist folder there
    fallback = plan(Request(out=tmp_path, seeds=(4, 5)))
    assert fallback.facts["data"] == "digits" and "not found" in fallback.note
    assert fallback.facts["seeds"] == "4,5" and fallback.facts["epochs"] == 200


def test_request_and_command_line(tmp_path: Path) -> None:
    request = make_request("sasg", True, None, None, "0,2", progress=False)
    assert request.out == Path("results/reproduce-sasg")
    assert request.seeds == (0, 2)
    assert request.command == "lowcomm reproduce sasg --quick --seeds 0,2"
    quoted = command_line("sasg", False, tmp_path / "a b", "digits", None)
    assert quoted == f"lowcomm reproduce sasg --out '{tmp_path / 'a b'}' --data digits"
    for bad in ("", "0,0", "-1", "a"):
        with pytest.raises(InvalidConfigError):
            parse_seeds(bad)


# --- the command line ---------------------------------------------------------------------------


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_reproduction_is_one_error_line_listing_the_known_ones(tmp_path: Path) -> None:
    result = lowcomm("reproduce", "nope", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "sasg" in one_error_line(result)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--seeds", "1,1"],
        ["--data", "bogus"],
        ["--data", "mnist:/no/such/folder"],
    ],
)
def test_bad_arguments_exit_2_before_any_run(tmp_path: Path, args: list[str]) -> None:
    result = lowcomm("reproduce", "sasg", "--quick", *args, "--out", tmp_path / "x")
    assert result.exit_code == 2, result.output
    one_error_line(result)
    assert not (tmp_path / "x").exists()


def test_the_command_line_reads_the_quick_study_back(tiny: Outcome) -> None:
    out = tiny.out
    args = ("reproduce", "sasg", "--quick", "--resume", "--jobs", "1", "--out", out)
    result = lowcomm(*args)
    assert result.exit_code == 0, result.output
    assert "Claims of sasg" in result.stdout
    report = (out / "report.md").read_text()
    assert f"lowcomm reproduce sasg --quick --resume --out {out}" in report
    rows = table_rows(report, "## Claims")
    assert [row[4] for row in rows] == [c.measured for c in tiny.claims]


def test_bits_and_accuracy_claims_equal_the_histories(tiny: Outcome) -> None:
    target = hand_target(tiny.out)
    bits, accuracy = {}, {}
    for method in ("sgd", "sasg"):
        hits, finals = [], []
        for seed in QUICK.seeds:
            history = saved(tiny.out, method, seed)[0]
            reached = history.loc[history["test_metric"] >= target].iloc[0]
            hits.append(8.0 * reached["bytes_up"])
            finals.append(history["test_metric"].iloc[-1])
        bits[method], accuracy[method] = np.mean(hits), np.mean(finals)
    assert tiny.claims[2].passed == (80 * bits["sasg"] <= bits["sgd"])
    assert f"({number(bits['sasg'] / 1e6)} vs {number(bits['sgd'] / 1e6)} Mbit)" in (
        tiny.claims[2].measured
    )
    gap = 100 * (accuracy["sasg"] - accuracy["sgd"])
    assert f"({gap:+.2f} points)" in tiny.claims[3].measured
    assert tiny.claims[3].passed == (abs(gap) <= 0.5)

"""The study runner: parallel jobs equal serial ones, resume, the report, HTML and the index."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lowcomm.cli import app
from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.experiments import study as study_module
from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce import (
    INDEX_MD,
    make_request,
    reproduce_all,
)
from lowcomm.experiments.reproduce import report as report_module
from lowcomm.experiments.reproduce.figures import Chart, Panel, draw
from lowcomm.experiments.reproduce.html import to_html
from lowcomm.experiments.reproduce.report import Claim, ClaimText, Request, claim_texts
from lowcomm.experiments.run_folder import hold
from lowcomm.experiments.study import (
    Findings,
    Job,
    Key,
    Output,
    Plan,
    SavedRun,
    Study,
    one_thread,
    run_jobs,
    run_study,
    shared_data,
)

BASE = {"data": "synthetic-logistic:300,5", "workers": 3, "rounds": 6, "eval_every": 2}
NOTES = "## Setup\n\nThe final loss of sgd is $loss, on $rows rows; 100$$ spent.\n"


def configs() -> list[Job]:
    jobs = [
        Job((name, f"seed{seed}"), make_config(BASE | {"algorithm": name, "seed": seed}))
        for name in ("sgd", "local-sgd")
        for seed in (0, 1)
    ]
    return [*jobs, Job(("table",), call=pd.DataFrame, args=({"a": [1.5, 2.5]},))]


def plan(request: Request) -> Plan:
    return Plan(configs(), {"rows": 300}, note="a note for the reader")


def findings(plan: Plan, outputs: Mapping[Key, Output]) -> Findings:
    run = outputs[("sgd", "seed0")]
    assert isinstance(run, SavedRun)
    loss = float(run.history["train_loss"].iloc[-1])
    line = pd.DataFrame({"line": ["sgd", "sgd"], "x": [0, 1], "y": [1, 0]})
    return Findings(
        [
            Claim("loss falls", "-", "final < first", f"{loss:.4f}", True),
            ClaimText("a big claim", "-", "needs 100 rounds").unjudged("6 rounds is too few"),
        ],
        sensitivity=[Claim("off-setting", "-", "x", "y", False)],
        tables={"losses": (pd.DataFrame({"run": ["sgd"], "loss": [loss]}), "Final losses")},
        figures={"curve": (Chart([Panel(line, "round", "loss")]), "A line")},
        facts={"loss": f"{loss:.4f}"},
    )


TOY = Study("toy", "Reproduction: toy", "nowhere", plan, findings)


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "toy.md").write_text(NOTES)
    monkeypatch.setattr(study_module, "NOTES", folder)


def history_without_times(run: Output) -> pd.DataFrame:
    assert isinstance(run, SavedRun)
    return run.history.drop(columns=[c for c in run.history.columns if "wall" in c])


def test_parallel_jobs_give_the_serial_numbers(tmp_path: Path) -> None:
    serial = run_jobs(configs(), tmp_path / "serial", 1, False, False)
    parallel = run_jobs(configs(), tmp_path / "parallel", 2, False, False)
    assert list(serial) == list(parallel) == [job.key for job in configs()]
    for key, run in serial.items():
        if key == ("table",):
            pd.testing.assert_frame_equal(run, parallel[key])
            continue
        pd.testing.assert_frame_equal(
            history_without_times(run), history_without_times(parallel[key])
        )
    assert (tmp_path / "parallel" / "sgd" / "seed1" / "ledger.csv").is_file()
    assert (tmp_path / "serial" / "table" / "table.parquet").is_file()


def test_resume_reads_back_runs_and_calls_without_rerunning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_jobs(configs(), tmp_path, 1, False, False)

    def fail(*_: object) -> None:
        raise AssertionError("a finished job was run again")

    monkeypatch.setattr(study_module, "execute", fail)
    again = run_jobs(configs(), tmp_path, 1, False, resume=True)
    for key, run in first.items():
        if isinstance(run, pd.DataFrame):
            pd.testing.assert_frame_equal(run, again[key])
        else:
            pd.testing.assert_frame_equal(run.history, again[key].history)
    changed = [Job(("table",), call=pd.DataFrame, args=({"a": [9.0]},))]
    assert run_jobs(changed, tmp_path, 1, False, resume=True)[("table",)]["a"].tolist() == [9.0]


def test_a_job_needs_exactly_one_of_config_and_call() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Job(("x",))
    with pytest.raises(ValueError, match="exactly one"):
        Job(("x",), config=make_config(BASE), call=pd.DataFrame)


def test_one_thread_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_report_states_claims_sensitivity_notes_tables_and_figures(
    tmp_path: Path, notes: None
) -> None:
    request = Request(out=tmp_path / "out", command="lowcomm reproduce toy", jobs=1)
    outcome = run_study(TOY, request)
    report = outcome.report.read_text()
    loss = pd.read_parquet(tmp_path / "out" / "sgd" / "seed0" / "history.parquet")
    final = f"{loss['train_loss'].iloc[-1]:.4f}"
    assert "1 of 1 judged claims PASS; 1 not judged at this size" in report
    assert "| 2 | a big claim | - | needs 100 rounds | not judged at quick size: 6 rounds" in report
    assert "## Sensitivity results" in report and "| off-setting |" in report
    assert f"The final loss of sgd is {final}, on 300 rows; 100$ spent." in report
    assert "> Note: a note for the reader" in report
    assert "- Jobs: 5, 1 at a time, one torch thread each" in report
    assert f"- Wall time: {outcome.wall_time:.0f} s" in report
    assert pd.read_csv(tmp_path / "out" / "losses.csv")["loss"].iloc[0] == pytest.approx(
        float(final), abs=1e-4
    )
    claims = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert [c["result"] for c in claims["claims"]] == ["PASS", "not judged"]
    assert claims["sensitivity"][0]["result"] == "FAIL"
    assert claims["facts"]["rows"] == 300
    page = (tmp_path / "out" / "report.html").read_text()
    png = base64.b64encode((tmp_path / "out" / "curve.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{png}"' in page
    assert "<table>" in page and "curve.png" not in page.split("<body>")[1].split("<em>")[0]


def test_a_resumed_study_writes_the_same_claims_without_running(
    tmp_path: Path, notes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_study(TOY, Request(out=tmp_path / "out"))
    claims = json.loads((tmp_path / "out" / "claims.json").read_text())["claims"]
    monkeypatch.setattr(study_module, "execute", lambda *_: pytest.fail("a run was run again"))
    second = run_study(TOY, Request(out=tmp_path / "out", resume=True))
    assert [c.measured for c in second.claims] == [c.measured for c in first.claims]
    assert json.loads((tmp_path / "out" / "claims.json").read_text())["claims"] == claims


def test_a_study_folder_another_study_is_writing_is_refused_untouched(
    tmp_path: Path, notes: None
) -> None:
    out = tmp_path / "out"
    with hold(out), pytest.raises(DataError, match="in use by another run"):
        run_study(TOY, Request(out=out))
    assert list(out.iterdir()) == []  # no run, no report, and the lock is gone


def test_a_missing_fact_in_the_notes_is_an_error(tmp_path: Path, notes: None) -> None:
    (study_module.NOTES / "toy.md").write_text("uses $undefined\n")
    with pytest.raises(KeyError, match="undefined"):
        run_study(TOY, Request(out=tmp_path / "out"))


def test_html_inlines_only_images_beside_it_and_links_reports(tmp_path: Path) -> None:
    png = b"\x89PNG"
    (tmp_path / "a.png").write_bytes(png)
    page = to_html("# T\n\n![a](a.png) ![b](b.png)\n\n[x](sasg/report.md)\n", tmp_path, "T")
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert 'src="b.png"' in page
    assert 'href="sasg/report.html"' in page
    assert "<title>T</title>" in page


def test_reproduce_all_writes_an_index_with_each_studys_verdicts(
    tmp_path: Path, notes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lowcomm.experiments.reproduce as reproduce_package

    monkeypatch.setattr(reproduce_package, "REPRODUCTIONS", {"toy": "toy", "toy2": "toy2"})
    monkeypatch.setattr(reproduce_package, "study_of", lambda name: TOY)
    request = make_request("all", True, tmp_path / "all", None, None, progress=False, jobs=1)
    outcomes = reproduce_all(request)
    assert set(outcomes) == {"toy", "toy2"}
    index = (tmp_path / "all" / INDEX_MD).read_text()
    assert "| [toy](toy/report.md) | 1 | 0 | 1 | 1 |" in index
    assert "lowcomm reproduce toy2 --quick" in (tmp_path / "all" / "toy2" / "report.md").read_text()
    assert 'href="toy/report.html"' in (tmp_path / "all" / "index.html").read_text()


def test_reproduce_all_plans_every_study_before_the_first_run(
    tmp_path: Path, notes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lowcomm.experiments.reproduce as reproduce_package

    def refuse(request: Request) -> Plan:
        raise InvalidConfigError("data", "bad", "something else", "x")

    bad = Study("bad", "Bad", "nowhere", refuse, findings)
    monkeypatch.setattr(reproduce_package, "REPRODUCTIONS", {"toy": "toy", "bad": "bad"})
    monkeypatch.setattr(reproduce_package, "study_of", {"toy": TOY, "bad": bad}.get)
    request = make_request("all", True, tmp_path / "all", None, None, progress=False, jobs=1)
    with pytest.raises(InvalidConfigError):
        reproduce_all(request)
    assert not (tmp_path / "all" / "toy").exists()


def test_requests_refuse_bad_jobs_and_data_for_all() -> None:
    assert make_request("sasg", True, None, None, None, False, jobs=3).jobs == 3
    for name, data, jobs in (("sasg", None, 0), ("all", "digits", 1), ("nope", None, 1)):
        with pytest.raises(InvalidConfigError):
            make_request(name, True, None, data, None, False, jobs=jobs)


def test_the_command_line_refuses_data_with_all(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["reproduce", "all", "--data", "digits", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    assert "--data" in result.stderr and "left out with NAME all" in result.stderr
    assert not (tmp_path / "x").exists()


WORDING = """
[slope]
claim = "rounds grow like K^$power"
paper = "$$5 of compute"
criterion = "every slope in [$low, $high]"

[ratio]
claim = "linear is as good as constant"
paper = "same accuracy"
criterion = "ratio <= ${ratio}x"
"""


def test_claim_texts_fill_the_placeholders_and_refuse_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "toy.claims.toml").write_text(WORDING)
    monkeypatch.setattr(report_module, "NOTES", tmp_path)
    values = {"power": 0.5, "low": 0.45, "high": 0.55, "ratio": 1.5, "unused": 7}
    texts = claim_texts("toy", values)
    assert list(texts) == ["slope", "ratio"]  # the file's order, the report's
    assert texts["slope"] == ClaimText(
        "rounds grow like K^0.5", "$5 of compute", "every slope in [0.45, 0.55]"
    )
    assert texts["ratio"].judged("1.2x", True) == Claim(
        "linear is as good as constant", "same accuracy", "ratio <= 1.5x", "1.2x", True
    )
    assert texts["ratio"].unjudged("too few runs") == Claim(
        "linear is as good as constant",
        "same accuracy",
        "ratio <= 1.5x",
        "not judged at quick size: too few runs",
        None,
    )
    with pytest.raises(KeyError, match="ratio"):
        claim_texts("toy", {"power": 0.5, "low": 0.45, "high": 0.55})


def test_shared_data_finds_what_the_root_holds_and_names_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "phishing").mkdir()
    (tmp_path / "phishing" / "phishing.gz").write_bytes(b"")
    monkeypatch.setenv("LOWCOMM_DATASETS", str(tmp_path))
    found, note = shared_data(["a9a", "phishing", "wikitext-2"])
    assert found == {"phishing": f"libsvm:{tmp_path}/phishing/phishing.gz,n_features=68"}
    assert note == f"a9a, wikitext-2 not found in {tmp_path}"
    assert shared_data(["phishing"]) == (found, "")
    assert shared_data([]) == ({}, "")


def test_a_chart_is_drawn_as_declared() -> None:
    band = {"low": [0.5, 0.05, 1.5, 0.1], "high": [1.5, 0.2, 2.5, 0.3]}
    points = pd.DataFrame({"line": ["a", "a", "b", "b"], "x": [1, 2, 1, 2]})
    points = points.assign(y=[1.0, 0.1, 2.0, 0.2], **band)
    cells = pd.DataFrame({"x": [0, 1, 0, 1], "y": [0.5, 0.5, 0.9, 0.9], "value": [1.0] * 4})
    cells = cells.assign(text=["p", "q", "r", "s"])
    lines = Panel(points, "K", "gap", "one", log_y=True, lines=(0.5,))
    chart = Chart([lines, Panel(cells, "tau", "mu", heat=True), None], columns=2)
    curves, heat, empty = draw(chart).axes[:3]
    assert (curves.get_xlabel(), curves.get_ylabel(), curves.get_title()) == ("K", "gap", "one")
    assert (curves.get_xscale(), curves.get_yscale()) == ("linear", "log")
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["a", "b"]
    assert len(curves.collections) == 2 and list(curves.lines[2].get_ydata()) == [0.5, 0.5]
    assert [t.get_text() for t in heat.texts] == ["p", "q", "r", "s"] and heat.get_legend() is None
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0.5", "0.9"]
    assert not empty.get_visible()

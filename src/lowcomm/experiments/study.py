"""One runner for every reproduction: a declarative :class:`Study` in, a judged report out.

A study is declared, not programmed: a :class:`Study` names its paper, a ``plan`` that turns a
request into a grid of independent jobs (:class:`Job`: engine runs, or calls of a module-level
function for work that is not a run), and a ``findings`` function that turns the jobs' outputs
into claims, sensitivity results, tables, figures and the facts its Markdown notes quote.
:func:`run_study` does the rest, the same way for every paper: validate the plan before any
run, run or resume the jobs (``jobs`` at a time, each in its own process), judge, and write
``report.md``, a self-contained ``report.html``, ``claims.json`` and one CSV per table.

**Determinism across ``--jobs``.** Every job runs with one torch thread (restored afterwards)
whether the study runs serially or in parallel, so a job's output does not depend on how many
run beside it: ``--jobs 1`` and ``--jobs 8`` write the same numbers (wall-clock columns and the
header's wall time aside).

**Resume.** An engine run is read back when its folder holds a finished run of the same config and
lowcomm version, with its ledger (:func:`run_or_resume`); a call is read back when its folder
holds its table and the same fingerprint (function, arguments, lowcomm version). The simulation
is deterministic, so a resumed study gives the numbers a fresh one would; the version string
does not change with every edit, so resume only across runs of the same code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from string import Template
from typing import Any, TypeAlias

import pandas as pd
import torch
from rich.console import Console

import lowcomm
from lowcomm.engines.progress import count_progress
from lowcomm.experiments.config import RunConfig
from lowcomm.experiments.reproduce import report
from lowcomm.experiments.reproduce.figures import Chart, save
from lowcomm.experiments.reproduce.html import write_html
from lowcomm.experiments.reproduce.report import NOTES, Claim, Outcome, Request
from lowcomm.experiments.results import (
    HISTORY_PARQUET,
    LEDGER_CSV,
    RUN_JSON,
    finished_run,
    read_json,
    save_run,
    write_json,
)
from lowcomm.experiments.run_folder import check_out, hold
from lowcomm.experiments.runner import execute, metadata, prepare

DATASETS_ENV = "LOWCOMM_DATASETS"
SHARED_DATA = {  # name -> --data spec under the data sets' root (the first file must exist)
    "phishing": "libsvm:{root}/phishing/phishing.gz,n_features=68",
    "a9a": "libsvm:{root}/a9a/a9a.gz,{root}/a9a/a9a.t.gz,n_features=123",
    "w8a": "libsvm:{root}/w8a/w8a.gz,n_features=300",
    "mnist": "mnist:{root}/mnist",
    "wikitext-2": "text:{root}/wikitext-2/valid.txt,{root}/wikitext-2/test.txt",  # no train split
}
CALL_JSON = "call.json"
CALL_TABLE = "table.parquet"


@dataclass(frozen=True)
class SavedRun:
    """A study's engine run as saved on disk: its folder, its history, whether it diverged."""

    folder: Path
    history: pd.DataFrame
    diverged: bool

    def ledger(self) -> pd.DataFrame:
        """The ledger's per-(round, worker) records (``ledger.csv``)."""
        return pd.read_csv(self.folder / LEDGER_CSV)


Key: TypeAlias = tuple[str, ...]
Output: TypeAlias = SavedRun | pd.DataFrame
Outputs: TypeAlias = Mapping[Key, Output]  # every job's output, by key


def datasets_root() -> Path:
    """Where the real data sets are: ``$LOWCOMM_DATASETS``, else ``../shared/datasets``."""
    return Path(os.environ.get(DATASETS_ENV, "../shared/datasets"))


def shared_data(names: Sequence[str]) -> tuple[dict[str, str], str]:
    """The ``--data`` specs of the named data sets found under :func:`datasets_root`.

    Returns the specs by name (in the order asked) and a note naming those not found ("" when
    all are there), for the plan's note.
    """
    root = datasets_root()
    specs = {name: SHARED_DATA[name].format(root=root) for name in names}
    found = {name: spec for name, spec in specs.items() if _first_path(spec).exists()}
    missing = [name for name in names if name not in found]
    return found, f"{', '.join(missing)} not found in {root}" if missing else ""


def _first_path(spec: str) -> Path:
    """The first file or folder a ``kind:path,...`` data spec names."""
    return Path(spec.split(":", 1)[1].split(",", 1)[0])


@dataclass(frozen=True)
class Job:
    """One independent unit of a study, saved in ``OUT/<key...>/``.

    Exactly one of ``config`` (a run of the simulate engine) and ``call`` (a module-level
    function of ``args`` returning a DataFrame, for work that is not an engine run) is given.
    """

    key: Key
    config: RunConfig | None = None
    call: Callable[..., pd.DataFrame] | None = None
    args: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if (self.config is None) == (self.call is None):
            raise ValueError(f"job {self.key}: give exactly one of config and call")

    def fingerprint(self) -> str:
        """What a saved call's output must match to be read back."""
        assert self.call is not None
        name = f"{self.call.__module__}.{self.call.__qualname__}"
        return json.dumps([name, repr(self.args), lowcomm.__version__])


@dataclass(frozen=True)
class Plan:
    """A study's grid at one size.

    Attributes:
        jobs: the independent jobs, with distinct keys.
        facts: values fixed before any run (sizes, shared quantities such as optima), for
            ``findings`` and for the notes' ``$name`` placeholders; written to ``claims.json``.
        note: a line shown on stderr and in the report (e.g. a data set that was not found).
    """

    jobs: list[Job]
    facts: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Findings:
    """What a study found.

    Attributes:
        claims: the paper's claims, judged on the paper's own setting.
        sensitivity: results outside the paper's setting, shown beside, never part of a verdict.
        tables: name -> (table, caption); written as ``OUT/<name>.csv`` and shown in the report.
        figures: name -> (chart, caption); drawn to ``OUT/<name>.png`` and shown.
        facts: values the notes' ``$name`` placeholders quote (added to the plan's).
        files: name -> table written as ``OUT/<name>.csv`` only (too long to show).
    """

    claims: list[Claim]
    sensitivity: list[Claim] = field(default_factory=list)
    tables: dict[str, tuple[pd.DataFrame, str]] = field(default_factory=dict)
    figures: dict[str, tuple[Chart, str]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A paper's reproduction, declared.

    Attributes:
        name: the name ``lowcomm reproduce`` takes; also the notes' file name.
        title: the report's title.
        paper_source: where the paper-run column's values come from.
        plan: the grid a request asks for; raises before any run on a bad request.
        findings: the claims, tables and figures, from the plan and the jobs' outputs by key.
    """

    name: str
    title: str
    paper_source: str
    plan: Callable[[Request], Plan]
    findings: Callable[[Plan, Outputs], Findings]

    def notes(self) -> str:
        """The study's Markdown notes (setup, method, departures), with ``$name`` placeholders."""
        return (NOTES / f"{self.name}.md").read_text()


# --- running the jobs --------------------------------------------------------------------------


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with one torch thread, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_job(job: Job, folder: Path, resume: bool) -> Output:
    """Run one job (or with ``resume`` read it back) in ``folder``, with one torch thread."""
    with one_thread():
        if job.config is not None:
            return run_or_resume(job.config, folder, resume)
        return call_or_resume(job, folder, resume)


def run_or_resume(config: RunConfig, folder: Path, resume: bool) -> SavedRun:
    """Run ``config`` on the simulate engine and save it with its ledger in ``folder``.

    With ``resume``, a finished run of the same config already there is read back instead.
    """
    saved = finished_run(folder, config, lowcomm.__version__) and (folder / LEDGER_CSV).is_file()
    if not (resume and saved):
        prepared = prepare(config)
        result = execute(prepared, False)
        assert result is not None, "the simulate engine always returns a result"
        save_run(folder, result, metadata(prepared), ledger=True)
    summary = read_json(folder / RUN_JSON)["summary"]
    history = pd.read_parquet(folder / HISTORY_PARQUET)
    return SavedRun(folder, history, summary["divergence"] is not None)


def call_or_resume(job: Job, folder: Path, resume: bool) -> pd.DataFrame:
    """A call job's table, computed and saved, or read back if saved with the same fingerprint."""
    stamp, table = folder / CALL_JSON, folder / CALL_TABLE
    if resume and stamp.is_file() and table.is_file() and stamp.read_text() == job.fingerprint():
        return pd.read_parquet(table)
    assert job.call is not None
    result = job.call(*job.args)
    folder.mkdir(parents=True, exist_ok=True)
    result.to_parquet(table)
    stamp.write_text(job.fingerprint())
    return pd.read_parquet(table)  # what a resumed study reads back, dtypes included


def run_jobs(
    jobs: Sequence[Job],
    out: Path,
    workers: int,
    progress: bool,
    resume: bool,
    label: str = "runs",
) -> dict[Key, Output]:
    """Every job's output by key: ``workers`` processes at a time (in this process for 1).

    ``progress``: jobs done so far on stderr under ``label`` (a bar, or lines in a log).
    """
    folders = [out.joinpath(*job.key) for job in jobs]
    outputs: dict[Key, Output] = {}
    with count_progress(progress, len(jobs), label) as advance:
        if workers <= 1:
            for job, folder in zip(jobs, folders, strict=True):
                outputs[job.key] = run_job(job, folder, resume)
                advance()
            return outputs
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            pending = {
                pool.submit(run_job, job, folder, resume): job.key
                for job, folder in zip(jobs, folders, strict=True)
            }
            try:
                for done in as_completed(pending):
                    outputs[pending[done]] = done.result()
                    advance()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    return {job.key: outputs[job.key] for job in jobs}


# --- the report --------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits (``-`` for NaN), anything else as text."""
    return report.number(value) if isinstance(value, float) else str(value)


def frame_table(table: pd.DataFrame) -> str:
    """A DataFrame (index dropped) as a markdown table."""
    rows = [[cell(value) for value in row] for row in table.itertuples(index=False)]
    return report.markdown_table([str(column) for column in table.columns], rows)


def summary_line(claims: Sequence[Claim]) -> str:
    """``k of n claims PASS`` on the paper's setting, with those not judged."""
    judged = [c for c in claims if c.passed is not None]
    line = f"{sum(bool(c.passed) for c in judged)} of {len(judged)} judged claims PASS"
    unjudged = len(claims) - len(judged)
    return line + (f"; {unjudged} not judged at this size" if unjudged else "")


def sections(study: Study, plan: Plan, found: Findings, request: Request, wall: float) -> list[str]:
    """The sections of ``report.md``: header, claims, sensitivity, notes, tables, figures."""
    facts = {**plan.facts, **found.facts}
    runs = f"- Jobs: {len(plan.jobs)}, {request.jobs} at a time, one torch thread each"
    parts = [
        report.header(study.title, request.command, wall) + "\n" + runs,
        f"## Claims\n\n{summary_line(found.claims)} (the paper's own setting). The paper-run "
        f"column is context from {study.paper_source}, not a measurement of this run.\n\n"
        + report.claims_table(found.claims),
    ]
    if found.sensitivity:
        parts.append(
            "## Sensitivity results\n\nOutside the paper's setting: reported beside the claims, "
            "never part of their verdicts.\n\n" + report.claims_table(found.sensitivity)
        )
    if plan.note:
        parts.append(f"> Note: {plan.note}")
    parts.append(Template(study.notes()).substitute({k: str(v) for k, v in facts.items()}))
    for name, (table, caption) in found.tables.items():
        parts.append(f"## {caption}\n\n{frame_table(table)}\n\n(`{name}.csv`)")
    if found.figures:
        out = request.out
        shown = [
            report.embed(out / f"{name}.png", caption, out)
            for name, (_, caption) in found.figures.items()
        ]
        parts.append("## Figures\n\n" + "\n\n".join(shown))
    return parts


def write_outputs(study: Study, plan: Plan, found: Findings, request: Request, wall: float) -> Path:
    """Write the tables, figures, ``claims.json``, ``report.md`` and ``report.html``."""
    out = request.out
    shown = {name: table for name, (table, _) in found.tables.items()}
    for name, table in (shown | found.files).items():
        table.to_csv(out / f"{name}.csv", index=False)
    for name, (chart, _) in found.figures.items():
        save(chart, out / f"{name}.png")
    extra = {"study": study.name, "facts": {**plan.facts, **found.facts}, "wall_time_s": wall}
    extra["sensitivity"] = [c.as_json() for c in found.sensitivity]
    write_json(out / report.CLAIMS_JSON, extra | {"claims": [c.as_json() for c in found.claims]})
    written = report.write_report(
        out / report.REPORT_MD, sections(study, plan, found, request, wall)
    )
    write_html(written)
    return written


def planned(study: Study, request: Request) -> tuple[Plan, float]:
    """The study's plan, validated (nothing runs), and the seconds planning took."""
    start = time.perf_counter()
    check_out(request.out)
    plan = study.plan(request)
    keys = [job.key for job in plan.jobs]
    if len(set(keys)) < len(keys):
        raise ValueError(f"study {study.name}: two jobs share a key")
    return plan, time.perf_counter() - start


def run_study(study: Study, request: Request, plan: tuple[Plan, float] | None = None) -> Outcome:
    """Plan (validating everything), run or resume the jobs, judge, and write the report.

    ``plan``: the study's plan and its planning time, when made beforehand (``reproduce all``
    plans every study before the first runs). The wall time in the report's header covers the
    whole study: planning, runs and report.
    """
    start = time.perf_counter()
    made, planning = plan or planned(study, request)
    if made.note and request.progress:
        Console(stderr=True).print(f"note: {made.note}", highlight=False)
    with hold(request.out):  # one study at a time writes a folder
        outputs = run_jobs(
            made.jobs, request.out, request.jobs, request.progress, request.resume, study.name
        )
        found = study.findings(made, outputs)
        wall = time.perf_counter() - start + (planning if plan else 0.0)
        written = write_outputs(study, made, found, request, wall)
    return Outcome(
        request.out,
        written,
        tuple(found.claims),
        study.paper_source,
        wall,
        tuple(found.sensitivity),
    )

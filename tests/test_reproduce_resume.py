"""``lowcomm reproduce --resume``: finished runs of the same config are read back, never rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import lowcomm
from lowcomm.experiments import study as study_module
from lowcomm.experiments.config import make_config
from lowcomm.experiments.reproduce import make_request
from lowcomm.experiments.results import RUN_JSON, finished_run

CONFIG = make_config(
    {"data": "synthetic-logistic:200,4", "workers": 2, "rounds": 5, "algorithm": "gd"}
)


def forbid_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any run of the simulate engine fail the test."""

    def fail(*_: object) -> None:
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(study_module, "execute", fail)


def test_a_saved_run_is_finished_only_for_its_own_config_and_version(tmp_path: Path) -> None:
    study_module.run_or_resume(CONFIG, tmp_path, resume=False)
    version = lowcomm.__version__
    assert finished_run(tmp_path, CONFIG, version)
    assert not finished_run(tmp_path, CONFIG.model_copy(update={"rounds": 6}), version)
    assert not finished_run(tmp_path, CONFIG, "0.0.0")
    # a setting added after the run was saved counts at its default
    meta = json.loads((tmp_path / RUN_JSON).read_text())
    del meta["config"]["async_order"]
    (tmp_path / RUN_JSON).write_text(json.dumps(meta))
    assert finished_run(tmp_path, CONFIG, version)
    changed = CONFIG.model_copy(update={"async_order": "arrival"})
    assert not finished_run(tmp_path, changed, version)
    (tmp_path / RUN_JSON).unlink()
    assert not finished_run(tmp_path, CONFIG, version)


def test_resume_reads_back_the_same_run_and_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = study_module.run_or_resume(CONFIG, tmp_path, resume=False)
    forbid_running(monkeypatch)
    again = study_module.run_or_resume(CONFIG, tmp_path, resume=True)
    pd.testing.assert_frame_equal(again.history, fresh.history)
    pd.testing.assert_frame_equal(again.ledger(), fresh.ledger())
    assert int(again.ledger()["uploads"].sum()) == int(fresh.history["uploads"].iloc[-1])


def test_an_interrupted_run_and_a_changed_config_are_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_module.run_or_resume(CONFIG, tmp_path, resume=False)
    (tmp_path / RUN_JSON).unlink()
    calls: list[object] = []
    real = study_module.execute
    monkeypatch.setattr(study_module, "execute", lambda *a: calls.append(a) or real(*a))
    study_module.run_or_resume(CONFIG, tmp_path, resume=True)
    longer = CONFIG.model_copy(update={"rounds": 7})
    again = study_module.run_or_resume(longer, tmp_path, resume=True)
    assert len(calls) == 2
    assert int(again.history["round"].iloc[-1]) == 7


def test_resume_is_a_flag_of_every_reproduction_and_named_in_the_command() -> None:
    request = make_request("cdgrab", True, None, None, None, False, resume=True)
    assert request.resume
    assert request.command == "lowcomm reproduce cdgrab --quick --resume"

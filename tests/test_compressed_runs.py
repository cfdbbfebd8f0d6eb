"""Compressed uploads end to end: the issue's acceptance run and the bytes the ledger bills."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.test_cli import lowcomm


def run(out: Path, *sets: str) -> pd.DataFrame:
    flags = [item for s in sets for item in ("--set", s)]
    result = lowcomm(
        "run",
        "--algorithm",
        "sgd",
        "--data",
        "digits",
        "--rounds",
        "100",
        *flags,
        "--out",
        out,
        "-q",
    )
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "history.csv")


def test_scaled_sign_with_error_feedback_matches_dense_sgd_at_a_thirtieth_of_the_bytes(
    tmp_path: Path,
) -> None:
    dense = run(tmp_path / "dense")
    signs = run(tmp_path / "sign", "compressor=sign", "error_feedback=true")
    assert signs["train_loss"].iloc[-1] <= 1.1 * dense["train_loss"].iloc[-1]
    assert dense["bytes_up"].iloc[-1] >= 25 * signs["bytes_up"].iloc[-1]
    # softmax on digits: d = 64 * 10 = 640 signs (80 bytes) + one float32 scale, 8 workers
    assert signs["bytes_up"].iloc[-1] == 100 * 8 * (640 // 8 + 4)
    assert signs["bytes_down"].iloc[-1] == dense["bytes_down"].iloc[-1]

"""The ledger: the exact record of every message and every oracle call, per worker and round.

Engines are the only writers. Byte counts come from the payloads themselves
(:meth:`lowcomm.core.messages.Upload.nbytes`), never from an estimate. Two counting conventions
are kept side by side: ``uploads`` (one per worker message, as the LAG/SASG papers count) and
``sync_rounds`` (one per broadcast-and-gather exchange, as the Newton papers count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COUNTERS = ("uploads", "downloads", "bytes_up", "bytes_down", "grad_evals", "hvps")


@dataclass
class Ledger:
    """Cumulative per-worker counters plus one record per (round, worker) with any activity."""

    n_workers: int
    sync_rounds: int = 0
    totals: dict[str, np.ndarray] = field(init=False)
    _records: list[tuple[int, str, np.ndarray | int, np.ndarray | int]] = field(init=False)

    def __post_init__(self) -> None:
        self.totals = {name: np.zeros(self.n_workers, dtype=np.int64) for name in COUNTERS}
        self._records = []

    def _add(self, round_: int, counter: str, workers: np.ndarray, amounts: np.ndarray) -> None:
        if workers.size == 1:  # one worker (an asynchronous update): no masks, no np.add.at
            if amounts[0]:
                amounts = amounts.astype(np.int64)
                self.totals[counter][workers[0]] += amounts[0]
                self._records.append((round_, counter, workers.copy(), amounts))
            return
        keep = amounts != 0
        workers, amounts = workers[keep], amounts[keep].astype(np.int64)
        if workers.size:
            np.add.at(self.totals[counter], workers, amounts)
            self._records.append((round_, counter, workers, amounts))

    def one(self, round_: int, worker: int, **amounts: int) -> None:
        """Record ``amounts`` (counter: amount) of one worker in one round, as Python integers.

        The one worker of an asynchronous update: no arrays (zero amounts are not recorded).
        """
        for counter, amount in amounts.items():
            if amount:
                self.totals[counter][worker] += amount
                self._records.append((round_, counter, worker, amount))

    def upload(
        self, round_: int, workers: np.ndarray, sent: np.ndarray, nbytes: np.ndarray
    ) -> None:
        """Record the messages of ``workers`` that have ``sent`` set, with their byte sizes."""
        self._add(round_, "uploads", workers, sent.astype(np.int64))
        self._add(round_, "bytes_up", workers, np.where(sent, nbytes, 0))

    def download(self, round_: int, workers: np.ndarray, nbytes: np.ndarray) -> None:
        """Record one download to each of ``workers``."""
        self._add(round_, "downloads", workers, np.ones_like(workers))
        self._add(round_, "bytes_down", workers, nbytes)

    def compute(
        self, round_: int, workers: np.ndarray, grad_evals: np.ndarray, hvps: np.ndarray
    ) -> None:
        """Record the gradient evaluations and Hessian-vector products of ``workers``."""
        self._add(round_, "grad_evals", workers, grad_evals)
        self._add(round_, "hvps", workers, hvps)

    def sync_round(self) -> None:
        """Count one broadcast-and-gather exchange."""
        self.sync_rounds += 1

    def total(self, counter: str) -> int:
        """Sum of ``counter`` over all workers."""
        return int(self.totals[counter].sum())

    def snapshot(self) -> dict[str, int]:
        """The cumulative totals as history columns."""
        out = {name: self.total(name) for name in COUNTERS}
        out["sync_rounds"] = self.sync_rounds
        return out

    def records(self) -> pd.DataFrame:
        """One row per (round, worker) with activity, one column per counter."""
        if not self._records:
            return pd.DataFrame(columns=["round", "worker", *COUNTERS])
        sizes = [np.size(workers) for _, _, workers, _ in self._records]
        long = pd.DataFrame(  # one frame built at once: a frame per record cost ~0.3 ms each
            {
                "round": np.repeat([r for r, _, _, _ in self._records], sizes),
                "worker": np.concatenate([np.atleast_1d(w) for _, _, w, _ in self._records]),
                "counter": np.repeat([c for _, c, _, _ in self._records], sizes),
                "amount": np.concatenate([np.atleast_1d(a) for _, _, _, a in self._records]),
            }
        )
        wide = long.pivot_table(
            index=["round", "worker"], columns="counter", values="amount", aggfunc="sum"
        )
        wide = wide.reindex(columns=list(COUNTERS)).fillna(0).astype(np.int64)
        return wide.reset_index().rename_axis(columns=None)

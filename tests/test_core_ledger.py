import pickle

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lowcomm.core.ledger import COUNTERS, Ledger


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 1000)), max_size=30))
def test_totals_equal_the_sum_of_the_records(messages: list[tuple[int, bool, int]]) -> None:
    ledger = Ledger(4)
    for round_, (worker, sent, nbytes) in enumerate(messages):
        ledger.upload(round_, np.array([worker]), np.array([sent]), np.array([nbytes]))
        ledger.download(round_, np.array([worker]), np.array([nbytes]))
    records = ledger.records()
    for counter in COUNTERS:
        per_worker = records.groupby("worker")[counter].sum().reindex(range(4), fill_value=0)
        assert per_worker.tolist() == ledger.totals[counter].tolist()
    assert ledger.total("uploads") == sum(sent for _, sent, _ in messages)
    assert ledger.total("bytes_up") == sum(b for _, sent, b in messages if sent)


def test_skipped_uploads_cost_nothing_and_count_no_upload() -> None:
    ledger = Ledger(3)
    ledger.upload(1, np.arange(3), np.array([True, False, True]), np.array([40, 40, 40]))
    assert ledger.totals["uploads"].tolist() == [1, 0, 1]
    assert ledger.totals["bytes_up"].tolist() == [40, 0, 40]


def test_snapshot_has_every_counter_and_sync_rounds() -> None:
    ledger = Ledger(2)
    ledger.compute(1, np.arange(2), np.array([3, 4]), np.array([0, 1]))
    ledger.sync_round()
    assert ledger.snapshot() == {
        "uploads": 0,
        "downloads": 0,
        "bytes_up": 0,
        "bytes_down": 0,
        "grad_evals": 7,
        "hvps": 1,
        "sync_rounds": 1,
    }


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 99), st.integers(0, 5)),
        max_size=20,
    )
)
def test_one_worker_calls_record_what_the_general_path_records(
    calls: list[tuple[int, bool, int, int]],
) -> None:
    one, general = Ledger(4), Ledger(4)
    for round_, (worker, sent, nbytes, grads) in enumerate(calls):
        one.upload(round_, np.array([worker]), np.array([sent]), np.array([nbytes]))
        one.compute(round_, np.array([worker]), np.array([grads]), np.array([0]))
        pair = np.array([worker, (worker + 1) % 4])  # the second worker does nothing
        general.upload(round_, pair, np.array([sent, False]), np.array([nbytes, 7]))
        general.compute(round_, pair, np.array([grads, 0]), np.array([0, 0]))
    for counter in COUNTERS:
        assert one.totals[counter].tolist() == general.totals[counter].tolist()
    assert pickle.dumps(one._records) == pickle.dumps(general._records)  # checkpoints alike

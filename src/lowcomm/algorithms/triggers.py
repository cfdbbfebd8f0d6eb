"""Lazy triggers: who uploads in a round of the lazy family (LAG, LASG), over any compressor.

A trigger decides, from the round's fresh gradients, which workers send; it has its own
explicit state at the workers and at the aggregator, and pure functions around it (the shape of
an algorithm, :mod:`lowcomm.algorithms.base`). The aggregator's threshold over the newest model
differences (LAG: Chen, Giannakis, Sun and Yin, NeurIPS 2018; LASG: Chen, Sun and Yin, arXiv
2002.11360),

    thr_k = sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2 / (lr^2 M^2),

is computed by :class:`~lowcomm.algorithms.lazy.LazyAggregation` and handed to the trigger:

* :class:`Always`: every worker every round (top-k with error feedback, ``topk-ef``);
* :class:`LASGWK2`: on the same fresh mini-batch, worker m sends iff
  ||g(theta^k) - g(theta_hat_m)||^2 > thr_k, theta_hat_m the model of its last upload (LASG-WK2;
  ``reference="previous-iterate"`` compares with the previous iterate instead, the SASG
  authors' multi-process variant);
* :class:`LAGWK`: the same with the worker's gradient compared with its last uploaded one
  (LAG-WK);
* :class:`LAGPS`: the aggregator asks worker m iff L_m^2 ||theta_hat_m - theta^k||^2 > thr_k
  and only asked workers compute their full local gradient (LAG-PS). Each worker's smoothness
  L_m is estimated by power iteration of its local Hessian at the initial model (30 HVPs,
  exact for logistic regression started at 0, where its Hessian is largest) and piggy-backed
  on its first upload.

Every worker sends in the first ``window`` (D) rounds and after D consecutive skips. What is
sent (compressed, with or without error feedback) is not the trigger's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from lowcomm.algorithms.base import Context, NoState
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.messages import AnyPayload, Scalars, SignBits

REFERENCES = ("last-upload", "previous-iterate")
POWER_ITERATIONS = 30
Extra = Scalars | SignBits
"""What a trigger adds to the model it downloads or the message it uploads."""


class WorkerView(NamedTuple):
    """What a group of workers has in a round.

    The model rows ``params[w, d]``, what the download carried besides the model (``extra``),
    their data, the positions of the round's batch (``batch``; None: the whole shard) and the
    context.
    """

    params: torch.Tensor
    extra: AnyPayload | None
    data: LocalData
    batch: torch.Tensor | None
    ctx: Context


class Step(NamedTuple):
    """What the aggregator did in a round.

    Who sent (``sent[M]``), the model before and after the step, the threshold for the next
    round and the context.
    """

    sent: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor
    threshold: torch.Tensor
    ctx: Context


class Decision(NamedTuple):
    """A round at the workers: fresh gradients ``[w, d]``, who sends ``[w]``, the new state.

    No state refers to ``grad``: the caller may overwrite it.
    """

    grad: torch.Tensor
    sent: torch.Tensor
    state: Any


class Trigger(Protocol):
    """Who uploads: worker state, aggregator state and the functions between them."""

    def init_workers(self, rows: int, dim: int, dtype: torch.dtype, device: torch.device) -> Any:
        """The trigger state of ``rows`` workers before their first upload."""
        ...

    def init(self, params: torch.Tensor, workers: int) -> Any:
        """The aggregator's trigger state at the initial model ``params[d]``."""
        ...

    def download(self, state: Any, threshold: torch.Tensor) -> Extra | None:
        """What the download carries besides the model (None: nothing)."""
        ...

    def decide(self, state: Any, view: WorkerView) -> Decision:
        """Who sends this round, from the fresh gradients at ``view.params``."""
        ...

    def piggyback(self, view: WorkerView) -> Extra | None:
        """What an upload carries besides the message (None: nothing)."""
        ...

    def update(self, state: Any, piggyback: AnyPayload | None, step: Step) -> Any:
        """The aggregator's trigger state after ``step``, given the uploads' ``piggyback``."""
        ...


class _Quiet:
    """The parts of a trigger that keep no aggregator state and add nothing to uploads."""

    def init(self, params: torch.Tensor, workers: int) -> NoState:
        """No aggregator state."""
        return NoState()

    def piggyback(self, view: WorkerView) -> None:
        """Nothing besides the message."""
        return None

    def update(self, state: NoState, piggyback: AnyPayload | None, step: Step) -> NoState:
        """Still nothing."""
        return state


@dataclass(frozen=True)
class Always(_Quiet):
    """Every worker uploads every round; the download is the model alone."""

    def init_workers(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device
    ) -> NoState:
        return NoState()

    def download(self, state: NoState, threshold: torch.Tensor) -> None:  # noqa: D102
        return None

    def decide(self, state: NoState, view: WorkerView) -> Decision:  # noqa: D102
        sent = torch.ones(view.params.shape[0], dtype=torch.bool, device=view.params.device)
        return Decision(view.data.grad(view.params, view.batch), sent, state)


class Anchors(NamedTuple):
    """Per worker: what its fresh gradient is compared with, and its rounds since it sent.

    The anchor is the model of its last upload (LASG-WK2) or its last uploaded gradient
    (LAG-WK); the staleness is 1 right after an upload.
    """

    anchor: torch.Tensor
    staleness: torch.Tensor


@dataclass(frozen=True)
class _WorkerRule(_Quiet):
    """A rule each worker applies (LASG-WK2, LAG-WK): the download carries the threshold."""

    window: int

    def init_workers(
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device
    ) -> Anchors:
        """Zero anchors; no upload yet."""
        zeros = torch.zeros(rows, dim, dtype=dtype, device=device)
        return Anchors(zeros, torch.zeros(rows, dtype=torch.int64, device=device))

    def download(self, state: NoState, threshold: torch.Tensor) -> Scalars:
        """The threshold (one value, 4 bytes in float32)."""
        return Scalars(threshold.reshape(1, 1))

    def _due(
        self, change: Callable[[], torch.Tensor], view: WorkerView, staleness: torch.Tensor
    ) -> torch.Tensor:
        """Who sends, given each worker's squared gradient ``change``.

        Everyone in the first D rounds (``change`` is not computed then); afterwards those whose
        change exceeds the threshold, and those that skipped D rounds in a row.
        """
        if view.ctx.round < self.window:
            return torch.ones(staleness.shape[0], dtype=torch.bool, device=staleness.device)
        assert isinstance(view.extra, Scalars)
        return (change() > view.extra.values[:, 0]) | (staleness > self.window)


@dataclass(frozen=True)
class LASGWK2(_WorkerRule):
    """LASG-WK2: the fresh mini-batch's gradient change since the worker's reference model."""

    reference: str = "last-upload"

    def decide(self, state: Anchors, view: WorkerView) -> Decision:  # noqa: D102
        params, data, batch = view.params, view.data, view.batch
        grad = data.grad(params, batch)

        def change() -> torch.Tensor:
            other = data.grad(state.anchor, batch)
            return _squared(torch.sub(grad, other, out=other))

        sent = self._due(change, view, state.staleness)
        anchor = params if self.reference == "previous-iterate" else state.anchor
        new = Anchors(tree.select(sent, params, anchor), _skips(sent, state.staleness))
        return Decision(grad, sent, new)


@dataclass(frozen=True)
class LAGWK(_WorkerRule):
    """LAG-WK: the worker's gradient change since its last uploaded gradient."""

    def decide(self, state: Anchors, view: WorkerView) -> Decision:  # noqa: D102
        grad = view.data.grad(view.params, view.batch)
        sent = self._due(lambda: _squared(grad - state.anchor), view, state.staleness)
        new = Anchors(tree.select(sent, grad, state.anchor), _skips(sent, state.staleness))
        return Decision(grad, sent, new)


class Requests(NamedTuple):
    """LAG-PS at the aggregator, per worker.

    Asked next round, the model of its last upload, the rounds since it (1 = just sent) and its
    smoothness L_m (0 until its first upload).
    """

    asked: torch.Tensor
    reference: torch.Tensor
    staleness: torch.Tensor
    smoothness: torch.Tensor


@dataclass(frozen=True)
class LAGPS:
    """LAG-PS: the aggregator asks the workers whose model drift may change their gradient."""

    window: int

    def init_workers(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device
    ) -> NoState:
        return NoState()

    def init(self, params: torch.Tensor, workers: int) -> Requests:
        """Everyone is asked; no smoothness known yet."""
        return Requests(
            torch.ones(workers, dtype=torch.bool, device=params.device),
            params.expand(workers, params.shape[0]).clone(),
            torch.zeros(workers, dtype=torch.int64, device=params.device),
            params.new_zeros(workers),
        )

    def download(self, state: Requests, threshold: torch.Tensor) -> SignBits:
        """One request bit per worker (the threshold stays at the aggregator)."""
        return SignBits(state.asked[None])

    def decide(self, state: NoState, view: WorkerView) -> Decision:
        """Asked workers send their full local gradient (``view.batch`` is not used)."""
        assert isinstance(view.extra, SignBits)
        params = view.params
        rows = torch.arange(params.shape[0], device=params.device)
        asked = view.extra.signs[rows, view.ctx.workers]
        grad = view.data.grad_of_rows(params, torch.nonzero(asked).flatten())
        return Decision(grad, asked, state)

    def piggyback(self, view: WorkerView) -> Scalars | None:
        """Each worker's smoothness estimate, with its first upload (round 0, when all send)."""
        if view.ctx.round:
            return None
        return Scalars(_power_iteration(view.data, view.params)[:, None])

    def update(self, state: Requests, piggyback: AnyPayload | None, step: Step) -> Requests:
        """Whom to ask next round: L_m^2 ||theta_hat_m - theta^{k+1}||^2 > thr, or forced."""
        smoothness = state.smoothness
        if piggyback is not None:
            assert isinstance(piggyback, Scalars)
            smoothness = piggyback.values[:, 0]
        before = step.before.expand_as(state.reference)
        reference = tree.select(step.sent, before, state.reference)
        staleness = _skips(step.sent, state.staleness)
        drift = smoothness**2 * _squared(reference - step.after)
        warm = step.ctx.round + 1 < self.window
        asked = (drift > step.threshold) | (staleness > self.window) | warm
        return Requests(asked, reference, staleness, smoothness)


def _squared(rows: torch.Tensor) -> torch.Tensor:
    """Squared norm of each row of ``rows[w, d]``, a temporary (squared in place: no copy)."""
    return rows.square_().sum(dim=1)


def _skips(sent: torch.Tensor, staleness: torch.Tensor) -> torch.Tensor:
    """Rounds since each worker's last upload after this round (1 for the senders)."""
    return torch.where(sent, 1, staleness + 1)


def _power_iteration(data: LocalData, params: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of each worker's local Hessian at ``params`` (power iteration)."""
    v = torch.ones_like(params)
    estimate = params.new_zeros(params.shape[0])
    for _ in range(POWER_ITERATIONS):
        v = v / v.norm(dim=1, keepdim=True)
        hv = data.hvp(params, v)
        estimate = (hv * v).sum(dim=1)
        v = hv
    return estimate

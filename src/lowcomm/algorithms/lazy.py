"""Lazily aggregated, optionally sparsified gradients: ``sasg``, ``lasg``, ``lag``, ``topk-ef``.

One family, composed from two independent parts (SASG = a lazy trigger over an error-feedback
top-k uploader; Deng et al., arXiv 2112.04088), following the SASG authors' notebooks:

* **Uploader.** A worker that sends uploads ``C(lr * g + e)``: the step size is folded into the
  message before compression; ``C`` is top-k per parameter tensor (k_j = max(1, floor(density *
  d_j))) with error feedback ``e <- v - C(v)`` (Stich et al., 2018), or the identity (dense).
* **Trigger** (the LAG/LASG rules; Chen et al., NeurIPS 2018; Chen, Sun and Yin, 2020), with the
  aggregator's threshold over the newest model differences,

      thr_k = sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2 / (lr^2 M^2),

  broadcast with the model (4 bytes). ``lasg-wk2``: on the same fresh mini-batch, worker m
  uploads iff ||g(theta^k) - g(theta_hat_m)||^2 > thr_k, theta_hat_m the model of its last
  upload. ``lag-wk``: the same with full local gradients, compared with the last uploaded one.
  ``lag-ps``: the aggregator asks worker m iff L_m^2 ||theta_hat_m - theta^k||^2 > thr_k, and
  only asked workers compute. Every worker uploads in the first ``window`` (D) rounds and after
  D consecutive skips.
* **Aggregator.** theta^{k+1} = theta^k - sum_m Delta_m: fresh messages of senders, the stored
  last message of skippers (the SUM convention of the LAG family; no 1/M).

A skipping worker's fresh gradient is discarded and its error memory is unchanged.

Choices where the sources leave room (see ../shared/papers/sasg-and-localnewton.md):
``xi_d = threshold * lr`` for the D - 1 differences a window of D models holds (the notebooks'
``c * S / (lr M^2)``) for ``sasg``/``lasg``, and ``xi_d = threshold / D`` over D differences (the
official LAG code) for ``lag``; ``xi`` overrides both. ``reference="previous-iterate"`` gives the
authors' multi-process variant (theta_hat_m = the previous iterate). LAG-PS needs each worker's
smoothness L_m: workers estimate it by power iteration of their local Hessian at the initial
model (30 HVPs, exact for logistic regression started at 0, where its Hessian is largest) and
send it with their first upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.compress.base import Compressor, DrawKey, Identity
from lowcomm.compress.error_feedback import ErrorFeedback, decompress
from lowcomm.compress.topk import TopKPerTensor
from lowcomm.core import tree
from lowcomm.core.messages import AnyPayload, Bundle, Dense, Download, Scalars, SignBits, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem

RULES = ("always", "lasg-wk2", "lag-wk", "lag-ps")
REFERENCES = ("last-upload", "previous-iterate")
POWER_ITERATIONS = 30


@dataclass(frozen=True)
class LazySpec:
    """The resolved recipe of one member of the family (built from its public config)."""

    lr: float
    batch_size: int | None
    sampling: str
    rule: str
    window: int
    weights: tuple[float, ...]
    reference: str
    density: float | None


class LazyWorkers(NamedTuple):
    """Per worker: model of the last upload, last uploaded gradient, skips in a row, memory."""

    reference: torch.Tensor
    last_grad: torch.Tensor
    staleness: torch.Tensor
    memory: Any


class LazyAggregator(NamedTuple):
    """Model, last message of every worker, newest squared model differences, LAG-PS records."""

    params: torch.Tensor
    last: torch.Tensor
    diffs: torch.Tensor
    senders: torch.Tensor
    threshold: torch.Tensor
    asked: torch.Tensor
    reference: torch.Tensor
    staleness: torch.Tensor
    smoothness: torch.Tensor


class LazyAggregation:
    """A lazy trigger over a (compressing) uploader; see the module docstring."""

    synchronous = True

    def __init__(self, name: str, spec: LazySpec) -> None:
        self.name = name
        self.spec = spec

    def _compressor(self, problem: Problem) -> Compressor:
        if self.spec.density is None:
            return Identity()
        return ErrorFeedback(TopKPerTensor(self.spec.density, problem.segments))

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[LazyAggregator, Download]:
        """Initial model; every worker is asked and uploads in the first ``window`` rounds."""
        params = problem.init_params(streams.generator("init"))
        m, d = sizes.shape[0], params.shape[0]
        zeros = torch.zeros(m, dtype=params.dtype)
        state = LazyAggregator(
            params,
            torch.zeros(m, d, dtype=params.dtype),
            torch.zeros(len(self.spec.weights), dtype=params.dtype),
            torch.tensor(m),
            torch.zeros((), dtype=params.dtype),
            torch.ones(m, dtype=torch.bool),
            params.expand(m, d).clone() if self.spec.rule == "lag-ps" else zeros[:, None][:, :0],
            torch.zeros(m, dtype=torch.int64),
            zeros,
        )
        return state, self._download(state)

    def init_workers(
        self, problem: Problem, workers: torch.Tensor, streams: Streams
    ) -> LazyWorkers:
        """No upload yet; an empty error memory."""
        w, d = workers.shape[0], problem.dim
        keeps_grad = self.spec.rule == "lag-wk"
        return LazyWorkers(
            torch.zeros(w, d, dtype=problem.dtype),
            torch.zeros(w, d if keeps_grad else 0, dtype=problem.dtype),
            torch.zeros(w, dtype=torch.int64),
            self._compressor(problem).init(w, d, problem.dtype),
        )

    def _download(self, state: LazyAggregator) -> Download:
        model = Dense(state.params[None])
        if self.spec.rule == "always":
            return Download(model, broadcast=True)
        if self.spec.rule == "lag-ps":
            return Download(Bundle((model, SignBits(state.asked[None]))), broadcast=True)
        return Download(Bundle((model, Scalars(state.threshold.reshape(1, 1)))), broadcast=True)

    def local(
        self, state: LazyWorkers, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, LazyWorkers]:
        """Decide who sends, then send ``C(lr * g + e)``; skippers keep their memory."""
        model, extra = _split(down)
        assert isinstance(model, Dense)
        params = model.values
        if self.spec.rule == "lag-ps":
            assert isinstance(extra, SignBits)
            asked = extra.signs[torch.arange(params.shape[0]), ctx.workers]
            grad = data.grad_of_rows(params, torch.nonzero(asked).flatten())
            sent = asked
        else:
            grad, sent, state = self._trigger(state, params, extra, data, ctx)
        key = DrawKey(ctx.streams, ctx.workers, ctx.round)
        compressor = self._compressor(data.problem)
        message, memory = compressor.compress(self.spec.lr * grad, state.memory, key)
        state = state._replace(memory=tree.select(sent, memory, state.memory))
        if self.spec.rule == "lag-ps" and ctx.round == 0:
            smoothness = _power_iteration(data, params)
            return Upload(Bundle((message, Scalars(smoothness[:, None]))), sent), state
        return Upload(message, sent), state

    def _trigger(
        self,
        state: LazyWorkers,
        params: torch.Tensor,
        extra: AnyPayload | None,
        data: LocalData,
        ctx: Context,
    ) -> tuple[torch.Tensor, torch.Tensor, LazyWorkers]:
        """The fresh gradient, who sends, and the workers' trigger state after this round."""
        spec, rows = self.spec, params.shape[0]
        index = None
        if spec.batch_size is not None:
            index = data.draw(spec.sampling, ctx.streams, ctx.round, spec.batch_size)
        grad = data.grad(params, index)
        warm = ctx.round < spec.window
        if spec.rule == "always" or warm:
            sent = torch.ones(rows, dtype=torch.bool)
        else:
            assert isinstance(extra, Scalars)
            old = state.last_grad if spec.rule == "lag-wk" else data.grad(state.reference, index)
            change = ((grad - old) ** 2).sum(dim=1)
            sent = (change > extra.values[:, 0]) | (state.staleness > spec.window)
        reference = params if spec.reference == "previous-iterate" else state.reference
        last_grad = tree.select(sent, grad, state.last_grad) if spec.rule == "lag-wk" else None
        state = state._replace(
            reference=tree.select(sent, params, reference),
            last_grad=state.last_grad if last_grad is None else last_grad,
            staleness=torch.where(sent, 1, state.staleness + 1),
        )
        return grad, sent, state

    def aggregate(
        self, state: LazyAggregator, up: Upload, ctx: Context
    ) -> tuple[LazyAggregator, Download]:
        """Sum fresh and stored messages, step, update the threshold (and LAG-PS requests)."""
        message, extra = _split(up.payload)
        if extra is not None:
            state = state._replace(smoothness=_scalar(extra))
        last = tree.select(up.sent, decompress(message), state.last)
        params = state.params - last.sum(dim=0)
        diffs = torch.cat([((params - state.params) ** 2).sum()[None], state.diffs[:-1]])
        weights = torch.tensor(self.spec.weights, dtype=params.dtype)
        m = ctx.n_workers
        threshold = (weights * diffs).sum() / (self.spec.lr**2 * m**2)
        asked, reference, staleness = self._requests(state, up.sent, params, threshold, ctx)
        new = LazyAggregator(
            params,
            last,
            diffs,
            up.sent.sum(),
            threshold,
            asked,
            reference,
            staleness,
            state.smoothness,
        )
        return new, self._download(new)

    def _requests(
        self,
        state: LazyAggregator,
        sent: torch.Tensor,
        params: torch.Tensor,
        threshold: torch.Tensor,
        ctx: Context,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LAG-PS: whom to ask next round, from the models of their last uploads (eq. LAG-PS)."""
        if self.spec.rule != "lag-ps":
            return state.asked, state.reference, state.staleness
        reference = tree.select(sent, state.params.expand_as(state.reference), state.reference)
        staleness = torch.where(sent, 1, state.staleness + 1)
        drift = state.smoothness**2 * ((reference - params) ** 2).sum(dim=1)
        warm = ctx.round + 1 < self.spec.window
        asked = (drift > threshold) | (staleness > self.spec.window) | warm
        return asked, reference, staleness

    def model(self, state: LazyAggregator) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: LazyAggregator) -> dict[str, float]:
        """Share of workers that skipped the last round, and the threshold now in force."""
        workers = state.last.shape[0]
        return {
            "skip_ratio": 1.0 - float(state.senders) / workers,
            "threshold": float(state.threshold),
        }


def _split(payload: AnyPayload) -> tuple[Any, AnyPayload | None]:
    """A payload's main part and its piggy-backed part (None when it has none)."""
    if isinstance(payload, Bundle):
        return payload.parts[0], payload.parts[1]
    return payload, None


def _scalar(payload: AnyPayload) -> torch.Tensor:
    assert isinstance(payload, Scalars)
    return payload.values[:, 0]


def _power_iteration(data: LocalData, params: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of each worker's local Hessian at ``params`` (power iteration)."""
    v = torch.ones_like(params)
    estimate = torch.zeros(params.shape[0], dtype=params.dtype)
    for _ in range(POWER_ITERATIONS):
        v = v / v.norm(dim=1, keepdim=True)
        hv = data.hvp(params, v)
        estimate = (hv * v).sum(dim=1)
        v = hv
    return estimate

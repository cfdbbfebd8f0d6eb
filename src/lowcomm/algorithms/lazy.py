"""Lazily aggregated, compressed gradients: ``sasg``, ``lasg``, ``lag``, ``topk-ef``.

One family, composed from two independent parts, a lazy trigger (who sends) over a compressor
(what is sent): SASG is the LASG-WK2 trigger over error-feedback top-k (Deng et al., arXiv
2112.04088). The semantics follow the SASG authors' notebooks:

* **Trigger** (:mod:`lowcomm.algorithms.triggers`): always, LASG-WK2, LAG-WK or LAG-PS, with
  the aggregator's threshold over the newest model differences (the LAG/LASG rules; Chen et
  al., NeurIPS 2018; Chen, Sun and Yin, 2020),

      thr_k = sum_d xi_d ||theta^{k+1-d} - theta^{k-d}||^2 / (lr^2 M^2),

  which the download carries with the model (4 bytes) unless the trigger runs at the
  aggregator. Every worker uploads in the first ``window`` (D) rounds and after D consecutive
  skips.
* **Uploader.** A worker that sends uploads ``C(lr * g + e)``: the step size is folded into the
  message before compression; ``C`` is any compressor (:mod:`lowcomm.compress.spec`; by default
  top-k per parameter tensor for ``sasg``/``topk-ef``, the identity for ``lasg``/``lag``),
  optionally with error feedback ``e <- v - C(v)`` (Stich et al., 2018). A skipping worker's fresh
  gradient is discarded and its compressor state (error memory) is unchanged.
* **Aggregator.** theta^{k+1} = theta^k - sum_m Delta_m: fresh messages of senders, the stored
  last message of skippers (the SUM convention of the LAG family; no 1/M).
* **Objective.** Worker m's f_m is its share M n_m / N of the total,
  f_m = (M / N) sum_{i in S_m} loss_i + its share of the L2 term
  (:mod:`lowcomm.algorithms.objective`): sum_m f_m = M F has the minimiser of the reported
  objective F on unequal shards too, and on equal shards f_m is the worker's mean objective.
  Gradients, the triggers' gradient changes and LAG-PS's L_m are all those of f_m.

Step sizes (``lr`` a number or a schedule, :mod:`lowcomm.algorithms.learning_rate`): the
message of round k is lr_k * g, and a skipper's stored message keeps the lr it was sent with.
The threshold computed after step k is applied in round k + 1, to the gradient that round's
message would scale, so its 1/lr^2 and the notebook weights xi_d = c * lr both use lr_{k+1}
(the notebooks' thr = c S / (lr M^2) with lr the step size in force; they lag a decay of it by
one epoch, lowcomm does not); weights given as ``xi`` stay as given. With a number every round
uses that number.

Choices where the sources leave room (see ../shared/papers/sasg-and-localnewton.md):
``xi_d = threshold * lr`` for the D - 1 differences a window of D models holds (the notebooks'
``c * S / (lr M^2)``) for ``sasg``/``lasg``, and ``xi_d = threshold / D`` over D differences (the
official LAG code) for ``lag``; ``xi`` overrides both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.learning_rate import step_size
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.objective import WorkerObjective
from lowcomm.algorithms.triggers import Step, Trigger, WorkerView
from lowcomm.compress.base import Compressor, DrawKey, Identity
from lowcomm.compress.error_feedback import decompress
from lowcomm.compress.spec import CompressorSpec
from lowcomm.core import tree
from lowcomm.core.messages import AnyPayload, Bundle, Compressed, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class Weights:
    """The threshold's weights xi_d: ``fixed``, or else ``c * lr`` over ``count`` differences."""

    fixed: tuple[float, ...] = ()
    c: float = 0.0
    count: int = 1

    def at(self, lr: float) -> tuple[float, ...]:
        """The weights under the step size ``lr``."""
        return self.fixed or (self.c * lr,) * self.count


@dataclass(frozen=True)
class LazySpec:
    """The resolved recipe of one member of the family (built from its public config).

    Attributes:
        lr: the step size, a number or a schedule string.
        batch_size: examples per worker per round (None: the whole shard).
        sampling: how batches are drawn (:meth:`LocalData.draw`).
        trigger: who sends.
        xi: the threshold's weights.
        compressor: what is sent, a :class:`~lowcomm.compress.spec.CompressorSpec` string.
        error_feedback: whether each worker keeps what compression dropped.
    """

    lr: float | str
    batch_size: int | None
    sampling: str
    trigger: Trigger
    xi: Weights
    compressor: str
    error_feedback: bool

    @property
    def weights(self) -> tuple[float, ...]:
        """The weights xi_d at the initial step size (at every round when lr is a number)."""
        return self.xi.at(step_size(self.lr, 0))


class LazyWorkers(NamedTuple):
    """Per worker: the trigger's state and the compressor's (error memory)."""

    trigger: Any
    memory: Any


class LazyAggregator(NamedTuple):
    """The aggregator's state.

    The model, the last message of every worker, the newest squared model differences, the
    number of senders of the last round, the threshold in force and the trigger's state.
    """

    params: torch.Tensor
    last: torch.Tensor
    diffs: torch.Tensor
    senders: torch.Tensor
    threshold: torch.Tensor
    trigger: Any


class LazyAggregation:
    """A lazy trigger over a compressing uploader; see the module docstring."""

    synchronous = True

    def __init__(self, name: str, spec: LazySpec) -> None:
        self.name = name
        self.spec = spec

    def _compressor(self, problem: Problem) -> Compressor:
        """The compressor for the problem's parameter tensors (and their shapes, if it has them)."""
        spec = CompressorSpec(self.spec.compressor)
        shapes = getattr(problem, "shapes", None)
        return spec.build(problem.segments, self.spec.error_feedback, shapes)

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[LazyAggregator, Download]:
        """Initial model; every worker uploads in the first ``window`` rounds."""
        params = problem.init_params(streams.generator("init"))
        m, d = sizes.shape[0], params.shape[0]
        state = LazyAggregator(
            params,
            params.new_zeros(m, d),
            params.new_zeros(len(self.spec.weights)),
            torch.tensor(m, device=params.device),
            params.new_zeros(()),
            self.spec.trigger.init(params, m),
        )
        return state, self._download(state)

    def init_workers(
        self, problem: Problem, workers: torch.Tensor, streams: Streams
    ) -> LazyWorkers:
        """No upload yet; an empty error memory."""
        w, d = workers.shape[0], problem.dim
        return LazyWorkers(
            self.spec.trigger.init_workers(w, d, problem.dtype, problem.device),
            self._compressor(problem).init(w, d, problem.dtype, problem.device),
        )

    def _download(self, state: LazyAggregator) -> Download:
        model = Dense(state.params[None])
        extra = self.spec.trigger.download(state.trigger, state.threshold)
        return Download(model if extra is None else Bundle((model, extra)), broadcast=True)

    def local(
        self, state: LazyWorkers, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, LazyWorkers]:
        """Decide who sends, then send ``C(lr_k * g + e)``; skippers keep their memory.

        ``g`` is the gradient of the worker's objective f_m (see the module docstring).
        """
        model, extra = _split(down)
        assert isinstance(model, Dense)
        params, spec, data = model.values, self.spec, WorkerObjective(data)
        batch = None
        if spec.batch_size is not None:
            batch = data.draw(spec.sampling, ctx.streams, ctx.round, spec.batch_size)
        view = WorkerView(params, extra, data, batch, ctx)
        decision = spec.trigger.decide(state.trigger, view)
        key = DrawKey(ctx.streams, ctx.workers, ctx.round)
        scaled = decision.grad.mul_(step_size(spec.lr, ctx.round))  # lr_k * g, in place
        compressor = self._compressor(data.problem)
        message, memory = _compress(compressor, scaled, state.memory, decision.sent, key)
        piggyback = spec.trigger.piggyback(view)
        payload = message if piggyback is None else Bundle((message, piggyback))
        return Upload(payload, decision.sent), LazyWorkers(decision.state, memory)

    def aggregate(
        self, state: LazyAggregator, up: Upload, ctx: Context
    ) -> tuple[LazyAggregator, Download]:
        """Sum fresh and stored messages, step, update the threshold and the trigger."""
        message, piggyback = _split(up.payload)
        last = _newest(up.sent, message, state.last)
        params = state.params - last.sum(dim=0)
        diffs = torch.cat([((params - state.params) ** 2).sum()[None], state.diffs[:-1]])
        lr = step_size(self.spec.lr, ctx.round + 1)
        weights = params.new_tensor(self.spec.xi.at(lr))
        threshold = (weights * diffs).sum() / (lr**2 * ctx.n_workers**2)
        step = Step(up.sent, state.params, params, threshold, ctx)
        trigger = self.spec.trigger.update(state.trigger, piggyback, step)
        new = LazyAggregator(params, last, diffs, up.sent.sum(), threshold, trigger)
        return new, self._download(new)

    def model(self, state: LazyAggregator) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: LazyAggregator) -> dict[str, float]:
        """Share of workers that skipped the last round, and the threshold now in force."""
        workers = state.last.shape[0]
        return {
            "skip_ratio": 1.0 - float(state.senders) / workers,
            "threshold": float(state.threshold),
        }


def _compress(
    compressor: Compressor, values: torch.Tensor, memory: Any, sent: torch.Tensor, key: DrawKey
) -> tuple[Compressed, Any]:
    """The message of every row of ``values[w, d]``; only the senders' memory changes.

    Only the senders' rows are compressed (a skipper's fresh gradient is discarded): compressors
    treat rows independently, each worker's draws keyed by its id, so those rows are what
    compressing all would give. A skipper's message row repeats a sender's (any one; with no
    sender, worker 0's row compressed and dropped): the aggregator never reads it and the ledger
    bills it nothing. The identity, which sends its rows as they are, gets every row.
    """
    if bool(sent.all()) or isinstance(compressor, Identity):
        return compressor.compress(values, memory, key)
    senders = torch.nonzero(sent).flatten()
    rows = senders if senders.numel() else senders.new_zeros(1)
    part, fresh = compressor.compress(
        values[rows], tree.take(memory, rows), replace(key, workers=key.workers[rows])
    )
    message = part.take((torch.cumsum(sent, 0) - 1).clamp(min=0))
    return message, tree.put(memory, senders, fresh) if senders.numel() else memory


def _newest(sent: torch.Tensor, message: Compressed, last: torch.Tensor) -> torch.Tensor:
    """Each worker's newest message, dense: the senders' fresh rows, the skippers' ``last``."""
    if bool(sent.all()):
        return decompress(message)
    if isinstance(message, Dense):  # its own dense rows: one choice per row
        return tree.select(sent, message.values, last)
    senders = torch.nonzero(sent).flatten()
    return last.index_copy(0, senders, decompress(message.take(senders)))


def _split(payload: AnyPayload) -> tuple[Any, AnyPayload | None]:
    """A payload's main part and its piggy-backed part (None when it has none)."""
    if isinstance(payload, Bundle):
        return payload.parts[0], payload.parts[1]
    return payload, None

"""Mini-batch SGD over example orders (``sgd`` with ``order``): D-RR, SO, ID-GraB, CD-GraB.

Each synchronous step every worker takes the next b examples of its epoch order
(:mod:`lowcomm.ordering.orders`) and computes their gradients at the shared model; the
aggregator averages them and takes the heavy-ball step of ``sgd``. One epoch is n/b steps (n per
worker, the smallest shard cut to a multiple of 2b; a run keeps only n examples of every shard,
see :meth:`OrderedSGD.usable`). Balancing uses the raw gradients at the current iterate, never
the momentum buffer (Cooper et al., NeurIPS 2023, as in the authors' code; spec
../shared/papers/cd-grab.md, 3.2). The ``unit`` setting says what is ordered and
balanced (spec 3.3):

* ``example`` (per-example mode): the b per-example gradients of the step (``torch.func``),
  paired inside the step (b = 1: across steps);
* ``minibatch`` (per-minibatch mode, the authors' ``CD_GraB_SingleGrad``): the step's fixed
  group of b examples is one unit and only its mean gradient is computed (the batched
  gradient, no per-example gradients); the units of steps 2i and 2i+1 are paired. Orders
  permute the n/b groups, which stay fixed for the run.

The two modes differ only in which units a step visits and which gradients it computes
(:meth:`OrderedSGD._step`); pairing, the sign rule and the placement are shared.

The aggregator also logs, per epoch, the empirical parallel herding bound of the order it saw:
max over steps k of || sum_{s<=k} sum_j (g_s^j - mean) ||_inf over the gradient sums of each
step (b = 1: exactly the paper's parallel herding objective).

Messages: up d values per worker (example units: ``cd-grab`` b*d, the per-example gradients,
and ``cd-grab-signs`` d plus its projected pair differences; minibatch units: d for every order,
the server pairs the uploaded minibatch means itself, as the authors' all-gather of m x d does,
spec 3.4); down d values per worker, plus at each epoch's end one int32 index per unit
(``cd-grab``: n, or n/b) or one sign bit per pair (``cd-grab-signs``: n/2, or n/(2b)) per worker.
The first download also carries n (one scalar).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.combine import combine
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.server_step import ServerStep
from lowcomm.algorithms.sgd import SGDConfig
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import (
    AnyPayload,
    Bundle,
    Dense,
    Download,
    Permutation,
    Scalars,
    SignBits,
    Upload,
)
from lowcomm.core.rng import Streams
from lowcomm.ordering.orders import (
    SERVER_ORDERS,
    MeanBalanceState,
    PairBalanceState,
    Pending,
    Units,
    balance_mean,
    balance_pairs,
    epoch_length,
    fresh_pair_balancer,
    no_pending,
    pair_up,
    rebuild_from_signs,
)
from lowcomm.problems.base import Problem


class OrderedWorkers(NamedTuple):
    """Each worker: its epoch order, its own balancers (ID-GraB), what is left unpaired.

    ``visiting`` holds the example ids ``[w, n]`` in visiting order, ``unit_order`` the unit
    ids ``[w, n / unit size]`` that produced it (example units: the same ids).
    """

    visiting: torch.Tensor
    unit_order: torch.Tensor
    pair: PairBalanceState
    mean: MeanBalanceState
    pending: Pending


class OrderedState(NamedTuple):
    """Aggregator: model and momentum, n, the order server, the epoch's step sums, herding.

    ``sizes`` are the examples each worker's gradients stand for, n for every worker (an epoch
    visits n of each shard), which the ``reduce`` weights use.

    The order server holds the workers' unit orders of this epoch, its pair balancer, the
    unit left unpaired and the pair signs decided so far.
    """

    params: torch.Tensor
    velocity: torch.Tensor
    sizes: torch.Tensor
    length: torch.Tensor
    unit_order: torch.Tensor
    server: PairBalanceState
    pending: Pending
    signs: torch.Tensor
    step_sums: torch.Tensor
    herding: torch.Tensor


class OrderedSGD:
    """SGD whose batches follow an epoch order; see the module docstring."""

    name = "sgd"
    synchronous = True

    def __init__(self, config: SGDConfig) -> None:
        self.config = config
        self.batch = config.batch_size
        self.order = config.order
        self.units = Units(config.unit, config.batch_size)
        # example units: the sign variant uploads (projected) pair differences, not gradients
        self.uploads_differences = self.order == "cd-grab-signs" and config.unit == "example"
        # the shared projection is a pure function of (seed, d, k, dtype): drawn once, kept
        self._matrices: dict[tuple[int, int, int, torch.dtype, torch.device], torch.Tensor] = {}

    def usable(self, sizes: torch.Tensor) -> int:
        """Examples per worker an epoch visits, n: the rest of each shard is never used.

        :func:`~lowcomm.experiments.runner.prepare` keeps n examples of every shard and removes
        the others from the training set, so that every order visits the same examples, each
        once per epoch.
        """
        return self._length(sizes)

    def rounds_per_epoch(self, sizes: torch.Tensor) -> int:
        """Steps in one epoch: n / b."""
        return self._length(sizes) // self.batch

    def _length(self, sizes: torch.Tensor) -> int:
        n = epoch_length(sizes, self.batch)
        if n == 0:
            allowed = f"at most half the smallest shard ({int(sizes.min())} examples)"
            raise InvalidConfigError("batch_size", "sgd with an order", allowed, self.batch)
        return n

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[OrderedState, Download]:
        """Initial model; the first download also tells the workers n."""
        params = problem.init_params(streams.generator("init"))
        m, n, d = sizes.shape[0], self._length(sizes), params.shape[0]
        units, device = self.units.count(n), params.device
        state = OrderedState(
            params,
            torch.zeros_like(params),
            torch.full_like(sizes, n),  # what each worker's gradients stand for: n examples
            torch.tensor(n, device=device),
            self.units.first(streams, torch.arange(m, device=device), sizes, n),
            fresh_pair_balancer(m, 1, units, self._server_dim(d), params.dtype, device),
            no_pending(m, d, params.dtype, device),
            torch.zeros(m, units // 2, dtype=torch.bool, device=device),
            params.new_zeros(n // self.batch, d),
            params.new_tensor(float("nan")),
        )
        length = Scalars(params.new_tensor([[float(n)]]))
        return state, Download(Bundle((Dense(params[None]), length)), broadcast=True)

    def init_workers(
        self, problem: Problem, workers: torch.Tensor, streams: Streams
    ) -> OrderedWorkers:
        """Empty orders until the first download says how long an epoch is."""
        w, d = workers.shape[0], problem.dim
        return self._fresh_workers(w, 0, d, problem.dtype, problem.device)

    def _fresh_workers(
        self, w: int, n: int, d: int, dtype: torch.dtype, device: torch.device
    ) -> OrderedWorkers:
        units = self.units.count(n)
        mean = MeanBalanceState(
            torch.zeros(w, d, dtype=dtype, device=device),
            torch.zeros(w, d, dtype=dtype, device=device),
            torch.zeros(w, d, dtype=dtype, device=device),
            torch.zeros(w, units, dtype=torch.int64, device=device),
            torch.zeros(w, dtype=torch.int64, device=device),
            torch.full((w,), units - 1, dtype=torch.int64, device=device),
        )
        pair = fresh_pair_balancer(w, w, units, d, dtype, device)
        visiting = torch.zeros(w, n, dtype=torch.int64, device=device)
        unit_order = torch.zeros(w, units, dtype=torch.int64, device=device)
        return OrderedWorkers(visiting, unit_order, pair, mean, no_pending(w, d, dtype, device))

    def local(
        self, state: OrderedWorkers, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, OrderedWorkers]:
        """Gradients of the next b examples of the epoch order; balance the units; upload."""
        model, extra = (down.parts[0], down.parts[1]) if isinstance(down, Bundle) else (down, None)
        assert isinstance(model, Dense)
        params = model.values
        if ctx.round == 0:
            assert isinstance(extra, Scalars)
            n = int(extra.values[0, 0])
            w, d = params.shape
            state = self._fresh_workers(w, n, d, params.dtype, params.device)
        n = state.visiting.shape[1]
        epoch, step = divmod(ctx.round, n // self.batch)
        if step == 0:
            state = self._new_epoch(state, epoch, extra, data, ctx)
        ids, grads = self._step(state, step, params, data)
        if self.order == "id-grab":
            pair_ids, deltas, pending = pair_up(state.pending, ids, grads)
            pair, _ = balance_pairs(state.pair, pair_ids, deltas, coordinated=False)
            state = state._replace(pair=pair, pending=pending)
        if self.order == "id-grab-mean":
            state = state._replace(mean=balance_mean(state.mean, ids, grads))
        return self._upload(state, ids, grads, ctx)

    def _step(
        self, state: OrderedWorkers, step: int, params: torch.Tensor, data: LocalData
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's units ``[w, k]`` and their gradients ``[w, k, d]``.

        Example units: the b examples and their per-example gradients; minibatch units: the
        step's group and its mean gradient (b gradient evaluations either way).
        """
        b, k = self.batch, self.units.per_step
        examples = state.visiting[:, step * b : (step + 1) * b]
        units = state.unit_order[:, step * k : (step + 1) * k]
        if self.units.kind == "example":
            return units, data.per_example_grads(params, examples)
        return units, data.grad(params, examples)[:, None]

    def _new_epoch(
        self,
        state: OrderedWorkers,
        epoch: int,
        extra: AnyPayload | None,
        data: LocalData,
        ctx: Context,
    ) -> OrderedWorkers:
        """This epoch's order, and balancers reset (mean balance keeps last epoch's mean)."""
        n = state.visiting.shape[1]
        w, d = state.mean.running.shape
        streams, workers, sizes = ctx.streams, ctx.workers, data.sizes
        if epoch == 0 or self.order == "so":
            order = self.units.first(streams, workers, sizes, n)
        elif self.order == "d-rr":
            order = self.units.shuffled(streams, workers, epoch, sizes, n)
        elif self.order == "id-grab":
            order = state.pair.next_order
        elif self.order == "id-grab-mean":
            order = state.mean.next_order
        elif isinstance(extra, Permutation):
            order = extra.indices.to(torch.int64)
        else:
            assert isinstance(extra, SignBits)
            order = rebuild_from_signs(state.unit_order, extra.signs)
        visiting = self.units.examples(order, streams, workers, sizes, n)
        running = state.mean.running
        fresh = self._fresh_workers(w, n, d, running.dtype, running.device)
        units = order.shape[1]
        stale = state.mean.accumulated / units if epoch > 0 else fresh.mean.stale_mean
        mean = fresh.mean._replace(stale_mean=stale)
        return fresh._replace(visiting=visiting, unit_order=order, mean=mean)

    def _upload(
        self, state: OrderedWorkers, ids: torch.Tensor, grads: torch.Tensor, ctx: Context
    ) -> tuple[Upload, OrderedWorkers]:
        """Mean gradient, or CD-GraB's unit gradients, or the mean and pair differences."""
        w = grads.shape[0]
        if self.order == "cd-grab":
            return Upload.all(Dense(grads.reshape(w, -1))), state
        if not self.uploads_differences:
            return Upload.all(Dense(grads.mean(dim=1))), state
        _, deltas, pending = pair_up(state.pending, ids, grads)
        projected = self._project(deltas, ctx.streams)
        up = Bundle((Dense(grads.mean(dim=1)), Dense(projected.reshape(w, -1))))
        return Upload.all(up), state._replace(pending=pending)

    def _server_dim(self, d: int) -> int:
        """Width of the vectors the order server balances (projected ones in the sign variant)."""
        return (
            self.config.projection
            if self.order == "cd-grab-signs" and self.config.projection
            else d
        )

    def _project(self, deltas: torch.Tensor, streams: Streams) -> torch.Tensor:
        """``deltas[w, p, d]`` through the shared random projection to ``projection`` dims."""
        k = self.config.projection
        if k == 0:
            return deltas
        d = deltas.shape[2]
        key = (streams.seed, d, k, deltas.dtype, deltas.device)
        if key not in self._matrices:
            generator = streams.generator("projection")
            gaussian = torch.randn(
                d, k, generator=generator, dtype=torch.float64, device=generator.device
            )
            self._matrices[key] = (gaussian / k**0.5).to(deltas.device, deltas.dtype)
        return deltas @ self._matrices[key]

    def aggregate(
        self, state: OrderedState, up: Upload, ctx: Context
    ) -> tuple[OrderedState, Download]:
        """Average the gradients, step; run the order server; at the epoch's end send orders."""
        n, b = int(state.length), self.batch
        step = ctx.round % (n // b)
        means, state = self._server(state, up, step, ctx)
        grad = combine(means, up.sent, state.sizes[ctx.workers], self.config.reduce)
        config = self.config
        server = ServerStep(config.lr, config.momentum, config.nesterov)
        params, velocity = server.apply(state.params, state.velocity, grad, ctx.round)
        state.step_sums[step] = b * means.sum(dim=0)  # this epoch's buffer, owned by the state
        state = state._replace(params=params, velocity=velocity)
        if step < n // b - 1:
            return state, Download(Dense(params[None]), broadcast=True)
        return self._end_epoch(state, ctx.n_workers)

    def _server(
        self, state: OrderedState, up: Upload, step: int, ctx: Context
    ) -> tuple[torch.Tensor, OrderedState]:
        """Each worker's mean gradient, after feeding the order server what it needs."""
        if self.uploads_differences:
            return self._decide_signs(state, up, ctx.n_workers)
        assert isinstance(up.payload, Dense)
        if self.order not in SERVER_ORDERS:
            return up.payload.values, state
        k = self.units.per_step
        grads = up.payload.values.reshape(ctx.n_workers, k, -1)
        ids = state.unit_order[:, step * k : (step + 1) * k]
        pair_ids, deltas, pending = pair_up(state.pending, ids, grads)
        slot = int(state.server.slot[0])
        server, signs = balance_pairs(state.server, pair_ids, deltas, coordinated=True)
        self._keep_signs(state, slot, signs)
        return grads.mean(dim=1), state._replace(server=server, pending=pending)

    def _decide_signs(
        self, state: OrderedState, up: Upload, m: int
    ) -> tuple[torch.Tensor, OrderedState]:
        """The sign variant with example units: decide on the uploaded pair differences."""
        assert isinstance(up.payload, Bundle)
        means, projected = up.payload.parts
        assert isinstance(means, Dense) and isinstance(projected, Dense)
        k = self.config.projection or means.values.shape[1]
        deltas = projected.values.reshape(m, -1, k)
        slot = int(state.server.slot[0])
        server, signs = balance_pairs(state.server, None, deltas, coordinated=True)
        self._keep_signs(state, slot, signs)
        return means.values, state._replace(server=server)

    def _keep_signs(self, state: OrderedState, slot: int, signs: torch.Tensor) -> None:
        """The sign variant sends the epoch's signs at its end: write them into its buffer."""
        if self.order == "cd-grab-signs":
            state.signs[:, slot : slot + signs.shape[1]] = signs  # this epoch's, owned by the state

    def _end_epoch(self, state: OrderedState, m: int) -> tuple[OrderedState, Download]:
        """Log the epoch's herding bound; send CD-GraB's next orders; reset the server."""
        centred = state.step_sums - state.step_sums.mean(dim=0)
        d, dtype, device = state.params.shape[0], state.params.dtype, state.params.device
        next_orders, signs = state.server.next_order, state.signs
        units = state.unit_order.shape[1]
        if self.order in SERVER_ORDERS and not self.uploads_differences:
            state = state._replace(unit_order=next_orders)  # the server placed the pairs
        state = state._replace(
            herding=centred.cumsum(dim=0).abs().max(),
            step_sums=torch.zeros_like(state.step_sums),
            server=fresh_pair_balancer(m, 1, units, self._server_dim(d), dtype, device),
            pending=no_pending(m, d, dtype, device),
            signs=torch.zeros_like(signs),
        )
        rows = Dense(state.params.expand(m, d).clone())
        if self.order == "cd-grab":
            order = Permutation(next_orders.to(torch.int32))
            return state, Download(Bundle((rows, order)), broadcast=False)
        if self.order == "cd-grab-signs":
            return state, Download(Bundle((rows, SignBits(signs))), broadcast=False)
        return state, Download(Dense(state.params[None]), broadcast=True)

    def model(self, state: OrderedState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: OrderedState) -> dict[str, float]:
        """The parallel herding bound of the last completed epoch (NaN before the first)."""
        return {"herding_bound": float(state.herding)}

"""Local SGD with increasing sample sizes and a Hogwild!-style aggregator (``hogwild-ib``).

van Dijk, Nguyen, Nguyen, Nguyen, Tran-Dinh and Nguyen, AISTATS 2021 (arXiv 2010.14763). The
paper's: n workers hold local data sets; in round i a worker does s_i units of SGD work on its
own data between two contacts with the aggregator, which mimics Hogwild! (adds what it receives
to one shared model); sample sizes grow linearly, s_i = a i + b, so K gradients take O(sqrt K)
rounds. The paper body was not available; these are reconstructions
(../shared/papers/hogwild-increasing-batch-and-async-msgd.md, A.2), documented options:

* ``mode="local-steps"`` (default): the worker takes s_i single-example SGD steps on its own
  running copy, w <- w - eta g(w; xi_j), and uploads the summed update U = sum eta g;
  ``mode="minibatch"``: U = eta sum_j g(v_hat; xi_j), all s_i gradients at the received model.
  In both modes xi_0, ..., xi_{s_i - 1} are the round's s_i positions drawn uniformly with
  replacement from the local data in one keyed draw per worker and round (local step j takes
  the j-th): the two modes see the same examples, and a round costs one draw, not s_i (a
  single-example draw costs about as much as the gradient itself);
* the aggregator ADDS every update (v <- v - U; never averages: each gradient carries its own
  step, like n Hogwild! threads) and replies to the sender with its current model;
* objective: the paper's F(w) = E_{xi ~ D} f(w; xi), D the mixture of the local data sets
  with weights |D_c| / N ([recon], A.1), i.e. the reported mean over all N training examples.
  Every SGD step of worker c is on its share of it, f_c = (n |D_c| / N) f_c^mean
  (:mod:`lowcomm.algorithms.objective`): the sum of the n workers' update directions is then n
  times the global gradient, as on the equal shards where the scale is exactly 1;
* ``step_timing="round"`` (default): one step for the whole round, eta(t_i) with
  t_i = n (s_0 + ... + s_{i-1}) the global gradient count at the start of round i;
  ``"gradient"``: eta(t) with t = n S_i + n j + c for the j-th local step of worker c.

Synchronous rounds (everybody starts round i from the same v) or the event-driven asynchronous
engine (speeds, lag cap) run the same code: the algorithm is asynchronous, and with zero delays
the asynchronous engine handles all workers of a round as one update. Messages: down d values,
up the update compressed by ``compressor`` (:mod:`lowcomm.algorithms.upload`; identity: d
values) per round; the ledger's gradient evaluations are K exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from lowcomm.algorithms import upload
from lowcomm.algorithms.base import Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.objective import WorkerObjective
from lowcomm.algorithms.schedules import SAMPLE_SIZES, STEP_SIZES, SampleSizes, StepSize
from lowcomm.algorithms.settings import About, AlgorithmSettings, OneOf, Text, setting
from lowcomm.core.messages import AnyPayload, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class HogwildIBConfig(AlgorithmSettings):
    """Settings of ``hogwild-ib``: sample sizes, step sizes, local steps or mini-batch."""

    ABOUT = About(
        "hogwild-ib",
        "local SGD with increasing sample sizes; the aggregator adds every update (Hogwild!)",
        up="the worker's summed update (d values)",
        down="the current model, to that worker (d values)",
        asynchronous=True,
        objective="F, the mean over all examples: worker c steps on (n |D_c| / N) f_c",
    )

    sample_sizes: str = setting(
        "linear:1,1", Text(SAMPLE_SIZES, SampleSizes), "SGD work s_i of a worker in round i"
    )
    step: str = setting(
        "inv:0.5,1000", Text(STEP_SIZES, StepSize), "step size on the global gradient count t"
    )
    mode: str = setting(
        "local-steps",
        OneOf(("local-steps", "minibatch")),
        "s_i sequential steps on the worker's copy, or s_i gradients at the received model",
    )
    step_timing: str = setting(
        "round", OneOf(("round", "gradient")), "one step size per round, or per gradient"
    )
    compressor: str = upload.compressor_setting()
    error_feedback: bool = upload.error_feedback_setting()


class HogwildState(NamedTuple):
    """The aggregator's model (the global count t is the ledger's gradient evaluations)."""

    params: torch.Tensor


class HogwildIB:
    """Increasing-sample local SGD, aggregated Hogwild!-style; see the module docstring."""

    name = "hogwild-ib"
    synchronous = False

    def __init__(self, config: HogwildIBConfig) -> None:
        self.config = config
        self.sizes = SampleSizes(config.sample_sizes)
        self.step = StepSize(config.step)

    def rounds_for_budget(self, workers: int, budget: int) -> int:
        """Rounds every worker needs for ``budget`` gradients in total (synchronous pace)."""
        rounds = 0
        while workers * self.sizes.total(rounds) < budget:
            rounds += 1
        return rounds

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[HogwildState, Download]:
        """Initial model, sent to every worker."""
        params = problem.init_params(streams.generator("init"))
        return HogwildState(params), Download(Dense(params[None]), True)

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> Any:
        """The workers' compressor state (nothing without error feedback or warm starts)."""
        return upload.init_memory(self.config, problem, workers)

    def local(
        self, state: Any, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, Any]:
        """s_i units of SGD work from the received model; upload the (compressed) update."""
        assert isinstance(down, Dense)
        update = self._update(down.values, WorkerObjective(data), ctx)
        payload, state = upload.compress(self.config, data.problem, update, state, ctx)
        return Upload.all(payload), state

    def _update(self, model: torch.Tensor, data: LocalData, ctx: Context) -> torch.Tensor:
        """The summed update U of s_i units of SGD work on f_c from the received ``model``."""
        i, n = ctx.round, ctx.n_workers
        s, start = self.sizes(i), n * self.sizes.total(i)
        index = data.sample(ctx.streams, i, s)
        if self.config.mode == "minibatch":
            return self.step(start) * s * data.grad(model, index)
        params, visits = model, data.visits(index)
        for j, eta in enumerate(self._etas(start, s, model, ctx).split(1, dim=1)):
            params = params - eta * data.grad_at(params, visits, j)
        return model - params

    def _etas(self, start: int, s: int, model: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The step size of each worker row's s local steps, ``[w, s]``, made once per round."""
        if self.config.step_timing == "round":
            return model.new_full((model.shape[0], s), self.step(start))
        n = ctx.n_workers
        times = [[start + n * j + c for j in range(s)] for c in ctx.workers.tolist()]
        return model.new_tensor([[self.step(t) for t in row] for row in times])

    def aggregate(
        self, state: HogwildState, up: Upload, ctx: Context
    ) -> tuple[HogwildState, Download]:
        """V <- v - sum of the received updates; reply with the current model."""
        update = (upload.received(up.payload) * up.sent[:, None]).sum(dim=0)
        params = state.params - update
        return state._replace(params=params), Download(Dense(params[None]), broadcast=True)

    def model(self, state: HogwildState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: HogwildState) -> dict[str, float]:  # noqa: D102
        return {}

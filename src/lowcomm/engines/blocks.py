"""Hosting many workers in one process: contiguous blocks, one batched call per block.

One call over all workers is the fastest on paper, but with hundreds of workers its mini-batch
tensors (workers x batch x features) outgrow the CPU caches and memory bandwidth dominates.
Blocks of a few dozen workers keep each call's data in cache while still amortising Python's
per-call overhead (``benchmarks/bench_simulate.py`` measures both). Every worker's random draws
are keyed by its own id and its computation is independent of the others', so the block size
changes no draw and no decision; the arithmetic may still round differently in the last bit,
because a batched matrix product (``torch.bmm``) can take another kernel for another number of
workers (measured: a logistic gradient of 2 workers against 5, 1e-16; LocalNewton's models on
simulate and torchdist differ by about 1e-15 for this reason). In a round of partial participation
(:mod:`lowcomm.engines.participation`) each block computes its participants only.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.messages import AnyPayload, Upload, concat
from lowcomm.data.dataset import Shards
from lowcomm.problems.base import Problem

DEFAULT_BLOCK = 64


class WorkerBlocks:
    """The shards of a group of workers, cut into contiguous blocks of at most ``size``."""

    def __init__(self, problem: Problem, shards: Shards, size: int = DEFAULT_BLOCK) -> None:
        n = shards.rows
        self.spans = [(start, min(start + size, n)) for start in range(0, n, size)]
        self.data = [LocalData(problem, shards.span(a, b)) for a, b in self.spans]
        self.everyone = list(range(n))

    def local(
        self,
        algorithm: Algorithm,
        state: Any,
        down: AnyPayload,
        ctx: Context,
        positions: torch.Tensor | None = None,
    ) -> tuple[Upload, Any, np.ndarray, np.ndarray]:
        """Every block's ``local`` call; the uploads, states and oracle counts stacked.

        ``positions``: the ascending positions in the group of the workers that take part
        (at least one; None: all), whose rows alone ``down`` and ``ctx.workers`` hold. The
        others compute nothing and keep their state; ``state`` is the whole group's.
        """
        chosen = self.everyone if positions is None else positions.tolist()
        device = ctx.workers.device
        uploads, states, grads, hvps = [], [], [], []
        for (start, stop), data in zip(self.spans, self.data, strict=True):
            lo, hi = bisect_left(chosen, start), bisect_left(chosen, stop)
            if lo == hi:
                continue
            rows = torch.tensor(chosen[lo:hi], dtype=torch.int64, device=device)
            part = data if hi - lo == stop - start else data.take(rows - start)
            block_ctx = replace(ctx, workers=ctx.workers[lo:hi])
            up, block_state = algorithm.local(
                tree.take(state, rows),
                down.take(torch.arange(lo, hi, device=device)),
                part,
                block_ctx,
            )
            uploads.append(up)
            states.append(block_state)
            g, h = part.reset_counts()
            grads.append(g)
            hvps.append(h)
        payload = concat([u.payload for u in uploads])
        sent = torch.cat([u.sent for u in uploads])
        counts = torch.cat(grads).cpu().numpy(), torch.cat(hvps).cpu().numpy()
        new = tree.concat(states)
        if positions is not None:
            new = tree.put(state, positions.to(device), new)
        return Upload(payload, sent), new, *counts

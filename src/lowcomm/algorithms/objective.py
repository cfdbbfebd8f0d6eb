"""What a worker minimises when its updates are added, not averaged: its share of the total.

The engine reports the global objective F(x) = (1/N) sum_i loss_i(x) + (l2/2)||x||^2 over all N
training examples, while a worker's :class:`~lowcomm.algorithms.local_data.LocalData` gives its
mean objective f_m^mean(x) = (1/n_m) sum_{i in S_m} loss_i(x) + (l2/2)||x||^2. Algorithms that
add the workers' messages (the LAG family's sum convention, Chen et al., NeurIPS 2018, eq. (1):
f = sum_m f_m) or apply one worker's message at a time (``async-msgd``, ``hogwild-ib``) would
otherwise weigh every worker equally and minimise sum_m f_m^mean, whose minimiser differs from
F's on unequal shards. Here worker m's objective is

    f_m(x) = share_m * f_m^mean(x) = (M / N) sum_{i in S_m} loss_i(x) + share_m (l2/2)||x||^2,

share_m = M n_m / N (:func:`lowcomm.data.dataset.shares`): LAG's per-worker SUM of sample
losses, scaled by the constant M / N, so that sum_m f_m = M F has F's minimiser, the mean of
the workers' gradients of f_m is the global gradient of F, and on equal shards share_m = 1.0
exactly (every equal-shard run is unchanged, bit for bit). Everything a worker derives from its
objective follows it: gradients, Hessian products (so LAG-PS's smoothness L_m is that of f_m),
the lazy triggers' gradient changes, and what its compressor and error memory see.
"""

from __future__ import annotations

import torch

from lowcomm.algorithms.local_data import LocalData, Visits


class WorkerObjective(LocalData):
    """``data`` seen through the workers' objectives f_m = share_m * f_m^mean (see above).

    Counts its oracle calls into ``data``'s counters, which it shares.
    """

    def __init__(self, data: LocalData) -> None:
        super().__init__(data.problem, data.shards, (data.grad_evals, data.hvps))
        self.share = data.shards.share

    def _scale(self, values: torch.Tensor) -> torch.Tensor:
        """``values[w, ...]`` times each row's share (nothing to do when every share is 1)."""
        if self.shards.equal_shares:
            return values
        return values * self.share.reshape(-1, *(1,) * (values.dim() - 1))

    def take(self, index: torch.Tensor) -> LocalData:  # noqa: D102
        return WorkerObjective(super().take(index))

    def loss(self, params: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """f_m on the batch ``index`` or, if None, on the whole shard, ``[w]``."""
        return self._scale(super().loss(params, index))

    def grad(self, params: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient of f_m ``[w, d]`` on the batch ``index`` or the whole shard."""
        return self._scale(super().grad(params, index))

    def grad_at(self, params: torch.Tensor, visits: Visits, step: int) -> torch.Tensor:
        """Gradient of f_m ``[w, d]`` on each worker's example number ``step`` of ``visits``."""
        return self._scale(super().grad_at(params, visits, step))

    def grad_of_rows(self, params: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Full gradients of f_m of the workers at ``rows``; zeros elsewhere."""
        return self._scale(super().grad_of_rows(params, rows))

    def per_example_grads(self, params: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per-example gradients ``[w, b, d]``, each scaled by its worker's share."""
        return self._scale(super().per_example_grads(params, index))

    def hvp(
        self, params: torch.Tensor, v: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hessian of f_m times ``v[w, d]``."""
        return self._scale(super().hvp(params, v, index))

    def hvp_rows(self, params: torch.Tensor, v: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Hessian of f_m on the whole shard times ``v``, charged to ``active`` workers only."""
        return self._scale(super().hvp_rows(params, v, active))

    def hessian(self, params: torch.Tensor) -> torch.Tensor:
        """Hessian of f_m ``[w, d, d]`` on the whole shard."""
        return self._scale(super().hessian(params))

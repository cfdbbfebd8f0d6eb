"""The engine's measurement of a model: full training objective and test metric.

Evaluation is not algorithm traffic: it costs no ledger bytes and no counted evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.sparse import to_tensor
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class Evaluator:
    """Global training objective (1/N) sum_i loss_i + (l2/2)||x||^2 and test metric.

    The training and test sets live on the problem's device.
    """

    problem: Problem
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor

    @staticmethod
    def build(problem: Problem, data: TrainTest) -> Evaluator:
        """Tensors of the whole training and test sets in the problem's dtype (sparse or dense)."""

        def tensors(d: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.as_tensor(d.y, device=problem.device)
            return to_tensor(d.X, problem.dtype, problem.device), y

        return Evaluator(problem, *tensors(data.train), *tensors(data.test))

    def train_loss(self, params: torch.Tensor) -> float:
        """The global training objective at ``params[d]``."""
        if not bool(torch.isfinite(params).all()):
            return math.nan
        X, y = self.X_train, self.y_train
        weight = torch.ones(1, y.shape[0], dtype=X.dtype, device=X.device)
        loss = self.problem.loss(params[None], X[None], y[None], weight)
        return float(loss[0])

    def test_metric(self, params: torch.Tensor) -> float:
        """The problem's metric (accuracy) on the test set."""
        if not bool(torch.isfinite(params).all()):
            return math.nan
        return self.problem.metric(params, self.X_test, self.y_test)

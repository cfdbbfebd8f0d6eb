"""Your own algorithm, registered from outside lowcomm: signSGD with majority vote.

Bernstein et al. (2018): each worker uploads the signs of its mini-batch gradient, one bit per
coordinate (32 times fewer bytes than float32), and the aggregator steps along the sign of the
workers' vote. lowcomm bills exactly what the SignBits payload holds.

    python examples/own_algorithm.py
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch

import lowcomm
from lowcomm import POSITIVE, About, AlgorithmSettings, Dense, Download, Interval, SignBits, Upload


class Vote(NamedTuple):
    """The aggregator's state: the model."""

    params: torch.Tensor


class SignSGD:
    """Workers send gradient signs; the model moves by lr along the majority's sign."""

    name, synchronous = "signsgd", True

    def __init__(self, config: "SignSGDConfig") -> None:
        self.config = config

    def init(self, problem, sizes, streams):
        params = problem.init_params(streams.generator("init"))
        return Vote(params), Download(Dense(params[None]), broadcast=True)

    def init_workers(self, problem, workers, streams):
        return lowcomm.NoState()

    def local(self, state, down, data, ctx):
        batch = data.sample(ctx.streams, ctx.round, self.config.batch_size)
        return Upload.all(SignBits(data.grad(down.values, batch) > 0)), state

    def aggregate(self, state, up, ctx):
        votes = ((2.0 * up.payload.signs - 1) * up.sent[:, None]).sum(dim=0)
        params = state.params - self.config.lr * torch.sign(votes).to(state.params.dtype)
        return Vote(params), Download(Dense(params[None]), broadcast=True)

    def model(self, state):
        return state.params

    def metrics(self, state):
        return {}


@dataclass(frozen=True)
class SignSGDConfig(AlgorithmSettings):
    """Settings of ``signsgd``, each declared once: validation and listings come from here."""

    ABOUT = About(
        "signsgd",
        "signSGD with majority vote",
        up="gradient signs (d bits)",
        down="the model (d values)",
        objective="no objective exactly: one vote per worker on each gradient sign",
    )
    lr: float = lowcomm.setting(0.01, POSITIVE, "step size along the vote's sign")
    batch_size: int = lowcomm.setting(32, Interval(int, 1), "examples per worker per round")

    def build(self) -> SignSGD:
        return SignSGD(self)


lowcomm.register_algorithm("signsgd", SignSGDConfig)
comparison = lowcomm.compare(
    ["sgd", "signsgd"], data="digits", workers=8, rounds=100, settings={"sgd": {"lr": 0.5}}
)
for name, (run,) in comparison.runs.items():
    last = run.history.iloc[-1]
    print(f"{name}: train loss {last.train_loss:.3f}, {last.bytes_up / 1e3:.0f} kB up")

"""Partial participation: a seeded sample of K of the n workers takes part in each round.

Federated learning trains on a fraction of the clients per round (FedAvg's C, McMahan et al.,
2017; Flower's ``fraction_train``, FLSim's selectors). ``--participation P`` asks for
K = round(P n) workers per round (halves rounded up, at least 1), ``--per-round K`` for K
directly. The participants of a synchronous round are the K workers with the smallest keyed
uniform draws ``streams.uniform("participation", all n workers, r, 1)``, in worker order, where
r is the round's ``Context.round`` (the number of rounds before it). The set is a pure function
of (seed, r, n, K): every torchdist rank computes it without a message, a resumed run draws the
same sets, and another seed draws others.

A worker outside the set computes nothing, receives nothing and sends nothing: the round's
ledger has rows for the participants only, the clock waits for them only, their worker state
alone changes, and ``aggregate`` sees only their uploads (``ctx.workers`` holds their ids), so a
size-weighted mean is over the participants' shards, FedAvg's weights. K = n is full
participation and takes no draw at all: the run is exactly one without the option.

Which algorithms take part-time workers is declared in their ``ABOUT.participation``
(:func:`~lowcomm.algorithms.settings.participation_refusal`): those whose maths is per round over
whoever takes part. Algorithms that keep every worker's last message at the aggregator, spread
one iteration over several rounds, or are asynchronous refuse it before the run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowcomm.algorithms.base import Algorithm
from lowcomm.algorithms.settings import AlgorithmSettings, participation_refusal
from lowcomm.core.device import HOST
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams

STREAM = "participation"
_CONFIG = "the run config"


def per_round(workers: int, participation: float | None, count: int | None) -> int | None:
    """K, the workers per round for ``participation`` P or ``count`` K; None for all of them.

    K = round(P n) with halves rounded up, at least 1; K = n gives None (full participation).

    Raises:
        InvalidConfigError: both given, or K above the number of workers.
    """
    if participation is not None and count is not None:
        allowed = "left out when participation is given (one or the other)"
        raise InvalidConfigError("per_round", _CONFIG, allowed, count)
    if count is not None and count > workers:
        allowed = f"an integer in [1, {workers}] (at most the workers)"
        raise InvalidConfigError("per_round", _CONFIG, allowed, count)
    if participation is not None:
        count = max(1, math.floor(participation * workers + 0.5))
    return None if count is None or count == workers else count


def check_declared(name: str, config: AlgorithmSettings, option: str, value: object) -> None:
    """Refuse partial participation (``option`` = ``value``) for an algorithm that declines it.

    Raises:
        InvalidConfigError: naming the algorithm and why it needs every worker every round.
    """
    reason = participation_refusal(config)
    if reason is not None:
        raise InvalidConfigError(option, _CONFIG, f"left out for {name}: {reason}", value)


def check_run(algorithm: Algorithm, count: int | None, workers: int) -> None:
    """The engines' own check of ``RunOptions.per_round``: a synchronous run, K <= n.

    Raises:
        InvalidConfigError: K with an asynchronous algorithm, or K above ``workers``.
    """
    if count is None:
        return
    owner = f"the run of {algorithm.name}"
    if not algorithm.synchronous:
        allowed = "None for an asynchronous algorithm (its workers take part as they arrive)"
        raise InvalidConfigError("per_round", owner, allowed, count)
    if count > workers:
        raise InvalidConfigError("per_round", owner, f"at most the {workers} workers", count)


@dataclass(frozen=True)
class Participants:
    """Who takes part in each round: ``count`` of ``workers`` workers (None: every one)."""

    streams: Streams
    workers: int
    count: int | None

    def of(self, round_: int) -> torch.Tensor | None:
        """The ascending global ids (int64, on the host) of round ``round_``; None: all."""
        if self.count is None or self.count >= self.workers:
            return None
        everyone = torch.arange(self.workers, device=HOST)
        draws = self.streams.uniform(STREAM, everyone, round_, 1)[:, 0]
        chosen = torch.argsort(draws, stable=True)[: self.count]
        return torch.sort(chosen).values

    def within(self, round_: int, first: int, stop: int) -> torch.Tensor | None:
        """The positions in the group of workers ``first..stop-1`` that take part; None: all."""
        chosen = self.of(round_)
        if chosen is None:
            return None
        return chosen[(chosen >= first) & (chosen < stop)] - first

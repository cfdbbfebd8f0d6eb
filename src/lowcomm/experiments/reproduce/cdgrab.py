"""``lowcomm reproduce cdgrab``: CD-GraB against D-RR, SO and ID-GraB (spec section 7).

Cooper et al., "CD-GraB: Coordinating Distributed Example Orders for Provably Accelerated
Training", NeurIPS 2023; spec ``../shared/papers/cd-grab.md``. Letters as in the paper: m
workers, n examples per worker, N = m n. The study, with the spec's criteria (section 7):

- A: the parallel herding bound of CD-GraB, ID-GraB (Bal and PairBal) and D-RR reordering
  fixed random vectors, with the offline balancers of :mod:`lowcomm.ordering.balance`;
- B: L2 logistic regression, ``sgd`` with each ``order`` at equal epochs, m = 1, 4, 16, on
  synthetic data and on a real data set (default phishing): full training loss and f - f*;
- C: linear speedup: fixed data and epochs, m = 1..16, step size proportional to m;
- D: LeNet on MNIST images, CD-GraB against D-RR;
- the efficient mode ``cd-grab-signs``: how often its signs agree with the faithful server's
  on the same vectors, and its final loss with ``projection`` k in {4, 16, d}.

Step sizes: the spec's calibration used features of mean squared norm 5 (32 Gaussians scaled
by 2/sqrt(32), plus a bias); SGD with step a on features c x equals SGD with step a c^2 on x, so
every logistic step size here is the spec's times 5 / (the training set's mean squared norm).

Layout of ``OUT``: ``<part>/m<m>/<method>/seed<k>/`` each simulated run (``history.csv``,
``history.parquet``, ``run.json``); ``herding.csv`` (experiment A, per round), ``agreement.csv``
and ``streams.csv`` (sign agreement on A's vectors and on gradient streams), ``runs.csv`` (every
simulated run per epoch, with its suboptimality, kept and removed counts), ``optima.csv`` (f*
per data set, seed, m and b),
``claims.json``, ``report.md`` and its figures.

Every run trains and measures the examples that ``sgd`` with an order keeps (n per worker: the
smallest shard cut to a multiple of 2b; :mod:`lowcomm.experiments.kept`); f* is the exact
optimum of that kept set, per data set, seed, m and b. The report's setup says which runs
removed examples.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.core.errors import DataError
from lowcomm.data.loaders import load_data
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import exact_optimum, loglog_slope, suboptimality
from lowcomm.experiments.reproduce.report import (
    CLAIMS_JSON,
    REPORT_MD,
    Claim,
    Outcome,
    Request,
    claims_table,
    embed,
    header,
    markdown_table,
    mean_std,
    number,
    save_figure,
    write_claims,
    write_report,
)
from lowcomm.experiments.results import save_run
from lowcomm.experiments.runner import Prepared, execute, metadata, prepare
from lowcomm.ordering.balance import (
    coordinated_pair_balance,
    herding_bound,
    independent_pair_balance,
    mean_balance,
)

SHARED = Path("../shared/datasets")
PHISHING = SHARED / "phishing" / "phishing.gz"
MNIST = SHARED / "mnist"
PAPER_RUN = "spec section 7 calibration (numpy, 3 seeds) and the paper's figures"
HERDING_CSV = "herding.csv"
AGREEMENT_CSV = "agreement.csv"
RUNS_CSV = "runs.csv"
OPTIMA_CSV = "optima.csv"
STREAMS_CSV = "streams.csv"
SPEC_SQNORM = 5.0  # mean squared feature norm of the spec's synthetic data (4 + the bias)
L2 = 1e-4
SYNTHETIC_DIM = 32
HELD_OUT = 0.25  # the synthetic sets' test share
FULL_SEEDS = (0, 1)
QUICK_SEEDS = (0,)
ORDERS = ("d-rr", "so", "id-grab-mean", "id-grab", "cd-grab")
ID_GRAB = ("id-grab-mean", "id-grab")
HERDING_METHODS = ("cd-grab", "id-grab-mean", "id-grab", "d-rr")
LABELS = {
    "d-rr": "D-RR",
    "so": "SO",
    "id-grab-mean": "ID-GraB (Bal)",
    "id-grab": "ID-GraB (PairBal)",
    "cd-grab": "CD-GraB",
}
FLAT_IN_M = 1.5  # A: CD-GraB's bound, max / min over m
BELOW_ID = 2.0  # A: ID-GraB's bound / CD-GraB's, at every m >= 8
SQRT_SLOPE = (0.25, 0.75)  # A: ID-GraB's bound ~ m ** slope
DRR_NEAR = (0.5, 2.0)  # A: D-RR's final bound / its starting bound
MIN_RATIO = 10.0  # B: D-RR / CD-GraB suboptimality at every m >= 2
SPEEDUP_FACTOR = 3.0  # C: CD-GraB and D-RR within this factor of their m = 1 value
ID_DEGRADES = 10.0  # C: ID-GraB's suboptimality from m = 2 to the largest m
COLORS = {
    "cd-grab": "C0",
    "id-grab-mean": "C1",
    "id-grab": "C2",
    "d-rr": "C3",
    "so": "C7",
    "cd-grab-signs-k4": "C4",
    "cd-grab-signs-k16": "C5",
    "cd-grab-signs-k0": "C6",
}
AGREEMENT_HEADERS = (
    "m",
    "k",
    "decisions agreeing (%)",
    "walks agreeing (%)",
    "bound, faithful",
    "bound, signs of k dims",
)
FIGURES = {
    "herding": "Experiment A: parallel herding bound against reorder rounds (mean over trials)",
    "speedup": "Experiment C: suboptimality at a fixed number of epochs against m, step size "
    "proportional to m",
    "lenet": "Experiment D: LeNet on MNIST, training loss and herding bound by epoch",
    "signs": "Efficient mode: suboptimality of cd-grab-signs (projection k) against cd-grab",
}


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HerdingStudy:
    """Experiment A: unit Gaussian directions, centred per worker, reordered round after round.

    ``projections``: the k of the projected (sign-mode) server run beside the faithful one.
    """

    total: int
    workers: tuple[int, ...]
    rounds: int
    trials: int
    dim: int = 16
    projections: tuple[int, ...] = (4, 16)


@dataclass(frozen=True)
class LogisticStudy:
    """Experiment B on one data set: every order at equal epochs for each m.

    ``lr`` is the spec's step size (before feature scaling); m = 1 runs ``single_orders`` on
    the first seed only (each of its runs is N sequential steps per epoch).
    """

    name: str
    data: str
    test_fraction: float
    epochs: int
    seeds: tuple[int, ...]
    workers: tuple[int, ...] = (1, 4, 16)
    lr: float = 0.5
    orders: tuple[str, ...] = ORDERS
    single_orders: tuple[str, ...] = ("d-rr", "cd-grab")


@dataclass(frozen=True)
class SpeedupStudy:
    """Experiment C: fixed data and epochs, m workers, the spec's step 0.04 m (scaled)."""

    data: str
    test_fraction: float
    epochs: int
    seed: int
    workers: tuple[int, ...] = (1, 2, 4, 8, 16)
    lr_per_worker: float = 0.04
    orders: tuple[str, ...] = ("d-rr", "cd-grab", "id-grab-mean")


@dataclass(frozen=True)
class SignStudy:
    """The efficient mode: runs with ``projection`` k (0: none) on the synthetic set of B at m.

    ``offline``: the k compared with the faithful server on fixed gradient streams;
    ``examples``: per worker, in LeNet's streams.
    """

    workers: int = 16
    projections: tuple[int, ...] = (4, 16, 0)
    offline: tuple[int, ...] = (4, 16, 256)
    examples: int = 64


@dataclass(frozen=True)
class LenetStudy:
    """Experiment D: LeNet, global batch m b, heavy-ball momentum, CD-GraB against D-RR."""

    data: str
    epochs: int
    seeds: tuple[int, ...]
    workers: int = 8
    batch_size: int = 8
    lr: float = 0.05
    momentum: float = 0.9


@dataclass(frozen=True)
class Study:
    """Every part of the reproduction; ``logistic[0]`` is the synthetic set."""

    herding: HerdingStudy
    logistic: tuple[LogisticStudy, ...]
    speedup: SpeedupStudy
    signs: SignStudy
    lenet: LenetStudy | None
    notes: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class RunSpec:
    """One simulated run: its part of the study and its settings."""

    part: str
    data: str
    model: str
    workers: int
    order: str
    seed: int
    epochs: int
    lr: float
    test_fraction: float = HELD_OUT
    batch_size: int = 1
    momentum: float = 0.0
    projection: int = 0
    dtype: str = "float64"

    @property
    def method(self) -> str:
        """The order, with its projection for ``cd-grab-signs`` (``cd-grab-signs-k4``)."""
        return f"{self.order}-k{self.projection}" if self.order == "cd-grab-signs" else self.order

    def folder(self, out: Path) -> Path:
        """Where the run is saved."""
        return out / self.part / f"m{self.workers}" / self.method / f"seed{self.seed}"

    def config(self) -> RunConfig:
        """The run's validated config (evaluations once per epoch are set after preparing)."""
        options = {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "momentum": self.momentum,
            "projection": self.projection,
        }
        return make_config(
            {
                "algorithm": "sgd",
                "options": options,
                "order": self.order,
                "data": self.data,
                "model": self.model,
                "l2": L2,
                "workers": self.workers,
                "epochs": self.epochs,
                "seed": self.seed,
                "dtype": self.dtype,
                "test_fraction": self.test_fraction,
            }
        )


def synthetic_data(train: int) -> str:
    """The ``synthetic-logistic`` spec whose split leaves exactly ``train`` training examples."""
    total = next(t for t in itertools.count(train) if t - round(t * HELD_OUT) == train)
    return f"synthetic-logistic:{total},{SYNTHETIC_DIM}"


def held_out_share(data: str, train: int) -> float:
    """The held-out share leaving ``train`` training examples (0.25 if that keeps too few).

    Data sets with their own test split ignore it.
    """
    loaded = load_data(parse_data_spec(data), 0)
    total = loaded.train.n + loaded.test.n
    return (total - train) / total if 4 * train <= 3 * total else HELD_OUT


@dataclass(frozen=True)
class Sizes:
    """How big a study is.

    Attributes:
        train: training examples of the synthetic set (B, C) and of B's real data set.
        herding: experiment A.
        epochs: of B on synthetic data.
        real_epochs: of B on the real data set.
        speedup_epochs: of C.
        lenet_epochs: of D.
    """

    train: int
    herding: HerdingStudy
    epochs: int
    real_epochs: int
    speedup_epochs: int
    lenet_epochs: int


QUICK = Sizes(1024, HerdingStudy(2048, (2, 4, 8, 16, 32), 10, 1), 8, 5, 6, 1)
FULL = Sizes(4096, HerdingStudy(20480, (2, 4, 8, 16, 32), 15, 3), 20, 20, 15, 3)


def study_for(request: Request) -> Study:
    """The study a request asks for; ``--data`` names experiment B's real data set."""
    sizes = QUICK if request.quick else FULL
    seeds = request.seeds or (QUICK_SEEDS if request.quick else FULL_SEEDS)
    synthetic = LogisticStudy(
        "synthetic", synthetic_data(sizes.train), HELD_OUT, sizes.epochs, seeds
    )
    speedup = SpeedupStudy(synthetic.data, HELD_OUT, sizes.speedup_epochs, seeds[0])
    notes: list[str] = []
    real = _real_study(request, sizes, seeds, notes)
    lenet = _lenet_study(request, sizes, seeds, notes)
    logistic = (synthetic,) if real is None else (synthetic, real)
    return Study(sizes.herding, logistic, speedup, SignStudy(), lenet, tuple(notes))


def _real_study(
    request: Request, sizes: Sizes, seeds: tuple[int, ...], notes: list[str]
) -> LogisticStudy | None:
    """Experiment B on ``--data`` or phishing; None (with a note) in quick mode or if absent."""
    if request.data is None and (request.quick or not PHISHING.is_file()):
        why = "--quick" if request.quick else f"{PHISHING} not found"
        notes.append(f"{why}: experiment B runs on synthetic data only.")
        return None
    data = request.data or f"libsvm:{PHISHING}"
    spec = parse_data_spec(data)
    name = Path(spec.path).name.split(".")[0] if spec.path else spec.kind
    fraction = held_out_share(data, sizes.train)
    return LogisticStudy(name, data, fraction, sizes.real_epochs, seeds)


def _lenet_study(
    request: Request, sizes: Sizes, seeds: tuple[int, ...], notes: list[str]
) -> LenetStudy | None:
    """Experiment D on MNIST; None (with a note) in quick mode or without the images."""
    if request.quick or not MNIST.is_dir():
        why = "--quick" if request.quick else f"{MNIST} not found"
        notes.append(f"{why}: experiment D (LeNet on MNIST) is skipped.")
        return None
    return LenetStudy(f"mnist:{MNIST}", sizes.lenet_epochs, seeds)


def reproduce(request: Request) -> Outcome:
    """Run the study a request asks for and write its report (the ``reproduce`` registry entry)."""
    study = study_for(request)
    console = Console(stderr=True)
    for note in study.notes:
        console.print(f"note: {note}", highlight=False)
    return run_study(study, request.out, request.command, request.progress)


# --- experiment A: fixed vectors ---------------------------------------------------------------


def unit_vectors(rng: np.random.Generator, m: int, n: int, d: int) -> np.ndarray:
    """Gaussian directions of unit length ``[m, n, d]``, minus each worker's mean."""
    vectors = rng.standard_normal((m, n, d))
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    return vectors - vectors.mean(axis=1, keepdims=True)


def projection_matrix(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    """A Gaussian ``[d, k]`` matrix over sqrt(k), the kind ``cd-grab-signs`` projects with."""
    return rng.standard_normal((d, k)) / math.sqrt(k)


def visited(vectors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The vectors ``[m, n, d]`` (indexed by example) in each worker's visiting order."""
    return np.take_along_axis(vectors, order[:, :, None], axis=1)


def reorder(
    method: str,
    order: np.ndarray,
    vectors: np.ndarray,
    rng: np.random.Generator,
    matrices: Mapping[str, np.ndarray],
) -> np.ndarray:
    """The next orders after one round of ``method`` over the vectors visited in ``order``.

    ``matrices`` maps a projected method (``cd-grab-signs-k4``) to its projection.
    """
    m, n, d = vectors.shape
    grads = visited(vectors, order)
    if method == "d-rr":
        return np.stack([rng.permutation(n) for _ in range(m)])
    if method == "id-grab-mean":
        return mean_balance(order, grads, np.zeros((m, d)))
    if method == "id-grab":
        return independent_pair_balance(order, grads)
    projected = grads @ matrices[method] if method in matrices else grads
    return coordinated_pair_balance(order, projected)[0]


def herding_trial(study: HerdingStudy, m: int, trial: int) -> tuple[list[dict], list[dict]]:
    """One trial at m workers: every method's bound per round, and the sign agreement.

    Agreement is measured along the faithful CD-GraB trajectory: at each round both servers
    see the same vectors in the same order, and the share of equal pair signs is recorded.
    """
    rng = np.random.default_rng([m, trial])
    n = study.total // m
    vectors = unit_vectors(rng, m, n, study.dim)
    start = np.stack([rng.permutation(n) for _ in range(m)])
    matrices = {
        f"cd-grab-signs-k{k}": projection_matrix(rng, study.dim, k) for k in study.projections
    }
    bounds = []
    for method in (*HERDING_METHODS, *matrices):
        order = start
        for r in range(study.rounds + 1):
            order = order if r == 0 else reorder(method, order, vectors, rng, matrices)
            bound = herding_bound(order, vectors)
            bounds.append({"m": m, "trial": trial, "method": method, "round": r, "bound": bound})
    return bounds, _trajectory_agreement(study, m, trial, vectors, start, matrices)


def _trajectory_agreement(
    study: HerdingStudy,
    m: int,
    trial: int,
    vectors: np.ndarray,
    start: np.ndarray,
    matrices: Mapping[str, np.ndarray],
) -> list[dict]:
    """Faithful against projected signs on CD-GraB's stream of each round (:func:`agreement`)."""
    rows, order = [], start
    for r in range(1, study.rounds + 1):
        grads = visited(vectors, order)
        following, signs, _ = coordinated_pair_balance(order, grads)
        for k in study.projections:
            shares = agreement(order, grads, signs, matrices[f"cd-grab-signs-k{k}"])[1]
            rows.append({"m": m, "trial": trial, "round": r, "k": k, **shares})
        order = following
    return rows


def agreement(
    order: np.ndarray, grads: np.ndarray, signs: np.ndarray, matrix: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """How a server deciding on projections ``grads @ matrix`` agrees with the faithful one.

    Args:
        order: ``[m, n]`` the visiting order.
        grads: ``[m, n, d]`` the vectors in visiting order.
        signs: ``[n/2, m]`` the faithful server's decisions on them.
        matrix: ``[d, k]`` the projection.

    Returns:
        The projected server's next order, and two shares of equal signs: ``decisions``, each
        decision taken from the faithful running sum (projected), i.e. how well the projection
        keeps the sign of <s, delta>; ``walks``, the projected server run on its own, keeping
        its own running sum (one differing decision changes the later ones too).
    """
    d = grads.shape[2]
    deltas = (grads[:, 0::2] - grads[:, 1::2]).transpose(1, 0, 2).reshape(-1, d)
    steps = np.where(signs.reshape(-1), 1.0, -1.0)[:, None] * deltas
    running = np.cumsum(steps, axis=0) - steps
    projected = np.einsum("tk,tk->t", running @ matrix, deltas @ matrix) <= 0.0
    following, walked, _ = coordinated_pair_balance(order, grads @ matrix)
    shares = {
        "decisions": float((projected == signs.reshape(-1)).mean()),
        "walks": float((walked == signs).mean()),
    }
    return following, shares


def run_herding(study: HerdingStudy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Experiment A: every trial and m; the bounds per round and the sign agreement."""
    bounds: list[dict] = []
    agreement: list[dict] = []
    for m in study.workers:
        for trial in range(study.trials):
            found, agreed = herding_trial(study, m, trial)
            bounds += found
            agreement += agreed
    return pd.DataFrame(bounds), pd.DataFrame(agreement)


# --- experiments B, C, D: simulated runs -------------------------------------------------------


def feature_scale(data: str, test_fraction: float, seed: int) -> float:
    """The spec's mean squared feature norm over this training set's (step-size factor)."""
    train = load_data(parse_data_spec(data), seed, test_fraction).train
    flat = train.X.reshape(train.n, -1)
    return SPEC_SQNORM / float((flat**2).sum(axis=1).mean())


def logistic_specs(study: LogisticStudy, scale: float) -> list[RunSpec]:
    """Experiment B's runs on one data set."""
    base = _logistic_run(f"B-{study.name}", study.data, study.test_fraction, study.epochs)
    specs = []
    for m in study.workers:
        single = m == 1
        orders = study.single_orders if single else study.orders
        seeds = study.seeds[:1] if single else study.seeds
        lr = study.lr * scale
        specs += [replace(base, workers=m, order=o, seed=s, lr=lr) for o in orders for s in seeds]
    return specs


def _logistic_run(part: str, data: str, test_fraction: float, epochs: int) -> RunSpec:
    """A logistic run of a part, to ``replace`` workers, order, seed and step in."""
    return RunSpec(part, data, "logistic", 1, "d-rr", 0, epochs, 1.0, test_fraction)


def speedup_specs(study: SpeedupStudy, scale: float) -> list[RunSpec]:
    """Experiment C's runs (ID-GraB from m = 2: with one worker there is nothing to coordinate)."""
    base = _logistic_run("C", study.data, study.test_fraction, study.epochs)
    return [
        replace(base, workers=m, order=o, seed=study.seed, lr=study.lr_per_worker * m * scale)
        for m in study.workers
        for o in study.orders
        if m > 1 or not o.startswith("id-grab")
    ]


def sign_specs(study: SignStudy, synthetic: LogisticStudy, scale: float) -> list[RunSpec]:
    """``cd-grab-signs`` runs, with B's synthetic settings at ``study.workers``."""
    base = _logistic_run("signs", synthetic.data, synthetic.test_fraction, synthetic.epochs)
    base = replace(base, workers=study.workers, order="cd-grab-signs", lr=synthetic.lr * scale)
    return [replace(base, seed=s, projection=k) for k in study.projections for s in synthetic.seeds]


def lenet_specs(study: LenetStudy) -> list[RunSpec]:
    """Experiment D's runs (float32, as the library trains networks)."""
    base = RunSpec("D", study.data, "lenet", study.workers, "d-rr", 0, study.epochs, study.lr)
    base = replace(base, batch_size=study.batch_size, momentum=study.momentum, dtype="float32")
    return [replace(base, order=o, seed=s) for o in ("d-rr", "cd-grab") for s in study.seeds]


def plan(study: Study) -> tuple[list[RunSpec], dict[str, float]]:
    """Every run of B, C, D and the sign mode, validated; and each data set's step factor."""
    synthetic = study.logistic[0]
    scales = {s.data: feature_scale(s.data, s.test_fraction, s.seeds[0]) for s in study.logistic}
    specs = [spec for s in study.logistic for spec in logistic_specs(s, scales[s.data])]
    specs += speedup_specs(study.speedup, scales[synthetic.data])
    specs += sign_specs(study.signs, synthetic, scales[synthetic.data])
    specs += lenet_specs(study.lenet) if study.lenet else []
    for spec in specs:
        config = spec.config()
        build_algorithm(config.algorithm, {**config.options, "order": config.order})
    return specs, scales


def prepared_run(spec: RunSpec) -> Prepared:
    """The run prepared, evaluating once per epoch."""
    prepared = prepare(spec.config())
    per_epoch = prepared.rounds // spec.epochs
    config = prepared.config.model_copy(update={"eval_every": per_epoch})
    return replace(prepared, config=config)


@dataclass
class Simulated:
    """What the simulated runs left: the per-epoch table, f* per kept training set, models."""

    table: pd.DataFrame
    optima: pd.DataFrame
    models: dict[RunSpec, torch.Tensor]
    seconds: dict[str, float]


def run_specs(specs: Sequence[RunSpec], out: Path, progress: bool) -> Simulated:
    """Every run in order, saved under ``out``; per-epoch rows with suboptimality."""
    console = Console(stderr=True)
    optima: dict[tuple[str, float, int, int, int], float] = {}
    frames, models, seconds = [], {}, dict.fromkeys((s.part for s in specs), 0.0)
    for i, spec in enumerate(specs, start=1):
        if progress:
            console.print(f"run {i}/{len(specs)}: {spec.folder(Path())}", highlight=False)
        start = time.perf_counter()
        prepared = prepared_run(spec)
        key = (spec.data, spec.test_fraction, spec.seed, spec.workers, spec.batch_size)
        if key not in optima:
            optima[key] = exact_optimum(
                prepared.problem, prepared.data.train.X, prepared.data.train.y
            )
        result = execute(prepared, progress)
        assert result is not None, "the simulate engine always returns a result"
        save_run(spec.folder(out), result, metadata(prepared))
        rows = epoch_rows(spec, result.history, prepared.rounds, optima[key])
        frames.append(rows.assign(n_train=prepared.data.train.n, removed=prepared.removed.ids.size))
        models[spec] = result.model
        seconds[spec.part] += time.perf_counter() - start
    rows = [
        {"data": d, "test_fraction": f, "seed": s, "m": m, "b": b, "fstar": v}
        for (d, f, s, m, b), v in optima.items()
    ]
    return Simulated(pd.concat(frames, ignore_index=True), pd.DataFrame(rows), models, seconds)


def epoch_rows(spec: RunSpec, history: pd.DataFrame, rounds: int, fstar: float) -> pd.DataFrame:
    """A run's history per epoch, labelled with its spec, with ``suboptimality`` f - f*."""
    epoch = history["round"] * spec.epochs // rounds
    return pd.DataFrame(
        {
            "part": spec.part,
            "data": spec.data,
            "m": spec.workers,
            "method": spec.method,
            "seed": spec.seed,
            "epoch": epoch,
            "round": history["round"],
            "train_loss": history["train_loss"],
            "test_metric": history["test_metric"],
            "herding_bound": history["herding_bound"],
            "suboptimality": suboptimality(history["train_loss"], fstar),
        }
    )


# --- the efficient mode on fixed gradient streams ----------------------------------------------


def stream_agreement(grads: np.ndarray, ks: Sequence[int], seed: int) -> list[dict]:
    """Faithful and projected servers on the same gradients ``[m, n, d]`` in shard order.

    Returns, per k < d: the shares of :func:`agreement` and the herding bound (of these
    vectors) of the visiting order, of the faithful server's next order and of the projected
    one's.
    """
    m, n, d = grads.shape
    order = np.tile(np.arange(n), (m, 1))
    faithful, signs, _ = coordinated_pair_balance(order, grads)
    rng = np.random.default_rng(seed)
    rows = []
    for k in (k for k in ks if k < d):
        mine, shares = agreement(order, grads, signs, projection_matrix(rng, d, k))
        bounds = {
            "bound_visited": herding_bound(order, grads),
            "bound_faithful": herding_bound(faithful, grads),
            "bound_projected": herding_bound(mine, grads),
        }
        rows.append({"k": k, **shares, **bounds})
    return rows


def gradient_stream(spec: RunSpec, params: torch.Tensor | None, examples: int) -> np.ndarray:
    """Per-example gradients ``[m, n, d]`` of each worker's first n examples at ``params``.

    ``params`` None: the run's initial model. n is ``examples`` cut to the smallest shard, even.
    """
    prepared = prepare(spec.config())
    problem, shards = prepared.problem, prepared.shards
    if params is None:
        params = problem.init_params(prepared.streams.generator("init"))
    n = min(examples, int(shards.sizes.min())) // 2 * 2
    stacked = params.expand(spec.workers, -1)
    grads = problem.per_example_grads(stacked, shards.X[:, :n], shards.y[:, :n])
    return grads.detach().to(torch.float64).numpy()


def offline_agreement(study: Study, found: Simulated) -> pd.DataFrame:
    """Sign agreement on gradient streams at the start and end of the first seed's CD-GraB runs.

    The streams: B's synthetic set at the sign study's m (whole shards), and LeNet (the first
    ``examples`` of each shard).
    """
    first, signs = study.logistic[0].seeds[0], study.signs
    rows = []
    for spec, model in found.models.items():
        logistic = spec.part == "B-synthetic" and spec.workers == signs.workers
        if spec.order != "cd-grab" or spec.seed != first or not (logistic or spec.part == "D"):
            continue
        name = f"{'logistic' if logistic else 'LeNet'}, m = {spec.workers}"
        for when, params in (("initial", None), ("final", model)):
            grads = gradient_stream(spec, params, 10**9 if logistic else signs.examples)
            for row in stream_agreement(grads, signs.offline, spec.seed):
                stream = f"{name}, n = {grads.shape[1]}, {when} model"
                rows.append({"stream": stream, "d": grads.shape[2], **row})
    return pd.DataFrame(rows)


# --- measurements ------------------------------------------------------------------------------


def finals(table: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every run."""
    last = table.groupby(["part", "m", "method", "seed"])["epoch"].transform("max")
    return table.loc[table["epoch"] == last]


def final_means(table: pd.DataFrame, part: str, column: str) -> pd.DataFrame:
    """Mean over seeds of ``column`` at the last epoch: rows m, columns method."""
    mine = finals(table.loc[table["part"] == part])
    return mine.pivot_table(index="m", columns="method", values=column, aggfunc="mean")


def herding_finals(herding: pd.DataFrame) -> pd.DataFrame:
    """Mean over trials of the bound at the last round (rows method, columns m)."""
    last = herding.loc[herding["round"] == herding["round"].max()]
    return last.pivot_table(index="method", columns="m", values="bound", aggfunc="mean")


def herding_starts(herding: pd.DataFrame) -> pd.Series:
    """Mean over trials of the bound of the starting (uniform) orders, per m."""
    first = herding.loc[(herding["round"] == 0) & (herding["method"] == "d-rr")]
    return first.groupby("m")["bound"].mean()


# --- claims ------------------------------------------------------------------------------------


def herding_claims(herding: pd.DataFrame, rounds: int) -> tuple[Claim, ...]:
    """Experiment A's four criteria (spec section 7 A), on the means over trials."""
    final, start = herding_finals(herding), herding_starts(herding)
    ms = [int(m) for m in final.columns]
    cd = final.loc["cd-grab"]
    big = [m for m in ms if m >= 8]
    below = {i: min(final.loc[i, m] / cd[m] for m in big) for i in ID_GRAB}
    slopes = {i: loglog_slope(ms, final.loc[i].to_numpy()) for i in ID_GRAB}
    rising = {i: bool(np.all(np.diff(final.loc[i].to_numpy()) > 0)) for i in ID_GRAB}
    drr = final.loc["d-rr"] / start
    low, high = SQRT_SLOPE
    return (
        Claim(
            "A. CD-GraB's parallel herding bound does not grow with the number of workers m",
            "paper: ~2.5 for every m in 5..100 after 15 rounds; calibration 2.0-2.4 (m = 2..16)",
            f"after {rounds} rounds, max / min over m <= {FLAT_IN_M}",
            f"{_span(cd)} over m = {_ms(ms)} ({cd.max() / cd.min():.2f}x)",
            bool(cd.max() / cd.min() <= FLAT_IN_M),
        ),
        Claim(
            "A. CD-GraB balances far better than per-worker (independent) GraB at large m",
            "paper: ID-GraB 4.3-17.5 (Bal), 6-24 (PairBal) vs 2.5; calibration m = 16: 7.6, "
            "8.8 vs 2.0",
            f"both ID-GraB bounds >= {BELOW_ID}x CD-GraB's at every m >= 8",
            "; ".join(f"{LABELS[i]} >= {below[i]:.2f}x" for i in ID_GRAB),
            bool(min(below.values()) >= BELOW_ID),
        ),
        Claim(
            "A. ID-GraB's bound grows with m, roughly like sqrt(m)",
            "paper: 4.3 -> 17.5 (Bal), 6 -> 24 (PairBal) for m = 5 -> 100 (slope ~0.47)",
            f"increasing in m, log-log slope in [{low}, {high}], both variants",
            "; ".join(
                f"{LABELS[i]} {_span(final.loc[i])}, slope {slopes[i]:.2f}"
                f"{'' if rising[i] else ' (not increasing)'}"
                for i in ID_GRAB
            ),
            all(rising[i] and low <= slopes[i] <= high for i in ID_GRAB),
        ),
        Claim(
            "A. D-RR does not improve the bound",
            "paper: ~350 at the start and after 15 rounds; calibration 42-60",
            f"final / starting bound in [{DRR_NEAR[0]}, {DRR_NEAR[1]}] at every m",
            f"{_span(drr)}x (start {_span(start)})",
            bool(drr.between(*DRR_NEAR).all()),
        ),
    )


def logistic_claims(table: pd.DataFrame, part: str, label: str) -> tuple[Claim, ...]:
    """Experiment B's three criteria on one data set (spec section 7 B)."""
    mine = finals(table.loc[table["part"] == part])
    sub = final_means(table, part, "suboptimality")
    ms = [int(m) for m in sub.index]
    many = [m for m in ms if m >= 2]
    losses = mine.pivot_table(index=["m", "seed"], columns="method", values="train_loss")
    paired = losses.loc[many]
    wins = paired["cd-grab"] < paired["d-rr"]
    ratio = sub["d-rr"] / sub["cd-grab"]
    growing = bool(np.all(np.diff(ratio.loc[ms].to_numpy()) > 0))
    gaps = {i: sub.loc[many, i] / sub.loc[many, "cd-grab"] for i in ID_GRAB}
    between = all(
        bool(
            (
                (sub.loc[many, "cd-grab"] < sub.loc[many, i])
                & (sub.loc[many, i] < sub.loc[many, "d-rr"])
            ).all()
        )
        for i in ID_GRAB
    )
    widening = all(float(g.iloc[-1]) > float(g.iloc[0]) for g in gaps.values())
    return (
        Claim(
            f"B ({label}). CD-GraB reaches a lower full training loss than D-RR at equal epochs",
            "paper HMDA: 0.3355 vs 0.3372; calibration (m = 4, b = 4): 0.4765 vs 0.4792",
            "CD-GraB's final loss < D-RR's for every m >= 2 and every seed",
            f"{int(wins.sum())} of {len(wins)} (m, seed) pairs; largest CD-GraB - D-RR "
            f"{number(float((paired['cd-grab'] - paired['d-rr']).max()), 3)}",
            bool(wins.all()),
        ),
        Claim(
            f"B ({label}). CD-GraB's suboptimality is >= 10x below D-RR's, the gap growing with m",
            "calibration (lr 0.5): D-RR / CD-GraB = 10 (m = 1), 63 (m = 4), 800 (m = 16)",
            f"mean f - f* of D-RR / CD-GraB >= {MIN_RATIO:g} at every m >= 2, increasing over "
            f"m = {_ms(ms)}",
            ", ".join(f"m = {m}: {ratio[m]:.3g}x" for m in ms),
            bool((ratio.loc[many] >= MIN_RATIO).all()) and growing,
        ),
        Claim(
            f"B ({label}). ID-GraB lies between D-RR and CD-GraB, its gap to CD-GraB growing "
            "with m",
            "calibration f - f*, m = 4: CD 3.5e-4 < Bal 8.7e-4 < PairBal 1.6e-3 < D-RR 2.2e-2; "
            "m = 16: 3.5e-6 < 3.4e-4, 3.1e-4 < 2.8e-3",
            f"CD-GraB < ID-GraB < D-RR (mean f - f*, both variants) at every m >= 2, and "
            f"ID-GraB / CD-GraB larger at m = {many[-1]} than at m = {many[0]}",
            "; ".join(
                f"{LABELS[i]} / CD-GraB: " + ", ".join(f"{g[m]:.3g}x (m = {m})" for m in many)
                for i, g in gaps.items()
            )
            + ("" if between else "; not between at some m"),
            between and widening,
        ),
    )


def speedup_claims(table: pd.DataFrame) -> tuple[Claim, ...]:
    """Experiment C's three criteria (spec section 7 C)."""
    sub = final_means(table, "C", "suboptimality")
    ms = [int(m) for m in sub.index]
    cd, drr, ident = sub["cd-grab"], sub["d-rr"], sub["id-grab-mean"].dropna()
    cd_worst, drr_span = cd / cd[1], drr / drr[1]
    low, high = 1 / SPEEDUP_FACTOR, SPEEDUP_FACTOR
    first, last = int(ident.index[0]), int(ident.index[-1])
    degrade = float(ident[last] / ident[first])
    return (
        Claim(
            "C. Linear speedup: CD-GraB keeps the m = 1 (centralised GraB) accuracy with m-fold "
            "fewer sequential steps",
            "calibration: 9.3e-6 at m = 1; 6.4e-6 to 1.6e-5 at m = 2..16",
            f"CD-GraB's f - f* at every m <= {SPEEDUP_FACTOR:g}x its m = 1 value",
            f"m = 1: {number(cd[1], 3)}; "
            + ", ".join(f"{cd_worst[m]:.2f}x (m = {m})" for m in ms[1:]),
            bool((cd_worst <= high).all()),
        ),
        Claim(
            "C. ID-GraB loses the benefit as m grows",
            "calibration (Bal): 2.7e-5 at m = 2 -> 6.6e-4 at m = 16 (24x)",
            f"ID-GraB (Bal) f - f* grows >= {ID_DEGRADES:g}x from m = {first} to m = {last}",
            f"{number(ident[first], 3)} -> {number(ident[last], 3)} ({degrade:.3g}x)",
            degrade >= ID_DEGRADES,
        ),
        Claim(
            "C. D-RR stays at the random-reshuffling level",
            "calibration: 2.8e-3 to 6.4e-3 for every m",
            f"D-RR's f - f* at every m within {SPEEDUP_FACTOR:g}x of its m = 1 value",
            f"{_span(drr)} ({_span(drr_span)}x of m = 1)",
            bool(drr_span.between(low, high).all()),
        ),
    )


def lenet_claim(table: pd.DataFrame) -> Claim:
    """Experiment D: CD-GraB's training loss at equal epochs against D-RR's, with the noise."""
    mine = finals(table.loc[table["part"] == "D"])
    loss = mine.pivot_table(index="seed", columns="method", values="train_loss")
    diff = float(loss["cd-grab"].mean() - loss["d-rr"].mean())
    spread = float(loss.std(ddof=1).max()) if len(loss) > 1 else math.nan
    per_seed = (loss["cd-grab"] < loss["d-rr"]).sum()
    noise = (
        "seed spread unknown (one seed)"
        if math.isnan(spread)
        else f"{'within' if abs(diff) <= spread else 'beyond'} the seed spread {number(spread, 2)}"
    )
    return Claim(
        "D. LeNet: CD-GraB reaches a lower training loss than D-RR at equal epochs",
        "paper (LeNet, CIFAR-10, 100 epochs): 0.65 vs 0.69 (m = 4), 0.65 vs 0.70 (m = 64)",
        "mean final training loss: CD-GraB <= D-RR",
        f"CD-GraB {number(float(loss['cd-grab'].mean()))} vs D-RR "
        f"{number(float(loss['d-rr'].mean()))} ({diff:+.2g}; lower on {per_seed} of "
        f"{len(loss)} seeds; {noise})",
        diff <= 0,
    )


def _span(values: pd.Series) -> str:
    """``low-high`` of ``values`` in 3 significant digits."""
    return f"{number(float(values.min()), 3)}-{number(float(values.max()), 3)}"


def _ms(ms: Sequence[int]) -> str:
    return ", ".join(map(str, ms))


def all_claims(study: Study, herding: pd.DataFrame, table: pd.DataFrame) -> tuple[Claim, ...]:
    """Every claim, in the order A, B (each data set), C, D."""
    claims = list(herding_claims(herding, study.herding.rounds))
    for s in study.logistic:
        claims += logistic_claims(table, f"B-{s.name}", s.name)
    claims += speedup_claims(table)
    if study.lenet:
        claims.append(lenet_claim(table))
    return tuple(claims)


# --- figures -----------------------------------------------------------------------------------


def method_label(method: str) -> str:
    """A method's name in figures and tables (``cd-grab-signs-k4``: CD-GraB signs, k = 4)."""
    if method in LABELS:
        return LABELS[method]
    k = int(method.rsplit("-k", 1)[1])
    return f"CD-GraB signs, k = {k or 'd'}"


def _panels(count: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` axes side by side."""
    figure = Figure(figsize=(3.4 * count + 0.6, 3.8), layout="constrained")
    return figure, list(figure.subplots(1, count, squeeze=False)[0])


def _curve(ax: Axes, rows: pd.DataFrame, x: str, y: str, method: str) -> None:
    """A method's mean of ``y`` per ``x`` (min-max band when there are several runs)."""
    grouped = rows.groupby(x)[y]
    mean = grouped.mean()
    style = "--" if method.startswith("cd-grab-signs") else "-"
    color = COLORS.get(method)
    ax.plot(mean.index, mean, style, color=color, marker=".", label=method_label(method))
    if int(grouped.size().max()) > 1:
        ax.fill_between(mean.index, grouped.min(), grouped.max(), color=color, alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def herding_figure(herding: pd.DataFrame) -> Figure:
    """Experiment A: the bound per round, one panel per m."""
    ms = sorted(herding["m"].unique())
    figure, axes = _panels(len(ms))
    for ax, m in zip(axes, ms, strict=True):
        mine = herding.loc[herding["m"] == m]
        for method in mine["method"].unique():
            rows = mine.loc[mine["method"] == method]
            _curve(ax, rows, "round", "bound", method)
        ax.set_yscale("log")
        ax.set_title(f"m = {m}", fontsize="medium")
        ax.set_xlabel("reorder round")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("parallel herding bound")
    axes[0].legend(fontsize="x-small")
    return figure


def suboptimality_figure(table: pd.DataFrame, part: str, title: str) -> Figure:
    """Experiment B on one data set: f - f* per epoch, one panel per m."""
    mine = table.loc[table["part"] == part].assign(
        suboptimality=lambda t: t["suboptimality"].clip(lower=1e-16)
    )
    ms = sorted(mine["m"].unique())
    figure, axes = _panels(len(ms))
    for ax, m in zip(axes, ms, strict=True):
        rows = mine.loc[mine["m"] == m]
        for method in (o for o in ORDERS if o in set(rows["method"])):
            _curve(ax, rows.loc[rows["method"] == method], "epoch", "suboptimality", method)
        ax.set_yscale("log")
        ax.set_title(f"{title}, m = {m}", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("f - f* (full training objective)")
    axes[-1].legend(fontsize="x-small")
    return figure


def speedup_figure(table: pd.DataFrame) -> Figure:
    """Experiment C: final f - f* against m, and CD-GraB's curves for every m."""
    figure, (left, right) = _panels(2)
    sub = final_means(table, "C", "suboptimality")
    for method in sub.columns:
        values = sub[method].dropna()
        left.plot(values.index, values, marker="o", color=COLORS[method], label=LABELS[method])
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("workers m (step size proportional to m)")
    left.set_ylabel("f - f* after the last epoch")
    left.legend(fontsize="small")
    rows = table.loc[(table["part"] == "C") & (table["method"] == "cd-grab")]
    for m, mine in rows.groupby("m"):
        right.plot(
            mine["epoch"], mine["suboptimality"].clip(lower=1e-16), marker=".", label=f"m = {m}"
        )
    right.set_yscale("log")
    right.set_xlabel("epoch (N / m sequential steps each)")
    right.set_title("CD-GraB", fontsize="medium")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    return figure


def lenet_figure(table: pd.DataFrame) -> Figure:
    """Experiment D: training loss and the empirical herding bound per epoch."""
    figure, axes = _panels(2)
    rows = table.loc[table["part"] == "D"]
    for ax, column, name in zip(
        axes, ("train_loss", "herding_bound"), ("training loss", "herding bound"), strict=True
    ):
        for method in ("d-rr", "cd-grab"):
            mine = rows.loc[(rows["method"] == method)].dropna(subset=[column])
            _curve(ax, mine, "epoch", column, method)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_yscale("log")
    return figure


def signs_figure(table: pd.DataFrame, workers: int) -> Figure:
    """The efficient mode: f - f* per epoch against the faithful server, at m workers."""
    figure, (ax,) = _panels(1)
    faithful = table.loc[
        (table["part"] == "B-synthetic") & (table["m"] == workers) & (table["method"] == "cd-grab")
    ]
    rows = pd.concat([faithful, table.loc[table["part"] == "signs"]])
    for method in rows["method"].unique():
        mine = rows.loc[rows["method"] == method].assign(
            suboptimality=lambda t: t["suboptimality"].clip(lower=1e-16)
        )
        _curve(ax, mine, "epoch", "suboptimality", method)
    ax.set_yscale("log")
    ax.set_title(f"synthetic, m = {workers}", fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel("f - f*")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def figures(
    study: Study, herding: pd.DataFrame, table: pd.DataFrame, out: Path
) -> list[tuple[Path, str]]:
    """Draw and save every figure; return each path and caption."""
    drawn = [("herding", herding_figure(herding), FIGURES["herding"])]
    for s in study.logistic:
        caption = (
            f"Experiment B ({s.name}): suboptimality per epoch (mean over seeds, min-max band)"
        )
        drawn.append(
            (f"suboptimality-{s.name}", suboptimality_figure(table, f"B-{s.name}", s.name), caption)
        )
    drawn.append(("speedup", speedup_figure(table), FIGURES["speedup"]))
    if study.lenet:
        drawn.append(("lenet", lenet_figure(table), FIGURES["lenet"]))
    drawn.append(("signs", signs_figure(table, study.signs.workers), FIGURES["signs"]))
    return [(save_figure(fig, out / f"{name}.png"), caption) for name, fig, caption in drawn]


# --- tables ------------------------------------------------------------------------------------


def herding_table(herding: pd.DataFrame, total: int) -> str:
    """Experiment A: the starting bound and each method's last-round bound, per m."""
    last = herding.loc[herding["round"] == herding["round"].max()]
    methods = list(dict.fromkeys(herding["method"]))
    starts = herding_starts(herding)
    rows = []
    for m in sorted(last["m"].unique()):
        mine = last.loc[last["m"] == m]
        cells = [mean_std(mine.loc[mine["method"] == x, "bound"].tolist(), 3) for x in methods]
        rows.append((m, total // m, number(float(starts[m]), 3), *cells))
    return markdown_table(("m", "n", "start", *map(method_label, methods)), rows)


def logistic_table(table: pd.DataFrame, part: str) -> str:
    """Experiment B on one data set: final loss and f - f* per m and order (mean ± std)."""
    mine = finals(table.loc[table["part"] == part])
    sub = final_means(table, part, "suboptimality")
    rows = []
    for (m, method), runs in mine.groupby(["m", "method"], sort=True):
        rows.append(
            (
                m,
                method_label(str(method)),
                len(runs),
                mean_std(runs["train_loss"].tolist(), 6),
                mean_std(runs["suboptimality"].tolist(), 3),
                f"{sub.loc[m, 'd-rr'] / sub.loc[m, method]:.3g}x",
                number(float(runs["herding_bound"].mean()), 3),
            )
        )
    headers = ("m", "order", "seeds", "final train loss", "f - f*", "D-RR / order", "herding bound")
    return markdown_table(headers, rows)


def speedup_table(table: pd.DataFrame, study: SpeedupStudy, scale: float) -> str:
    """Experiment C: steps per epoch, step size and each order's final f - f*, per m."""
    mine = finals(table.loc[table["part"] == "C"])
    steps = table.loc[(table["part"] == "C") & (table["epoch"] == 1)].groupby("m")["round"].first()
    rows = []
    for m in study.workers:
        cells = [
            mean_std(
                mine.loc[(mine["m"] == m) & (mine["method"] == o), "suboptimality"].tolist(), 3
            )
            for o in study.orders
        ]
        rows.append((m, int(steps[m]), number(study.lr_per_worker * m * scale, 3), *cells))
    return markdown_table(
        ("m", "steps per epoch", "step size", *(LABELS[o] for o in study.orders)), rows
    )


def lenet_table(table: pd.DataFrame) -> str:
    """Experiment D: training loss per epoch (mean ± std), final test accuracy and bound."""
    rows_d = table.loc[table["part"] == "D"]
    epochs = sorted(rows_d["epoch"].unique())
    rows = []
    for method in ("d-rr", "cd-grab"):
        mine = rows_d.loc[rows_d["method"] == method]
        losses = [mean_std(mine.loc[mine["epoch"] == e, "train_loss"].tolist()) for e in epochs]
        last = mine.loc[mine["epoch"] == epochs[-1]]
        rows.append(
            (
                LABELS[method],
                *losses,
                mean_std((100 * last["test_metric"]).tolist(), 4),
                number(float(last["herding_bound"].mean()), 3),
            )
        )
    headers = ("order", *(f"loss, epoch {e}" for e in epochs), "test accuracy (%)", "herding bound")
    return markdown_table(headers, rows)


def agreement_table(shares: pd.DataFrame, herding: pd.DataFrame) -> str:
    """Sign agreement on experiment A's vectors, and what the projected orders balance to."""
    final = herding_finals(herding)
    mean = shares.groupby(["m", "k"])[["decisions", "walks"]].mean()
    rows = [
        (
            m,
            k,
            f"{100 * row.decisions:.1f}",
            f"{100 * row.walks:.1f}",
            number(float(final.loc["cd-grab", m]), 3),
            number(float(final.loc[f"cd-grab-signs-k{k}", m]), 3),
        )
        for (m, k), row in zip(mean.index, mean.itertuples(), strict=True)
    ]
    return markdown_table(AGREEMENT_HEADERS, rows)


def streams_table(streams: pd.DataFrame) -> str:
    """Sign agreement on per-example gradient streams of trained and untrained models."""
    rows = [
        (
            r.stream,
            f"{r.d:,}",
            r.k,
            f"{100 * r.decisions:.1f}",
            f"{100 * r.walks:.1f}",
            number(r.bound_visited, 3),
            number(r.bound_faithful, 3),
            number(r.bound_projected, 3),
        )
        for r in streams.itertuples()
    ]
    headers = ("stream", "d", "k", *AGREEMENT_HEADERS[2:4], "bound, visited", "faithful", "signs")
    return markdown_table(headers, rows)


def signs_table(table: pd.DataFrame, workers: int) -> str:
    """The efficient mode's runs against the faithful server: final loss, f - f*, differences."""
    fin = finals(table)
    faithful = fin.loc[
        (fin["part"] == "B-synthetic") & (fin["m"] == workers) & (fin["method"] == "cd-grab")
    ].set_index("seed")
    rows = []
    for method, runs in [
        ("cd-grab", faithful.reset_index()),
        *fin.loc[fin["part"] == "signs"].groupby("method"),
    ]:
        mine = runs.set_index("seed")
        delta = (mine["train_loss"] - faithful.loc[mine.index, "train_loss"]).abs().max()
        rows.append(
            (
                method_label(str(method)),
                mean_std(mine["train_loss"].tolist(), 6),
                mean_std(mine["suboptimality"].tolist(), 3),
                f"{mine['suboptimality'].mean() / faithful['suboptimality'].mean():.3g}x",
                f"{delta:.2g}",
            )
        )
    headers = (
        "server",
        "final train loss",
        "f - f*",
        "f - f* / CD-GraB's",
        "max |loss - CD-GraB's|",
    )
    return markdown_table(headers, rows)


# --- the study, end to end ---------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """Everything the report states."""

    herding: pd.DataFrame
    agreement: pd.DataFrame
    table: pd.DataFrame
    optima: pd.DataFrame
    streams: pd.DataFrame
    scales: dict[str, float]
    seconds: dict[str, float]
    claims: tuple[Claim, ...]


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread inside the block, restored after.

    On a shared 2-core machine two threads made LeNet's per-example gradients up to 40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(study: Study, out: Path, progress: bool) -> Found:
    """Run experiment A, every simulated run and the offline sign study; judge the claims."""
    specs, scales = plan(study)
    with one_thread():
        start = time.perf_counter()
        herding, agreement = run_herding(study.herding)
        seconds = {"A": time.perf_counter() - start}
        simulated = run_specs(specs, out, progress)
        seconds |= simulated.seconds
        start = time.perf_counter()
        streams = offline_agreement(study, simulated)
        seconds["signs, offline"] = time.perf_counter() - start
    claims = all_claims(study, herding, simulated.table)
    return Found(
        herding, agreement, simulated.table, simulated.optima, streams, scales, seconds, claims
    )


def save_tables(found: Found, out: Path) -> None:
    """The measurements as CSV files."""
    found.herding.to_csv(out / HERDING_CSV, index=False)
    found.agreement.to_csv(out / AGREEMENT_CSV, index=False)
    found.table.to_csv(out / RUNS_CSV, index=False)
    found.optima.to_csv(out / OPTIMA_CSV, index=False)
    found.streams.to_csv(out / STREAMS_CSV, index=False)


def run_study(study: Study, out: Path, command: str, progress: bool = False) -> Outcome:
    """Run the whole study and write the runs, tables, figures, ``claims.json`` and report.

    Every run's config is validated before the first run starts.

    Args:
        study: the settings.
        out: the output folder (layout in the module docstring).
        command: the command that asked for it, quoted at the top of the report.
        progress: print each run's name and show its progress bar on stderr.

    Returns:
        The folder, the report's path and the claims.
    """
    start = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    found = measure(study, out, progress)
    save_tables(found, out)
    shown = figures(study, found.herding, found.table, out)
    wall = time.perf_counter() - start
    extra = {
        "study": asdict(study),
        "step_factors": found.scales,
        "seconds": found.seconds,
        "wall_time": wall,
    }
    write_claims(out / CLAIMS_JSON, found.claims, extra)
    report = write_report(out / REPORT_MD, sections(study, found, shown, out, command, wall))
    return Outcome(out, report, found.claims, PAPER_RUN)


# --- the report --------------------------------------------------------------------------------


def sections(
    study: Study,
    found: Found,
    shown: Sequence[tuple[Path, str]],
    out: Path,
    command: str,
    wall_time: float,
) -> list[str]:
    """The sections of ``report.md``."""
    passed = sum(c.passed for c in found.claims)
    figure = {path.stem: embed(path, caption, out) for path, caption in shown}
    notes = "".join(f"\n- Note: {note}" for note in study.notes)
    parts = [
        header("Reproduction: CD-GraB (Cooper et al., NeurIPS 2023)", command, wall_time),
        f"## Claims\n\n{passed} of {len(found.claims)} criteria PASS on this run. The "
        "criteria are those of the spec (`../shared/papers/cd-grab.md`, section 7); the "
        "paper-run column is context (the spec's numpy calibration and the paper's figures), "
        f"not a measurement of this run.{notes}\n\n{claims_table(found.claims)}",
        _setup(study, found),
        "## A. Parallel herding bound on fixed random vectors\n\n"
        f"{figure['herding']}\n\nBound after {study.herding.rounds} rounds (mean ± std over "
        f"{study.herding.trials} trial(s)); `start` is the bound of the uniform starting "
        f"orders.\n\n{herding_table(found.herding, study.herding.total)}",
    ]
    for s in study.logistic:
        parts.append(
            f"## B. Logistic regression, {s.name}: every order at equal epochs\n\n"
            f"{figure[f'suboptimality-{s.name}']}\n\nAfter {s.epochs} epochs; mean ± std over "
            f"seeds; `D-RR / order` is the ratio of mean f - f*; the herding bound is the "
            f"history's `herding_bound` of the last epoch.\n\n"
            f"{logistic_table(found.table, f'B-{s.name}')}"
        )
    synthetic = study.logistic[0].data
    parts.append(
        f"## C. Linear speedup\n\n{figure['speedup']}\n\nf - f* after {study.speedup.epochs} "
        f"epochs (seed {study.speedup.seed}).\n\n"
        f"{speedup_table(found.table, study.speedup, found.scales[synthetic])}"
    )
    if study.lenet:
        parts.append(
            f"## D. LeNet on `{study.lenet.data}`\n\n{figure['lenet']}\n\nFull training loss "
            "(mean ± std over seeds) by epoch; epoch 1 is identical for both orders (both "
            f"visit the same uniform order first).\n\n{lenet_table(found.table)}"
        )
    parts += [_signs(study, found, figure["signs"]), _runtime(found), _method_notes(study)]
    return parts


def _setup(study: Study, found: Found) -> str:
    a, c, sign = study.herding, study.speedup, study.signs
    lines = [
        "## Setup",
        "",
        f"- A: N = m n = {a.total:,} unit-length Gaussian directions in d = {a.dim}, centred "
        f"per worker; m in {{{_ms(a.workers)}}}; {a.rounds} reorder rounds from uniform orders; "
        f"{a.trials} trial(s). CD-GraB = `coordinated_pair_balance`; ID-GraB (Bal) = "
        "`mean_balance` on each worker's own (centred) vectors with a zero stale mean; ID-GraB "
        "(PairBal) = `independent_pair_balance`; D-RR = fresh uniform permutations. Metric: "
        "`herding_bound` (max over steps of the infinity norm of the prefix sums of the "
        "per-step sums over workers).",
    ]
    for s in study.logistic:
        factor = found.scales[s.data]
        lines.append(
            f"- B ({s.name}): `{s.data}` (test share {s.test_fraction:.4f}), L2 logistic "
            f"regression (l2 = {L2:g}, no intercept), float64; `sgd` with b = 1 per worker, no "
            f"momentum, step {s.lr} x {factor:.4g} = {s.lr * factor:.4g} (the spec's step times "
            f"the feature-scale factor); {s.epochs} epochs; iid shards; m in "
            f"{{{_ms(s.workers)}}}; orders {', '.join(LABELS[o] for o in s.orders)} on seeds "
            f"{_ms(s.seeds)}; m = 1 runs {', '.join(LABELS[o] for o in s.single_orders)} on "
            f"seed {s.seeds[0]} only."
        )
    lines += [
        f"- C: the synthetic set of B; m in {{{_ms(c.workers)}}}; step {c.lr_per_worker} m "
        f"times the same factor; {c.epochs} epochs; {', '.join(LABELS[o] for o in c.orders)} "
        f"(ID-GraB from m = 2); seed {c.seed}.",
        *_lenet_setup(study.lenet),
        f"- Efficient mode (`cd-grab-signs`): runs at m = {sign.workers} with B's synthetic "
        f"settings and projection k in {{{', '.join(str(k or 'd') for k in sign.projections)}}} "
        "(k = d: no projection); sign agreement on A's vectors (k = "
        f"{', '.join(map(str, a.projections))}) and on per-example gradient streams (k = "
        f"{', '.join(map(str, sign.offline))}).",
        "- f* per data set, seed, m and b: `newton_optimum` (Newton to full precision) on the "
        "training set the run keeps; f - f* uses the history's training objective on the same "
        f"set (`{OPTIMA_CSV}`).",
        _removed(found.table),
    ]
    return "\n".join(lines)


def _removed(table: pd.DataFrame) -> str:
    """Which runs' shards were cut to n examples per worker, and how many examples went."""
    rule = (
        "- Kept examples: `sgd` with an order keeps n examples of every worker's shard (the "
        "smallest shard cut to a multiple of 2b) and removes the others from the training set "
        "before the run, for every order alike (docs/algorithms.md, example orders)."
    )
    runs = table.drop_duplicates(["part", "m", "method", "seed"])
    cut = runs.loc[runs["removed"] > 0]
    if cut.empty:
        return f"{rule} No run removed any: every shard held exactly n examples."
    parts = sorted(set(runs["part"]) - set(cut["part"]))
    cases = cut.drop_duplicates(["part", "m", "removed", "n_train"])
    found = "; ".join(
        f"{r.part} (m = {r.m}): {r.removed:,} of {r.removed + r.n_train:,} removed, "
        f"{r.n_train // r.m:,} kept per worker"
        for r in cases.itertuples()
    )
    return f"{rule} Shards were cut in {found}. Nothing was removed in {', '.join(parts)}."


def _lenet_setup(lenet: LenetStudy | None) -> list[str]:
    if lenet is None:
        return []
    return [
        f"- D: LeNet-5 (ReLU, max-pool) on `{lenet.data}`, float32, m = {lenet.workers}, "
        f"b = {lenet.batch_size} per worker (global {lenet.workers * lenet.batch_size}), "
        f"step {lenet.lr}, momentum {lenet.momentum}, l2 = {L2:g}; {lenet.epochs} epochs; "
        f"D-RR and CD-GraB on seeds {_ms(lenet.seeds)}."
    ]


def _signs(study: Study, found: Found, figure: str) -> str:
    workers = study.signs.workers
    parts = [
        "## Efficient mode: `cd-grab-signs` against the faithful server",
        "The server of `cd-grab-signs` decides each pair's sign from k-dimensional random "
        "projections of the pair differences. Both servers see the same vectors in the same "
        "order. *Decisions agreeing*: the share of the faithful decisions that the projection "
        "reproduces from the same (projected) running sum, i.e. how well k dimensions keep the "
        "sign of <s, delta>. *Walks agreeing*: the share of equal signs when the projected "
        "server runs on its own, with its own running sum (one differing decision changes the "
        "later ones, so about 50% means unrelated walks, not bad balancing: see the bounds).",
        "On experiment A's vectors, along the faithful CD-GraB trajectory (mean over rounds and "
        "trials; bounds after the last round, the projected server reordering on its own):",
        agreement_table(found.agreement, found.herding),
    ]
    if not found.streams.empty:
        parts += [
            "On per-example gradients (one pass of both servers over each worker's examples in "
            "shard order, at the run's initial and final model; bounds of these vectors):",
            streams_table(found.streams),
        ]
    parts += [
        f"Runs at m = {workers} (B's synthetic setting), final epoch:",
        signs_table(found.table, workers),
        figure,
    ]
    return "\n\n".join(parts)


def _runtime(found: Found) -> str:
    runs = found.table.drop_duplicates(["part", "m", "method", "seed"]).groupby("part").size()
    rows = [(part, runs.get(part, "-"), f"{sec:.0f}") for part, sec in found.seconds.items()]
    return "## Runtime\n\n" + markdown_table(("part", "runs", "seconds"), rows)


def _method_notes(study: Study) -> str:
    lines = [
        "## Departures from the spec's calibration, and how the numbers are computed",
        "",
        f"- Data: lowcomm's `synthetic-logistic` (features N(0, I) in d = {SYNTHETIC_DIM}, "
        "teacher of norm 2, labels drawn) instead of the spec's features scaled by 2/sqrt(32) "
        "plus a bias column; no intercept is fitted; l2 = 1e-4 (the spec's calibration had "
        "none, its f* came from plain Newton). Step sizes are rescaled by 5 / (mean squared "
        "feature norm), which makes them equivalent for the feature scale.",
        "- The library's simulate engine: per-example gradients with `torch.func`, the server's "
        "sign rule <s, delta> <= 0, uniform starting orders drawn per worker. The synthetic set "
        "(features, teacher, split) and the partition depend on the seed, so f* is per seed.",
        "- m = 1 (N sequential steps per epoch) runs on the first seed only, and so does "
        "experiment C, to keep the full run under an hour on 2 cores; the criteria 'every "
        "seed' are judged on the seeds run.",
        "- Plain SGD only (the spec's momentum 0.9 variant and the b = 4 HMDA shape are not run).",
        "- Ratios compare means over seeds of f - f* at the last epoch; each claim's measured "
        "value is computed from `runs.csv` (the saved histories and f*).",
        f"- Files: `<part>/m<m>/<method>/seed<k>/` (each run), `{RUNS_CSV}`, `{OPTIMA_CSV}`, "
        f"`{HERDING_CSV}`, `{AGREEMENT_CSV}`, `{STREAMS_CSV}`, `{CLAIMS_JSON}`.",
    ]
    if study.lenet:
        lines.append(
            "- D: LeNet on MNIST images (the shared copy holds the 10,000 t10k images, split "
            "8,000 / 2,000), a few epochs, instead of the paper's CIFAR-10 for 100 epochs."
        )
    return "\n".join(lines)

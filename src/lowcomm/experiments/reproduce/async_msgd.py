"""``lowcomm reproduce async-msgd``: the momentum-asynchrony tradeoff (spec B.6, Liu et al. 2018).

Two studies, each vectorised over (grid cells x seeds) so the full grid runs in minutes:

* **Streaming PCA (B-1).** The ``async-msgd`` recursion with a constant delay tau,
  v_{k+1} = v_k + mu (v_k - v_{k-1}) + eta (I - v v') x_k x_k' v at v = v_{k-tau} (v_0 while
  k < tau), un-normalised (the paper's form), on a stream x_k ~ N(0, diag(1, 0.6, 0.4, ...))
  (:func:`lowcomm.data.synthetic_pca.pca_spectrum`, gap 0.4), started near the saddle
  (:meth:`StreamingPCA.init_params`). Every cell of a seed sees the same samples (common random
  numbers). Per (cell, seed): the first iteration with sin^2 <= 0.1 and the mean sin^2 over the
  last 25% of iterations. :func:`simulate_pca` is tested equal to :class:`AsyncMSGD` with
  ``delay=const:tau`` fed the same samples.
* **Network analogue (B-2).** MLP 64-64-10 on digits, one worker, batch 32, heavy-ball at the
  server on gradients tau updates old: :func:`simulate_network` batches the library's own
  :meth:`TorchModel.grad` over (cells x seeds) with the library's batch draws, data split and
  initialisation, and is tested equal to ``lowcomm run --algorithm async-msgd`` for one cell.

Claims are judged with thresholds fixed in this module before measuring (constants below).
Layout of ``OUT``: ``pca_cells.csv``, ``pca_groups.csv``, ``network.csv``, ``claims.json``,
``report.md`` and the figures it shows (``*.png``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.synthetic_pca import pca_spectrum
from lowcomm.experiments.config import make_config
from lowcomm.experiments.measures import (
    decreased,
    loglog_slope,
    non_increasing,
    pooled_loglog_slope,
)
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
from lowcomm.experiments.runner import prepare
from lowcomm.problems.pca import StreamingPCA
from lowcomm.problems.torch_model import TorchModel

OWNER = "lowcomm reproduce async-msgd"
PAPER_RUN = "Liu et al., NeurIPS 2018 (arXiv 1806.01660): no figure values available (spec B.4)"
HIT = 0.1  # first-hit threshold on sin^2
STUCK = 0.5  # a seed whose mean sin^2 over the last 25% exceeds this did not converge
CONVERGED_SHARE = 0.75  # a cell converges when at least this share of its seeds does
SLOW_SLOPE = (0.7, 1.3)  # claim 1: slope of log first-hit vs log(1 - mu) at tau = 0
ERROR_SLOPE = (-1.3, -0.7)  # claim 2: slope of log stationary error vs log(1 - mu) at tau = 0
TAU_SLOPE = (1.0, 2.0)  # claim 4: slope of log tau* vs log(1 - mu) (spec B.6 (b))
ETA_SLOPE = (-1.0, -0.5)  # claim 5: slope of log tau* vs log eta (spec B.6 (b))
MISSING_RULE = (
    "a group with no value (none/nan: nothing converges) ranks below every value, so a value "
    "followed by none is a decrease and none followed by a value a rise (previously any none "
    "failed the claim, though it means the quantity fell past its grid)"
)  # claims 3 and 6: the rule of lowcomm.experiments.measures.non_increasing
WORST = 2  # claim 9: mu = 0.9 among the WORST highest final losses of the 4 mus
PCA_CSV, GROUPS_CSV, NETWORK_CSV = "pca_cells.csv", "pca_groups.csv", "network.csv"


@dataclass(frozen=True)
class Study:
    """The grids of both studies (defaults: the full reproduction)."""

    mus: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    taus: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
    lrs: tuple[float, ...] = (0.01, 0.005, 0.0025)
    dims: tuple[int, ...] = (10, 50)
    seeds: tuple[int, ...] = tuple(range(16))
    iters: int = 12_000
    net_mus: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9)
    net_taus: tuple[int, ...] = (0, 2, 4, 8, 16)
    net_seeds: tuple[int, ...] = (0, 1, 2)
    net_updates: int = 3000
    net_lr: float = 0.05
    net_batch: int = 32
    network: bool = True


QUICK = Study(
    mus=(0.0, 0.5, 0.7, 0.9, 0.95),
    taus=(0, 2, 8, 32, 128),
    lrs=(0.005,),
    dims=(10,),
    seeds=tuple(range(8)),
    iters=6000,
    network=False,
)


def study_for(request: Request) -> Study:
    """The study a request asks for; ``--data`` is refused (the data are fixed)."""
    if request.data is not None:
        raise InvalidConfigError("data", OWNER, "left out (synthetic PCA and digits)", request.data)
    study = QUICK if request.quick else Study()
    if request.seeds:
        seeds = tuple(request.seeds)
        return Study(**(asdict(study) | {"seeds": seeds, "net_seeds": seeds[:3]}))
    return study


def reproduce(request: Request) -> Outcome:
    """Run the study a request asks for and write its report (the ``reproduce`` registry entry)."""
    return run_study(study_for(request), request.out, request.command, request.progress)


# --- streaming PCA, vectorised ---------------------------------------------------------------


@dataclass(frozen=True)
class PCATrace:
    """Per (cell, seed) results of :func:`simulate_pca`.

    First iteration with sin^2 <= HIT (inf: never), mean sin^2 over the last 25% (NaN:
    non-finite), and the final iterate ``[C, S, d]``.
    """

    first_hit: torch.Tensor
    stationary: torch.Tensor
    final: torch.Tensor


def pca_start(dim: int, seeds: Sequence[int]) -> torch.Tensor:
    """The library's v_0 for each seed (``StreamingPCA.init_params`` on the ``init`` stream)."""
    problem = StreamingPCA(dim, dtype=torch.float64)
    return torch.stack([problem.init_params(Streams(s).generator("init")) for s in seeds])


def pca_stream(dim: int, seeds: Sequence[int]) -> Callable[[int], torch.Tensor]:
    """Fresh samples X ~ N(0, diag(pca_spectrum(dim, 0.4))): ``draw(n)`` gives ``[n, S, d]``."""
    scale = np.sqrt(pca_spectrum(dim, 0.4))
    rngs = [Streams(s).numpy("async-msgd-pca") for s in seeds]

    def draw(n: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([r.standard_normal((n, dim)) * scale for r in rngs], 1))

    return draw


def simulate_pca(
    v0: torch.Tensor,
    draw: Callable[[int], torch.Tensor],
    mu: torch.Tensor,
    tau: torch.Tensor,
    lr: float,
    iters: int,
    chunk: int = 1000,
) -> PCATrace:
    """Async momentum Oja with constant delay per cell, vectorised over cells and seeds.

    Args:
        v0: the start ``[S, d]`` of each seed.
        draw: ``draw(n)`` the next n samples ``[n, S, d]`` (each seed's, shared by all cells).
        mu: momentum per cell, ``[C]``.
        tau: delay per cell, ``[C]``.
        lr: the step eta.
        iters: number of updates.
        chunk: samples drawn at a time.
    """
    cells, (seeds, dim) = mu.shape[0], v0.shape
    depth = int(tau.max()) + 1
    ring = v0.expand(depth, cells, seeds, dim).clone()  # v_j at slot j % depth
    v = previous = ring[0].clone()
    mu3, rows = mu.to(v0.dtype)[:, None, None], torch.arange(cells)
    first = torch.full((cells, seeds), math.inf, dtype=torch.float64)
    total = torch.zeros((cells, seeds), dtype=torch.float64)
    tail = iters - iters // 4
    k = 0
    with np.errstate(all="ignore"):
        while k < iters:
            samples = draw(min(chunk, iters - k))
            for x in samples:
                stale = ring[(k - tau) % depth, rows]
                proj = (stale * x).sum(-1, keepdim=True)
                oja = proj * x - proj**2 * stale
                v, previous = v + mu3 * (v - previous) + lr * oja, v
                k += 1
                ring[k % depth] = v
                sin2 = 1.0 - v[..., 0] ** 2 / (v**2).sum(-1)
                first = torch.where(torch.isinf(first) & (sin2 <= HIT), float(k), first)
                if k > tail:
                    total += sin2
    return PCATrace(first, total / (iters - tail), v)


def cell_summary(trace: PCATrace) -> pd.DataFrame:
    """Per cell: median first hit, mean stationary sin^2 and the share of converged seeds."""
    stationary = torch.nan_to_num(trace.stationary, nan=1.0)
    ok = (stationary <= STUCK) & torch.isfinite(trace.first_hit) & torch.isfinite(trace.stationary)
    return pd.DataFrame(
        {
            "first_hit": trace.first_hit.median(dim=1).values.numpy(),
            "stationary": stationary.mean(dim=1).numpy(),
            "converged_share": ok.double().mean(dim=1).numpy(),
        }
    )


def run_pca(study: Study, progress: bool = False) -> pd.DataFrame:
    """Every (d, eta, mu, tau) cell of the grid: one row each."""
    grid = [(m, t) for m in study.mus for t in study.taus]
    mu = torch.tensor([m for m, _ in grid], dtype=torch.float64)
    tau = torch.tensor([t for _, t in grid], dtype=torch.int64)
    frames = []
    for dim in study.dims:
        v0 = pca_start(dim, study.seeds)
        for lr in study.lrs:
            start = time.perf_counter()
            trace = simulate_pca(v0, pca_stream(dim, study.seeds), mu, tau, lr, study.iters)
            cells = cell_summary(trace)
            cells.insert(0, "tau", tau.numpy())
            cells.insert(0, "mu", mu.numpy())
            cells.insert(0, "eta", lr)
            cells.insert(0, "d", dim)
            frames.append(cells)
            if progress:
                print(f"pca d={dim} eta={lr}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    table = pd.concat(frames, ignore_index=True)
    table["converged"] = table["converged_share"] >= CONVERGED_SHARE
    return table


def tau_star(cells: pd.DataFrame) -> float:
    """Largest tau with every cell up to it convergent (one mu); NaN if tau = 0 fails."""
    best = math.nan
    for _, row in cells.sort_values("tau").iterrows():
        if not row["converged"]:
            break
        best = float(row["tau"])
    return best


def best_mu(cells: pd.DataFrame) -> float:
    """The mu with the smallest median first hit among convergent cells (one tau); NaN if none."""
    ok = cells[cells["converged"] & np.isfinite(cells["first_hit"])]
    return math.nan if ok.empty else float(ok.loc[ok["first_hit"].idxmin(), "mu"])


def group_table(cells: pd.DataFrame, taus: Sequence[int]) -> pd.DataFrame:
    """Per (d, eta, mu): tau*; per (d, eta, tau): best mu, as one long table."""
    rows = []
    for (dim, lr), group in cells.groupby(["d", "eta"], sort=False):
        for mu, by_mu in group.groupby("mu"):
            rows.append(
                {"d": dim, "eta": lr, "kind": "tau_star", "key": mu, "value": tau_star(by_mu)}
            )
        for tau, by_tau in group.groupby("tau"):
            rows.append(
                {"d": dim, "eta": lr, "kind": "best_mu", "key": tau, "value": best_mu(by_tau)}
            )
    return pd.DataFrame(rows)


# --- network analogue, vectorised over the library's gradient ---------------------------------


@dataclass(frozen=True)
class NetSeed:
    """One seed's data, problem and start, exactly as ``prepare`` builds them for one worker."""

    problem: TorchModel
    X: torch.Tensor
    y: torch.Tensor
    start: torch.Tensor
    evaluate: Callable[[torch.Tensor], float]


def net_config(seed: int, mu: float, tau: int, study: Study, dtype: str = "float32") -> dict:
    """The ``lowcomm run`` settings of one network cell."""
    return {
        "algorithm": "async-msgd",
        "data": "digits",
        "model": "mlp",
        "hidden": (64,),
        "workers": 1,
        "rounds": study.net_updates,
        "eval_every": study.net_updates,
        "seed": seed,
        "dtype": dtype,
        "options": {
            "lr": study.net_lr,
            "momentum": mu,
            "batch_size": study.net_batch,
            "delay": f"const:{tau}",
        },
    }


def net_seed(seed: int, study: Study, dtype: str = "float32") -> NetSeed:
    """The library's data split, shard and initialisation for ``seed``."""
    prepared = prepare(make_config(net_config(seed, 0.0, 0, study, dtype)))
    problem = prepared.problem
    assert isinstance(problem, TorchModel)
    size = int(prepared.shards.sizes[0])
    start = problem.init_params(prepared.streams.generator("init"))
    X, y = prepared.shards.X[0, :size], prepared.shards.y[0, :size]
    return NetSeed(problem, X, y, start, prepared.evaluator.train_loss)


def simulate_network(
    seeds: Sequence[NetSeed],
    batches: Callable[[int], torch.Tensor],
    mu: torch.Tensor,
    tau: torch.Tensor,
    lr: float,
    updates: int,
) -> torch.Tensor:
    """Heavy-ball on tau-stale gradients for every (cell, seed) at once; final params ``[C, S, D]``.

    ``batches(k)`` gives each seed's batch positions ``[S, b]`` for update k; the gradient is the
    library's ``TorchModel.grad`` with the model axis in place of the worker axis.
    """
    problem = seeds[0].problem
    cells, count = mu.shape[0], len(seeds)
    start = torch.stack([s.start for s in seeds])
    depth = int(tau.max()) + 1
    ring = start.expand(depth, cells, *start.shape).clone()
    v = previous = ring[0].clone()
    mu3, rows = mu.to(start.dtype)[:, None, None], torch.arange(cells)
    for k in range(updates):
        index = batches(k)
        X = torch.stack([s.X[i] for s, i in zip(seeds, index, strict=True)]).expand(
            cells, -1, -1, -1
        )
        y = torch.stack([s.y[i] for s, i in zip(seeds, index, strict=True)]).expand(cells, -1, -1)
        stale = ring[(k - tau) % depth, rows]
        flat = lambda t: t.reshape(cells * count, *t.shape[2:])  # noqa: E731
        weight = torch.ones(y.shape[2:], dtype=start.dtype).expand(cells * count, -1)
        grad = problem.grad(flat(stale), flat(X), flat(y), weight).reshape(v.shape)
        v, previous = v + mu3 * (v - previous) - lr * grad, v
        ring[(k + 1) % depth] = v
    return v


def library_batches(seeds: Sequence[NetSeed], study: Study) -> Callable[[int], torch.Tensor]:
    """The batch positions the library's one worker draws at update k, for each seed."""
    streams = [Streams(s) for s in study.net_seeds]
    zero, sizes = torch.tensor([0]), [torch.tensor([s.X.shape[0]]) for s in seeds]

    def batches(k: int) -> torch.Tensor:
        return torch.cat(
            [
                st.integers("batch", zero, k, study.net_batch, n, 0)
                for st, n in zip(streams, sizes, strict=True)
            ]
        )

    return batches


def run_network(study: Study, progress: bool = False) -> pd.DataFrame:
    """Final training loss (the library's ``train_loss``) of every (mu, tau, seed)."""
    start = time.perf_counter()
    grid = [(m, t) for m in study.net_mus for t in study.net_taus]
    mu = torch.tensor([m for m, _ in grid], dtype=torch.float64)
    tau = torch.tensor([t for _, t in grid], dtype=torch.int64)
    seeds = [net_seed(s, study) for s in study.net_seeds]
    final = simulate_network(
        seeds, library_batches(seeds, study), mu, tau, study.net_lr, study.net_updates
    )
    rows = [
        {"mu": m, "tau": t, "seed": seed, "train_loss": data.evaluate(final[c, j])}
        for c, (m, t) in enumerate(grid)
        for j, (seed, data) in enumerate(zip(study.net_seeds, seeds, strict=True))
    ]
    if progress:
        print(f"network: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return pd.DataFrame(rows)


# --- claims ------------------------------------------------------------------------------------


def _interval(value: float, bounds: tuple[float, float]) -> bool:
    return bool(bounds[0] <= value <= bounds[1])


def _groups(cells: pd.DataFrame) -> list[tuple[tuple[int, float], pd.DataFrame]]:
    return [((int(d), float(e)), g) for (d, e), g in cells.groupby(["d", "eta"], sort=False)]


def _name(key: tuple[int, float]) -> str:
    return f"d={key[0]}, eta={key[1]:g}"


def pca_claims(cells: pd.DataFrame, groups: pd.DataFrame, study: Study) -> list[Claim]:
    """Claims 1-7 (streaming PCA)."""
    found: list[Claim] = []
    slopes_hit, slopes_err = [], []
    for key, g in _groups(cells):
        zero = g[g["tau"] == 0].sort_values("mu")
        ok = zero[np.isfinite(zero["first_hit"])]
        slopes_hit.append((key, loglog_slope(1 - ok["mu"], ok["first_hit"])))
        slopes_err.append((key, loglog_slope(1 - zero["mu"], zero["stationary"])))
    text = lambda pairs: "; ".join(f"{_name(k)}: {v:.2f}" for k, v in pairs)  # noqa: E731
    found.append(
        Claim(
            "at tau = 0 the first-hit time scales like (1 - mu) (momentum accelerates by 1/(1-mu))",
            "theory (Sync-MSGD diffusion limit); spec pilot slope ~0.95",
            f"slope of log median first hit vs log(1-mu) in [{SLOW_SLOPE[0]}, {SLOW_SLOPE[1]}] "
            "for every (d, eta)",
            text(slopes_hit),
            all(_interval(v, SLOW_SLOPE) for _, v in slopes_hit),
        )
    )
    found.append(
        Claim(
            "at tau = 0 the stationary error scales like 1/(1 - mu)",
            "theory; spec pilot slope ~-0.99",
            "slope of log mean sin^2 (last 25%) vs log(1-mu) in "
            f"[{ERROR_SLOPE[0]}, {ERROR_SLOPE[1]}] "
            "for every (d, eta)",
            text(slopes_err),
            all(_interval(v, ERROR_SLOPE) for _, v in slopes_err),
        )
    )
    stars = groups[groups["kind"] == "tau_star"]
    per_group = [(key, g.sort_values("key")["value"].tolist()) for key, g in _groups(stars)]
    monotone = [(k, non_increasing(v) and decreased(v)) for k, v in per_group]
    found.append(
        Claim(
            "the largest convergent delay tau* decreases as mu grows",
            "hypothesis (notes): mu 0.7 -> 120, 0.9 -> 30, 0.95 -> 10",
            f"tau*(mu) non-increasing over the mu grid and tau*(0.95) < tau*(0), every (d, eta); "
            f"{MISSING_RULE}",
            "; ".join(f"{_name(k)}: {_stars(v)}" for k, v in per_group),
            all(ok for _, ok in monotone),
        )
    )
    top = max(study.taus)
    uncensored = []
    for _, g in _groups(stars):
        g = g[(g["value"] >= 1) & (g["value"] < top)]
        uncensored.append((1 - g["key"].to_numpy(), g["value"].to_numpy()))
    tau_slope = pooled_loglog_slope(uncensored)
    points = sum(len(x) for x, _ in uncensored if len(x) >= 2)
    found.append(
        Claim(
            "tau* ~ (1-mu)^p with p between 1 (stability boundary) and 2 (the paper's condition)",
            "theory: tau <~ (1-mu)^2 / eta^(1-gamma)",
            f"pooled slope of log tau* vs log(1-mu) in [{TAU_SLOPE[0]:g}, {TAU_SLOPE[1]:g}] "
            f"(one intercept per (d, eta), tau* in [1, {top}) only)",
            f"{tau_slope:.2f} from {points} points",
            _interval(tau_slope, TAU_SLOPE),
        )
    )
    if len(study.lrs) > 1:
        by_eta = []
        for _, g in stars.groupby(["d", "key"]):
            g = g[(g["value"] >= 1) & (g["value"] < top)]
            by_eta.append((g["eta"].to_numpy(), g["value"].to_numpy()))
        eta_slope = pooled_loglog_slope(by_eta)
        found.append(
            Claim(
                "tau* grows as eta shrinks, like eta^-(1-gamma), gamma in [0, 0.5]",
                "theory",
                f"pooled slope of log tau* vs log eta in [{ETA_SLOPE[0]:g}, {ETA_SLOPE[1]:g}] "
                f"(one intercept per (d, mu), tau* in [1, {top}) only)",
                f"{eta_slope:.2f} from {sum(len(x) for x, _ in by_eta if len(x) >= 2)} points",
                _interval(eta_slope, ETA_SLOPE),
            )
        )
    best = groups[groups["kind"] == "best_mu"]
    per_best = [(key, g.sort_values("key")["value"].tolist()) for key, g in _groups(best)]
    found.append(
        Claim(
            "the best mu for a given delay does not increase with tau",
            "hypothesis (notes): best mu shrinks with the number of workers",
            "mu with the least median first hit among convergent cells, non-increasing in tau "
            f"(every (d, eta)); {MISSING_RULE}",
            "; ".join(f"{_name(k)}: {', '.join(f'{m:g}' for m in v)}" for k, v in per_best),
            all(non_increasing(v) for _, v in per_best),
        )
    )
    proxy = []
    for key, g in _groups(cells):
        g = g[g["converged"]]
        wall = g["first_hit"] / (g["tau"] + 1)
        high = wall[g["mu"] == 0.9].min() if (g["mu"] == 0.9).any() else math.inf
        low = wall[g["mu"] < 0.9]
        lowest = low.min() if not low.empty else math.inf
        arg = g.loc[low.idxmin()] if not low.empty else None
        where = "" if arg is None else f" (mu={arg['mu']:g}, tau={int(arg['tau'])})"
        proxy.append((key, high, lowest, where))
    found.append(
        Claim(
            "more workers with less momentum beat fewer workers with mu = 0.9 (wall-clock proxy)",
            "theory: acceleration through asynchrony within the admissible region",
            "min first hit/(tau+1) over convergent cells with mu < 0.9 below that of mu = 0.9, "
            "every (d, eta)",
            "; ".join(f"{_name(k)}: {lo:.1f}{w} vs {hi:.1f}" for k, hi, lo, w in proxy),
            all(lo < hi for _, hi, lo, _ in proxy),
        )
    )
    return found


def _stars(values: Sequence[float]) -> str:
    return ", ".join("none" if math.isnan(v) else f"{v:g}" for v in values)


def network_claims(net: pd.DataFrame, study: Study) -> list[Claim]:
    """Claims 8-9 (network analogue), on mean final training loss over seeds (NaN counts as inf)."""
    mean = net.assign(train_loss=net["train_loss"].fillna(math.inf)).pivot_table(
        index="mu", columns="tau", values="train_loss", aggfunc="mean"
    )
    best = [float(mean[t].idxmin()) for t in mean.columns]
    late = [t for t in mean.columns if t >= 8]
    ranks = {t: int((mean[t] > mean.loc[0.9, t]).sum()) for t in late}  # mus worse than 0.9
    return [
        Claim(
            "network: the best mu (least final training loss) is non-increasing in tau",
            "hypothesis (notes): best mu 0.9, 0.9, 0.7, 0.5 for 1, 2, 4, 8 workers",
            "argmin over mu of mean final training loss, non-increasing over tau",
            ", ".join(f"tau={t}: {m:g}" for t, m in zip(mean.columns, best, strict=True)),
            non_increasing(best),
        ),
        Claim(
            "network: mu = 0.9 is among the worst at tau >= 8",
            "hypothesis (notes): mu = 0.9 worst at 8 workers",
            f"mu = 0.9 among the {WORST} highest mean final training losses of the "
            f"{len(mean.index)} mus at every tau >= 8",
            ", ".join(
                f"tau={t}: rank {len(mean.index) - ranks[t]} of {len(mean.index)} (1 = least loss)"
                for t in late
            ),
            bool(late) and all(r < WORST for r in ranks.values()),
        ),
    ]


# --- figures -----------------------------------------------------------------------------------


def heat_maps(cells: pd.DataFrame, column: str, title: str) -> Figure:
    """One annotated imshow per (d, eta): rows mu, columns tau; x marks non-convergent cells."""
    groups = _groups(cells)
    figure = Figure(
        figsize=(4.6 * len(groups) if len(groups) < 3 else 14, 3.6 * math.ceil(len(groups) / 3))
    )
    columns = min(3, len(groups))
    for i, (key, g) in enumerate(groups):
        ax = figure.add_subplot(math.ceil(len(groups) / columns), columns, i + 1)
        table = g.pivot(index="mu", columns="tau", values=column)
        ok = g.pivot(index="mu", columns="tau", values="converged")
        values = np.log10(table.to_numpy(float).clip(min=1e-12))
        image = ax.imshow(
            np.where(np.isfinite(values), values, np.nan), aspect="auto", cmap="viridis"
        )
        figure.colorbar(image, ax=ax, label=f"log10 {column}")
        for r, mu in enumerate(table.index):
            for c, tau in enumerate(table.columns):
                value = table.loc[mu, tau]
                label = (
                    "never"
                    if not np.isfinite(value)
                    else (f"{value:.0f}" if value >= 10 else f"{value:.2f}")
                )
                ax.text(
                    c,
                    r,
                    label if ok.loc[mu, tau] else f"x\n{label}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="w",
                )
        ax.set_xticks(range(len(table.columns)), [str(t) for t in table.columns])
        ax.set_yticks(range(len(table.index)), [f"{m:g}" for m in table.index])
        ax.set_xlabel("delay tau")
        ax.set_ylabel("momentum mu")
        ax.set_title(_name(key), fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def tau_star_figure(groups: pd.DataFrame, study: Study) -> Figure:
    """tau*(mu) per (d, eta) with (1-mu) and (1-mu)^2 reference shapes."""
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    stars = groups[groups["kind"] == "tau_star"]
    for key, g in _groups(stars):
        g = g.sort_values("key")
        ax.plot(1 - g["key"], g["value"].clip(lower=0.5), marker="o", label=_name(key))
    grid = np.linspace(0.05, 1.0, 50)
    anchor = float(np.nanmax(stars["value"].to_numpy(float))) if not stars.empty else 1.0
    ax.plot(grid, anchor * grid, "k--", label="shape (1-mu), through tau*(0)")
    ax.plot(grid, anchor * grid**2, "k:", label="shape (1-mu)^2, through tau*(0)")
    ax.axhline(max(study.taus), color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("1 - mu")
    ax.set_ylabel("largest convergent delay tau* (0.5: none)")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def network_figure(net: pd.DataFrame) -> Figure:
    """Final training loss against tau, one line per mu (mean over seeds, min-max band)."""
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    for mu, g in net.groupby("mu"):
        stats = g.groupby("tau")["train_loss"].agg(["mean", "min", "max"])
        ax.plot(stats.index, stats["mean"], marker="o", label=f"mu={mu:g}")
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("delay tau (updates)")
    ax.set_ylabel("final training loss")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


# --- the study ---------------------------------------------------------------------------------


def run_study(study: Study, out: Path, command: str, progress: bool = False) -> Outcome:
    """Run both studies, judge the claims and write the tables, figures and report."""
    start = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cells = run_pca(study, progress)
    pca_time = time.perf_counter() - start
    groups = group_table(cells, study.taus)
    cells.to_csv(out / PCA_CSV, index=False)
    groups.to_csv(out / GROUPS_CSV, index=False)
    found = pca_claims(cells, groups, study)
    net = None
    if study.network:
        net = run_network(study, progress)
        net.to_csv(out / NETWORK_CSV, index=False)
        found += network_claims(net, study)
    net_time = time.perf_counter() - start - pca_time
    shown = [
        (
            save_figure(
                heat_maps(cells, "first_hit", "median first iteration with sin^2 <= 0.1"),
                out / "first-hit.png",
            ),
            "Median first iteration with sin^2 <= 0.1 (x: cell not convergent)",
        ),
        (
            save_figure(
                heat_maps(cells, "stationary", "mean sin^2 over the last 25%"),
                out / "stationary.png",
            ),
            "Mean sin^2 over the last 25% of iterations (x: cell not convergent)",
        ),
        (
            save_figure(tau_star_figure(groups, study), out / "tau-star.png"),
            "Largest convergent delay tau* against 1 - mu, with the (1-mu) and (1-mu)^2 shapes",
        ),
    ]
    if net is not None:
        shown.append(
            (
                save_figure(network_figure(net), out / "network.png"),
                "Network analogue: final training loss against tau per mu",
            )
        )
    write_claims(out / CLAIMS_JSON, found, {"study": asdict(study)})
    wall = time.perf_counter() - start
    sections = [
        header(
            "Reproduction: Async-MSGD momentum-asynchrony tradeoff (Liu et al., NeurIPS 2018)",
            command,
            wall,
        ),
        f"PCA grid: {pca_time:.0f} s; network analogue: {net_time:.0f} s.",
        "## Claims\n\n" + claims_table(found),
        _setup(study),
        "## Streaming PCA\n\n" + _pca_tables(cells, groups, study),
        *(embed(path, caption, out) for path, caption in shown),
    ]
    if net is not None:
        sections.append("## Network analogue\n\n" + _network_table(net))
    report = write_report(out / REPORT_MD, sections)
    return Outcome(out, report, tuple(found), PAPER_RUN)


def _setup(study: Study) -> str:
    net = (
        f"MLP 64-64-10 (ReLU, cross-entropy, l2 1e-4) on scikit-learn digits, one worker, batch "
        f"{study.net_batch}, eta {study.net_lr:g} fixed, {study.net_updates} updates, "
        f"mu in {list(study.net_mus)}, tau in {list(study.net_taus)}, "
        f"seeds {list(study.net_seeds)}; "
        "judged on the final training loss over the whole training set (mean over seeds; a "
        "non-finite loss counts as worst)."
        if study.network
        else "not run (--quick)."
    )
    return f"""## Setup

- **Streaming PCA (B-1).** v_{{k+1}} = v_k + mu (v_k - v_{{k-1}}) + eta (I - v v') x_k x_k' v with
  v = v_{{k-tau}} (v_0 while k < tau), un-normalised, constant delay tau; x_k ~ N(0, diag(1, 0.6,
  0.4, ..., 0.4)) fresh every step (gap 0.4); v_0 = the library's `StreamingPCA.init_params`
  (e_1 part scaled by 0.05: near the saddle). mu in {list(study.mus)}, tau in {list(study.taus)},
  eta in {list(study.lrs)}, d in {list(study.dims)}, {len(study.seeds)} seeds, {study.iters:,}
  iterations; all cells of a seed see the same samples. Per (cell, seed): the first iteration
  with sin^2 <= {HIT} and the mean sin^2 over the last 25% (stationary error). A seed converges
  when its iterates stay finite, it hits {HIT} and its stationary error is <= {STUCK}; a cell
  converges when >= {CONVERGED_SHARE:.0%} of its seeds do. Cell values: median first hit over seeds,
  mean stationary error (a diverged seed counts as 1). tau*(mu): the largest grid tau such that
  every cell of that mu up to it converges. Best mu per tau: the least median first hit among
  convergent cells.
- **Verification.** The vectorised recursion is tested equal (float64, rtol 1e-10) to
  `AsyncMSGD(delay="const:tau")` run by the simulation engine on the same samples, and the network
  loop to `lowcomm run --algorithm async-msgd` for one cell (`tests/test_reproduce_async_msgd.py`).
- **Network analogue (B-2).** {net}
- **Thresholds** (fixed before measuring): slopes in the claims table; claim 4 and 5 use only
  uncensored tau* (>= 1 and below the largest grid delay {max(study.taus)})."""


def _pca_tables(cells: pd.DataFrame, groups: pd.DataFrame, study: Study) -> str:
    parts = []
    headline = cells[
        (cells["d"] == study.dims[0]) & (cells["eta"] == study.lrs[len(study.lrs) // 2])
    ]
    rows = []
    for mu, g in headline.groupby("mu"):
        g = g.set_index("tau")
        rows.append(
            [
                f"{mu:g}",
                *(
                    f"{number(g.loc[t, 'first_hit'])} / {g.loc[t, 'stationary']:.3f}"
                    + ("" if g.loc[t, "converged"] else " (x)")
                    for t in study.taus
                ),
            ]
        )
    key = (study.dims[0], study.lrs[len(study.lrs) // 2])
    parts.append(
        f"Median first hit / stationary error, {_name(key)} (x: not convergent):\n\n"
        + markdown_table(["mu \\ tau", *map(str, study.taus)], rows)
    )
    stars = groups[groups["kind"] == "tau_star"]
    rows = [
        [_name(k), *(_stars([v]) for v in g.sort_values("key")["value"])] for k, g in _groups(stars)
    ]
    parts.append(
        "Largest convergent delay tau*(mu):\n\n"
        + markdown_table(["(d, eta) \\ mu", *(f"{m:g}" for m in study.mus)], rows)
    )
    best = groups[groups["kind"] == "best_mu"]
    rows = [
        [_name(k), *(_stars([v]) for v in g.sort_values("key")["value"])] for k, g in _groups(best)
    ]
    parts.append(
        "Best mu per tau:\n\n" + markdown_table(["(d, eta) \\ tau", *map(str, study.taus)], rows)
    )
    return "\n\n".join(parts)


def _network_table(net: pd.DataFrame) -> str:
    rows = []
    for mu, g in net.groupby("mu"):
        rows.append(
            [f"{mu:g}", *(mean_std(h["train_loss"].tolist(), 3) for _, h in g.groupby("tau"))]
        )
    taus = sorted(net["tau"].unique())
    return "Final training loss (mean ± std over seeds):\n\n" + markdown_table(
        ["mu \\ tau", *map(str, taus)], rows
    )

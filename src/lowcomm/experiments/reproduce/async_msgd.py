"""``lowcomm reproduce async-msgd``: the momentum-asynchrony trade-off (Liu et al., NeurIPS 2018).

The network study is one engine run of ``async-msgd`` (``delay=const:tau``) per (mu, tau, seed);
streaming PCA is one call job per (d, eta) that runs the same recursion for all its (mu, tau,
seed) at once (:func:`simulate_pca`, tested equal to the engine; the engine would cost ~1,000x
more). Setup, measures, costs and departures: ``notes/async-msgd.md``. Thresholds are the
constants below, fixed before measuring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor

from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.synthetic_pca import pca_spectrum
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import decreased, loglog_slope, non_increasing, seed_mean
from lowcomm.experiments.measures import pooled_loglog_slope as pooled
from lowcomm.experiments.reproduce.report import Claim, Request, mean_std, number, unjudged
from lowcomm.experiments.reproduce.runs import SavedRun
from lowcomm.experiments.study import Findings, Job, Key, Output, Plan, Study
from lowcomm.problems.pca import StreamingPCA

HIT = 0.1  # first-hit threshold on sin^2
STUCK = 0.5  # a seed whose mean sin^2 over the last 25% exceeds this did not converge
CONVERGED_SHARE = 0.75  # a cell converges when at least this share of its seeds does
SLOW_SLOPE = (0.7, 1.3)  # claim 1: slope of log first hit vs log(1 - mu) at tau = 0
ERROR_SLOPE = (-1.3, -0.7)  # claim 2: slope of log stationary error vs log(1 - mu) at tau = 0
TAU_SLOPE = (1.0, 2.0)  # claim 4: slope of log tau* vs log(1 - mu) (spec B.6 (b))
ETA_SLOPE = (-1.0, -0.5)  # claim 5: slope of log tau* vs log eta (spec B.6 (b))
WORST = 2  # claim 9: mu = 0.9 among the WORST highest final losses
NET_LR, NET_BATCH, CHUNK = 0.05, 32, 1000
NAN_RULE = "no value (nothing converges) ranks below every value (measures.non_increasing)"
CLAIMS = [  # claim | paper run | criterion
    "at tau = 0 the first-hit time scales like (1 - mu) (momentum accelerates by 1/(1-mu)) | "
    "theory (Sync-MSGD diffusion limit); spec pilot slope ~0.95 | slope of log median first hit "
    f"vs log(1-mu) in {list(SLOW_SLOPE)} for every (d, eta)",
    "at tau = 0 the stationary error scales like 1/(1 - mu) | theory; spec pilot slope ~-0.99 | "
    f"slope of log mean sin^2 (last 25%) vs log(1-mu) in {list(ERROR_SLOPE)} for every (d, eta)",
    "the largest convergent delay tau* decreases as mu grows | hypothesis (notes): mu 0.7 -> 120, "
    "0.9 -> 30, 0.95 -> 10 | tau*(mu) non-increasing over the mu grid and tau*(largest mu) < "
    f"tau*(0), every (d, eta); {NAN_RULE}",
    "tau* ~ (1-mu)^p with p between 1 (stability boundary) and 2 (the paper's condition) | "
    "theory: tau <~ (1-mu)^2 / eta^(1-gamma) | pooled slope of log tau* vs log(1-mu) in "
    f"{list(TAU_SLOPE)} (one intercept per (d, eta), tau* in [1, largest tau) only)",
    "tau* grows as eta shrinks, like eta^-(1-gamma), gamma in [0, 0.5] | theory | pooled slope "
    f"of log tau* vs log eta in {list(ETA_SLOPE)} (one intercept per (d, mu), tau* in "
    "[1, largest tau) only)",
    "the best mu for a given delay does not increase with tau | hypothesis (notes): best mu "
    "shrinks with the number of workers | mu with the least median first hit among convergent "
    f"cells, non-increasing in tau (every (d, eta)); {NAN_RULE}",
    "more workers with less momentum beat fewer workers with mu = 0.9 (wall-clock proxy) | "
    "theory: acceleration through asynchrony within the admissible region | min first "
    "hit/(tau+1) over convergent cells with mu < 0.9 below that of mu = 0.9, every (d, eta)",
    "network: the best mu (least final training loss) is non-increasing in tau | hypothesis "
    "(notes): best mu 0.9, 0.9, 0.7, 0.5 for 1, 2, 4, 8 workers | argmin over mu of mean final "
    "training loss, non-increasing over tau",
    "network: mu = 0.9 is among the worst at tau >= 8 | hypothesis (notes): mu = 0.9 worst at 8 "
    f"workers | mu = 0.9 among the {WORST} highest mean final training losses at every tau >= 8",
]


@dataclass(frozen=True)
class Sizes:
    """The grids: streaming PCA (mu, tau, eta, d, seeds, iterations) and the network's."""

    mus: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    taus: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128)
    lrs: tuple[float, ...] = (0.01, 0.005, 0.0025)
    dims: tuple[int, ...] = (10, 50)
    seeds: tuple[int, ...] = tuple(range(16))
    iters: int = 12_000
    net_mus: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9)
    net_taus: tuple[int, ...] = (0, 2, 4, 8, 16)
    net_seeds: tuple[int, ...] = (0, 1)
    net_updates: int = 3000


FULL = Sizes()
QUICK = Sizes(dims=(10,), net_taus=(0, 4, 8, 16), net_seeds=(0,), net_updates=600)


# --- streaming PCA: the recursion vectorised over (mu, tau) cells and seeds ---------------------


def pca_start(dim: int, seeds: Sequence[int]) -> Tensor:
    """The engine's v_0 for each seed (``StreamingPCA.init_params`` on the ``init`` stream)."""
    problem = StreamingPCA(dim, dtype=torch.float64)
    return torch.stack([problem.init_params(Streams(s).generator("init")) for s in seeds])


def simulate_pca(
    v0: Tensor, draw: Callable[[int], Tensor], mu: Tensor, tau: Tensor, lr: float, iters: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``async-msgd``, ``delay=const:tau``, on streaming PCA for all cells and seeds at once.

    v_{k+1} = v_k + mu (v_k - v_{k-1}) + lr (x'u) (x - (x'u) u), u = v_{k-tau} (v_0 while
    k < tau). ``v0``: ``[S, d]``; ``draw(n)``: the next n samples ``[n, S, d]`` (shared by all
    cells); ``mu``, ``tau``: ``[C]``. Returns per (cell, seed) the first k with sin^2 <= HIT
    (inf: never), the mean sin^2 over the last 25% (NaN once non-finite); the final ``[C, S, d]``.
    """
    cells, (seeds, dim) = mu.shape[0], v0.shape
    depth = int(tau.max()) + 1
    ring = v0.expand(depth, cells, seeds, dim).clone()  # v_j at slot j % depth
    v = previous = ring[0].clone()
    mu3, rows = mu.to(v0.dtype)[:, None, None], torch.arange(cells)
    first = torch.full((cells, seeds), math.inf, dtype=torch.float64)
    total = torch.zeros((cells, seeds), dtype=torch.float64)
    tail, k = iters - iters // 4, 0
    while k < iters:
        for x in draw(min(CHUNK, iters - k)):
            stale = ring[(k - tau) % depth, rows]
            proj = (stale * x).sum(-1, keepdim=True)
            v, previous = v + mu3 * (v - previous) + lr * (proj * x - proj**2 * stale), v
            k += 1
            ring[k % depth] = v
            sin2 = 1.0 - v[..., 0] ** 2 / (v**2).sum(-1)
            first = torch.where(torch.isinf(first) & (sin2 <= HIT), float(k), first)
            if k > tail:
                total += sin2
    return first, total / (iters - tail), v


def pca_cells(dim: int, lr: float, sizes: Sizes, seeds: tuple[int, ...]) -> pd.DataFrame:
    """One (d, eta), a call job: first hit and stationary error of every (mu, tau, seed).

    Samples x ~ N(0, diag(pca_spectrum(dim, 0.4))), one stream per seed, fresh every step.
    """
    scale = np.sqrt(pca_spectrum(dim, 0.4))
    rngs = [Streams(s).numpy("async-msgd-pca") for s in seeds]

    def draw(n: int) -> Tensor:
        return torch.from_numpy(np.stack([r.standard_normal((n, dim)) for r in rngs], 1) * scale)

    grid = [(m, t) for m in sizes.mus for t in sizes.taus]
    mu = torch.tensor([m for m, _ in grid], dtype=torch.float64)
    tau = torch.tensor([t for _, t in grid])
    first, stationary, _ = simulate_pca(pca_start(dim, seeds), draw, mu, tau, lr, sizes.iters)
    rows = [(dim, lr, m, t, s) for m, t in grid for s in seeds]
    rows = pd.DataFrame(rows, columns=["d", "eta", "mu", "tau", "seed"])
    return rows.assign(first_hit=first.flatten().numpy(), stationary=stationary.flatten().numpy())


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (d, eta, mu, tau): first hit, stationary error and whether the cell converged.

    First hit: the lower median over seeds; stationary error: the mean (a diverged seed counts
    as 1); converged: at least CONVERGED_SHARE of the seeds finite, hitting HIT, at most STUCK.
    """
    finite = np.isfinite(runs["stationary"])
    stationary = runs["stationary"].where(finite, 1.0)
    ok = finite & np.isfinite(runs["first_hit"]) & (stationary <= STUCK)
    groups = runs.assign(stationary=stationary, share=ok).groupby(["d", "eta", "mu", "tau"])
    lower_median = lambda x: np.sort(x)[(len(x) - 1) // 2]  # noqa: E731
    cells = groups.agg({"first_hit": lower_median, "stationary": "mean", "share": "mean"})
    return cells.reset_index().assign(converged=lambda c: c["share"] >= CONVERGED_SHARE)


def tau_star(cells: pd.DataFrame) -> float:
    """Largest tau with every cell up to it convergent (one mu); NaN if tau = 0 fails."""
    cells = cells.sort_values("tau")
    ok = cells["converged"].to_numpy()
    count = len(ok) if ok.all() else int(np.argmin(ok))
    return math.nan if count == 0 else float(cells["tau"].iloc[count - 1])


def best_mu(cells: pd.DataFrame) -> float:
    """The mu with the least median first hit among convergent cells (one tau); NaN if none."""
    ok = cells[cells["converged"] & np.isfinite(cells["first_hit"])]
    return math.nan if ok.empty else float(ok.loc[ok["first_hit"].idxmin(), "mu"])


def per_group(cells: pd.DataFrame, by: str, read: Callable[[pd.DataFrame], float]) -> pd.DataFrame:
    """``read`` of the cells of each (d, eta, ``by``): a (d, eta) x ``by`` table."""
    return cells.groupby(["d", "eta", by]).apply(read, include_groups=False).unstack(by)


# --- the network: one engine run per (mu, tau, seed); the plan ---------------------------------


def net_config(seed: int, mu: float, tau: int, updates: int) -> RunConfig:
    """``lowcomm run`` settings of one network run (eta NET_LR, batch NET_BATCH)."""
    options = {"lr": NET_LR, "momentum": mu, "batch_size": NET_BATCH, "delay": f"const:{tau}"}
    return make_config(
        {"algorithm": "async-msgd", "data": "digits", "model": "mlp", "hidden": (64,)}
        | {"workers": 1, "rounds": updates, "eval_every": updates, "seed": seed}
        | {"options": options}
    )


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """PCA call jobs (slowest first, for balance), then the network's engine runs."""
    if request.data is not None:
        raise InvalidConfigError("data", "lowcomm reproduce async-msgd", "left out", request.data)
    s = sizes or (QUICK if request.quick else FULL)
    seeds = request.seeds or s.seeds
    net_seeds = request.seeds[: len(s.net_seeds)] if request.seeds else s.net_seeds
    pca = [
        Job(("pca", f"d{d}", f"eta{lr:g}"), call=pca_cells, args=(d, lr, s, seeds))
        for d in sorted(s.dims, reverse=True)
        for lr in s.lrs
    ]
    net = [
        Job(("network", f"mu{m:g}", f"tau{t}", f"seed{k}"), net_config(k, m, t, s.net_updates))
        for m in s.net_mus
        for t in s.net_taus
        for k in net_seeds
    ]
    grids = ("mus", "taus", "lrs", "dims", "net_mus", "net_taus")
    facts: dict[str, Any] = {k: ", ".join(f"{v:g}" for v in getattr(s, k)) for k in grids}
    facts |= {"seeds": len(seeds), "iters": f"{s.iters:,}", "net_updates": f"{s.net_updates:,}"}
    facts |= {"net_seeds": ", ".join(map(str, net_seeds)), "net_lr": NET_LR, "top": max(s.taus)}
    facts |= {"net_batch": NET_BATCH, "hit": HIT, "stuck": STUCK, "runs": len(net)}
    facts |= {"share": f"{CONVERGED_SHARE:.0%}"}
    return Plan([*pca, *net], facts)


# --- claims ------------------------------------------------------------------------------------


def judged(n: int, measured: str, passed: bool | None) -> Claim:
    """Claim ``n`` (1-based, :data:`CLAIMS`) with its measurement and verdict.

    ``passed`` None: not judged at this size, ``measured`` saying why.
    """
    claim, paper, criterion = CLAIMS[n - 1].split(" | ")
    if passed is None:
        return unjudged(claim, paper, criterion, measured)
    return Claim(claim, paper, criterion, measured, bool(passed))


def _name(key: tuple[float, ...]) -> str:
    return f"d={key[0]:g}, eta={key[1]:g}"


def _listed(values: Sequence[float]) -> str:
    return ", ".join("none" if math.isnan(v) else f"{v:g}" for v in values)


def _by_group(table: pd.DataFrame) -> str:
    return "; ".join(f"{_name(k)}: {_listed(v)}" for k, v in table.iterrows())


def slope_claims(cells: pd.DataFrame) -> list[Claim]:
    """Claims 1-2: at tau = 0, first hit ~ (1-mu) and stationary error ~ 1/(1-mu)."""
    hit, err = {}, {}
    for key, g in cells[cells["tau"] == 0].groupby(["d", "eta"]):
        ok = g[np.isfinite(g["first_hit"])]  # a mu that never hits leaves the fit: claim FAILs
        hit[key] = loglog_slope(1 - ok["mu"], ok["first_hit"]) if len(ok) == len(g) else math.nan
        err[key] = loglog_slope(1 - g["mu"], g["stationary"])
    text = lambda slopes: "; ".join(f"{_name(k)}: {v:.2f}" for k, v in slopes.items())  # noqa: E731
    return [
        judged(1, text(hit), all(SLOW_SLOPE[0] <= v <= SLOW_SLOPE[1] for v in hit.values())),
        judged(2, text(err), all(ERROR_SLOPE[0] <= v <= ERROR_SLOPE[1] for v in err.values())),
    ]


def tau_claims(stars: pd.DataFrame, top: int) -> list[Claim]:
    """Claims 3-5 on tau*(mu), ``stars`` a (d, eta) x mu table (NaN: none), ``top`` largest tau.

    The slopes use only tau* in [1, top): a delay that was found and lies inside the grid.
    """
    inside = stars.where((stars >= 1) & (stars < top))
    by_mu = [(1 - row.dropna().index, row.dropna()) for _, row in inside.iterrows()]
    by_eta = [
        (g[mu].dropna().index.get_level_values("eta"), g[mu].dropna())
        for _, g in inside.groupby(level="d")
        for mu in inside.columns
    ]
    points = lambda groups: sum(len(x) for x, _ in groups if len(x) >= 2)  # noqa: E731
    mu_slope, eta_slope = pooled(by_mu), pooled(by_eta)
    monotone = all(non_increasing(v) and decreased(v) for _, v in stars.iterrows())
    mu_text, eta_text = (
        f"{p:.2f} from {points(g)} points" for p, g in [(mu_slope, by_mu), (eta_slope, by_eta)]
    )
    return [
        judged(3, _by_group(stars), monotone),
        judged(4, mu_text, TAU_SLOPE[0] <= mu_slope <= TAU_SLOPE[1]),
        judged(5, eta_text, ETA_SLOPE[0] <= eta_slope <= ETA_SLOPE[1])
        if stars.index.get_level_values("eta").nunique() > 1
        else judged(5, "one step size in the grid", None),
    ]


def fastest(cells: pd.DataFrame) -> tuple[float, str]:
    """The least first hit/(tau+1) among ``cells`` (inf if none), and its (mu, tau)."""
    if cells.empty:
        return math.inf, ""
    at = cells.loc[(cells["first_hit"] / (cells["tau"] + 1)).idxmin()]
    return float(at["first_hit"] / (at["tau"] + 1)), f" (mu={at['mu']:g}, tau={int(at['tau'])})"


def mu_claims(bests: pd.DataFrame, cells: pd.DataFrame) -> list[Claim]:
    """Claim 6 (best mu per tau, a (d, eta) x tau table) and claim 7 (wall-clock proxy)."""
    proxy = []
    for key, g in cells.groupby(["d", "eta"]):  # a group with no convergent cell: inf vs inf
        g = g[g["converged"]]
        (lo, at), (hi, _) = fastest(g[g["mu"] < 0.9]), fastest(g[g["mu"] == 0.9])
        proxy.append((key, lo, hi, at))
    text = "; ".join(f"{_name(k)}: {lo:.1f}{at} vs {hi:.1f}" for k, lo, hi, at in proxy)
    return [
        judged(6, _by_group(bests), all(non_increasing(v) for _, v in bests.iterrows())),
        judged(7, text, all(lo < hi for _, lo, hi, _ in proxy)),
    ]


def network_claims(mean: pd.DataFrame) -> list[Claim]:
    """Claims 8-9 on the mean final training loss, a mu x tau table (NaN counts as inf)."""
    mean = mean.fillna(math.inf)
    best = [float(mean[t].idxmin()) for t in mean.columns]
    rank = {t: 1 + int((mean[t] < mean.loc[0.9, t]).sum()) for t in mean.columns if t >= 8}
    n = len(mean.index)
    ranks = ", ".join(f"tau={t}: rank {r} of {n} (1 = least loss)" for t, r in rank.items())
    bests = ", ".join(f"tau={t}: {m:g}" for t, m in zip(mean.columns, best, strict=True))
    return [
        judged(8, bests, non_increasing(best)),
        judged(9, ranks, bool(rank) and all(r > n - WORST for r in rank.values())),
    ]


# --- figures and findings ------------------------------------------------------------------------


def heat_maps(cells: pd.DataFrame, column: str, label: str) -> Figure:
    """log10 ``column`` per (d, eta): rows mu, columns tau; x marks a cell not convergent."""
    groups = list(cells.groupby(["d", "eta"]))
    across, down = min(3, len(groups)), math.ceil(len(groups) / 3)
    figure = Figure(figsize=(4.6 * across, 3.6 * down), layout="constrained")
    axes = figure.subplots(down, across, squeeze=False).flat
    for ax, (key, g) in zip(axes, groups, strict=False):
        table = g.pivot(index="mu", columns="tau", values=column)
        ok = g.pivot(index="mu", columns="tau", values="converged").to_numpy(bool)
        values = table.to_numpy(float)
        shown = np.log10(np.where(np.isfinite(values), values, np.nan).clip(min=1e-12))
        figure.colorbar(ax.imshow(shown, aspect="auto"), ax=ax)
        for (r, c), value in np.ndenumerate(values):
            text = ("" if ok[r, c] else "x\n") + (
                number(value, 2) if np.isfinite(value) else "never"
            )
            ax.text(c, r, text, ha="center", va="center", fontsize=6, color="w")
        ax.set_xticks(range(len(table.columns)), [str(t) for t in table.columns])
        ax.set_yticks(range(len(table.index)), [f"{m:g}" for m in table.index])
        ax.set(xlabel="delay tau", ylabel="momentum mu", title=f"{_name(key)}: log10 {label}")
    return figure


def lines(table: pd.DataFrame, xlabel: str, ylabel: str, logx: bool) -> Figure:
    """One line per row of ``table`` against its columns, log y (and log x with ``logx``)."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.subplots()
    for name, row in table.iterrows():
        ax.plot(row.index.to_numpy(float), row.to_numpy(float), marker="o", label=str(name))
    ax.set(yscale="log", xscale="log" if logx else "linear", xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=7)
    return figure


def network_losses(outputs: Mapping[Key, Output]) -> pd.DataFrame:
    """The engine's final training loss (whole training set) of each (mu, tau, seed) run."""
    rows = [
        (float(key[1][2:]), int(key[2][3:]), int(key[3][4:]), run.history["train_loss"].iloc[-1])
        for key, run in outputs.items()
        if isinstance(run, SavedRun)
    ]
    return pd.DataFrame(rows, columns=["mu", "tau", "seed", "train_loss"])


def findings(plan: Plan, outputs: Mapping[Key, Output]) -> Findings:
    """Cells, tau*, best mu and network losses; the nine claims; tables and figures."""
    cells = cell_table(pd.concat([o for o in outputs.values() if isinstance(o, pd.DataFrame)]))
    stars, bests = per_group(cells, "mu", tau_star), per_group(cells, "tau", best_mu)
    net = network_losses(outputs)
    mean = net.pivot_table("train_loss", "mu", "tau", aggfunc=seed_mean, dropna=False)
    found = slope_claims(cells) + tau_claims(stars, plan.facts["top"]) + mu_claims(bests, cells)
    named = lambda t: t.set_axis([_name(k) for k in t.index]).rename_axis("(d, eta)")  # noqa: E731
    labelled = lambda t: t.rename(columns=lambda c: f"{c:g}")  # noqa: E731
    shown = lambda t: labelled(named(t).map(lambda v: _listed([v]))).reset_index()  # noqa: E731
    losses = net.groupby(["mu", "tau"])["train_loss"].agg(lambda x: mean_std(list(x), 3))
    curve = named(stars).clip(lower=0.5).set_axis(1 - stars.columns, axis=1)
    return Findings(
        found + network_claims(mean),
        tables={
            "tau_star": (shown(stars), "Largest convergent delay tau*(mu) (none: tau = 0 fails)"),
            "best_mu": (shown(bests), "Best mu per tau (none: no convergent mu)"),
            "network": (losses.unstack("tau").reset_index(), "Network: final training loss"),
        },
        figures={
            "first-hit": (
                heat_maps(cells, "first_hit", "median first hit"),
                f"Median first iteration with sin^2 <= {HIT} (x: cell not convergent)",
            ),
            "stationary": (
                heat_maps(cells, "stationary", "stationary sin^2"),
                "Mean sin^2 over the last 25% of iterations (x: cell not convergent)",
            ),
            "tau-star": (
                lines(curve, "1 - mu", "tau* (0.5: none)", logx=True),
                "Largest convergent delay tau* against 1 - mu",
            ),
            "network": (
                lines(mean.rename(index=lambda m: f"mu={m:g}"), "tau", "loss", logx=False),
                "Network: mean final training loss against the delay tau",
            ),
        },
    )


STUDY = Study(
    name="async-msgd",
    title="Reproduction: Async-MSGD momentum-asynchrony trade-off (Liu et al., NeurIPS 2018)",
    paper_source="Liu et al., NeurIPS 2018 (arXiv 1806.01660): no figure values (spec B.4)",
    plan=plan,
    findings=findings,
)

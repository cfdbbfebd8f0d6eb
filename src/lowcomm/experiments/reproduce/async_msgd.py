"""``lowcomm reproduce async-msgd``: the momentum-asynchrony trade-off (Liu et al., NeurIPS 2018).

The network study is one engine run of ``async-msgd`` (``delay=const:tau``) per (mu, tau, seed);
streaming PCA is one call job per (d, eta) that runs the same recursion for all its (mu, tau,
seed) at once (:func:`simulate_pca`, tested equal to the engine; the engine would cost ~1,000x
more). Setup, measures, costs and departures: ``notes/async-msgd.md``; the claims' wording:
``notes/async-msgd.claims.toml``, their thresholds the constants below, fixed before measuring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.synthetic_pca import pca_spectrum
from lowcomm.experiments.config import make_config
from lowcomm.experiments.measures import (
    decreased,
    key_numbers,
    listed,
    loglog_slope,
    non_increasing,
    seed_mean,
)
from lowcomm.experiments.measures import pooled_loglog_slope as pooled
from lowcomm.experiments.reproduce.figures import Chart, Panel
from lowcomm.experiments.reproduce.report import Claim, Request, claim_texts, mean_std, number
from lowcomm.experiments.study import Findings, Job, Outputs, Plan, SavedRun, Study
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
TEXTS = claim_texts(  # the claims' wording: notes/async-msgd.claims.toml
    "async-msgd",
    {"slow_slope": list(SLOW_SLOPE), "error_slope": list(ERROR_SLOPE), "worst": WORST}
    | {"tau_slope": list(TAU_SLOPE), "eta_slope": list(ETA_SLOPE)},
)


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
    cells = groups.agg({"first_hit": lower_median, "stationary": "mean", "share": "mean"})
    cells = cells.reset_index()
    return cells.assign(converged=cells["share"] >= CONVERGED_SHARE)


def lower_median(values: pd.Series) -> float:
    """The lower of the two middle values for an even count: a value some seed has."""
    return float(np.sort(values)[(len(values) - 1) // 2])


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


# --- the plan: PCA call jobs, one engine run per network (mu, tau, seed) -----------------------


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
    net: dict[str, Any] = {"algorithm": "async-msgd", "data": "digits", "model": "mlp"}
    net |= {"hidden": (64,)}
    net |= {"workers": 1, "rounds": s.net_updates, "eval_every": s.net_updates}
    options = {"lr": NET_LR, "batch_size": NET_BATCH}
    runs = [
        Job(
            ("network", f"mu{m:g}", f"tau{t}", f"seed{k}"),
            make_config(
                net | {"seed": k, "options": options | {"momentum": m, "delay": f"const:{t}"}}
            ),
        )
        for m in s.net_mus
        for t in s.net_taus
        for k in net_seeds
    ]
    grids = ("mus", "taus", "lrs", "dims", "net_mus", "net_taus")
    facts: dict[str, Any] = {k: listed(getattr(s, k)) for k in grids}
    facts |= {"seeds": len(seeds), "iters": f"{s.iters:,}", "net_updates": f"{s.net_updates:,}"}
    facts |= {"net_seeds": listed(net_seeds), "net_lr": NET_LR, "top": max(s.taus)}
    facts |= {"net_batch": NET_BATCH, "hit": HIT, "stuck": STUCK, "runs": len(runs)}
    return Plan([*pca, *runs], facts | {"share": f"{CONVERGED_SHARE:.0%}"})


# --- claims ------------------------------------------------------------------------------------


def judged(key: str, measured: str, passed: bool | None) -> Claim:
    """Claim ``key`` of the claims file; ``passed`` None: not judged, ``measured`` saying why."""
    return TEXTS[key].unjudged(measured) if passed is None else TEXTS[key].judged(measured, passed)


def within(values: Iterable[float], bounds: tuple[float, float]) -> bool:
    """Whether every value lies in ``[low, high]`` (NaN never does)."""
    return all(bounds[0] <= v <= bounds[1] for v in values)


def group_name(key: tuple[float, ...]) -> str:
    """``d=10, eta=0.01``."""
    return f"d={key[0]:g}, eta={key[1]:g}"


def by_group(values: Mapping[Any, Any], form: str = "{}") -> str:
    """``d=10, eta=0.01: <value>; ...``: a measurement per (d, eta), each value as ``form``."""
    return "; ".join(f"{group_name(key)}: {form.format(v)}" for key, v in values.items())


def rows_listed(table: pd.DataFrame) -> str:
    """Each row of a (d, eta) x grid table, listed (NaN as ``none``), by group."""
    return by_group({key: listed(row.tolist()) for key, row in table.iterrows()})


def slope_claims(cells: pd.DataFrame) -> list[Claim]:
    """Claims 1-2: at tau = 0, first hit ~ (1-mu) and stationary error ~ 1/(1-mu)."""
    hit, err = {}, {}
    for key, g in cells[cells["tau"] == 0].groupby(["d", "eta"]):
        ok = g[np.isfinite(g["first_hit"])]  # a mu that never hits leaves the fit: claim FAILs
        hit[key] = loglog_slope(1 - ok["mu"], ok["first_hit"]) if len(ok) == len(g) else math.nan
        err[key] = loglog_slope(1 - g["mu"], g["stationary"])
    return [
        judged("first_hit", by_group(hit, "{:.2f}"), within(hit.values(), SLOW_SLOPE)),
        judged("stationary", by_group(err, "{:.2f}"), within(err.values(), ERROR_SLOPE)),
    ]


def pooled_fit(groups: list[tuple[Any, pd.Series]]) -> tuple[float, str]:
    """The pooled log-log slope of ``groups`` and ``"<slope> from <n> points"``."""
    slope, points = pooled(groups), sum(len(x) for x, _ in groups if len(x) >= 2)
    return slope, f"{slope:.2f} from {points} points"


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
    (mu_slope, mu_text), (eta_slope, eta_text) = pooled_fit(by_mu), pooled_fit(by_eta)
    monotone = all(non_increasing(v) and decreased(v) for _, v in stars.iterrows())
    one_eta = stars.index.get_level_values("eta").nunique() == 1
    return [
        judged("tau_star", rows_listed(stars), monotone),
        judged("tau_mu_slope", mu_text, within([mu_slope], TAU_SLOPE)),
        judged("tau_eta_slope", "one step size in the grid", None)
        if one_eta
        else judged("tau_eta_slope", eta_text, within([eta_slope], ETA_SLOPE)),
    ]


def fastest(cells: pd.DataFrame) -> tuple[float, str]:
    """The least first hit/(tau+1) among ``cells`` (inf if none), and its (mu, tau)."""
    if cells.empty:
        return math.inf, ""
    at = cells.loc[(cells["first_hit"] / (cells["tau"] + 1)).idxmin()]
    return float(at["first_hit"] / (at["tau"] + 1)), f" (mu={at['mu']:g}, tau={int(at['tau'])})"


def mu_claims(bests: pd.DataFrame, cells: pd.DataFrame) -> list[Claim]:
    """Claim 6 (best mu per tau, a (d, eta) x tau table) and claim 7 (wall-clock proxy)."""
    proxy = {}
    for key, g in cells.groupby(["d", "eta"]):  # a group with no convergent cell: inf vs inf
        g = g[g["converged"]]
        (lo, at), (hi, _) = fastest(g[g["mu"] < 0.9]), fastest(g[g["mu"] == 0.9])
        proxy[key] = (f"{lo:.1f}{at} vs {hi:.1f}", lo < hi)
    monotone = all(non_increasing(v) for _, v in bests.iterrows())
    wall = by_group({k: text for k, (text, _) in proxy.items()})
    return [
        judged("best_mu", rows_listed(bests), monotone),
        judged("wall_clock", wall, all(ok for _, ok in proxy.values())),
    ]


def network_claims(mean: pd.DataFrame) -> list[Claim]:
    """Claims 8-9 on the mean final training loss, a mu x tau table (NaN counts as inf)."""
    mean = mean.fillna(math.inf)
    best = [float(mean[t].idxmin()) for t in mean.columns]
    rank = {t: 1 + int((mean[t] < mean.loc[0.9, t]).sum()) for t in mean.columns if t >= 8}
    n = len(mean.index)
    ranks = ", ".join(f"tau={t}: rank {r} of {n} (1 = least loss)" for t, r in rank.items())
    bests = ", ".join(f"tau={t}: {m:g}" for t, m in zip(mean.columns, best, strict=True))
    worst = bool(rank) and all(r > n - WORST for r in rank.values())
    return [
        judged("network_best_mu", bests, non_increasing(best)),
        judged("network_worst", ranks, worst),
    ]


# --- figures and findings ------------------------------------------------------------------------


def heat_maps(cells: pd.DataFrame, column: str, label: str) -> Chart:
    """log10 ``column`` per (d, eta): rows mu, columns tau; x marks a cell not convergent."""
    panels = []
    for key, g in cells.groupby(["d", "eta"]):
        text = [
            ("" if ok else "x\n") + (number(v, 2) if np.isfinite(v) else "never")
            for v, ok in zip(g[column], g["converged"], strict=True)
        ]
        points = pd.DataFrame({"x": g["tau"], "y": g["mu"], "value": g[column], "text": text})
        title = f"{group_name(key)}: log10 {label}"
        panels.append(Panel(points, "delay tau", "momentum mu", title, heat=True))
    return Chart(panels, 3, (4.6, 3.6))


def lines(table: pd.DataFrame, xlabel: str, ylabel: str, log: bool = False) -> Chart:
    """One line per row of ``table`` against its columns, log y (and x with ``log``)."""
    points = table.rename(index=str).reset_index(names="line")
    points = points.melt(id_vars="line", var_name="x", value_name="y").astype({"x": float})
    return Chart([Panel(points, xlabel, ylabel, log_x=log, log_y=True)], size=(6.4, 4.2))


def named(table: pd.DataFrame) -> pd.DataFrame:
    """A (d, eta) x grid table with rows named ``d=10, eta=0.01``."""
    return table.set_axis([group_name(k) for k in table.index]).rename_axis("(d, eta)")


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A (d, eta) x grid table as the report shows it: named rows, ``:g`` columns, ``none``."""
    return named(table).map(lambda v: listed([v])).rename(columns="{:g}".format).reset_index()


def figures(
    cells: pd.DataFrame, stars: pd.DataFrame, mean: pd.DataFrame, top: int
) -> dict[str, tuple[Chart, str]]:
    """Heat maps of first hit and stationary error, tau* against 1 - mu, the network's losses."""
    drawn = named(stars).clip(lower=0.5).set_axis(1 - stars.columns, axis=1)  # tau* = 0 at 0.5
    x = "(x: cell not convergent)"
    return {
        "first-hit": (
            heat_maps(cells, "first_hit", "median first hit"),
            f"Median first iteration with sin^2 <= {HIT} {x}",
        ),
        "stationary": (
            heat_maps(cells, "stationary", "stationary sin^2"),
            f"Mean sin^2 over the last 25% of iterations {x}",
        ),
        "tau-star": (
            lines(drawn, "1 - mu", "largest convergent delay tau* (0 drawn at 0.5)", log=True),
            f"Largest convergent delay tau* against 1 - mu ({top}: the largest delay tried, all"
            " convergent; no point: not even tau = 0 converges)",
        ),
        "network": (
            lines(mean.rename(index="mu = {:g}".format), "delay tau", "mean final training loss"),
            "Network: mean final training loss against the delay tau, a line per momentum mu",
        ),
    }


def findings(plan: Plan, outputs: Outputs) -> Findings:
    """Cells, tau*, best mu and network losses; the nine claims; tables and figures."""
    cells = cell_table(pd.concat([o for o in outputs.values() if isinstance(o, pd.DataFrame)]))
    runs = {key: run for key, run in outputs.items() if isinstance(run, SavedRun)}
    stars, bests = per_group(cells, "mu", tau_star), per_group(cells, "tau", best_mu)
    net = pd.DataFrame(  # the final training loss (whole training set) of each network run
        [key_numbers(k) | {"loss": o.history["train_loss"].iloc[-1]} for k, o in runs.items()],
        columns=["mu", "tau", "seed", "loss"],
    ).astype({"tau": int})
    mean = net.pivot_table("loss", "mu", "tau", aggfunc=seed_mean, dropna=False)
    claims = slope_claims(cells) + tau_claims(stars, plan.facts["top"]) + mu_claims(bests, cells)
    losses = net.groupby(["mu", "tau"])["loss"].agg(functools.partial(mean_std, digits=3))
    tables = {
        "tau_star": (shown(stars), "Largest convergent delay tau*(mu) (none: tau = 0 fails)"),
        "best_mu": (shown(bests), "Best mu per tau (none: no convergent mu)"),
        "network": (losses.unstack("tau").reset_index(), "Network: final training loss"),
    }
    drawn = figures(cells, stars, mean, plan.facts["top"])
    return Findings(claims + network_claims(mean), [], tables, drawn)


STUDY = Study(
    name="async-msgd",
    title="Reproduction: Async-MSGD momentum-asynchrony trade-off (Liu et al., NeurIPS 2018)",
    paper_source="Liu et al., NeurIPS 2018 (arXiv 1806.01660): no figure values (spec B.4)",
    plan=plan,
    findings=findings,
)

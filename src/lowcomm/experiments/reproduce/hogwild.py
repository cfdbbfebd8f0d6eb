"""``lowcomm reproduce hogwild``: Hogwild!-style local SGD with increasing sample sizes, declared.

van Dijk et al., AISTATS 2021, as ``../shared/papers/hogwild-increasing-batch-and-async-msgd.md``
reconstructs it: ``hogwild-ib`` runs stopped by a gradient budget K. Setup, step sizes and
departures: ``notes/hogwild.md``; claim wording: ``notes/hogwild.claims.toml``, its thresholds
the constants below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
import torch

from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.schedules import SampleSizes, delay_aware_offset
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import loglog_slope, optima, reach, seed_mean
from lowcomm.experiments.reproduce.figures import Chart, Panel, bands
from lowcomm.experiments.reproduce.report import Claim, Request, claim_texts
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import Findings, Job, Outputs, Plan, SavedRun, Study, shared_data

WORKERS, ALPHA, CONVEX_L2 = 5, 2.0, 1e-10  # CONVEX_L2: the l2 of the plain convex F*
EVALS, BUDGET_POINTS = 100, 8  # evaluations per run; budgets K/10 .. K of the slope fit
SECONDS_PER_GRAD, SPEEDS, CAPS = 1e-3, (1.0, 2.0, 4.0), ("0", "1", "2", "none")
LINEAR_SLOPE, CONSTANT_SLOPE = (0.45, 0.55), (0.9, 1.1)
MAX_LINEAR_RATIO = 1.5  # linear F - F* <= 1.5 x the best constant schedule's, at equal K
MAX_ACCURACY_GAP = 2.0  # non-convex: best constant - linear test accuracy, in points
MAX_ASYNC_RATIO = 2.0  # asynchronous (cap <= 2) F - F* <= 2 x the synchronous run's
MIN_QUADRATIC_RATIO = 1.5  # quadratic F - F* >= 1.5 x the best linear's (biased split)
TEXTS = claim_texts(
    "hogwild",
    {"linear_low": LINEAR_SLOPE[0], "linear_high": LINEAR_SLOPE[1]}
    | {"constant_low": CONSTANT_SLOPE[0], "constant_high": CONSTANT_SLOPE[1]}
    | {"max_linear_ratio": MAX_LINEAR_RATIO, "max_accuracy_gap": MAX_ACCURACY_GAP}
    | {"max_async_ratio": MAX_ASYNC_RATIO, "min_quadratic_ratio": MIN_QUADRATIC_RATIO},
)
CONSTANT, LINEAR = ("const:1", "const:10", "const:100"), ("linear:1,1", "linear:4,1")
QUADRATIC = "poly:2"
LABELS = {"const:1": "s = 1", "const:10": "s = 10", "const:100": "s = 100"}
LABELS |= {"linear:1,1": "s_i = i + 1", "linear:4,1": "s_i = 4i + 1", "poly:2": "s_i = (i + 1)^2"}
JUDGED = ("strong", "convex", "nonconvex")  # on the paper's step; strong-delay is a sensitivity
KEYS = ["group", "case", "split", "schedule", "cap"]  # a run's key, then f"seed{k}"
SHOWN = {"gap": "F - F* (F)", "test_metric": "test accuracy %", "wall_time": "wall s (all seeds)"}


@dataclass(frozen=True)
class Sizes:
    """Data, budget K and l2 of the logistic cases; data, K, width and eta0 of the MLP; seeds."""

    synthetic: str = "synthetic-logistic:10000,20"
    real_data: bool = True  # phishing and a9a from the shared data sets
    budget: int = 10_000
    l2: float = 0.04
    mlp_data: str = "digits"
    mlp_budget: int = 2_000
    hidden: tuple[int, ...] = (32,)
    eta0: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2)


SMALL = "synthetic-logistic:4000,20"
FULL = Sizes()
QUICK = replace(FULL, synthetic=SMALL, real_data=False, budget=3_000, l2=0.1, seeds=(0,))
QUICK = replace(QUICK, mlp_data=SMALL, mlp_budget=1_000, hidden=(16,), eta0=0.1)  # the MLP


@dataclass(frozen=True)
class Case:
    """One problem: group (strong, strong-delay, convex or nonconvex), data set, l2 and K."""

    group: str
    name: str
    data: str
    l2: float
    budget: int
    model: str = "logistic"

    def grid(self) -> list[tuple[str, str]]:
        """(split, schedule) pairs; quadratic, the sensitivity and plain convex: sorted only."""
        if self.model != "logistic":
            return [(s, x) for s in ("iid", "sorted") for x in ("const:1", "const:10", LINEAR[0])]
        quadratic = (QUADRATIC,) if self.group.startswith("strong") else ()
        iid = [("iid", x) for x in (*CONSTANT, *LINEAR)] if self.group == "strong" else []
        return iid + [("sorted", x) for x in (*CONSTANT, *LINEAR, *quadratic)]


def data_sets(sizes: Sizes, data: str | None) -> tuple[dict[str, str], str]:
    """The logistic data sets by name (``--data`` replaces them) and a note on what is missing."""
    if data is not None or not sizes.real_data:
        return ({"data": data} if data else {"synthetic": sizes.synthetic}), ""
    found, missing = shared_data(["phishing", "a9a"])  # synthetic data only unless both are there
    sets = {"synthetic": sizes.synthetic} | ({} if missing else found)
    return sets, missing and f"{missing}: the study runs on synthetic data only."


def run_config(
    case: Case, split: str, schedule: str, seed: int, step: str, sizes: Sizes, cap: str = "sync"
) -> RunConfig:
    """One run; ``cap``: ``sync``, or a lag cap (``none``: no cap) with speeds drawn per seed."""
    logistic = case.model == "logistic"
    rounds = HogwildIB(HogwildIBConfig(schedule)).rounds_for_budget(WORKERS, case.budget)
    values: dict[str, Any] = {"algorithm": "hogwild-ib", "data": case.data, "workers": WORKERS}
    values |= {"model": case.model, "hidden": sizes.hidden, "l2": case.l2, "seed": seed}
    values |= {"partition": "classes:2" if split == "sorted" and not logistic else split}
    values |= {"sample_sizes": schedule, "grad_budget": case.budget}
    values |= {"options": {"step": step, "mode": "local-steps", "step_timing": "round"}}
    values |= {"dtype": "float64" if logistic else "float32"}
    values["eval_every"] = max(1, rounds * (1 if cap == "sync" else WORKERS) // EVALS)
    if cap != "sync":
        speeds = np.random.default_rng(10_000 + seed).choice(SPEEDS, size=WORKERS)
        values |= {"speeds": tuple(speeds.tolist()), "seconds_per_grad": SECONDS_PER_GRAD}
        values["lag_cap"] = None if cap == "none" else int(cap)
    return make_config(values)


def step_rule(case: Case, schedule: str, smoothness: float, sizes: Sizes) -> str:
    """The step size of a case and sample-size schedule; L = ``smoothness``.

    Strongly convex: ``hogwild:ALPHA,MU,E`` = alpha / (mu (t + E)), the classic offset
    E = 4 L alpha / mu (group ``strong-delay``: delay-aware, E_classic n s_0); plain convex:
    ``inv:1/L,K/10``; non-convex (MLP): ``inv:ETA0,K/10``.
    """
    if case.group.startswith("strong"):
        offset = 4.0 * smoothness * ALPHA / case.l2
        if case.group == "strong-delay":
            offset = delay_aware_offset(offset, SampleSizes(schedule), WORKERS, 1)
        return f"hogwild:{ALPHA:g},{case.l2:g},{offset:.6g}"
    eta0 = 1.0 / smoothness if case.group == "convex" else sizes.eta0
    return f"inv:{eta0:.6g},{case.budget / 10:g}"


def training(data: str, seed: int, l2: float = 0.0) -> RunConfig:
    """The training set runs see at ``seed``, with its L2 logistic objective (0: CONVEX_L2)."""
    values = {"algorithm": "hogwild-ib", "data": data, "workers": WORKERS, "dtype": "float64"}
    return make_config(values | {"seed": seed, "l2": l2 or CONVEX_L2})


def smoothness(config: RunConfig) -> float:
    """max_i ||x_i||^2 / 4 on ``config``'s training set: the worst example's L, l2 aside."""
    train = prepare(config).data.train
    X = torch.as_tensor(train.X, dtype=torch.float64).reshape(train.n, -1)
    return float((X**2).sum(1).max()) / 4


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """F* jobs (per data set, l2 and seed), then every run; L (a fact) per data set and seed."""
    sizes = sizes or (QUICK if request.quick else FULL)
    seeds, (sets, note) = request.seeds or sizes.seeds, data_sets(sizes, request.data)
    strong = [Case("strong", n, d, sizes.l2, sizes.budget) for n, d in sets.items()]
    cases = [*strong, *(replace(c, group="strong-delay") for c in strong)]
    cases += [replace(c, group="convex", l2=0.0) for c in strong[:2]]
    cases.append(Case("nonconvex", "mlp", sizes.mlp_data, 0.0, sizes.mlp_budget, "mlp"))
    L = {(n, s): smoothness(training(d, s)) for n, d in sets.items() for s in seeds}
    l2s = dict.fromkeys((c.name, c.data, c.l2) for c in cases if c.model == "logistic")
    jobs = [
        Job(("optima", n, f"{l2:g}", f"seed{s}"), call=optima, args=((training(d, s, l2),),))
        for (n, d, l2), s in product(l2s, seeds)
    ]
    first, runs = strong[0], [(c, *g, "sync") for c in cases for g in c.grid()]
    for case, split, schedule, cap in runs + [(first, "sorted", LINEAR[0], c) for c in CAPS]:
        for seed in seeds:
            step = step_rule(case, schedule, L.get((case.name, seed), math.nan) + case.l2, sizes)
            config = run_config(case, split, schedule, seed, step, sizes, cap)
            group = case.group if cap == "sync" else "async"
            jobs.append(Job((group, case.name, split, schedule, cap, f"seed{seed}"), config))
    facts = asdict(sizes) | {"budget": f"{sizes.budget:,}", "mlp_budget": f"{sizes.mlp_budget:,}"}
    facts |= {"seeds": ", ".join(map(str, seeds)), "hidden": "-".join(map(str, sizes.hidden))}
    facts["sets"] = ", ".join(f"{n} (`{d}`)" for n, d in sets.items())
    facts["L"] = {f"{n}/seed{s}": v for (n, s), v in L.items()}
    return Plan(jobs, facts, note)


def run_row(job: Job, run: SavedRun, f_star: Mapping[str, float]) -> dict[str, Any]:
    """One run's final K, rounds, F - F* (F where F* is unknown), test metric and slope.

    The slope: of log T on log K over :data:`BUDGET_POINTS` budgets from K/10 to K, T the first
    update whose cumulative gradient count (from the ledger) reaches the budget.
    """
    assert job.config is not None
    *names, seed = job.key
    star = f_star.get(f"{names[1]}/{job.config.l2:g}/{seed}", math.nan)
    last = run.history.iloc[-1]
    K = int(last["grad_evals"])
    grid = np.unique(np.round(np.geomspace(K / 10, K, BUDGET_POINTS)).astype(np.int64))
    per_round = run.ledger().groupby("round")["grad_evals"].sum().sort_index()
    needed = [reach(per_round.cumsum(), per_round.index, b, rising=True) for b in grid]
    gap = float(last["train_loss"]) - np.nan_to_num(star)
    values = {"step": job.config.options["step"], "K": K, "rounds": int(last["round"])}
    values |= {"f_star": star, "gap": gap, "test_metric": float(last["test_metric"])}
    values |= {"slope": loglog_slope(grid, needed), "first_rounds": float(needed[0])}
    return dict(zip(KEYS, names, strict=True)) | values | {"wall_time": float(last["wall_time"])}


def ratios(means: pd.DataFrame, tops: tuple[str, ...], bases: tuple[str, ...]) -> pd.DataFrame:
    """Per group, case and split: each ``tops`` schedule's mean F - F* over the best base's.

    Synchronous runs; ``accuracy_gap``: the best base test accuracy minus the top's, in points.
    """
    rows = []
    sync = means.loc[means["cap"] == "sync"]
    for names, by in sync.set_index("schedule").groupby(KEYS[:3], sort=False):
        base = by.loc[by.index.isin(bases)]
        for top in by.index.intersection(tops):
            best = base["gap"].idxmin()
            ratio = by.loc[top, "gap"] / base.loc[best, "gap"]
            gap = 100 * (base["test_metric"].max() - by.loc[top, "test_metric"])
            what = f"{names[1]}, {names[2]}, {LABELS[top]} vs {LABELS[best]}"
            rows.append((*names, top, best, ratio, gap, what))
    return pd.DataFrame(rows, columns=[*KEYS[:4], "versus", "ratio", "accuracy_gap", "what"])


def async_ratios(means: pd.DataFrame) -> pd.DataFrame:
    """Each lag cap's mean F - F* over the synchronous run's (same data, split, schedule)."""
    mine = means.loc[means["group"] == "async"]
    sync = means.loc[means["group"] == "strong"].set_index(KEYS[1:])["gap"]
    reference = [sync[(*k, "sync")] for k in mine[KEYS[1:4]].itertuples(index=False)]
    what = [f"{c}, {s}, {LABELS[x]}, cap {k}" for c, s, x, k in mine[KEYS[1:]].to_numpy()]
    return mine[KEYS[1:]].assign(ratio=mine["gap"].to_numpy() / np.array(reference), what=what)


def slope_claim(
    table: pd.DataFrame, name: str, schedules: tuple[str, ...], low: float, high: float
) -> Claim:
    """Every judged run of ``schedules`` has a slope of log T on log K in [low, high].

    Not judged when a run reaches K/10 gradients in its first round (T = 1 at the low end).
    """
    mine = table.loc[table["group"].isin(JUDGED) & table["schedule"].isin(schedules)]
    if coarse := sorted({LABELS[s] for s in mine.loc[mine["first_rounds"] < 2, "schedule"]}):
        return TEXTS[name].unjudged(f"runs of {', '.join(coarse)} reach K/10 in their first round")
    per = mine.groupby("schedule", sort=False)["slope"]
    shown = "; ".join(f"{LABELS[s]}: {v.min():.3f}-{v.max():.3f}" for s, v in per)
    passed = bool(len(mine)) and bool(mine["slope"].between(low, high).all())
    return TEXTS[name].judged(f"min-max over {len(mine)} runs: {shown}", passed)


def bounded(name: str, rows: pd.DataFrame, column: str, low: float, high: float) -> Claim:
    """PASS when every row's ``column`` lies in [low, high]; shows the worst row and all values."""
    if rows.empty:
        return TEXTS[name].judged("no runs", False)
    values = rows[column]
    worst = rows.loc[values.idxmax() if high < math.inf else values.idxmin()]
    unit = " points" if column == "accuracy_gap" else "x"
    shown = ", ".join(f"{v:.2f}" for v in values)
    measured = f"worst {worst[column]:.2f}{unit} ({worst['what']}); all: {shown}"
    return TEXTS[name].judged(measured, bool(values.between(low, high).all()))


def claims(
    table: pd.DataFrame, lin: pd.DataFrame, quad: pd.DataFrame, asyn: pd.DataFrame, strong: str
) -> list[Claim]:
    """The eight claims; ``strong``: the group the strongly convex claims 3 and 8 are judged on."""
    inf, nonconvex = math.inf, lin.loc[lin["group"] == "nonconvex"]
    return [
        slope_claim(table, "linear", LINEAR, *LINEAR_SLOPE),
        slope_claim(table, "constant", CONSTANT, *CONSTANT_SLOPE),
        bounded("strong", lin.loc[lin["group"] == strong], "ratio", -inf, MAX_LINEAR_RATIO),
        bounded("convex", lin.loc[lin["group"] == "convex"], "ratio", -inf, MAX_LINEAR_RATIO),
        bounded("nonconvex", nonconvex, "ratio", -inf, MAX_LINEAR_RATIO),
        bounded("accuracy", nonconvex, "accuracy_gap", -inf, MAX_ACCURACY_GAP),
        bounded("async", asyn.loc[asyn["cap"] != "none"], "ratio", -inf, MAX_ASYNC_RATIO),
        bounded("quadratic", quad.loc[quad["group"] == strong], "ratio", MIN_QUADRATIC_RATIO, inf),
    ]


COLUMNS = (("grad_evals", "gap"), ("round", "gap"), ("grad_evals", "round"))
AXES = {"grad_evals": "K", "round": "rounds", "gap": "F - F* (F for the MLP)"}
FIGURES = {"strong": "Strongly convex, classic offset", "convex": "Plain convex"}
FIGURES |= {"strong-delay": "Strongly convex, delay-aware offset (sensitivity)"}
FIGURES |= {"nonconvex": "Non-convex MLP (F: the training loss)"}
FIGURES |= {"async": "Asynchronous lag caps against the synchronous run"}
Panels = dict[str, dict[str, list[pd.DataFrame]]]


def curves(panels: Panels) -> Chart:
    """Per panel: F - F* against K and rounds, rounds against K, log-log."""
    charts = [
        Panel(bands(lines, x, y), AXES[x], AXES[y], title, log_x=True, log_y=True)
        for title, lines in panels.items()
        for x, y in COLUMNS
    ]
    return Chart(charts, len(COLUMNS), (5.0, 3.4), legend="first")


def figures(runs: list[tuple[Job, SavedRun]], stars: pd.Series) -> dict[str, tuple[Chart, str]]:
    """Per group, a panel per case and split, a line per schedule (async: per lag cap)."""
    lines: dict[str, Panels] = {group: {} for group in FIGURES}
    for (job, run), star in zip(runs, stars, strict=True):
        group, case, split, schedule, cap = job.key[:5]
        history = run.history.assign(gap=run.history["train_loss"] - np.nan_to_num(star))
        panel, line = f"{case}, {split}", LABELS[schedule]
        if group == "async":
            sync = lines["strong"][panel][line]
            panel, line = f"{panel}, {line}", f"cap {cap}"
            lines[group].setdefault(panel, {"synchronous": sync})
        lines[group].setdefault(panel, {}).setdefault(line, []).append(history)
    caption = "{}: F - F* against K and rounds, rounds against K (mean over seeds)"
    return {g: (curves(p), caption.format(FIGURES[g])) for g, p in lines.items() if p}


def findings(plan: Plan, outputs: Outputs) -> Findings:
    """Per-run measures, the ratio tables, the eight claims, the sensitivity and the figures."""
    calls = {key: out for key, out in outputs.items() if isinstance(out, pd.DataFrame)}
    f_star = {"/".join(key[1:]): float(out["f_star"].iloc[0]) for key, out in calls.items()}
    runs = [(job, run) for job in plan.jobs if isinstance(run := outputs[job.key], SavedRun)]
    table = pd.DataFrame([run_row(job, run, f_star) for job, run in runs])
    mean = dict.fromkeys(("K", "rounds", "gap", "test_metric", "slope"), seed_mean)
    grouped = table.groupby(KEYS, sort=False, as_index=False)
    means = grouped.agg(mean | {"step": "first", "wall_time": "sum"})
    lin, quad = ratios(means, LINEAR, CONSTANT), ratios(means, (QUADRATIC,), LINEAR)
    asyn = async_ratios(means)
    delay = claims(table, lin, quad, asyn, "strong-delay")
    sensitivity = [replace(c, claim=f"{c.claim}; delay-aware offset") for c in (delay[2], delay[7])]
    summary = means.assign(test_metric=100 * means["test_metric"]).rename(columns=SHOWN)
    optimum = [(*key.split("/"), value) for key, value in f_star.items()]
    tables = {
        "summary": (summary, "Mean over seeds"),
        "linear": (lin, "Linear against the best constant schedule at equal K"),
        "quadratic": (quad, "Quadratic against the best linear schedule (sorted split)"),
        "async": (asyn, "Asynchronous against synchronous at equal K (cap none: not judged)"),
        "optima": (
            pd.DataFrame(optimum, columns=["data", "l2", "seed", "F*"]),
            "F* per data set, l2 and seed (Newton's method, float64)",
        ),
    }
    judged = claims(table, lin, quad, asyn, "strong")
    return Findings(judged, sensitivity, tables, figures(runs, table["f_star"]), {"f_star": f_star})


STUDY = Study(
    name="hogwild",
    title="Reproduction: Hogwild! with increasing sample sizes (van Dijk et al., AISTATS 2021)",
    paper_source="the spec's reconstruction and pilot (the paper body was not available)",
    plan=plan,
    findings=findings,
)

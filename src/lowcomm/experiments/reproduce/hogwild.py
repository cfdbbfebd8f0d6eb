"""``lowcomm reproduce hogwild``: Hogwild!-style local SGD with increasing sample sizes, declared.

van Dijk et al., AISTATS 2021 (arXiv 2010.14763), as the spec reconstructs it
(``../shared/papers/hogwild-increasing-batch-and-async-msgd.md``, A.2-A.4, A.7; the paper body
was not available). Every run is ``hogwild-ib`` on the simulate engine: 5 workers, option L
(s_i sequential single-example steps on the worker's copy, the summed update added by the
aggregator), one step size per round, stopped by ``grad_budget`` K. Setup, measures and
departures: ``notes/hogwild.md``; the criteria are the constants below, fixed before measuring.

Step sizes (spec A.3): strongly convex (L2 logistic) ``hogwild:ALPHA,MU,E`` =
alpha / (mu (t + E)), alpha = 2, mu = l2, with the **classic** offset E = 4 L alpha / mu,
L = max_i ||x_i||^2 / 4 + l2 (the worst single-example smoothness): the claims are judged on it.
Each strongly convex case also runs (group ``strong-delay``, a sensitivity result, never judged)
with the **delay-aware** offset of the initial delay, E = E_classic n s_0
(:func:`~lowcomm.algorithms.schedules.delay_aware_offset` over the first round): the first
round's n s_0 summed steps are no longer than the classic first step 1 / (4 L). Plain convex
(l2 = 0): ``inv:1/L,K/10``; non-convex (MLP): ``inv:ETA0,K/10``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.schedules import SampleSizes, delay_aware_offset
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import exact_optimum, loglog_slope, reach, seed_mean
from lowcomm.experiments.plots import seed_band
from lowcomm.experiments.reproduce.report import Claim, Request, unjudged
from lowcomm.experiments.reproduce.runs import SavedRun
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import Findings, Job, Key, Output, Plan, Study, datasets_root
from lowcomm.problems.logistic import LogisticRegression

WORKERS, ALPHA, CONVEX_L2 = 5, 2.0, 1e-10  # CONVEX_L2: the l2 of the plain convex F*
EVALS, BUDGET_POINTS = 100, 8  # evaluations per run; budgets K/10 .. K of the slope fit
SECONDS_PER_GRAD, SPEEDS, CAPS = 1e-3, (1.0, 2.0, 4.0), ("0", "1", "2", "none")
LINEAR_SLOPE, CONSTANT_SLOPE = (0.45, 0.55), (0.9, 1.1)
MAX_LINEAR_RATIO = 1.5  # linear F - F* <= 1.5 x the best constant schedule's, at equal K
MAX_ACCURACY_GAP = 2.0  # non-convex: best constant - linear test accuracy, in points
MAX_ASYNC_RATIO = 2.0  # asynchronous (cap <= 2) F - F* <= 2 x the synchronous run's
MIN_QUADRATIC_RATIO = 1.5  # quadratic F - F* >= 1.5 x the best linear's (biased split)
CONSTANT, QUADRATIC = ("const:1", "const:10", "const:100"), "poly:2"
LINEAR = ("linear:1,1", "linear:4,1")
LABELS = {
    "const:1": "s = 1",
    "const:10": "s = 10",
    "const:100": "s = 100",
    "linear:1,1": "s_i = i + 1",
    "linear:4,1": "s_i = 4i + 1",
    "poly:2": "s_i = (i + 1)^2",
}
JUDGED = ("strong", "convex", "nonconvex")  # on the paper's step; strong-delay is a sensitivity
KEYS = ["group", "case", "split", "schedule", "cap"]  # a run's key, then f"seed{k}"
OPTIMA = ["data", "l2", "seed", "F*"]
SHOWN = {"gap": "F - F* (F)", "test_metric": "test accuracy %", "wall_time": "wall s (all seeds)"}


@dataclass(frozen=True)
class Sizes:
    """Data, budget K and l2 of the logistic cases; data, K, width and eta0 of the MLP; seeds."""

    synthetic: str = "synthetic-logistic:10000,20"
    real_data: bool = True  # phishing and a9a from datasets_root()
    budget: int = 10_000
    l2: float = 0.04
    mlp_data: str = "digits"
    mlp_budget: int = 2_000
    hidden: tuple[int, ...] = (32,)
    eta0: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2)


SMALL = "synthetic-logistic:4000,20"
FULL, QUICK = Sizes(), Sizes(SMALL, False, 3_000, 0.1, SMALL, 1_000, (16,), 0.1, (0,))


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
        """(split, schedule) pairs.

        The quadratic schedule runs on the sorted split only (claim 8 uses no other); so do
        the sensitivity and the plain convex case, to fit the time budget.
        """
        if self.model != "logistic":
            return [(s, x) for s in ("iid", "sorted") for x in ("const:1", "const:10", LINEAR[0])]
        quadratic = (QUADRATIC,) if self.group.startswith("strong") else ()
        iid = [("iid", x) for x in (*CONSTANT, *LINEAR)] if self.group == "strong" else []
        return iid + [("sorted", x) for x in (*CONSTANT, *LINEAR, *quadratic)]


def data_sets(sizes: Sizes, data: str | None) -> tuple[dict[str, str], str]:
    """The logistic data sets by name (``--data`` replaces them) and a note on what is missing."""
    root, synthetic = datasets_root(), {"synthetic": sizes.synthetic}
    a9a, phishing = root / "a9a", root / "phishing" / "phishing.gz"
    if data is not None or not sizes.real_data:
        return ({"data": data} if data else synthetic), ""
    if not (phishing.is_file() and (a9a / "a9a.gz").is_file()):
        return synthetic, f"{root} lacks phishing or a9a: the study runs on synthetic data only."
    a9a_spec = f"libsvm:{a9a / 'a9a.gz'},{a9a / 'a9a.t.gz'},n_features=123"
    return synthetic | {"phishing": f"libsvm:{phishing}", "a9a": a9a_spec}, ""


def run_config(
    case: Case, split: str, schedule: str, seed: int, step: str, sizes: Sizes, cap: str = "sync"
) -> RunConfig:
    """One run; ``cap``: ``sync`` (equal speeds) or a lag cap (``none``: no cap).

    With a cap the run is asynchronous, the workers' speeds drawn per seed from :data:`SPEEDS`.
    """
    logistic = case.model == "logistic"
    rounds = HogwildIB(HogwildIBConfig(schedule)).rounds_for_budget(WORKERS, case.budget)
    values: dict[str, Any] = {
        "algorithm": "hogwild-ib",
        "data": case.data,
        "model": case.model,
        "hidden": sizes.hidden,
        "l2": case.l2,
        "workers": WORKERS,
        "partition": "classes:2" if split == "sorted" and not logistic else split,
        "sample_sizes": schedule,
        "grad_budget": case.budget,
        "options": {"step": step, "mode": "local-steps", "step_timing": "round"},
        "dtype": "float64" if logistic else "float32",
        "seed": seed,
        "eval_every": max(1, rounds * (1 if cap == "sync" else WORKERS) // EVALS),
    }
    if cap != "sync":
        speeds = np.random.default_rng(10_000 + seed).choice(SPEEDS, size=WORKERS)
        values |= {"speeds": tuple(speeds.tolist()), "seconds_per_grad": SECONDS_PER_GRAD}
        values["lag_cap"] = None if cap == "none" else int(cap)
    return make_config(values)


def step_rule(case: Case, schedule: str, smoothness: float, sizes: Sizes) -> str:
    """The step size of a case and sample-size schedule (module docstring); L = smoothness."""
    if case.group.startswith("strong"):
        offset = 4.0 * smoothness * ALPHA / case.l2
        if case.group == "strong-delay":
            offset = delay_aware_offset(offset, SampleSizes(schedule), WORKERS, 1)
        return f"hogwild:{ALPHA:g},{case.l2:g},{offset:.6g}"
    eta0 = 1.0 / smoothness if case.group == "convex" else sizes.eta0
    return f"inv:{eta0:.6g},{case.budget / 10:g}"


def train_set(data: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training examples (float64, flattened) of a data set at ``seed``, as runs see them."""
    config = {"algorithm": "hogwild-ib", "data": data, "workers": WORKERS, "dtype": "float64"}
    train = prepare(make_config(config | {"seed": seed})).data.train
    X = torch.as_tensor(train.X, dtype=torch.float64).reshape(train.n, -1)
    return X, torch.as_tensor(train.y)


def optimum(X: torch.Tensor, y: torch.Tensor, l2: float) -> float:
    """F* of L2 logistic regression on (X, y) by Newton (l2 = 0: :data:`CONVEX_L2`)."""
    return exact_optimum(LogisticRegression(X.shape[1], l2 or CONVEX_L2, dtype=X.dtype), X, y)


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """Every run; L and F* (facts) once per data set, l2 and seed, from its training set."""
    sizes = sizes or (QUICK if request.quick else FULL)
    seeds, (sets, note) = request.seeds or sizes.seeds, data_sets(sizes, request.data)
    strong = [Case("strong", n, d, sizes.l2, sizes.budget) for n, d in sets.items()]
    cases = [*strong, *(replace(c, group="strong-delay") for c in strong)]
    cases += [replace(c, group="convex", l2=0.0) for c in strong[:2]]
    cases.append(Case("nonconvex", "mlp", sizes.mlp_data, 0.0, sizes.mlp_budget, "mlp"))
    train = {(n, s): train_set(d, s) for n, d in sets.items() for s in seeds}
    L = {k: float((X**2).sum(1).max()) / 4 for k, (X, _) in train.items()}  # + l2 per case
    l2s = dict.fromkeys((c.name, c.l2) for c in cases if c.model == "logistic")
    f_star = {f"{n}/{l2:g}/seed{s}": optimum(*train[n, s], l2) for n, l2 in l2s for s in seeds}
    jobs = []
    first, runs = strong[0], [(c, *g, "sync") for c in cases for g in c.grid()]
    for case, split, schedule, cap in runs + [(first, "sorted", LINEAR[0], c) for c in CAPS]:
        for seed in seeds:
            step = step_rule(case, schedule, L.get((case.name, seed), math.nan) + case.l2, sizes)
            config = run_config(case, split, schedule, seed, step, sizes, cap)
            group = case.group if cap == "sync" else "async"
            jobs.append(Job((group, case.name, split, schedule, cap, f"seed{seed}"), config))
    facts = asdict(sizes) | {"seeds": ", ".join(map(str, seeds))}
    facts |= {"budget": f"{sizes.budget:,}", "mlp_budget": f"{sizes.mlp_budget:,}"}
    facts["hidden"] = "-".join(map(str, sizes.hidden))
    facts["sets"] = ", ".join(f"{n} (`{d}`)" for n, d in sets.items())
    facts["L"] = {f"{n}/seed{s}": v for (n, s), v in L.items()}
    return Plan(jobs, facts | {"f_star": f_star}, note)


# --- measures ----------------------------------------------------------------------------------


def run_row(job: Job, run: SavedRun, f_star: Mapping[str, float]) -> dict[str, Any]:
    """One run's measures: final K, rounds, F - F* (F where F* is unknown), test metric, slope.

    The slope is that of log T on log K over :data:`BUDGET_POINTS` budgets from K/10 to K, T
    the first update whose cumulative gradient count (from the ledger) reaches the budget.
    """
    assert job.config is not None
    *names, seed = job.key
    star = f_star.get(f"{names[1]}/{job.config.l2:g}/{seed}", math.nan)
    last = run.history.iloc[-1]
    K = int(last["grad_evals"])
    grid = np.unique(np.round(np.geomspace(K / 10, K, BUDGET_POINTS)).astype(np.int64))
    per_round = run.ledger().groupby("round")["grad_evals"].sum().sort_index()
    needed = [reach(per_round.cumsum(), per_round.index, b, rising=True) for b in grid]
    return dict(zip(KEYS, names, strict=True)) | {
        "seed": int(seed.removeprefix("seed")),
        "step": job.config.options["step"],
        "K": K,
        "rounds": int(last["round"]),
        "f_star": star,
        "gap": float(last["train_loss"]) - (0.0 if math.isnan(star) else star),
        "test_metric": float(last["test_metric"]),
        "slope": loglog_slope(grid, needed),
        "first_rounds": float(needed[0]),
        "wall_time": float(last["wall_time"]),
    }


def ratios(means: pd.DataFrame, tops: tuple[str, ...], bases: tuple[str, ...]) -> pd.DataFrame:
    """Each ``tops`` schedule's mean F - F* over the best ``bases`` schedule's (synchronous).

    Per group, case and split; ``accuracy_gap``: the best base test accuracy minus the top's,
    in points.
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


# --- claims ------------------------------------------------------------------------------------

EQUAL_K = "at equal K, linear sample sizes are as accurate as constant ones"
SAME = "same accuracy with fewer rounds (abstract, companion paper)"
VS_CONSTANT = f"of every linear schedule <= {MAX_LINEAR_RATIO}x the best constant schedule's"
SLOPES = {  # the claim and the paper's value
    "linear": ("rounds T grow like K^0.5 for linear sample sizes", "O(sqrt K) rounds (abstract)"),
    "constant": ("rounds T grow like K for constant sample sizes", "T = K / (n s) (spec A.4)"),
}
TEXTS = {  # the claim, the paper's value, the criterion
    "strong": (f"strongly convex: {EQUAL_K}", SAME, f"mean F - F* {VS_CONSTANT}"),
    "convex": (f"plain convex: {EQUAL_K}", SAME, f"mean F - F* {VS_CONSTANT}"),
    "nonconvex": (f"non-convex: {EQUAL_K}", SAME, f"mean F {VS_CONSTANT}"),
    "accuracy": (
        "non-convex: similar final test accuracy for linear and constant sizes",
        "spec A-3 expects within ~1-2 points",
        f"best constant - linear test accuracy <= {MAX_ACCURACY_GAP} points",
    ),
    "async": (
        "asynchronous runs with lag cap <= 2 degrade gracefully",
        "amount of asynchrony tolerated (companion paper)",
        f"mean F - F* at equal K <= {MAX_ASYNC_RATIO}x the synchronous run's, caps 0, 1, 2",
    ),
    "quadratic": (
        "quadratic sample sizes are worse at equal K (biased split, strongly convex)",
        "spec pilot: 2.5x worse F - F*",
        f"quadratic F - F* >= {MIN_QUADRATIC_RATIO}x the best linear schedule's, every data set",
    ),
}


def slope_claim(table: pd.DataFrame, name: str) -> Claim:
    """Rounds grow like K^0.5 (``linear``) or K (``constant``): every judged run's slope.

    Not judged when a run reaches K/10 gradients in its first round: T is then 1 at the low
    end of the fit, whatever the growth.
    """
    schedules, (low, high) = (
        (LINEAR, LINEAR_SLOPE) if name == "linear" else (CONSTANT, CONSTANT_SLOPE)
    )
    text = (*SLOPES[name], f"every run's fitted slope of log T vs log K in [{low}, {high}]")
    mine = table.loc[table["group"].isin(JUDGED) & table["schedule"].isin(schedules)]
    if coarse := sorted({LABELS[s] for s in mine.loc[mine["first_rounds"] < 2, "schedule"]}):
        reason = f"runs of {', '.join(coarse)} reach K/10 in their first round"
        return unjudged(*text, reason)
    per = mine.groupby("schedule", sort=False)["slope"]
    shown = "; ".join(f"{LABELS[s]}: {v.min():.3f}-{v.max():.3f}" for s, v in per)
    passed = bool(len(mine)) and bool(mine["slope"].between(low, high).all())
    return Claim(*text, f"min-max over {len(mine)} runs: {shown}", passed)


def bounded(name: str, rows: pd.DataFrame, column: str, low: float, high: float) -> Claim:
    """PASS when every row's ``column`` lies in [low, high]; shows the worst row and all values."""
    if rows.empty:
        return Claim(*TEXTS[name], "no runs", False)
    values = rows[column]
    worst = rows.loc[values.idxmax() if high < math.inf else values.idxmin()]
    unit = " points" if column == "accuracy_gap" else "x"
    shown = ", ".join(f"{v:.2f}" for v in values)
    measured = f"worst {worst[column]:.2f}{unit} ({worst['what']}); all: {shown}"
    return Claim(*TEXTS[name], measured, bool(values.between(low, high).all()))


def claims(
    table: pd.DataFrame, lin: pd.DataFrame, quad: pd.DataFrame, asyn: pd.DataFrame, strong: str
) -> list[Claim]:
    """The eight claims; ``strong``: the group the strongly convex claims 3 and 8 are judged on."""
    inf, nonconvex = math.inf, lin.loc[lin["group"] == "nonconvex"]
    return [
        slope_claim(table, "linear"),
        slope_claim(table, "constant"),
        bounded("strong", lin.loc[lin["group"] == strong], "ratio", -inf, MAX_LINEAR_RATIO),
        bounded("convex", lin.loc[lin["group"] == "convex"], "ratio", -inf, MAX_LINEAR_RATIO),
        bounded("nonconvex", nonconvex, "ratio", -inf, MAX_LINEAR_RATIO),
        bounded("accuracy", nonconvex, "accuracy_gap", -inf, MAX_ACCURACY_GAP),
        bounded("async", asyn.loc[asyn["cap"] != "none"], "ratio", -inf, MAX_ASYNC_RATIO),
        bounded("quadratic", quad.loc[quad["group"] == strong], "ratio", MIN_QUADRATIC_RATIO, inf),
    ]


# --- figures and findings ----------------------------------------------------------------------

COLUMNS = (("grad_evals", "gap"), ("round", "gap"), ("grad_evals", "round"))
FIGURES = {
    "strong": "Strongly convex, classic offset",
    "strong-delay": "Strongly convex, delay-aware offset (sensitivity)",
    "convex": "Plain convex",
    "nonconvex": "Non-convex MLP (F: the training loss)",
    "async": "Asynchronous lag caps against the synchronous run",
}
Panels = dict[str, dict[str, list[pd.DataFrame]]]


def curves(panels: Panels) -> Figure:
    """One row per panel: F - F* against K and against rounds, rounds against K (log-log).

    One line per label: the mean over seeds of its histories (with a ``gap`` column).
    """
    figure = Figure(figsize=(15, 3.4 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), len(COLUMNS), squeeze=False)
    for row, (title, lines) in zip(axes, panels.items(), strict=True):
        for ax, (x, y) in zip(row, COLUMNS, strict=True):
            for label, histories in lines.items():
                band = seed_band(histories, x, y)
                keep = (band["x"] > 0) & (band["mean"] > 0)
                ax.loglog(band["x"][keep], band["mean"][keep], label=label)
            ylabel = "F - F* (F for the MLP)" if y == "gap" else "rounds (updates)"
            ax.set(title=title, xlabel="K" if x == "grad_evals" else "rounds", ylabel=ylabel)
            ax.grid(True, which="both", alpha=0.3)
        row[0].legend(fontsize=7)
    return figure


def panels_of(histories: Mapping[Key, list[pd.DataFrame]], group: str) -> Panels:
    """A group's panels: one per case and split, a line per schedule (async: per lag cap)."""
    panels: Panels = {}
    for (g, case, split, schedule, cap), mine in histories.items():
        if g == group == "async":
            sync = {"synchronous": histories[("strong", case, split, schedule, "sync")]}
            panels.setdefault(f"{case}, {split}, {LABELS[schedule]}", sync)[f"cap {cap}"] = mine
        elif g == group:
            panels.setdefault(f"{case}, {split}", {})[LABELS[schedule]] = mine
    return panels


def findings(plan: Plan, outputs: Mapping[Key, Output]) -> Findings:
    """Per-run measures, the ratio tables, the eight claims, the sensitivity and the figures."""
    f_star = plan.facts["f_star"]
    runs = [(job, run) for job in plan.jobs if isinstance(run := outputs[job.key], SavedRun)]
    table = pd.DataFrame([run_row(job, run, f_star) for job, run in runs])
    mean = dict.fromkeys(("K", "rounds", "gap", "test_metric", "slope"), seed_mean)
    grouped = table.groupby(KEYS, sort=False, as_index=False)
    means = grouped.agg(mean | {"step": "first", "wall_time": "sum"})
    lin, quad = ratios(means, LINEAR, CONSTANT), ratios(means, (QUADRATIC,), LINEAR)
    asyn = async_ratios(means)
    delay = claims(table, lin, quad, asyn, "strong-delay")
    sensitivity = [replace(c, claim=f"{c.claim}; delay-aware offset") for c in (delay[2], delay[7])]
    histories: dict[Key, list[pd.DataFrame]] = {}
    for (job, run), star in zip(runs, table["f_star"], strict=True):
        gap = run.history["train_loss"] - (0.0 if math.isnan(star) else star)
        histories.setdefault(job.key[:5], []).append(run.history.assign(gap=gap))
    figures = {
        g: (curves(p), f"{title}: F - F* against K and rounds, rounds against K (mean over seeds)")
        for g, title in FIGURES.items()
        if (p := panels_of(histories, g))
    }
    optima = pd.DataFrame([(*k.split("/"), v) for k, v in f_star.items()], columns=OPTIMA)
    tables = {
        "summary": (
            means.assign(test_metric=100 * means["test_metric"]).rename(columns=SHOWN),
            "Mean over seeds",
        ),
        "linear": (lin, "Linear against the best constant schedule at equal K"),
        "quadratic": (quad, "Quadratic against the best linear schedule (sorted split)"),
        "async": (asyn, "Asynchronous against synchronous at equal K (cap none: not judged)"),
        "optima": (optima, "F* per data set, l2 and seed (Newton's method, float64)"),
    }
    return Findings(claims(table, lin, quad, asyn, "strong"), sensitivity, tables, figures)


STUDY = Study(
    name="hogwild",
    title="Reproduction: Hogwild! with increasing sample sizes (van Dijk et al., AISTATS 2021)",
    paper_source="the spec's reconstruction and pilot (the paper body was not available)",
    plan=plan,
    findings=findings,
)

"""``lowcomm reproduce localnewton``: LocalNewton against GIANT, declared (spec sections 5-7.2).

Gupta et al., UAI 2021: claim wording in ``notes/localnewton.claims.toml``, setup and departures
in ``notes/localnewton.md``. Every run is a call job (:func:`history`) so that a worker process
loads each data set once (:func:`loaded`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.data.inputs import Supplied
from lowcomm.data.loaders import load_data
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import decreased, listed, optima, reach, suboptimality
from lowcomm.experiments.models import Objects
from lowcomm.experiments.reproduce.figures import Chart, Panel
from lowcomm.experiments.reproduce.report import Claim, Request, claim_texts
from lowcomm.experiments.runner import execute, prepare
from lowcomm.experiments.study import Findings, Job, Key, Outputs, Plan, Study, shared_data

SYNTHETIC = "synthetic-logistic:4000,20"
TARGETS = (1e-2, 1e-3, 1e-4)
SCAN = tuple(10.0 ** (-k / 4) for k in range(4, 25))  # 1e-1 ... 1e-6, 4 per decade
LATENCIES, CLAIM_LATENCIES = (0.1, 1.0, 3.0), (1.0, 3.0)
RUN_LATENCY = 1.0  # every run's round_latency; other latencies are derived exactly (curve)
TIME = {tau: f"time_{tau:g}" for tau in LATENCIES}  # the curve's simulated time at latency tau
MAX_ROUNDS, MAX_TIME = 0.6, 0.4
PAPER_SPLIT, STRESS_SPLIT = "iid", "sorted"
NEWTON, GIANT, GIANT3, SGD = "local-newton", "giant", "giant-3", "local-sgd"
ADAPTIVE, ADAPTIVE_GIANT = "local-newton-adaptive", "local-newton-adaptive-giant"


@dataclass(frozen=True)
class Sizes:
    """The grid: data, workers, gammas (``1/n`` or a number), stress test, L, steps..."""

    data: tuple[str, ...] = ("w8a", "a9a", "phishing")
    workers: tuple[int, ...] = (8, 16)
    gammas: tuple[str, ...] = ("1/n", "1e-4")
    stress: tuple[int, str] = (8, "1/n")
    seeds: tuple[int, ...] = (0,)
    sync_rounds: int = 40
    local_steps: tuple[int, ...] = (1, 2, 4, 8)
    adaptive_l0: int = 8
    sgd_lrs: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
    sgd_batch: int = 32
    seconds_per_grad: float = 1e-6


FULL = Sizes()
QUICK = Sizes(data=("phishing",), workers=(8,), gammas=("1/n",), sgd_lrs=(1.0, 10.0))


@dataclass(frozen=True)
class Setting:
    """One data set, number of workers, gamma, split and seed."""

    data: str
    workers: int
    gamma: str
    split: str
    seed: int

    @property
    def slug(self) -> str:
        """The folder name, e.g. ``a9a-w8-g1n-iid-s0``."""
        return (
            f"{self.data}-w{self.workers}-g{self.gamma.replace('/', '')}-{self.split}-s{self.seed}"
        )

    @property
    def label(self) -> str:
        """``a9a, 8 workers, gamma = 1/n, iid`` (and the seed when not 0)."""
        text = f"{self.data}, {self.workers} workers, gamma = {self.gamma}, {self.split}"
        return text + (f", seed {self.seed}" if self.seed else "")

    @property
    def optimum_key(self) -> Key:
        """The key of the F* job of the setting's data set, gamma and seed."""
        return ("optimum", self.data, self.gamma.replace("/", ""), f"s{self.seed}")


def data_specs(request: Request, sizes: Sizes) -> tuple[dict[str, str], str]:
    """Name -> data spec (``--data``, else the shared sets found), and a note on the missing."""
    if request.data:
        spec = parse_data_spec(request.data)
        return {Path(spec.path).name.split(".")[0] if spec.path else spec.kind: request.data}, ""
    found, missing = shared_data(sizes.data)
    if not found:
        return {"synthetic": SYNTHETIC}, f"{missing}: the study runs on {SYNTHETIC}."
    return found, f"{missing}: left out." if missing else ""


def methods(sizes: Sizes) -> dict[str, dict[str, Any]]:
    """Key -> run settings: LocalNewton variants, GIANT, local SGD (L, step), GD.

    GIANT and the switching variant get 3/2 engine rounds per sync round.
    """

    def run(algorithm: str, giant: bool = False, **options: Any) -> dict[str, Any]:
        rounds = sizes.sync_rounds * 3 // 2 if giant else sizes.sync_rounds
        return {"algorithm": algorithm, "options": options, "rounds": rounds}

    adaptive: dict[str, Any] = {"local_steps": sizes.adaptive_l0, "adaptive": True}
    sgd = {
        f"{SGD}-L{s}-lr{lr:g}": run(SGD, local_steps=s, lr=lr, batch_size=sizes.sgd_batch)
        for s, lr in itertools.product(sizes.local_steps, sizes.sgd_lrs)
    }
    return (
        {f"{NEWTON}-L{s}": run(NEWTON, local_steps=s) for s in sizes.local_steps}
        | {ADAPTIVE: run(NEWTON, **adaptive)}
        | {ADAPTIVE_GIANT: run(NEWTON, True, **adaptive, then_giant=True)}
        | {GIANT: run(GIANT, True, line_search="piggyback")}
        | sgd
        | {"gd": run("gd")}
    )


@functools.cache
def loaded(spec: str, seed: int, test_fraction: float) -> Supplied:
    """A data set's training and test sets, loaded once per process."""
    data = load_data(parse_data_spec(spec), seed, test_fraction)
    return Supplied(data.train, data.test)


def history(config: RunConfig) -> pd.DataFrame:
    """One run on :func:`loaded` data: its history without wall time (machine-dependent)."""
    data = loaded(config.data, config.seed, config.test_fraction)
    result = execute(prepare(config, Objects(data=data)))
    assert result is not None, "the simulate engine always returns a result"
    return result.history.drop(columns="wall_time")


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """F* per (data, gamma, seed) (:func:`optima`), then every run, Newton-type (longest) first.

    Settings: the iid grid (data x workers x gamma x seed), then the label-sorted stress test
    per data set and seed.
    """
    sizes = sizes or (QUICK if request.quick else FULL)
    specs, note = data_specs(request, sizes)
    seeds = request.seeds or sizes.seeds
    iid = itertools.product(specs, sizes.workers, sizes.gammas, [PAPER_SPLIT], seeds)
    grid = [Setting(*v) for v in iid] + [
        Setting(d, *sizes.stress, STRESS_SPLIT, s) for d in specs for s in seeds
    ]
    first: dict[Key, RunConfig] = {}
    heavy, light = [], []  # type: list[Job], list[Job]
    for s in grid:
        n = loaded(specs[s.data], s.seed, RunConfig().test_fraction).train.n
        base = {"data": specs[s.data], "workers": s.workers, "partition": s.split, "seed": s.seed}
        base |= {"model": "logistic", "dtype": "float64", "eval_every": 1}
        base |= {"l2": 1.0 / n if s.gamma == "1/n" else float(s.gamma)}
        base |= {"round_latency": RUN_LATENCY, "seconds_per_grad": sizes.seconds_per_grad}
        for key, run in methods(sizes).items():
            config = make_config(base | run)
            build_algorithm(config.algorithm, config.options)
            job = Job((s.slug, key), call=history, args=(config,))
            (light if config.algorithm in (SGD, "gd") else heavy).append(job)
            first.setdefault(s.optimum_key, config)
    jobs = [Job(key, call=optima, args=((config,),)) for key, config in first.items()]
    facts = {k: listed(v) if isinstance(v, tuple) else v for k, v in asdict(sizes).items()}
    facts |= {"data": ", ".join(f"`{spec}`" for spec in specs.values())}
    facts |= {"settings": [asdict(s) for s in grid], "giant_iterations": sizes.sync_rounds // 2}
    return Plan(jobs + heavy + light, facts, note)


# --- measures ----------------------------------------------------------------------------------


def curve(history: pd.DataFrame, f_star: float, rounds: str = "sync_rounds") -> pd.DataFrame:
    """Counted rounds, (F - F*)/F*, simulated time at each latency (:data:`TIME`) and L of a run.

    ``rounds="round"`` counts every engine round (GIANT's 3-round count: its piggy-backed
    line-search exchanges then pay the latency too). A run paid ``RUN_LATENCY`` per sync round,
    so its time at tau is ``sim_time + (tau - RUN_LATENCY) sync + tau (counted - sync)``.
    """
    sync, counted = history["sync_rounds"].to_numpy(float), history[rounds].to_numpy(float)
    rel = suboptimality(history["train_loss"], f_star, relative=True).to_numpy()
    frame = pd.DataFrame({"rounds": counted, "rel": rel})
    for tau in LATENCIES:
        extra = (tau - RUN_LATENCY) * sync + tau * (counted - sync)
        frame[TIME[tau]] = history["sim_time"].to_numpy(float) + extra
    return frame.assign(local_steps=history.get("local_steps", np.nan))


def final_loss(history: pd.DataFrame) -> float:
    """The last training loss; +inf for a diverged (non-finite) run."""
    loss = float(history["train_loss"].iloc[-1])
    return loss if math.isfinite(loss) else math.inf


def versus(curves: Mapping[str, pd.DataFrame], giant: str, targets: Sequence[float]) -> Any:
    """Per (axis, target): the LocalNewton variant needing least (the first on ties) vs ``giant``.

    ``bound`` is GIANT's cost or, when it never reached the target, its cost at its last row (a
    lower bound: ``ratio`` is then an upper bound); ``ok``: a variant reached the target within
    MAX_ROUNDS (rounds) or MAX_TIME (time) times the bound.
    """
    newton = [key for key in curves if key.startswith(NEWTON)]
    index = pd.MultiIndex.from_product([["rounds", *TIME.values()], targets])
    costs = {
        key: [reach(curves[key]["rel"], curves[key][x], t) for x, t in index]
        for key in [*newton, giant]
    }
    table, last = pd.DataFrame(costs, index=index), curves[giant].iloc[-1]
    best, cost = table[newton].min(axis=1), table.pop(giant)
    bound = cost.fillna(pd.Series([float(last[x]) for x, _ in index], index=index))
    limit = np.where(index.get_level_values(0) == "rounds", MAX_ROUNDS, MAX_TIME)
    variant = [row.idxmin() if row.notna().any() else "" for _, row in table.iterrows()]
    frame = pd.DataFrame({"variant": variant, "ln": best, "giant": cost, "bound": bound})
    ok = np.isfinite(best) & (best <= limit * bound)
    return frame.assign(ratio=(best / bound).where(bound > 0, math.inf), ok=ok)


def passes(vs: pd.DataFrame) -> pd.DataFrame:
    """Per target: whether the rounds criterion, and the time one at every claim latency, hold."""
    times = np.logical_and.reduce([vs.loc[TIME[tau], "ok"] for tau in CLAIM_LATENCIES])
    return pd.DataFrame({"rounds": vs.loc["rounds", "ok"], "time": times})


def cell(row: pd.Series) -> str:
    """A :func:`versus` row as ``1 / 6 = 0.17 (L4)``; ``>N``: GIANT never reached; ``-``: no LN."""
    giant = f"{row['giant']:g}" if math.isfinite(row["giant"]) else f">{row['bound']:g}"
    if math.isnan(row["ln"]):
        return f"- / {giant}"
    name = row["variant"].removeprefix(f"{NEWTON}-").replace("-giant", "+GIANT")
    return f"{row['ln']:g} / {giant} = {row['ratio']:.2f} ({name})"


def sci(value: float) -> str:
    """``1e-3``, ``5.6e-4``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{'1' if mantissa == '1.0' else mantissa}e{int(exponent)}"


def tightest(ok: pd.Series, every: bool = False) -> str:
    """The lowest target where ``ok`` (by target) holds (a crossover) or, with ``every``, all."""
    chosen = [t for t, good in ok.items() if good]
    shown = ", ".join(map(sci, chosen)) if every else sci(min(chosen)) if chosen else ""
    return shown or "none"


def judge(s: Setting, curves: Mapping[str, pd.DataFrame]) -> tuple[dict[str, str], list[Claim]]:
    """A setting's row of the verdict table and its claims: one per target, and adaptive L."""
    scan = passes(versus(curves, GIANT, SCAN))
    cross = f"rounds {tightest(scan['rounds'])}, time {tightest(scan['time'])}"
    vs = versus(curves, GIANT, TARGETS)
    held, three = passes(vs).all(axis=1), passes(versus(curves, GIANT3, TARGETS)).all(axis=1)
    row = {"setting": s.label, "judged as": "claim" if s.split == PAPER_SPLIT else "sensitivity"}
    values: dict[str, Any] = {"setting": s.label, "taus": listed(CLAIM_LATENCIES)}
    values |= {"max_rounds": MAX_ROUNDS, "max_time": MAX_TIME}  # notes/localnewton.claims.toml
    texts = {t: claim_texts(STUDY.name, values | {"target": sci(t)}) for t in TARGETS}
    claims = []
    for t in TARGETS:
        ratios = {tau: vs.loc[(TIME[tau], t), "ratio"] for tau in LATENCIES}
        shown = {tau: "-" if math.isnan(r) else f"{r:.2f}" for tau, r in ratios.items()}
        rounds = cell(vs.loc[("rounds", t)])
        row[f"rounds @ {sci(t)}"] = rounds
        row[f"time ratio @ {sci(t)}, tau = 0.1 / 1 / 3 s"] = " / ".join(shown.values())
        times = " / ".join(shown[tau] for tau in CLAIM_LATENCIES)
        measured = f"rounds (best LN / GIANT): {rounds}; time ratio at tau = "
        measured += f"{listed(CLAIM_LATENCIES)} s: {times}; crossover: {cross}"
        claims.append(texts[t]["beats"].judged(measured, bool(held[t])))
    steps = curves[ADAPTIVE]["local_steps"].to_numpy(float)
    lower = curves[ADAPTIVE]["rounds"][steps < steps[0]]
    where = f"first lower at sync round {lower.iloc[0]:g}" if len(lower) else "never lower"
    adaptive = f"L {steps[0]:g} -> {steps[-1]:g} ({where})"
    wording = texts[TARGETS[0]]["adaptive"]  # names no target
    claims.append(wording.judged(adaptive, decreased(steps[[0, -1]])))
    row |= {"adaptive L": adaptive, "crossover": cross}
    row |= {"holds vs 3-round GIANT at": tightest(three, every=True)}
    return row | {"holds at": tightest(held, every=True)}, claims


# --- findings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One setting read back: F*, n and d, its runs' final losses and curves, the best SGD."""

    setting: Setting
    optimum: pd.Series
    finals: dict[str, float]
    curves: dict[str, pd.DataFrame]
    best_sgd: str


def result(s: Setting, runs: Mapping[Key, pd.DataFrame], budget: int) -> Result:
    """A setting's runs up to the budget, curves (GIANT's 3-round count, best local SGD)."""
    best = runs[s.optimum_key]
    cut = {
        key[1]: run[run["sync_rounds"] <= budget].reset_index(drop=True)
        for key, run in runs.items()
        if key[0] == s.slug
    }
    f_star = float(best["f_star"].iloc[0])
    curves = {key: curve(h, f_star) for key, h in cut.items()}
    curves[GIANT3] = curve(cut[GIANT], f_star, rounds="round")
    finals = {key: final_loss(h) for key, h in cut.items()}
    chosen = min((key for key in cut if key.startswith(SGD)), key=finals.__getitem__)
    curves[SGD] = curves[chosen]
    return Result(s, best.iloc[0], finals, curves, chosen)


def targets_row(r: Result, key: str) -> dict[str, Any]:
    """Sync rounds and time (tau = 1 s) to each target; final and best (F - F*)/F*."""
    frame = r.curves[key]
    row: dict[str, Any] = {"setting": r.setting.label, "method": r.best_sgd if key == SGD else key}
    for x, name in (("rounds", "rounds"), (TIME[RUN_LATENCY], "time (s)")):
        row |= {f"{name} @ {sci(t)}": reach(frame["rel"], frame[x], t) for t in TARGETS}
    return row | {"final": f"{frame['rel'].iloc[-1]:.1e}", "best": f"{frame['rel'].min():.1e}"}


def findings(plan: Plan, outputs: Outputs) -> Findings:
    """Per setting: curves, verdict row and claims (iid) or sensitivity results; tables, figures."""
    runs = {key: run for key, run in outputs.items() if isinstance(run, pd.DataFrame)}
    results = [
        result(Setting(**s), runs, plan.facts["sync_rounds"]) for s in plan.facts["settings"]
    ]
    rows, claims, sensitivity = [], [], []  # type: list[dict[str, str]], list[Claim], list[Claim]
    for r in results:
        row, found = judge(r.setting, r.curves)
        rows.append(row)
        (claims if r.setting.split == PAPER_SPLIT else sensitivity).extend(found)
    shown = [k for k in results[0].curves if k.startswith(NEWTON)] + [GIANT, GIANT3, SGD, "gd"]
    setup = pd.DataFrame(
        [{"data": r.setting.data, "gamma": r.setting.gamma} | r.optimum.to_dict() for r in results]
    )
    tuning = [
        {"setting": r.setting.label, "run": key, "final train loss": loss}
        for r in results
        for key, loss in r.finals.items()
        if key.startswith(SGD)
    ]
    first = [r for r in results if r.setting.seed == results[0].setting.seed]
    at = f"simulated time at tau = {RUN_LATENCY:g} s per round"
    tables = {
        "verdicts": (pd.DataFrame(rows), "Verdict per setting and target"),
        "targets": (
            pd.DataFrame([targets_row(r, key) for r in results for key in shown]),
            "Sync rounds and simulated time (tau = 1 s) to each target",
        ),
        "optima": (setup.drop_duplicates(["data", "gamma"]).astype({"f_star": str}), "Optima"),
    }
    figures = {
        "subopt-rounds": (panels(first, "rounds"), "(F - F*)/F* against sync rounds"),
        "subopt-time": (panels(first, TIME[RUN_LATENCY]), f"(F - F*)/F* against {at}"),
        "adaptive-L": (panels(first, "rounds", "local_steps"), "Adaptive LocalNewton: L in force"),
    }
    facts = tally(claims, "iid") | tally(sensitivity, "sorted")
    return Findings(claims, sensitivity, tables, figures, facts, {"tuning": pd.DataFrame(tuning)})


def tally(claims: Sequence[Claim], split: str) -> dict[str, str]:
    """``{split}_{i}``: in how many settings the i-th claim (per target, then adaptive) holds."""
    passed = np.array([bool(c.passed) for c in claims]).reshape(-1, len(TARGETS) + 1)
    return {f"{split}_{i}": f"{n}/{len(passed)}" for i, n in enumerate(passed.sum(axis=0))}


def panels(results: Sequence[Result], x: str, y: str = "rel") -> Chart:
    """A panel per setting (:func:`panel`), a row per data set."""
    rows: dict[str, list[Panel | None]] = {}
    for r in results:
        rows.setdefault(r.setting.data, []).append(panel(r, x, y))
    cols = max(map(len, rows.values()))
    grid = [p for row in rows.values() for p in row + [None] * (cols - len(row))]
    return Chart(grid, cols, (4.0, 3.2), legend="figure")


def panel(r: Result, x: str, y: str) -> Panel:
    """Each method's (F - F*)/F* against ``x``; with ``y="local_steps"`` the adaptive runs' L."""
    rel = y == "rel"
    keys = [k for k in r.curves if "-lr" not in k] if rel else [ADAPTIVE, ADAPTIVE_GIANT]
    points = pd.concat(
        pd.DataFrame({"line": k, "x": r.curves[k][x], "y": r.curves[k][y].clip(lower=1e-16)})
        for k in keys
    )
    ylabel = "(F - F*)/F*" if rel else "L (0: switched to GIANT)"
    xlabel = x.replace("time_1", "simulated time (s)")
    targets, dashed = TARGETS if rel else (), (GIANT3, SGD, "gd")
    return Panel(
        points, xlabel, ylabel, r.setting.label, log_y=rel, lines=targets, dashed=dashed, step=True
    )


STUDY = Study(
    name="localnewton",
    title="Reproduction: LocalNewton (Gupta et al., UAI 2021)",
    paper_source="the LocalNewton abstract (arXiv 2105.07320); the paper body was not available",
    plan=plan,
    findings=findings,
)

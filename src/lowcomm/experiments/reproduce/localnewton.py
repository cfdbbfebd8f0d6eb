"""``lowcomm reproduce localnewton``: LocalNewton against GIANT, declared (spec sections 5-7.2).

The claim (Gupta et al., UAI 2021, abstract): LocalNewton needs < 60% of the rounds and < 40%
of the time of GIANT to reach the same training loss, and its adaptive scheme decreases L. It
is judged on the paper's random split (``iid``) per setting and target, with the crossover;
the label-sorted stress test is a sensitivity result (``notes/localnewton.md``). Every run is
a call job (:func:`history`) so that a worker process loads each data set once (:func:`loaded`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.data.inputs import Supplied
from lowcomm.data.loaders import load_data
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import decreased, exact_optimum, reach, suboptimality
from lowcomm.experiments.models import Objects
from lowcomm.experiments.reproduce.report import Claim, Request
from lowcomm.experiments.runner import Prepared, execute, prepare
from lowcomm.experiments.study import Findings, Job, Key, Output, Plan, Study, datasets_root

SHARED_DATA = {
    "w8a": "libsvm:{root}/w8a/w8a.gz,n_features=300",
    "a9a": "libsvm:{root}/a9a/a9a.gz,{root}/a9a/a9a.t.gz,n_features=123",
    "phishing": "libsvm:{root}/phishing/phishing.gz,n_features=68",
}
SYNTHETIC = "synthetic-logistic:4000,20"
TARGETS = (1e-2, 1e-3, 1e-4)
SCAN = tuple(10.0 ** (-k / 4) for k in range(4, 25))  # 1e-1 ... 1e-6, 4 per decade
LATENCIES, CLAIM_LATENCIES = (0.1, 1.0, 3.0), (1.0, 3.0)
RUN_LATENCY = 1.0  # every run's round_latency; other latencies are derived exactly (curve)
MAX_ROUNDS, MAX_TIME = 0.6, 0.4
PAPER_SPLIT, STRESS_SPLIT = "iid", "sorted"
NEWTON, GIANT, GIANT3, SGD = "local-newton", "giant", "giant-3", "local-sgd"
ADAPTIVE, ADAPTIVE_GIANT = "local-newton-adaptive", "local-newton-adaptive-giant"
PAPER = "< 60% of rounds, < 40% of time (abstract)"


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
        gamma = self.gamma.replace("/", "")
        return f"{self.data}-w{self.workers}-g{gamma}-{self.split}-s{self.seed}"

    @property
    def label(self) -> str:
        """``a9a, 8 workers, gamma = 1/n, iid`` (and the seed when not 0)."""
        text = f"{self.data}, {self.workers} workers, gamma = {self.gamma}, {self.split}"
        return text + (f", seed {self.seed}" if self.seed else "")


def data_specs(request: Request, sizes: Sizes) -> tuple[dict[str, str], str]:
    """Name -> data spec (``--data``, else the shared sets found), and a note on what is not."""
    if request.data:
        spec = parse_data_spec(request.data)
        return {Path(spec.path).name.split(".")[0] if spec.path else spec.kind: request.data}, ""
    root = datasets_root()
    found = {n: SHARED_DATA[n].format(root=root) for n in sizes.data if (root / n).is_dir()}
    missing = ", ".join(n for n in sizes.data if n not in found)
    if not found:
        return {"synthetic": SYNTHETIC}, f"{missing} not in {root}: the study runs on {SYNTHETIC}."
    return found, f"{missing} not in {root}: left out." if missing else ""


def methods(sizes: Sizes) -> dict[str, tuple[str, dict[str, Any]]]:
    """Key -> (algorithm, options): LocalNewton variants, GIANT, local SGD (L, step), GD."""
    adaptive = {"local_steps": sizes.adaptive_l0, "adaptive": True}
    found: dict[str, tuple[str, dict[str, Any]]] = {
        f"{NEWTON}-L{s}": (NEWTON, {"local_steps": s}) for s in sizes.local_steps
    }
    found |= {
        ADAPTIVE: (NEWTON, adaptive),
        ADAPTIVE_GIANT: (NEWTON, adaptive | {"then_giant": True}),
    }
    found[GIANT] = (GIANT, {"line_search": "piggyback"})
    for s, lr in itertools.product(sizes.local_steps, sizes.sgd_lrs):
        options = {"local_steps": s, "lr": lr, "batch_size": sizes.sgd_batch}
        found[f"{SGD}-L{s}-lr{lr:g}"] = (SGD, options)
    return found | {"gd": ("gd", {})}


@functools.cache
def loaded(spec: str, seed: int, test_fraction: float) -> Supplied:
    """A data set's training and test sets, loaded once per process."""
    data = load_data(parse_data_spec(spec), seed, test_fraction)
    return Supplied(data.train, data.test)


def prepared(config: RunConfig) -> Prepared:
    """:func:`prepare` on :func:`loaded` data: the data ``config.data`` names."""
    return prepare(config, Objects(data=loaded(config.data, config.seed, config.test_fraction)))


def history(config: RunConfig) -> pd.DataFrame:
    """One run's history, without its wall time (no output depends on the machine)."""
    result = execute(prepared(config))
    assert result is not None, "the simulate engine always returns a result"
    return result.history.drop(columns="wall_time")


def optimum(config: RunConfig) -> pd.DataFrame:
    """F* of ``config``'s objective on the whole training set (float64 Newton), n and d."""
    run = prepared(config)
    train = run.data.train
    f_star = exact_optimum(run.problem, train.X, train.y)
    return pd.DataFrame({"f_star": [f_star], "n_train": [train.n], "dim": [run.problem.dim]})


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """F* per (data, gamma, seed), then every run: Newton-type first (the longest), then the rest.

    Settings: the iid grid (data x workers x gamma x seed), then the label-sorted stress test
    per data set and seed. GIANT and the switching variant get 3/2 engine rounds per sync round.
    """
    sizes = sizes or (QUICK if request.quick else FULL)
    specs, note = data_specs(request, sizes)
    seeds = request.seeds or sizes.seeds
    iid = itertools.product(specs, sizes.workers, sizes.gammas, [PAPER_SPLIT], seeds)
    stress = [Setting(d, *sizes.stress, STRESS_SPLIT, s) for d in specs for s in seeds]
    grid = [Setting(*values) for values in iid] + stress
    optima: dict[Key, RunConfig] = {}
    heavy: list[Job] = []
    light: list[Job] = []
    for s in grid:
        n = loaded(specs[s.data], s.seed, RunConfig().test_fraction).train.n
        base = {"data": specs[s.data], "workers": s.workers, "partition": s.split, "seed": s.seed}
        base |= {"model": "logistic", "dtype": "float64", "eval_every": 1}
        base |= {"l2": 1.0 / n if s.gamma == "1/n" else float(s.gamma)}
        base |= {"round_latency": RUN_LATENCY, "seconds_per_grad": sizes.seconds_per_grad}
        for key, (algorithm, options) in methods(sizes).items():
            giant = algorithm == GIANT or "then_giant" in options
            rounds = sizes.sync_rounds * 3 // 2 if giant else sizes.sync_rounds
            config = make_config(
                base | {"algorithm": algorithm, "options": options, "rounds": rounds}
            )
            build_algorithm(config.algorithm, config.options)
            job = Job((s.slug, key), call=history, args=(config,))
            (light if algorithm in (SGD, "gd") else heavy).append(job)
            optima.setdefault(optimum_key(s), config)
    jobs = [Job(key, call=optimum, args=(config,)) for key, config in optima.items()]
    facts = {k: listed(v) if isinstance(v, tuple) else v for k, v in asdict(sizes).items()}
    facts |= {"data": ", ".join(f"`{spec}`" for spec in specs.values())}
    facts |= {"settings": [asdict(s) for s in grid], "giant_iterations": sizes.sync_rounds // 2}
    return Plan(jobs + heavy + light, facts, note)


def listed(values: tuple[Any, ...]) -> str:
    """``1, 2, 4`` (numbers as ``:g``), for the notes."""
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def optimum_key(s: Setting) -> Key:
    """The key of the F* job of a setting's data set, gamma and seed."""
    return ("optimum", s.data, s.gamma.replace("/", ""), f"s{s.seed}")


# --- measures ----------------------------------------------------------------------------------


def time_column(tau: float) -> str:
    """The curve column of simulated time at latency ``tau``."""
    return f"time_{tau:g}"


def curve(history: pd.DataFrame, f_star: float, rounds: str = "sync_rounds") -> pd.DataFrame:
    """Counted rounds, (F - F*)/F*, simulated time at each latency and L of a run.

    ``rounds="round"`` counts every engine round (GIANT's 3-round count: its piggy-backed
    line-search exchanges then pay the latency too). A run paid ``RUN_LATENCY`` per sync round,
    so its time at tau is ``sim_time + (tau - RUN_LATENCY) sync + tau (counted - sync)``.
    """
    sync, counted = history["sync_rounds"].to_numpy(float), history[rounds].to_numpy(float)
    rel = suboptimality(history["train_loss"], f_star, relative=True).to_numpy()
    frame = pd.DataFrame({"rounds": counted, "rel": rel})
    for tau in LATENCIES:
        extra = (tau - RUN_LATENCY) * sync + tau * (counted - sync)
        frame[time_column(tau)] = history["sim_time"].to_numpy(float) + extra
    return frame.assign(local_steps=history.get("local_steps", np.nan))


def final_loss(history: pd.DataFrame) -> float:
    """The last training loss; +inf for a diverged (non-finite) run."""
    loss = float(history["train_loss"].iloc[-1])
    return loss if math.isfinite(loss) else math.inf


@dataclass(frozen=True)
class Comparison:
    """The best LocalNewton variant against GIANT at one target, on one axis.

    ``giant`` is NaN when GIANT never reached the target; ``bound`` is then its cost at its
    last row, a lower bound on its cost to the target (so the ratio is an upper bound).
    """

    variant: str
    local_newton: float
    giant: float
    bound: float

    @property
    def ratio(self) -> float:
        """LocalNewton / GIANT; NaN when no variant reached the target."""
        return self.local_newton / self.bound if self.bound > 0 else math.inf

    def holds(self, limit: float) -> bool:
        """Whether a variant reached the target within ``limit`` times GIANT's cost."""
        return math.isfinite(self.local_newton) and self.local_newton <= limit * self.bound

    def cell(self) -> str:
        """``1 / 6 = 0.17 (L4)``; ``>N``: GIANT never reached; ``-``: no variant did."""
        giant = f"{self.giant:g}" if math.isfinite(self.giant) else f">{self.bound:g}"
        if math.isnan(self.local_newton):
            return f"- / {giant}"
        name = self.variant.removeprefix(f"{NEWTON}-").replace("-giant", "+GIANT")
        return f"{self.local_newton:g} / {giant} = {self.ratio:.2f} ({name})"


def compare(
    curves: Mapping[str, pd.DataFrame], variants: Sequence[str], giant: str, t: float, x: str
) -> Comparison:
    """The variant needing the least ``x`` to reach ``t`` (the first on ties), against ``giant``."""
    costs = {key: reach(curves[key]["rel"], curves[key][x], t) for key in variants}
    reached = [key for key in variants if math.isfinite(costs[key])]
    best = min(reached, key=lambda key: costs[key]) if reached else ""
    cost = reach(curves[giant]["rel"], curves[giant][x], t)
    bound = cost if math.isfinite(cost) else float(curves[giant][x].iloc[-1])
    return Comparison(best, costs.get(best, math.nan), cost, bound)


def holds(
    curves: Mapping[str, pd.DataFrame], variants: Sequence[str], giant: str, t: float
) -> tuple[bool, bool]:
    """Whether the rounds criterion, and the time criterion at every claim latency, hold at t."""
    rounds = compare(curves, variants, giant, t, "rounds").holds(MAX_ROUNDS)
    times = [compare(curves, variants, giant, t, time_column(tau)) for tau in CLAIM_LATENCIES]
    return rounds, all(c.holds(MAX_TIME) for c in times)


def sci(value: float) -> str:
    """``1e-3``, ``5.6e-4``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{'1' if mantissa == '1.0' else mantissa}e{int(exponent)}"


def judge(s: Setting, curves: Mapping[str, pd.DataFrame]) -> tuple[dict[str, str], list[Claim]]:
    """A setting's row of the verdict table and its claims: one per target, and adaptive L."""
    newton = [key for key in curves if key.startswith(NEWTON)]
    scan = np.array([holds(curves, newton, GIANT, t) for t in SCAN])
    cross = f"rounds {tightest(SCAN, scan[:, 0])}, time {tightest(SCAN, scan[:, 1])}"
    row = {"setting": s.label, "judged as": "claim" if s.split == PAPER_SPLIT else "sensitivity"}
    taus, claims, held, three = ", ".join(f"{tau:g}" for tau in CLAIM_LATENCIES), [], [], []
    for t in TARGETS:
        rounds = compare(curves, newton, GIANT, t, "rounds")
        ratios = [compare(curves, newton, GIANT, t, time_column(tau)).ratio for tau in LATENCIES]
        shown = ["-" if math.isnan(r) else f"{r:.2f}" for r in ratios]
        row[f"rounds @ {sci(t)}"] = rounds.cell()
        row[f"time ratio @ {sci(t)}, tau = 0.1 / 1 / 3 s"] = " / ".join(shown)
        held.append(all(holds(curves, newton, GIANT, t)))
        three.append(all(holds(curves, newton, GIANT3, t)))
        measured = f"rounds (best LN / GIANT): {rounds.cell()}; time ratio at tau = {taus} s: "
        criterion = f"rounds <= {MAX_ROUNDS}x and time <= {MAX_TIME}x GIANT's (tau = {taus} s)"
        claim = f"LocalNewton beats GIANT to (F - F*)/F* <= {sci(t)} on {s.label}"
        measured += " / ".join(shown[LATENCIES.index(tau)] for tau in CLAIM_LATENCIES)
        measured += f"; crossover: {cross}"
        claims.append(Claim(claim, PAPER, criterion, measured, held[-1]))
    steps = curves[ADAPTIVE]["local_steps"].to_numpy(float)
    lower = curves[ADAPTIVE]["rounds"][steps < steps[0]]
    where = f"first lower at sync round {lower.iloc[0]:g}" if len(lower) else "never lower"
    adaptive = f"L {steps[0]:g} -> {steps[-1]:g} ({where})"
    paper = "the adaptive scheme decreases L as training proceeds (abstract)"
    claim = f"Adaptive L decreases during training on {s.label}"
    claims.append(
        Claim(claim, paper, "L at the end of the budget < L0", adaptive, decreased(steps[[0, -1]]))
    )
    row |= {"adaptive L": adaptive, "crossover": cross}
    row |= {"holds vs 3-round GIANT at": tightest(TARGETS, three, every=True)}
    return row | {"holds at": tightest(TARGETS, held, every=True)}, claims


def tightest(targets: Sequence[float], ok: Iterable[bool], every: bool = False) -> str:
    """The lowest target where ``ok`` holds (a crossover) or, with ``every``, all; or ``none``."""
    chosen = [t for t, good in zip(targets, ok, strict=True) if good]
    shown = ", ".join(map(sci, chosen)) if every else sci(min(chosen)) if chosen else ""
    return shown or "none"


# --- findings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One setting read back: F*, n and d, its runs cut at the budget, their curves."""

    setting: Setting
    optimum: pd.Series
    histories: dict[str, pd.DataFrame]
    curves: dict[str, pd.DataFrame]
    best_sgd: str


def result(s: Setting, outputs: Mapping[Key, Output], budget: int) -> Result:
    """A setting's runs up to the budget, curves (GIANT's 3-round count, best local SGD)."""
    best = outputs[optimum_key(s)]
    assert isinstance(best, pd.DataFrame)
    histories = {}
    for key, run in outputs.items():
        if key[0] == s.slug:
            assert isinstance(run, pd.DataFrame)
            histories[key[1]] = run[run["sync_rounds"] <= budget].reset_index(drop=True)
    f_star = float(best["f_star"].iloc[0])
    curves = {key: curve(h, f_star) for key, h in histories.items()}
    curves[GIANT3] = curve(histories[GIANT], f_star, rounds="round")
    sgd = [key for key in histories if key.startswith(SGD)]
    chosen = min(sgd, key=lambda key: final_loss(histories[key]))
    curves[SGD] = curves[chosen]
    return Result(s, best.iloc[0], histories, curves, chosen)


def targets_row(r: Result, key: str) -> dict[str, Any]:
    """Sync rounds and time (tau = 1 s) to each target; final and best (F - F*)/F*."""
    frame = r.curves[key]
    row: dict[str, Any] = {"setting": r.setting.label, "method": r.best_sgd if key == SGD else key}
    for x, name in (("rounds", "rounds"), (time_column(RUN_LATENCY), "time (s)")):
        row |= {f"{name} @ {sci(t)}": reach(frame["rel"], frame[x], t) for t in TARGETS}
    return row | {"final": f"{frame['rel'].iloc[-1]:.1e}", "best": f"{frame['rel'].min():.1e}"}


def findings(plan: Plan, outputs: Mapping[Key, Output]) -> Findings:
    """Per setting: curves, verdict row and claims (iid) or sensitivity results; tables, figures."""
    budget = plan.facts["sync_rounds"]
    results = [result(Setting(**s), outputs, budget) for s in plan.facts["settings"]]
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
        {"setting": r.setting.label, "run": key, "final train loss": final_loss(h)}
        for r in results
        for key, h in r.histories.items()
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
        "subopt-time": (panels(first, time_column(RUN_LATENCY)), f"(F - F*)/F* against {at}"),
        "adaptive-L": (panels(first, "rounds", "local_steps"), "Adaptive LocalNewton: L in force"),
    }
    facts = tally(claims, "iid") | tally(sensitivity, "sorted")
    return Findings(claims, sensitivity, tables, figures, facts, {"tuning": pd.DataFrame(tuning)})


def tally(claims: Sequence[Claim], split: str) -> dict[str, str]:
    """``{split}_{i}``: in how many settings the i-th claim (per target, then adaptive) holds."""
    per = len(TARGETS) + 1
    return {
        f"{split}_{i}": f"{sum(bool(c.passed) for c in claims[i::per])}/{len(claims) // per}"
        for i in range(per)
    }


def panels(results: Sequence[Result], x: str, y: str = "rel") -> Figure:
    """A panel per setting, a row per data set (:func:`draw`)."""
    rows: dict[str, list[Result]] = {}
    for r in results:
        rows.setdefault(r.setting.data, []).append(r)
    cols = max(map(len, rows.values()))
    figure = Figure(figsize=(4 * cols, 3.2 * len(rows) + 0.8), layout="constrained")
    axes = np.asarray(figure.subplots(len(rows), cols, squeeze=False))
    for line, mine in zip(axes, rows.values(), strict=True):
        for j, ax in enumerate(line):
            if j < len(mine):
                draw(ax, mine[j], x, y)
            else:
                ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=5, fontsize="small")
    return figure


def draw(ax: Axes, r: Result, x: str, y: str) -> None:
    """Each method's (F - F*)/F* against ``x``; with ``y="local_steps"`` the adaptive runs' L."""
    keys = [ADAPTIVE, ADAPTIVE_GIANT] if y != "rel" else [k for k in r.curves if "-lr" not in k]
    for key in keys:
        dashed = "--" if key in (GIANT3, SGD, "gd") else "-"
        values = r.curves[key][y].clip(lower=1e-16)
        ax.step(r.curves[key][x], values, where="post", label=key, linestyle=dashed)
    ylabel = "(F - F*)/F*" if y == "rel" else "L (0: switched to GIANT)"
    ax.set(xlabel=x.replace("time_1", "simulated time (s)"), ylabel=ylabel)
    ax.set_yscale("log" if y == "rel" else "linear")
    for t in TARGETS if y == "rel" else ():
        ax.axhline(t, color="tab:green", linestyle=":", linewidth=0.8)
    ax.set_title(r.setting.label, fontsize="small")
    ax.grid(True, alpha=0.3)


STUDY = Study(
    name="localnewton",
    title="Reproduction: LocalNewton (Gupta et al., UAI 2021)",
    paper_source="the LocalNewton abstract (arXiv 2105.07320); the paper body was not available",
    plan=plan,
    findings=findings,
)

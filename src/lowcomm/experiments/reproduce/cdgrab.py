"""``lowcomm reproduce cdgrab``: CD-GraB against D-RR and ID-GraB, declared.

Cooper et al., NeurIPS 2023; spec ``../shared/papers/cd-grab.md``. Experiments A (herding
bound), B (logistic regression, HMDA configuration; the project's calibration as sensitivity
results), C (linear speedup) and D (LSTM, :mod:`.lstm`): setup, measures and departures in
``notes/cdgrab.md``, claim wording in ``notes/cdgrab.claims.toml``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import count, product
from typing import Any

import numpy as np
import pandas as pd

from lowcomm.data.loaders import file_stem, load_data
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.measures import loglog_slope, optima, seed_mean
from lowcomm.experiments.reproduce import report
from lowcomm.experiments.reproduce.figures import Chart, Panel, bands
from lowcomm.experiments.reproduce.lstm import lstm_config
from lowcomm.experiments.reproduce.report import Claim, ClaimText, Request, claim_texts
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import Findings, Job, Outputs, Plan, SavedRun, Study, shared_data
from lowcomm.ordering import balance

ORDERS, PAIR = ("d-rr", "id-grab-mean", "id-grab", "cd-grab"), ("d-rr", "cd-grab")
SIGNS = ("cd-grab-signs-k4", "cd-grab-signs-k16")  # the efficient server, projection k
LABELS = dict(zip(ORDERS, ("D-RR", "ID-GraB (Bal)", "ID-GraB (PairBal)", "CD-GraB"), strict=True))
LABELS |= {s: f"CD-GraB signs, k = {s[15:]}" for s in SIGNS}
REORDER: dict[str, Callable[..., Any]] = {  # (orders [m, n], vectors in that order, rng)
    "d-rr": lambda o, g, rng: np.stack([rng.permutation(o.shape[1]) for _ in o]),
    "id-grab-mean": lambda o, g, rng: balance.mean_balance(o, g, np.zeros((len(o), g.shape[2]))),
    "id-grab": lambda o, g, rng: balance.independent_pair_balance(o, g),
    "cd-grab": lambda o, g, rng: balance.coordinated_pair_balance(o, g)[0],
}
HELD_OUT, L2, SPEC_SQNORM = 0.25, 1e-4, 5.0  # calibration: test share, l2, the spec's mean |x|^2
# The authors' HMDA script (main-LR-HMDA.py): m = 4, 4 examples per worker per step, momentum
# 0.9, a bias, no L2, 50 epochs, 80/20 split. lr: the script's default is 1e-2, but the runs that
# the paper's figure plots (notebooks/LR-HMDA, "lr-0.005") used 5e-3, as the spec's table says.
HMDA: dict[str, Any] = {"lr": 5e-3, "b": 4, "momentum": 0.9, "intercept": True, "l2": 0.0}
HMDA |= {"fraction": 0.2, "epochs": 50}
FLAT_IN_M, BELOW_ID, SLOPE, DRR_NEAR = 1.5, 2, (0.25, 0.75), (0.5, 2)  # A
MIN_RATIO, SPEEDUP, ID_DEGRADES = 10, 3, 10  # B (calibration), C
LIMITS = {"flat_in_m": FLAT_IN_M, "below_id": BELOW_ID, "min_ratio": MIN_RATIO}  # the TOML's $names
LIMITS |= {"slope_low": SLOPE[0], "slope_high": SLOPE[1], "drr_low": DRR_NEAR[0]}
LIMITS |= {"drr_high": DRR_NEAR[1], "speedup": SPEEDUP, "id_degrades": ID_DEGRADES}
QUICK_SIZE = "not judged at quick size: "
MEASURES = ("train_loss", "suboptimality", "test_metric", "herding_bound")
SHOWN = {"B-hmda": "B. HMDA configuration, {name}", "C": "C. Linear speedup (step 0.04 m)"}
SHOWN |= {"B-synthetic": "B. Calibration, synthetic", "B-real": "B. Calibration, {name}"}
SHOWN |= {"D": "D. LSTM on WikiText-2 (test_metric: perplexity)"}
Measured = list[tuple[str, Any]]  # per claim: what was measured, and whether it passes


@dataclass(frozen=True)
class Sizes:
    """How big: A's vectors, the synthetic set (B calibration, C), epochs and seeds per part.

    ``real``: phishing and WikiText-2 (:func:`shared_data`); ``small``: full-size claims unjudged.
    """

    herding_total: int = 20480
    herding_workers: tuple[int, ...] = (2, 4, 8, 16, 32)
    herding_rounds: int = 15
    herding_trials: int = 3
    train: int = 4096
    epochs: int = 20
    seeds: tuple[int, ...] = (0,)
    speedup_epochs: int = 15
    hmda_seeds: tuple[int, ...] = (0, 1, 2)
    lstm_epochs: int = 2
    lstm_seeds: tuple[int, ...] = (0,)
    real: bool = True
    small: bool = False


FULL = Sizes()
QUICK = replace(FULL, herding_trials=1, train=1024, epochs=4, speedup_epochs=6, lstm_epochs=0)
QUICK = replace(QUICK, real=False, small=True)


def texts(part: str, data: str = "") -> list[ClaimText]:
    """The wording of the claims whose id starts with ``part``; ``data``: the calibration's set."""
    every = claim_texts("cdgrab", LIMITS | {"data": data})
    return [text for key, text in every.items() if key.startswith(part)]


def herding(total: int, rounds: int, trials: int, m: int, dim: int = 16) -> pd.DataFrame:
    """Experiment A at m workers: each method's parallel herding bound per reorder round.

    ``total`` unit Gaussian directions centred per worker (the paper's simulation); CD-GraB
    balances all workers' pairs with one running sum, ID-GraB each worker alone, D-RR reshuffles.
    """
    rows, n = [], total // m
    for trial in range(trials):
        rng = np.random.default_rng([m, trial])
        vectors = rng.standard_normal((m, n, dim))
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        vectors -= vectors.mean(axis=1, keepdims=True)
        start = np.stack([rng.permutation(n) for _ in range(m)])
        for method, rule in REORDER.items():
            order = start
            for r in range(rounds + 1):
                visited = np.take_along_axis(vectors, order[:, :, None], axis=1)
                order = rule(order, visited, rng) if r else order
                rows.append((m, trial, method, r, balance.herding_bound(order, vectors)))
    return pd.DataFrame(rows, columns=["m", "trial", "method", "round", "bound"])


@functools.cache
def epoch_steps(data: str, fraction: float, m: int, b: int) -> tuple[int, int]:
    """Steps per epoch of ``sgd`` with an order, and the training examples it removes."""
    values = {"data": data, "test_fraction": fraction, "workers": m, "epochs": 1, "order": "d-rr"}
    prepared = prepare(make_config(values | {"options": {"batch_size": b}}))
    return prepared.rounds, int(prepared.removed.ids.size)


def run(part: str, data: str, m: int, method: str, seed: int, epochs: int, **more: Any) -> Job:
    """``sgd`` over ``method``'s order, evaluated per epoch; ``more``: lr, fraction, b, etc."""
    s = {"fraction": HELD_OUT, "b": 1, "momentum": 0.0, "l2": L2, "intercept": False} | more
    order, _, k = method.partition("-k")
    options = {"lr": s["lr"], "batch_size": s["b"], "momentum": s["momentum"]}
    options |= {"projection": int(k)} if k else {}
    values = {"algorithm": "sgd", "order": order, "data": data, "workers": m, "epochs": epochs}
    values |= {"seed": seed, "l2": s["l2"], "test_fraction": s["fraction"], "dtype": "float64"}
    values |= {"model": "logistic", "intercept": s["intercept"], "options": options}
    values["eval_every"] = epoch_steps(data, s["fraction"], m, s["b"])[0]
    return Job((part, f"m{m}", method, f"seed{seed}"), make_config(values))


def split(data: str, train: int) -> tuple[float, float]:
    """The test share leaving ``train`` examples (or 0.25), and the spec's |x|^2 over the set's."""
    loaded = load_data(parse_data_spec(data), 0, HELD_OUT)
    total = loaded.train.n + loaded.test.n
    share = (total - train) / total if 4 * train <= 3 * total and "synthetic" not in data else 0.25
    X = load_data(parse_data_spec(data), 0, share).train.X
    return share, SPEC_SQNORM / float((X.reshape(len(X), -1) ** 2).sum(axis=1).mean())


def case(c: RunConfig) -> str:
    """What f* depends on, the kept training set: data, test share, seed, m and b."""
    return f"{c.data}|{c.test_fraction}|{c.seed}|{c.workers}|{c.options['batch_size']}"


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """Every job of A, B (HMDA configuration; calibration), C and D; f* once per kept set."""
    z = sizes or (QUICK if request.quick else FULL)
    seeds = request.seeds
    z = replace(z, seeds=seeds, hmda_seeds=seeds, lstm_seeds=seeds) if seeds else z
    total = next(t for t in count(z.train) if t - round(t * HELD_OUT) == z.train)
    synthetic, wanted = f"synthetic-logistic:{total},32", ["phishing"] * (not request.data)
    found, note = shared_data([*wanted, "wikitext-2"]) if z.real else ({}, "")
    real, scale = request.data or found.get("phishing", ""), split(synthetic, z.train)[1]
    jobs = [run("C", synthetic, 1, o, 0, z.speedup_epochs, lr=0.04 * scale) for o in PAIR]
    for m, o in [*product((2, 4, 8, 16), PAIR), (2, "id-grab-mean"), (16, "id-grab-mean")]:
        jobs.append(run("C", synthetic, m, o, 0, z.speedup_epochs, lr=0.04 * m * scale))
    jobs += [run("B-hmda", real, 4, o, s, **HMDA) for o in PAIR for s in z.hmda_seeds if real]
    herd = (z.herding_total, z.herding_rounds, z.herding_trials)
    jobs += [Job(("A", f"m{m}"), call=herding, args=(*herd, m)) for m in z.herding_workers]
    for part, data in [("B-synthetic", synthetic)] + [("B-real", real)] * bool(real):
        share, factor = split(data, z.train)
        grid = list(product((4, 16), ORDERS)) + [(16, s) for s in SIGNS if part == "B-synthetic"]
        for (m, o), s in product(grid, z.seeds):
            jobs.append(run(part, data, m, o, s, z.epochs, lr=0.5 * factor, fraction=share))
    if z.lstm_epochs and "wikitext-2" in found:
        for o, s in product(PAIR, z.lstm_seeds):
            config = lstm_config(o, s, z.lstm_epochs, found["wikitext-2"])
            jobs.append(Job(("D", "m4", o, f"seed{s}"), config))
    cases = {case(c): c for j in jobs if (c := j.config) and c.l2 > 0}
    jobs.append(Job(("optima",), call=optima, args=(tuple(sorted(cases.values(), key=case)),)))
    facts: dict[str, Any] = {k: str(v).strip("(,)") for k, v in vars(z).items()}
    facts |= {"small": z.small, "synthetic": synthetic, "scale": f"{scale:.4g}"}
    facts |= {"name": file_stem(parse_data_spec(real).path) if real else "phishing"}
    facts["real"] = f"`{real}`" if real else "phishing (not run)"
    facts["removed"] = epoch_steps(real, HMDA["fraction"], 4, HMDA["b"])[1] if real else "-"
    return Plan(jobs, facts, note)


def histories(plan: Plan, outputs: Outputs) -> pd.DataFrame:
    """Every engine run's history with its part, m, method, seed, epoch and f - f*."""
    job = next(job for job in plan.jobs if job.key == ("optima",))
    optimum = outputs[job.key]
    assert isinstance(optimum, pd.DataFrame)
    f_star = dict(zip(map(case, job.args[0]), optimum["f_star"], strict=True))
    frames = []
    for job in plan.jobs:
        if (c := job.config) is not None and isinstance(saved := outputs[job.key], SavedRun):
            h = saved.history.assign(part=job.key[0], m=c.workers, method=job.key[2], seed=c.seed)
            h["epoch"] = h["round"] // c.eval_every
            frames.append(h.assign(suboptimality=h["train_loss"] - f_star.get(case(c), math.nan)))
    return pd.concat(frames, ignore_index=True)


def span(values: pd.Series) -> str:
    """``low-high`` of ``values`` in 3 significant digits."""
    return f"{report.number(float(values.min()), 3)}-{report.number(float(values.max()), 3)}"


def herding_final(herding: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Mean over trials of the last round's bound (method x m), and of the starting bound."""
    last = herding.loc[herding["round"] == herding["round"].max()]
    first = herding.loc[(herding["round"] == 0) & (herding["method"] == "d-rr")]
    return last.pivot_table("bound", "method", "m"), first.groupby("m")["bound"].mean()


def herding_measures(herding: pd.DataFrame) -> Measured:
    """Experiment A's four criteria, on the means over trials."""
    final, start = herding_final(herding)
    ms, cd, ids = list(final.columns), final.loc["cd-grab"], ["id-grab-mean", "id-grab"]
    flat, drr = cd.max() / cd.min(), final.loc["d-rr"] / start
    below = min(final.loc[i, m] / cd[m] for i in ids for m in ms if m >= 8)
    slopes = [loglog_slope(ms, final.loc[i]) for i in ids]
    up = all((np.diff(final.loc[i]) > 0).all() for i in ids)
    grows = f"{span(final.loc[ids[0]])} (Bal), {span(final.loc[ids[1]])} (PairBal), slopes "
    grows += f"{slopes[0]:.2f}, {slopes[1]:.2f}{'' if up else ', not increasing'}"
    return [
        (f"{span(cd)} over m = {ms[0]}..{ms[-1]} ({flat:.2f}x)", flat <= FLAT_IN_M),
        (f"both ID-GraB >= {below:.2f}x CD-GraB's", below >= BELOW_ID),
        (grows, up and all(SLOPE[0] <= s <= SLOPE[1] for s in slopes)),
        (f"{span(drr)}x (start {span(start)})", drr.between(*DRR_NEAR).all()),
    ]


def hmda_measures(fin: pd.DataFrame) -> Measured:
    """Experiment B in the HMDA configuration: last loss and test accuracy, means over seeds."""
    loss = fin.pivot_table("train_loss", "seed", "method")
    acc = 100 * fin.pivot_table("test_metric", "seed", "method").agg(seed_mean)
    cd, drr = seed_mean(loss["cd-grab"]), seed_mean(loss["d-rr"])
    diff = loss["cd-grab"] - loss["d-rr"]
    seeds = f"lower on {(diff < 0).sum()} of {len(diff)} seeds, std {diff.std():.2g}"
    text = f"CD-GraB {cd:.6f} vs D-RR {drr:.6f} ({cd - drr:+.2g}; {seeds})"
    accuracy = f"CD-GraB {acc['cd-grab']:.2f}% vs D-RR {acc['d-rr']:.2f}%"
    return [(text, cd < drr), (accuracy, acc["cd-grab"] >= acc["d-rr"])]


def calibration_measures(fin: pd.DataFrame) -> Measured:
    """Experiment B's three criteria in the project's calibration (spec section 7 B)."""
    sub = fin.pivot_table("suboptimality", "m", "method", aggfunc=seed_mean, dropna=False)
    diff = fin.pivot_table("train_loss", ["m", "seed"], "method").eval("`cd-grab` - `d-rr`")
    ratio, gaps = sub["d-rr"] / sub["cd-grab"], sub[["id-grab-mean", "id-grab"]]
    between = (gaps.gt(sub["cd-grab"], axis=0) & gaps.lt(sub["d-rr"], axis=0)).all(axis=None)
    gaps = gaps.div(sub["cd-grab"], axis=0)
    gap = "; ".join(f"{LABELS[i]} / CD-GraB {span(g)}x" for i, g in gaps.items())
    wins = f"{(diff < 0).sum()} of {len(diff)} (m, seed); largest CD-GraB - D-RR {diff.max():.3g}"
    growth = (ratio >= MIN_RATIO).all() and ratio.is_monotonic_increasing
    widening = between and (gaps.iloc[-1] > gaps.iloc[0]).all()
    return [
        (wins, (diff < 0).all()),
        (", ".join(f"m = {m}: {r:.3g}x" for m, r in ratio.items()), growth),
        (gap + ("" if between else "; not between"), widening),
    ]


def lstm_measures(fin: pd.DataFrame) -> Measured:
    """Experiment D: last full training loss and test perplexity, means over seeds."""
    loss = fin.pivot_table("train_loss", "seed", "method").agg(seed_mean)
    ppl = fin.pivot_table("test_metric", "seed", "method").agg(seed_mean)
    losses = f"CD-GraB {loss['cd-grab']:.4f} vs D-RR {loss['d-rr']:.4f}"
    return [
        (losses, loss["cd-grab"] < loss["d-rr"]),
        (f"CD-GraB {ppl['cd-grab']:.1f} vs D-RR {ppl['d-rr']:.1f}", ppl["cd-grab"] <= ppl["d-rr"]),
    ]


def speedup_measures(fin: pd.DataFrame) -> Measured:
    """Experiment C's three criteria (spec section 7 C)."""
    sub = fin.pivot_table("suboptimality", "m", "method", aggfunc=seed_mean, dropna=False)
    cd, drr = sub["cd-grab"] / sub["cd-grab"][1], sub["d-rr"] / sub["d-rr"][1]
    ident = sub["id-grab-mean"]
    worse = ident[16] / ident[2]
    keeps = f"m = 1: {report.number(sub['cd-grab'][1], 3)}; m = 2..16: {span(cd[1:])}x of it"
    return [
        (keeps, (cd <= SPEEDUP).all()),
        (
            f"{report.number(ident[2], 3)} -> {report.number(ident[16], 3)} ({worse:.3g}x)",
            worse >= ID_DEGRADES,
        ),
        (f"{span(sub['d-rr'])} ({span(drr)}x of m = 1)", drr.between(1 / SPEEDUP, SPEEDUP).all()),
    ]


def verdicts(texts: list[ClaimText], measure: Callable[[], Measured], why: str) -> list[Claim]:
    """The claims with their measurements, or, given a reason ``why``, not judged."""
    measured = [(why, None)] * len(texts) if why else [(m, bool(ok)) for m, ok in measure()]
    return [text.judged(m, ok) for text, (m, ok) in zip(texts, measured, strict=True)]


def claims(herding: pd.DataFrame, part: dict[str, pd.DataFrame], plan: Plan) -> list[Claim]:
    """A, B (HMDA configuration), C and D, each judged unless not run or too small."""
    small, name = plan.facts["small"], plan.facts["name"]
    hmda = "" if "B-hmda" in part else not_run(small, f"{name} runs in the full study", name)
    lstm = (
        "" if "D" in part else not_run(small, "runs in the full study (WikiText-2)", "wikitext-2")
    )
    found = verdicts(texts("A"), lambda: herding_measures(herding), "")
    found += verdicts(texts("B"), lambda: hmda_measures(part["B-hmda"]), hmda)
    found += verdicts(texts("C"), lambda: speedup_measures(part["C"]), "")
    if small:  # ID-GraB's loss shows once the order's error dominates the optimiser's
        found[7] = verdicts(texts("C-id"), list, QUICK_SIZE + "needs N = 4,096 and 15 epochs")[0]
    return found + verdicts(texts("D"), lambda: lstm_measures(part["D"]), lstm)


def calibration(part: dict[str, pd.DataFrame], plan: Plan) -> list[Claim]:
    """B in the project's calibration, on synthetic data and the real set: sensitivity results."""
    small, name = plan.facts["small"], plan.facts["name"]
    calibrated = QUICK_SIZE + "calibrated at N = 4,096 and 20 epochs" if small else ""
    real = "" if "B-real" in part else not_run(small, f"{name} runs in the full study", name)
    found = []
    for p, label, why in (("B-synthetic", "synthetic", ""), ("B-real", name, real)):
        measure = functools.partial(calibration_measures, part.get(p, pd.DataFrame()))
        found += verdicts(texts("calibration", label), measure, why or calibrated)
    return found


def not_run(small: bool, later: str, data: str) -> str:
    """Why claims on ``data`` are not judged: at quick size they run ``later``, else not found."""
    return QUICK_SIZE + later if small else f"not run: no {data}"


def figure(rows: pd.DataFrame, x: str, y: str, seed: str = "seed") -> Chart:
    """Mean of ``y`` against ``x`` per method, min-max band over ``seed``; a panel per m."""
    panels = []
    for m, mine in rows.groupby("m"):
        runs = {
            LABELS[str(method)]: [frame for _, frame in seeds.groupby(seed)]
            for method, seeds in mine.groupby("method", sort=False)
        }
        panels.append(Panel(bands(runs, x, y), x, y, f"m = {m}", log_y=True))
    return Chart(panels, len(panels), (3.6, 3.8))


def gap_figure(rows: pd.DataFrame) -> Chart:
    """CD-GraB's full training loss minus D-RR's per epoch, one line per seed."""
    wide = rows.pivot_table("train_loss", ["epoch", "seed"], "method")
    gap = (wide["cd-grab"] - wide["d-rr"]).rename("y").reset_index()
    points = gap.assign(line="seed " + gap["seed"].astype(str)).rename(columns={"epoch": "x"})
    return Chart([Panel(points, "epoch", "CD-GraB - D-RR, full training loss", lines=(0.0,))])


def summary(fin: pd.DataFrame) -> pd.DataFrame:
    """Per m and method: seeds, and mean ± std over seeds of the last epoch's measures."""
    rows = []
    for (m, method), r in fin.sort_values("m", kind="stable").groupby(["m", "method"], sort=False):
        cells = {c: report.mean_std(r[c].tolist(), 6 if c == "train_loss" else 3) for c in MEASURES}
        rows.append({"m": m, "method": LABELS[str(method)], "seeds": len(r)} | cells)
    return pd.DataFrame(rows)


def findings(plan: Plan, outputs: Outputs) -> Findings:
    """The claims (A, B in the HMDA configuration, C, D), B's calibration, tables and figures."""
    herding = pd.concat([o for k, o in outputs.items() if k[0] == "A"], ignore_index=True)
    runs = histories(plan, outputs)
    last = runs.groupby(["part", "m", "method", "seed"])["epoch"].transform("max")
    part = dict(tuple(runs.loc[runs["epoch"] == last].groupby("part")))  # each run's last epoch
    final, start = herding_final(herding)
    table = final.T[list(ORDERS)].rename(columns=LABELS).assign(start=start).reset_index()
    tables = {"herding": (table, "A. Parallel herding bound, last round and start (trial mean)")}
    trials = herding.assign(bytes_up=0, bytes_down=0)  # seed_band stacks histories, with bytes
    figures = {"herding": (figure(trials, "round", "bound", "trial"), "A. Parallel herding bound")}
    for p in (p for p in SHOWN if p in part):
        title = SHOWN[p].format(name=plan.facts["name"])
        rows = runs.loc[(runs["part"] == p) & (runs["epoch"] > 0)]
        tables[p.lower()] = (summary(part[p]), f"{title}: the last epoch (mean ± std over seeds)")
        if p == "B-hmda":
            figures[p.lower()] = (gap_figure(rows), f"{title}: CD-GraB's loss minus D-RR's")
        elif p != "D":
            figures[p.lower()] = (figure(rows, "epoch", "suboptimality"), f"{title}: suboptimality")
    return Findings(claims(herding, part, plan), calibration(part, plan), tables, figures)


STUDY = Study(
    name="cdgrab",
    title="Reproduction: CD-GraB (Cooper et al., NeurIPS 2023)",
    paper_source="the paper's figures, read off by the spec, and the spec's calibration",
    plan=plan,
    findings=findings,
)

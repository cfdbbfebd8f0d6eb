"""``lowcomm reproduce sasg``: SASG against LASG, top-k with memory and SGD, declared.

The setting mirrors the SASG authors' MNIST notebook (Deng et al., arXiv 2112.04088); the
setup, the measures and the departures are in ``notes/sasg.md``, the claims' wording in
``notes/sasg.claims.toml``. Each claim is judged on means over seeds; the thresholds are the
constants below, fixed before measuring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import make_config
from lowcomm.experiments.measures import first_reach, key_numbers, listed
from lowcomm.experiments.reproduce.figures import Chart, Panel, bands
from lowcomm.experiments.reproduce.report import Claim, Request, claim_texts, mean_std, number
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import Findings, Job, Outputs, Plan, SavedRun, Study, shared_data

TARGET_PERCENT = 70  # the target is SGD's accuracy at this share of its rounds
MAX_UPLOAD_RATIO = 0.6  # claim 2: SASG uploads <= 0.6 x SGD's
MIN_BIT_SAVING = 80  # claim 3: SASG bits <= 1/80 of SGD's
MAX_ACCURACY_GAP = 0.5  # claim 4: |SASG - SGD| final test accuracy, in points
TEXTS = claim_texts(  # notes/sasg.claims.toml, by claim id
    "sasg",
    {"max_upload_ratio": MAX_UPLOAD_RATIO, "min_bit_saving": MIN_BIT_SAVING}
    | {"max_accuracy_gap": MAX_ACCURACY_GAP},
)
LABELS = {"sgd": "SGD", "topk-ef": "Top-k with memory", "lasg": "LASG", "sasg": "SASG"}
LAZY = ("lasg", "sasg")
CURVES = {  # figure -> (x, y, caption): mean over seeds with a min-max band
    "accuracy-uploads": (
        "uploads",
        "accuracy",
        "Test accuracy (%) against uploads (mean over seeds, min-max band; dotted: the target)",
    ),
    "accuracy-bits": (
        "bits",
        "accuracy",
        "Test accuracy (%) against uplink bits (log scale; dotted: the target)",
    ),
    "train-loss": ("round", "train_loss", "Training loss against iterations"),
}


@dataclass(frozen=True)
class Sizes:
    """How long and how wide: model, epochs and seeds for MNIST and for the small data sets."""

    mnist_hidden: tuple[int, ...] = (512,)
    mnist_epochs: int = 20
    small_hidden: tuple[int, ...] = (128,)
    small_epochs: int = 200
    seeds: tuple[int, ...] = (0, 1)
    workers: int = 10
    batch_size: int = 10
    eval_every: int = 100


FULL = Sizes()
QUICK = Sizes(mnist_epochs=3, small_epochs=100)


def options(method: str, batch_size: int = 10) -> dict[str, Any]:
    """The authors' notebook: step 0.005, window D = 10, c = 1/2, density 1%, summed messages."""
    common: dict[str, Any] = {"lr": 0.005, "batch_size": batch_size, "sampling": "reshuffle"}
    lazy = {"window": 10, "threshold": 0.5, "reference": "last-upload"}
    sparse = {"density": 0.01}
    return {
        "sgd": common | {"reduce": "sum", "momentum": 0.0},
        "topk-ef": common | sparse,
        "lasg": common | lazy,
        "sasg": common | sparse | lazy,
    }[method]


def default_data(quick: bool) -> tuple[str, str]:
    """The data spec without ``--data``, and a note when the full study falls back to digits."""
    if quick:
        return "digits", ""
    found, missing = shared_data(["mnist"])
    if found:
        return found["mnist"], ""
    return "digits", f"{missing}: the full study runs on digits instead of MNIST."


def plan(request: Request, sizes: Sizes | None = None) -> Plan:
    """Every (method, seed) run, validated; facts: rounds, data sizes, target round."""
    sizes = sizes or (QUICK if request.quick else FULL)
    data, note = (request.data, "") if request.data else default_data(request.quick)
    mnist = parse_data_spec(data).kind == "mnist"
    hidden = sizes.mnist_hidden if mnist else sizes.small_hidden
    epochs = sizes.mnist_epochs if mnist else sizes.small_epochs
    seeds = request.seeds or sizes.seeds
    base = {"data": data, "model": "mlp", "hidden": hidden, "l2": 0.0, "partition": "iid"}
    base |= {"workers": sizes.workers, "eval_every": sizes.eval_every}
    first = prepare(make_config(base | {"seed": seeds[0]}))
    if epochs < 1:
        raise InvalidConfigError("epochs", "lowcomm reproduce sasg", "an integer >= 1", epochs)
    rounds = math.ceil(epochs * first.data.train.n / (sizes.workers * sizes.batch_size))
    runs = {m: base | {"algorithm": m, "options": options(m, sizes.batch_size)} for m in LABELS}
    jobs = [
        Job((m, f"seed{s}"), make_config(run).model_copy(update={"seed": s, "rounds": rounds}))
        for m, run in runs.items()
        for s in seeds
    ]
    facts: dict[str, Any] = {"data": data, "hidden": listed(hidden, "-")}
    facts |= {"dim": f"{first.problem.dim:,}"}
    facts |= {"n_train": first.data.train.n, "n_test": first.data.test.n, "epochs": epochs}
    facts |= {"rounds": rounds, "seeds": listed(seeds, ",")}
    facts |= {k: getattr(sizes, k) for k in ("workers", "batch_size", "eval_every")}
    facts |= {"target_round": target_round(rounds, sizes.eval_every)}
    return Plan(jobs, facts | {"target_percent": TARGET_PERCENT}, note)


# --- measures ----------------------------------------------------------------------------------


def target_round(rounds: int, eval_every: int) -> int:
    """The last evaluated round within :data:`TARGET_PERCENT` percent of ``rounds``."""
    return rounds * TARGET_PERCENT // 100 // eval_every * eval_every


def costs_to_target(history: pd.DataFrame, target: float) -> dict[str, float]:
    """Round, uploads and uplink bits at the first evaluation with test accuracy >= ``target``."""
    where = first_reach(history["test_metric"], target, rising=True)
    if where is None:
        return dict.fromkeys(("round", "uploads", "bits"), math.nan)
    row = history.iloc[where]
    return {
        "round": float(row["round"]),
        "uploads": float(row["uploads"]),
        "bits": 8.0 * float(row["bytes_up"]),
    }


def round_uploads(records: pd.DataFrame, rounds: int) -> pd.Series:
    """Uploads of each round 1..``rounds`` from the ledger's (round, worker) records."""
    per_round = records.groupby("round")["uploads"].sum()
    return per_round.reindex(range(1, rounds + 1), fill_value=0).astype(np.int64)


def skip_by_epoch(uploads: pd.Series, workers: int, batch_size: int, n_train: int) -> pd.Series:
    """Mean skip ratio (1 - uploads / workers) of the rounds of each epoch, indexed by epoch.

    Round r belongs to epoch floor((r - 1) W b / N) + 1: the pass its examples fall in.
    """
    rounds = uploads.index.to_numpy(dtype=np.int64)
    epochs = (rounds - 1) * workers * batch_size // n_train + 1
    skips = 1.0 - uploads.to_numpy(dtype=float) / workers
    return pd.Series(skips, index=pd.Index(epochs, name="epoch")).groupby(level=0).mean()


def per_seed(
    outputs: Outputs, target: float, facts: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A row per run (costs to reach ``target``, final state, skip ratio); lazy skips by epoch."""
    rows, skips = [], []
    for key, run in outputs.items():
        assert isinstance(run, SavedRun)
        method, seed = key[0], int(key_numbers(key)["seed"])
        last, hit = run.history.iloc[-1], costs_to_target(run.history, target)
        uploads = round_uploads(run.ledger(), facts["rounds"])
        rows.append(
            {"method": method, "seed": seed}
            | {f"{cost}_to_target": value for cost, value in hit.items()}
            | {"final_accuracy": float(last["test_metric"])}
            | {"final_train_loss": float(last["train_loss"])}
            | {"bits_per_upload": 8.0 * float(last["bytes_up"]) / max(int(last["uploads"]), 1)}
            | {"skip_ratio": 1.0 - float(uploads.mean()) / facts["workers"]}
            | {"wall_time": float(last["wall_time"]), "diverged": run.diverged}
        )
        if method in LAZY:
            sizes = (facts["workers"], facts["batch_size"], facts["n_train"])
            by_epoch = skip_by_epoch(uploads, *sizes).rename("skip_ratio").reset_index()
            skips.append(by_epoch.assign(method=method, seed=seed))
    skip = pd.concat(skips, ignore_index=True)[["method", "seed", "epoch", "skip_ratio"]]
    return pd.DataFrame(rows), skip


def seed_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, the mean over seeds of every measure; NaN if any seed has none (no target)."""
    numeric = table.drop(columns=["seed", "diverged"]).groupby("method", sort=False)
    return numeric.agg(lambda column: column.mean(skipna=False))


def claims(mean: pd.DataFrame) -> list[Claim]:
    """The four claims of the SASG paper, judged on the means over seeds."""
    up, bits, acc = mean["uploads_to_target"], mean["bits_to_target"], mean["final_accuracy"]
    ratio, saving = up["sasg"] / up["sgd"], bits["sgd"] / bits["sasg"]
    gap = 100.0 * (acc["sasg"] - acc["sgd"])
    reached = {m: "not reached" if math.isnan(v) else number(v) for m, v in up.items()}
    mbit = f"{number(bits['sasg'] / 1e6)} vs {number(bits['sgd'] / 1e6)} Mbit"
    measured = {
        "order": f"SASG {reached['sasg']}, LASG {reached['lasg']}, SGD {reached['sgd']}",
        "uploads": "-" if math.isnan(ratio) else f"{ratio:.3f}x",
        "bits": f"{number(saving)}x fewer ({mbit})",
        "accuracy": f"SASG {acc['sasg']:.2%}, SGD {acc['sgd']:.2%} ({gap:+.2f} points)",
    }
    passed = {
        "order": up["sasg"] < up["lasg"] < up["sgd"],
        "uploads": ratio <= MAX_UPLOAD_RATIO,
        "bits": bits["sasg"] * MIN_BIT_SAVING <= bits["sgd"],
        "accuracy": abs(gap) <= MAX_ACCURACY_GAP,
    }
    return [text.judged(measured[key], bool(passed[key])) for key, text in TEXTS.items()]


def results(table: pd.DataFrame, mean: pd.DataFrame) -> pd.DataFrame:
    """Per method, mean ± std over seeds of what the claims use, as text."""
    rows = []
    for method, mine in table.groupby("method", sort=False):
        rows.append(
            {
                "method": LABELS[str(method)],
                "uploads to target": mean_std(mine["uploads_to_target"].tolist()),
                "uplink Mbit to target": mean_std((mine["bits_to_target"] / 1e6).tolist()),
                "uploads vs SGD": number(
                    mean.loc[method, "uploads_to_target"] / mean.loc["sgd", "uploads_to_target"]
                ),
                "seeds not reaching target": int(mine["uploads_to_target"].isna().sum()),
                "final test accuracy (%)": mean_std((100 * mine["final_accuracy"]).tolist()),
                "final train loss": mean_std(mine["final_train_loss"].tolist()),
                "skipped uploads (%)": mean_std((100 * mine["skip_ratio"]).tolist(), 3),
                "bits per upload": number(mean.loc[method, "bits_per_upload"]),
                "wall time per run (s)": mean_std(mine["wall_time"].tolist(), 3),
                "diverged": int(mine["diverged"].sum()),
            }
        )
    return pd.DataFrame(rows)


# --- figures -----------------------------------------------------------------------------------


def curves(outputs: Outputs, x: str, y: str, title: str, target: float) -> Chart:
    """Every method's ``y`` against ``x``: mean over seeds with a min-max band."""
    runs = {
        label: [
            run.history.assign(
                accuracy=100 * run.history["test_metric"], bits=8.0 * run.history["bytes_up"]
            )
            for (m, _), run in outputs.items()
            if m == method and isinstance(run, SavedRun)
        ]
        for method, label in LABELS.items()
    }
    points = bands(runs, x, y)
    points = points.loc[points["x"] > 0] if x == "bits" else points
    if y != "accuracy":
        return Chart([Panel(points, x, y, title, log_x=x == "bits", log_y=True)])
    limits = (max(0.0, 100 * target - 10), 100.0)
    target_line = (100 * target,)
    return Chart([Panel(points, x, y, title, log_x=x == "bits", lines=target_line, ylim=limits)])


def skip_chart(skips: pd.DataFrame, title: str) -> Chart:
    """Skip ratio by epoch of LASG and SASG (mean over seeds)."""
    mean = skips.groupby(["method", "epoch"], sort=False, as_index=False)["skip_ratio"].mean()
    points = mean.assign(line=mean["method"].map(LABELS), y=100 * mean["skip_ratio"])
    ylabel = "skipped uploads (% of worker-iterations)"
    return Chart(
        [Panel(points.rename(columns={"epoch": "x"}), "epoch", ylabel, title, ylim=(0.0, 100.0))]
    )


def sampled(epochs: Sequence[int], most: int = 20) -> list[int]:
    """At most about ``most`` evenly spaced epochs, the first and the last included."""
    picked = list(epochs[:: math.ceil(len(epochs) / most)])
    return picked if picked[-1] == epochs[-1] else [*picked, epochs[-1]]


def findings(plan: Plan, outputs: Outputs) -> Findings:
    """Target, costs to target, skip ratios, the four claims and the figures."""
    facts = plan.facts
    sgd = [
        run.history.set_index("round")["test_metric"].get(facts["target_round"], math.nan)
        for (m, _), run in outputs.items()
        if m == "sgd" and isinstance(run, SavedRun)
    ]
    target = float(np.mean(sgd))
    table, skips = per_seed(outputs, target, facts)
    mean = seed_means(table)
    kind = parse_data_spec(facts["data"]).kind
    title = f"{kind}, MLP {facts['hidden']}, {facts['workers']} workers"
    figures = {
        name: (curves(outputs, x, y, title, target), caption)
        for name, (x, y, caption) in CURVES.items()
    }
    figures["skip-ratio"] = (skip_chart(skips, title), "Skip ratio by epoch of LASG and SASG")
    by_epoch = skips.pivot_table(index="epoch", columns="method", values="skip_ratio") * 100
    by_epoch = by_epoch.loc[sampled(by_epoch.index.tolist())].reset_index().rename(columns=LABELS)
    idle = "% of worker-iterations without upload"
    tables = {
        "summary": (results(table, mean), "Results per method (mean ± std over seeds)"),
        "per_seed": (table, "Per run"),
        "skip_ratio_by_epoch": (by_epoch, f"Skip ratio by epoch ({idle})"),
    }
    facts = {"target": f"{100 * target:.2f}"}
    return Findings(claims(mean), [], tables, figures, facts, {"skip_ratio": skips})


STUDY = Study(
    name="sasg",
    title="Reproduction: SASG (Deng et al., arXiv 2112.04088)",
    paper_source="the SASG authors' logs (60k MNIST, 5 seeds), recomputed by the spec",
    plan=plan,
    findings=findings,
)

"""``lowcomm reproduce sasg``: SASG against LASG, top-k with memory and SGD, declared.

The setting mirrors the SASG authors' MNIST notebook (Deng et al., arXiv 2112.04088); the
setup, the measures and the departures are in ``notes/sasg.md``. Each claim is judged on means
over seeds; the thresholds are the constants below, fixed before measuring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.spec import parse_data_spec
from lowcomm.experiments.config import make_config
from lowcomm.experiments.measures import first_reach
from lowcomm.experiments.plots import seed_band
from lowcomm.experiments.reproduce.report import Claim, Request, mean_std, number
from lowcomm.experiments.reproduce.runs import SavedRun
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import Findings, Job, Key, Output, Plan, Study, datasets_root

TARGET_PERCENT = 70  # the target is SGD's accuracy at this share of its rounds
MAX_UPLOAD_RATIO = 0.6  # claim 2: SASG uploads <= 0.6 x SGD's
MIN_BIT_SAVING = 80  # claim 3: SASG bits <= 1/80 of SGD's
MAX_ACCURACY_GAP = 0.5  # claim 4: |SASG - SGD| final test accuracy, in points
LABELS = {"sgd": "SGD", "topk-ef": "Top-k with memory", "lasg": "LASG", "sasg": "SASG"}
LAZY = ("lasg", "sasg")


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
    mnist = datasets_root() / "mnist"
    if quick:
        return "digits", ""
    if mnist.is_dir():
        return f"mnist:{mnist}", ""
    return "digits", f"{mnist} not found: the full study runs on digits instead of MNIST."


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
    jobs = [
        Job(
            (m, f"seed{s}"),
            make_config(
                base | {"algorithm": m, "options": options(m, sizes.batch_size)}
            ).model_copy(update={"seed": s, "rounds": rounds}),
        )
        for m in LABELS
        for s in seeds
    ]
    facts = {
        "data": data,
        "hidden": "-".join(map(str, hidden)),
        "dim": f"{first.problem.dim:,}",
        "n_train": first.data.train.n,
        "n_test": first.data.test.n,
        "epochs": epochs,
        "rounds": rounds,
        "seeds": ",".join(map(str, seeds)),
        "workers": sizes.workers,
        "batch_size": sizes.batch_size,
        "eval_every": sizes.eval_every,
        "target_round": target_round(rounds, sizes.eval_every),
        "target_percent": TARGET_PERCENT,
    }
    return Plan(jobs, facts, note)


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
    outputs: Mapping[Key, Output], target: float, facts: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run: its costs to reach ``target``, final state and skip ratio."""
    rows, skips = [], []
    for (method, seed), run in outputs.items():
        assert isinstance(run, SavedRun)
        last, hit = run.history.iloc[-1], costs_to_target(run.history, target)
        uploads = round_uploads(run.ledger(), facts["rounds"])
        rows.append(
            {
                "method": method,
                "seed": int(seed.removeprefix("seed")),
                "round_to_target": hit["round"],
                "uploads_to_target": hit["uploads"],
                "bits_to_target": hit["bits"],
                "final_accuracy": float(last["test_metric"]),
                "final_train_loss": float(last["train_loss"]),
                "bits_per_upload": 8.0 * float(last["bytes_up"]) / max(int(last["uploads"]), 1),
                "skip_ratio": 1.0 - float(uploads.mean()) / facts["workers"],
                "wall_time": float(last["wall_time"]),
                "diverged": run.diverged,
            }
        )
        if method in LAZY:
            by_epoch = skip_by_epoch(
                uploads, facts["workers"], facts["batch_size"], facts["n_train"]
            )
            skips.append(
                by_epoch.rename("skip_ratio")
                .reset_index()
                .assign(method=method, seed=rows[-1]["seed"])
            )
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

    def shown(value: float) -> str:
        return "not reached" if math.isnan(value) else number(value)

    return [
        Claim(
            "SASG needs fewer uploads than LASG, and LASG fewer than SGD, to reach the target",
            "SASG 23,775 < LASG 34,269 < SGD 61,000 (to 98%)",
            "uploads to target: SASG < LASG < SGD",
            f"SASG {shown(up['sasg'])}, LASG {shown(up['lasg'])}, SGD {shown(up['sgd'])}",
            bool(up["sasg"] < up["lasg"] < up["sgd"]),
        ),
        Claim(
            "SASG cuts SGD's uploads substantially",
            "0.39x (-61%)",
            f"SASG uploads <= {MAX_UPLOAD_RATIO}x SGD's",
            "-" if math.isnan(ratio) else f"{ratio:.3f}x",
            bool(ratio <= MAX_UPLOAD_RATIO),
        ),
        Claim(
            "SASG sends far fewer bits than SGD",
            "about 128x fewer (99.3 GB -> 0.77 GB)",
            f"SASG uplink bits <= 1/{MIN_BIT_SAVING} of SGD's",
            f"{number(saving)}x fewer ({number(bits['sasg'] / 1e6)} vs "
            f"{number(bits['sgd'] / 1e6)} Mbit)",
            bool(bits["sasg"] * MIN_BIT_SAVING <= bits["sgd"]),
        ),
        Claim(
            "SASG keeps SGD's final accuracy",
            "SASG 98.06-98.24% vs SGD 98.09-98.27% after 20 epochs",
            f"final test accuracy within {MAX_ACCURACY_GAP} points of SGD's",
            f"SASG {100 * acc['sasg']:.2f}%, SGD {100 * acc['sgd']:.2f}% ({gap:+.2f} points)",
            bool(abs(gap) <= MAX_ACCURACY_GAP),
        ),
    ]


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


def curves(outputs: Mapping[Key, Output], x: str, y: str, title: str, target: float) -> Figure:
    """Every method's ``y`` against ``x``: mean over seeds with a min-max band."""
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    for method, label in LABELS.items():
        histories = [
            run.history.assign(
                accuracy=100 * run.history["test_metric"], bits=8.0 * run.history["bytes_up"]
            )
            for (m, _), run in outputs.items()
            if m == method and isinstance(run, SavedRun)
        ]
        band = seed_band(histories, x, y)
        band = band.loc[band["x"] > 0] if x == "bits" else band
        (line,) = ax.plot(band["x"], band["mean"], label=label, marker=".")
        ax.fill_between(band["x"], band["low"], band["high"], color=line.get_color(), alpha=0.2)
    if y == "accuracy":
        ax.axhline(100 * target, color="gray", linestyle="--", label="target")
        ax.set_ylim(max(0.0, 100 * target - 10), 100.0)
    else:
        ax.set_yscale("log")
    if x == "bits":
        ax.set_xscale("log")
    ax.set(title=title, xlabel=x, ylabel=y)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return figure


def skip_figure(skips: pd.DataFrame, title: str) -> Figure:
    """Skip ratio by epoch of LASG and SASG (mean over seeds)."""
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    for method in LAZY:
        mine = skips.loc[skips["method"] == method].groupby("epoch")["skip_ratio"].mean()
        ax.plot(mine.index, 100 * mine, marker=".", label=LABELS[method])
    ax.set(
        title=title,
        xlabel="epoch",
        ylabel="skipped uploads (% of worker-iterations)",
        ylim=(0.0, 100.0),
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    return figure


def sampled(epochs: Sequence[int], most: int = 20) -> list[int]:
    """At most about ``most`` evenly spaced epochs, the first and the last included."""
    picked = list(epochs[:: math.ceil(len(epochs) / most)])
    return picked if picked[-1] == epochs[-1] else [*picked, epochs[-1]]


def findings(plan: Plan, outputs: Mapping[Key, Output]) -> Findings:
    """Target, costs to target, skip ratios, the four claims and the figures."""
    facts = plan.facts
    at = facts["target_round"]
    sgd = [
        run.history.set_index("round")["test_metric"].get(at, math.nan)
        for (m, _), run in outputs.items()
        if m == "sgd" and isinstance(run, SavedRun)
    ]
    target = float(np.mean(sgd))
    table, skips = per_seed(outputs, target, facts)
    mean = seed_means(table)
    title = (
        f"{parse_data_spec(facts['data']).kind}, MLP {facts['hidden']}, {facts['workers']} workers"
    )
    figures = {
        "accuracy-uploads": (
            curves(outputs, "uploads", "accuracy", title, target),
            "Test accuracy (%) against uploads (mean over seeds, min-max band)",
        ),
        "accuracy-bits": (
            curves(outputs, "bits", "accuracy", title, target),
            "Test accuracy (%) against uplink bits (log scale)",
        ),
        "skip-ratio": (skip_figure(skips, title), "Skip ratio by epoch of LASG and SASG"),
        "train-loss": (
            curves(outputs, "round", "train_loss", title, target),
            "Training loss against iterations",
        ),
    }
    by_epoch = skips.pivot_table(index="epoch", columns="method", values="skip_ratio") * 100
    return Findings(
        claims(mean),
        tables={
            "summary": (results(table, mean), "Results per method (mean ± std over seeds)"),
            "per_seed": (table, "Per run"),
            "skip_ratio_by_epoch": (
                by_epoch.loc[sampled(by_epoch.index.tolist())].reset_index().rename(columns=LABELS),
                "Skip ratio by epoch (% of worker-iterations without upload)",
            ),
        },
        figures=figures,
        facts={"target": f"{100 * target:.2f}"},
        files={"skip_ratio": skips},
    )


STUDY = Study(
    name="sasg",
    title="Reproduction: SASG (Deng et al., arXiv 2112.04088)",
    paper_source="the SASG authors' logs (60k MNIST, 5 seeds), recomputed by the spec",
    plan=plan,
    findings=findings,
)

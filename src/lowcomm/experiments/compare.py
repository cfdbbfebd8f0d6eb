"""Compare algorithms on the same data, partition and seeds: runs, overlaid plots, a summary.

Layout of a comparison folder ``OUT``:

- ``OUT/<algorithm>/seed<k>/``: each run, as written by :func:`save_run` (a variant's folder
  is named by :func:`~lowcomm.experiments.variants.folder_name`, e.g. ``sgd_lr=0.1``);
- ``OUT/summary.csv``: one row per algorithm or variant (see :func:`summarize`);
- ``OUT/compare.json``: the algorithms, seeds, options, target loss and shared settings;
- ``OUT/compare.png`` (four panels) and ``OUT/compare-<x>.png`` for x in round, bytes,
  grad_evals and sim_time: training loss against each, mean over seeds with a min-max band,
  and the target loss as a dashed line.

An entry of ``algorithms`` is a name or a variant ``NAME[KEY=VALUE,...]`` labelled by its
settings (:mod:`lowcomm.experiments.variants`). A variant's options are, by precedence: its
bracket (or grid) settings, then ``ALGORITHM.KEY`` options, then ``KEY`` options.

``OUT`` is locked while a comparison writes it, and a comparison is not written over another
(or over a run in one of its run folders) unless ``overwrite`` is given
(:mod:`lowcomm.experiments.run_folder`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.config import RunConfig, make_config
from lowcomm.experiments.execution import Result, run_config
from lowcomm.experiments.measures import first_reach
from lowcomm.experiments.models import Objects
from lowcomm.experiments.plots import plot_runs, title
from lowcomm.experiments.results import load_history, mean_history, read_json, write_json
from lowcomm.experiments.run_folder import COMPARE_JSON, check_new, check_out, hold, remove
from lowcomm.experiments.runner import check_participation, prepare
from lowcomm.experiments.tracking import run_subfolder
from lowcomm.experiments.variants import (
    OWNER,
    Variant,
    algorithm_names,
    check_algorithms,
    folder_name,
)

SUMMARY_CSV = "summary.csv"
FIGURE = "compare.png"
COMPARE_FILES = (COMPARE_JSON, SUMMARY_CSV, FIGURE, "compare-*.png")
REACH_KEYS = ("rounds", "uploads", "bytes", "grad_evals", "sim_time")
_SEED_FOLDER = re.compile(r"seed\d+")


def reach(history: pd.DataFrame, target: float) -> dict[str, float]:
    """What a run had spent when its training loss first reached ``target``.

    Returns:
        From the first row with ``train_loss <= target``: ``rounds``, ``uploads``, ``bytes``
        (up + down), ``grad_evals`` and ``sim_time`` (cumulative); all NaN when no row does.
    """
    index = first_reach(history["train_loss"], target)
    if index is None:
        return dict.fromkeys(REACH_KEYS, math.nan)
    row = history.iloc[index]
    return {
        "rounds": float(row["round"]),
        "uploads": float(row["uploads"]),
        "bytes": float(row["bytes_up"] + row["bytes_down"]),
        "grad_evals": float(row["grad_evals"]),
        "sim_time": float(row["sim_time"]),
    }


def automatic_target(means: Iterable[pd.DataFrame]) -> float:
    """The largest final training loss among mean curves: a loss that each of them reaches.

    Curves ending on a non-finite loss (diverged) are left out; NaN if no curve is left.
    """
    finals = [float(mean["train_loss"].iloc[-1]) for mean in means]
    finite = [loss for loss in finals if math.isfinite(loss)]
    return max(finite) if finite else math.nan


def summarize(
    histories: Mapping[str, Sequence[pd.DataFrame]], target_loss: float | None
) -> pd.DataFrame:
    """One row per algorithm, computed on its mean curve over seeds.

    Columns: ``algorithm``, ``seeds``, ``target_loss``, ``<x>_to_target`` for x in
    :data:`REACH_KEYS` (NaN when the mean curve never reaches the target), ``final_round``,
    ``final_train_loss`` and ``final_test_metric``.

    Args:
        histories: per algorithm, the histories of its seeds.
        target_loss: the target; None for :func:`automatic_target`.
    """
    means = {name: mean_history(runs) for name, runs in histories.items()}
    target = automatic_target(means.values()) if target_loss is None else target_loss
    rows = []
    for name, mean in means.items():
        last = mean.iloc[-1]
        spent = {f"{key}_to_target": value for key, value in reach(mean, target).items()}
        rows.append(
            {"algorithm": name, "seeds": len(histories[name]), "target_loss": target, **spent}
            | {
                "final_round": int(last["round"]),
                "final_train_loss": float(last["train_loss"]),
                "final_test_metric": float(last["test_metric"]),
            }
        )
    return pd.DataFrame(rows)


def _check(
    base: RunConfig,
    algorithms: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    target_loss: float | None,
) -> list[Variant]:
    """Refuse what no single run would catch: the choices of the comparison itself."""
    variants = check_algorithms(algorithms)
    if base.engine != "simulate":
        allowed = "'simulate' (compare runs everything in this process)"
        raise InvalidConfigError("engine", OWNER, allowed, base.engine)
    if not seeds or len(set(seeds)) < len(seeds):
        raise InvalidConfigError("seeds", OWNER, "distinct integers >= 0", list(seeds))
    finite = isinstance(target_loss, int | float) and math.isfinite(target_loss)
    if target_loss is not None and not finite:
        raise InvalidConfigError("target_loss", OWNER, "a finite number", target_loss)
    names = algorithm_names(algorithms)
    strangers = sorted(set(options) - set(names))
    if strangers:
        allowed = f"options of compared algorithms ({', '.join(names)})"
        raise InvalidConfigError("options", OWNER, allowed, strangers[0])
    return variants


def _configs(
    base: RunConfig,
    variants: Sequence[Variant],
    options: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    objects: Objects | None,
) -> dict[tuple[str, int], RunConfig]:
    """Every run's config by (label, seed), all validated (every seed's data and partition too).

    A variant's settings win over its algorithm's ``options``.
    """
    values = base.model_dump()
    configs = {
        (v.label, seed): make_config(
            values
            | {"algorithm": v.algorithm, "seed": seed}
            | {"options": {**options.get(v.algorithm, {}), **v.settings}}
        )
        for v in variants
        for seed in seeds
    }
    for (label, _), config in configs.items():
        _build(label, config)
    for seed in seeds:
        prepare(configs[variants[0].label, seed], objects)
    return configs


def _build(label: str, config: RunConfig) -> None:
    """Build a run's algorithm, check its participation; a variant's errors start with its label."""
    try:
        build_algorithm(config.algorithm, config.options)
        check_participation(config)
    except InvalidConfigError as exc:
        if label != config.algorithm:
            exc.args = (f"{label}: {exc}",)
        raise


@dataclass(frozen=True)
class Comparison:
    """The summary table (see :func:`compare`) and every run, per label in seed order."""

    summary: pd.DataFrame
    runs: dict[str, list[Result]]


def compare(
    base: RunConfig,
    algorithms: list[str],
    options_per_algorithm: dict[str, dict[str, Any]],
    seeds: list[int],
    out: Path | None,
    target_loss: float | None,
    progress: bool = False,
    objects: Objects | None = None,
    overwrite: bool = False,
) -> Comparison:
    """Run every algorithm on every seed with ``base``'s settings; write runs, plots, summary.

    Everything is validated before the first run starts. A run that diverges is kept up to
    its divergence and counted in the summary's ``diverged`` column.

    Args:
        base: the shared settings; its ``algorithm``, ``options`` and ``seed`` are ignored.
        algorithms: registered algorithm names or variants ``NAME[KEY=VALUE,...]``
            (:mod:`lowcomm.experiments.variants`), in the order of the summary and legends.
        options_per_algorithm: each algorithm's options (see :func:`resolve_options`); a
            variant's bracket settings win over them.
        seeds: one run per algorithm (or variant) and seed.
        out: the comparison folder (layout in the module docstring); None writes nothing.
        target_loss: the target of the ``*_to_target`` columns; None for
            :func:`automatic_target`.
        progress: show a progress bar per run on stderr.
        objects: data, module and loss given as Python objects, shared by every run.
        overwrite: replace the comparison in ``out`` (refused otherwise, as are its run folders
            that hold a run).

    Returns:
        The summary (written to ``summary.csv``; see :func:`summarize`; its ``algorithm``
        column holds the labels) plus ``diverged``, the number of seeds on which each
        algorithm diverged, and the runs.
    """
    if out is not None:
        check_out(out)
    variants = _check(base, algorithms, options_per_algorithm, seeds, target_loss)
    labels = [variant.label for variant in variants]
    _check_new(out, labels, seeds, overwrite)
    configs = _configs(base, variants, options_per_algorithm, seeds, objects)
    with hold(out):
        _check_new(out, labels, seeds, overwrite)  # again, now that no one else writes it
        if out is not None and overwrite:
            remove(out, COMPARE_FILES)
        runs = _run_all(configs, objects, out, progress, overwrite)
        histories = {name: [r.history for r in results] for name, results in runs.items()}
        diverged = [sum(r.divergence is not None for r in results) for results in runs.values()]
        table = summarize(histories, target_loss).assign(diverged=diverged)
        if out is not None:
            table.to_csv(out / SUMMARY_CSV, index=False)
            shared = _write_info(out, base, configs, table, target_loss is not None)
            metric = str(next(iter(runs.values()))[0].metadata["problem"]["metric"])
            target = float(table["target_loss"].iloc[0])
            plot_runs(histories, out / FIGURE, title=title(shared), metric=metric, target=target)
    return Comparison(table, runs)


def _run_folder(out: Path, label: str, seed: int) -> Path:
    """The run folder of ``label`` on ``seed`` in the comparison folder ``out``."""
    return out / folder_name(label) / f"seed{seed}"


def _check_new(out: Path | None, labels: list[str], seeds: list[int], overwrite: bool) -> None:
    """Refuse to write over a comparison, or a run in a run folder, unless ``overwrite``."""
    if out is None:
        return
    check_new(out, overwrite, kind="comparison")
    for label in labels:
        for seed in seeds:
            check_new(_run_folder(out, label, seed), overwrite)


def _run_all(
    configs: Mapping[tuple[str, int], RunConfig],
    objects: Objects | None,
    out: Path | None,
    progress: bool,
    overwrite: bool,
) -> dict[str, list[Result]]:
    """Every run, per label in seed order, each saved in its folder of ``out``."""
    runs: dict[str, list[Result]] = {}
    for (name, seed), config in configs.items():
        folder = None if out is None else _run_folder(out, name, seed)
        with run_subfolder(f"{folder_name(name)}/seed{seed}"):
            result = run_config(config, objects, folder, progress=progress, overwrite=overwrite)
        assert result is not None, "the simulate engine always returns a result"
        runs.setdefault(name, []).append(result)
    return runs


def _write_info(
    out: Path,
    base: RunConfig,
    configs: Mapping[tuple[str, int], RunConfig],
    table: pd.DataFrame,
    given: bool,
) -> dict[str, Any]:
    """Write ``compare.json``; return the shared settings it holds."""
    shared = base.model_dump(mode="json", exclude={"algorithm", "options", "seed"})
    info = {
        "algorithms": list(dict.fromkeys(name for name, _ in configs)),
        "seeds": list(dict.fromkeys(seed for _, seed in configs)),
        "options": {name: config.options for (name, _), config in configs.items()},
        "target_loss": float(table["target_loss"].iloc[0]),
        "target_rule": "given" if given else "automatic",
        "config": shared,
    }
    write_json(out / COMPARE_JSON, info)
    return shared


def is_comparison(folder: Path) -> bool:
    """Whether ``folder`` was written by :func:`compare`."""
    return (folder / COMPARE_JSON).is_file()


def load_runs(folders: Sequence[Path]) -> tuple[dict[str, list[pd.DataFrame]], dict[str, Any]]:
    """Saved histories grouped by label, and what the first folder says about them.

    A comparison folder contributes one label per algorithm or variant with all its seeds. A
    run folder named ``seed<k>`` is labelled by its parent folder (so ``OUT/sgd/seed0
    OUT/sgd/seed1`` are two seeds of ``sgd``); any other run folder by its own name.

    Returns:
        The histories and, from the first folder: ``config`` (its settings, for titles),
        ``metric`` (the test metric's name) and ``target_loss`` (a comparison's, else None).

    Raises:
        DataError: a folder is neither a run folder nor a comparison folder.
    """
    runs: dict[str, list[pd.DataFrame]] = {}
    about: list[dict[str, Any]] = []
    for folder in folders:
        if is_comparison(folder):
            info = read_json(folder / COMPARE_JSON)
            for name in info["algorithms"]:
                for seed in info["seeds"]:
                    history, meta = load_history(_run_folder(folder, name, seed))
                    runs.setdefault(name, []).append(history)
            about.append(_about(info.get("config", {}), meta, info.get("target_loss")))
            continue
        history, meta = load_history(folder)
        about.append(_about(meta.get("config", {}), meta, None))
        named = folder.resolve()
        label = named.parent.name if _SEED_FOLDER.fullmatch(named.name) else named.name
        runs.setdefault(label, []).append(history)
    return runs, about[0] if about else _about({}, {}, None)


def _about(config: dict[str, Any], meta: Mapping[str, Any], target: Any) -> dict[str, Any]:
    """Settings, test metric name and target loss (a number or None) of saved runs."""
    metric = meta.get("problem", {}).get("metric", "metric")
    target_loss = float(target) if isinstance(target, int | float | str) else None
    return {"config": config, "metric": metric, "target_loss": target_loss}


def plot_folders(folders: Sequence[Path], path: Path, y: str) -> list[Path]:
    """Draw the runs saved in ``folders`` (see :func:`load_runs`); the paths written.

    Raises:
        InvalidConfigError: a history lacks the column ``y``.
    """
    runs, about = load_runs(folders)
    for name, histories in runs.items():
        if any(y not in h.columns for h in histories):
            raise InvalidConfigError("y", "lowcomm plot", f"a history column of {name}", y)
    return plot_runs(runs, path, y, title(about["config"]), about["metric"], about["target_loss"])

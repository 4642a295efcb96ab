"""Summaries and comparisons of the CV runs that `run_pipeline.py --cv K` writes (docs/cross-validation.md).

For each modality set it reads every fold's GNN folder, the predictions of the systems trained beside
it and the encoder's own test predictions, and reports at segment level every system of systems.py (the
majority baseline, the encoder alone, the temporal baseline, the classical system and the GNN): per fold,
mean ± sd over folds (sample sd, ddof=1), and pooled over every tested session with session-bootstrap 95%
intervals and the paired differences GNN − encoder, GNN − temporal and GNN − classical (`summarise`; no
interval below config.CV's fewest sessions). Also the tables across seeds (`seeds_summary`,
`seed_differences`), the modality ablation (`ablation_summary`: the GNN's inputs swapped on one encoder
trained on all modalities) and the paired comparison of two runs over the same folds, on every seed both
have:

    python cv_results.py --compare A B [--modalities prosody,audio,eda,temp] [--suffix_b _ciy]
                          [--modalities_b audio,eda,temp]

Every folder and file name it reads or writes comes from encoder/core/layout.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config, extraction, layout, metrics, plots, util
from temporal_gnn import systems
from temporal_gnn.model_folder import GNN_METRICS_FILE, GNN_PREDICTIONS_FILE

KEYS = ("accuracy", "macro_f1", "weighted_f1")
N_BOOT = config.CV["bootstrap_resamples"]


def prediction_files(fold_dir: Path, gnn: str, features_dir: Path | None = None) -> dict[str, Path]:
    """Where a fold keeps each system's test predictions, written or not: the encoder's in `features_dir`
    (default fold_dir/features), every trained system's and the GNN's in the GNN folder `gnn`."""
    fold_dir = Path(fold_dir)
    features_dir = fold_dir / "features" if features_dir is None else Path(features_dir)
    return {"encoder": features_dir / extraction.PREDICTIONS_FILE,
            **{system.name: fold_dir / gnn / system.predictions for system in systems.trained()},
            systems.GNN: fold_dir / gnn / GNN_PREDICTIONS_FILE}


def fold_predictions(fold_dir: Path, gnn: str, features_dir: Path | None = None) -> dict[str, Any]:
    """Test segments of one fold with each system's prediction (systems.registered()), aligned on the GNN's
    segment order. A trained system whose predictions file the fold lacks is left out (`predictions` then
    lacks it). `features_dir`: where the encoder's test predictions are (default fold_dir/features)."""
    fold_dir = Path(fold_dir)
    gnn_metrics = util.read_json(fold_dir / gnn / GNN_METRICS_FILE)
    files = prediction_files(fold_dir, gnn, features_dir)
    gnn_pred = metrics.read_segment_predictions(files.pop(systems.GNN))
    sources = {name: path for name, path in files.items() if name == "encoder" or path.is_file()}
    majority = config.EMOTIONS.index(gnn_metrics["baselines"]["majority"]["class"])
    predictions = {"majority": np.full(len(gnn_pred["targets"]), majority)}
    for system in systems.registered():
        if system.name in sources:
            path = sources[system.name]
            predictions[system.name] = aligned_predictions(metrics.read_segment_predictions(path),
                                                           gnn_pred["segment_ids"], system.name, path)
    predictions[systems.GNN] = gnn_pred["predictions"]
    return {
        "segment_ids": gnn_pred["segment_ids"],
        "sessions": gnn_pred["sessions"],
        "targets": gnn_pred["targets"],
        "predictions": predictions,
    }


def pooled_predictions(fold_dirs: Sequence[Path], gnn: str) -> dict[str, Any]:
    """The folds' test segments pooled (fold_predictions of each, in fold order): segment IDs, sessions, targets and
    the predictions of every system that all the folds have."""
    parts = [fold_predictions(Path(d), gnn) for d in fold_dirs]
    names = set.intersection(*(set(part["predictions"]) for part in parts))
    return {"segment_ids": np.concatenate([part["segment_ids"] for part in parts]),
            "sessions": np.concatenate([part["sessions"] for part in parts]),
            "targets": np.concatenate([part["targets"] for part in parts]),
            "predictions": {n: np.concatenate([part["predictions"][n] for part in parts]) for n in names}}


def aligned_predictions(system: dict[str, Any], segment_ids: Sequence[str], name: str, path: Path) -> np.ndarray:
    """A system's segment predictions in the order of `segment_ids` (the GNN's); DataError when the two
    hold different segments."""
    by_id = dict(zip(system["segment_ids"], system["predictions"], strict=True))
    missing = [s for s in segment_ids if s not in by_id]
    if missing or len(by_id) != len(segment_ids):
        raise util.DataError(f"{name} and GNN test segments differ (e.g. {missing[:1]}); rerun the fold", path)
    return np.array([by_id[s] for s in segment_ids], dtype=int)


def summarise(fold_dirs: Sequence[Path], modalities: str, seed: int = config.SEED, n_boot: int = N_BOOT,
              unusable_sessions: Sequence[int] = (), suffix: str = "") -> dict[str, Any]:
    """Per-fold and pooled segment-level figures of a CV run for one modality set (see the module
    docstring). `unusable_sessions`: sessions of the data without a usable segment, in no fold;
    `suffix`: of the GNN folders read (layout.gnn_folder) and of the summary files written (layout.summary_files)."""
    gnn = layout.gnn_folder(modalities, suffix)
    preds = [fold_predictions(Path(fold_dir), gnn) for fold_dir in fold_dirs]
    notes = []
    for system in systems.trained():
        lacking = [str(Path(d) / gnn) for d, p in zip(fold_dirs, preds, strict=True)
                   if system.name not in p["predictions"]]
        if lacking:
            notes.append(f"no {system.name} baseline ({system.predictions}) in {', '.join(lacking)}: trained before "
                         f"it existed or with --no_{system.name}; the {system.name} row and GNN − {system.name} are "
                         "left out (rerun those folds' train_val to get them)")
    shown = tuple(name for name in systems.names() if all(name in p["predictions"] for p in preds))
    folds, pooled_parts = [], []
    for k, (fold_dir, pred) in enumerate(zip(map(Path, fold_dirs), preds, strict=True)):
        assigned = util.read_json(fold_dir / layout.SPLITS_FILE)
        tested = sorted(int(s) for s in np.unique(pred["sessions"]))
        stray = sorted(set(tested) - set(assigned["test"]))
        if stray:
            raise util.DataError(f"test predictions of sessions {stray}, not this fold's test sessions "
                                 f"{assigned['test']}; rerun the fold", fold_dir / gnn)
        scores = {name: _scores(pred["targets"], pred["predictions"][name]) for name in shown}
        folds.append({"fold": k, "train_sessions": assigned["train"], "val_sessions": assigned["val"],
                      "test_sessions": assigned["test"], "tested_sessions": tested,
                      "n_segments": len(pred["targets"]),
                      "classes_present": [config.EMOTIONS[c] for c in np.unique(pred["targets"])],
                      "segment": scores})
        pooled_parts.append(pred)
    sessions = np.concatenate([p["sessions"] for p in pooled_parts])
    targets = np.concatenate([p["targets"] for p in pooled_parts])
    predictions = {name: np.concatenate([p["predictions"][name] for p in pooled_parts]) for name in shown}
    tested = sorted(int(s) for s in np.unique(sessions))  # the bootstrap's groups: sessions with a test segment
    assigned_tests = {int(s) for f in folds for s in f["test_sessions"]}
    pooled = pooled_figures(sessions, targets, predictions, n_boot, seed)
    gnn_all = metrics.classification_metrics(targets, predictions["gnn"])
    return {
        "k": len(fold_dirs),
        "modalities": modalities,
        "suffix": suffix,
        "systems": list(shown),
        "folds": folds,
        "mean_std": {name: {key: list(metrics.mean_sd([f["segment"][name][key] for f in folds])) for key in KEYS}
                     for name in shown},
        "pooled": pooled,
        "pooled_gnn": {"per_class": gnn_all["per_class"], "confusion": gnn_all["confusion"],
                       "macro_f1_7class": gnn_all["macro_f1_7class"], "classes_present": gnn_all["classes_present"]},
        "tested_sessions": tested,
        "not_tested_sessions": sorted((assigned_tests - set(tested)) | {int(s) for s in unusable_sessions}),
        "bootstrap": _bootstrap_record(n_boot, len(tested), len(targets), seed),
        "metric": "segment level; macro_f1 over the classes present in the evaluated truth (in every resample: "
                  "the pooled truth's); mean_std: mean and sample sd (ddof=1) over folds",
        "notes": notes,
    }


def pooled_figures(sessions: np.ndarray, targets: np.ndarray, predictions: dict[str, np.ndarray],
                   n_boot: int = N_BOOT, seed: int = config.SEED) -> dict[str, Any]:
    """Per system (the keys of `predictions`, which holds "gnn"): macro-F1 with its session-bootstrap
    interval, accuracy, weighted-F1 and what they cover; and the paired differences to the GNN
    (systems.differences())."""
    n_sessions = len(np.unique(sessions))
    pooled: dict[str, Any] = {}
    for name, y in predictions.items():
        pooled[name] = {**pooled_macro_f1(sessions, targets, y, n_boot, seed),
                        **{k: v for k, v in _scores(targets, y).items() if k != "macro_f1"},
                        "n_segments": len(targets), "n_sessions": n_sessions}
    for key, other in systems.differences().items():
        if other in predictions:
            pooled[key] = paired_difference(sessions, targets, predictions["gnn"], predictions[other], n_boot, seed)
    return pooled


def _bootstrap_record(n_boot: int, n_sessions: int, n_segments: int, seed: int) -> dict[str, Any]:
    """What the pooled intervals are, as written in the summaries' JSON."""
    return {"resamples": n_boot, "unit": "session", "n_sessions": n_sessions, "n_segments": n_segments, "seed": seed,
            "interval": "percentile, 95%", "min_sessions": metrics.MIN_SESSIONS_FOR_INTERVAL,
            "classes": "every resample's macro-F1 averages over the classes of the full pooled truth"}


def pooled_macro_f1(sessions: np.ndarray, targets: np.ndarray, predictions: np.ndarray, n_boot: int = N_BOOT,
                    seed: int = config.SEED) -> dict[str, Any]:
    """Macro-F1 of `predictions` on all the segments, with its 95% session-bootstrap interval (None
    below metrics.MIN_SESSIONS_FOR_INTERVAL sessions); every resample averages over the full truth's classes."""
    labels = np.unique(targets)
    interval = metrics.session_bootstrap(
        sessions, lambda idx: metrics.macro_f1(targets[idx], predictions[idx], labels), n_boot, seed)
    return {"macro_f1": interval["estimate"], "ci95": interval["ci95"]}


def paired_difference(sessions: np.ndarray, targets: np.ndarray, first: np.ndarray, second: np.ndarray,
                      n_boot: int = N_BOOT, seed: int = config.SEED) -> dict[str, Any]:
    """Macro-F1 of `first` minus that of `second` on the same segments, with a 95% interval from one
    session bootstrap that resamples the same sessions for both (paired; None below
    metrics.MIN_SESSIONS_FOR_INTERVAL sessions); every resample averages over the full truth's classes."""
    labels = np.unique(targets)

    def statistic(idx: np.ndarray) -> float:
        return metrics.macro_f1(targets[idx], first[idx], labels) - metrics.macro_f1(targets[idx], second[idx], labels)

    difference = metrics.session_bootstrap(sessions, statistic, n_boot, seed)
    return {"macro_f1": difference["estimate"], "ci95": difference["ci95"], "paired": True}


def mean_paired_difference(sessions: np.ndarray, targets: np.ndarray,
                           pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = N_BOOT,
                           seed: int = config.SEED) -> dict[str, Any]:
    """The mean over `pairs` (one per seed: `first`, `second`) of macro-F1 of `first` minus that of `second` on the
    same segments, with a 95% interval from one session bootstrap whose every resample draws the same sessions
    for every pair and averages their differences on them (None below metrics.MIN_SESSIONS_FOR_INTERVAL
    sessions); every resample averages over the full truth's classes."""
    labels = np.unique(targets)

    def statistic(idx: np.ndarray) -> float:
        return float(np.mean([metrics.macro_f1(targets[idx], first[idx], labels)
                              - metrics.macro_f1(targets[idx], second[idx], labels) for first, second in pairs]))

    interval = metrics.session_bootstrap(sessions, statistic, n_boot, seed)
    return {"macro_f1": interval["estimate"], "ci95": interval["ci95"]}


def _scores(targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    full = metrics.classification_metrics(targets, predictions)
    return {key: full[key] for key in KEYS}


def format_summary(summary: dict[str, Any]) -> str:
    """Per-fold macro-F1, mean ± sd (ddof=1) and the pooled figure with its interval, one row per system."""
    n_sessions = summary["bootstrap"]["n_sessions"]
    header = f"{'':10}" + "".join(f"  fold {f['fold']:<4}" for f in summary["folds"])
    header += f"  {metrics.SD_CONVENTION:19}pooled macro-F1 [95% CI, sessions resampled]"
    lines = [f"session {summary['k']}-fold CV, segment level, macro-F1 (test sessions per fold: "
             + "; ".join(f"{f['test_sessions']}" for f in summary["folds"]) + ")", header]
    for name in summary["systems"]:
        row = f"{name:10}" + "".join(f"  {f['segment'][name]['macro_f1']:9.4f}" for f in summary["folds"])
        mean, sd = summary["mean_std"][name]["macro_f1"]
        row += f"  {mean:.4f} ± {'n/a' if sd is None else f'{sd:.4f}':6}    "
        row += metrics.format_estimate(summary["pooled"][name], n_sessions)
        lines.append(row)
    for key, other in systems.differences().items():
        if key in summary["pooled"]:
            diff = metrics.format_estimate(summary["pooled"][key], n_sessions, "+")
            lines.append(f"GNN − {other} (pooled, paired): {diff} over {n_sessions} sessions")
    not_tested = summary["not_tested_sessions"]
    lines.append(f"pooled figures cover {summary['bootstrap']['n_sessions']} sessions and "
                 f"{summary['bootstrap']['n_segments']} segments (modalities {summary['modalities']})"
                 + (f"; not tested, no usable segment: sessions {not_tested}" if not_tested else ""))
    lines += [f"note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], cv_dir: Path) -> Path:
    """summary_<modalities>.json, with its two figures beside it (layout.summary_files); returns the JSON's path."""
    files = layout.summary_files(cv_dir, summary["modalities"], summary.get("suffix", ""))
    _plot_folds(summary, files["folds"])
    plots.plot_confusion(summary["pooled_gnn"]["confusion"], "GNN, all folds' test segments pooled",
                         files["confusion"])
    util.write_json(summary, files["json"])
    return files["json"]


def _plot_folds(summary: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.4 * summary["k"] + 3), 4))
    ax = fig.subplots()
    shown = summary["systems"]
    width = 0.8 / len(shown)
    colours = systems.colours()
    x = np.arange(summary["k"])
    for i, name in enumerate(shown):
        values = [f["segment"][name]["macro_f1"] for f in summary["folds"]]
        ax.bar(x + (i - (len(shown) - 1) / 2) * width, values, width, color=colours[name], label=name)
        pooled = summary["pooled"][name]
        if pooled["ci95"] is not None:
            ax.axhspan(*pooled["ci95"], color=colours[name], alpha=0.15)
        ax.axhline(pooled["macro_f1"], color=colours[name], linestyle="--", linewidth=1)
    ax.set_xticks(x, [f"fold {f['fold']}\n{','.join(map(str, f['test_sessions']))}" for f in summary["folds"]],
                  fontsize=8)
    ax.set_ylabel("segment macro-F1 (test)")
    ax.set_title("Per-fold bars; dashed line and band: pooled estimate and 95% session-bootstrap interval"
                 + ("" if summary["bootstrap"]["n_sessions"] >= metrics.MIN_SESSIONS_FOR_INTERVAL else
                    f" (none: {summary['bootstrap']['n_sessions']} sessions)"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with util.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


# --------------------------------------------------------------------------- seeds


def seed_differences(trees: Sequence[Sequence[Path]], modalities: str, suffixes: Sequence[str], n_boot: int = N_BOOT,
                     seed: int = config.SEED) -> dict[str, dict[str, Any]]:
    """The paired differences (systems.differences(): GNN − encoder, − temporal, − classical) averaged over
    seeds, each with one 95% interval from a session bootstrap that draws the same sessions for every seed
    and averages the seeds' differences on them. `trees`: each seed's fold folders (the same folds),
    `suffixes`: of each seed's GNN folders. A difference is left out when a seed lacks its system."""
    pooled = [pooled_predictions(fold_dirs, layout.gnn_folder(modalities, suffix))
              for fold_dirs, suffix in zip(trees, suffixes, strict=True)]
    first = pooled[0]
    position = {segment: i for i, segment in enumerate(first["segment_ids"])}
    for tree, fold_dirs in zip(pooled[1:], trees[1:], strict=True):
        if sorted(tree["segment_ids"]) != sorted(first["segment_ids"]):
            raise util.DataError("its test segments differ from the first seed's; the seeds need the same folds",
                                 Path(fold_dirs[0]).parent)
        order = np.argsort([position[segment] for segment in tree["segment_ids"]])
        tree["predictions"] = {n: y[order] for n, y in tree["predictions"].items()}
    out = {}
    for key, other in systems.differences().items():
        if not all(other in tree["predictions"] for tree in pooled):
            continue
        pairs = [(t["predictions"]["gnn"], t["predictions"][other]) for t in pooled]
        out[key] = {**mean_paired_difference(first["sessions"], first["targets"], pairs, n_boot, seed), "paired": True}
    return out


def seeds_summary(per_seed: Sequence[dict[str, Any]], seeds: Sequence[int], keep_encoder: bool,
                  over_seeds: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Across training seeds: per system and paired difference present in every seed, the pooled
    macro-F1 of each seed, their mean and sample sd (ddof=1), and each seed's pooled 95% interval (None
    below metrics.MIN_SESSIONS_FOR_INTERVAL test sessions); with `over_seeds` (seed_differences), a
    difference's row also holds the mean over seeds with its own paired interval.
    `per_seed`: one summary per seed (summarise's, or any dict with `systems`, `pooled`, `modalities`)."""
    if len(per_seed) != len(seeds) or len(seeds) < 2:
        raise ValueError(f"a seeds summary needs one summary per seed and at least two seeds, not {list(seeds)}")
    differences = systems.differences()
    names = [n for n in (*systems.names(), *differences) if all(n in s["pooled"] for s in per_seed)]
    rows = {}
    for name in names:
        values = [float(s["pooled"][name]["macro_f1"]) for s in per_seed]
        mean, sd = metrics.mean_sd(values)
        rows[name] = {"mean": mean, "sd": sd, "per_seed": values,
                      "ci95_per_seed": [s["pooled"][name]["ci95"] for s in per_seed]}
        if over_seeds and name in over_seeds:
            rows[name]["over_seeds"] = over_seeds[name]
    return {
        "seeds": list(seeds),
        "keep_encoder": keep_encoder,
        "modalities": per_seed[0]["modalities"],
        "systems": [n for n in names if n in systems.names()],
        "macro_f1": rows,
        "n_sessions": int(per_seed[0]["pooled"]["gnn"]["n_sessions"]),
        "statistic": "pooled segment macro-F1 of each seed; mean and sample sd (ddof=1) over seeds; ci95_per_seed: "
                     "each seed's 95% session-bootstrap interval (printed: the first seed's; null below "
                     f"{metrics.MIN_SESSIONS_FOR_INTERVAL} test sessions)",
    }


def format_seeds(summary: dict[str, Any]) -> str:
    """One row per system and paired difference: mean ± sd over seeds, the per-seed values and the first
    seed's pooled interval."""
    seeds = summary["seeds"]
    what = "the GNN and the systems trained beside it retrained" if summary["keep_encoder"] else "whole chain retrained"
    lines = [f"{len(seeds)} seeds {seeds} ({what}), pooled segment macro-F1 (modalities {summary['modalities']})",
             f"{'':20}  {metrics.SD_CONVENTION + ', seeds':28}  per seed{' ' * max(0, 9 * len(seeds) - 8)}  "
             f"first seed's estimate [95% CI, sessions resampled]"]
    for name, row in summary["macro_f1"].items():
        is_difference = name in systems.differences()
        label = name.replace("_minus_", " − ") if is_difference else name
        sign = "+" if is_difference else ""
        first = {"macro_f1": row["per_seed"][0], "ci95": row["ci95_per_seed"][0]}
        lines.append(f"{label:20}  {row['mean']:{sign}.4f} ± {row['sd']:.4f}{'':13}  "
                     + " ".join(f"{v:{sign}8.4f}" for v in row["per_seed"])
                     + f"  {metrics.format_estimate(first, summary['n_sessions'], sign)}")
    for name, row in summary["macro_f1"].items():
        if "over_seeds" in row:
            lines.append(f"{name.replace('_minus_', ' − ')}, mean over seeds [95% CI, the same sessions resampled "
                         f"for every seed]: {metrics.format_estimate(row['over_seeds'], summary['n_sessions'], '+')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- ablation


def modality_subsets(modalities: str) -> list[str]:
    """Every non-empty subset of a modality set, smallest first, in the set's order (2^n − 1 of them)."""
    names = modalities.split(",")
    return [",".join(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def ablation_summary(fold_dirs: Sequence[Path], summaries: dict[str, dict[str, Any]], full: str,
                     n_boot: int = N_BOOT, seed: int = config.SEED, suffix: str = "") -> dict[str, Any]:
    """Per modality subset (the keys of `summaries`, summarise's for each): the pooled macro-F1 with its
    interval of the GNN and of each system train_val fits on the same inputs (ablation_systems), and the
    GNN's paired difference to the GNN on all modalities (`full`), resampling the same sessions as
    gnn_minus_encoder does. Every subset's GNN reads
    the embeddings of one encoder per fold trained on all modalities: only the GNN's inputs change."""
    def pooled_gnn(modalities: str) -> list[dict[str, Any]]:
        return [fold_predictions(Path(d), layout.gnn_folder(modalities, suffix)) for d in fold_dirs]

    reference = pooled_gnn(full)
    sessions = np.concatenate([p["sessions"] for p in reference])
    targets = np.concatenate([p["targets"] for p in reference])
    y_full = np.concatenate([p["predictions"]["gnn"] for p in reference])
    rows = []
    for modalities, summary in summaries.items():
        y = np.concatenate([
            aligned_predictions({"segment_ids": p["segment_ids"], "predictions": p["predictions"]["gnn"]},
                                ref["segment_ids"], f"GNN on {modalities}",
                                Path(d) / layout.gnn_folder(modalities, suffix))
            for d, p, ref in zip(fold_dirs, pooled_gnn(modalities), reference, strict=True)])
        pooled = summary["pooled"]
        rows.append({"modalities": modalities,
                     **{name: {k: pooled[name][k] for k in ("macro_f1", "ci95")} if name in pooled else None
                        for name in ablation_systems()},
                     "gnn_minus_all": paired_difference(sessions, targets, y, y_full, n_boot, seed)})
    return {"k": len(fold_dirs), "modalities": full, "suffix": suffix, "rows": rows,
            "bootstrap": summaries[full]["bootstrap"],
            "metric": "pooled segment macro-F1; gnn_minus_all: paired, the GNN on the subset minus the GNN on "
                      f"{full}, sessions resampled",
            "design": "GNN inputs swapped on one encoder per fold trained on all modalities (not retrained per subset)"}


def ablation_systems() -> list[str]:
    """The ablation table's systems: the GNN and every system train_val.py fits on the same inputs."""
    return [systems.GNN, *(system.name for system in systems.trained())]


def format_ablation(ablation: dict[str, Any]) -> str:
    """One row per modality subset: each system's pooled macro-F1 [95% CI] (ablation_systems; "-" where a
    subset has none) and GNN − all [95% CI]."""
    n_sessions = ablation["bootstrap"]["n_sessions"]
    shown = [name for name in ablation_systems() if any(name in row for row in ablation["rows"])]
    lines = [f"modality ablation, session {ablation['k']}-fold CV, pooled segment macro-F1 [95% CI, sessions "
             f"resampled] over {n_sessions} sessions",
             "GNN inputs swapped on one encoder per fold trained on all modalities (the encoder is not retrained "
             "per subset); the classical system reads its own statistics of the subset's signals",
             f"{'GNN input':20}  " + "".join(f"{systems.get(name).label:25}  " for name in shown)
             + f"GNN − GNN on {ablation['modalities']} (paired)"]
    for row in ablation["rows"]:
        cells = []
        for entry, sign in [*((row.get(name), "") for name in shown), (row["gnn_minus_all"], "+")]:
            cells.append("-" if entry is None else metrics.format_estimate(entry, n_sessions, sign))
        lines.append(f"{row['modalities']:20}  " + "".join(f"{cell:25}  " for cell in cells[:-1]) + cells[-1])
    return "\n".join(lines)


def write_ablation(ablation: dict[str, Any], cv_dir: Path) -> Path:
    """ablation<suffix>.json and its bar plot ablation<suffix>.png in cv_dir; returns the JSON's path."""
    path = Path(cv_dir) / f"ablation{ablation['suffix']}.json"
    _plot_ablation(ablation, path.with_suffix(".png"))
    util.write_json(ablation, path)
    return path


def _plot_ablation(ablation: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = ablation["rows"]
    shown = [name for name in ablation_systems() if any(row.get(name) is not None for row in rows)]
    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(shown)
    colours = systems.colours()
    for i, system in enumerate(shown):
        offset = (i - (len(shown) - 1) / 2) * width
        kept = [j for j, r in enumerate(rows) if r.get(system) is not None]
        values = np.array([rows[j][system]["macro_f1"] for j in kept])
        ax.bar(x[kept] + offset, values, width, color=colours[system], label=systems.get(system).label)
        with_interval = [j for j, i in enumerate(kept) if rows[i][system]["ci95"] is not None]
        if with_interval:
            intervals = np.array([rows[kept[j]][system]["ci95"] for j in with_interval])
            ax.errorbar(x[kept][with_interval] + offset, values[with_interval], fmt="none", ecolor="black",
                        yerr=np.abs(intervals.T - values[with_interval]), capsize=3)
    ax.set_xticks(x, [r["modalities"].replace(",", "\n") for r in rows], fontsize=8)
    ax.set_ylabel("pooled segment macro-F1 (test)")
    ax.set_title("Modality ablation (GNN inputs swapped, one encoder on all modalities): pooled estimate and 95% "
                 "session-bootstrap interval", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with util.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


# --------------------------------------------------------------------------- two runs compared

def compared() -> tuple[str, ...]:
    """The systems a comparison of two runs reports: all but the majority class (the folds', not a run's)."""
    return tuple(name for name in systems.names() if name != "majority")



def compare_runs(cv_dir_a: Path, cv_dir_b: Path, modalities: str, n_boot: int = N_BOOT, seed: int = config.SEED,
                 suffix: str = "", suffix_b: str | None = None, modalities_b: str | None = None) -> dict[str, Any]:
    """Run B minus run A over the same folds: per system of compared() that both runs have in every fold,
    B's pooled macro-F1 minus A's on the same test segments, with the interval of one session bootstrap
    that resamples the same sessions for both (paired_difference, as gnn_minus_encoder), and each run's
    pooled macro-F1 with its interval. DataError (one line, naming both folders) when the runs' folds
    differ: their number, a fold's splits.json, its test segment IDs or their labels. `suffix`: of the
    GNN folders read (layout.gnn_folder); `suffix_b`: of B's when they differ (two GNNs in one run's folds, e.g.
    run_pipeline.py --cross_identity ciy beside the default graphs; then A and B may be the same folder);
    `modalities_b`: B's modality set when it differs (e.g. the GNN with the prosody block beside the default's
    in the same folds)."""
    paired = _paired_predictions(cv_dir_a, cv_dir_b, modalities, suffix, suffix if suffix_b is None else suffix_b,
                                 modalities_b or modalities)
    sessions, targets = paired["sessions"], paired["targets"]
    rows = {name: {"a": pooled_macro_f1(sessions, targets, paired["a"][name], n_boot, seed),
                   "b": pooled_macro_f1(sessions, targets, paired["b"][name], n_boot, seed),
                   "b_minus_a": paired_difference(sessions, targets, paired["b"][name], paired["a"][name], n_boot,
                                                  seed)}
            for name in paired["systems"]}
    return {
        "a": str(cv_dir_a), "b": str(cv_dir_b), "k": paired["k"], "modalities": modalities, "suffix": suffix,
        **({} if suffix_b is None or suffix_b == suffix else {"suffix_b": suffix_b}),
        **({} if modalities_b is None or modalities_b == modalities else {"modalities_b": modalities_b}),
        "systems": paired["systems"], "rows": rows,
        "bootstrap": _bootstrap_record(n_boot, len(np.unique(sessions)), len(targets), seed),
        "metric": "pooled segment macro-F1 over the folds' test segments; b_minus_a: run B's minus run A's on the "
                  "same segments, one session bootstrap resampling the same sessions for both (paired)",
        "notes": [f"{name}: not in every fold of both runs, left out" for name in paired["lacking"]],
    }


def _paired_predictions(cv_dir_a: Path, cv_dir_b: Path, modalities: str, suffix_a: str,
                        suffix_b: str, modalities_b: str | None = None) -> dict[str, Any]:
    """The test segments of two runs over the same folds, with each system's predictions of A and of B in
    A's segment order (see compare_runs for what is refused)."""
    dirs = (Path(cv_dir_a), Path(cv_dir_b))
    folds = [layout.fold_dirs(d) for d in dirs]

    def refuse(what: str) -> util.DataError:
        return util.DataError(f"{dirs[0]} and {dirs[1]}: {what}; a paired comparison needs the same folds")

    if len(folds[0]) != len(folds[1]):
        raise refuse(f"{len(folds[0])} and {len(folds[1])} folds")
    parts = []
    for k, (fold_a, fold_b) in enumerate(zip(*folds, strict=True)):
        if util.read_json(fold_a / layout.SPLITS_FILE) != util.read_json(fold_b / layout.SPLITS_FILE):
            raise refuse(f"fold {k}'s {layout.SPLITS_FILE} differ")
        a = fold_predictions(fold_a, layout.gnn_folder(modalities, suffix_a))
        b = fold_predictions(fold_b, layout.gnn_folder(modalities_b or modalities, suffix_b))
        only = sorted(set(a["segment_ids"]) ^ set(b["segment_ids"]))
        if only or len(a["segment_ids"]) != len(b["segment_ids"]):
            raise refuse(f"fold {k}'s test segment IDs differ ({len(a['segment_ids'])} and {len(b['segment_ids'])}"
                         f" segments, e.g. {only[:1]} in one only)")
        row_of = {segment: i for i, segment in enumerate(b["segment_ids"])}
        order = np.array([row_of[segment] for segment in a["segment_ids"]])  # B's rows in A's segment order
        if not np.array_equal(a["targets"], b["targets"][order]):
            raise refuse(f"fold {k}'s test segments have different labels")
        parts.append((a, {name: y[order] for name, y in b["predictions"].items()}))
    shown = [name for name in compared() if all(name in a["predictions"] and name in b for a, b in parts)]
    return {
        "k": len(parts),
        "segment_ids": [segment for a, _ in parts for segment in a["segment_ids"]],
        "sessions": np.concatenate([a["sessions"] for a, _ in parts]),
        "targets": np.concatenate([a["targets"] for a, _ in parts]),
        "systems": shown,
        "lacking": [name for name in compared() if name not in shown],
        "a": {name: np.concatenate([a["predictions"][name] for a, _ in parts]) for name in shown},
        "b": {name: np.concatenate([b[name] for _, b in parts]) for name in shown},
    }


def compare_seeds(cv_dir_a: Path, cv_dir_b: Path, modalities: str, n_boot: int = N_BOOT, seed: int = config.SEED,
                  suffix: str = "", suffix_b: str | None = None, modalities_b: str | None = None) -> dict[str, Any]:
    """Run B minus run A on every seed both have (layout.seed_trees; compare_runs per seed), and over the seeds:
    per system, the mean over seeds of B's pooled macro-F1 minus A's, with a 95% interval from one session
    bootstrap in which every resample draws the same sessions for every seed and both runs and averages
    the seeds' paired differences on them. The seeds' test segments must be the same (they are: a
    seed changes training, not the folds). DataError when the runs share fewer than two seeds."""
    trees_a, trees_b = layout.seed_trees(cv_dir_a), layout.seed_trees(cv_dir_b)
    common = [name for name in trees_a if name in trees_b]
    if len(common) < 2:
        raise util.DataError(f"{cv_dir_a} and {cv_dir_b}: {len(common)} seed shared (seed_S folders of "
                             "run_pipeline.py --seeds N); a comparison over seeds needs two or more")
    suffix_b = suffix if suffix_b is None else suffix_b
    modalities_b = modalities_b or modalities
    per_seed = [compare_runs(trees_a[name], trees_b[name], modalities, n_boot, seed, suffix, suffix_b, modalities_b)
                for name in common]
    paired = [_paired_predictions(trees_a[name], trees_b[name], modalities, suffix, suffix_b, modalities_b)
              for name in common]
    first = paired[0]
    position = {segment: i for i, segment in enumerate(first["segment_ids"])}
    for name, tree in zip(common[1:], paired[1:], strict=True):
        if sorted(tree["segment_ids"]) != sorted(first["segment_ids"]):
            raise util.DataError(f"{trees_a[name]}: its test segments differ from {trees_a[common[0]]}'s; the seeds "
                                 "of one comparison need the same folds")
        order = np.argsort([position[segment] for segment in tree["segment_ids"]])  # into the first seed's order
        for run in ("a", "b"):
            tree[run] = {system: y[order] for system, y in tree[run].items()}
    shown = [name for name in compared() if all(name in tree["systems"] for tree in paired)]
    sessions, targets = first["sessions"], first["targets"]
    over_seeds = {}
    for system in shown:
        pairs = [(tree["b"][system], tree["a"][system]) for tree in paired]
        values = [c["rows"][system]["b_minus_a"]["macro_f1"] for c in per_seed]
        mean, sd = metrics.mean_sd(values)
        over_seeds[system] = {**mean_paired_difference(sessions, targets, pairs, n_boot, seed), "paired": True,
                              "per_seed": values, "sd": sd}
    return {
        "a": str(cv_dir_a), "b": str(cv_dir_b), "modalities": modalities, "suffix": suffix,
        **({} if suffix_b == suffix else {"suffix_b": suffix_b}),
        **({} if modalities_b == modalities else {"modalities_b": modalities_b}),
        "seeds": common, "systems": shown, "per_seed": per_seed, "over_seeds": over_seeds,
        "bootstrap": _bootstrap_record(n_boot, len(np.unique(sessions)), len(targets), seed),
        "metric": "b_minus_a per seed as compare_runs; over_seeds: the mean over seeds of the paired difference, "
                  "its interval from one session bootstrap drawing the same sessions for every seed and both runs; "
                  f"sd: of the per-seed differences ({metrics.SD_CONVENTION})",
    }


def format_comparison(comparison: dict[str, Any]) -> str:
    """One row per system: A's and B's pooled macro-F1 [95% CI] and B − A [95% CI, paired]; a comparison
    over seeds (compare_seeds) prints each seed's table, then B − A per seed and over the seeds."""
    if "over_seeds" in comparison:
        return _format_over_seeds(comparison)
    boot = comparison["bootstrap"]
    b_folders = layout.gnn_folder(comparison.get("modalities_b", comparison["modalities"]),
                                  comparison.get("suffix_b", comparison["suffix"]))
    b_label = comparison["b"] + (f" (GNN folders {b_folders})"
                                 if "suffix_b" in comparison or "modalities_b" in comparison else "")
    lines = [f"run B − run A, session {comparison['k']}-fold CV, pooled segment macro-F1 [95% CI, sessions "
             f"resampled] over {boot['n_sessions']} sessions and {boot['n_segments']} segments (modalities "
             f"{comparison['modalities']})",
             f"A: {comparison['a']}", f"B: {b_label}",
             f"{'system':10}  {'A':25}  {'B':25}  B − A (paired)"]
    for name, row in comparison["rows"].items():
        cells = [metrics.format_estimate(entry, boot["n_sessions"], sign)
                 for entry, sign in ((row["a"], ""), (row["b"], ""), (row["b_minus_a"], "+"))]
        lines.append(f"{name:10}  {cells[0]:25}  {cells[1]:25}  {cells[2]}")
    lines += [f"note: {note}" for note in comparison["notes"]]
    return "\n".join(lines)


def _format_over_seeds(comparison: dict[str, Any]) -> str:
    lines = []
    for name, part in zip(comparison["seeds"], comparison["per_seed"], strict=True):
        lines += [f"{name}:", format_comparison(part), ""]
    return "\n".join([*lines, format_seed_differences(comparison)])


def format_seed_differences(comparison: dict[str, Any]) -> str:
    """The last table of a comparison over seeds: per system B − A on each seed, their sd and the mean over
    seeds with its paired interval."""
    seeds = comparison["seeds"]
    n_sessions = comparison["bootstrap"]["n_sessions"]
    lines = [f"B − A over {len(seeds)} seeds ({', '.join(seeds)}), pooled segment macro-F1, paired",
             f"{'system':10}  {'per seed':{9 * len(seeds)}}  {metrics.SD_CONVENTION + ', seeds':22}  "
             "mean over seeds [95% CI, sessions resampled]"]
    for system, row in comparison["over_seeds"].items():
        per_seed = " ".join(f"{v:+8.4f}" for v in row["per_seed"])
        lines.append(f"{system:10}  {per_seed:{9 * len(seeds)}}  {row['sd']:<22.4f}  "
                     f"{metrics.format_estimate(row, n_sessions, '+')}")
    return "\n".join(lines)


def write_comparison(comparison: dict[str, Any]) -> Path:
    """compare_<modalities><suffix>[_seeds].json in run B's folder (B's modalities and GNN folder suffix);
    returns its path."""
    suffix = comparison.get("suffix_b", comparison["suffix"])
    seeds = "_seeds" if "over_seeds" in comparison else ""
    modalities = comparison.get("modalities_b", comparison["modalities"])
    path = Path(comparison["b"]) / f"compare_{layout.modality_tag(modalities)}{suffix}{seeds}.json"
    util.write_json(comparison, path)
    return path

"""The balanced segment decision against the plain argmax, over a finished `run_pipeline.py --cv K` run
(`benchmarks/balanced_decision.py`).

Every learned system decides a segment by argmax(log p - tau · log prior) (metrics.adjusted_decisions), p its
segment probabilities and prior the training segments' class frequencies: tau 0 is the plain argmax, tau 1 the
balanced decision of post-hoc logit adjustment (Menon et al. 2021), which trades the majority class's recall for
the rarer classes'. No model depends on tau: the encoder, the GRU and the GNN keep the checkpoint of their plain
validation macro-F1 and apply the decision afterwards. So a run's saved test probabilities hold both decisions of
the same models, and this study re-decides them: per seed and system, the pooled macro-F1 of the plain argmax and
of a fixed tau, each with its session-bootstrap interval, and their paired difference; then that difference as a
mean over the seeds, its interval resampling the same sessions for every seed. The prior is the one the fold
recorded (its `decision` entry), else that of the fold's training graphs, which the GNN's decision uses.

`system_differences` pairs two systems of the same run instead (`benchmarks/system_differences.py`): the GRU against
the classical system, say, per seed and as a mean over the seeds, under either decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config, layout, metrics, util
from temporal_gnn import cv_results, graph_data, late_fusion, systems
from temporal_gnn.model_folder import GNN_METRICS_FILE

STUDIED = ("encoder", "temporal", systems.GNN)  # the systems that decide by argmax of their own probabilities


def training_prior(fold: Path, gnn: str) -> np.ndarray:
    """The class prior of a fold's decisions: the one its GNN folder recorded, else that of its training graphs'
    segments (metrics.class_prior, add-one smoothed)."""
    record = util.read_json(fold / gnn / GNN_METRICS_FILE)
    if record.get("decision"):
        return np.asarray(record["decision"]["prior"], dtype=float)
    graphs = graph_data.load_split(fold / "graphs" / Path(record["graphs"]["dir"]).name, "train")
    ids = graph_data.flatten([g.segment_id for g in graphs])
    targets = np.concatenate([g.target.numpy() for g in graphs])
    return metrics.class_prior(metrics.segment_targets(ids, targets))


def load_fold(fold: Path, gnn: str) -> dict[str, Any]:
    """One fold's test segments (the GNN's order), sessions, targets, training prior and the probabilities of
    every studied system whose predictions the fold has."""
    files = cv_results.prediction_files(fold, gnn)
    segments = metrics.read_segment_predictions(files[systems.GNN])
    ids = list(segments["segment_ids"])
    return {"segment_ids": segments["segment_ids"], "sessions": segments["sessions"], "targets": segments["targets"],
            "prior": training_prior(fold, gnn),
            "probs": {name: late_fusion.probabilities(files[name], ids) for name in STUDIED if files[name].is_file()}}


def seed_decisions(tree: Path, gnn: str, tau: float) -> dict[str, Any]:
    """One seed's folds pooled: segment IDs, sessions, targets and, per studied system that every fold has,
    its plain and its adjusted decisions."""
    folds = [load_fold(fold, gnn) for fold in layout.fold_dirs(tree)]
    names = [name for name in STUDIED if all(name in f["probs"] for f in folds)]
    decisions = {name: {"plain": np.concatenate([f["probs"][name].argmax(axis=1) for f in folds]),
                        "balanced": np.concatenate([metrics.adjusted_decisions(f["probs"][name], f["prior"], tau)
                                                    for f in folds])}
                 for name in names}
    return {"segment_ids": np.concatenate([f["segment_ids"] for f in folds]),
            "sessions": np.concatenate([f["sessions"] for f in folds]),
            "targets": np.concatenate([f["targets"] for f in folds]),
            "decisions": decisions}


def aligned_seeds(cv_dir: Path, modalities: str,
                  read: Callable[[Path, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`read(tree, gnn_folder)` of every seed of a CV run (layout.seed_runs), each in the first seed's segment order."""
    runs: dict[str, dict[str, Any]] = {}
    for name, (tree, gnn) in layout.seed_runs(cv_dir, modalities).items():
        run = read(tree, gnn)
        runs[name] = run if not runs else late_fusion.aligned(run, next(iter(runs.values()))["segment_ids"], tree)
    return runs


def balanced_decision(cv_dir: Path, tau: float = 1.0, modalities: str = config.MODALITIES,
                      n_boot: int = cv_results.N_BOOT, seed: int = config.SEED) -> dict[str, Any]:
    """The plain and the adjusted decision of every studied system on every seed of a CV run (module docstring)."""
    if not tau > 0:
        raise ValueError(f"tau must be above 0 (0 is the plain argmax), not {tau!r}")
    runs = aligned_seeds(cv_dir, modalities, lambda tree, gnn: seed_decisions(tree, gnn, tau))
    first = next(iter(runs.values()))
    sessions, targets = first["sessions"], first["targets"]
    names = [n for n in STUDIED if all(n in run["decisions"] for run in runs.values())]
    per_seed = {}
    for seed_name, run in runs.items():
        entry = {}
        for name in names:
            pair = run["decisions"][name]
            entry[name] = {rule: cv_results.pooled_macro_f1(sessions, targets, pair[rule], n_boot, seed)
                           for rule in ("plain", "balanced")}
            entry[name]["difference"] = cv_results.paired_difference(sessions, targets, pair["balanced"],
                                                                     pair["plain"], n_boot, seed)
        per_seed[seed_name] = entry
    over_seeds = {name: cv_results.mean_paired_difference(
        sessions, targets, [(run["decisions"][name]["balanced"], run["decisions"][name]["plain"])
                            for run in runs.values()], n_boot, seed) for name in names}
    return {"run": str(cv_dir), "tau": float(tau), "modalities": modalities, "systems": names,
            "n_sessions": len(np.unique(sessions)), "n_segments": len(targets), "seeds": per_seed,
            "balanced_minus_plain_over_seeds": over_seeds}


def format_balanced(result: dict[str, Any]) -> str:
    n, tau = result["n_sessions"], result["tau"]
    lines = [f"segment decisions: plain argmax against argmax(log p - {tau:g} * log training prior); pooled segment "
             f"macro-F1 [95% CI, sessions resampled] over {n} sessions and {result['n_segments']} segments "
             f"(modalities {result['modalities']})",
             f"{'seed':<10}  {'system':<9} {'plain':<26} {'balanced':<26} balanced - plain (paired)"]
    for seed_name, entry in result["seeds"].items():
        for name in result["systems"]:
            cells = [metrics.format_estimate(entry[name][rule], n) for rule in ("plain", "balanced")]
            difference = metrics.format_estimate(entry[name]["difference"], n, sign="+")
            lines.append(f"{seed_name:<10}  {name:<9} {cells[0]:<26} {cells[1]:<26} {difference}")
    if len(result["seeds"]) > 1:
        lines.append(f"balanced - plain, mean over {len(result['seeds'])} seeds:")
        for name in result["systems"]:
            lines.append(f"  {name:<9} "
                         + metrics.format_estimate(result["balanced_minus_plain_over_seeds"][name], n, sign="+"))
    return "\n".join(lines)


def seed_systems(tree: Path, gnn: str, tau: float) -> dict[str, Any]:
    """One seed's folds pooled: segment IDs, sessions, targets and every system's decisions
    (cv_results.pooled_predictions), those of the studied systems by argmax(log p - tau · log prior) when tau > 0."""
    run = cv_results.pooled_predictions(layout.fold_dirs(tree), gnn)
    if tau > 0:
        decided = late_fusion.aligned(seed_decisions(tree, gnn, tau), run["segment_ids"], tree)
        run["predictions"].update({name: pair["balanced"] for name, pair in decided["decisions"].items()})
    return run


def system_differences(cv_dir: Path, pairs: Sequence[tuple[str, str]], tau: float = 0.0,
                       modalities: str = config.MODALITIES, n_boot: int = cv_results.N_BOOT,
                       seed: int = config.SEED) -> dict[str, Any]:
    """Every system's pooled segment macro-F1 on every seed of a CV run, and for each (first, second) of `pairs` the
    paired difference first − second per seed and as a mean over the seeds (one session bootstrap drawing the same
    sessions for every seed). The encoder, the GRU and the GNN decide by the plain argmax (tau 0: the run's own
    figures) or by argmax(log p - tau · log training prior)."""
    if tau < 0:
        raise ValueError(f"tau must be 0 (the plain argmax) or above, not {tau!r}")
    runs = aligned_seeds(cv_dir, modalities, lambda tree, gnn: seed_systems(tree, gnn, tau))
    first = next(iter(runs.values()))
    sessions, targets = first["sessions"], first["targets"]
    names = [n for n in systems.names() if all(n in run["predictions"] for run in runs.values())]
    missing = sorted({n for pair in pairs for n in pair} - set(names))
    if missing:
        raise util.DataError(f"no predictions of {', '.join(missing)} on every seed (it has {', '.join(names)})",
                             Path(cv_dir))
    labels = np.unique(targets)
    scores = {n: [metrics.macro_f1(targets, run["predictions"][n], labels) for run in runs.values()] for n in names}
    differences = {}
    for a, b in pairs:
        over = cv_results.mean_paired_difference(
            sessions, targets, [(run["predictions"][a], run["predictions"][b]) for run in runs.values()], n_boot, seed)
        differences[f"{a}_minus_{b}"] = {"first": a, "second": b, "per_seed": [x - y for x, y in
                                                                              zip(scores[a], scores[b], strict=True)],
                                         **over}
    return {"run": str(cv_dir), "tau": float(tau), "modalities": modalities, "seeds": list(runs),
            "n_sessions": len(np.unique(sessions)), "n_segments": len(targets), "macro_f1": scores,
            "differences": differences}


def format_differences(result: dict[str, Any]) -> str:
    n, seeds = result["n_sessions"], result["seeds"]
    rule = ("the plain argmax" if result["tau"] == 0
            else f"argmax(log p - {result['tau']:g} * log training prior)")
    lines = [f"pooled segment macro-F1 over {n} sessions and {result['n_segments']} segments (modalities "
             f"{result['modalities']}); the encoder, the GRU and the GNN decide by {rule}",
             f"{'system':<22}  " + "  ".join(f"{s:>8}" for s in seeds)]
    for name, per_seed in result["macro_f1"].items():
        lines.append(f"{systems.get(name).label:<22}  " + "  ".join(f"{v:8.4f}" for v in per_seed))
    lines.append(f"{'difference':<22}  " + "  ".join(f"{s:>8}" for s in seeds)
                 + f"  mean over {len(seeds)} seeds [95% CI, the same sessions resampled for every seed]")
    for row in result["differences"].values():
        label = f"{systems.get(row['first']).label} − {systems.get(row['second']).label}"
        lines.append(f"{label:<22}  " + "  ".join(f"{v:+8.4f}" for v in row["per_seed"]) + "  "
                     + metrics.format_estimate(row, n, sign="+"))
    return "\n".join(lines)

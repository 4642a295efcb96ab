"""Late fusion of the classical system with a learned one: the `fusion` system of every table (systems.py), and a
study of a `run_pipeline.py --cv K` run's saved test predictions (`benchmarks/late_fusion.py`).

The decision is argmax(log p_classical + w · log p_partner) per segment, the two systems' segment probabilities.
The `fusion` system (`fit_fusion`, trained by train_val.py after the GNN) fuses the classical system with the GNN,
w the value of config.GNN's `fusion_weight_grid` whose fused decisions score the best macro-F1 on the validation
sessions (the smallest on a tie); predict.py repeats it with the weight model.json records (`fusion_labels`).

The study (`late_fusion`) asks of a CV run whether a learned system (the encoder alone, the GRU or the GNN) knows
anything the hand-crafted statistics do not. For each fold (and each seed folder) w is the value of a grid whose
fused decisions score the best macro-F1 on the other folds' test segments pooled, so a fold's own test labels
never choose its weight (a nested choice; ties go to the smaller w). Reported per seed: the classical system, the
partner and the fusion, pooled over the folds with session-bootstrap intervals, the paired difference
fusion − classical and the weights chosen; then that difference over the seeds, its interval resampling the same
sessions for every seed.

The GNN's blocks `prosody,audio,eda,temp` against `prosody` alone ask the same question inside the graph, where
the encoder's embeddings of its own training sessions are cleaner than those of the sessions it never saw (the
in-sample feature gap, docs/evaluation.md). Fusion reads test-session probabilities only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encoder.core import config, layout, metrics, util
from temporal_gnn import cv_results, systems

GRID = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
PARTNERS = ("encoder", "temporal", "gnn")
PROBABILITY_COLUMNS = [f"p_{emotion}" for emotion in config.EMOTIONS]
FLOOR = 1e-6  # probabilities are written to 4 decimals: a written 0 is taken as this
FUSION = "fusion"  # the system's name (systems.py)


def fused_scores(classical: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """(n, 7) log p_classical + weight · log p_partner of two (n, 7) probability arrays (each floored at FLOOR)."""
    return (np.log(np.clip(classical, FLOOR, 1.0))
            + weight * np.log(np.clip(partner, FLOOR, 1.0)))


def choose_weight(targets: np.ndarray, classical: np.ndarray, partner: np.ndarray, grid: Sequence[float]
                  ) -> tuple[float, dict[str, float]]:
    """The weight of `grid` whose fused decisions score the best macro-F1 on these (validation) segments, the
    smallest on a tie, and every weight's score."""
    labels = np.unique(targets)
    scores = {float(w): metrics.macro_f1(targets, fused_scores(classical, partner, w).argmax(axis=1), labels)
              for w in grid}
    best = max(scores.values())
    return min(w for w, score in scores.items() if score == best), {f"{w:g}": v for w, v in scores.items()}


def _by_id(segments: tuple, ids: Sequence[str], what: str) -> np.ndarray:
    """The probabilities of an `evaluate`-form `_segments` tuple in the order of `ids`."""
    position = {s: i for i, s in enumerate(segments[0])}
    missing = [s for s in ids if s not in position]
    if missing:
        raise ValueError(f"{what} has no prediction for segment {missing[0]}")
    return np.asarray(segments[3])[[position[s] for s in ids]]


def fit_fusion(context: Any) -> Any:
    """systems.py's trainer of the fusion system: the classical system's and the GNN's segment probabilities
    fused, the weight chosen on the validation sessions (module docstring); None, with the reason logged, when
    the classical system was not fitted in this run."""
    from temporal_gnn import gnn_training

    classical = (context.fitted or {}).get("classical")
    if classical is None or classical.val is None or context.gnn is None:
        context.log("fusion: the classical system was not fitted; not fitted")
        return None
    grid = context.settings.fusion_weight_grid
    parts = {}  # per split: the classical system's segment IDs, targets and probabilities, the GNN's probabilities
    for split, evaluation in (("val", classical.val), ("test", classical.test)):
        ids, targets, _, probs = evaluation["_segments"]
        parts[split] = (list(ids), np.asarray(targets), np.asarray(probs),
                        _by_id(context.gnn[split]["_segments"], list(ids), "GNN"))
    _, val_targets, val_classical, val_gnn = parts["val"]
    weight, scores = choose_weight(val_targets, val_classical, val_gnn, grid)
    ids, targets, test_classical, test_gnn = parts["test"]
    scored = fused_scores(test_classical, test_gnn, weight)
    predictions = scored.argmax(axis=1)
    probs = np.exp(scored - scored.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    segment = metrics.classification_metrics(targets, predictions)
    context.log(f"fusion: classical + {weight:g} x GNN (validation macro-F1 "
                + ", ".join(f"{w}: {v:.4f}" for w, v in scores.items())
                + f"), test segment macro-F1 {segment['macro_f1']:.4f}")
    entry = {"segment": segment, "weight": weight, "partner": "gnn", "val_macro_f1": scores,
             "segments": {split: len(parts[split][0]) for split in parts}}
    return gnn_training.SystemResult(entry, {"segment": segment, "_segments": (ids, targets, predictions, probs)})


def model_record(result: Any) -> dict[str, Any] | None:
    """model.json's settings.fusion for a fitted fusion system (its weight and partner); None when not fitted."""
    return None if result is None else {"weight": result.entry["weight"], "partner": result.entry["partner"]}


def fusion_labels(classical: dict[str, np.ndarray], ids: Sequence[str], gnn_probs: np.ndarray, weight: float
                  ) -> dict[str, str]:
    """Segment ID -> the fusion's emotion for each of `ids` (the GNN's segments, `gnn_probs` (n, 7) their
    probabilities) that the classical system labelled too (`classical`: ID -> its probabilities; predict.py)."""
    kept = [k for k, s in enumerate(ids) if s in classical]
    if not kept:
        return {}
    scored = fused_scores(np.stack([classical[ids[k]] for k in kept]), np.asarray(gnn_probs)[kept], weight)
    return {ids[k]: config.EMOTIONS[int(c)] for k, c in zip(kept, scored.argmax(axis=1), strict=True)}


def probabilities(path: Path, segment_ids: Sequence[str]) -> np.ndarray:
    """(n, 7) probabilities of a segment-predictions CSV in the order of `segment_ids`; DataError when the file
    lacks one of them or has no probability columns."""
    if not path.is_file():
        raise util.DataError("segment predictions not found", path)
    table = pd.read_csv(path, dtype={"segment_id": str}).set_index("segment_id")
    missing = [c for c in PROBABILITY_COLUMNS if c not in table.columns]
    if missing:
        raise util.DataError(f"no probability column {missing[0]}", path)
    absent = [s for s in segment_ids if s not in table.index]
    if absent:
        raise util.DataError(f"segment {absent[0]} of the GNN's test segments is not in it; rerun the fold", path)
    return table.loc[list(segment_ids), PROBABILITY_COLUMNS].to_numpy(dtype=float)


def load_fold(fold: Path, gnn: str, partner: str) -> dict[str, Any]:
    """One fold's test segments (the GNN's order), targets, sessions and both systems' probabilities."""
    files = cv_results.prediction_files(fold, gnn)
    segments = metrics.read_segment_predictions(files[systems.GNN])
    ids = list(segments["segment_ids"])
    return {"segment_ids": ids, "sessions": segments["sessions"], "targets": segments["targets"],
            "classical": probabilities(files["classical"], ids), "partner": probabilities(files[partner], ids)}


def fused(fold: dict[str, Any], weight: float) -> np.ndarray:
    """The fold's fused decisions at `weight`."""
    return fused_scores(fold["classical"], fold["partner"], weight).argmax(axis=1)


def nested_weights(folds: Sequence[dict[str, Any]], grid: Sequence[float]) -> list[float]:
    """Per fold, the weight of `grid` with the best pooled macro-F1 of the other folds' fused decisions (the
    smallest on a tie); with one fold there are no others and the weight is the grid's first."""
    weights = []
    for k in range(len(folds)):
        others = [f for j, f in enumerate(folds) if j != k]
        if not others:
            weights.append(float(grid[0]))
            continue
        targets = np.concatenate([f["targets"] for f in others])
        labels = np.unique(targets)
        scores = [metrics.macro_f1(targets, np.concatenate([fused(f, w) for f in others]), labels) for w in grid]
        weights.append(float(grid[int(np.argmax(scores))]))
    return weights


def recorded_fusion(fold: Path, gnn: str, segment_ids: Sequence[str]) -> tuple[np.ndarray, float]:
    """The fusion system's own test decisions in a fold (train_val.py's, in the order of `segment_ids`) and the
    weight it chose on the validation sessions; DataError when the fold has none (a run before the system)."""
    path = cv_results.prediction_files(fold, gnn)[FUSION]
    table = metrics.read_segment_predictions(path)
    decisions = cv_results.aligned_predictions(table, segment_ids, FUSION, path)
    return decisions, float(util.read_json(fold / gnn / cv_results.GNN_METRICS_FILE)["baselines"][FUSION]["weight"])


def seed_fusion(tree: Path, gnn: str, partner: str, grid: Sequence[float], recorded: bool = False
                ) -> dict[str, Any]:
    """One seed's folds pooled: segment IDs, sessions, targets, the decisions of classical, partner and fusion,
    and the weight each fold was given (`recorded`: the fusion system's own, chosen on validation)."""
    fold_dirs = layout.fold_dirs(tree)
    folds = [load_fold(fold, gnn, partner) for fold in fold_dirs]
    if recorded:
        own = [recorded_fusion(d, gnn, f["segment_ids"]) for d, f in zip(fold_dirs, folds, strict=True)]
        decisions, weights = [d for d, _ in own], [w for _, w in own]
    else:
        weights = nested_weights(folds, grid)
        decisions = [fused(f, w) for f, w in zip(folds, weights, strict=True)]
    return {"segment_ids": np.concatenate([f["segment_ids"] for f in folds]),
            "sessions": np.concatenate([f["sessions"] for f in folds]),
            "targets": np.concatenate([f["targets"] for f in folds]),
            "classical": np.concatenate([f["classical"].argmax(axis=1) for f in folds]),
            partner: np.concatenate([f["partner"].argmax(axis=1) for f in folds]),
            "fusion": np.concatenate(decisions),
            "weights": weights}


def aligned(run: dict[str, Any], order: np.ndarray, path: Path) -> dict[str, Any]:
    """`run`'s arrays (also those in nested dicts) in the segment order `order` (another seed's); DataError when
    the two seeds tested different segments."""
    position = {s: i for i, s in enumerate(run["segment_ids"])}
    if len(position) != len(order) or any(s not in position for s in order):
        raise util.DataError("its seeds tested different segments", path)
    return _taken(run, np.array([position[s] for s in order]))


def _taken(value: Any, index: np.ndarray) -> Any:
    """`value` with every array in it (through nested dicts) reordered by `index`; anything else as it is."""
    if isinstance(value, np.ndarray):
        return value[index]
    if isinstance(value, dict):
        return {k: _taken(v, index) for k, v in value.items()}
    return value


def late_fusion(cv_dir: Path, partner: str = "encoder", modalities: str = config.MODALITIES,
                grid: Sequence[float] = GRID, n_boot: int = cv_results.N_BOOT, seed: int = config.SEED,
                recorded: bool = False) -> dict[str, Any]:
    """The fusion of the classical system with `partner` on every seed of a CV run (see the module docstring);
    `recorded`: the run's own fusion system (partner the GNN, its weight chosen on validation) instead of the
    nested choice."""
    if partner not in PARTNERS:
        raise ValueError(f"partner must be one of {', '.join(PARTNERS)}, not {partner!r}")
    if recorded and partner != systems.GNN:
        raise ValueError(f"the fusion system fuses the classical system with the GNN, not with {partner!r}")
    gnn = layout.gnn_folder(modalities)
    runs: dict[str, dict[str, Any]] = {}
    for name, tree in layout.seed_trees(cv_dir).items():
        run = seed_fusion(tree, gnn, partner, grid, recorded)
        runs[name] = run if not runs else aligned(run, next(iter(runs.values()))["segment_ids"], tree)
    first = next(iter(runs.values()))
    sessions, targets = first["sessions"], first["targets"]
    per_seed = {}
    for name, run in runs.items():
        per_seed[name] = {
            "pooled": {system: cv_results.pooled_macro_f1(sessions, targets, run[system], n_boot, seed)
                       for system in ("classical", partner, "fusion")},
            "fusion_minus_classical": cv_results.paired_difference(sessions, targets, run["fusion"],
                                                                   run["classical"], n_boot, seed),
            "weights": run["weights"]}
    over_seeds = cv_results.mean_paired_difference(
        sessions, targets, [(run["fusion"], run["classical"]) for run in runs.values()], n_boot, seed)
    return {"run": str(cv_dir), "partner": partner, "modalities": modalities,
            "grid": "the fusion system's own, chosen on validation" if recorded else list(grid),
            "n_sessions": len(np.unique(sessions)), "n_segments": len(targets), "seeds": per_seed,
            "fusion_minus_classical_over_seeds": over_seeds}


def format_fusion(result: dict[str, Any]) -> str:
    partner, n = result["partner"], result["n_sessions"]
    chosen = (f"w {result['grid']}" if isinstance(result["grid"], str)
              else f"w of {result['grid']} chosen per fold on the other folds' test segments")
    lines = [f"late fusion: argmax(log p_classical + w * log p_{partner}), {chosen}; pooled segment macro-F1 "
             f"[95% CI, sessions resampled] over {n} sessions and {result['n_segments']} segments (modalities "
             f"{result['modalities']})",
             f"{'seed':<10}  {'classical':<26} {partner:<26} {'fusion':<26} {'fusion - classical':<28} weights"]
    for name, entry in result["seeds"].items():
        pooled = entry["pooled"]
        cells = [metrics.format_estimate(pooled[s], n) for s in ("classical", partner, "fusion")]
        difference = metrics.format_estimate(entry["fusion_minus_classical"], n, sign="+")
        weights = ", ".join(f"{w:g}" for w in entry["weights"])
        lines.append(f"{name:<10}  {cells[0]:<26} {cells[1]:<26} {cells[2]:<26} {difference:<28} {weights}")
    if len(result["seeds"]) > 1:
        over = metrics.format_estimate(result["fusion_minus_classical_over_seeds"], n, sign="+")
        lines.append(f"fusion - classical, mean over {len(result['seeds'])} seeds: {over}")
    return "\n".join(lines)

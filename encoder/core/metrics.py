"""Classification metrics of the evaluation protocol (docs/evaluation.md), shared by the encoder and the
GNN stage: node and segment level (a segment's prediction = mean of its nodes' probabilities), the
majority-class baseline, the encoder-only test report, and the one definition of class weights."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config, util


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str] = config.EMOTIONS
) -> dict[str, Any]:
    """Accuracy, macro/weighted/micro F1, per-class precision/recall/F1/support and the confusion
    matrix (rows = true class, columns = predicted class, in `class_names` order).

    `macro_f1`, the headline, averages the F1 of the classes present in `y_true` (`classes_present`);
    `macro_f1_7class` averages over every class in `class_names`, an absent class scoring 0."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": macro_f1(y_true, y_pred),
        "macro_f1_7class": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "classes_present": [class_names[c] for c in np.unique(y_true)],
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int] | None = None) -> float:
    """Mean F1 over `labels`, by default the classes present in `y_true` (0.0 for no samples). A
    prediction of a class outside `labels` still costs the recall of the true class; it adds no
    zero-F1 class to the mean. A label with no true and no predicted sample scores 0, as in sklearn's
    f1_score(labels=..., average="macro", zero_division=0): a bootstrap resample that lacks a class of
    the full truth averages over the same classes as the full data (`labels` = the full truth's)."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if not len(y_true):
        return 0.0
    present = np.unique(y_true) if labels is None else np.asarray(labels, dtype=int)
    size = int(max(y_true.max(), y_pred.max(), present.max())) + 1
    confusion = np.bincount(y_true * size + y_pred, minlength=size * size).reshape(size, size)
    hits = np.diag(confusion)[present]
    denominator = confusion[present].sum(axis=1) + confusion[:, present].sum(axis=0)
    return float(np.mean(np.divide(2 * hits, denominator, out=np.zeros(len(present)), where=denominator > 0)))


# Fewer test sessions than this: no interval. A percentile interval over resamples of a handful of
# sessions is mostly the spread of those few sessions (one session gives a point), not a 95% interval.
MIN_SESSIONS_FOR_INTERVAL = config.CV["min_sessions_for_interval"]


def session_bootstrap(groups: Sequence[Any], statistic: Callable[[np.ndarray], float], n_boot: int = 2000,
                      seed: int = 0, level: float = 0.95, min_groups: int | None = None) -> dict[str, Any]:
    """Percentile bootstrap interval of `statistic` that resamples whole groups (sessions), not samples.

    `groups[i]` is the group of sample i; `statistic(indices)` computes the figure on the samples at
    `indices` (an int array, repeats allowed). Each of `n_boot` resamples draws as many groups as there
    are, with replacement, and takes all samples of each drawn group. Samples of one session are not
    independent, so resampling samples would give intervals that are too narrow.
    With fewer than `min_groups` groups (default MIN_SESSIONS_FOR_INTERVAL) there is no interval:
    "ci95" is None and nothing is resampled.
    Returns {"estimate", "ci95": [low, high] or None, "n_groups", "n_boot", "seed"}; deterministic for a seed."""
    min_groups = MIN_SESSIONS_FOR_INTERVAL if min_groups is None else min_groups
    groups = np.asarray(groups)
    names, codes = np.unique(groups, return_inverse=True)
    estimate = float(statistic(np.arange(len(groups))))
    if len(names) < min_groups:
        return {"estimate": estimate, "ci95": None, "n_groups": len(names), "n_boot": n_boot, "seed": seed}
    members = [np.flatnonzero(codes == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(len(names), size=len(names))
        values[b] = statistic(np.concatenate([members[g] for g in drawn]))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"estimate": estimate, "ci95": [float(low), float(high)], "n_groups": len(names), "n_boot": n_boot,
            "seed": seed}


def format_estimate(entry: dict[str, Any], n_sessions: int, sign: str = "") -> str:
    """`0.1234 [0.1000, 0.1500]`, or `0.1234 [n/a (4 sessions)]` when the entry has no interval (fewer
    than MIN_SESSIONS_FOR_INTERVAL sessions); `sign` "+" writes the sign of a difference."""
    interval = entry["ci95"]
    bounds = (f"n/a ({n_sessions} session{'s' if n_sessions != 1 else ''})" if interval is None
              else f"{interval[0]:{sign}.4f}, {interval[1]:{sign}.4f}")
    return f"{entry['macro_f1']:{sign}.4f} [{bounds}]"


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd (ddof=1, the one spread used across seeds and folds); sd None for one value."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None


SD_CONVENTION = "mean ± sd (ddof=1)"


def segment_predictions(
    segment_ids: Sequence[str], probs: np.ndarray, targets: Sequence[int]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate node predictions to segments: a segment's probabilities are the mean of its nodes'.
    Returns (segment ids in first-seen order, segment targets, segment predictions, mean probs)."""
    segment_ids = np.asarray(segment_ids)
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    uniq, first, inverse = np.unique(segment_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.zeros((len(uniq), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    mean = (sums / counts)[order]
    seg_targets = targets[first][order]
    return list(uniq[order]), seg_targets, mean.argmax(axis=1), mean


def class_prior(train_targets: Sequence[int], num_classes: int = config.NUM_CLASSES) -> np.ndarray:
    """The training segments' class frequencies, add-one smoothed (a class absent from training keeps a
    finite log)."""
    counts = np.bincount(np.asarray(train_targets, dtype=int), minlength=num_classes)[:num_classes] + 1.0
    return counts / counts.sum()


def adjusted_decisions(seg_probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Segment decisions argmax(log p - tau · log prior) (post-hoc logit adjustment, Menon et al. 2021): tau 0
    is the plain argmax; tau 1 the balanced decision, which trades the majority class's recall for the
    others'. Probabilities are floored at 1e-12 before the log."""
    seg_probs = np.asarray(seg_probs, dtype=np.float64)
    if not tau:
        return seg_probs.argmax(axis=1)
    return (np.log(np.maximum(seg_probs, 1e-12)) - float(tau) * np.log(prior)[None, :]).argmax(axis=1)


def choose_decision_tau(seg_probs: np.ndarray, seg_targets: Sequence[int], prior: np.ndarray,
                        grid: Sequence[float]) -> dict[str, Any]:
    """The tau of `grid` whose adjusted decisions score the best macro-F1 on these (validation) segments,
    the smallest on a tie (a one-value grid: that tau); {"tau", "grid", "val_macro_f1" per tau}."""
    grid = [float(t) for t in grid]
    if not grid:
        raise ValueError("the decision tau grid is empty")
    scores = [macro_f1(seg_targets, adjusted_decisions(seg_probs, prior, t)) if len(seg_targets) else 0.0
              for t in grid]
    best = max(range(len(grid)), key=lambda i: (scores[i], -grid[i]))
    return {"tau": grid[best], "grid": grid, "val_macro_f1": scores}


def segment_decision(val_seg_probs: np.ndarray, val_seg_targets: Sequence[int],
                     train_segment_targets: Sequence[int], grid: Sequence[float]) -> dict[str, Any]:
    """The segment decision a system records (encoder_metrics.json, metrics.json, model.json): the tau of
    `grid` chosen on the validation segments (choose_decision_tau) and the training prior it adjusts by."""
    prior = class_prior(train_segment_targets)
    return {**choose_decision_tau(val_seg_probs, val_seg_targets, prior, grid), "prior": prior.tolist()}


def decided(seg_probs: np.ndarray, decision: dict[str, Any] | None) -> np.ndarray:
    """Segment decisions under a segment_decision record (adjusted_decisions); None: the plain argmax."""
    if decision is None:
        return np.asarray(seg_probs).argmax(axis=1)
    return adjusted_decisions(seg_probs, np.asarray(decision["prior"]), decision["tau"])


def segment_targets(segment_ids: Sequence[str], node_targets: Sequence[int]) -> np.ndarray:
    """The target of each segment (that of its first node), segments in first-seen order."""
    _, first = np.unique(np.asarray(segment_ids), return_index=True)
    return np.asarray(node_targets, dtype=int)[np.sort(first)]


def majority_class(train_targets: Sequence[int]) -> int:
    """The most frequent training class (ties go to the lower class index)."""
    counts = np.bincount(np.asarray(train_targets, dtype=int), minlength=config.NUM_CLASSES)
    return int(counts.argmax())


def majority_baseline(train_targets: Sequence[int], eval_targets: Sequence[int]) -> dict[str, Any]:
    """Metrics of always predicting the training majority class on `eval_targets`."""
    eval_targets = np.asarray(eval_targets, dtype=int)
    prediction = np.full_like(eval_targets, majority_class(train_targets))
    return classification_metrics(eval_targets, prediction)


def format_table(rows: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str] = ("accuracy", "macro_f1",
                                                                                   "weighted_f1")) -> str:
    """A small fixed-width table: one row per (name, metrics) pair."""
    name_width = max(12, *(len(name) for name, _ in rows))
    header = f"{'':{name_width}}  " + "  ".join(f"{k:>11}" for k in keys)
    lines = [header]
    for name, metrics in rows:
        lines.append(f"{name:{name_width}}  " + "  ".join(f"{metrics[k]:>11.4f}" for k in keys))
    return "\n".join(lines)


def class_weights(labels: np.ndarray, num_classes: int = config.NUM_CLASSES) -> np.ndarray:
    """Inverse class frequency of the training soft labels, scaled to mean 1 over the classes present.

    `labels` (n, num_classes) are the training targets as normalised multi-hots, one row per training
    sample: per segment for the encoder (it draws one clip per segment per epoch), per node for the GNN.
    A class's frequency is its summed label mass; classes absent from training get weight 0."""
    mass = np.asarray(labels, dtype=np.float64).reshape(-1, num_classes).sum(axis=0)
    present = mass > 0
    weights = np.zeros(num_classes)
    weights[present] = mass[present].sum() / mass[present]
    if present.any():
        weights /= weights[present].mean()
    return weights.astype(np.float32)


def encoder_metrics(train_segment_targets: Sequence[int], train_node_targets: Sequence[int],
                    segment_ids: Sequence[str], node_targets: Sequence[int], probs: np.ndarray,
                    decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """The encoder-only report (`encoder_metrics.json`): test metrics of node probabilities `probs` at
    node and segment level (segment decisions under `decision`, segment_decision; None: the argmax), beside
    the training-majority baseline at each level."""
    node_targets = np.asarray(node_targets, dtype=int)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(node_targets), config.NUM_CLASSES)
    _, seg_targets, _, seg_probs = segment_predictions(segment_ids, probs, node_targets)
    seg_pred = decided(seg_probs, decision)
    return {
        "test": {
            "segment": classification_metrics(seg_targets, seg_pred),
            "node": classification_metrics(node_targets, probs.argmax(axis=1)),
        },
        "baselines": {"majority": {
            "segment": majority_baseline(train_segment_targets, seg_targets),
            "node": majority_baseline(train_node_targets, node_targets),
        }},
    }


def format_encoder_metrics(metrics: dict[str, Any]) -> str:
    """The encoder-only report as a table: encoder and majority, segment and node level."""
    test, majority = metrics["test"], metrics["baselines"]["majority"]
    return format_table([
        ("encoder segment", test["segment"]), ("encoder node", test["node"]),
        ("majority segment", majority["segment"]), ("majority node", majority["node"]),
    ], keys=("accuracy", "macro_f1", "weighted_f1", "micro_f1"))


PREDICTION_COLUMNS = ("segment_id", "target", "prediction", *(f"p_{c}" for c in config.EMOTIONS))


def write_segment_predictions(segment_ids: Sequence[str], targets: Sequence[int], predictions: Sequence[int],
                              probs: np.ndarray, path: Path) -> None:
    """One CSV row per segment: its ID, true (first listed) and predicted emotion, and probabilities."""
    with util.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PREDICTION_COLUMNS)
        for seg, t, p, pr in zip(segment_ids, targets, predictions, probs, strict=True):
            writer.writerow([seg, config.EMOTIONS[t], config.EMOTIONS[p], *(f"{v:.4f}" for v in pr)])


def read_segment_predictions(path: Path) -> dict[str, Any]:
    """A CSV written by write_segment_predictions as arrays: segment_ids, sessions, targets, predictions."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise util.DataError("segment predictions not found", path)
    table = pd.read_csv(path, dtype={"segment_id": str})
    missing = [c for c in PREDICTION_COLUMNS[:3] if c not in table.columns]
    if missing:
        raise util.DataError(f"not a segment-predictions CSV (no {', '.join(missing)} column)", path)
    index = {e: k for k, e in enumerate(config.EMOTIONS)}
    return {"segment_ids": table["segment_id"].to_numpy(),
            "sessions": np.array([util.parse_segment_id(i)["session"] for i in table["segment_id"]], dtype=int),
            "targets": table["target"].map(index).to_numpy(dtype=int),
            "predictions": table["prediction"].map(index).to_numpy(dtype=int)}

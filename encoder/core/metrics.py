"""Classification metrics of SPEC §5, shared by the encoder and the GNN stage: node and segment level
(a segment's prediction = mean of its nodes' probabilities), the majority-class baseline, the
encoder-only test report, and the one definition of class weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from encoder.core import config


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str] = config.EMOTIONS
) -> dict[str, Any]:
    """Accuracy, macro/weighted/micro F1, per-class precision/recall/F1/support and the confusion
    matrix (rows = true class, columns = predicted class, in `class_names` order)."""
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
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
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
                    segment_ids: Sequence[str], node_targets: Sequence[int], probs: np.ndarray) -> dict[str, Any]:
    """The encoder-only report (`encoder_metrics.json`): test metrics of node probabilities `probs` at
    node and segment level, beside the training-majority baseline at each level."""
    node_targets = np.asarray(node_targets, dtype=int)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(node_targets), config.NUM_CLASSES)
    _, seg_targets, seg_pred, _ = segment_predictions(segment_ids, probs, node_targets)
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

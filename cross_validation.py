"""Summary of a session K-fold cross-validation run by `run_pipeline.py --cv K`.

Each fold folder (`results/<exp>_cvK/fold_k/`) holds the fold's GNN results (`gnn/metrics.json`,
`gnn/predictions_test.csv`) and the encoder's own test predictions
(`features/encoder_metrics.json`, `features/encoder_predictions_test.csv`). The summary reports, at
segment level, for the majority baseline (the fold's training-majority class), the encoder alone and
the GNN:

* per fold: accuracy, macro-F1 and weighted-F1 on the fold's test sessions, and mean ± std over folds;
* pooled: every annotated session is tested exactly once, so the folds' test segments together are
  the whole dataset; the pooled macro-F1 comes with a 95% bootstrap interval that resamples
  sessions (metrics.session_bootstrap), and the paired difference GNN − encoder is resampled on the
  same sessions.

`summary.json` keeps `folds` (one entry per fold: test and validation sessions, per-system metrics)
and `pooled` (per system: macro_f1, ci95, accuracy, weighted_f1, n_segments; and gnn_minus_encoder).
Beside it: `summary.png` (per-fold bars with the pooled interval) and `confusion_pooled.png`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.core import config, extraction, metrics, plots, util

SUMMARY_FILE = "summary.json"
SYSTEMS = ("majority", "encoder", "gnn")
KEYS = ("accuracy", "macro_f1", "weighted_f1")
N_BOOT = 2000


def fold_predictions(fold_dir: Path) -> dict[str, Any]:
    """Test segments of one fold with each system's prediction, aligned on the GNN's segment order."""
    gnn_metrics = util.read_json(fold_dir / "gnn" / "metrics.json")
    gnn = metrics.read_segment_predictions(fold_dir / "gnn" / "predictions_test.csv")
    encoder = metrics.read_segment_predictions(fold_dir / "features" / extraction.PREDICTIONS_FILE)
    by_id = dict(zip(encoder["segment_ids"], encoder["predictions"], strict=True))
    missing = [s for s in gnn["segment_ids"] if s not in by_id]
    if missing or len(by_id) != len(gnn["segment_ids"]):
        raise util.DataError(f"encoder and GNN test segments differ (e.g. {missing[:1]}); rerun the fold",
                             fold_dir / "features" / extraction.PREDICTIONS_FILE)
    majority = config.EMOTIONS.index(gnn_metrics["baselines"]["majority"]["class"])
    return {
        "segment_ids": gnn["segment_ids"],
        "sessions": gnn["sessions"],
        "targets": gnn["targets"],
        "predictions": {"majority": np.full(len(gnn["targets"]), majority),
                        "encoder": np.array([by_id[s] for s in gnn["segment_ids"]], dtype=int),
                        "gnn": gnn["predictions"]},
        "splits": gnn_metrics["splits"],
    }


def summarise(fold_dirs: Sequence[Path], seed: int = config.SEED, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Per-fold and pooled segment-level figures of a CV run (see the module docstring)."""
    folds, pooled_parts = [], []
    for k, fold_dir in enumerate(fold_dirs):
        pred = fold_predictions(Path(fold_dir))
        scores = {name: _scores(pred["targets"], pred["predictions"][name]) for name in SYSTEMS}
        folds.append({"fold": k, "test_sessions": pred["splits"]["test"], "val_sessions": pred["splits"]["val"],
                      "train_sessions": pred["splits"]["train"], "n_segments": len(pred["targets"]),
                      "segment": scores})
        pooled_parts.append(pred)
    sessions = np.concatenate([p["sessions"] for p in pooled_parts])
    targets = np.concatenate([p["targets"] for p in pooled_parts])
    predictions = {name: np.concatenate([p["predictions"][name] for p in pooled_parts]) for name in SYSTEMS}
    tested = sorted(int(s) for s in np.unique(sessions))
    pooled: dict[str, Any] = {}
    for name in SYSTEMS:
        interval = metrics.session_bootstrap(
            sessions, lambda idx, y=predictions[name]: metrics.macro_f1(targets[idx], y[idx]), n_boot, seed)
        pooled[name] = {"macro_f1": interval["estimate"], "ci95": interval["ci95"],
                        **{k: v for k, v in _scores(targets, predictions[name]).items() if k != "macro_f1"},
                        "n_segments": len(targets)}
    difference = metrics.session_bootstrap(
        sessions, lambda idx: (metrics.macro_f1(targets[idx], predictions["gnn"][idx])
                               - metrics.macro_f1(targets[idx], predictions["encoder"][idx])), n_boot, seed)
    pooled["gnn_minus_encoder"] = {"macro_f1": difference["estimate"], "ci95": difference["ci95"]}
    gnn_all = metrics.classification_metrics(targets, predictions["gnn"])
    return {
        "k": len(fold_dirs),
        "folds": folds,
        "mean_std": {name: {key: [float(np.mean(v := [f["segment"][name][key] for f in folds])), float(np.std(v))]
                            for key in KEYS} for name in SYSTEMS},
        "pooled": pooled,
        "pooled_gnn": {"per_class": gnn_all["per_class"], "confusion": gnn_all["confusion"],
                       "macro_f1_7class": gnn_all["macro_f1_7class"], "classes_present": gnn_all["classes_present"]},
        "tested_sessions": tested,
        "bootstrap": {"resamples": n_boot, "unit": "session", "n_sessions": len(tested), "seed": seed,
                      "interval": "percentile, 95%"},
        "metric": "segment level; macro_f1 over the classes present in the evaluated truth",
    }


def _scores(targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    full = metrics.classification_metrics(targets, predictions)
    return {key: full[key] for key in KEYS}


def format_summary(summary: dict[str, Any]) -> str:
    """Per-fold macro-F1, mean ± std and the pooled figure with its interval, one row per system."""
    header = f"{'':10}" + "".join(f"  fold {f['fold']:<4}" for f in summary["folds"])
    header += "  mean ± std         pooled macro-F1 [95% CI, sessions resampled]"
    lines = [f"session {summary['k']}-fold CV, segment level, macro-F1 (test sessions per fold: "
             + "; ".join(f"{f['test_sessions']}" for f in summary["folds"]) + ")", header]
    for name in SYSTEMS:
        row = f"{name:10}" + "".join(f"  {f['segment'][name]['macro_f1']:9.4f}" for f in summary["folds"])
        mean, std = summary["mean_std"][name]["macro_f1"]
        low, high = summary["pooled"][name]["ci95"]
        row += f"  {mean:.4f} ± {std:.4f}    {summary['pooled'][name]['macro_f1']:.4f} [{low:.4f}, {high:.4f}]"
        lines.append(row)
    diff = summary["pooled"]["gnn_minus_encoder"]
    lines.append(f"GNN − encoder (pooled, paired): {diff['macro_f1']:+.4f} [{diff['ci95'][0]:+.4f}, "
                 f"{diff['ci95'][1]:+.4f}] over {summary['bootstrap']['n_sessions']} sessions")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """summary.json, then summary.png and confusion_pooled.png beside it."""
    path = Path(path)
    _plot_folds(summary, path.with_name("summary.png"))
    plots.plot_confusion(summary["pooled_gnn"]["confusion"], "GNN, all folds' test segments pooled",
                             path.with_name("confusion_pooled.png"))
    util.write_json(summary, path)


def _plot_folds(summary: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.4 * summary["k"] + 3), 4))
    ax = fig.subplots()
    width = 0.8 / len(SYSTEMS)
    colours = {"majority": "#b0b0b0", "encoder": "#4c8bd6", "gnn": "#e07b39"}
    x = np.arange(summary["k"])
    for i, name in enumerate(SYSTEMS):
        values = [f["segment"][name]["macro_f1"] for f in summary["folds"]]
        ax.bar(x + (i - 1) * width, values, width, color=colours[name], label=name)
        pooled = summary["pooled"][name]
        ax.axhspan(*pooled["ci95"], color=colours[name], alpha=0.15)
        ax.axhline(pooled["macro_f1"], color=colours[name], linestyle="--", linewidth=1)
    ax.set_xticks(x, [f"fold {f['fold']}\n{','.join(map(str, f['test_sessions']))}" for f in summary["folds"]],
                  fontsize=8)
    ax.set_ylabel("segment macro-F1 (test)")
    ax.set_title("Per-fold bars; dashed line and band: pooled estimate and 95% session-bootstrap interval",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with util.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)

"""Figures shared by the GNN stage (train_val.py) and the CV summary (cross_validation.py); matplotlib
only, so that drawing a figure imports neither torch_geometric nor a training module."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoder.core import config, util


def plot_confusion(confusion: list[list[int]], title: str, path: Path) -> None:
    """Confusion matrix as a PNG: cells coloured by the share of the true class, labelled with counts."""
    from matplotlib.figure import Figure

    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = range(len(config.EMOTIONS))
    ax.set_xticks(ticks, config.EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(ticks, config.EMOTIONS)
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (first listed label)")
    ax.set_title(title)
    fig.tight_layout()
    with util.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)

"""Figures of the GNN stage (train_val.py), the CV summary (cv_results.py) and prediction
(predict.py's timelines); matplotlib only, so that drawing a figure imports neither torch_geometric nor
a training module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from encoder.core import config, util

COLOURS = {"neutral": "#b0b0b0", "happy": "#f2c12e", "surprise": "#ef7f1a", "angry": "#d62728",
           "sad": "#1f77b4", "disqust": "#2ca02c", "fear": "#8c55b8"}  # per emotion, in the timelines


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


def _time_of_day(seconds: float, _position: Any = None) -> str:
    """Seconds of day as HH:MM:SS (a matplotlib tick formatter)."""
    seconds = int(round(seconds)) % 86400
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def plot_timeline(rows: pd.DataFrame, identities: list[str], title: str, path: Path) -> None:
    """Segments of one script along time, one row per speaker: bar = predicted, strip above = true.
    Wav time when every segment has annotated times, else time of day from the bio timestamps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    wav = bool((rows["time_from"] == "wav").all())
    start, end = (rows["start_s"], rows["end_s"]) if wav else (rows["bio_start"], rows["bio_end"])
    low = 0.0 if wav or not len(rows) else float(start.min())
    span = (float(end.max()) - low) if len(rows) else 1.0
    fig = Figure(figsize=(min(max(8.0, span / 12), 24.0), 1.2 + 1.0 * len(identities)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for y, identity in enumerate(identities):
        mine = (rows["identity"] == identity).to_numpy()
        left, widths = start[mine], (end[mine] - start[mine]).to_numpy()
        ax.barh(y, widths, left=left, height=0.5, color=[COLOURS[p] for p in rows["predicted"][mine]],
                edgecolor="black", linewidth=0.4)
        known = (rows["true"][mine] != "").to_numpy()
        ax.barh(y - 0.34, widths[known], left=left[known], height=0.12,
                color=[COLOURS[t] for t in rows["true"][mine][known]], linewidth=0)
    ax.set_yticks(range(len(identities)), identities)
    ax.set_ylim(-0.5, len(identities) - 0.5)
    ax.invert_yaxis()
    ax.set_xlim(low, low + span * 1.01)
    if wav:
        ax.set_xlabel("time in the script's recording (s, annotation wav start/end)")
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(_time_of_day))
        ax.set_xlabel("time of day (from the EDA/TEMP timestamps: no annotated wav start/end)")
    ax.set_title(f"{title}   (bar: predicted, thin strip above: true label)", fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=e) for e, c in COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    with util.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)

"""Label every segment of KEMDy20-format sessions with a trained encoder and GNN; draw one timeline per script.

    python predict.py --encoder encoder/STE_TRAIN/best.pth --gnn results/<exp>/best.pth \\
                      --session encoder/KEMDy20_demo [--sessions 37,38] [--out predictions.csv] [--device cpu|N]

`--session` is a folder in the KEMDy20 layout (annotation/, wav/, EDA/, TEMP/) holding one or more
sessions; `--sessions` picks some of them. Its dataframe tables are built in memory (nothing is written
into it); the annotation supplies the segment IDs and wav spans. Per session, every 4 Hz step of every
kept segment is embedded by the encoder (1536-d, the batching path of STE_forward), the nodes are cut
into temporal graphs with the settings the GNN was trained on (numv, time_edge, cross_identity: from
the checkpoint, else from metrics.json or graph_build.json beside it), the GNN gives each node a softmax
over the seven emotions, and a segment's probabilities are the mean of its nodes'. Annotation labels
never reach the models: they only fill the `true` column (the first listed label, the metric target)
and the strips of the timelines.

Writes (the CSV last, atomically; nothing when the input is bad):
  <out>                                 segment_id, session, script, identity, start_s, end_s, predicted,
                                        p_neutral ... p_fear, true (empty where unknown)
  <out stem>_SessSS_scriptCC.png        beside the CSV, per session and script: the segments along the
                                        script's wav time, one row per speaker, coloured by the predicted
                                        emotion, the true label as a thin strip above each bar
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import generate_graph
import models_gnn
import train_val
from encoder.core import checkpoints, config, distributed, frames, prediction, util
from encoder.core.dataset import Segment, load_segments
from encoder.core.metrics import classification_metrics, segment_predictions
from encoder.core.models import STREAM_DIM, inference_model

COLUMNS = ("segment_id", "session", "script", "identity", "start_s", "end_s", "predicted",
           *(f"p_{e}" for e in config.EMOTIONS), "true")
COLOURS = {"neutral": "#b0b0b0", "happy": "#f2c12e", "surprise": "#ef7f1a", "angry": "#d62728",
           "sad": "#1f77b4", "disqust": "#2ca02c", "fear": "#8c55b8"}
GRAPH_KEYS = ("numv", "time_edge", "cross_identity")
GNN_BATCH = 16  # graphs per GNN forward pass (evaluation mode: the batch does not change the output)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, required=True, help="encoder checkpoint (STE_TRAIN/best.pth)")
    parser.add_argument("--gnn", type=Path, required=True, help="GNN checkpoint (results/<exp>/best.pth)")
    parser.add_argument("--session", type=Path, required=True, help="folder in the KEMDy20 layout")
    parser.add_argument("--sessions", default=None, help="comma-separated session numbers, e.g. 37,38 (default: all)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index")
    parser.add_argument("--batch_size", type=int, default=config.STE_forward_params["batch_size"],
                        help="encoder nodes per batch")
    parser.add_argument("--num_workers", type=int, default=config.STE_forward_params["num_workers"],
                        help="encoder data-loading processes")
    return parser.parse_args(argv)


def parse_sessions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise util.DataError(f"--sessions must be comma-separated numbers, not {text!r}") from None


# --------------------------------------------------------------------------- models


def graph_settings(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """numv, time_edge and cross_identity the GNN was trained with: from the checkpoint, else from
    train_val's metrics.json (`graphs.build`) or a graph_build.json (`build`) beside it."""
    candidates = [ckpt.get("graph_build")]
    metrics, record = path.parent / "metrics.json", path.parent / "graph_build.json"
    if metrics.is_file():
        candidates.append((util.read_json(metrics).get("graphs") or {}).get("build"))
    if record.is_file():
        candidates.append(util.read_json(record).get("build"))
    for build in candidates:
        if isinstance(build, dict) and all(k in build for k in GRAPH_KEYS):
            return {"numv": int(build["numv"]), "time_edge": float(build["time_edge"]),
                    "cross_identity": str(build["cross_identity"])}
    raise util.DataError("no graph settings (numv, time_edge, cross_identity) in the checkpoint nor in a "
                         "metrics.json or graph_build.json beside it", path)


def trained_encoder_sha(path: Path) -> str | None:
    """sha256 of the encoder whose features the GNN was trained on, when its graph folder is still there."""
    metrics = path.parent / "metrics.json"
    if not metrics.is_file():
        return None
    graph_dir = (util.read_json(metrics).get("graphs") or {}).get("dir")
    record = Path(graph_dir) / "graph_build.json" if graph_dir else None
    return util.read_json(record).get("encoder_sha256") if record is not None and record.is_file() else None


def check_compatible(gnn: models_gnn.SPELL, gnn_path: Path, encoder_state: dict[str, Any], encoder_path: Path) -> None:
    """The GNN's input blocks must be the encoder's embedding blocks, in the same order."""
    embedding = {str(m): STREAM_DIM for m in encoder_state.get("feature_order", [])}
    if list(gnn.feature_dims.items()) != list(embedding.items()):
        raise util.DataError(f"GNN expects node features {gnn.feature_dims}, the encoder {encoder_path} "
                             f"gives {embedding}", gnn_path)


# --------------------------------------------------------------------------- data and prediction


def session_segments(root: Path, sessions: list[int] | None) -> tuple[pd.DataFrame, list[Segment], dict[str, str]]:
    """Annotation rows (kept segments of the chosen sessions), their usable segments and the skipped ones."""
    built = frames.build_frames(root)
    available = sorted(int(s) for s in built.gt["session"].unique())
    chosen = available if sessions is None else sessions
    missing = [s for s in chosen if s not in available]
    if missing:
        raise util.DataError(f"session {missing[0]} has no usable annotated segment here "
                             f"(sessions: {', '.join(map(str, available))})", root)
    table = load_segments(built, root, splits={"predict": tuple(chosen)}, wanted=("predict",))
    gt = built.gt[built.gt["session"].isin(chosen)].set_index("script")
    return gt, table.by_split["predict"], table.skipped


def session_nodes(segments: list[Segment], pred: prediction.Predictions) -> dict[str, Any]:
    """Node columns as generate_graph.read_nodes returns them; labels are zero (never used for prediction)."""
    n = len(pred.step)
    return {
        "session": np.array([segments[i].session for i in pred.segment_index], dtype=np.int64),
        "time_s": np.array([segments[i].ts[s] for i, s in zip(pred.segment_index, pred.step, strict=True)]),
        "identity": np.array([segments[i].identity for i in pred.segment_index], dtype=str),
        "label": np.zeros((n, config.NUM_CLASSES), dtype=np.float32),
        "target": np.zeros(n, dtype=np.int64),
        "segment_id": np.array([segments[i].segment_id for i in pred.segment_index], dtype=str),
        "feature": np.ascontiguousarray(pred.features, dtype=np.float32),
    }


def predict_segments(encoder: torch.nn.Module, encoder_state: dict[str, Any], gnn: models_gnn.SPELL,
                     graphs: dict[str, Any], segments: list[Segment], device: torch.device,
                     forward: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Segment IDs and their mean node probabilities, one session at a time (bounded memory)."""
    ids: list[str] = []
    probs: list[np.ndarray] = []
    for session in sorted({s.session for s in segments}):
        mine = [s for s in segments if s.session == session]
        nodes = session_nodes(mine, prediction.embed_segments(encoder, encoder_state, mine, device, forward))
        built = list(generate_graph.session_graphs(nodes, graphs["numv"], graphs["time_edge"],
                                                   graphs["cross_identity"]))
        out = train_val.predict(gnn, built, GNN_BATCH, device)
        seg_ids, _, _, mean = segment_predictions(out["segment_ids"], out["probs"], out["targets"])
        ids += seg_ids
        probs.append(mean)
    return ids, np.concatenate(probs)


def prediction_table(ids: list[str], probs: np.ndarray, gt: pd.DataFrame) -> pd.DataFrame:
    """One row per segment in COLUMNS order, sorted by session, script and start time."""
    parsed = [util.parse_segment_id(i) for i in ids]
    rows = gt.loc[ids]
    table = pd.DataFrame({
        "segment_id": ids,
        "session": [p["session"] for p in parsed],
        "script": [p["script"] for p in parsed],
        "identity": [p["identity"] for p in parsed],
        "start_s": rows["wav_start"].to_numpy(dtype=float),
        "end_s": rows["wav_end"].to_numpy(dtype=float),
        "predicted": [config.EMOTIONS[k] for k in probs.argmax(axis=1)],
        **{f"p_{e}": probs[:, k] for k, e in enumerate(config.EMOTIONS)},
        "true": [config.EMOTIONS[int(t)] if pd.notna(t) else "" for t in rows["target"]],
    })
    return table.sort_values(["session", "script", "start_s", "segment_id"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- outputs


def plot_timeline(rows: pd.DataFrame, identities: list[str], title: str, path: Path) -> None:
    """Segments of one script along wav time, one row per speaker: bar = predicted, strip above = true."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    span = float(rows["end_s"].max()) if len(rows) else 1.0
    fig = Figure(figsize=(min(max(8.0, span / 12), 24.0), 1.2 + 1.0 * len(identities)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for y, identity in enumerate(identities):
        mine = rows[rows["identity"] == identity]
        widths = (mine["end_s"] - mine["start_s"]).to_numpy()
        ax.barh(y, widths, left=mine["start_s"], height=0.5, color=[COLOURS[p] for p in mine["predicted"]],
                edgecolor="black", linewidth=0.4)
        known = (mine["true"] != "").to_numpy()
        ax.barh(y - 0.34, widths[known], left=mine["start_s"][known], height=0.12,
                color=[COLOURS[t] for t in mine["true"][known]], linewidth=0)
    ax.set_yticks(range(len(identities)), identities)
    ax.set_ylim(-0.5, len(identities) - 0.5)
    ax.invert_yaxis()
    ax.set_xlim(0, span * 1.01)
    ax.set_xlabel("time in the script's recording (s)")
    ax.set_title(f"{title}   (bar: predicted, thin strip above: true label)", fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=e) for e, c in COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    with util.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def write_outputs(table: pd.DataFrame, out: Path) -> list[Path]:
    """One timeline PNG per (session, script) beside `out`, then the CSV; returns the PNG paths."""
    pngs = []
    for (session, script), rows in table.groupby(["session", "script"], sort=True):
        identities = sorted(table.loc[table["session"] == session, "identity"].unique())
        path = out.parent / f"{out.stem}_Sess{session:02d}_script{script:02d}.png"
        scored = rows[rows["true"] != ""]
        accuracy = f", accuracy {(scored['predicted'] == scored['true']).mean():.2f}" if len(scored) else ""
        plot_timeline(rows, identities, f"Sess{session:02d} script{script:02d}: {len(rows)} segments{accuracy}", path)
        pngs.append(path)
    with util.atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, columns=list(COLUMNS), float_format="%.6g")
    return pngs


def score_line(table: pd.DataFrame) -> str:
    scored = table[table["true"] != ""]
    if scored.empty:
        return "no true labels: accuracy not computed"
    index = {e: k for k, e in enumerate(config.EMOTIONS)}
    m = classification_metrics(scored["true"].map(index), scored["predicted"].map(index))
    return (f"segment level, {m['n']} segments with a true label (first listed): accuracy {m['accuracy']:.4f}, "
            f"macro-F1 {m['macro_f1']:.4f}")


def main() -> None:
    args = parse_args()
    sessions = parse_sessions(args.sessions)
    device = distributed.resolve_device(args.device)
    encoder_state = checkpoints.load_encoder_checkpoint(args.encoder)
    gnn, gnn_ckpt = models_gnn.load_checkpoint(args.gnn, map_location="cpu")
    check_compatible(gnn, args.gnn, encoder_state, args.encoder)
    graphs = graph_settings(args.gnn, gnn_ckpt)
    trained_on = trained_encoder_sha(args.gnn)
    if trained_on is not None and trained_on != util.file_sha256(args.encoder):
        print(f"note: the GNN was trained on features of another encoder checkpoint than {args.encoder}")
    encoder = inference_model(checkpoints.encoder_from_checkpoint(encoder_state, args.encoder)).to(device)
    gt, segments, skipped = session_segments(args.session, sessions)
    forward = {"batch_size": args.batch_size, "num_workers": args.num_workers}
    ids, probs = predict_segments(encoder, encoder_state, gnn.to(device), graphs, segments, device, forward)
    table = prediction_table(ids, probs, gt)
    pngs = write_outputs(table, args.out)
    counts = ", ".join(f"Sess{s:02d} {n}" for s, n in table.groupby("session").size().items())
    print(f"predicted {len(table)} segments ({counts}); graphs numv {graphs['numv']}, time_edge "
          f"{graphs['time_edge']:g} s, {graphs['cross_identity']}"
          + (f"; skipped {len(skipped)} unusable segments" if skipped else ""))
    print(score_line(table))
    print(f"predictions: {args.out}")
    print(f"timelines: {', '.join(str(p) for p in pngs)}")


if __name__ == "__main__":
    util.run_cli(main)

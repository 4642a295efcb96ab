"""Label every segment of KEMDy20-format sessions with a trained encoder and GNN; draw one timeline per script.

    python predict.py --model results/<exp> --session DIR [--sessions 37,38] [--out predictions.csv]
                      [--online] [--device auto|cpu|N]
    python predict.py --encoder encoder/STE_TRAIN/best.pth --gnn results/<exp>/best.pth --session DIR ...
    python predict.py --model results/<exp> --session DIR --text_model DIR --speech_model DIR

`--model` is a results/<exp> folder of train_val.py (or the model/ folder inside it, wherever it was
copied): it holds the GNN, the encoder its features came from (both checked by sha256) and the
settings prediction must reproduce (model_folder.py). The two-checkpoint form reads the same record,
the model.json of the GNN's folder, and refuses an encoder other than the one whose features trained
the GNN (by sha256), or a GNN without that record. Embeddings are computed in the precision the
GNN's training features were (float32, or float16 under CUDA autocast; on a CPU always float32, with a
note when that differs).

`--session` is a folder in the KEMDy20 layout, with or without annotation/ (docs/prediction.md, the
input folder); labels are never needed and never reach the models.

A GNN that reads the text block (train_val.py --modalities ...,text) needs the transcripts
(wav/SessionSS/<segment ID>.txt, read as the dataframe stage reads them): they are vectorised with the
text block saved in the model folder. A folder with none is an error that says so, as is one where more
than config.MAX_SKIP_SHARE of the segments lack one; below that share a segment without transcript gets
the empty transcript's vector, as in training, and the count is printed. A GNN that does not read the
block needs no transcript (its features' text columns, if any, are NaN: never read, never zero).
Pretrained blocks (encoder/core/pretrained.py, `lm` and `ssl`) that the GNN reads are computed from the
model folders model.json records by path and sha256, or from `--text_model DIR` / `--speech_model DIR`:
a folder whose sha256 differs from the recorded one is refused, naming both hashes. The `lm` block
needs the transcripts as the text block does; the `ssl` block runs the speech model once per segment
wav. A pretrained block the GNN does not read needs no folder (NaN columns, as above). A GNN trained with
the `prosody` block (classical.py) gets each segment's hand-crafted speech statistics, normalised over the
folder's segments of its participant, appended after the features' own blocks as train_val.py did.

When the model folder holds the classical system (classical.npz, classical.py), its label of every usable
segment is the CSV's `classical_predicted` column, its statistics normalised per participant over the
folder's segments (prefix statistics for a causal run's system), and its score is printed beside the GNN's.
When the folder records the fusion system too (model.json's settings.fusion, late_fusion.py), the
`fusion_predicted` column is argmax(log p_classical + w · log p_GNN) of each segment both label, with the
weight w train_val.py chose on the validation sessions, and its score is printed as well.

Per session, every 4 Hz step of every usable segment is embedded by the encoder (1536-d), the nodes
are cut into temporal graphs with the settings the GNN was trained on (numv, time_edge,
cross_identity), the GNN gives each node a softmax over the seven emotions, and a segment's
probabilities are the mean of its nodes'.

`--online` replays the nodes in time order with a causal GNN (online.py). Participant statistics,
the online mode and the files written (the CSV last, atomically; nothing when the input is bad):
docs/prediction.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from encoder.core import (
    checkpoints,
    config,
    extraction,
    frames,
    participant,
    plots,
    prediction,
    pretrained,
    text,
    util,
)
from encoder.core.dataset import Segment, load_segments
from encoder.core.metrics import classification_metrics, decided, segment_predictions
from encoder.core.models import STREAM_DIM
from temporal_gnn import classical, gnn_model, gnn_training, graph_building, model_folder, online

COLUMNS = ("segment_id", "session", "script", "identity", "start_s", "end_s", "time_from", "predicted",
           *(f"p_{e}" for e in config.EMOTIONS), "true", "reason", "participant_segments", "classical_predicted",
           "fusion_predicted")
NODE_CSV_COLUMNS = ("session", "segment_id", "identity", "time_s", "predicted", *(f"p_{e}" for e in config.EMOTIONS))
GNN_BATCH = 16  # graphs per GNN forward pass (evaluation mode: the batch does not change the output)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="results/<exp> of train_val.py, or its model/ folder")
    parser.add_argument("--encoder", type=Path, help="encoder checkpoint (STE_TRAIN/best.pth), with --gnn")
    parser.add_argument("--gnn", type=Path, help="GNN checkpoint (results/<exp>/best.pth), with --encoder")
    parser.add_argument("--session", type=Path, required=True, help="folder in the KEMDy20 layout")
    parser.add_argument("--sessions", default=None, help="comma-separated session numbers, e.g. 37,38 (default: all)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    parser.add_argument("--online", action="store_true",
                        help="label nodes as they arrive, from the past only (needs a train_val.py --causal GNN)")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when available, else the CPU), 'cpu' or a CUDA device index")
    parser.add_argument("--batch_size", type=int, default=config.STE_forward_params["batch_size"],
                        help="encoder nodes per batch")
    parser.add_argument("--num_workers", type=int, default=config.STE_forward_params["num_workers"],
                        help="encoder data-loading processes")
    parser.add_argument("--text_model", type=Path, default=None,
                        help="language model folder for the `lm` block (default: the path model.json records)")
    parser.add_argument("--speech_model", type=Path, default=None,
                        help="speech model folder for the `ssl` block (default: the path model.json records)")
    return parser.parse_args(argv)


def parse_sessions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise util.DataError(f"--sessions must be comma-separated numbers, not {text!r}") from None


# --------------------------------------------------------------------------- models


def check_compatible(gnn: gnn_model.SPELL, gnn_path: Path, encoder_state: dict[str, Any], encoder_path: Path,
                     text_dim: int | None = None, pretrained_dims: dict[str, int] | None = None,
                     prosody_dim: int | None = None) -> None:
    """The GNN's input blocks must be the encoder's embedding blocks, in the same order, then the text
    block when its features had one (`text_dim`), then the pretrained blocks they had (`pretrained_dims`),
    then the prosody block when it was trained with one (`prosody_dim`, classical.py)."""
    embedding = {str(m): STREAM_DIM for m in encoder_state.get("feature_order", [])}
    if text_dim is not None:
        embedding[text.NAME] = int(text_dim)
    embedding.update({name: int(dim) for name, dim in (pretrained_dims or {}).items()})
    if prosody_dim is not None:
        embedding[classical.PROSODY] = int(prosody_dim)
    if list(gnn.feature_dims.items()) != list(embedding.items()):
        raise util.DataError(f"GNN expects node features {gnn.feature_dims}, the encoder {encoder_path} "
                             f"gives {embedding}", gnn_path)


@dataclass
class LoadedModel:
    """What prediction runs: the encoder checkpoint, the GNN, the settings its training features and
    graphs were made with, and the text and pretrained blocks it reads (load_models)."""

    encoder_path: Path
    encoder_state: dict[str, Any]  # checkpoints.load_encoder_checkpoint
    gnn: gnn_model.SPELL
    gnn_path: Path
    graphs: dict[str, Any]  # numv, time_edge, cross_identity
    precision: str | None  # the training features' feature_precision; None: not recorded
    text_dim: int | None  # the features' text block width; None: they had none
    text_block: text.TextBlock | None  # None unless the GNN reads the text block
    pretrained_dims: dict[str, int]  # the features' pretrained blocks (pretrained.NAMES order) and widths
    pretrained_blocks: dict[str, pretrained.PretrainedBlock]  # those the GNN reads, loaded
    system_paths: dict[str, Path]  # baseline systems saved in the model folder (systems.py), verified
    prosody_dim: int | None = None  # the prosody block's width when the GNN was trained with one (classical.py)
    decision: dict[str, Any] | None = None  # the GNN's segment decision (gnn_training.decide); None: plain argmax
    fusion: dict[str, Any] | None = None  # the fusion system's weight of the GNN (late_fusion.py); None: not fitted

    @property
    def appended_dims(self) -> dict[str, int]:
        """The features' blocks after the encoder's, in order: text (when they had it), then the pretrained ones."""
        return {**({text.NAME: int(self.text_dim)} if self.text_dim is not None else {}), **self.pretrained_dims}


def load_models(args: argparse.Namespace) -> LoadedModel:
    """Encoder checkpoint, GNN, graph settings, feature precision and the blocks the GNN reads, from
    --model or --encoder/--gnn."""
    if args.model is not None and (args.encoder is not None or args.gnn is not None):
        raise util.DataError("give --model, or --encoder and --gnn, not both")
    if args.model is None and (args.encoder is None or args.gnn is None):
        raise util.DataError("give --model results/<exp> (train_val.py's folder), or --encoder and --gnn")
    if args.model is not None:
        folder = model_folder.load(args.model)
        gnn, _ = gnn_model.load_checkpoint(folder["gnn_path"], map_location="cpu")
    else:  # the checkpoint first: a file that is no GNN checkpoint is named as such, not as one without a record
        gnn, _ = gnn_model.load_checkpoint(args.gnn, map_location="cpu")
        folder = model_folder.load_pair(args.encoder, args.gnn)
    encoder_path, gnn_path = folder["encoder_path"], folder["gnn_path"]
    encoder_state = checkpoints.load_encoder_checkpoint(encoder_path)
    graph = folder["graph"]
    graphs = {"numv": int(graph["numv"]), "time_edge": float(graph["time_edge"]),
              "cross_identity": str(graph["cross_identity"])}
    feature_dims = folder.get("feature_dims") or {}
    text_dim = feature_dims.get(text.NAME)
    pretrained_dims = {name: int(feature_dims[name]) for name in pretrained.NAMES if name in feature_dims}
    prosody_dim = feature_dims.get(classical.PROSODY)
    check_compatible(gnn, gnn_path, encoder_state, encoder_path, text_dim, pretrained_dims, prosody_dim)
    reads_text = text.NAME in gnn.modalities
    if args.online and not gnn.causal:
        raise util.DataError("--online needs a causal GNN (train_val.py --causal); this one reads edges from "
                             "later nodes", gnn_path)
    if args.online:
        check_online_blocks(gnn, gnn_path)
    if gnn.causal:
        check_causal_inputs(folder, encoder_state, gnn_path)
    return LoadedModel(encoder_path, encoder_state, gnn, gnn_path, graphs, folder.get("feature_precision"), text_dim,
                       text.TextBlock.load(folder["text_path"]) if reads_text else None, pretrained_dims,
                       pretrained_blocks(args, folder, gnn, pretrained_dims), folder.get("system_paths") or {},
                       prosody_dim, (folder.get("settings") or {}).get("decision"),
                       (folder.get("settings") or {}).get("fusion"))


def check_online_blocks(gnn: gnn_model.SPELL, gnn_path: Path) -> None:
    """util.DataError when the GNN reads a block computed from the whole segment (text, lm, ssl): online,
    a node cannot have it when it arrives."""
    gnn_model.refuse_future_blocks(gnn.modalities, "--online cannot feed", gnn_path)


def check_causal_inputs(folder: dict[str, Any], encoder_state: dict[str, Any], gnn_path: Path) -> None:
    """util.DataError when a causal GNN's features were not extracted with its run-time participant
    statistics (prefix, STE_forward.py --causal): a model folder from before that record, or trained on
    whole-session statistics, would be fed inputs it was never trained on."""
    options = participant.InputOptions.from_inputs(encoder_state["inputs"])
    want = extraction.participant_statistics(options, causal=True)
    if want is not None and folder.get("participant_statistics") != want:
        raise util.DataError(f"causal GNN trained on {folder.get('participant_statistics') or 'whole-session'} "
                             "participant statistics, not the prefix ones it runs on; retrain it on features "
                             "of STE_forward.py --causal", gnn_path)


def participant_segments(segments: list[Segment], options: participant.InputOptions,
                         causal: bool) -> dict[str, int]:
    """Segment ID -> how many of its participant's segments its participant statistics came from: all
    of them here (offline), or (causal) its earlier ones and itself; empty when no option reads them."""
    if not options.needs_participant:
        return {}
    counts = {}
    for group in participant.by_participant(segments).values():
        for k, seg in enumerate(group, start=1):
            counts[seg.segment_id] = k if causal else len(group)
    return counts


def statistics_line(segments: list[Segment], options: participant.InputOptions, causal: bool) -> str | None:
    """The printed line on where the participant statistics came from; None when no option reads them."""
    if not options.needs_participant:
        return None
    groups = participant.by_participant(segments)
    if causal:
        return (f"participant statistics: per node, its participant's signal up to its clip end "
                f"({len(groups)} participants)")
    counts = ", ".join(f"Sess{s:02d} {i} {len(g)}" for (s, i), g in sorted(groups.items()))
    return f"participant statistics from the segments in this folder, per participant: {counts}"


def pretrained_blocks(args: argparse.Namespace, folder: dict[str, Any], gnn: gnn_model.SPELL,
                      dims: dict[str, int]) -> dict[str, pretrained.PretrainedBlock]:
    """The pretrained blocks the GNN reads, loaded (on the CPU) from --text_model / --speech_model or the
    folder model.json records, each checked against the recorded sha256."""
    records = folder.get("pretrained") or {}
    blocks = {}
    for name in dims:
        if name not in gnn.modalities:
            continue
        record = records.get(name) or {}
        path = getattr(args, pretrained.SETTING[name], None) or record.get("folder")
        if not path:
            raise util.DataError(f"the GNN reads the `{name}` block but model.json records no model folder for it",
                                 folder["manifest_path"])
        blocks[name] = pretrained.load_block(name, path, record, "cpu")
    return blocks


def appended_columns(model: LoadedModel, segments: list[Segment], root: Path
                     ) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Per segment the columns appended to its nodes' embeddings, as extraction appended them
    (extraction.appended_columns: the text and pretrained blocks of the GNN's features, NaN for those it
    does not read; None when its features had none), then the prosody block when the GNN was trained with
    it (its statistics normalised over the folder's segments of each participant), and a note on the
    segments without transcript. util.DataError when the GNN reads the text or `lm` block and the folder
    has no transcript, or more than MAX_SKIP_SHARE of the segments lack one."""
    vectors, note = None, None
    if model.text_block is not None:
        without = check_transcripts(segments, root, "the text block")
        note = (f"{len(without)} segments without transcript: their text block is the empty transcript's vector, "
                "as in training" if without else None)
        vectors = text.vectors(model.text_block, segments)
    if pretrained.TEXT in model.pretrained_blocks:
        check_transcripts(segments, root, f"the `{pretrained.TEXT}` block")
    blocks = model.pretrained_blocks.values()
    columns = extraction.appended_columns(segments, model.appended_dims, vectors, blocks)
    if model.prosody_dim is not None:  # after the features' own blocks, as train_val appended it
        columns = extraction.segment_columns(segments, [columns, classical.prosody_vectors(segments)])
    return columns, note


def check_transcripts(segments: list[Segment], root: Path, what: str) -> list[str]:
    """The segments without a readable transcript; util.DataError when all, or more than MAX_SKIP_SHARE,
    lack one (a model that reads `what` needs them)."""
    without = [s.segment_id for s in segments if s.transcript is None]
    if len(without) == len(segments):
        raise util.DataError(f"the model reads {what}, but none of the {len(segments)} segments has a "
                             "readable transcript (wav/SessionSS/<segment ID>.txt); use a model trained without "
                             "text", root)
    if len(without) > config.MAX_SKIP_SHARE * len(segments):
        raise util.DataError(f"the model reads {what}, but {len(without)} of {len(segments)} segments have "
                             f"no readable transcript (first: {without[0]}), above MAX_SKIP_SHARE="
                             f"{config.MAX_SKIP_SHARE:g}", root)
    return without


def embedding_amp(precision: str | None, device: torch.device) -> tuple[dict[str, Any], str | None]:
    """encoder settings (config.STE_forward_params' `amp`) that reproduce the training features' precision,
    and a note where this device cannot. Unknown precision (older files): the configured default."""
    if precision is None:
        return {}, None
    if precision == extraction.FLOAT16 and device.type != "cuda":
        return {"amp": False}, ("the GNN was trained on float16 features (CUDA autocast); embedding in float32 "
                                "on the CPU")
    return {"amp": precision == extraction.FLOAT16}, None


# --------------------------------------------------------------------------- data and prediction


def session_segments(root: Path, sessions: list[int] | None) -> tuple[pd.DataFrame, list[Segment], dict[str, str]]:
    """Segment rows (labelled or not, from the annotation or the wav files) of the chosen sessions,
    kept or not, their usable segments and the unusable ones (segment ID -> reason)."""
    built = frames.build_frames(root, labels_required=False)
    available = sorted(int(s) for s in built.segments["session"].unique())
    chosen = available if sessions is None else sessions
    missing = [s for s in chosen if s not in available]
    if missing:
        raise util.DataError(f"session {missing[0]} has no usable segment here "
                             f"(sessions: {', '.join(map(str, available)) or 'none'})", root)
    table = load_segments(built, root, splits={"predict": tuple(chosen)}, wanted=("predict",),
                          labels_required=False)
    gt = built.segments[built.segments["session"].isin(chosen)].set_index("segment_id")
    return gt, table.by_split["predict"], table.unusable


def session_nodes(segments: list[Segment], pred: prediction.Predictions,
                  columns: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Node columns as graph_building.read_nodes returns them; labels are zero (never used for prediction).
    `columns` (appended_columns) are appended to each node's embedding."""
    n = len(pred.step)
    feature = pred.features
    if columns is not None:
        nodes = [(segments[i].segment_id, int(s)) for i, s in zip(pred.segment_index, pred.step, strict=True)]
        feature = np.concatenate([feature, extraction.node_columns(columns, nodes)], axis=1)
    return {
        "session": np.array([segments[i].session for i in pred.segment_index], dtype=np.int64),
        "time_s": np.array([segments[i].ts[s] for i, s in zip(pred.segment_index, pred.step, strict=True)]),
        "identity": np.array([segments[i].identity for i in pred.segment_index], dtype=str),
        "label": np.zeros((n, config.NUM_CLASSES), dtype=np.float32),
        "target": np.zeros(n, dtype=np.int64),
        "segment_id": np.array([segments[i].segment_id for i in pred.segment_index], dtype=str),
        "feature": np.ascontiguousarray(feature, dtype=np.float32),
    }


def predict_segments(encoder: torch.nn.Module, encoder_state: dict[str, Any], gnn: gnn_model.SPELL,
                     graphs: dict[str, Any], segments: list[Segment], device: torch.device,
                     forward: dict[str, Any], columns: dict[str, np.ndarray] | None = None
                     ) -> tuple[list[str], np.ndarray]:
    """Segment IDs and their mean node probabilities, one session at a time (bounded memory). A causal
    GNN's nodes get prefix participant statistics and one unchunked graph per session, as online."""
    ids: list[str] = []
    probs: list[np.ndarray] = []
    for session in sorted({s.session for s in segments}):
        mine = [s for s in segments if s.session == session]
        nodes = session_nodes(mine, prediction.embed_segments(encoder, encoder_state, mine, device, forward,
                                                              causal=gnn.causal), columns)
        numv = len(nodes["time_s"]) if gnn.causal else graphs["numv"]
        built = list(graph_building.session_graphs(nodes, numv, graphs["time_edge"], graphs["cross_identity"]))
        out = gnn_training.predict(gnn, built, GNN_BATCH, device)
        seg_ids, _, _, mean = segment_predictions(out["segment_ids"], out["probs"], out["targets"])
        ids += seg_ids
        probs.append(mean)
    return ids, np.concatenate(probs)


def predict_online(encoder: torch.nn.Module, encoder_state: dict[str, Any], gnn: gnn_model.SPELL,
                   graphs: dict[str, Any], segments: list[Segment], device: torch.device,
                   amp: bool, columns: dict[str, np.ndarray] | None = None
                   ) -> tuple[list[str], np.ndarray, pd.DataFrame, dict[str, Any]]:
    """The online replay (online.replay) of every session: segment IDs in the order they were labelled,
    their probabilities, the node table (NODE_CSV_COLUMNS, arrival order) and latency figures; `columns`
    (appended_columns) are appended to each node's embedding."""
    ids: list[str] = []
    probs: list[np.ndarray] = []
    rows: list[tuple] = []
    seconds: list[float] = []
    window = 0
    for session in sorted({s.session for s in segments}):
        mine = [s for s in segments if s.session == session]
        embedder = online.NodeEmbedder(encoder, encoder_state, device, amp)
        if columns is not None:
            embedder = _WithColumns(embedder, columns)
        stream = online.OnlineGNN(gnn, graphs["time_edge"], graphs["cross_identity"], device)
        with tqdm(total=sum(s.n_steps for s in mine), desc=f"Sess{session:02d} online", unit="node",
                  leave=False) as bar:
            for arrival in online.replay(embedder, stream, mine):
                for (seg, step), p in zip(arrival.nodes, arrival.probs, strict=True):
                    rows.append((session, seg.segment_id, seg.identity, float(seg.ts[step]),
                                 config.EMOTIONS[int(p.argmax())], *p))
                ids += list(arrival.segments_done)
                probs += list(arrival.segments_done.values())
                seconds += [arrival.seconds] * len(arrival.nodes)
                window = max(window, stream.window)
                bar.update(len(arrival.nodes))
    latency = np.asarray(seconds) * 1000
    timing = {"nodes": len(rows), "window": window, "p50_ms": float(np.percentile(latency, 50)),
              "p95_ms": float(np.percentile(latency, 95))}
    return ids, np.stack(probs), pd.DataFrame(rows, columns=list(NODE_CSV_COLUMNS)), timing


class _WithColumns:
    """A NodeEmbedder whose embeddings get their segment's appended columns (text, pretrained) appended."""

    def __init__(self, embedder: online.NodeEmbedder, columns: dict[str, np.ndarray]):
        self.embedder, self.columns = embedder, columns

    def embed(self, nodes: list[tuple[Segment, int]]) -> torch.Tensor:
        features = self.embedder.embed(nodes)
        extra = torch.from_numpy(extraction.node_columns(self.columns, [(seg.segment_id, step) for seg, step in nodes]))
        return torch.cat([features, extra.to(features.device)], dim=1)

    def release(self, segment_id: str) -> None:
        self.embedder.release(segment_id)


def prediction_table(ids: list[str], probs: np.ndarray, gt: pd.DataFrame, segments: list[Segment],
                     unusable: dict[str, str] | None = None, stats_segments: dict[str, int] | None = None,
                     decision: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per segment of `ids` (predicted) and of `unusable` (no prediction: empty probabilities
    and its `reason`), in COLUMNS order plus bio_start/bio_end (the times from the bio timestamps, for
    the timelines), sorted by session, script and start time. An unusable segment without annotated
    wav times has no start_s/end_s (time_from empty); `stats_segments` (participant_segments) fills
    participant_segments (empty where absent); `decision` ({"tau", "prior"}, model.json's) adjusts the
    predicted class as train_val did (metrics.decided; None: the argmax)."""
    stats_segments = stats_segments or {}
    unusable = dict(unusable or {})
    n_predicted = len(ids)
    ids = [*ids, *unusable]
    probs = np.concatenate([probs.reshape(n_predicted, config.NUM_CLASSES),
                            np.full((len(unusable), config.NUM_CLASSES), np.nan)])
    parsed = [util.parse_segment_id(i) for i in ids]
    rows = gt.loc[ids]
    by_id = {s.segment_id: s for s in segments}
    bio_start = np.array([by_id[i].ts[0] if i in by_id else np.nan for i in ids])
    bio_end = np.array([by_id[i].ts[-1] + config.BIO_STEP_S if i in by_id else np.nan for i in ids])
    wav_start, wav_end = rows["wav_start"].to_numpy(dtype=float), rows["wav_end"].to_numpy(dtype=float)
    from_wav = np.isfinite(wav_start) & np.isfinite(wav_end)
    predicted = np.arange(len(ids)) < n_predicted
    classes = decided(probs[:n_predicted], decision) if n_predicted else np.zeros(0, dtype=int)
    table = pd.DataFrame({
        "segment_id": ids,
        "session": [p["session"] for p in parsed],
        "script": [p["script"] for p in parsed],
        "identity": [p["identity"] for p in parsed],
        "start_s": np.where(from_wav, wav_start, bio_start),
        "end_s": np.where(from_wav, wav_end, bio_end),
        "time_from": np.where(from_wav, "wav", np.where(predicted, "bio", "")),
        "predicted": [config.EMOTIONS[int(classes[i])] if ok else "" for i, ok in enumerate(predicted)],
        **{f"p_{e}": probs[:, k] for k, e in enumerate(config.EMOTIONS)},
        "true": [config.EMOTIONS[int(t)] if pd.notna(t) else "" for t in rows["target"]],
        "reason": ["" if ok else unusable[i] for i, ok in zip(ids, predicted, strict=True)],
        "participant_segments": [str(stats_segments[i]) if i in stats_segments else "" for i in ids],
        "bio_start": bio_start,
        "bio_end": bio_end,
    })
    return table.sort_values(["session", "script", "start_s", "segment_id"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- outputs


def write_outputs(table: pd.DataFrame, out: Path, nodes: pd.DataFrame | None = None) -> list[Path]:
    """One timeline PNG per (session, script) beside `out`, the node CSV (online), then the CSV;
    returns the PNG paths."""
    pngs = []
    predicted = table[table["predicted"] != ""]
    for (session, script), rows in predicted.groupby(["session", "script"], sort=True):
        identities = sorted(table.loc[table["session"] == session, "identity"].unique())
        path = out.parent / f"{out.stem}_Sess{session:02d}_script{script:02d}.png"
        scored = rows[rows["true"] != ""]
        accuracy = f", accuracy {(scored['predicted'] == scored['true']).mean():.2f}" if len(scored) else ""
        unlabelled = int(((table["session"] == session) & (table["script"] == script)).sum()) - len(rows)
        missing = f", {unlabelled} without prediction" if unlabelled else ""
        title = f"Sess{session:02d} script{script:02d}: {len(rows)} segments{accuracy}{missing}"
        plots.plot_timeline(rows, identities, title, path)
        pngs.append(path)
    if nodes is not None:
        write_csv(nodes, NODE_CSV_COLUMNS, node_csv(out))
    write_csv(table, COLUMNS, out)
    return pngs


def write_csv(table: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    """`columns` of `table`, atomically: probabilities to 6 significant digits, times (seconds of day
    need more) to 10."""
    table = table[list(columns)].copy()
    for name in ("start_s", "end_s", "time_s"):
        if name in table:
            table[name] = table[name].map("{:.10g}".format)
    with util.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def node_csv(out: Path) -> Path:
    return out.parent / f"{out.stem}_nodes.csv"


def score_line(table: pd.DataFrame, column: str = "predicted") -> str | None:
    """The accuracy / macro-F1 line of `column`'s labels over the segments with a true label; None when none
    has one."""
    scored = table[(table["true"] != "") & (table[column] != "")]
    if scored.empty:
        return None
    index = {e: k for k, e in enumerate(config.EMOTIONS)}
    m = classification_metrics(scored["true"].map(index), scored[column].map(index))
    return (f"segment level, {m['n']} segments with a true label (first listed): accuracy {m['accuracy']:.4f}, "
            f"macro-F1 {m['macro_f1']:.4f}")

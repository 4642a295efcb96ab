"""Feature extraction: one embedding per 4 Hz step of every segment of every split (512-d per stream of the
encoder: audio, then its bio streams, 1536-d with EDA and TEMP), written per session for the graph stage
(`features_{split}/SessSS.pkl`, rows in util.NODE_COLUMNS order), with `manifest.json` and the encoder's own
test report `encoder_metrics.json`.

The `text` block (text.py) is always extracted when the training sessions have transcripts: it is
cheap (a TF-IDF and a projection per segment) and keeps one feature folder for every modality set, so
`--modalities ...,text` needs no second extraction. It is fitted on the training sessions'
transcripts, saved as `text_block.npz` beside the manifest and appended to every node's feature as the
last block ([audio 512 | EDA 512 | TEMP 512 | text dim]); the manifest's `text` records how it was
made (settings, file sha256, sessions it was fitted on, segments without transcript, seconds taken) or,
when the training sessions have no transcript with a word, why there is no text block.

The pretrained blocks (pretrained.py: `lm` from a language model folder, `ssl` from a speech model
folder, config.PRETRAINED / --text_model, --speech_model) are extracted only when their folder is set,
and appended after the text block in that order (lm, then ssl); the manifest's `pretrained` records
each (folder, its sha256, hidden size, pooling, forward passes, seconds). They are computed one session
at a time, when the session's embeddings are written.

With `causal=True` (STE_forward.py --causal, for train_val.py --causal) and a participant option on
(participant_norm, eda_components), every node's participant statistics and EDA components come from
what has arrived by its clip end, exactly as predict.py --online computes them (participant.prefix_views,
dataset.CausalSegmentDataset), not from the whole session; the manifest's `participant_statistics`
says which ("prefix" or "session"; None with both options off, when the two are the same inputs and
either model may read the features). check_participant_statistics refuses the wrong kind.

Under `torchrun` (WORLD_SIZE > 1) the sessions are sharded over the ranks; rank 0 gathers and writes.
Files are staged in a temporary folder and swapped in at the end, the manifest last.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder.core import config, device_spectrogram, layout, metrics, participant, pretrained, streams, text, util
from encoder.core.checkpoints import encoder_from_checkpoint, load_encoder_checkpoint
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import Segment, load_segments, make_dataset
from encoder.core.distributed import Runtime, barrier, broadcast, gather, start_runtime, stop_runtime
from encoder.core.frames import load_frames
from encoder.core.models import STREAM_DIM, inference_model
from encoder.core.participant import InputOptions
from encoder.core.prediction import Predictions, iter_predictions
from encoder.core.training import LearningOptions

Log = Callable[[str], None]
PREDICTIONS_FILE = "encoder_predictions_test.csv"
METRICS_FILE = "encoder_metrics.json"
MANIFEST_FILE = "manifest.json"
FLOAT16 = "float16-autocast"  # feature_precision of embeddings computed under CUDA autocast


def extract_features(
    clip_length: int | None = None,
    device: str | int | torch.device = "cpu",
    root: Path | None = None,
    frames: Any = None,
    checkpoint: Path | None = None,
    out_dir: Path | None = None,
    forward: dict[str, Any] | None = None,
    splits: dict[str, Sequence[int]] | None = None,
    log: Log | None = print,
    encoder_splits: dict[str, Sequence[int]] | None = None,
    text: dict[str, Any] | None = None,
    pretrained: dict[str, Any] | None = None,
    causal: bool = False,
) -> dict[str, Any]:
    """Write `features_{split}/SessSS.pkl` (rows in util.NODE_COLUMNS order), `manifest.json`,
    `encoder_metrics.json` and `encoder_predictions_test.csv` under out_dir; return the metrics.

    The clip length and spectrogram come from the checkpoint (`clip_length`, when given, must match
    it). The checkpoint's training and validation sessions must be those of `encoder_splits` (default:
    `splits`), else util.DataError naming both: features of an encoder fitted on other sessions are
    never reused. `forward` overrides config.STE_forward_params (batch_size, num_workers, checkpoint, out_dir),
    `text` config.TEXT (the text block's settings), `pretrained` config.PRETRAINED (the lm/ssl folders);
    `causal`: prefix participant statistics, the inputs of a causal model (module docstring)."""
    settings = util.merge_settings(config.STE_forward_params, forward)
    runtime = start_runtime(device)
    try:
        return _extract(runtime, clip_length, root, frames, Path(checkpoint or settings["checkpoint"]),
                        Path(out_dir or settings["out_dir"]), settings, splits, encoder_splits,
                        log if runtime.is_main else None, util.merge_settings(config.TEXT, text),
                        util.merge_settings(config.PRETRAINED, pretrained), causal)
    finally:
        stop_runtime(runtime)


def _extract(runtime: Runtime, clip_length: int | None, root: Path | None, frames: Any, ckpt_path: Path,
             out_dir: Path, settings: dict[str, Any], splits: dict[str, Sequence[int]] | None,
             encoder_splits: dict[str, Sequence[int]] | None, log: Log | None,
             text_settings: dict[str, Any], pretrained_settings: dict[str, Any],
             causal: bool = False) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    util.cuda_determinism(bool(settings["deterministic"]), runtime.device)
    state = load_encoder_checkpoint(ckpt_path)
    model = inference_model(encoder_from_checkpoint(state, ckpt_path)).to(runtime.device)
    signature = state["inputs"]
    if clip_length is not None and int(clip_length) != signature["clip_length"]:
        raise util.DataError(f"checkpoint trained with clip_length {signature['clip_length']}, "
                             f"asked for {clip_length}", ckpt_path)
    params = SpectrogramParams.from_dict(signature)
    norm = Normalization.from_dict(state["normalization"])
    root = Path(root or config.STE_inputs["root"])
    splits = util.session_splits(splits)
    fitted_on = check_encoder_splits(state, encoder_splits or splits, ckpt_path)
    blocks = pretrained.load_blocks(pretrained_settings, runtime.device, signature["clip_length"])
    frames = load_frames(root) if frames is None else frames
    # the nodes' labels are the targets the encoder trained on (soft labels: its learning's vote_weight)
    learning = LearningOptions.from_settings(state.get("learning", {}))
    table = load_segments(frames, root, splits, vote_weight=learning.vote_weight)
    say(table.summary())
    segments = [s for name in splits for s in sorted(table.by_split.get(name, []), key=lambda s: s.session)]
    sessions = sorted({s.session for s in segments})
    mine = set(sessions[runtime.rank :: runtime.world_size])
    staging = broadcast(runtime, tempfile.mkdtemp(prefix=".staging-", dir=_made(out_dir))
                        if runtime.is_main else None)
    try:
        block, text_record = broadcast(runtime, fit_text_block(table, text_settings, Path(staging))
                                       if runtime.is_main else None)
        mine_segments = [s for s in segments if s.session in mine]
        options = InputOptions.from_inputs(signature)
        placement = device_spectrogram.resolve(str(settings["spectrogram_on"]), runtime.device, params, options,
                                               causal, kept=True)
        say(placement.line())
        started = time.perf_counter()
        text_vectors = text.vectors(block, mine_segments) if block is not None else None
        text_record["vector_seconds"] = round(time.perf_counter() - started, 3)  # this rank's segments
        dims = {**({text.NAME: block.dim} if block is not None else {}), **{b.name: b.dim for b in blocks}}
        local = _extract_sessions(runtime, model, mine_segments, norm, signature["clip_length"], params, settings,
                                  Path(staging), dims, text_vectors, blocks, options, causal, placement.on_device)
        results = gather(runtime, local)
        report = None
        if runtime.is_main:
            written = {k: v for part in results for k, v in part["written"].items()}
            parts = {name: [p for part in results for p in part["parts"].get(name, [])] for name in splits}
            report = split_report(table.by_split.get("train", []), parts, fitted_on, settings["decision_tau_grid"])
            manifest = _manifest(ckpt_path, signature, written, splits, root, table.report(), runtime, fitted_on,
                                 text_record, pretrained_records(blocks, results), streams.feature_order(norm.bio))
            manifest["feature_precision"] = feature_precision(runtime.device, bool(settings["amp"]))
            manifest["participant_statistics"] = participant_statistics(options, causal)
            manifest["spectrograms"] = placement.record()
            _write_segment_predictions(parts.get("test", []), Path(staging) / PREDICTIONS_FILE, report["decision"])
            _publish(Path(staging), out_dir, splits, manifest, report)
            say(metrics.format_encoder_metrics(report))
            say(text_line(text_record))
            for name, record in manifest["pretrained"].items():
                say(f"{name} block: {record['dim']}-d from {record['folder']} ({record['model_type']}), "
                    f"{record['forward_passes']} forward passes in {record['seconds']:.2f} s")
            say(f"features: {sum(written.values())} nodes in {len(written)} sessions → {out_dir}")
        barrier(runtime)
        return broadcast(runtime, report)
    finally:
        if runtime.is_main and Path(staging).exists():
            shutil.rmtree(staging)


def participant_statistics(options: InputOptions, causal: bool) -> str | None:
    """The manifest's `participant_statistics`: "prefix" (causal), "session", or None when no option reads them."""
    if not options.needs_participant:
        return None
    return "prefix" if causal else "session"


def check_participant_statistics(manifest: dict[str, Any], causal: bool, path: Path) -> None:
    """util.DataError (naming `path`, the feature manifest) when a causal model would read features with
    whole-session participant statistics, or an offline model features with prefix ones: either would be
    trained and scored on inputs it never sees at run time. A manifest from before the record: "session"."""
    options = InputOptions.from_inputs({"clip_length": manifest.get("clip_length"),
                                        **(manifest.get("input_options") or {})})
    have = manifest.get("participant_statistics", participant_statistics(options, False))
    want = participant_statistics(options, causal)
    if have != want:
        fix = ("extract them with STE_forward.py --causal" if causal else "extract them without --causal")
        raise util.DataError(f"features carry {have} participant statistics, a {'causal' if causal else 'non-causal'}"
                             f" model needs {want} ones (its run-time inputs); {fix}", path)


def feature_precision(device: torch.device, amp: bool) -> str:
    """The precision embeddings are computed in: float16 under CUDA autocast when `amp`, else float32
    (prediction.autocast). Recorded in the manifest so that prediction can embed the same way."""
    return FLOAT16 if amp and device.type == "cuda" else "float32"


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract_sessions(runtime: Runtime, model: torch.nn.Module, segments: list[Segment], norm: Normalization,
                      clip_length: int, params: SpectrogramParams, settings: dict[str, Any],
                      staging: Path, dims: Mapping[str, int] | None = None,
                      text_vectors: dict[str, np.ndarray] | None = None,
                      blocks: Sequence[pretrained.PretrainedBlock] = (),
                      options: InputOptions | None = None, causal: bool = False,
                      on_device: bool = False) -> dict[str, Any]:
    """Embed every step of `segments` (grouped by session) and write one node file per session, each
    node's embedding followed by the blocks of `dims` (appended_columns: the segment's text vector from
    `text_vectors`, then the pretrained `blocks`' columns, computed per session). With the participant
    options on, a session's participant statistics come from its own segments (participant.attach); with
    participant_norm, whose log-mel pass also gives the spectrograms embedded, one session at a time, each
    session's kept until it is embedded; with `causal` from prefixes (dataset.CausalSegmentDataset).
    `on_device`: the spectrograms computed on the model's device (device_spectrogram.resolve decided)."""
    options = options or InputOptions(clip_length)
    keep = options.audio_statistics and not causal  # attach keeps spectrograms: one session's at a time
    sessions: dict[int, list[Segment]] = {}
    for seg in segments:
        sessions.setdefault(seg.session, []).append(seg)
    groups = list(sessions.values()) if keep else [segments]
    remaining = {session: sum(seg.n_steps for seg in group) for session, group in sessions.items()}
    written: dict[tuple[str, int], int] = {}
    parts: dict[str, list[tuple[list[str], np.ndarray, np.ndarray]]] = {}
    progress = "extract" if runtime.is_main and settings["progress"] else None
    for group in groups:
        if not causal:
            participant.attach(group, params, options, clip_length, keep_spectrograms=keep)
        buffers: dict[int, list[Predictions]] = {}
        for pred in iter_predictions(model, make_dataset(group, norm, clip_length, params, options, causal, on_device),
                                     settings["batch_size"], settings["num_workers"], runtime.device,
                                     bool(settings["amp"]), True, progress):
            sessions_in_batch = np.array([group[i].session for i in pred.segment_index])
            for session in np.unique(sessions_in_batch):
                mask = sessions_in_batch == session
                buffers.setdefault(session, []).append(Predictions(pred.segment_index[mask], pred.step[mask],
                                                                   pred.probs[mask], pred.loss[mask],
                                                                   pred.features[mask]))
                remaining[session] -= int(mask.sum())
                if remaining[session] == 0:  # a session's node file is written as soon as its last node is in
                    done = Predictions.concat(buffers.pop(session))
                    split = group[done.segment_index[0]].split
                    written[(split, int(session))] = _write_session(staging, split, int(session), group, done,
                                                                    dims or {}, text_vectors, blocks)
                    parts.setdefault(split, []).append(([group[i].segment_id for i in done.segment_index],
                                                        np.array([group[i].target for i in done.segment_index]),
                                                        done.probs))
        participant.release_spectrograms(group)
    return {"written": written, "parts": parts,
            "blocks": {b.name: {"seconds": b.seconds, "forward_passes": b.forward_passes} for b in blocks}}


def _write_session(staging: Path, split: str, session: int, segments: list[Segment], pred: Predictions,
                   dims: Mapping[str, int], text_vectors: dict[str, np.ndarray] | None = None,
                   blocks: Sequence[pretrained.PretrainedBlock] = ()) -> int:
    mine = [segments[i] for i in np.unique(pred.segment_index)]
    extra = appended_columns(mine, dims, text_vectors, blocks)
    features = pred.features
    if extra is not None:
        nodes = [(segments[i].segment_id, step) for i, step in zip(pred.segment_index, pred.step, strict=True)]
        features = np.concatenate([features, node_columns(extra, nodes)], axis=1)
    rows = []
    for i, step, feature in zip(pred.segment_index, pred.step, features, strict=True):
        seg = segments[i]
        rows.append((seg.session, float(seg.ts[step]), seg.identity, seg.label.copy(), seg.target,
                     seg.segment_id, np.ascontiguousarray(feature, dtype=np.float32)))
    rows.sort(key=lambda r: (r[1], r[5]))
    path = layout.node_file(staging, split, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return len(rows)


def check_encoder_splits(state: dict[str, Any], wanted: dict[str, Sequence[int]], path: Path) -> dict[str, list]:
    """The training and validation sessions the checkpoint was fitted on; util.DataError naming both
    sets when they are not `wanted`'s (or when the checkpoint records none)."""
    stored = state.get("splits")
    if not isinstance(stored, dict) or "train" not in stored:
        raise util.DataError("encoder checkpoint records no training splits; retrain it with STE_train.py", path)
    fitted = {name: sorted(int(s) for s in stored.get(name, [])) for name in ("train", "val")}
    expected = {name: sorted(int(s) for s in wanted.get(name, [])) for name in ("train", "val")}
    if fitted != expected:
        raise util.DataError(f"encoder trained on sessions {fitted}, but the splits in force want an encoder "
                             f"trained on {expected}; retrain it (run_pipeline.py does so by itself)", path)
    return fitted


def split_report(train: Sequence[Segment], parts: dict[str, list[tuple]],
                 fitted_on: dict[str, list[int]], tau_grid: Sequence[float] = (0.0,)) -> dict[str, Any]:
    """encoder_metrics.json: test metrics (segment = mean of node probabilities, the decision adjusted by
    the tau of `tau_grid` chosen on the validation segments, metrics.choose_decision_tau: `decision`) beside
    the training-majority baseline, plus node and segment metrics of every split (plain argmax) with the
    role its sessions played for the encoder (`encoder_saw`: train, val or none), which measures the
    in-sample gap. `parts[split]` are (segment ids, node targets, node probabilities) per session."""
    train_nodes = np.concatenate([np.full(s.n_steps, s.target) for s in train]) if train else np.zeros(0, int)
    decision = _decision(train, parts.get("val", []), tau_grid)
    report = metrics.encoder_metrics([s.target for s in train], train_nodes, *_joined(parts.get("test", [])),
                                     decision)
    report["decision"] = decision
    report["splits"] = {}
    for name, chunks in parts.items():
        if not chunks:
            continue
        seg_ids, targets, probs = _joined(chunks)
        _, seg_targets, seg_pred, _ = metrics.segment_predictions(seg_ids, probs, targets)
        sessions = sorted({util.parse_segment_id(i)["session"] for i in seg_ids})
        roles = sorted({_role(s, fitted_on) for s in sessions})
        report["splits"][name] = {"sessions": sessions, "encoder_saw": roles[0] if len(roles) == 1 else roles,
                                  "node": metrics.classification_metrics(targets, probs.argmax(axis=1)),
                                  "segment": metrics.classification_metrics(seg_targets, seg_pred)}
    return report


def _decision(train: Sequence[Segment], val: list[tuple], tau_grid: Sequence[float]) -> dict[str, Any]:
    """The segment decision (metrics.segment_decision) on the validation parts; with no validation segment,
    the grid's smallest tau."""
    seg_ids, targets, probs = _joined(val)
    _, seg_targets, _, seg_probs = metrics.segment_predictions(seg_ids, probs, targets)
    return metrics.segment_decision(seg_probs, seg_targets, [s.target for s in train], tau_grid)


def _joined(chunks: list[tuple]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-session (segment ids, node targets, node probabilities) chunks joined into one of each."""
    return ([x for p in chunks for x in p[0]],
            np.concatenate([p[1] for p in chunks]) if chunks else np.zeros(0, int),
            np.concatenate([p[2] for p in chunks]) if chunks else np.zeros((0, config.NUM_CLASSES)))


def _role(session: int, fitted_on: dict[str, list[int]]) -> str:
    """What the encoder did with a session: trained on it, validated on it, or never saw it."""
    return next((name for name in ("train", "val") if session in fitted_on[name]), "none")


def _write_segment_predictions(chunks: list[tuple], path: Path, decision: dict[str, Any]) -> None:
    """The encoder's own test predictions per segment (mean of its nodes' probabilities, the decision
    adjusted by `decision`'s tau)."""
    seg_ids, targets, probs = _joined(chunks)
    ids, seg_targets, _, mean = metrics.segment_predictions(seg_ids, probs, targets)
    seg_pred = metrics.decided(mean, decision)
    metrics.write_segment_predictions(ids, seg_targets, seg_pred, mean, path)


def _manifest(ckpt_path: Path, signature: dict[str, Any], written: dict[tuple[str, int], int],
              splits: dict[str, Sequence[int]], root: Path, report: dict[str, Any], runtime: Runtime,
              fitted_on: dict[str, list[int]], text_record: dict[str, Any],
              pretrained_record: dict[str, dict[str, Any]], encoder_order: Sequence[str]) -> dict:
    feature_dims = {**dict.fromkeys(encoder_order, STREAM_DIM),
                    **({text.NAME: text_record["dim"]} if text_record["built"] else {}),
                    **{name: r["dim"] for name, r in pretrained_record.items()}}
    node_counts: dict[str, dict[str, int]] = {}
    for (split, session), count in sorted(written.items(), key=lambda kv: (list(splits).index(kv[0][0]), kv[0][1])):
        node_counts.setdefault(split, {})[layout.session_name(session)] = count
    return {
        "encoder_checkpoint": str(Path(ckpt_path).resolve()),
        "encoder_sha256": (sha := util.file_sha256(ckpt_path)),
        "encoder_splits": fitted_on,
        "embedded_by": {name: {session: {"encoder_sha256": sha, "encoder_saw": _role(int(session[4:]), fitted_on)}
                               for session in counts} for name, counts in node_counts.items()},
        "clip_length": signature["clip_length"],
        "spectrogram": SpectrogramParams.from_dict(signature).to_dict(),
        "input_options": InputOptions.from_inputs(signature).signature(),
        "feature_order": list(feature_dims),
        "feature_dims": feature_dims,
        "feature_dim": sum(feature_dims.values()),
        "text": text_record,
        "pretrained": pretrained_record,
        "splits": {name: sorted(int(s[4:]) for s in node_counts[name]) for name in splits if name in node_counts},
        "node_counts": node_counts,
        "node_columns": list(util.NODE_COLUMNS),
        "root": str(root),
        "segments": report,
        "world_size": runtime.world_size,
    }


def _publish(staging: Path, out_dir: Path, splits: dict[str, Sequence[int]], manifest: dict[str, Any],
             report: dict[str, Any]) -> None:
    """Swap the new split folders in, then write metrics and (last) the manifest. The old manifest
    goes first, so an interrupted swap leaves no manifest that vouches for mixed files."""
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    (out_dir / text.FILE).unlink(missing_ok=True)
    if (staging / text.FILE).exists():
        os.replace(staging / text.FILE, out_dir / text.FILE)
    for name in splits:
        target = layout.node_dir(out_dir, name)
        if target.exists():
            shutil.rmtree(target)
        if (staging / target.name).exists():
            os.replace(staging / target.name, target)
    util.write_json(report, out_dir / METRICS_FILE)
    os.replace(staging / PREDICTIONS_FILE, out_dir / PREDICTIONS_FILE)
    util.write_json(manifest, out_dir / MANIFEST_FILE)


def appended_columns(segments: Sequence[Segment], dims: Mapping[str, int],
                     text_vectors: Mapping[str, np.ndarray] | None = None,
                     blocks: Iterable[pretrained.PretrainedBlock] = ()) -> dict[str, np.ndarray] | None:
    """Segment ID -> the columns appended to its nodes' embeddings after the encoder's (segment_columns),
    for extraction and prediction alike. `dims` are the features' blocks past the encoder's, in order
    (text, then pretrained.NAMES): each is the segment's text vector (`text_vectors`, for text.NAME), the
    pretrained block's own columns (`blocks`, by name), or, when neither is given, NaN [dim]: a block the
    model does not read, never zero. None when `dims` is empty."""
    given = {block.name: block for block in blocks}
    parts = []
    for name, dim in dims.items():
        if name == text.NAME and text_vectors is not None:
            parts.append(text_vectors)
        elif name in given:
            parts.append(given[name].columns(segments))
        else:
            parts.append({s.segment_id: np.full(dim, np.nan, dtype=np.float32) for s in segments})
    return segment_columns(segments, parts)


def segment_columns(segments: Sequence[Segment], parts: Sequence[Mapping[str, np.ndarray] | None]
                    ) -> dict[str, np.ndarray] | None:
    """The blocks of `parts` side by side per segment ID (each segment ID -> [dim] or [n_steps, dim]),
    [dim] when every block has one vector per segment, else [n_steps, dim]; None when there is none."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    joined = {}
    for seg in segments:
        values = [p[seg.segment_id] for p in parts]
        if all(v.ndim == 1 for v in values):
            joined[seg.segment_id] = np.concatenate(values)
        else:
            joined[seg.segment_id] = np.concatenate([np.broadcast_to(v, (seg.n_steps, len(v))) if v.ndim == 1 else v
                                                     for v in values], axis=1)
    return joined


def node_column(values: np.ndarray, step: int) -> np.ndarray:
    """A node's columns of a block: the segment's vector ([dim]) or the node's row of [n_steps, dim]."""
    return values[step] if values.ndim == 2 else values


def node_columns(columns: Mapping[str, np.ndarray], nodes: Iterable[tuple[str, int]]) -> np.ndarray:
    """[n, dim]: per node (segment ID, step) its row of appended_columns' `columns`, to append to its embedding."""
    return np.stack([node_column(columns[segment_id], step) for segment_id, step in nodes])


def pretrained_records(blocks: Sequence[pretrained.PretrainedBlock], results: Sequence[dict[str, Any]]
                       ) -> dict[str, dict[str, Any]]:
    """The manifest's `pretrained`: per block its description, forward passes and seconds summed over ranks."""
    records = {}
    for block in blocks:
        done = [part["blocks"][block.name] for part in results]
        records[block.name] = {**block.describe(), "forward_passes": sum(d["forward_passes"] for d in done),
                               "seconds": round(sum(d["seconds"] for d in done), 3)}
    return records


def fit_text_block(table: Any, settings: dict[str, Any], staging: Path) -> tuple[text.TextBlock | None, dict]:
    """Fit the text block on the training segments' transcripts and save it in `staging`; returns it
    (None when the training transcripts hold no n-gram) and the manifest's `text` record."""
    started = time.perf_counter()
    train = table.by_split.get("train", [])
    without = {name: sum(s.transcript is None for s in segs) for name, segs in table.by_split.items()}
    record: dict[str, Any] = {"built": False, "segments_without_transcript": without,
                              "fitted_on_sessions": sorted({s.session for s in train})}
    documents = text.documents(train)
    block = text.TextBlock.fit(documents, settings)
    if block is None:
        record["reason"] = (f"none of the {len(train)} training segments has a transcript with a word "
                            "(wav/SessionSS/<segment ID>.txt); no text block")
        return None, record
    block.save(staging / text.FILE)
    record.update(built=True, file=text.FILE, sha256=util.file_sha256(staging / text.FILE),
                  documents=len(documents), **block.describe(),
                  fit_seconds=round(time.perf_counter() - started, 3))
    return block, record


def text_line(record: dict[str, Any]) -> str:
    """One line on the text block for the extraction log."""
    without = ", ".join(f"{name} {n}" for name, n in record["segments_without_transcript"].items())
    if not record["built"]:
        return f"text block: not built: {record['reason']}"
    return (f"text block: {record['dim']}-d from {record['ngrams']} character n-grams of {record['documents']} "
            f"training transcripts ({record['directions']} SVD directions, {record['explained_variance']:.1%} of "
            f"the TF-IDF variance), fitted in {record['fit_seconds']:.2f} s, vectors in "
            f"{record['vector_seconds']:.2f} s; segments without transcript (empty-transcript vector): {without}")

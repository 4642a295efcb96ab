"""The dataframe stage: a KEMDy20 root -> the joined, per-segment tables the encoder reads.

It writes one table per bio stream (`EDA_aug.csv`, `TEMP_aug.csv`: streams.BIO_STREAMS), `gt_aug.csv`,
`all_entity.pickle`, `ts_script.pickle` and `frames_report.json` under the root (the original project's
names; layout in docs/outputs.md). Nothing is dropped silently: every dropped segment is counted by reason
in the report, and above config.MAX_SKIP_SHARE the stage fails. Irregular rows (duplicates, a row missing
in one modality, rows off the 4 Hz grid) follow one rule, in docs/kemdy20.md: a node is a row of every bio
stream (joined on segment and timestamp) at its own timestamp, and its clips are placed by time
(dataset.Segment), which on a regular grid equals the index arithmetic of clip_utils.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from encoder.core import config, kemdy20, streams, util

TABLES = ("gt_aug.csv", "all_entity.pickle", "ts_script.pickle", "frames_report.json")  # besides the streams'
GRID_TOLERANCE_S = 1e-3  # a node within 1 ms of its segment's 4 Hz grid counts as on it
OLD_SEGMENT_ID = "script"  # the segment-ID column's name in tables built before it was `segment_id`


def artifacts() -> tuple[str, ...]:
    """The files the dataframe stage writes under the root: each bio stream's table, then TABLES."""
    return (*(stream.table_file for stream in streams.BIO_STREAMS), *TABLES)


@dataclass
class Frames:
    gt: pd.DataFrame
    bio: dict[str, pd.DataFrame]  # stream name -> its rows inside kept segments ({folder}_value, ts, segment_id)
    entities: dict[str, np.ndarray]
    nodes: pd.DataFrame
    report: dict = field(default_factory=dict)
    segments: pd.DataFrame | None = None  # every annotated (or discovered) segment, kept or not; in memory only

    @property
    def dropped(self) -> dict[str, str]:
        """Segment ID -> why the dataframe stage dropped it (`no_wav`, `no_joined_bio_rows`)."""
        return dict(self.report.get("dropped_segments", {}))


def label_vector(emotion_one_hot: str | np.ndarray) -> np.ndarray:
    """Training target: the listed labels as a normalised multi-hot (float32[7])."""
    if isinstance(emotion_one_hot, str):
        emotion_one_hot = emotion_one_hot.split()
    vector = np.asarray(emotion_one_hot, dtype=np.float32)
    if vector.shape != (config.NUM_CLASSES,) or vector.sum() <= 0:
        raise ValueError(f"not a {config.NUM_CLASSES}-class multi-hot: {emotion_one_hot!r}")
    return vector / vector.sum()


def read_modality(root: Path, modality: str, annotated_sessions: set[int]) -> tuple[pd.DataFrame, dict]:
    """All files of one bio modality, concatenated in file order; files of sessions without annotation
    are counted and left out. Rows repeating a (segment, timestamp) already read are dropped and
    counted (`duplicate_rows`; `conflicting_duplicates` where the value differs from the kept row's)."""
    files = kemdy20.bio_files(root, modality)
    used = [f for f in files if kemdy20.session_of_file(f) in annotated_sessions]
    extra = sorted({kemdy20.session_of_file(f) for f in files} - annotated_sessions)
    tables = []
    with tqdm(total=len(used), desc=f"read {modality}", unit="file", leave=False) as bar:
        for path in used:
            tables.append(kemdy20.read_bio(path, modality))
            bar.update()
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        {f"{modality}_value": [], "ts": [], "segment_id": []})
    value = f"{modality}_value"
    duplicate = table.duplicated(["segment_id", "ts"], keep="first").to_numpy()
    conflicting = 0
    if duplicate.any():
        kept_value = table.groupby(["segment_id", "ts"], sort=False)[value].transform("first").to_numpy()
        conflicting = int((duplicate & (table[value].to_numpy() != kept_value)).sum())
        table = table[~duplicate].reset_index(drop=True)
    return table, {"files": len(used), "files_without_annotation": len(files) - len(used),
                   "sessions_without_annotation": extra, "duplicate_rows": int(duplicate.sum()),
                   "conflicting_duplicates": conflicting}


def segment_origins(tables: Iterable[pd.DataFrame]) -> pd.Series:
    """Segment ID -> its origin: the earliest timestamp among its rows of every bio stream (the wav's start)."""
    return pd.concat([table[["segment_id", "ts"]] for table in tables]).groupby("segment_id")["ts"].min()


def grid_report(nodes: pd.DataFrame, origins: pd.Series) -> dict[str, int]:
    """Nodes off their segment's 4 Hz grid (origin + k·0.25 s, within GRID_TOLERANCE_S) and the steps
    missing before a segment's first node or between two nodes (gaps)."""
    if nodes.empty:
        return {"nodes_off_grid": 0, "gaps": 0, "missing_steps": 0, "segments_with_gaps": 0}
    ordered = nodes.sort_values(["segment_id", "ts"], kind="stable")
    ts = ordered["ts"].to_numpy()
    segment_ids = ordered["segment_id"].to_numpy()
    offset = (ts - origins.loc[segment_ids].to_numpy()) / config.BIO_STEP_S
    tolerance = GRID_TOLERANCE_S / config.BIO_STEP_S
    first = np.r_[True, segment_ids[1:] != segment_ids[:-1]]
    step_before = np.where(first, offset, np.diff(offset, prepend=0.0))  # steps since the origin or the last node
    gap = np.where(first, step_before > tolerance, step_before > 1 + tolerance)
    missing = np.where(gap, np.rint(step_before) - (~first), 0).clip(min=0)
    return {
        "nodes_off_grid": int((np.abs(offset - np.rint(offset)) > tolerance).sum()),
        "gaps": int(gap.sum()),
        "missing_steps": int(missing.sum()),
        "segments_with_gaps": int(len(np.unique(segment_ids[gap]))),
    }


def build_entities(joined: pd.DataFrame) -> dict[str, np.ndarray]:
    """Segment ID -> its time-ordered [ts, one value per bio stream (EDA, TEMP)] rows, with one sort and one
    split (no per-segment filtering)."""
    return rows_by_segment(joined, *(stream.value_column for stream in streams.BIO_STREAMS))


def rows_by_segment(table: pd.DataFrame, *values: str) -> dict[str, np.ndarray]:
    """Segment ID -> its rows as float64 [ts, *values], time-ordered (one sort, one split)."""
    if table.empty:
        return {}
    segment_ids = table["segment_id"].to_numpy()
    ts = table["ts"].to_numpy(dtype=np.float64)
    order = np.lexsort((ts, segment_ids))
    segment_ids = segment_ids[order]
    rows = np.column_stack([ts[order], *(table[v].to_numpy(dtype=np.float64)[order] for v in values)])
    starts = np.flatnonzero(np.r_[True, segment_ids[1:] != segment_ids[:-1]])
    return dict(zip(segment_ids[starts], np.split(rows, starts[1:]), strict=True))


def build_frames(root: Path, check_wav: bool = True, max_skip_share: float | None = None,
                 labels_required: bool = True) -> Frames:
    """Read a KEMDy20 root and build every dataframe-stage table in memory (see module docstring;
    `labels_required` False: unlabelled rows and sessions without annotation, for prediction only)."""
    root = Path(root)
    max_skip_share = config.MAX_SKIP_SHARE if max_skip_share is None else max_skip_share
    annotation_files = kemdy20.check_root(root, require_annotation=labels_required)
    tables = [kemdy20.read_annotation(f, labels_required) for f in annotation_files]
    if not labels_required:
        tables.append(kemdy20.wav_segments(root, {kemdy20.session_of_file(f) for f in annotation_files}))
    gt = pd.concat([t for t in tables if len(t)] or tables[-1:], ignore_index=True)
    duplicated = gt["segment_id"].duplicated()
    if duplicated.any():
        raise util.DataError(f"segment {gt['segment_id'][duplicated].iloc[0]} is annotated twice", root / "annotation")
    sessions = set(gt["session"])
    read = {stream.folder: read_modality(root, stream.folder, sessions) for stream in streams.BIO_STREAMS}
    tables = {folder: table for folder, (table, _) in read.items()}
    infos = {folder: info for folder, (_, info) in read.items()}
    joined = functools.reduce(lambda a, b: a.merge(b, on=["segment_id", "ts"], how="inner"), tables.values())

    annotated = set(gt["segment_id"])
    with_bio = set(joined["segment_id"]) & annotated
    has_wav = gt["segment_id"].isin(kemdy20.wav_index(root)) if check_wav else pd.Series(True, index=gt.index)
    has_bio = gt["segment_id"].isin(with_bio)
    keep = has_wav & has_bio
    dropped = {"no_wav": int((~has_wav).sum()), "no_joined_bio_rows": int((has_wav & ~has_bio).sum())}
    reasons = np.where(~has_wav, "no_wav", "no_joined_bio_rows")
    dropped_segments = {str(k): str(v) for k, v in zip(gt["segment_id"][~keep], reasons[~keep.to_numpy()], strict=True)}
    n_dropped = int((~keep).sum())
    if n_dropped > max_skip_share * len(gt):
        raise util.DataError(
            f"{n_dropped} of {len(gt)} annotated segments lack a wav ({dropped['no_wav']}) or joined bio rows "
            f"({dropped['no_joined_bio_rows']}), above MAX_SKIP_SHARE={max_skip_share:g}", root)

    gt, transcripts = add_transcripts(gt, root)
    every_segment = gt.reset_index(drop=True)
    gt = gt[keep].reset_index(drop=True)
    kept_ids = set(gt["segment_id"])
    joined_kept = joined[joined["segment_id"].isin(kept_ids)]
    entities = build_entities(joined_kept)
    gt["split"] = [util.split_of_session(s) for s in gt["session"]]
    gt["n_samples"] = [len(entities[s]) for s in gt["segment_id"]]

    step = np.concatenate([np.arange(len(a)) for a in entities.values()]) if entities else np.array([], int)
    node_ids = np.repeat(list(entities), [len(a) for a in entities.values()])
    nodes = pd.DataFrame({"ts": np.concatenate([a[:, 0] for a in entities.values()]) if entities else [],
                          "segment_id": node_ids, "step": step})
    info = gt.set_index("segment_id").loc[nodes["segment_id"], ["session", "identity"]]
    nodes["session"] = info["session"].to_numpy()
    nodes["identity"] = info["identity"].to_numpy()
    nodes = nodes.sort_values(["session", "ts", "identity", "segment_id"], kind="stable").reset_index(drop=True)
    nodes = nodes[["session", "ts", "identity", "segment_id", "step"]]

    order = ["segment_id", "ts"]
    kept = {folder: table[table["segment_id"].isin(kept_ids)].sort_values(order, kind="stable").reset_index(drop=True)
            for folder, table in tables.items()}
    report = {
        "root": str(root),
        "annotation_files": len(annotation_files),
        "segments_annotated": len(annotated),
        "segments_with_wav": int(has_wav.sum()) if check_wav else None,
        "segments_with_every_bio_stream": int(has_bio.sum()),
        "segments_kept": len(gt),
        "dropped": dropped,
        "bio_rows_in_segments": {**{m: len(t) for m, t in tables.items()}, "joined": len(joined)},
        "join_dropped_rows": {**{f"{m}_only": len(t) - len(joined) for m, t in tables.items()},
                              "not_annotated": int((~joined["segment_id"].isin(annotated)).sum())},
        "files": infos,
        "irregular": {
            "duplicate_rows": {m: info["duplicate_rows"] for m, info in infos.items()},
            "conflicting_duplicates": {m: info["conflicting_duplicates"] for m, info in infos.items()},
            **grid_report(nodes, segment_origins(kept.values())),
        },
        "samples": len(nodes),
        "dropped_segments": dropped_segments,
        "transcripts": transcript_report(transcripts[keep.to_numpy()]),
    }
    return Frames(
        gt=gt,
        bio={stream.name: kept[stream.folder] for stream in streams.BIO_STREAMS},
        entities=entities,
        nodes=nodes,
        report=report,
        segments=every_segment,
    )


def add_transcripts(gt: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`gt` with each segment's transcript read (kemdy20.read_transcript) in columns `transcript` and
    `transcript_status`, and per segment how it was read (`encoding`, `marks`) for transcript_report."""
    read = [kemdy20.read_transcript(root, segment_id) for segment_id in gt["segment_id"]]
    details = pd.DataFrame({"segment_id": gt["segment_id"].to_numpy(), "status": [r[1] for r in read],
                            "encoding": [r[2] for r in read], "marks": [r[3] for r in read]})
    return gt.assign(transcript=[r[0] for r in read], transcript_status=[r[1] for r in read]), details


def transcript_report(details: pd.DataFrame) -> dict:
    """Counts of add_transcripts' `details` (of the kept segments) and the segments without a transcript."""
    status = details["status"]
    missing = (status != "ok").to_numpy()
    return {
        "read": int((~missing).sum()),
        "encodings": {e: int((details["encoding"] == e).sum()) for e in kemdy20.TRANSCRIPT_ENCODINGS},
        "missing": int((status == "missing").sum()),
        "undecodable": int((status == "undecodable").sum()),
        "marks_stripped": {kind: int(sum(m[kind] for m in details["marks"])) for kind in kemdy20.TRANSCRIPT_MARKS},
        "segments_without_transcript": dict(zip(details["segment_id"][missing], status[missing], strict=True)),
    }


def write_frames(frames: Frames, root: Path) -> list[Path]:
    """Write the artifacts (artifacts()) under `root`, each atomically."""
    root = Path(root)
    written = []
    tables = [(streams.stream(name).table_file, table) for name, table in frames.bio.items()]
    for name, table in (*tables, ("gt_aug.csv", frames.gt)):
        with util.atomic_path(root / name) as tmp:
            table.to_csv(tmp, index=False)
        written.append(root / name)
    for name, obj in (("all_entity.pickle", frames.entities), ("ts_script.pickle", frames.nodes)):
        with util.atomic_path(root / name) as tmp, open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        written.append(root / name)
    util.write_json(frames.report, root / "frames_report.json")
    written.append(root / "frames_report.json")
    return written


def load_frames(root: Path) -> Frames:
    """Read the artifacts back (the encoder's input); a clear error when they were never built."""
    root = Path(root)
    missing = [name for name in artifacts() if not (root / name).is_file()]
    if missing:
        raise util.DataError(f"missing {missing[0]}: run `python encoder/build_frames.py --root {root}` first",
                             root / missing[0])
    gt = segment_id_column(pd.read_csv(root / "gt_aug.csv", dtype={
        "emotion_one_hot": str, "split": str, "segment_id": str, OLD_SEGMENT_ID: str, "transcript": str,
        "transcript_status": str, "emotion_votes": str}))
    if "emotion_votes" in gt:
        gt["emotion_votes"] = gt["emotion_votes"].fillna("")
    gt["split"] = gt["split"].where(gt["split"].notna(), None)
    if "transcript" not in gt:
        raise util.DataError("gt_aug.csv has no transcript column (built by an older version): rerun "
                             f"`python encoder/build_frames.py --root {root}`", root / "gt_aug.csv")
    gt["transcript"] = gt["transcript"].fillna("").astype(str)
    report = util.read_json(root / "frames_report.json")
    if tuple(report["files"]) != streams.folders():  # the entity tables hold a column per stream they were built with
        raise util.DataError(f"tables built for the bio streams {', '.join(report['files'])}, but "
                             f"encoder/core/streams.py lists {', '.join(streams.folders())}: rerun "
                             f"`python encoder/build_frames.py --root {root}`", root / "frames_report.json")
    with open(root / "all_entity.pickle", "rb") as fh:
        entities = pickle.load(fh)
    with open(root / "ts_script.pickle", "rb") as fh:
        nodes = segment_id_column(pickle.load(fh))
    bio = {stream.name: segment_id_column(pd.read_csv(root / stream.table_file)) for stream in streams.BIO_STREAMS}
    return Frames(gt=gt, bio=bio, entities=entities, nodes=nodes, report=report)


def segment_id_column(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the segment-ID column of an older build (OLD_SEGMENT_ID) named `segment_id`, so that
    tables written before the rename are read as they are, without a rebuild."""
    if OLD_SEGMENT_ID in table.columns and "segment_id" not in table.columns:
        return table.rename(columns={OLD_SEGMENT_ID: "segment_id"})
    return table


def kept_sessions(root: Path) -> list[int]:
    """Sessions with at least one kept (usable) segment in the built tables (gt_aug.csv), sorted."""
    path = Path(root) / "gt_aug.csv"
    if not path.is_file():
        raise util.DataError(f"missing {path.name}: run `python encoder/build_frames.py --root {root}` first", path)
    return sorted(int(s) for s in pd.read_csv(path, usecols=["session"])["session"].unique())


def summary_tables(frames: Frames) -> dict[str, pd.DataFrame]:
    """Segments and samples per split and class (by the first listed label)."""
    gt = frames.gt.assign(
        emotion_first=[config.EMOTIONS[t] for t in frames.gt["target"]],
        split=frames.gt["split"].fillna("unused"),
    )
    segments = pd.crosstab(gt["split"], gt["emotion_first"]).reindex(columns=list(config.EMOTIONS), fill_value=0)
    samples = gt.pivot_table(index="split", columns="emotion_first", values="n_samples", aggfunc="sum",
                             fill_value=0).reindex(columns=list(config.EMOTIONS), fill_value=0)
    for table in (segments, samples):
        table["total"] = table.sum(axis=1)
    return {"segments": segments, "samples": samples}


def format_report(frames: Frames) -> str:
    """The human-readable summary printed by build_frames.py and shown in df_generator.ipynb."""
    r = frames.report
    folders = list(r["files"])  # the bio streams' folders (EDA, TEMP)
    rows, join_dropped, irregular = r["bio_rows_in_segments"], r["join_dropped_rows"], r["irregular"]
    lines = [
        f"dataset root: {r['root']}",
        f"segments annotated: {r['segments_annotated']} (in {r['annotation_files']} annotation files)",
        f"segments with wav: {r['segments_with_wav'] if r['segments_with_wav'] is not None else 'not checked'}",
        f"segments with {' and '.join(folders)}: {r['segments_with_every_bio_stream']}",
        f"segments kept: {r['segments_kept']}  (dropped: {r['dropped']['no_wav']} without wav, "
        f"{r['dropped']['no_joined_bio_rows']} without joined {'/'.join(folders)} rows)",
        "bio rows inside segments: " + ", ".join(f"{m} {rows[m]}" for m in folders) + f", joined {rows['joined']} "
        "(join dropped " + ", ".join(f"{join_dropped[f'{m}_only']} {m}-only" for m in folders) + " rows)",
        "irregular rows: duplicates dropped " + ", ".join(f"{m} {irregular['duplicate_rows'][m]}" for m in folders)
        + " (of which with another value: " + ", ".join(str(irregular["conflicting_duplicates"][m]) for m in folders)
        + f"); nodes off the 4 Hz grid {irregular['nodes_off_grid']}; gaps {irregular['gaps']} in "
        f"{irregular['segments_with_gaps']} segments ({irregular['missing_steps']} missing steps); "
        "clips are placed by timestamp",
    ]
    for modality in folders:
        info = r["files"][modality]
        if info["files_without_annotation"]:
            lines.append(f"{modality}: {info['files_without_annotation']} files of sessions without annotation "
                         f"left out (sessions {', '.join(map(str, info['sessions_without_annotation']))})")
    text = r.get("transcripts")
    if text is not None:
        marks = ", ".join(f"{kind} {n}" for kind, n in text["marks_stripped"].items() if n) or "none"
        lines.append(f"transcripts of kept segments: {text['read']} read ("
                     + ", ".join(f"{n} {e}" for e, n in text["encodings"].items())
                     + f"), {text['missing']} missing, {text['undecodable']} undecodable (kept with an empty "
                     f"transcript); marks stripped: {marks}")
    lines.append(f"samples (4 Hz nodes): {r['samples']}")
    tables = summary_tables(frames)
    lines += ["", "segments per split and class:", tables["segments"].to_string(),
              "", "samples per split and class:", tables["samples"].to_string()]
    return "\n".join(lines)

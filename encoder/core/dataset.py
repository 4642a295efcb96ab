"""Encoder inputs: segments of one split, their normalisation, and the two datasets.

* `TrainClipDataset`: one clip per segment per epoch, centred on a step drawn from
  (seed, epoch, segment index) — the same draw whatever the worker or rank that loads it.
* `SegmentDataset`: every step of a segment, deterministic. It returns the segment's spectrogram
  once (not one per step) plus all its bio clips; `node_batches` cuts the clips out and packs them
  into batches of nodes.

Training target: the listed labels as a normalised multi-hot (`label`); metric target: the first
listed label (`target`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from encoder.core import clip_utils, config, io, kemdy20, util
from encoder.core.custom_transforms import (
    Normalization,
    SpectrogramParams,
    clip_spectrogram,
    mean_std,
    segment_spectrogram,
)
from encoder.core.frames import label_vector

AUDIO_STATS_SEGMENTS = 32  # training segments whose spectrograms give the audio mean/std


@dataclass
class Segment:
    segment_id: str
    session: int
    identity: str
    split: str
    wav: Path
    label: np.ndarray  # float32[7], normalised multi-hot of the listed labels (NaN: unlabelled, prediction only)
    target: int  # first listed label (-1: unlabelled)
    ts: np.ndarray  # float64[n], seconds of day of each 4 Hz step
    eda: np.ndarray  # float64[n]
    temp: np.ndarray  # float64[n]

    @property
    def n_steps(self) -> int:
        return len(self.ts)


@dataclass
class SegmentTable:
    """Usable segments per split and what was skipped (segment id → reason)."""

    by_split: dict[str, list[Segment]]
    skipped: dict[str, str]
    considered: int

    def report(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            key = reason.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        return {
            "segments": {name: len(segs) for name, segs in self.by_split.items()},
            "nodes": {name: int(sum(s.n_steps for s in segs)) for name, segs in self.by_split.items()},
            "skipped": len(self.skipped),
            "skipped_reasons": reasons,
            "considered": self.considered,
        }


def load_segments(
    frames: Any,
    root: Path,
    splits: dict[str, Sequence[int]] | None = None,
    wanted: Iterable[str] = ("train", "val", "test"),
    sessions: Iterable[int] | None = None,
    max_skip_share: float = config.MAX_SKIP_SHARE,
    labels_required: bool = True,
) -> SegmentTable:
    """Segments of `frames` (gt + entities) in the `wanted` splits (and `sessions`, when given).
    A segment whose wav is missing, unreadable or empty, or that has no bio samples, is skipped and
    counted; more than `max_skip_share` of them skipped raises util.DataError. With `labels_required`
    False (prediction) a row without label (emotion_one_hot "") gives label NaN and target -1."""
    splits = util.session_splits() if splits is None else splits
    wanted = set(wanted)
    sessions = None if sessions is None else set(sessions)
    table = SegmentTable({name: [] for name in splits if name in wanted}, {}, 0)
    for row in frames.gt.itertuples(index=False):
        split = util.split_of_session(int(row.session), splits)
        if split not in wanted or (sessions is not None and int(row.session) not in sessions):
            continue
        table.considered += 1
        segment_id = str(row.script)
        entity = frames.entities.get(segment_id)
        path = kemdy20.wav_path(root, segment_id)
        reason = io.check_wav(path)
        if entity is None or len(entity) == 0:
            reason = "no bio samples"
        if reason is not None:
            table.skipped[segment_id] = f"{reason} ({path})" if reason.startswith("wav") else reason
            continue
        entity = np.asarray(entity, dtype=np.float64)
        labelled = labels_required or (isinstance(row.emotion_one_hot, str) and row.emotion_one_hot.strip() != "")
        label = label_vector(row.emotion_one_hot) if labelled else np.full(config.NUM_CLASSES, np.nan, np.float32)
        table.by_split[split].append(
            Segment(segment_id, int(row.session), str(row.identity), split, path,
                    label, int(row.target) if labelled else -1,
                    entity[:, 0].copy(), entity[:, 1].copy(), entity[:, 2].copy())
        )
    if table.considered and len(table.skipped) / table.considered > max_skip_share:
        first_id, first_reason = next(iter(table.skipped.items()))
        raise util.DataError(
            f"{len(table.skipped)} of {table.considered} segments unusable, above the allowed share "
            f"{max_skip_share:.0%} (first: {first_id}: {first_reason})",
            Path(root),
        )
    return table


def compute_normalization(
    train: Sequence[Segment], clip_length: int, params: SpectrogramParams, audio_segments: int = AUDIO_STATS_SEGMENTS
) -> Normalization:
    """Mean/std of EDA and TEMP over every training sample, and of the log-mel values over the
    spectrograms of up to `audio_segments` evenly spaced training segments. Training data only."""
    if not train:
        raise util.DataError("no usable training segment to estimate the normalisation from")
    eda = mean_std([s.eda for s in train])
    temp = mean_std([s.temp for s in train])
    picks = np.unique(np.linspace(0, len(train) - 1, min(audio_segments, len(train))).round().astype(int))
    specs = [
        segment_spectrogram(io.read_wav(train[i].wav, params.sample_rate), train[i].n_steps, clip_length, params)
        for i in picks
    ]
    audio = mean_std(specs)
    return Normalization(audio[0], audio[1], eda[0], eda[1], temp[0], temp[1])


class TrainClipDataset(Dataset):
    """One clip per segment, centred on a step drawn anew each epoch (`set_epoch`)."""

    def __init__(self, segments: Sequence[Segment], norm: Normalization, clip_length: int,
                 params: SpectrogramParams, seed: int):
        self.segments = list(segments)
        self.norm = norm
        self.clip_length = clip_length
        self.params = params
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def step_of(self, index: int) -> int:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return int(rng.integers(self.segments[index].n_steps))

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        seg = self.segments[index]
        step = self.step_of(index)
        wav = io.read_wav(seg.wav, self.params.sample_rate)
        spec = self.norm.audio(clip_spectrogram(wav, step, self.clip_length, self.params))
        steps = np.array([step])
        eda = self.norm.eda(clip_utils.bio_clips(seg.eda, self.clip_length, steps))
        temp = self.norm.temp(clip_utils.bio_clips(seg.temp, self.clip_length, steps))
        return (torch.from_numpy(spec)[None], torch.from_numpy(eda), torch.from_numpy(temp),
                torch.from_numpy(seg.label), torch.tensor(seg.target))


class SegmentDataset(Dataset):
    """Item = one segment: its normalised spectrogram (n_mels, frames) covering every step's clip,
    its EDA/TEMP clips (n_steps, L) and its index. `step_stride` > 1 keeps every k-th step only."""

    def __init__(self, segments: Sequence[Segment], norm: Normalization, clip_length: int,
                 params: SpectrogramParams, step_stride: int = 1):
        self.segments = list(segments)
        self.norm = norm
        self.clip_length = clip_length
        self.params = params
        self.step_stride = step_stride

    def steps(self, index: int) -> np.ndarray:
        return np.arange(0, self.segments[index].n_steps, self.step_stride)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> dict[str, Any]:
        seg = self.segments[index]
        steps = self.steps(index)
        wav = io.read_wav(seg.wav, self.params.sample_rate)
        spec = self.norm.audio(segment_spectrogram(wav, seg.n_steps, self.clip_length, self.params))
        return {
            "index": index,
            "steps": torch.from_numpy(steps),
            "spec": torch.from_numpy(spec),
            "eda": torch.from_numpy(self.norm.eda(clip_utils.bio_clips(seg.eda, self.clip_length, steps))),
            "temp": torch.from_numpy(self.norm.temp(clip_utils.bio_clips(seg.temp, self.clip_length, steps))),
        }


@dataclass
class NodeBatch:
    audio: torch.Tensor  # (B, 1, n_mels, clip frames)
    eda: torch.Tensor  # (B, 1, L)
    temp: torch.Tensor  # (B, 1, L)
    segment_index: np.ndarray  # (B,) index into the dataset's segments
    step: np.ndarray  # (B,) step of each node inside its segment


def segment_clips(item: dict[str, Any], clip_length: int, params: SpectrogramParams) -> torch.Tensor:
    """(n, 1, n_mels, clip frames) views of the segment spectrogram, one per step of `item`."""
    fps = params.frames_per_step
    windows = item["spec"].unfold(1, params.clip_frames(clip_length), fps)  # (mels, n_steps, frames)
    return windows[:, item["steps"]].permute(1, 0, 2).unsqueeze(1)


def node_batches(items: Iterable[dict[str, Any]], batch_size: int, clip_length: int,
                 params: SpectrogramParams) -> Iterator[NodeBatch]:
    """Pack the steps of consecutive segments into batches of `batch_size` nodes (the last smaller)."""
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]] = []
    pending = 0
    for item in items:
        n = len(item["steps"])
        parts.append((segment_clips(item, clip_length, params), item["eda"], item["temp"],
                      np.full(n, int(item["index"])), item["steps"].numpy()))
        pending += n
        while pending >= batch_size:
            yield _take(parts, batch_size)
            pending -= batch_size
    if pending:
        yield _take(parts, pending)


def _take(parts: list, count: int) -> NodeBatch:
    """Remove the first `count` nodes from `parts` (in place) and stack them into a batch."""
    taken: list[tuple] = []
    need = count
    while need:
        part = parts[0]
        n = len(part[3])
        if n <= need:
            taken.append(part)
            parts.pop(0)
            need -= n
        else:
            taken.append(tuple(x[:need] for x in part))
            parts[0] = tuple(x[need:] for x in part)
            need = 0
    audio, eda, temp, seg, step = zip(*taken, strict=True)
    return NodeBatch(torch.cat(audio).contiguous(), torch.cat(eda).unsqueeze(1), torch.cat(temp).unsqueeze(1),
                     np.concatenate(seg), np.concatenate(step))

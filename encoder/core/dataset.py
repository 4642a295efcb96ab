"""Encoder inputs: segments of one split, their normalisation, and the two datasets.

* `TrainClipDataset`: `clips_per_segment` clips per segment per epoch (1: the original's one),
  centred on distinct steps drawn from (seed, epoch, segment index) — the same draw whatever the worker
  or rank that loads it — optionally masked (custom_transforms.SpecAugment).
* `SegmentDataset`: every step of a segment, deterministic. It returns the segment's spectrogram
  once (not one per step) plus all its bio clips; `node_batches` cuts the clips out and packs them
  into batches of nodes.
* `CausalSegmentDataset`: the same nodes with the inputs a causal model runs on: each node's participant
  statistics (and EDA components) from what has arrived by its clip end, as predict.py --online embeds
  it (participant.prefix_views), so it returns the node clips themselves (with the segment audio pass
  too: a causal node's audio vector comes from its own clip, never from the segment after it).
* `TrainSegmentDataset`: the segment audio pass's training items (a span of consecutive nodes of a
  segment and the spectrogram under them), batched by `collate_segments`.

A "step" is a node's index inside its segment (its joined row of every bio stream, streams.BIO_STREAMS).
Its clips are placed by the node's timestamp, not by that index (frames.py states the rule): the audio clip
by its frame offset from the segment's origin, the bio clips by sampling each stream's own rows around its
time. Items carry the bio clips as `bio`, stream name -> clips.

Training target: the listed labels as a normalised multi-hot (`label`); metric target: the first
listed label (`target`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from encoder.core import clip_utils, config, device_spectrogram, io, layout, participant, streams, util
from encoder.core.custom_transforms import (
    Normalization,
    SpecAugment,
    SpectrogramParams,
    clip_spectrogram,
    clip_start_sample,
    frame_offsets,
    mean_std,
    segment_spectrogram,
    slice_clip,
)
from encoder.core.frames import label_vector, rows_by_segment
from encoder.core.participant import InputOptions

AUDIO_STATS_SEGMENTS = 32  # training segments whose spectrograms give the audio mean/std
AUGMENT_STREAM = 1  # the masks' random stream, apart from the draw of steps ((seed, epoch, index) alone)


@dataclass
class Segment:
    segment_id: str
    session: int
    identity: str
    split: str
    wav: Path
    label: np.ndarray  # float32[7], normalised multi-hot of the listed labels (NaN: unlabelled, prediction only)
    target: int  # first listed label (-1: unlabelled)
    ts: np.ndarray  # float64[n], seconds of day of each node (joined row of every bio stream)
    values: dict[str, np.ndarray]  # bio stream -> float64[n], the node's own value
    rows: dict[str, np.ndarray]  # bio stream -> float64[m, 2]: every row of the segment, [ts, value], time-ordered
    transcript: str | None = None  # its words, marks stripped (frames.py); None: no readable transcript
    participant: participant.ParticipantStats | None = None  # participant.attach (participant_norm, eda_components)
    eda_parts: np.ndarray | None = None  # float64[m, 3] components of rows["eda"] (participant.attach, eda_components)
    spectrogram: np.ndarray | None = None  # (n_mels, frames) every node's clip, kept by participant.attach

    @property
    def n_steps(self) -> int:
        return len(self.ts)

    @property
    def origin(self) -> float:
        """Seconds of day of the segment's earliest row of any bio stream: the wav's start."""
        return float(min(rows[0, 0] for rows in self.rows.values()))

    def frame_offsets(self, params: SpectrogramParams, steps: np.ndarray | None = None) -> np.ndarray:
        """Spectrogram frame offset of each node (or of `steps`) from the segment's origin."""
        ts = self.ts if steps is None else self.ts[np.asarray(steps, dtype=np.int64)]
        return frame_offsets(ts, self.origin, params)

    def bio_clips(self, clip_length: int, steps: np.ndarray | None = None,
                  names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Raw clips, each (len(steps), clip_length), of every node or of `steps`, per bio stream of `names`
        (default: every stream the segment has)."""
        ts = self.ts if steps is None else self.ts[np.asarray(steps, dtype=np.int64)]
        return {name: clip_utils.bio_clips_at(self.rows[name][:, 0], self.rows[name][:, 1], ts, clip_length,
                                              config.BIO_STEP_S)
                for name in (self.rows if names is None else names)}


@dataclass
class SegmentTable:
    """Usable segments per split, what this stage skipped (segment id → reason) and what the dataframe
    stage had already dropped in the same splits (`dropped_before`, segment id → reason)."""

    by_split: dict[str, list[Segment]]
    skipped: dict[str, str]
    considered: int
    dropped_before: dict[str, str] = field(default_factory=dict)

    @property
    def unusable(self) -> dict[str, str]:
        """Every segment of the chosen sessions that has no prediction: dropped earlier or skipped here."""
        return {**self.dropped_before, **{k: reason_key(v) for k, v in self.skipped.items()}}

    def report(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for reason in self.unusable.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return {
            "segments": {name: len(segs) for name, segs in self.by_split.items()},
            "nodes": {name: int(sum(s.n_steps for s in segs)) for name, segs in self.by_split.items()},
            "kept": sum(len(segs) for segs in self.by_split.values()),
            "skipped": len(self.skipped),
            "dropped_by_frames": len(self.dropped_before),
            "dropped_reasons": dict(sorted(reasons.items())),
            "considered": self.considered,
        }

    def summary(self) -> str:
        """One line: kept per split and every reason a segment was left out, with its count."""
        report = self.report()
        kept = ", ".join(f"{name} {n}" for name, n in report["segments"].items())
        dropped = ", ".join(f"{n} {reason}" for reason, n in report["dropped_reasons"].items())
        return f"segments kept: {kept}; dropped {len(self.unusable)}" + (f" ({dropped})" if dropped else "")


def reason_key(reason: str) -> str:
    """The reason without its detail: 'wav unreadable (…)' -> 'wav unreadable'."""
    return reason.split(" (")[0]


def training_label(emotion_one_hot: str, votes: str, vote_weight: float) -> np.ndarray:
    """A segment's training target (float32[7], summing to 1): the total evaluation's normalised multi-hot
    and, with weight `vote_weight` in [0, 1], the evaluators' vote shares (kemdy20.evaluator_votes);
    (1 - w) * multi-hot + w * votes. A segment without votes keeps the multi-hot alone."""
    label = label_vector(emotion_one_hot)
    shares = np.asarray(votes.split(), dtype=np.float32) if isinstance(votes, str) and votes.strip() else None
    if not vote_weight or shares is None or shares.sum() <= 0:
        return label
    return ((1 - vote_weight) * label + vote_weight * shares / shares.sum()).astype(np.float32)


def load_segments(
    frames: Any,
    root: Path,
    splits: dict[str, Sequence[int]] | None = None,
    wanted: Iterable[str] = ("train", "val", "test"),
    sessions: Iterable[int] | None = None,
    max_skip_share: float = config.MAX_SKIP_SHARE,
    labels_required: bool = True,
    vote_weight: float = 0.0,
) -> SegmentTable:
    """Segments of `frames` (gt + entities) in the `wanted` splits (and `sessions`, when given).
    A segment whose wav is missing, unreadable or empty, or that has no bio samples, is skipped and
    counted; more than `max_skip_share` of them skipped raises util.DataError. With `labels_required`
    False (prediction) a row without label (emotion_one_hot "") gives label NaN and target -1.
    Segments of the same splits that the dataframe stage dropped are listed in `dropped_before`.
    A segment's `label` (the training target) is training_label's with `vote_weight`."""
    splits = util.session_splits() if splits is None else splits
    if vote_weight and "emotion_votes" not in frames.gt:
        raise util.DataError("gt_aug.csv has no emotion_votes column (built by an older version): rerun "
                             f"`python encoder/build_frames.py --root {root}`", Path(root) / "gt_aug.csv")
    wanted = set(wanted)
    sessions = None if sessions is None else set(sessions)
    table = SegmentTable({name: [] for name in splits if name in wanted}, {}, 0)
    for segment_id, reason in frames.dropped.items():
        session = util.parse_segment_id(segment_id)["session"]
        if util.split_of_session(session, splits) in wanted and (sessions is None or session in sessions):
            table.dropped_before[segment_id] = reason
    bio_rows = {stream.name: rows_by_segment(frames.bio[stream.name], stream.value_column)
                for stream in streams.BIO_STREAMS}
    for row in frames.gt.itertuples(index=False):
        split = util.split_of_session(int(row.session), splits)
        if split not in wanted or (sessions is not None and int(row.session) not in sessions):
            continue
        table.considered += 1
        segment_id = str(row.segment_id)
        entity = frames.entities.get(segment_id)
        path = layout.wav_path(root, segment_id)
        reason = io.check_wav(path)
        if entity is None or len(entity) == 0 or any(segment_id not in rows for rows in bio_rows.values()):
            reason = "no bio samples"
        if reason is not None:
            table.skipped[segment_id] = f"{reason} ({path})" if reason.startswith("wav") else reason
            continue
        entity = np.asarray(entity, dtype=np.float64)
        labelled = labels_required or (isinstance(row.emotion_one_hot, str) and row.emotion_one_hot.strip() != "")
        label = (training_label(row.emotion_one_hot, getattr(row, "emotion_votes", ""), vote_weight) if labelled
                 else np.full(config.NUM_CLASSES, np.nan, np.float32))
        table.by_split[split].append(
            Segment(segment_id, int(row.session), str(row.identity), split, path,
                    label, int(row.target) if labelled else -1,
                    entity[:, 0].copy(), {name: entity[:, 1 + i].copy() for i, name in enumerate(bio_rows)},
                    {name: rows[segment_id] for name, rows in bio_rows.items()}, _transcript(row))
        )
    if table.considered and len(table.skipped) / table.considered > max_skip_share:
        first_id, first_reason = next(iter(table.skipped.items()))
        raise util.DataError(
            f"{len(table.skipped)} of {table.considered} segments unusable, above the allowed share "
            f"{max_skip_share:.0%} (first: {first_id}: {first_reason})",
            Path(root),
        )
    return table


def _transcript(row: Any) -> str | None:
    """The transcript of a gt row; None when the dataframe stage found none it could read."""
    if getattr(row, "transcript_status", "missing") != "ok":
        return None
    text = row.transcript
    return text if isinstance(text, str) else ""


def compute_normalization(
    train: Sequence[Segment], clip_length: int, params: SpectrogramParams, audio_segments: int = AUDIO_STATS_SEGMENTS,
    options: InputOptions | None = None,
) -> Normalization:
    """Mean/std of every bio stream (streams.BIO_STREAMS) over every training sample, and of the log-mel values
    over the spectrograms of up to `audio_segments` evenly spaced training segments. Training data only; with the
    participant options of `options`, of the values they standardise (participant.node_values for the bio streams:
    participant_norm, bio_norm; participant.audio_input for the spectrogram: participant_norm, contour_norm;
    segments attached first)."""
    if not train:
        raise util.DataError("no usable training segment to estimate the normalisation from")
    options = options or InputOptions(clip_length)
    values = [participant.node_values(s, options) for s in train]
    bio = {name: mean_std([v[name] for v in values]) for name in streams.names()}
    picks = np.unique(np.linspace(0, len(train) - 1, min(audio_segments, len(train))).round().astype(int))
    unit = Normalization.unit(())
    specs = [
        participant.audio_input(train[i], segment_spectrogram(io.read_wav(train[i].wav, params.sample_rate),
                                                              int(train[i].frame_offsets(params)[-1]), clip_length,
                                                              params), unit, options)
        for i in picks
    ]
    audio = mean_std(specs)
    return Normalization(audio[0], audio[1], bio)


def epoch_draws(seed: int, epoch: int, index: int, count: int, draws: int = 1) -> np.ndarray:
    """`draws` positions in range(`count`) for training segment `index` in `epoch`, from (seed, epoch, index):
    first the original one-clip draw (so that one draw reproduces its runs and k draws add to it), then the
    other positions in random order, distinct, repeated cyclically only when the segment has fewer than
    `draws`."""
    rng = np.random.default_rng([seed, epoch, index])
    first = int(rng.integers(count))
    if draws == 1:
        return np.array([first])
    others = np.delete(np.arange(count), first)[rng.permutation(count - 1)]
    return np.resize(np.concatenate([[first], others]), draws)


class TrainClipDataset(Dataset):
    """`clips_per_segment` clips per segment, centred on distinct steps drawn anew each epoch (`set_epoch`):
    item i is draw i // n of segment i % n (n segments), so that an epoch sees every segment k times and
    its first n items are the one-clip epoch's. `augment` masks each clip's normalised spectrogram.
    `cache`: keep each segment's whole spectrogram after its first clip and cut later clips from it (the same
    frames: tests/test_encoder_clips.py), so that a segment's wav is read and transformed once per process
    instead of once per clip; memory: one float32 spectrogram per segment in every loader process."""

    def __init__(self, segments: Sequence[Segment], norm: Normalization, clip_length: int,
                 params: SpectrogramParams, seed: int, options: InputOptions | None = None,
                 clips_per_segment: int = 1, augment: SpecAugment | None = None, device_spectrogram: bool = False,
                 cache: bool = False):
        if clips_per_segment < 1:
            raise ValueError(f"clips_per_segment must be at least 1, not {clips_per_segment}")
        self.segments = list(segments)
        self.norm = norm
        self.clip_length = clip_length
        self.params = params
        self.seed = seed
        self.options = options or InputOptions(clip_length)
        self.clips_per_segment = int(clips_per_segment)
        self.augment = augment or SpecAugment()
        self.device_spectrogram = device_spectrogram
        self.cache: dict[int, np.ndarray] | None = {} if cache and not device_spectrogram else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def step_of(self, index: int) -> int:
        """The step item `index` is centred on in the current epoch."""
        segment, draw = index % len(self.segments), index // len(self.segments)
        steps = epoch_draws(self.seed, self.epoch, segment, self.segments[segment].n_steps, self.clips_per_segment)
        return int(steps[draw])

    def __len__(self) -> int:
        return len(self.segments) * self.clips_per_segment

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...] | dict[str, torch.Tensor]:
        number = index % len(self.segments)
        seg = self.segments[number]
        steps = np.array([self.step_of(index)])
        offset = int(seg.frame_offsets(self.params, steps)[0])
        if self.device_spectrogram:
            return self.device_item(seg, io.read_wav(seg.wav, self.params.sample_rate), steps, index)
        if self.cache is None:
            spec = clip_spectrogram(io.read_wav(seg.wav, self.params.sample_rate), offset, self.clip_length,
                                    self.params)
        else:
            if number not in self.cache:
                self.cache[number] = segment_spectrogram(io.read_wav(seg.wav, self.params.sample_rate),
                                                         int(seg.frame_offsets(self.params)[-1]), self.clip_length,
                                                         self.params)
            spec = slice_clip(self.cache[number], offset, self.clip_length, self.params)
        spec = participant.audio_input(seg, spec, self.norm, self.options)
        spec = self.augment(spec, np.random.default_rng([self.seed, self.epoch, index, AUGMENT_STREAM]),
                           self.params.n_mels)
        bio = participant.bio_inputs(seg, steps, self.norm, self.options)
        return (torch.from_numpy(spec)[None], {name: torch.from_numpy(clips[0]) for name, clips in bio.items()},
                torch.from_numpy(seg.label), torch.tensor(seg.target))

    def device_item(self, seg: Segment, wav: np.ndarray, steps: np.ndarray, index: int) -> dict[str, torch.Tensor]:
        """The item for spectrograms on the model's device (device_spectrogram.clip_batch): the clip's wav
        span instead of its spectrogram, and SpecAugment's mask from the same random stream."""
        frames = self.params.clip_frames(self.clip_length)
        start = clip_start_sample(seg.frame_offsets(self.params, steps)[0], self.clip_length, self.params)
        keep = device_spectrogram.augment_keep(self.augment, (self.params.n_mels, frames),
                                               np.random.default_rng([self.seed, self.epoch, index, AUGMENT_STREAM]))
        bio = participant.bio_inputs(seg, steps, self.norm, self.options)
        return {"span": torch.from_numpy(device_spectrogram.wav_span(wav, start, frames, self.params)),
                "bio": {name: torch.from_numpy(clips[0]) for name, clips in bio.items()},
                "label": torch.from_numpy(seg.label), "target": torch.tensor(seg.target),
                **({} if keep is None else {"keep": torch.from_numpy(keep)}),
                **device_spectrogram.mel_stats(seg, self.options)}


class TrainSegmentDataset(Dataset):
    """The segment pass's training items: `clips_per_segment` per segment per epoch, each a span of
    `span_steps` consecutive nodes (all of a shorter segment) starting at distinct nodes drawn anew each
    epoch from (seed, epoch, segment index) (epoch_draws; item i is draw i // n of segment i % n): the
    spectrogram from the first node's clip start to the last one's clip end, those nodes' steps and frame
    offsets in it, their bio clips and the segment's label. The trunk runs over the span and pools every
    node of it, as extraction pools every node of a whole segment; a span a few nodes long costs little
    more than one clip. `augment` masks the span's normalised spectrogram. `collate_segments` batches them."""

    def __init__(self, segments: Sequence[Segment], norm: Normalization, clip_length: int,
                 params: SpectrogramParams, seed: int, options: InputOptions, span_steps: int,
                 clips_per_segment: int = 1, augment: SpecAugment | None = None, device_spectrogram: bool = False):
        if span_steps < 1 or clips_per_segment < 1:
            raise ValueError(f"span_steps and clips_per_segment must be at least 1, not {span_steps} "
                             f"and {clips_per_segment}")
        self.segments = list(segments)
        self.norm = norm
        self.clip_length = clip_length
        self.params = params
        self.seed = seed
        self.options = options
        self.span_steps = int(span_steps)
        self.clips_per_segment = int(clips_per_segment)
        self.augment = augment or SpecAugment()
        self.device_spectrogram = device_spectrogram
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.segments) * self.clips_per_segment

    def first_step(self, index: int) -> int:
        """The first node of item `index`'s span in the current epoch."""
        segment, draw = index % len(self.segments), index // len(self.segments)
        starts = self.segments[segment].n_steps - self.span_steps + 1
        if starts <= 1:
            return 0
        return int(epoch_draws(self.seed, self.epoch, segment, starts, self.clips_per_segment)[draw])

    def __getitem__(self, index: int) -> dict[str, Any]:
        seg = self.segments[index % len(self.segments)]
        first = self.first_step(index)
        steps = np.arange(first, min(first + self.span_steps, seg.n_steps))
        offsets = seg.frame_offsets(self.params, steps)
        wav = io.read_wav(seg.wav, self.params.sample_rate)
        rng = np.random.default_rng([self.seed, self.epoch, index, AUGMENT_STREAM])
        if self.device_spectrogram:  # the span's wav; its spectrogram is computed in the batch on the device
            frames = int(offsets[-1]) - int(offsets[0]) + self.params.clip_frames(self.clip_length)
            start = clip_start_sample(offsets[0], self.clip_length, self.params)
            keep = device_spectrogram.augment_keep(self.augment, (self.params.n_mels, frames), rng)
            audio = {"span": torch.from_numpy(device_spectrogram.wav_span(wav, start, frames, self.params)),
                     "frames": frames, **({} if keep is None else {"keep": torch.from_numpy(keep)}),
                     **device_spectrogram.mel_stats(seg, self.options)}
        else:
            spec = segment_spectrogram(wav, int(offsets[-1]), self.clip_length, self.params, int(offsets[0]))
            audio = {"spec": torch.from_numpy(self.augment(participant.audio_input(seg, spec, self.norm, self.options),
                                                           rng, self.params.n_mels))}
        bio = participant.bio_inputs(seg, steps, self.norm, self.options)
        return {**audio,
                "offsets": torch.from_numpy(offsets - offsets[0]), "bio": _tensors(bio),
                "label": torch.from_numpy(seg.label),
                "width": self.params.clip_frames(self.clip_length), "steps": torch.from_numpy(steps)}


def collate_segments(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Batch TrainSegmentDataset items: spectrograms zero-padded to the longest (B, 1, n_mels, frames), the
    nodes' bio clips concatenated, `pool` (N, B · positions) averaging each node's window of its own
    segment's trunk output (models.window_pool), each node's label, and `weight`, 1 / (its segment's
    nodes · B), so that every segment counts once in the loss, as one clip does in the per-clip pass.
    Items of the device path (a wav span instead of the spectrogram) give, instead of `spec`, their `spans`,
    `frames`, `keeps` (SpecAugment, when on) and participant statistics, for device_spectrogram.segment_batch."""
    from encoder.core.models import TRUNK_STRIDE, window_pool

    on_device = "span" in items[0]
    widths = [int(item["frames"]) if on_device else item["spec"].shape[1] for item in items]
    frames = max(widths)
    positions = -(-frames // TRUNK_STRIDE)
    counts = [len(item["offsets"]) for item in items]
    pool = torch.zeros(sum(counts), len(items) * positions)
    row = 0
    for b, item in enumerate(items):
        pool[row : row + counts[b], b * positions : (b + 1) * positions] = window_pool(item["offsets"], item["width"],
                                                                                       positions)
        row += counts[b]
    if on_device:
        audio: dict[str, Any] = {"spans": [item["span"] for item in items], "frames": torch.tensor(widths)}
        if "keep" in items[0]:
            audio["keeps"] = [item["keep"] for item in items]
        if "mel_mean" in items[0]:
            audio.update({k: torch.stack([item[k] for item in items]) for k in ("mel_mean", "mel_std")})
    else:
        spec = torch.zeros(len(items), 1, items[0]["spec"].shape[0], frames)
        for b, item in enumerate(items):
            spec[b, 0, :, : item["spec"].shape[1]] = item["spec"]
        audio = {"spec": spec}
    return {**audio, "pool": pool, "bio": {name: torch.cat([item["bio"][name] for item in items])
                                           for name in items[0]["bio"]},
            "label": torch.cat([item["label"].expand(n, -1) for item, n in zip(items, counts, strict=True)]),
            "weight": torch.cat([torch.full((n,), 1.0 / (n * len(items))) for n in counts])}


class SegmentDataset(Dataset):
    """Item = one segment: its normalised spectrogram (n_mels, frames) covering every step's clip, the frame offset of
    each step, its clips of every bio stream of the normalisation (`bio`, name -> (n_steps, channels, L): EDA 1 or 4
    channels, others 1), L = options.bio_clip_length, and its index. `step_stride` > 1 keeps every k-th step only.
    With `device_spectrogram` an item carries the wav span under its spectrogram (`span`, `frames` and, with
    participant_norm, the participant's per-band statistics) instead of `spec`, which
    device_spectrogram.spectrogram_items computes on the model's device (a spectrogram participant.attach kept is
    still returned as `spec`)."""

    def __init__(self, segments: Sequence[Segment], norm: Normalization, clip_length: int,
                 params: SpectrogramParams, step_stride: int = 1, options: InputOptions | None = None,
                 device_spectrogram: bool = False):
        self.segments = list(segments)
        self.norm = norm
        self.clip_length = clip_length
        self.params = params
        self.step_stride = step_stride
        self.options = options or InputOptions(clip_length)
        self.device_spectrogram = device_spectrogram

    def steps(self, index: int) -> np.ndarray:
        return np.arange(0, self.segments[index].n_steps, self.step_stride)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> dict[str, Any]:
        seg = self.segments[index]
        steps = self.steps(index)
        offsets = seg.frame_offsets(self.params, steps)
        frames = int(offsets[-1]) + self.params.clip_frames(self.clip_length)
        if seg.spectrogram is not None:  # participant.attach computed it with the participant's statistics
            audio = {"spec": seg.spectrogram[:, :frames]}
        elif self.device_spectrogram:
            start = clip_start_sample(0, self.clip_length, self.params)
            wav = io.read_wav(seg.wav, self.params.sample_rate)
            audio = {"span": torch.from_numpy(device_spectrogram.wav_span(wav, start, frames, self.params)),
                     "frames": frames, **device_spectrogram.mel_stats(seg, self.options)}
        else:
            audio = {"spec": segment_spectrogram(io.read_wav(seg.wav, self.params.sample_rate), int(offsets[-1]),
                                                 self.clip_length, self.params)}
        if "spec" in audio:
            audio["spec"] = torch.from_numpy(participant.audio_input(seg, audio["spec"], self.norm, self.options))
        return {
            "index": index,
            "steps": torch.from_numpy(steps),
            "offsets": torch.from_numpy(offsets),
            **audio,
            "bio": _tensors(participant.bio_inputs(seg, steps, self.norm, self.options)),
        }


class CausalSegmentDataset(SegmentDataset):
    """SegmentDataset whose node inputs use prefix participant statistics (participant.prefix_views: the
    online embedder's, node by node in arrival order) instead of the whole session's. The views of a
    participant are computed when its first segment is asked for (from its segments in this dataset) and
    kept while its session's segments are read; with the participant options off it is SegmentDataset."""

    def __init__(self, segments: Sequence[Segment], norm: Normalization, clip_length: int,
                 params: SpectrogramParams, options: InputOptions | None = None, device_spectrogram: bool = False):
        if device_spectrogram and options is not None and (options.needs_participant or options.segment_pass):
            raise ValueError("causal items with a participant option or the segment pass need their "
                             "spectrograms on the CPU (device_spectrogram.resolve)")
        super().__init__(segments, norm, clip_length, params, options=options, device_spectrogram=device_spectrogram)
        self._views: dict[tuple[int, str], dict[tuple[str, int], Any]] = {}

    def view(self, seg: Segment, step: int) -> Segment:
        """The segment as the node at `step` sees it online."""
        key = participant.participant_key(seg)
        if key not in self._views:
            if any(k[0] != key[0] for k in self._views):
                self._views.clear()  # another session: its participants' views are not needed again
            group = [s for s in self.segments if participant.participant_key(s) == key]
            self._views[key] = participant.prefix_views(group, self.params, self.options, self.clip_length)
        return self._views[key][(seg.segment_id, int(step))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.options.needs_participant:
            item = super().__getitem__(index)
            if self.options.segment_pass:  # a causal node sees its own clip, never the segment after it
                item["clips"] = segment_clips(item, self.clip_length, self.params)
            return item
        seg = self.segments[index]
        steps = self.steps(index)
        offsets = seg.frame_offsets(self.params, steps)
        wav = io.read_wav(seg.wav, self.params.sample_rate)
        spec = segment_spectrogram(wav, int(offsets[-1]), self.clip_length, self.params)
        clips, bio = [], []
        for step, offset in zip(steps, offsets, strict=True):
            seen = self.view(seg, step)
            clips.append(participant.audio_input(seen, slice_clip(spec, offset, self.clip_length, self.params),
                                                 self.norm, self.options))
            bio.append(participant.bio_inputs(seen, np.array([step]), self.norm, self.options))
        return {
            "index": index,
            "steps": torch.from_numpy(steps),
            "offsets": torch.from_numpy(offsets),
            "clips": torch.from_numpy(np.stack(clips))[:, None],
            "bio": {name: torch.from_numpy(np.concatenate([b[name] for b in bio])) for name in bio[0]},
        }


def make_dataset(segments: Sequence[Segment], norm: Normalization, clip_length: int, params: SpectrogramParams,
                 options: InputOptions | None = None, causal: bool = False,
                 device_spectrogram: bool = False) -> SegmentDataset:
    """The dataset of every node of `segments`: CausalSegmentDataset when `causal`, else SegmentDataset
    (whose segments need participant.attach first when a participant option is on); `device_spectrogram`:
    items carry wav spans for device_spectrogram.spectrogram_items."""
    kind = CausalSegmentDataset if causal else SegmentDataset
    return kind(segments, norm, clip_length, params, options=options, device_spectrogram=device_spectrogram)


def _tensors(bio: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(clips) for name, clips in bio.items()}


@dataclass
class NodeBatch:
    audio: torch.Tensor  # (B, 1, n_mels, clip frames)
    bio: dict[str, torch.Tensor]  # bio stream -> (B, channels, L): EDA 1 or 4 channels, the others 1
    segment_index: np.ndarray  # (B,) index into the dataset's segments
    step: np.ndarray  # (B,) step of each node inside its segment


def segment_clips(item: dict[str, Any], clip_length: int, params: SpectrogramParams) -> torch.Tensor:
    """(n, 1, n_mels, clip frames) clips of the segment spectrogram, one per step of `item`, each
    starting at that step's frame offset (CausalSegmentDataset's items carry the clips themselves)."""
    if "clips" in item:
        return item["clips"]
    windows = item["spec"].unfold(1, params.clip_frames(clip_length), 1)  # (mels, start frame, frames)
    return windows[:, item["offsets"]].permute(1, 0, 2).unsqueeze(1)


def node_batches(items: Iterable[dict[str, Any]], batch_size: int, clip_length: int,
                 params: SpectrogramParams, device: torch.device | None = None) -> Iterator[NodeBatch]:
    """Pack the steps of consecutive segments into batches of `batch_size` nodes (the last smaller).
    With `device`, each segment's spectrogram and bio clips move there before its clips are cut: a
    clip repeats most of its neighbours' frames (clip_length times over), so cutting them on the GPU
    moves clip_length times fewer bytes through the host than cutting them on the CPU."""
    parts: list[NodeBatch] = []
    pending = 0
    for item in items:
        n = len(item["steps"])
        if device is not None:
            item = {**item, **{k: item[k].to(device) for k in ("spec", "clips", "offsets") if k in item},
                    "bio": {name: clips.to(device) for name, clips in item["bio"].items()}}
        parts.append(NodeBatch(segment_clips(item, clip_length, params), item["bio"], np.full(n, int(item["index"])),
                               item["steps"].numpy()))
        pending += n
        while pending >= batch_size:
            yield take_nodes(parts, batch_size)
            pending -= batch_size
    if pending:
        yield take_nodes(parts, pending)


def take_nodes(parts: list[NodeBatch], count: int) -> NodeBatch:
    """Remove the first `count` nodes from `parts` (in place) and stack them into a batch."""
    taken: list[NodeBatch] = []
    need = count
    while need:
        part = parts[0]
        n = len(part.step)
        if n <= need:
            taken.append(part)
            parts.pop(0)
            need -= n
        else:
            taken.append(_nodes(part, slice(None, need)))
            parts[0] = _nodes(part, slice(need, None))
            need = 0
    return NodeBatch(torch.cat([p.audio for p in taken]).contiguous(),
                     {name: torch.cat([p.bio[name] for p in taken]) for name in taken[0].bio},
                     np.concatenate([p.segment_index for p in taken]), np.concatenate([p.step for p in taken]))


def _nodes(batch: NodeBatch, part: slice) -> NodeBatch:
    return NodeBatch(batch.audio[part], {name: clips[part] for name, clips in batch.bio.items()},
                     batch.segment_index[part], batch.step[part])

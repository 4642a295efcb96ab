"""Encoder input options that read a participant's own signal (config.STE_inputs), and the bio clip length.

* `bio_clip_length`: the clips' length of the bio streams (EDA, TEMP: streams.BIO_STREAMS) in 4 Hz steps, set
  apart from the audio clip's (`clip_length`); None: the same. At 4 Hz an 11-step clip is 2.75 s, shorter than a
  skin conductance response's rise (1-5 s); 41 steps is about 10 s.
* `participant_norm`: every input standardised by the statistics of its participant (identity) within
  its session, taken from that participant's own signal, never from a label: the log-mel spectrogram
  per mel band (mean and sd over every frame of the participant's segment wavs), every bio stream (over
  the participant's rows). The training-set normalisation (custom_transforms.Normalization) is then
  estimated on, and applied to, the standardised values. Offline (training, extraction, predict.py)
  the statistics cover the participant's whole session; online (`OnlineParticipants`) only what has
  arrived when the node is embedded: the participant's earlier segments and the current segment up to
  the end of the node's clip. A causal model's features (STE_forward.py --causal) are extracted with the
  online statistics (`prefix_views`), the inputs it runs on.
* `contour_norm`: the contour rows alone (STE_inputs["contour"], contours.py) standardised as participant_norm
  standardises every row, the log-mel bands and the bio streams keeping the training-set normalisation: the
  speaker's own pitch and loudness become the reference, while nothing else changes.
* `bio_norm`: the bio streams alone standardised as participant_norm standardises them, the log-mel bands keeping
  the training-set normalisation: a participant's EDA and skin-temperature levels, which differ between people far
  more than between emotions, no longer tell the encoder who is speaking.
* `eda_components`: three more EDA input channels beside the raw series, from NeuroKit2: the tonic
  and phasic parts (`nk.eda_phasic`, its default high-pass split) and the SCR peaks (`nk.eda_peaks` on
  the phasic part: at each peak sample its amplitude, 0 elsewhere). They are computed over the
  participant's rows in the session, concatenated in time order (the gaps between the participant's
  segments are not filled), each contiguous run of 4 Hz rows (split where two rows are more than one
  step apart) decomposed on its own, so that no join between two segments is filtered as a response; they
  are scaled by the participant's EDA sd (the tonic part also centred on its mean), so they need no
  training statistics. A run shorter than MIN_COMPONENT_ROWS rows gets tonic = the series, phasic =
  peaks = 0.

Participant sd floors and z-score clip. Each sd is floored at about its sensor's resolution (a bio stream's
`sd_floor`, streams.BIO_STREAMS; MEL_STD_FLOOR for the log-mel bands), not at an absolute epsilon: a flat
non-responder's EDA, or an online window's first few rows, would otherwise divide by nearly zero. Every
participant-standardised value is then clipped to ±Z_CLIP. Offline and online statistics go through the same
floors and clip.

Participant = (session, identity). Each option only ever reads that participant's own rows and wavs.

InputOptions also carries the audio stream's pass (`audio_pass`, "segment" or "clip", with the segment
pass's chunk and context lengths in spectrogram frames; models.py), since a checkpoint's features depend
on it as much as on the options above.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from encoder.core import clip_utils, config, contours, io, streams
from encoder.core.custom_transforms import Normalization, SpectrogramParams, log_mel_frames

MIN_COMPONENT_ROWS = 12  # below this NeuroKit2's filter has too few samples (its padding needs 10)
EDA_CHANNELS = ("raw", "tonic", "phasic", "scr_peaks")
COMPONENT_STREAM = "eda"  # the bio stream whose channels `eda_components` extends
# Least participant sd of the log-mel bands, in dB: well below a voiced band's spread (a bio stream's least sd
# is its `sd_floor`, about its sensor's resolution). A smaller sd is noise.
MEL_STD_FLOOR = 1.0
Z_CLIP = 10.0  # participant z-scores are clipped to ±Z_CLIP (a floored sd can still leave outliers far out)
RUN_GAP_S = 1.5 * config.BIO_STEP_S  # rows further apart than this (a step, with jitter) start a new run


@dataclass(frozen=True)
class InputOptions:
    """The encoder input options of one checkpoint (read from its `inputs`, see input_signature)."""

    bio_clip_length: int
    participant_norm: bool = False
    eda_components: bool = False
    audio_pass: str = "clip"
    segment_chunk_frames: int = 2048
    segment_context_frames: int = 256
    contour_norm: bool = False  # the contour rows alone standardised per participant (contours.py)
    audio_stem: str = "resnet"  # the audio ResNet18's stem (models.AUDIO_STEMS)
    bio_norm: bool = False  # the bio streams alone standardised per participant

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any]) -> InputOptions:
        """From STE_inputs or a checkpoint's inputs (a checkpoint from before the options: all off, and
        the per-clip audio pass)."""
        bio = inputs.get("bio_clip_length") or inputs["clip_length"]
        return cls(int(bio), bool(inputs.get("participant_norm", False)), bool(inputs.get("eda_components", False)),
                   str(inputs.get("audio_pass", cls.audio_pass)),
                   int(inputs.get("segment_chunk_frames", cls.segment_chunk_frames)),
                   int(inputs.get("segment_context_frames", cls.segment_context_frames)),
                   bool(inputs.get("contour_norm", False)), str(inputs.get("audio_stem", cls.audio_stem)),
                   bool(inputs.get("bio_norm", False)))

    @property
    def segment_pass(self) -> bool:
        return self.audio_pass == "segment"

    def bio_channels(self, names: Iterable[str]) -> dict[str, int]:
        """Input channels of each bio stream of `names`: EDA's four with eda_components, else one."""
        return {name: len(EDA_CHANNELS) if name == COMPONENT_STREAM and self.eda_components else 1 for name in names}

    @property
    def needs_participant(self) -> bool:
        """Whether any option reads the participant's own signal (its statistics or its EDA components)."""
        return self.bio_statistics or self.audio_statistics or self.eda_components

    @property
    def bio_statistics(self) -> bool:
        """Whether the bio streams are standardised by their participant's statistics (participant_norm, bio_norm)."""
        return self.participant_norm or self.bio_norm

    @property
    def audio_statistics(self) -> bool:
        """Whether the participant's audio frames are gathered (participant_norm, contour_norm)."""
        return self.participant_norm or self.contour_norm

    def signature(self) -> dict[str, Any]:
        """The options as a checkpoint records them (`contour_norm` and `bio_norm` only when on and `audio_stem` only
        when not the ResNet's, so that records written before they existed stay equal)."""
        return {"bio_clip_length": self.bio_clip_length, "participant_norm": self.participant_norm,
                "eda_components": self.eda_components, "audio_pass": self.audio_pass,
                "segment_chunk_frames": self.segment_chunk_frames,
                "segment_context_frames": self.segment_context_frames,
                **({"contour_norm": True} if self.contour_norm else {}),
                **({"audio_stem": self.audio_stem} if self.audio_stem != "resnet" else {}),
                **({"bio_norm": True} if self.bio_norm else {})}


@dataclass
class ParticipantStats:
    """Mean and sd of one participant's signal in one session: per bio stream (name -> (mean, sd)) and per
    mel band (mel_* None: audio not gathered)."""

    bio: dict[str, tuple[float, float]]
    mel_mean: np.ndarray | None = None  # float64 (n_mels,)
    mel_std: np.ndarray | None = None


class Moments:
    """Running count, sum and sum of squares over axis 0 of the arrays added (float64), per column; NaN
    (an unvoiced frame's F0, contours.py) is no value. A column without any value has mean 0 and sd `floor`."""

    def __init__(self, width: int | None = None):
        shape = () if width is None else (width,)
        self.count = np.zeros(shape, dtype=np.int64)
        self.sum = np.zeros(shape)
        self.squares = np.zeros(shape)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        self.count = self.count + np.count_nonzero(~np.isnan(values), axis=0)
        self.sum = self.sum + np.nansum(values, axis=0)
        self.squares = self.squares + np.nansum(values**2, axis=0)

    def mean_std(self, floor: float) -> tuple[Any, Any]:
        """Mean and sd, the sd at least `floor` (the signal's sd floor)."""
        if not np.any(self.count):
            raise ValueError("no value to take a mean of")
        mean = self.sum / np.maximum(self.count, 1)
        var = np.maximum(self.squares / np.maximum(self.count, 1) - mean**2, 0.0)
        return mean, np.maximum(np.sqrt(var), floor)


def standardised(values: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """(values - mean) / std clipped to ±Z_CLIP."""
    return np.clip((values - mean) / std, -Z_CLIP, Z_CLIP)


def participant_key(segment: Any) -> tuple[int, str]:
    return int(segment.session), str(segment.identity)


def by_participant(segments: Sequence[Any]) -> dict[tuple[int, str], list[Any]]:
    """Segments grouped by participant, each group in time order (origin, then segment ID)."""
    groups: dict[tuple[int, str], list[Any]] = {}
    for seg in segments:
        groups.setdefault(participant_key(seg), []).append(seg)
    return {k: sorted(v, key=lambda s: (s.origin, s.segment_id)) for k, v in groups.items()}


def participant_rows(segments: Sequence[Any], name: str) -> np.ndarray:
    """(m, 2) [ts, value] rows of the segments' bio stream `name`, time-ordered; a timestamp two segments
    share is kept once (the first segment's)."""
    rows = np.concatenate([s.rows[name] for s in segments])
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return rows[np.r_[True, rows[1:, 0] != rows[:-1, 0]]]


def wav_frames(wav: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """(n_frames, n_mels) log-mel frames of a whole wav, frame m centred on sample m·hop (the frames
    a participant's audio statistics are taken over)."""
    n_frames = len(wav) // params.hop_length + 1
    return log_mel_frames(wav, 0, n_frames, params).T


def runs(ts: np.ndarray) -> list[slice]:
    """The contiguous runs of time-ordered 4 Hz timestamps: split where two rows are over RUN_GAP_S apart."""
    cuts = np.flatnonzero(np.diff(np.asarray(ts, dtype=np.float64)) > RUN_GAP_S) + 1
    bounds = [0, *cuts.tolist(), len(ts)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def eda_components(values: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
    """(m, 3) tonic, phasic and SCR-peak amplitude of a time-ordered 4 Hz EDA series, each contiguous run
    of `ts` (None: one run) decomposed on its own (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64)
    if ts is not None and len(ts) != len(values):
        raise ValueError(f"{len(ts)} timestamps for {len(values)} EDA values")
    out = np.zeros((len(values), 3))
    for run in runs(ts) if ts is not None else [slice(0, len(values))]:
        out[run] = _run_components(values[run])
    return out


def _run_components(values: np.ndarray) -> np.ndarray:
    """eda_components of one contiguous run."""
    out = np.zeros((len(values), 3))
    out[:, 0] = values
    if len(values) < MIN_COMPONENT_ROWS or np.ptp(values) == 0:
        return out
    import neurokit2 as nk

    parts = nk.eda_phasic(values, sampling_rate=config.BIO_RATE_HZ)
    phasic = parts["EDA_Phasic"].to_numpy()
    out[:, 0] = parts["EDA_Tonic"].to_numpy()
    out[:, 1] = phasic
    try:
        peaks, _ = nk.eda_peaks(phasic, sampling_rate=config.BIO_RATE_HZ)
    except (ValueError, IndexError):  # no response found in a flat or very short phasic part
        return out
    out[:, 2] = np.nan_to_num(peaks["SCR_Peaks"].to_numpy() * peaks["SCR_Amplitude"].to_numpy())
    return out


def bio_stats(rows: dict[str, np.ndarray]) -> ParticipantStats:
    """Mean and sd (floored at the stream's sd_floor) of each bio stream's (m, 2) [ts, value] `rows`."""
    stats = {}
    for name, values in rows.items():
        moments = Moments()
        moments.add(values[:, 1])
        mean, std = moments.mean_std(streams.stream(name).sd_floor)
        stats[name] = (float(mean), float(std))
    return ParticipantStats(stats)


def attach(segments: Sequence[Any], params: SpectrogramParams, options: InputOptions,
           clip_length: int | None = None, keep_spectrograms: bool = False) -> None:
    """Give every segment its participant's statistics (`participant`) and, with eda_components, its
    EDA rows' components (`eda_parts`, aligned with rows["eda"]), from the participant's segments among
    `segments` (offline: the whole session). Nothing happens when neither option is on.

    With participant_norm and `clip_length`, the wav frames the statistics are taken over are computed
    together with the frames the encoder reads (dataset.SegmentDataset: from the first node's clip start to
    the last one's clip end), in one log-mel pass per wav (audio_frames); with `keep_spectrograms` the
    latter are kept as the segment's `spectrogram`, so that the dataset neither reads the wav nor computes
    its spectrogram again, until release_spectrograms. Every caller that embeds passes `clip_length`, so
    that its statistics come from the same pass whether it keeps the spectrograms or not."""
    if not options.needs_participant:
        return
    for group in by_participant(segments).values():
        rows = {name: participant_rows(group, name) for name in group[0].rows}
        stats = bio_stats(rows)
        if options.audio_statistics:
            mel = Moments(params.n_rows)
            for seg in group:
                wav = io.read_wav(seg.wav, params.sample_rate)
                if clip_length is None:
                    mel.add(wav_frames(wav, params))
                    continue
                inside, spectrogram = audio_frames(seg, wav, params, clip_length)
                mel.add(inside)
                if keep_spectrograms:
                    seg.spectrogram = spectrogram
            stats.mel_mean, stats.mel_std = mel.mean_std(MEL_STD_FLOOR)
        for seg in group:
            seg.participant = stats
        if options.eda_components:
            attach_components(group, rows[COMPONENT_STREAM])


def audio_frames(segment: Any, wav: np.ndarray, params: SpectrogramParams,
                 clip_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One log-mel pass over `wav` covering both the whole wav and every node's clip of `segment`:
    ((n_frames, n_mels) frames centred on the wav's samples 0, hop, ... (wav_frames), (n_mels, frames)
    the segment's spectrogram from its first node's clip start to its last node's clip end
    (custom_transforms.segment_spectrogram))."""
    lead = (clip_length // 2) * params.frames_per_step  # the first node's clip starts this many frames early
    n_wav = len(wav) // params.hop_length + 1
    n_clips = int(segment.frame_offsets(params)[-1]) + params.clip_frames(clip_length)
    frames = log_mel_frames(wav, -lead * params.hop_length, max(lead + n_wav, n_clips), params)
    return frames[:, lead : lead + n_wav].T, frames[:, :n_clips]


def release_spectrograms(segments: Sequence[Any]) -> None:
    """Drop the spectrograms attach kept."""
    for seg in segments:
        seg.spectrogram = None


def audio_input(segment: Any, spec: np.ndarray, norm: Normalization, options: InputOptions) -> np.ndarray:
    """A (rows, frames) log-mel spectrogram (and contour rows) of `segment` as the encoder reads it: every
    row standardised by its participant's statistics with participant_norm, the contour rows alone with
    contour_norm; a contour's missing values (NaN: unvoiced) become 0, the normalised mean."""
    if options.participant_norm:
        stats = segment.participant
        spec = standardised(spec, stats.mel_mean[:, None], stats.mel_std[:, None])
    elif options.contour_norm:
        stats, first = segment.participant, len(spec) - len(contours.ROWS)
        spec = np.concatenate([spec[:first], standardised(spec[first:], stats.mel_mean[first:, None],
                                                          stats.mel_std[first:, None])])
    spec = norm.audio(spec)
    return np.nan_to_num(spec, nan=0.0) if np.isnan(spec).any() else spec


def bio_inputs(segment: Any, steps: np.ndarray, norm: Normalization, options: InputOptions) -> dict[str, np.ndarray]:
    """float32 clips (n, channels, L) of `steps`, L = bio_clip_length, of every bio stream `norm` normalises
    (the checkpoint's streams), as the encoder reads them: EDA's channels (options.bio_channels) the raw
    series and, with eda_components, its components."""
    stats = segment.participant
    inputs = {}
    for name, clips in segment.bio_clips(options.bio_clip_length, steps, norm.bio).items():
        if options.bio_statistics:
            clips = standardised(clips, *stats.bio[name])
        channels = [norm.stream(name, clips)]
        if name == COMPONENT_STREAM and options.eda_components:
            channels += component_clips(segment, steps, options)
        inputs[name] = np.stack(channels, axis=1)
    return inputs


def component_clips(segment: Any, steps: np.ndarray, options: InputOptions) -> list[np.ndarray]:
    """float32 clips (n, L) of the segment's EDA components (attach_components) at `steps`, each scaled by the
    participant's EDA sd, the tonic part also centred on its mean."""
    mean, std = segment.participant.bio[COMPONENT_STREAM]
    ts = segment.ts[np.asarray(steps, dtype=np.int64)]
    times = segment.rows[COMPONENT_STREAM][:, 0]
    return [standardised(clip_utils.bio_clips_at(times, segment.eda_parts[:, j], ts, options.bio_clip_length,
                                                 config.BIO_STEP_S), mean if j == 0 else 0.0, std).astype(np.float32)
            for j in range(segment.eda_parts.shape[1])]


def node_values(segment: Any, options: InputOptions) -> dict[str, np.ndarray]:
    """The segment's own node values of every bio stream after participant normalisation (participant_norm or
    bio_norm): what the training-set means and sds are estimated over."""
    if not options.bio_statistics:
        return segment.values
    return {name: standardised(values, *segment.participant.bio[name]) for name, values in segment.values.items()}


def attach_components(segments: Sequence[Any], rows: np.ndarray) -> None:
    """Give each of one participant's `segments` its EDA rows' components (`eda_parts`, aligned with its
    rows["eda"]), decomposed over the participant's time-ordered EDA `rows` (eda_components)."""
    parts = eda_components(rows[:, 1], rows[:, 0])
    for seg in segments:
        seg.eda_parts = parts[np.searchsorted(rows[:, 0], seg.rows[COMPONENT_STREAM][:, 0])]


class OnlineParticipants:
    """Participant statistics (and EDA components) from what has arrived so far, for online embedding:
    `view(segment, step, wav)` returns the segment as the node at `step` sees it, its participant's
    statistics and components computed from the participant's earlier segments and this segment's
    rows and frames up to the end of the node's clip (its time + L // 2 steps; the audio clip's last
    frame)."""

    def __init__(self, params: SpectrogramParams, options: InputOptions, clip_length: int):
        self.params = params
        self.options = options
        self.clip_length = clip_length
        self.seen: dict[tuple[int, str], dict[str, Any]] = {}

    def view(self, segment: Any, step: int, wav: np.ndarray) -> Any:
        if not self.options.needs_participant:
            return segment
        state = self.seen.setdefault(participant_key(segment),
                                     {"done": [], "frames": {}, "mel": Moments(self.params.n_rows)})
        earlier = state["done"]
        if any(s.segment_id == segment.segment_id for s in earlier):
            raise ValueError(f"segment {segment.segment_id} arrives again after its last node: an online replay "
                             "needs OnlineParticipants (temporal_gnn/online.py NodeEmbedder) of its own")
        horizon = float(segment.ts[step]) + (self.options.bio_clip_length // 2) * config.BIO_STEP_S
        seen = replace(segment, rows={name: rows[rows[:, 0] <= horizon + 1e-9] for name, rows in segment.rows.items()})
        rows = {name: participant_rows([*earlier, seen], name) for name in seen.rows}
        seen.participant = bio_stats(rows)
        if self.options.audio_statistics:
            seen.participant.mel_mean, seen.participant.mel_std = self._audio(state, segment, step, wav)
        if self.options.eda_components:
            attach_components([seen], rows[COMPONENT_STREAM])
        if step == segment.n_steps - 1:
            state["done"].append(segment)
        return seen

    def _audio(self, state: dict[str, Any], segment: Any, step: int, wav: np.ndarray) -> tuple[Any, Any]:
        """Mean and sd per mel band of the participant's frames up to this node's clip end (whole
        earlier segments); at a segment's last node its remaining frames join the earlier ones."""
        frames = state["frames"].get(segment.segment_id)
        if frames is None:
            frames = state["frames"][segment.segment_id] = {"all": wav_frames(wav, self.params), "added": 0}
        fps = self.params.frames_per_step
        offset = int(segment.frame_offsets(self.params, np.array([step]))[0])
        end = min(len(frames["all"]), offset + (self.clip_length - self.clip_length // 2) * fps)
        if end > frames["added"]:
            state["mel"].add(frames["all"][frames["added"]:end])
            frames["added"] = end
        moments = state["mel"].mean_std(MEL_STD_FLOOR)
        if step == segment.n_steps - 1:
            state["mel"].add(frames["all"][frames["added"]:])
            del state["frames"][segment.segment_id]
        return moments


def prefix_views(segments: Sequence[Any], params: SpectrogramParams, options: InputOptions,
                 clip_length: int) -> dict[tuple[str, int], Any]:
    """(segment ID, step) -> the segment as that node sees it online (OnlineParticipants.view), for every
    node of `segments`, the views taken in the online replay's arrival order (temporal_gnn/online.py
    instants: time, then identity, then segment ID). Batch extraction of a causal model's features reads
    these, so that its inputs are the ones predict.py --online embeds. Empty when neither participant option is on."""
    if not options.needs_participant:
        return {}
    tracker = OnlineParticipants(params, options, clip_length)
    nodes = sorted((float(seg.ts[step]), str(seg.identity), str(seg.segment_id), step, i)
                   for i, seg in enumerate(segments) for step in range(seg.n_steps))
    wavs: dict[str, np.ndarray] = {}
    views = {}
    for _, _, segment_id, step, i in nodes:
        seg = segments[i]
        if segment_id not in wavs:  # the audio statistics need the wav; without them nothing reads it
            wavs[segment_id] = (io.read_wav(seg.wav, params.sample_rate) if options.audio_statistics
                                else np.zeros(0, dtype=np.float32))
        views[(segment_id, step)] = tracker.view(seg, step, wavs[segment_id])
        if step == seg.n_steps - 1:
            del wavs[segment_id]
    return views

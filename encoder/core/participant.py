"""Encoder input options that read a participant's own signal (config.STE_inputs), and the bio clip length.

* `bio_clip_length`: the EDA and TEMP clips' length in 4 Hz steps, set apart from the audio clip's
  (`clip_length`); None: the same. At 4 Hz an 11-step clip is 2.75 s, shorter than a skin conductance
  response's rise (1-5 s); 41 steps is about 10 s.
* `participant_norm`: every input standardised by the statistics of its participant (identity) within
  its session, taken from that participant's own signal, never from a label: the log-mel spectrogram
  per mel band (mean and sd over every frame of the participant's segment wavs), EDA and TEMP (over
  the participant's rows). The training-set normalisation (custom_transforms.Normalization) is then
  estimated on, and applied to, the standardised values. Offline (training, extraction, predict.py)
  the statistics cover the participant's whole session; online (`OnlineParticipants`) only what has
  arrived when the node is embedded: the participant's earlier segments and the current segment up to
  the end of the node's clip.
* `eda_components`: three more EDA input channels beside the raw series, from NeuroKit2: the tonic
  and phasic parts (`nk.eda_phasic`, its default high-pass split) and the SCR peaks (`nk.eda_peaks` on
  the phasic part: at each peak sample its amplitude, 0 elsewhere). They are computed over the
  participant's rows in the session, concatenated in time order (the gaps between the participant's
  segments are not filled: the series is read as consecutive 4 Hz samples), and scaled by the
  participant's EDA sd (the tonic part also centred on its mean), so they need no training statistics.
  A participant with fewer than MIN_COMPONENT_ROWS rows gets tonic = the series, phasic = peaks = 0.

Participant = (session, identity). Each option only ever reads that participant's own rows and wavs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from encoder.core import clip_utils, config, io
from encoder.core.custom_transforms import Normalization, SpectrogramParams, log_mel_frames

MIN_COMPONENT_ROWS = 12  # below this NeuroKit2's filter has too few samples (its padding needs 10)
EDA_CHANNELS = ("raw", "tonic", "phasic", "scr_peaks")
STD_FLOOR = 1e-6


@dataclass(frozen=True)
class InputOptions:
    """The encoder input options of one checkpoint (read from its `inputs`, see input_signature)."""

    bio_clip_length: int
    participant_norm: bool = False
    eda_components: bool = False

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any]) -> InputOptions:
        """From STE_inputs or a checkpoint's inputs (a checkpoint from before the options: all off)."""
        bio = inputs.get("bio_clip_length") or inputs["clip_length"]
        return cls(int(bio), bool(inputs.get("participant_norm", False)), bool(inputs.get("eda_components", False)))

    @property
    def eda_channels(self) -> int:
        return len(EDA_CHANNELS) if self.eda_components else 1

    @property
    def needs_participant(self) -> bool:
        return self.participant_norm or self.eda_components

    def signature(self) -> dict[str, Any]:
        return {"bio_clip_length": self.bio_clip_length, "participant_norm": self.participant_norm,
                "eda_components": self.eda_components}


@dataclass
class ParticipantStats:
    """Mean and sd of one participant's signal in one session (mel_* None: audio not gathered)."""

    eda_mean: float
    eda_std: float
    temp_mean: float
    temp_std: float
    mel_mean: np.ndarray | None = None  # float64 (n_mels,)
    mel_std: np.ndarray | None = None


class Moments:
    """Running count, sum and sum of squares over axis 0 of the arrays added (float64)."""

    def __init__(self, width: int | None = None):
        shape = () if width is None else (width,)
        self.count = 0
        self.sum = np.zeros(shape)
        self.squares = np.zeros(shape)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        self.count += len(values)
        self.sum = self.sum + values.sum(axis=0)
        self.squares = self.squares + (values**2).sum(axis=0)

    def mean_std(self) -> tuple[Any, Any]:
        if self.count == 0:
            raise ValueError("no value to take a mean of")
        mean = self.sum / self.count
        var = np.maximum(self.squares / self.count - mean**2, 0.0)
        return mean, np.maximum(np.sqrt(var), STD_FLOOR)


def participant_key(segment: Any) -> tuple[int, str]:
    return int(segment.session), str(segment.identity)


def by_participant(segments: Sequence[Any]) -> dict[tuple[int, str], list[Any]]:
    """Segments grouped by participant, each group in time order (origin, then segment ID)."""
    groups: dict[tuple[int, str], list[Any]] = {}
    for seg in segments:
        groups.setdefault(participant_key(seg), []).append(seg)
    return {k: sorted(v, key=lambda s: (s.origin, s.segment_id)) for k, v in groups.items()}


def participant_rows(segments: Sequence[Any], attribute: str) -> np.ndarray:
    """(m, 2) [ts, value] rows of the segments' `attribute` (eda_rows or temp_rows), time-ordered; a
    timestamp two segments share is kept once (the first segment's)."""
    rows = np.concatenate([getattr(s, attribute) for s in segments])
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return rows[np.r_[True, rows[1:, 0] != rows[:-1, 0]]]


def wav_frames(wav: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """(n_frames, n_mels) log-mel frames of a whole wav, frame m centred on sample m·hop (the frames
    a participant's audio statistics are taken over)."""
    n_frames = len(wav) // params.hop_length + 1
    return log_mel_frames(wav, 0, n_frames, params).T


def eda_components(values: np.ndarray) -> np.ndarray:
    """(m, 3) tonic, phasic and SCR-peak amplitude of a 4 Hz EDA series (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64)
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


def bio_stats(eda_rows: np.ndarray, temp_rows: np.ndarray) -> ParticipantStats:
    eda, temp = Moments(), Moments()
    eda.add(eda_rows[:, 1])
    temp.add(temp_rows[:, 1])
    (eda_mean, eda_std), (temp_mean, temp_std) = eda.mean_std(), temp.mean_std()
    return ParticipantStats(float(eda_mean), float(eda_std), float(temp_mean), float(temp_std))


def attach(segments: Sequence[Any], params: SpectrogramParams, options: InputOptions) -> None:
    """Give every segment its participant's statistics (`participant`) and, with eda_components, its
    EDA rows' components (`eda_parts`, aligned with eda_rows), from the participant's segments among
    `segments` (offline: the whole session). Nothing happens when neither option is on."""
    if not options.needs_participant:
        return
    for group in by_participant(segments).values():
        eda_rows, temp_rows = participant_rows(group, "eda_rows"), participant_rows(group, "temp_rows")
        stats = bio_stats(eda_rows, temp_rows)
        if options.participant_norm:
            mel = Moments(params.n_mels)
            for seg in group:
                mel.add(wav_frames(io.read_wav(seg.wav, params.sample_rate), params))
            stats.mel_mean, stats.mel_std = mel.mean_std()
        parts = eda_components(eda_rows[:, 1]) if options.eda_components else None
        for seg in group:
            seg.participant = stats
            if parts is not None:
                seg.eda_parts = parts[np.searchsorted(eda_rows[:, 0], seg.eda_rows[:, 0])]


def audio_input(segment: Any, spec: np.ndarray, norm: Normalization, options: InputOptions) -> np.ndarray:
    """A (n_mels, frames) log-mel spectrogram of `segment` as the encoder reads it."""
    if options.participant_norm:
        stats = segment.participant
        spec = (spec - stats.mel_mean[:, None]) / stats.mel_std[:, None]
    return norm.audio(spec)


def bio_inputs(segment: Any, steps: np.ndarray, norm: Normalization,
               options: InputOptions) -> tuple[np.ndarray, np.ndarray]:
    """float32 EDA clips (n, eda_channels, L) and TEMP clips (n, 1, L) of `steps`, L = bio_clip_length,
    as the encoder reads them."""
    eda, temp = segment.bio_clips(options.bio_clip_length, steps)
    stats = segment.participant
    if options.participant_norm:
        eda = (eda - stats.eda_mean) / stats.eda_std
        temp = (temp - stats.temp_mean) / stats.temp_std
    channels = [norm.eda(eda)]
    if options.eda_components:
        ts = segment.ts[np.asarray(steps, dtype=np.int64)]
        for j in range(segment.eda_parts.shape[1]):
            clip = clip_utils.bio_clips_at(segment.eda_rows[:, 0], segment.eda_parts[:, j], ts,
                                           options.bio_clip_length, config.BIO_STEP_S)
            centre = stats.eda_mean if j == 0 else 0.0
            channels.append(((clip - centre) / stats.eda_std).astype(np.float32))
    return np.stack(channels, axis=1), norm.temp(temp)[:, None]


def node_values(segment: Any, options: InputOptions) -> tuple[np.ndarray, np.ndarray]:
    """The segment's own node EDA and TEMP values after participant normalisation (when on): what the
    training-set EDA/TEMP mean and sd are estimated over."""
    if not options.participant_norm:
        return segment.eda, segment.temp
    stats = segment.participant
    return (segment.eda - stats.eda_mean) / stats.eda_std, (segment.temp - stats.temp_mean) / stats.temp_std


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
                                     {"done": [], "frames": {}, "mel": Moments(self.params.n_mels)})
        earlier = state["done"]
        if any(s.segment_id == segment.segment_id for s in earlier):
            raise ValueError(f"segment {segment.segment_id} arrives again after its last node: an online replay "
                             "needs OnlineParticipants (online.NodeEmbedder) of its own")
        horizon = float(segment.ts[step]) + (self.options.bio_clip_length // 2) * config.BIO_STEP_S
        seen = replace(segment, **{name: rows[rows[:, 0] <= horizon + 1e-9] for name, rows in
                                   (("eda_rows", segment.eda_rows), ("temp_rows", segment.temp_rows))})
        eda_rows = participant_rows([*earlier, seen], "eda_rows")
        seen.participant = bio_stats(eda_rows, participant_rows([*earlier, seen], "temp_rows"))
        if self.options.participant_norm:
            seen.participant.mel_mean, seen.participant.mel_std = self._audio(state, segment, step, wav)
        if self.options.eda_components:
            parts = eda_components(eda_rows[:, 1])
            seen.eda_parts = parts[np.searchsorted(eda_rows[:, 0], seen.eda_rows[:, 0])]
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
        moments = state["mel"].mean_std()
        if step == segment.n_steps - 1:
            state["mel"].add(frames["all"][frames["added"]:])
            del state["frames"][segment.segment_id]
        return moments

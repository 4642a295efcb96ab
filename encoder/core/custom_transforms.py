"""Log-mel spectrograms of segments and clips, and the mean/std normalisation of the encoder inputs.

Frame convention: frame m of a spectrogram that "starts at sample s" is the STFT window centred on
wav sample s + m × hop (it reads samples s + m·hop - n_fft//2 … + n_fft, reflect-extended past the
wav's ends; see clip_utils). A node's place in the wav is its `frame offset`: its time after the
segment's origin (the wav's start) in hops, rounded to the nearest hop (`frame_offsets`); a node on
the 4 Hz grid at step i has offset i × frames_per_step (hop divides the 0.25 s step). Its clip starts
L//2 steps before it and has L × frames_per_step frames, and the spectrogram of a whole segment
started at sample -(L//2) × step contains every clip's frames:

    clip_spectrogram(wav, o) == segment_spectrogram(wav, last offset)[:, o : o + L·fps]

frame for frame (same windows over the same samples), so one STFT per segment serves all its nodes.
Compared with librosa's own `center=True` spectrogram of the bare clip, the interior frames are
equal; the first and last ⌈n_fft / 2 / hop⌉ frames differ only in that they read the real audio
beside the clip instead of a reflection of the clip's own edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import librosa
import numpy as np

from encoder.core import clip_utils, config, contours

SPECTROGRAM_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax", "contour")
AMIN = 1e-10  # floor of the mel power before the log (dB = 10·log10(max(power, AMIN)))


@dataclass(frozen=True)
class SpectrogramParams:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = 8000.0  # None or above Nyquist: stored as sample_rate / 2
    contour: bool = False  # prosodic contour rows (encoder/core/contours.py) below the mel bands

    def __post_init__(self) -> None:
        step = self.sample_rate * config.BIO_STEP_S
        if step != int(step) or int(step) % self.hop_length:
            raise ValueError(
                f"hop_length {self.hop_length} must divide the {config.BIO_STEP_S} s step "
                f"({step} samples at {self.sample_rate} Hz)"
            )
        nyquist = self.sample_rate / 2
        object.__setattr__(self, "fmax", nyquist if self.fmax is None else min(float(self.fmax), nyquist))
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SpectrogramParams:
        return cls(**{k: values[k] for k in SPECTROGRAM_KEYS if k in values})

    def to_dict(self) -> dict[str, Any]:
        """The parameters; `contour` only when on, so that records written before it existed stay equal."""
        values = asdict(self)
        if not self.contour:
            del values["contour"]
        return values

    @property
    def contour_rows(self) -> int:
        return len(contours.ROWS) if self.contour else 0

    @property
    def n_rows(self) -> int:
        """Rows of the spectrogram array: the mel bands, then the contour rows."""
        return self.n_mels + self.contour_rows

    @property
    def step_samples(self) -> int:
        return int(self.sample_rate * config.BIO_STEP_S)

    @property
    def frames_per_step(self) -> int:
        return self.step_samples // self.hop_length

    def clip_frames(self, clip_length: int) -> int:
        return clip_length * self.frames_per_step


@lru_cache(maxsize=8)
def _mel_basis(params: SpectrogramParams) -> np.ndarray:
    return librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, fmin=params.fmin,
        fmax=params.fmax,
    )


def log_mel_frames(wav: np.ndarray, start: int, n_frames: int, params: SpectrogramParams) -> np.ndarray:
    """(n_rows, n_frames) float32 log-mel power in dB, frame m centred on wav sample start + m·hop, with
    `params.contour` followed by the contour rows of the same frames (contours.contour_frames).
    The mel projection runs in float64: a float32 product rounds differently by BLAS thread count, and
    DataLoader workers run one BLAS thread (util.loader_worker_init) where the main process runs many."""
    half = params.n_fft // 2
    span = clip_utils.reflect_span(wav, start - half, (n_frames - 1) * params.hop_length + params.n_fft)
    stft = librosa.stft(
        span, n_fft=params.n_fft, hop_length=params.hop_length, win_length=params.win_length, center=False
    )
    power = stft.real.astype(np.float64) ** 2 + stft.imag.astype(np.float64) ** 2
    mel = _mel_basis(params) @ power
    log_mel = (10.0 * np.log10(np.maximum(mel, AMIN))).astype(np.float32)
    if not params.contour:
        return log_mel
    rows = contours.contour_frames(wav, start, n_frames, params.hop_length, params.sample_rate)
    return np.concatenate([log_mel, rows])


def frame_offsets(ts: np.ndarray, origin: float, params: SpectrogramParams) -> np.ndarray:
    """Frame offset (hops after the segment's origin, rounded) of nodes at times `ts` (seconds)."""
    offsets = np.rint((np.asarray(ts, dtype=np.float64) - origin) * params.sample_rate / params.hop_length)
    return offsets.astype(np.int64)


def clip_start_sample(offset: int, clip_length: int, params: SpectrogramParams) -> int:
    """The wav sample the first frame of the clip of the node at frame `offset` is centred on."""
    return clip_utils.audio_clip_start(0, clip_length, params.step_samples) + int(offset) * params.hop_length


def segment_spectrogram(wav: np.ndarray, last_offset: int, clip_length: int, params: SpectrogramParams,
                        first_offset: int = 0) -> np.ndarray:
    """Frames covering the clips of the nodes of a segment from frame offset `first_offset` (0: the whole
    segment's) to `last_offset`; equal to the whole segment's frames [first_offset, last_offset + clip)."""
    n_frames = int(last_offset) - int(first_offset) + params.clip_frames(clip_length)
    return log_mel_frames(wav, clip_start_sample(first_offset, clip_length, params), n_frames, params)


def clip_spectrogram(wav: np.ndarray, offset: int, clip_length: int, params: SpectrogramParams) -> np.ndarray:
    """The (n_mels, clip_length · frames_per_step) spectrogram of the clip of the node at frame `offset`."""
    return log_mel_frames(wav, clip_start_sample(offset, clip_length, params), params.clip_frames(clip_length),
                          params)


def slice_clip(segment_spec: np.ndarray, offset: int, clip_length: int, params: SpectrogramParams) -> np.ndarray:
    return segment_spec[:, int(offset) : int(offset) + params.clip_frames(clip_length)]


@dataclass(frozen=True)
class Normalization:
    """Mean/std of the audio and of every bio stream (name -> (mean, std), in streams.BIO_STREAMS order),
    estimated on training sessions only and stored in checkpoints as `audio_mean`, `audio_std`, then
    `<stream>_mean`, `<stream>_std` per stream (the six scalars of the two-stream encoder, read the same way)."""

    audio_mean: float
    audio_std: float
    bio: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def unit(cls, bio: Iterable[str]) -> Normalization:
        """Mean 0 and std 1 for the audio and the streams `bio`: values pass unchanged (as float32)."""
        return cls(0.0, 1.0, dict.fromkeys(bio, (0.0, 1.0)))

    def to_dict(self) -> dict[str, float]:
        values = {"audio_mean": float(self.audio_mean), "audio_std": float(self.audio_std)}
        for name, (mean, std) in self.bio.items():
            values.update({f"{name}_mean": float(mean), f"{name}_std": float(std)})
        return values

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> Normalization:
        bio = [key.removesuffix("_mean") for key in values if key.endswith("_mean") and key != "audio_mean"]
        return cls(float(values["audio_mean"]), float(values["audio_std"]),
                   {name: (float(values[f"{name}_mean"]), float(values[f"{name}_std"])) for name in bio})

    def audio(self, spec: np.ndarray) -> np.ndarray:
        return ((spec - self.audio_mean) / self.audio_std).astype(np.float32)

    def stream(self, name: str, values: np.ndarray) -> np.ndarray:
        """Bio stream `name`'s values, normalised, as float32."""
        mean, std = self.bio[name]
        return ((values - mean) / std).astype(np.float32)


def mean_std(chunks: list[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation over all values of `chunks` but NaN (an unvoiced frame's F0, contours.py),
    std floored at 1e-6."""
    total = sum(int(np.count_nonzero(~np.isnan(c))) for c in chunks)
    mean = sum(float(np.nansum(c, dtype=np.float64)) for c in chunks) / total
    var = sum(float(np.nansum((c.astype(np.float64) - mean) ** 2)) for c in chunks) / total
    return mean, max(var**0.5, 1e-6)


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment-style masks (Park et al. 2019) on a training clip's normalised log-mel, never at
    evaluation: `freq_masks` bands of 0 to `freq_width` mel bands and `time_masks` runs of 0 to
    `time_width` frames, each width and start drawn uniformly, set to 0 (the training mean once
    normalised). No pitch or gain change: the masks hide parts of the input, they move nothing. All
    zero (the default): off, the clip is returned unchanged and no random number is drawn."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, int] | None) -> SpecAugment:
        """From config.STE_optimization_params["spec_augment"] (None or missing keys: 0, off)."""
        return cls(**{k: int(v) for k, v in (values or {}).items()})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.freq_masks * self.freq_width + self.time_masks * self.time_width > 0

    def spans(self, rng: np.random.Generator, size: int, axis: str) -> list[tuple[int, int]]:
        """[start, stop) of each mask along an axis of `size` bands ("freq") or frames ("time")."""
        count, width = (self.freq_masks, self.freq_width) if axis == "freq" else (self.time_masks, self.time_width)
        spans = []
        for _ in range(count):
            length = int(rng.integers(min(width, size) + 1))
            start = int(rng.integers(size - length + 1))
            spans.append((start, start + length))
        return spans

    def __call__(self, spec: np.ndarray, rng: np.random.Generator, bands: int | None = None) -> np.ndarray:
        """A masked copy of `spec` (rows, frames), frequency masks within its first `bands` rows (None: all;
        the mel bands, not the contour rows below them); `spec` itself when off."""
        if not self.active:
            return spec
        masked = spec.copy()
        for start, stop in self.spans(rng, spec.shape[0] if bands is None else bands, "freq"):
            masked[start:stop] = 0.0
        for start, stop in self.spans(rng, spec.shape[1], "time"):
            masked[:, start:stop] = 0.0
        return masked

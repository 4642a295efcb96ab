"""Log-mel spectrograms on the model's device: `torch.stft` and librosa's mel filter bank as a tensor,
batched over segments or clips, equal to custom_transforms.log_mel_frames within float rounding.

Same frame convention (custom_transforms' module docstring): frame m of a spectrogram that starts at
sample s is the window centred on wav sample s + m·hop, reading samples s + m·hop - n_fft//2 … + n_fft,
reflect-extended past the wav's ends (clip_utils.reflect_span). Same arithmetic as librosa.stft on a
float32 wav: librosa multiplies each frame by its float64 window (scipy's periodic Hann of win_length
samples, zero-padded to n_fft about its centre), takes a float64 real FFT and stores it as complex64; the
power is then taken in float64 from those complex64 values and projected on librosa's (float32) mel
filter bank in float64, and the dB value 10·log10(max(power, AMIN)) is rounded to float32. Here every step
runs in the same precision, so only the FFT's and the matrix product's summation order differ (about
1e-16 relative before the float32 rounding): on the `tiny` preset's wavs the frames differ from
log_mel_frames by at most one float32 rounding step of the dB value (tests/test_device_spectrogram.py states
the measured maximum), floor frames (power below AMIN) included.

Where it runs (the `spectrogram_on` setting of config.STE_optimization_params and STE_forward_params):
"auto" computes the spectrograms here when the model runs on CUDA and with librosa in the DataLoader workers
on the CPU (the CPU results stay those of librosa, byte for byte); "cpu" and "device" force one path.
On the device path a dataset item carries its wav span (float32, already reflect-extended, so that the
device reads no sample twice across the host link) instead of its spectrogram, and the main process computes
a batch of spans at once (`spectrogram_items`, `clip_batch`, `segment_batch`), then the same normalisation
(participant.audio_input: participant standardisation, then the training mean/std) and the same SpecAugment
masks (drawn in the worker from the same random stream) as the CPU path. What the device path does not
handle falls back to the CPU path, with one log line (`resolve`): a SpectrogramParams field other than
HANDLED_FIELDS set apart from its default (the contour rows, contours.py); causal extraction with a
participant option or the segment pass (its items carry each node's own clip); extraction with
participant_norm (participant.attach's CPU pass gives its statistics and spectrograms together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
import torch
from torch.nn import functional

from encoder.core import clip_utils, participant
from encoder.core.custom_transforms import AMIN, Normalization, SpectrogramParams, _mel_basis

SPECTROGRAM_ON = ("auto", "cpu", "device")
# The SpectrogramParams fields this module computes from; any other field set apart from its default (a new
# kind of row, say) sends every spectrogram back to the CPU path until this module handles it.
HANDLED_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax")


@dataclass(frozen=True)
class Placement:
    """Where a stage computes its spectrograms: `on_device` or not, and why (one log line)."""

    on_device: bool
    setting: str
    reason: str

    @property
    def path(self) -> str:
        return "device" if self.on_device else "cpu"

    def line(self) -> str:
        return f"spectrograms: {self.path} path (spectrogram_on {self.setting!r}: {self.reason})"

    def record(self) -> dict[str, str]:
        return {"setting": self.setting, "path": self.path, "reason": self.reason}


def unhandled_fields(params: SpectrogramParams) -> list[str]:
    """The fields of `params` this module does not compute from, set apart from their defaults (empty: it
    handles them all; the contour rows, contours.py, are computed on the CPU only)."""
    return [f.name for f in dataclasses.fields(params)
            if f.name not in HANDLED_FIELDS and getattr(params, f.name) != f.default]


def resolve(setting: str, device: torch.device, params: SpectrogramParams,
            options: participant.InputOptions | None = None, causal: bool = False, kept: bool = False) -> Placement:
    """Where spectrograms are computed for a model on `device` under `setting` ("auto": on the device when
    it is CUDA, with librosa on the CPU otherwise; "cpu"; "device": on `device`, whatever it is). `causal`:
    the items of dataset.CausalSegmentDataset; `kept`: extraction, whose participant.attach keeps the
    spectrograms of its participant_norm pass."""
    if setting not in SPECTROGRAM_ON:
        raise ValueError(f"spectrogram_on must be one of {SPECTROGRAM_ON}, not {setting!r}")
    if setting == "cpu":
        return Placement(False, setting, "asked for")
    if setting == "auto" and device.type != "cuda":
        return Placement(False, setting, f"the model runs on {device.type}, where librosa in the loader workers "
                                         "is the better choice")
    unhandled = unhandled_fields(params)
    if unhandled:
        return Placement(False, setting, f"SpectrogramParams field(s) {unhandled} not handled on the device; "
                                         "librosa on the CPU instead")
    if causal and options is not None and (options.needs_participant or options.segment_pass):
        return Placement(False, setting, "causal items with a participant option or the segment pass carry each "
                                         "node's own clip (dataset.CausalSegmentDataset); librosa on the CPU instead")
    if kept and options is not None and options.participant_norm:
        return Placement(False, setting, "participant_norm: participant.attach's CPU pass computes the statistics "
                                         "and the spectrograms together; librosa on the CPU instead")
    return Placement(True, setting, f"torch.stft and the mel projection on {device}")


@lru_cache(maxsize=16)
def filters(params: SpectrogramParams, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (n_fft,) analysis window (librosa's: periodic Hann of win_length, centred in n_fft) and
    float64 (n_mels, n_fft // 2 + 1) mel filter bank (custom_transforms' librosa filters) on `device`."""
    window = librosa.util.pad_center(librosa.filters.get_window("hann", params.win_length, fftbins=True),
                                     size=params.n_fft)
    return (torch.from_numpy(np.asarray(window, dtype=np.float64)).to(device),
            torch.from_numpy(_mel_basis(params).astype(np.float64)).to(device))


def span_length(n_frames: int, params: SpectrogramParams) -> int:
    """Samples read by `n_frames` consecutive frames."""
    return (int(n_frames) - 1) * params.hop_length + params.n_fft


def frames_in(length: int, params: SpectrogramParams) -> int:
    """Whole frames in a span of `length` samples."""
    return 1 + (int(length) - params.n_fft) // params.hop_length


def wav_span(wav: np.ndarray, start: int, n_frames: int, params: SpectrogramParams) -> np.ndarray:
    """The float32 samples that frames [0, n_frames) of a spectrogram starting at sample `start` read,
    reflect-extended past the wav's ends (log_mel_frames' span, on the CPU: a dataset item carries it)."""
    return clip_utils.reflect_span(wav, int(start) - params.n_fft // 2, span_length(n_frames, params))


def reflect_indices(indices: torch.Tensor, n: int) -> torch.Tensor:
    """clip_utils.reflect_indices on a tensor (on its device)."""
    if n == 1:
        return torch.zeros_like(indices)
    period = 2 * (n - 1)
    folded = torch.remainder(indices, period)
    return torch.where(folded >= n, period - folded, folded)


def log_mel_spans(spans: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """(B, n_mels, frames) float32 log-mel dB of B equal-length spans (B, L) (each as wav_span returns it:
    frame m reads span[m·hop : m·hop + n_fft]), on the spans' device."""
    window, mel_basis = filters(params, spans.device)
    stft = torch.stft(spans.to(torch.float64), params.n_fft, params.hop_length, params.n_fft, window,
                      center=False, return_complex=True)
    stft = stft.to(torch.complex64)  # librosa.stft's output type for a float32 wav
    power = stft.real.to(torch.float64) ** 2 + stft.imag.to(torch.float64) ** 2
    mel = torch.matmul(mel_basis, power)
    return (10.0 * torch.log10(torch.clamp(mel, min=AMIN))).to(torch.float32)


def log_mel_frames(wav: torch.Tensor, start: int, n_frames: int, params: SpectrogramParams) -> torch.Tensor:
    """custom_transforms.log_mel_frames of a (float32) wav tensor, computed on its device: (n_mels, n_frames)."""
    positions = torch.arange(int(start) - params.n_fft // 2, int(start) - params.n_fft // 2
                             + span_length(n_frames, params), device=wav.device)
    return log_mel_spans(wav[reflect_indices(positions, len(wav))][None], params)[0]


def log_mel_batch(spans: Sequence[torch.Tensor], params: SpectrogramParams) -> list[torch.Tensor]:
    """The (n_mels, frames) log-mel of each span of `spans` (1-D, of any lengths, on one device), in one
    STFT: the shorter spans are zero-padded at the end and their extra frames dropped (a frame reads only
    its own span's samples). On the CPU one span at a time instead: a padded batch's float64 intermediates
    run out of the caches, and 22 segments at the full settings took 6 times as long in one batch as one by
    one on a 2-core CPU (benchmarks/bench_spectrogram.py); the frames are the same either way."""
    if spans[0].device.type == "cpu":
        return [log_mel_spans(s[None], params)[0] for s in spans]
    return log_mel_padded(spans, params)


def log_mel_padded(spans: Sequence[torch.Tensor], params: SpectrogramParams) -> list[torch.Tensor]:
    """log_mel_batch in one STFT over the spans zero-padded to the longest, whatever the device."""
    longest = max(len(s) for s in spans)
    batch = torch.stack([functional.pad(s, (0, longest - len(s))) for s in spans])
    specs = log_mel_spans(batch, params)
    return [spec[:, : frames_in(len(s), params)] for spec, s in zip(specs, spans, strict=True)]


def mel_stats(segment: Any, options: participant.InputOptions) -> dict[str, torch.Tensor]:
    """The participant statistics an item carries for the device normalisation (participant_norm only)."""
    if not options.participant_norm:
        return {}
    stats = segment.participant
    return {"mel_mean": torch.from_numpy(np.asarray(stats.mel_mean, dtype=np.float64)),
            "mel_std": torch.from_numpy(np.asarray(stats.mel_std, dtype=np.float64))}


def audio_input(spec: torch.Tensor, norm: Normalization, mel_mean: torch.Tensor | None = None,
                mel_std: torch.Tensor | None = None) -> torch.Tensor:
    """participant.audio_input on a float32 (…, n_mels, frames) tensor: with the participant's per-band
    `mel_mean`/`mel_std` (…, n_mels) first standardised and clipped in float64, then the training mean/std,
    in float32 as numpy computes it on a float32 spectrogram (float64 after the participant step)."""
    if mel_mean is not None:
        mean = mel_mean.to(spec.device, torch.float64)[..., None]
        std = mel_std.to(spec.device, torch.float64)[..., None]
        spec = torch.clamp((spec.to(torch.float64) - mean) / std, -participant.Z_CLIP, participant.Z_CLIP)
    return ((spec - norm.audio_mean) / norm.audio_std).to(torch.float32)


def masked(spec: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """SpecAugment's masks: 0 where `keep` (bool, the spectrogram's shape, drawn on the CPU) is False."""
    if keep is None:
        return spec
    return torch.where(keep.to(spec.device), spec, torch.zeros((), dtype=spec.dtype, device=spec.device))


def augment_keep(augment: Any, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
    """The bool mask SpecAugment `augment` would apply to a (n_mels, frames) spectrogram with `rng` (the
    same draws, in the same order, as SpecAugment.__call__); None when it is off."""
    if not augment.active:
        return None
    keep = np.ones(shape, dtype=bool)
    for start, stop in augment.spans(rng, shape[0], "freq"):
        keep[start:stop] = False
    for start, stop in augment.spans(rng, shape[1], "time"):
        keep[:, start:stop] = False
    return keep


def _stats(item: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return item.get("mel_mean"), item.get("mel_std")


def spectrogram_items(items: Iterable[dict[str, Any]], norm: Normalization, params: SpectrogramParams,
                      device: torch.device, nodes_per_batch: int) -> Iterator[dict[str, Any]]:
    """SegmentDataset items with "span" (float32 wav span) and "frames" turned into items with "spec", their
    normalised spectrogram on `device`, computed over consecutive items of at least `nodes_per_batch` nodes
    (or the last ones) at a time; items that already carry "spec" pass through, in order."""
    pending: list[dict[str, Any]] = []
    nodes = 0

    def flush() -> Iterator[dict[str, Any]]:
        waiting = [item for item in pending if "span" in item]
        if waiting:
            specs = log_mel_batch([item["span"].to(device, non_blocking=True) for item in waiting], params)
            for item, spec in zip(waiting, specs, strict=True):
                item["spec"] = audio_input(spec[:, : int(item["frames"])], norm, *_stats(item))
        for item in pending:
            yield {k: v for k, v in item.items() if k not in ("span", "frames", "mel_mean", "mel_std")}
        pending.clear()

    for item in items:
        pending.append(item)
        nodes += len(item["steps"])
        if nodes >= nodes_per_batch:
            yield from flush()
            nodes = 0
    yield from flush()


def clip_batch(batch: dict[str, torch.Tensor], norm: Normalization, params: SpectrogramParams,
               device: torch.device) -> tuple[torch.Tensor, ...]:
    """A collated batch of TrainClipDataset device items as the per-clip training step reads it: (audio
    (B, 1, n_mels, frames), bio clips by stream, label, target), the audio computed on `device`."""
    spec = log_mel_spans(batch["span"].to(device, non_blocking=True), params)
    spec = masked(audio_input(spec, norm, batch.get("mel_mean"), batch.get("mel_std")), batch.get("keep"))
    return (spec[:, None], batch["bio"], batch["label"], batch["target"])


def segment_batch(batch: dict[str, Any], norm: Normalization, params: SpectrogramParams,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of TrainSegmentDataset device items (dataset.collate_segments) as the segment-pass training
    step reads it: "spec" (B, 1, n_mels, frames) computed on `device`, each item's frames past its own
    zero (as collate_segments pads the CPU path's spectrograms)."""
    specs = log_mel_batch([s.to(device, non_blocking=True) for s in batch["spans"]], params)
    out = torch.zeros(len(specs), 1, params.n_mels, int(batch["frames"].max()), device=device)
    for b, spec in enumerate(specs):
        stats = batch.get("mel_mean"), batch.get("mel_std")
        spec = audio_input(spec[:, : int(batch["frames"][b])], norm,
                           *(None if s is None else s[b] for s in stats))
        keep = batch.get("keeps")
        out[b, 0, :, : spec.shape[1]] = masked(spec, None if keep is None else keep[b])
    rest = {k: v for k, v in batch.items() if k not in ("spans", "frames", "keeps", "mel_mean", "mel_std")}
    return {**rest, "spec": out}

"""Clips around a 4 Hz time step (kept from the original), as index arithmetic on whole arrays.

Bio clip of step i (n samples in the segment): values at i - L//2 … i - L//2 + L - 1, indices
clamped to [0, n - 1] (edge padding: the first/last sample repeats). `bio_clips_at` is the same
clip by time, for rows that are not on a regular grid: the series sampled at the node's time
± k × 0.25 s, linearly interpolated between rows, edge-held beyond the first/last row; on a regular
grid without gaps it returns exactly what `bio_clips` does.

Audio clip of step i: the wav span that starts (i - L//2) × 0.25 s after the wav's start and lasts
L × 0.25 s. Where the span runs off the wav, samples are taken by reflecting the index about the
wav's first/last sample (numpy "reflect": index -1 reads sample 1, index N reads sample N - 2),
which is reflect-padding the clip. The span has exactly L × step samples by construction; a
longer array handed to `fit_length` is centre-cropped, a shorter one reflect-padded.
"""

from __future__ import annotations

import numpy as np


def reflect_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Map any integer indices into [0, n) by repeated reflection about the ends (numpy "reflect")."""
    indices = np.asarray(indices, dtype=np.int64)
    if n == 1:
        return np.zeros_like(indices)
    period = 2 * (n - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= n, period - folded, folded)


def reflect_span(signal: np.ndarray, start: int, length: int) -> np.ndarray:
    """`signal[start:start + length]`, reflect-extended where the span runs off either end."""
    return signal[reflect_indices(np.arange(start, start + length), len(signal))]


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Reflect-pad (split evenly, extra sample at the end) or centre-crop `signal` to `length`."""
    n = len(signal)
    if n >= length:
        offset = (n - length) // 2
        return signal[offset : offset + length]
    before = (length - n) // 2
    return reflect_span(signal, -before, length)


def bio_clip_indices(n_samples: int, clip_length: int, steps: np.ndarray | None = None) -> np.ndarray:
    """(len(steps), clip_length) edge-padded sample indices of the clips centred on `steps`
    (default: every step of the segment)."""
    steps = np.arange(n_samples) if steps is None else np.asarray(steps, dtype=np.int64)
    offsets = np.arange(clip_length) - clip_length // 2
    return np.clip(steps[:, None] + offsets[None, :], 0, n_samples - 1)


def bio_clips(values: np.ndarray, clip_length: int, steps: np.ndarray | None = None) -> np.ndarray:
    """Edge-padded clips of a 1-D bio series: shape (len(steps), clip_length)."""
    values = np.asarray(values)
    return values[bio_clip_indices(len(values), clip_length, steps)]


def bio_clips_at(times: np.ndarray, values: np.ndarray, node_times: np.ndarray, clip_length: int,
                 step_s: float) -> np.ndarray:
    """(len(node_times), clip_length) clips of the series (`times`, `values`) (times increasing)
    sampled at node_time + (k - clip_length // 2) × step_s (see module docstring)."""
    offsets = (np.arange(clip_length) - clip_length // 2) * step_s
    query = np.asarray(node_times, dtype=np.float64)[:, None] + offsets[None, :]
    return np.interp(query, times, values)


def audio_clip_start(step: int, clip_length: int, step_samples: int) -> int:
    """First wav sample of the audio clip of `step` (negative when the clip starts before the wav)."""
    return (step - clip_length // 2) * step_samples


def audio_clip(wav: np.ndarray, step: int, clip_length: int, step_samples: int) -> np.ndarray:
    """The clip_length × step_samples audio samples of step `step`, reflect-padded at the wav's ends."""
    start = audio_clip_start(step, clip_length, step_samples)
    return reflect_span(wav, start, clip_length * step_samples)

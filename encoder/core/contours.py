"""Prosodic contours at the spectrogram's frame rate: the rows `STE_inputs["contour"]` appends below the
log-mel bands, which a 1-D ResNet18 of the audio stream reads (models.STEncoder).

A log-mel of 25 ms windows cannot show a few percent of pitch (issue 35: at the demo's 8 kHz and 32 mels,
+9% F0 moves a male voice's mean profile by about 0.24 dB), so the encoder is given the pitch itself:

* `f0`: F0 in semitones above F0_REF_HZ, from librosa's YIN over a FRAME_S window centred on the frame;
  NaN where the frame is unvoiced. Later steps treat NaN as "no value": participant statistics and the
  training-set normalisation skip it (participant.Moments, custom_transforms.mean_std), and once the rows
  are normalised it becomes 0, the mean (participant.audio_input).
* `periodicity`: the frame's normalised autocorrelation at the YIN period (0 to 1; 0 for silence).
* `loudness`: the frame's mean power in dB (floored at -100 dB).

A frame is voiced when its periodicity is at least MIN_PERIODICITY and its loudness at least MIN_DB. Each
value reads only its own window, so a clip's rows are the matching columns of its segment's rows, as the
log-mel's are (custom_transforms' frame convention). The constants are fixed, like the spectrogram's dB
floor: a checkpoint records only whether the rows are on (SpectrogramParams.contour).
"""

from __future__ import annotations

import librosa
import numpy as np

from encoder.core import clip_utils
from encoder.core.handcrafted import periodicity

ROWS = ("f0", "periodicity", "loudness")
FRAME_S = 0.04  # 2.6 periods of the lowest F0
F0_MIN_HZ = 65.0
F0_MAX_HZ = 500.0
F0_REF_HZ = 27.5  # semitone reference (A0)
TROUGH_THRESHOLD = 0.35  # YIN's; librosa's 0.1 often takes the doubled period on noisy voices
MIN_PERIODICITY = 0.8
MIN_DB = -60.0  # dB of mean power relative to full scale (1.0): quieter frames are silence, not voice
POWER_FLOOR = 1e-10


def frame_length(sample_rate: int) -> int:
    """YIN window in samples at `sample_rate` (FRAME_S, even)."""
    return 2 * int(round(FRAME_S * sample_rate / 2))


def contour_frames(wav: np.ndarray, start: int, n_frames: int, hop_length: int, sample_rate: int) -> np.ndarray:
    """(len(ROWS), n_frames) float32 contours, frame m's window centred on wav sample start + m·hop_length
    (reflect-extended past the wav's ends like the log-mel's)."""
    length = frame_length(sample_rate)
    span = clip_utils.reflect_span(np.asarray(wav, dtype=np.float64), start - length // 2,
                                   (n_frames - 1) * hop_length + length)
    frames = librosa.util.frame(span, frame_length=length, hop_length=hop_length, axis=0)[:n_frames]
    f0 = librosa.yin(span, fmin=F0_MIN_HZ, fmax=min(F0_MAX_HZ, sample_rate / 2 * 0.95), sr=sample_rate,
                     frame_length=length, hop_length=hop_length, center=False,
                     trough_threshold=TROUGH_THRESHOLD)[:n_frames]
    periodic = periodicity(frames, sample_rate / f0)
    loudness = 10.0 * np.log10(np.maximum((frames**2).mean(axis=1), POWER_FLOOR))
    voiced = (periodic >= MIN_PERIODICITY) & (loudness >= MIN_DB) & np.isfinite(f0)
    semitones = np.where(voiced, 12.0 * np.log2(np.where(voiced, f0, F0_REF_HZ) / F0_REF_HZ), np.nan)
    return np.stack([semitones, periodic, loudness]).astype(np.float32)

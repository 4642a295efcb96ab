"""Reading segment audio: one wav per annotated segment, mono, resampled to the configured rate.
Where a segment's wav lives is layout.wav_path."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from encoder.core import util


def check_wav(path: Path) -> str | None:
    """Why `path` cannot serve as a segment's audio (missing, unreadable, empty), or None if it can.
    Reads the header only, so it is cheap enough to run over every segment up front."""
    path = Path(path)
    if not path.is_file():
        return "wav missing"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        return f"wav unreadable ({err})"
    if info.frames == 0:
        return "wav empty"
    return None


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of `path` at `sample_rate` (channels averaged, other rates resampled).
    An unreadable, missing or empty file raises util.DataError naming it; nothing is zero-filled."""
    path = Path(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = "wav missing" if not path.is_file() else f"wav unreadable ({err})"
        raise util.DataError(reason, path) from None
    if audio.shape[0] == 0:
        raise util.DataError("wav empty", path)
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)

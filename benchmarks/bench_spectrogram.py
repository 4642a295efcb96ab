"""Segment spectrograms, librosa (the CPU path) against torch.stft + the mel projection (the device path,
encoder/core/device_spectrogram.py), side by side in one run, on the same segments.

For every test segment of the `tiny` synthetic preset (generated in a temporary folder unless --root is
given) the spectrogram extraction computes (custom_transforms.segment_spectrogram: every node's clip, from
the first node's clip start to the last one's clip end), at the full profile's settings (config.STE_inputs:
16 kHz, n_fft 512, win 400, hop 160, 64 mels) and the demo's (config.DEMO: 8 kHz, n_fft 256, win 200,
hop 200, 32 mels):

* librosa: one segment at a time, as a DataLoader worker computes it (NumPy's BLAS on one thread);
* torch on the CPU: the segments' wav spans through device_spectrogram.log_mel_batch in groups of --batch
  segments (on the CPU it runs them one by one, which is faster there than a padded batch);
* torch on CUDA (when torch sees a device): the same groups, one torch.stft per group, spans copied to the
  device inside the timing, torch.cuda.synchronize() before every clock read.

Each path runs --repeat times after a warm-up and its best time is kept. Torch runs on --threads threads
(default 1, as in a loader worker). Every path's frames are checked against librosa's (max |difference| in
dB, printed). One line per profile and path, then per profile the last line
`profile=<name> ratio=<librosa s / torch cpu s> librosa_s=<s> torch_cpu_s=<s> [torch_cuda_s=<s>] frames=<n>`.

    python benchmarks/bench_spectrogram.py [--root KEMDY20_ROOT] [--batch 32] [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder.core import config, device_spectrogram, frames, io, synthetic, util
from encoder.core.custom_transforms import SpectrogramParams, clip_start_sample, segment_spectrogram
from encoder.core.dataset import Segment, load_segments

PROFILES = {"full": SpectrogramParams.from_dict(config.STE_inputs),
            "demo": SpectrogramParams.from_dict({**config.STE_inputs, **config.DEMO["STE_inputs"]})}


def best_time(fn: Callable[[], Any], repeat: int, device: torch.device) -> tuple[float, Any]:
    """The shortest of `repeat` timed calls of fn() after one warm-up, and the last call's result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def profile_run(name: str, params: SpectrogramParams, segments: list[Segment], clip_length: int, batch: int,
                repeat: int) -> None:
    wavs = [io.read_wav(s.wav, params.sample_rate) for s in segments]
    last = [int(s.frame_offsets(params)[-1]) for s in segments]
    frame_counts = [n + params.clip_frames(clip_length) for n in last]
    start = clip_start_sample(0, clip_length, params)
    total = sum(frame_counts)

    def librosa_path() -> list[np.ndarray]:
        with util.one_blas_thread():
            return [segment_spectrogram(w, n, clip_length, params) for w, n in zip(wavs, last, strict=True)]

    spans = [torch.from_numpy(device_spectrogram.wav_span(w, start, n, params))
             for w, n in zip(wavs, frame_counts, strict=True)]

    def torch_path(device: torch.device) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for i in range(0, len(spans), batch):
            out += device_spectrogram.log_mel_batch([s.to(device) for s in spans[i : i + batch]], params)
        return out

    cpu = torch.device("cpu")
    seconds = {"librosa": best_time(librosa_path, repeat, cpu)}
    seconds["torch_cpu"] = best_time(lambda: torch_path(cpu), repeat, cpu)
    if torch.cuda.is_available():
        cuda = torch.device("cuda", 0)
        seconds["torch_cuda"] = best_time(lambda: torch_path(cuda), repeat, cuda)
    reference = seconds["librosa"][1]
    for path, (secs, specs) in seconds.items():
        diff = max(float(np.abs(np.asarray(s if isinstance(s, np.ndarray) else s.cpu().numpy()) - r).max())
                   for s, r in zip(specs, reference, strict=True))
        print(f"{name} {path}: {secs:.3f} s for {len(segments)} segments ({total} frames): "
              f"{len(segments) / secs:.1f} segments/s, {total / secs:.0f} frames/s, max |diff| vs librosa {diff:g} dB")
    cuda_part = f" torch_cuda_s={seconds['torch_cuda'][0]:.4f}" if "torch_cuda" in seconds else ""
    print(f"profile={name} ratio={seconds['librosa'][0] / seconds['torch_cpu'][0]:.2f} "
          f"librosa_s={seconds['librosa'][0]:.4f} torch_cpu_s={seconds['torch_cpu'][0]:.4f}{cuda_part} frames={total}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="dataset root (default: generate `tiny` in a temp folder)")
    parser.add_argument("--batch", type=int, default=32, help="segments per torch.stft call")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per path (the best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "KEMDy20"
            synthetic.make_dataset(root, preset="tiny", seed=0)
            frames.write_frames(frames.build_frames(root), root)
        segments = load_segments(frames.load_frames(root), root).by_split["test"]
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        print(f"{len(segments)} test segments of {root}; torch {torch.__version__} on {args.threads} thread(s), "
              f"CUDA device: {device}")
        for name, params in PROFILES.items():
            profile_run(name, params, segments, int(config.STE_inputs["clip_length"]), args.batch, args.repeat)


if __name__ == "__main__":
    util.run_cli(main)

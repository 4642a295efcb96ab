"""Feature extraction, ours against the original's way, on the same nodes and checkpoint.

* ours: batches of nodes, one log-mel spectrogram per segment sliced into the clips of all its steps
  (prediction.iter_predictions, as STE_forward runs it);
* reference: batch size 1, re-reading the wav and recomputing the clip's spectrogram for every step.

Both must give the same embeddings (allclose). Then the segment audio pass (models.py: the ResNet18
trunk once over each segment's spectrogram, every node pooled from its clip window) on the same weights
and nodes, through the same iter_predictions. The last two lines printed are
`ratio=<reference/ours> reference_s=<s> ours_s=<s> nodes_per_s=<ours>` and
`segment_ratio=<ours per-clip s / segment-pass s> segment_s=<s> segment_nodes_per_s=<n>`.
With --participant_norm a last line follows: participant normalisation's statistics in a pass over the
wavs of their own before the dataset reads them again, against one log-mel pass that gives the statistics
and the spectrograms (participant.attach as STE_forward runs it), both through the per-clip model:
`participant_ratio=<two-pass s / one-pass s> two_pass_s=<s> one_pass_s=<s> one_pass_nodes_per_s=<n>`.

    python benchmarks/bench_forward.py [--root KEMDY20_ROOT] [--checkpoint best.pth] [--segments 12]
                                      [--participant_norm]

Without --root, the `tiny` synthetic preset is generated in a temporary folder; without
--checkpoint, an untrained encoder (training-session normalisation) stands in for a trained one.
Segments come from the pipeline's own `load_segments`, so the ones it skips (wav missing, unreadable
or empty; no bio rows) are skipped here too and counted on the line before the last.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from encoder.core import checkpoints, config, frames, io, participant, prediction, synthetic, util
from encoder.core.custom_transforms import Normalization, SpectrogramParams, clip_spectrogram
from encoder.core.dataset import Segment, SegmentDataset, compute_normalization, load_segments
from encoder.core.models import STEncoder, inference_model
from encoder.core.participant import InputOptions

CPU = torch.device("cpu")


def reference_embeddings(model: STEncoder, segments: list[Segment], norm: Normalization, clip_length: int,
                         params: SpectrogramParams, device: torch.device = CPU) -> np.ndarray:
    """The straightforward way: per node, read the wav, cut the clip, compute its spectrogram, batch 1.
    `model` must be on `device` (benchmarks/bench_gpu.py times this on a GPU)."""
    out = []
    with torch.no_grad():
        for seg in segments:
            for step in range(seg.n_steps):
                wav = io.read_wav(seg.wav, params.sample_rate)
                steps = np.array([step])
                spec = norm.audio(clip_spectrogram(wav, int(seg.frame_offsets(params, steps)[0]), clip_length, params))
                bio = {name: torch.from_numpy(norm.stream(name, clips))[None].to(device)
                       for name, clips in seg.bio_clips(clip_length, steps, norm.bio).items()}
                result = model(torch.from_numpy(spec)[None, None].to(device), bio)
                out.append(result.embedding[0].cpu().numpy())
    return np.stack(out)


def our_embeddings(model: STEncoder, segments: list[Segment], norm: Normalization, clip_length: int,
                   params: SpectrogramParams, batch_size: int, num_workers: int,
                   options: InputOptions | None = None) -> np.ndarray:
    """`model`: an inference_model (BatchNorm folded once, outside the timings)."""
    dataset = SegmentDataset(segments, norm, clip_length, params, options=options)
    parts = prediction.iter_predictions(model, dataset, batch_size, num_workers, torch.device("cpu"),
                                        with_features=True)
    return np.concatenate([p.features for p in parts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="dataset root (default: generate `tiny` in a temp folder)")
    parser.add_argument("--checkpoint", type=Path, help="encoder checkpoint (default: untrained encoder)")
    parser.add_argument("--segments", type=int, default=12, help="test segments to embed")
    parser.add_argument("--batch_size", type=int, default=config.STE_forward_params["batch_size"])
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--clip_length", type=int, default=config.STE_inputs["clip_length"])
    parser.add_argument("--sample_rate", type=int, default=config.STE_inputs["sample_rate"])
    parser.add_argument("--hop_length", type=int, default=config.STE_inputs["hop_length"])
    parser.add_argument("--n_mels", type=int, default=config.STE_inputs["n_mels"])
    parser.add_argument("--participant_norm", action="store_true",
                        help="then time participant normalisation's statistics in a pass of their own against "
                             "one log-mel pass (last line participant_ratio=...)")
    args = parser.parse_args()
    util.seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:  # the segments' wavs are read from it until the end
        root = args.root
        if root is None:
            root = Path(tmp) / "KEMDy20"
            synthetic.make_dataset(root, preset="tiny", seed=0)
            frames.write_frames(frames.build_frames(root), root)
        run(args, root)


def run(args: argparse.Namespace, root: Path) -> None:
    """Embed the first `args.segments` usable test segments both ways, check they agree, print the timings."""
    table = load_segments(frames.load_frames(root), root)
    if args.checkpoint is not None:
        state = checkpoints.load_encoder_checkpoint(args.checkpoint)
        model = checkpoints.encoder_from_checkpoint(state, args.checkpoint)
        norm = Normalization.from_dict(state["normalization"])
        clip_length, params = state["inputs"]["clip_length"], SpectrogramParams.from_dict(state["inputs"])
    else:
        params = SpectrogramParams.from_dict({**config.STE_inputs, "sample_rate": args.sample_rate,
                                              "hop_length": args.hop_length, "n_mels": args.n_mels})
        clip_length = args.clip_length
        model = STEncoder()
        norm = compute_normalization(table.by_split["train"], clip_length, params)
    model.eval()
    segments = table.by_split["test"][: args.segments]
    if not segments:
        raise util.DataError("no usable test segment to embed", root)
    n_nodes = sum(s.n_steps for s in segments)
    folded = inference_model(model)
    our_embeddings(folded, segments[:1], norm, clip_length, params, args.batch_size, 0)  # warm-up
    started = time.perf_counter()
    ours = our_embeddings(folded, segments, norm, clip_length, params, args.batch_size, args.num_workers)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    reference = reference_embeddings(model, segments, norm, clip_length, params)
    reference_s = time.perf_counter() - started
    max_diff = float(np.abs(ours - reference).max())
    if not np.allclose(ours, reference, rtol=1e-3, atol=1e-4):
        raise SystemExit(f"embeddings disagree: max |ours - reference| = {max_diff:.3g}")
    report = table.report()
    print(f"{n_nodes} nodes of {len(segments)} segments, clip {clip_length}, {params.sample_rate} Hz, "
          f"{params.n_mels} mels x {params.clip_frames(clip_length)} frames; max |diff| {max_diff:.2e}; "
          f"skipped {report['skipped']} of {report['considered']} segments {report['dropped_reasons']}")
    print(f"ratio={reference_s / ours_s:.2f} reference_s={reference_s:.2f} ours_s={ours_s:.2f} "
          f"nodes_per_s={n_nodes / ours_s:.1f}")
    segment_model = STEncoder(audio_pass="segment")
    segment_model.load_state_dict(model.state_dict())
    options = replace(InputOptions(clip_length), audio_pass="segment")
    segment_folded = inference_model(segment_model.eval())
    our_embeddings(segment_folded, segments[:1], norm, clip_length, params, args.batch_size, 0, options)  # warm-up
    started = time.perf_counter()
    our_embeddings(segment_folded, segments, norm, clip_length, params, args.batch_size, args.num_workers, options)
    segment_s = time.perf_counter() - started
    print(f"segment_ratio={ours_s / segment_s:.2f} segment_s={segment_s:.2f} "
          f"segment_nodes_per_s={n_nodes / segment_s:.1f}")
    if args.participant_norm:
        participant_passes(folded, segments, norm, clip_length, params, args, n_nodes)


def participant_passes(model: torch.nn.Module, segments: list[Segment], norm: Normalization, clip_length: int,
                       params: SpectrogramParams, args: argparse.Namespace, n_nodes: int) -> None:
    """With participant normalisation, the statistics and the embeddings of `segments`: the statistics
    from a pass of their own over the wavs before the dataset reads them again (two passes), against one
    log-mel pass that gives both (participant.attach keeping the spectrograms, as STE_forward does)."""
    options = InputOptions(clip_length, participant_norm=True)
    timings, results = {}, {}
    for name, keep in (("two_pass", False), ("one_pass", True)):
        fresh = [replace(s, participant=None, spectrogram=None) for s in segments]
        started = time.perf_counter()
        participant.attach(fresh, params, options, None if not keep else clip_length, keep_spectrograms=keep)
        results[name] = our_embeddings(model, fresh, norm, clip_length, params, args.batch_size, args.num_workers,
                                       options)
        timings[name] = time.perf_counter() - started
    if not np.allclose(results["one_pass"], results["two_pass"], rtol=1e-3, atol=1e-4):
        raise SystemExit("participant-normalised embeddings disagree between one and two passes")
    print(f"participant_ratio={timings['two_pass'] / timings['one_pass']:.2f} two_pass_s={timings['two_pass']:.2f} "
          f"one_pass_s={timings['one_pass']:.2f} one_pass_nodes_per_s={n_nodes / timings['one_pass']:.1f}")


if __name__ == "__main__":
    util.run_cli(main)

"""Throughput of the encoder and GNN stages on one device, for benchmarks/gpu_check.sh (and by hand).

    python benchmarks/bench_gpu.py env     --out env.json
    python benchmarks/bench_gpu.py encoder --device 0|cpu [--quick] [--budget S] [--workers N] --work DIR --out enc.json
    python benchmarks/bench_gpu.py gnn     --device 0|cpu [--quick] [--budget S] [--workers N] --work DIR --out gnn.json

encoder: the `tiny` synthetic preset at the full spectrogram settings (config.STE_inputs: 16 kHz, 64 mels,
11-step clips), an untrained encoder with training-session normalisation (the arithmetic does not depend on
the weights):
  * extraction nodes/s through the project's path (SegmentDataset + DataLoader workers + node_batches +
    prediction.iter_predictions, BatchNorm-folded inference model, batch config.STE_forward_params), in
    float32 and in float16 autocast, with the spectrograms on the device (`_device_`: torch.stft and the mel
    projection in the main process, encoder/core/device_spectrogram.py, config's "auto" on CUDA, measured
    first) and with librosa in the loader workers, with the largest feature difference between the two; the
    test segments are repeated to give the device enough nodes;
  * the batch-1 reference of bench_forward.py (per node: read the wav, compute the clip's spectrogram, one
    forward pass) on the same device, and the relative difference of its embeddings to the batched ones;
  * the same forward passes on one batch already on the device (model only, no data loading), also with
    deterministic algorithms off (`_nondeterministic`: util.cuda_determinism(False), cudnn.benchmark);
  * encoder training clips/s: training's own step (training._train_one_epoch: autocast + GradScaler on CUDA,
    the audio stream channels-last under AMP as config.STE_optimization_params says) over a TrainClipDataset
    loader, with the spectrograms on the device (training's "auto" on CUDA) and with librosa in the workers
    (`_cpu_spectrograms`), and on one batch already on the device: as training runs, then contiguous
    (`_contiguous`), in float32 (`_fp32`) and with deterministic algorithms off (`_nondeterministic`).
gnn: synthetic node files of KEMDy20 size (40 sessions, about 300k nodes of 1536-d, synthetic_nodes),
graphs by generate_graph (train_val's default flags), then seconds per training epoch with train_val's own
epoch function and model settings, peak GPU memory, and prediction nodes/s over val + test.

Timing: warm-up first; on CUDA torch.cuda.synchronize() before every clock read. Each measurement is written
to --out as soon as it is done, and a failed one is recorded (errors) without stopping the others; `--budget`
(default: $GPU_CHECK_PART_BUDGET_S, else none) skips what would start after it is spent and cuts timed loops
short. `--quick` shrinks every size (CPU checks of this script).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import bench_forward
import numpy as np
import torch
from torch_geometric.loader import DataLoader

from encoder.core import (
    config,
    device_spectrogram,
    frames,
    prediction,
    synthetic,
    synthetic_nodes,
    training,
    util,
)
from encoder.core.custom_transforms import SpectrogramParams
from encoder.core.dataset import (
    Segment,
    SegmentDataset,
    TrainClipDataset,
    compute_normalization,
    load_segments,
    node_batches,
)
from encoder.core.distributed import resolve_device
from encoder.core.models import STEncoder, inference_model
from temporal_gnn import gnn_model, gnn_training, graph_building, graph_data

GB = 1e9  # memory figures are in GB of 10^9 bytes


class Recorder:
    """The results of one part, rewritten to `path` after every change, so that a part killed at its time
    limit still leaves what it measured. `budget_s` bounds the part's own work (inf: none)."""

    def __init__(self, path: Path, budget_s: float):
        self.path = path
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"results": {}, "errors": {}, "skipped": {}}
        self.write()

    def remaining(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def set(self, **values: Any) -> None:
        self.data["results"].update(values)
        self.write()

    def info(self, **values: Any) -> None:
        self.data.update(values)
        self.write()

    def skip(self, name: str, reason: str) -> None:
        self.data["skipped"][name] = reason
        self.write()

    def measure(self, name: str, needs_s: float, fn: Callable[[], dict[str, Any] | None]) -> bool:
        """Run `fn` (which returns results to record) unless less than `needs_s` seconds of the budget are
        left; an exception is recorded under errors[name]. Returns whether it succeeded."""
        if self.remaining() < needs_s:
            self.skip(name, f"time budget: {max(self.remaining(), 0):.0f} s left, needs about {needs_s:.0f}")
            return False
        start = time.perf_counter()
        try:
            self.set(**(fn() or {}))
        except Exception as err:  # one failed measurement must not stop the others
            self.data["errors"][name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            self.write()
            return False
        finally:
            self.data.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 2)
            self.write()
        return True

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        util.write_json(self.data, self.path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of fn() with the device synchronised before both clock reads."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def capped(items: Iterable[Any], seconds: float) -> Iterator[Any]:
    """`items` until `seconds` have passed (checked between items)."""
    stop = time.perf_counter() + seconds
    for item in items:
        yield item
        if time.perf_counter() > stop:
            return


def default_workers(device: torch.device) -> int:
    """DataLoader workers: all cores but two on a GPU machine (the main process packs batches), one on CPU."""
    return max(1, min(14, (os.cpu_count() or 1) - 2)) if device.type == "cuda" else 1


def shorten(segment: Segment, steps: int | None) -> Segment:
    """`segment` with its first `steps` steps only (its whole wav stays), or unchanged for None."""
    if steps is None or segment.n_steps <= steps:
        return segment
    return dataclasses.replace(segment, ts=segment.ts[:steps],
                               values={name: values[:steps] for name, values in segment.values.items()})


def rel_diff(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


# --------------------------------------------------------------------------- env


def env_info() -> dict[str, Any]:
    """Versions, the device and the machine, without assuming any optional package is importable."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
    }
    for name in ("torchvision", "torch_geometric", "numpy", "pandas", "sklearn", "librosa", "soundfile", "pytest"):
        try:
            info[name] = getattr(__import__(name), "__version__", "?")
        except Exception as err:  # a missing or broken package is a finding, not a crash
            info[name] = f"unavailable ({type(err).__name__}: {err})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                    gpu_memory_gb=round(props.total_memory / GB, 1), multiprocessors=props.multi_processor_count)
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


# --------------------------------------------------------------------------- encoder


def encoder_part(args: argparse.Namespace, rec: Recorder) -> None:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    workers = default_workers(device) if args.workers is None else args.workers
    util.seed_everything(0)  # as training does: deterministic algorithms, which also pick the cuDNN kernels
    inputs = dict(config.STE_inputs)
    params = SpectrogramParams.from_dict(inputs)
    clip_length = int(inputs["clip_length"])
    batch_size = int(config.STE_forward_params["batch_size"])
    train_batch = int(config.STE_optimization_params["batch_size"])
    sizes = {  # quick: a CPU check of the code (segments cut to a few steps), not a measurement
        "extract_repeat": 1 if args.quick else 48, "extract_segments": 3 if args.quick else None,
        "steps_per_segment": 4 if args.quick else None, "reference_nodes": 4 if args.quick else 400,
        "model_only_batches": 1 if args.quick else 20, "train_repeat": 1 if args.quick else 400,
        "train_clips_cap": 8 if args.quick else None, "train_batch": 4 if args.quick else train_batch,
        "model_only_steps": 1 if args.quick else 20, "forward_batch": 8 if args.quick else batch_size,
        "timed_cap_s": 15.0,
    }
    rec.info(part="encoder", device=str(device), device_type=device.type, quick=args.quick, workers=workers,
             amp_dtype="float16", deterministic_algorithms=True, sizes=sizes,
             inputs={"clip_length": clip_length, **params.to_dict()})

    root = Path(args.work) / "tiny"
    data: dict[str, Any] = {}

    def prepare() -> dict[str, Any]:
        if not (root / "annotation").exists():
            synthetic.make_dataset(root, preset="tiny", seed=0)
            frames.write_frames(frames.build_frames(root), root)
        table = load_segments(frames.load_frames(root), root)
        data["train"] = table.by_split["train"]
        test = table.by_split["test"][: sizes["extract_segments"]]
        data["test"] = [shorten(s, sizes["steps_per_segment"]) for s in test]
        data["norm"] = compute_normalization(data["train"], clip_length, params)
        data["model"] = STEncoder().eval().to(device)
        data["fused"] = inference_model(data["model"]).to(device)
        return {"segments": {k: len(v) for k, v in table.by_split.items()}}

    if not rec.measure("prepare", 10, prepare):
        return
    norm, test, fused = data["norm"], data["test"], data["fused"]

    def dataset(segments: list, on_device: bool = False) -> SegmentDataset:
        return SegmentDataset(segments, norm, clip_length, params, device_spectrogram=on_device)

    def extract(segments: list, amp: bool, cap_s: float, on_device: bool = False) -> tuple[int, float, np.ndarray]:
        """Nodes, seconds and embeddings of the project's batched extraction path over `segments`."""
        parts = prediction.iter_predictions(fused, dataset(segments, on_device), sizes["forward_batch"], workers,
                                            device, amp, with_features=True)
        seconds, preds = timed(device, lambda: list(capped(parts, cap_s)))
        return sum(len(p.step) for p in preds), seconds, np.concatenate([p.features for p in preds])

    repeated = test * sizes["extract_repeat"]
    n_nodes = sum(s.n_steps for s in repeated)
    rec.set(extract_nodes=n_nodes)
    embeddings: dict[str, np.ndarray] = {}
    for name, amp, on_device in (("device_fp32", False, True), ("device_amp", True, True), ("fp32", False, False),
                                 ("amp", True, False)):
        if amp and not cuda:
            rec.skip(f"extract_{name}", "float16 autocast is used on CUDA only (prediction.autocast)")
            continue

        def run(amp: bool = amp, name: str = name, on_device: bool = on_device) -> dict[str, Any]:
            extract(test[:2], amp, math.inf, on_device)  # warm-up: workers, cuDNN kernel choice, allocator
            nodes, seconds, _ = extract(repeated, amp, min(sizes["timed_cap_s"], max(rec.remaining() - 30, 5)),
                                        on_device)
            embeddings[name] = extract(test[:4], amp, math.inf, on_device)[2]
            return {f"extract_nodes_per_s_{name}": nodes / seconds, f"extract_timed_nodes_{name}": nodes}

        rec.measure(f"extract_{name}", 15, run)
    if "fp32" in embeddings and "amp" in embeddings:
        rec.set(extract_rel_diff_amp_vs_fp32=rel_diff(embeddings["amp"], embeddings["fp32"]))
    if "fp32" in embeddings and "device_fp32" in embeddings:
        rec.set(extract_max_abs_diff_device_vs_cpu_spectrograms_fp32=float(
            np.abs(embeddings["device_fp32"] - embeddings["fp32"]).max()))

    def reference() -> dict[str, Any]:
        segments = list(itertools.islice(itertools.cycle(test), 64))
        picked, total = [], 0
        for seg in segments:
            if total >= sizes["reference_nodes"]:
                break
            picked.append(seg)
            total += seg.n_steps
        model = data["model"]
        bench_forward.reference_embeddings(model, picked[:1], norm, clip_length, params, device)  # warm-up
        seconds, ref = timed(device, lambda: bench_forward.reference_embeddings(model, picked, norm, clip_length,
                                                                                params, device))
        ours = extract(picked, False, math.inf)[2]
        return {"extract_nodes_per_s_batch1": len(ref) / seconds, "extract_timed_nodes_batch1": len(ref),
                "extract_rel_diff_batched_vs_batch1": rel_diff(ours, ref)}

    rec.measure("extract_batch1", 15, reference)

    def model_only() -> dict[str, Any]:
        batch = next(node_batches(iter(dataset(test)), sizes["forward_batch"], clip_length, params))
        tensors = [batch.audio.to(device), {name: clips.to(device) for name, clips in batch.bio.items()}]
        out: dict[str, Any] = {"model_only_batch": len(batch.step)}
        for name, amp, deterministic in (("fp32", False, True), ("amp", True, True), ("fp32_nondeterministic", False,
                                                                                      False),
                                         ("amp_nondeterministic", True, False)):
            if (amp or not deterministic) and not cuda:
                continue

            def forward(amp: bool = amp) -> None:
                with torch.inference_mode(), prediction.autocast(device, amp):
                    for _ in range(sizes["model_only_batches"]):
                        fused(*tensors)

            util.cuda_determinism(deterministic, device)
            try:
                forward()  # warm-up (and, without determinism, cuDNN's autotuning)
                seconds, _ = timed(device, forward)
            finally:
                util.cuda_determinism(True, device)
            out[f"extract_model_only_nodes_per_s_{name}"] = sizes["model_only_batches"] * len(batch.step) / seconds
        return out

    rec.measure("extract_model_only", 10, model_only)

    amp = bool(config.STE_optimization_params["amp"]) and cuda
    channels_last = amp and bool(config.STE_optimization_params["channels_last"])  # as training._train decides
    train_on_device = device_spectrogram.resolve(str(config.STE_optimization_params["spectrogram_on"]), device,
                                                 params).on_device
    rec.info(encoder_train_channels_last=channels_last, encoder_train_device_spectrograms=train_on_device)

    def new_trainer(nhwc: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
        model = STEncoder().to(device)
        if nhwc:
            model.audio.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.STE_optimization_params["lr"],
                                      weight_decay=config.STE_optimization_params["weight_decay"])
        return model, optimizer, torch.amp.GradScaler("cuda", enabled=amp)

    def train(on_device: bool, name: str) -> dict[str, Any]:
        segments = (data["train"] * sizes["train_repeat"])[: sizes["train_clips_cap"]]
        clips = TrainClipDataset(segments, norm, clip_length, params, seed=0, device_spectrogram=on_device)
        loader = torch.utils.data.DataLoader(clips, batch_size=sizes["train_batch"], shuffle=True,
                                             num_workers=workers, pin_memory=cuda, drop_last=True,
                                             worker_init_fn=util.loader_worker_init,
                                             generator=torch.Generator().manual_seed(0))
        prepare = (functools.partial(device_spectrogram.clip_batch, norm=norm, params=params, device=device)
                   if on_device else None)
        model, optimizer, scaler = new_trainer(channels_last)
        warm = [next(iter(torch.utils.data.DataLoader(clips, batch_size=sizes["train_batch"])))] * 2
        training._train_one_epoch(model, warm, optimizer, scaler, device, amp, None, None, None, prepare, channels_last)
        counted = []

        def batches() -> Iterator[Any]:
            for batch in capped(loader, min(sizes["timed_cap_s"], max(rec.remaining() - 20, 5))):
                counted.append(len(batch["label"] if isinstance(batch, dict) else batch[3]))
                yield batch

        seconds, losses = timed(device, lambda: training._train_one_epoch(model, batches(), optimizer, scaler, device,
                                                                          amp, None, None, None, prepare,
                                                                          channels_last))
        return {f"encoder_train_clips_per_s{name}": sum(counted) / seconds,
                f"encoder_train_timed_clips{name}": sum(counted), "encoder_train_amp": amp,
                f"encoder_train_loss_finite{name}": math.isfinite(losses["total"])}

    rec.measure("encoder_train", 15, lambda: train(train_on_device, ""))
    if train_on_device:
        rec.measure("encoder_train_cpu_spectrograms", 15, lambda: train(False, "_cpu_spectrograms"))

    def train_model_only() -> dict[str, Any]:
        audio = torch.randn(sizes["train_batch"], 1, params.n_mels, params.clip_frames(clip_length))
        bio = torch.randn(sizes["train_batch"], 1, clip_length)
        label = torch.full((sizes["train_batch"], config.NUM_CLASSES), 1.0 / config.NUM_CLASSES)
        batch = tuple(t.to(device) for t in (audio, bio, bio.clone(), label, torch.zeros(sizes["train_batch"])))
        steps = [batch] * sizes["model_only_steps"]
        out: dict[str, Any] = {}
        # as training runs (AMP and channels-last per config), then one setting changed at a time
        for name, use_amp, nhwc, deterministic in (("", amp, channels_last, True), ("_contiguous", amp, False, True),
                                                    ("_fp32", False, False, True),
                                                    ("_nondeterministic", amp, channels_last, False)):
            if name and not cuda:
                continue
            model, optimizer, _ = new_trainer(nhwc)
            scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
            util.cuda_determinism(deterministic, device)
            try:
                training._train_one_epoch(model, steps[:1], optimizer, scaler, device, use_amp, None, None, None,
                                          None, nhwc)  # warm-up
                seconds, _ = timed(device, functools.partial(training._train_one_epoch, model, steps, optimizer,
                                                             scaler, device, use_amp, None, None, None, None, nhwc))
            finally:
                util.cuda_determinism(True, device)
            out[f"encoder_train_model_only_clips_per_s{name}"] = len(steps) * sizes["train_batch"] / seconds
        return out

    rec.measure("encoder_train_model_only", 10, train_model_only)


# --------------------------------------------------------------------------- GNN


def gnn_part(args: argparse.Namespace, rec: Recorder) -> None:
    device = resolve_device(args.device)
    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    sessions = 6 if args.quick else 40
    nodes_per_session = 300 if args.quick else 7500
    epochs = 1 if args.quick else 3
    work = Path(args.work)
    rec.info(part="gnn", device=str(device), device_type=device.type, quick=args.quick, workers=workers,
             sizes={"sessions": sessions, "nodes_per_session": nodes_per_session, "timed_epochs": epochs})
    features, graphs_dir = work / "features", work / "graphs"
    flags = ["--features_dir", str(features), "--graphs_dir", str(graphs_dir)]
    data: dict[str, Any] = {}

    def write_nodes() -> dict[str, Any]:
        synthetic_nodes.write_synthetic_nodes(features, synthetic_nodes.proportional_splits(sessions),
                                              nodes_per_session, seed=0)
        return {}

    def build() -> dict[str, Any]:
        graph_building.run([*flags, "--workers", str(workers), "--force"])
        return {}

    def load() -> dict[str, Any]:
        gnn_args = gnn_training.parse_args([*flags, "--device", str(device)])
        graph_dir = graph_building.GraphFolders.from_args(gnn_args).graph_dir(
            graph_building.GraphSettings.from_args(gnn_args))
        data["record"] = graph_data.read_build_record(graph_dir)
        data["graphs"] = {split: graph_data.load_split(graph_dir, split) for split in graph_data.SPLITS}
        data["args"] = gnn_args
        graphs = data["graphs"]
        return {"gnn_nodes": sum(g.num_nodes for gs in graphs.values() for g in gs),
                "gnn_train_nodes": sum(g.num_nodes for g in graphs["train"]),
                "gnn_edges": sum(g.num_edges for gs in graphs.values() for g in gs),
                "gnn_graphs": {split: len(gs) for split, gs in graphs.items()},
                "gnn_settings": {k: vars(gnn_args)[k] for k in ("numv", "time_edge", "cross_identity", "batch_size",
                                                                "channel1", "channel2", "dropout", "lr")}}

    for name, needs, fn in (("gnn_write_nodes", 20, write_nodes), ("gnn_build_graphs", 10, build),
                            ("gnn_load_graphs", 5, load)):
        if not rec.measure(name, needs, fn):
            return

    def epochs_timed() -> dict[str, Any]:
        gnn_args, graphs = data["args"], data["graphs"]
        util.seed_everything(gnn_args.seed)  # as train_and_evaluate does
        model = gnn_model.SPELL(data["record"]["feature_dims"], None, gnn_args.channel1, gnn_args.channel2,
                                 gnn_args.dropout).to(device)
        loader = DataLoader(graphs["train"], batch_size=gnn_args.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(gnn_args.seed))
        optimizer = torch.optim.Adam(model.parameters(), lr=gnn_args.lr)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        first, _ = timed(device, lambda: gnn_training._train_epoch(model, loader, optimizer, None, device))
        times = []
        for _ in range(epochs):
            if rec.remaining() < 2 * first + 5:
                break
            seconds, loss = timed(device, lambda: gnn_training._train_epoch(model, loader, optimizer, None, device))
            times.append(seconds)
        out: dict[str, Any] = {"gnn_first_epoch_s": first, "gnn_epoch_times_s": times,
                               "gnn_epoch_s": float(np.median(times)) if times else None}
        if device.type == "cuda":
            out["gnn_peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / GB
        held_out = graphs["val"] + graphs["test"]
        seconds, pred = timed(device, lambda: gnn_training.predict(model, held_out, gnn_args.batch_size, device))
        out["gnn_predict_nodes_per_s"] = len(pred["targets"]) / seconds
        return out

    rec.measure("gnn_epochs", 10, epochs_timed)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("env", "encoder", "gnn"))
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results")
    parser.add_argument("--device", default="0" if torch.cuda.is_available() else "cpu",
                        help="'cpu' or a CUDA index (default: 0 when CUDA is available)")
    parser.add_argument("--work", type=Path, help="scratch folder for data (required by encoder and gnn)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check of the code, not a measurement")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers (encoder) or graph-building processes (gnn); default from the cores")
    parser.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_PART_BUDGET_S", "inf")),
                        help="seconds this part may use (default: $GPU_CHECK_PART_BUDGET_S, else unlimited)")
    args = parser.parse_args(argv)
    if args.part != "env" and args.work is None:
        parser.error(f"{args.part} needs --work")
    return args


def main() -> None:
    args = parse_args()
    if args.part == "env":
        info = env_info()
        util.write_json(info, args.out)
        print(json.dumps(info))
        return
    rec = Recorder(args.out, args.budget)
    (encoder_part if args.part == "encoder" else gnn_part)(args, rec)
    rec.write()
    print(json.dumps(rec.data["results"], default=str))
    if rec.data["errors"]:
        print(f"errors: {rec.data['errors']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    util.run_cli(main)

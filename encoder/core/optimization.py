"""Training and feature extraction of the encoder, in-process callable and torchrun-aware.

* `train_encoder(...)`: fits on the training sessions, validates every epoch in eval mode on every
  step (or every `val_step_stride`-th step) of the validation segments, keeps the best checkpoint by
  validation segment macro-F1 (segment = mean of its nodes' softmax probabilities).
* `extract_features(...)`: one 1536-d embedding per 4 Hz step of every segment of every split,
  written per session for the graph stage, plus the manifest and the encoder's test metrics.

Under `torchrun` (WORLD_SIZE > 1) training uses DistributedDataParallel (NCCL on CUDA, Gloo on CPU)
with a DistributedSampler; validation and extraction are sharded and gathered; rank 0 alone writes.
"""

from __future__ import annotations

import csv
import os
import pickle
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from encoder.core import config, util
from encoder.core.custom_transforms import SPECTROGRAM_KEYS, Normalization, SpectrogramParams
from encoder.core.dataset import (
    Segment,
    SegmentDataset,
    TrainClipDataset,
    compute_normalization,
    load_segments,
    node_batches,
)
from encoder.core.frames import load_frames
from encoder.core.models import (
    EMBEDDING_DIM,
    FEATURE_ORDER,
    STREAM_DIM,
    EncoderOutput,
    STEncoder,
    inference_model,
)

CHECKPOINT_FORMAT = "ste_encoder/1"
LOG_NAME = "ste_encoder_logs.csv"
CONFIG_NAME = "ste_encoder_config.json"
HEADS = ("audio", "eda", "temp", "fused")
LOG_COLUMNS = ("epoch", *(f"loss_{h}" for h in HEADS), "loss_total", "val_loss", "val_accuracy",
               "val_macro_f1", "val_node_accuracy", "val_node_macro_f1", "lr", "seconds")

Log = Callable[[str], None]


# --------------------------------------------------------------------------- settings and devices


def merge_settings(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`defaults` updated by `overrides`; unknown keys are an error (a typo would otherwise be ignored)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **overrides}


def input_signature(inputs: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's features depend on: clip length and spectrogram parameters."""
    spec = SpectrogramParams.from_dict(inputs).to_dict()
    return {"clip_length": int(inputs["clip_length"]), **spec}


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | int | torch.device) -> torch.device:
    """'cpu', a CUDA index (int or digits) or a torch.device; CUDA absent → CPU with a warning."""
    if isinstance(device, torch.device):
        return device
    text = str(device).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    index = int(text.removeprefix("cuda:"))
    if not torch.cuda.is_available():
        warnings.warn(f"CUDA device {index} requested but CUDA is not available; running on CPU", stacklevel=2)
        return torch.device("cpu")
    return torch.device("cuda", index)


def start_runtime(device: str | int | torch.device) -> Runtime:
    """Join the torchrun process group when WORLD_SIZE > 1 (one GPU per local rank, else CPU/Gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(resolve_device(device))
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        wanted = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(wanted)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
    return Runtime(wanted, dist.get_rank(), dist.get_world_size(), owns)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def gather(runtime: Runtime, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (just [value] without a process group)."""
    if not runtime.distributed:
        return [value]
    values: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(values, value)
    return values


def broadcast(runtime: Runtime, value: Any) -> Any:
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


# --------------------------------------------------------------------------- loss and prediction


def encoder_loss(
    output: EncoderOutput, label: torch.Tensor, class_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of the four heads' cross-entropies, taken on logits against the normalised multi-hot
    `label` (B, 7). Returns (total, per-head mean losses)."""
    per_head = {
        name: functional.cross_entropy(getattr(output, name).float(), label, weight=class_weight) for name in HEADS
    }
    return sum(per_head.values()), per_head


@dataclass
class Predictions:
    """Per node, in segment order: its segment's index, its step, fused-head probabilities, the
    summed four-head loss against its segment's label, and (optionally) its 1536-d embedding."""

    segment_index: np.ndarray
    step: np.ndarray
    probs: np.ndarray
    loss: np.ndarray
    features: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        features = [p.features for p in parts]
        return cls(
            np.concatenate([p.segment_index for p in parts]),
            np.concatenate([p.step for p in parts]),
            np.concatenate([p.probs for p in parts]),
            np.concatenate([p.loss for p in parts]),
            None if any(f is None for f in features) else np.concatenate(features),
        )


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast("cuda", dtype=torch.float16, enabled=amp and device.type == "cuda")


def iter_predictions(
    model: torch.nn.Module,
    dataset: SegmentDataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp: bool = False,
    with_features: bool = False,
    progress: str | None = None,
):
    """Yield a Predictions per batch of nodes over `dataset`, model in eval mode, one spectrogram
    per segment. The caller restores train mode if it needs it."""
    model.eval()
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)
    labels = torch.from_numpy(np.stack([s.label for s in dataset.segments])) if dataset.segments else None
    total = sum(len(dataset.steps(i)) for i in range(len(dataset)))
    bar = tqdm(total=total, desc=progress, unit="node", disable=progress is None, leave=False)
    with torch.inference_mode(), bar:
        for batch in node_batches(loader, batch_size, dataset.clip_length, dataset.params):
            with _autocast(device, amp):
                out = model(batch.audio.to(device), batch.eda.to(device), batch.temp.to(device))
            label = labels[torch.from_numpy(batch.segment_index)].to(device)
            loss = sum(functional.cross_entropy(getattr(out, h).float(), label, reduction="none") for h in HEADS)
            yield Predictions(
                batch.segment_index, batch.step, torch.softmax(out.fused.float(), dim=1).cpu().numpy(),
                loss.cpu().numpy(), out.embedding.float().cpu().numpy() if with_features else None,
            )
            bar.update(len(batch.step))


def node_metrics(segments: Sequence[Segment], pred: Predictions) -> dict[str, Any]:
    """Node and segment metrics (util.classification_metrics) of `pred` over `segments`."""
    seg_ids = [segments[i].segment_id for i in pred.segment_index]
    targets = np.array([segments[i].target for i in pred.segment_index], dtype=int)
    _, seg_targets, seg_pred, _ = util.segment_predictions(seg_ids, pred.probs, targets)
    return {
        "segment": util.classification_metrics(seg_targets, seg_pred),
        "node": util.classification_metrics(targets, pred.probs.argmax(axis=1)),
    }


def validate(
    runtime: Runtime, model: torch.nn.Module, segments: Sequence[Segment], norm: Normalization, clip_length: int,
    params: SpectrogramParams, settings: dict[str, Any],
) -> dict[str, Any]:
    """Eval-mode validation over a fixed node set, sharded over ranks and gathered on every rank."""
    shard = list(range(runtime.rank, len(segments), runtime.world_size))
    dataset = SegmentDataset([segments[i] for i in shard], norm, clip_length, params,
                             int(settings.get("val_step_stride", 1)))
    parts = list(iter_predictions(model, dataset, settings["batch_size"], settings["num_workers"],
                                  runtime.device, settings["amp"],
                                  progress="validate" if runtime.is_main and settings["progress"] else None))
    local = Predictions.concat(parts) if parts else None
    if local is not None:
        local.segment_index = np.asarray(shard)[local.segment_index]
    pred = Predictions.concat([p for p in gather(runtime, local) if p is not None])
    metrics = node_metrics(segments, pred)
    return {"loss": float(pred.loss.mean()), **metrics}


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    with util.atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint_state(model: STEncoder, norm: Normalization, signature: dict[str, Any], epoch: int = 0,
                     **extra: Any) -> dict[str, Any]:
    """What a checkpoint holds: weights, the inputs they expect (clip length, spectrogram), the
    training-session normalisation, plus `extra` (optimizer, scheduler, best, ...)."""
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(), "inputs": signature,
            "normalization": norm.to_dict(), "num_classes": config.NUM_CLASSES,
            "feature_order": list(FEATURE_ORDER), **extra}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by train_encoder; anything else raises util.DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise util.DataError("encoder checkpoint not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise util.DataError(f"not a readable encoder checkpoint ({type(err).__name__})", path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise util.DataError(f"not an encoder checkpoint (format {CHECKPOINT_FORMAT} expected)", path)
    return state


def model_from_checkpoint(state: dict[str, Any], path: Path) -> STEncoder:
    """Build the encoder and load the checkpoint's weights; another model shape → util.DataError."""
    model = STEncoder(num_classes=int(state.get("num_classes", config.NUM_CLASSES)))
    try:
        model.load_state_dict(state["model"], strict=True)
    except (RuntimeError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        raise util.DataError(f"checkpoint does not fit the encoder's shape: {detail}", path) from None
    return model


def epoch_checkpoints(out_dir: Path) -> list[Path]:
    return sorted(Path(out_dir).glob("epoch_*.pth"))


def _write_log(rows: list[dict[str, Any]], path: Path) -> None:
    with util.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def class_weights(segments: Sequence[Segment], num_classes: int = config.NUM_CLASSES) -> torch.Tensor:
    """Inverse frequency of the training segments' targets, mean 1 over the classes present."""
    counts = np.bincount([s.target for s in segments], minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


# --------------------------------------------------------------------------- training


def train_encoder(
    clip_length: int | None = None,
    device: str | int | torch.device = "cpu",
    root: Path | None = None,
    frames: Any = None,
    inputs: dict[str, Any] | None = None,
    optimization: dict[str, Any] | None = None,
    splits: dict[str, Sequence[int]] | None = None,
    resume: bool = False,
    log: Log | None = print,
) -> dict[str, Any]:
    """Train the encoder; returns {"best_epoch", "best_val_macro_f1", "best_checkpoint", "log", "rank", ...}.

    `inputs` / `optimization` override config.STE_inputs / config.STE_optimization_params (e.g.
    {"sample_rate": 8000, "hop_length": 200}, {"epochs": 3, "out_dir": path}); `frames` is the
    dataframe stage's Frames (read from `root` when None); `resume` continues from the latest epoch
    checkpoint in out_dir."""
    inputs = merge_settings(config.STE_inputs, inputs)
    settings = merge_settings(config.STE_optimization_params, optimization)
    if clip_length is not None:
        inputs["clip_length"] = int(clip_length)
    runtime = start_runtime(device)
    try:
        return _train(runtime, inputs, settings, root, frames, splits, resume, log if runtime.is_main else None)
    finally:
        stop_runtime(runtime)


def _train(runtime: Runtime, inputs: dict[str, Any], settings: dict[str, Any], root: Path | None, frames: Any,
           splits: dict[str, Sequence[int]] | None, resume: bool, log: Log | None) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    util.seed_everything(int(settings["seed"]))
    clip_length = int(inputs["clip_length"])
    params = SpectrogramParams.from_dict(inputs)
    root = Path(root or inputs["root"])
    out_dir = Path(settings["out_dir"])
    splits = util.session_splits(splits)
    frames = load_frames(root) if frames is None else frames
    table = load_segments(frames, root, splits, wanted=("train", "val"))
    train_segs, val_segs = table.by_split.get("train", []), table.by_split.get("val", [])
    if not train_segs or not val_segs:
        raise util.DataError(f"no usable {'training' if not train_segs else 'validation'} segment "
                             f"(splits {dict(splits)})", root)
    say(f"segments: train {len(train_segs)}, val {len(val_segs)}; skipped {len(table.skipped)}")
    device = runtime.device
    amp = bool(settings["amp"]) and device.type == "cuda"
    model = STEncoder(weights=inputs.get("weights")).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(settings["scheduler_T_max"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    signature = input_signature(inputs)
    start_epoch, best, rows = 1, {"epoch": 0, "val_macro_f1": -1.0}, []
    if resume:
        found = epoch_checkpoints(out_dir)
        if not found:
            raise util.DataError("--resume: no epoch checkpoint to resume from", out_dir)
        state = load_checkpoint(found[-1])
        if state["inputs"] != signature:
            raise util.DataError(f"--resume: checkpoint made with other inputs {state['inputs']}", found[-1])
        model.load_state_dict(model_from_checkpoint(state, found[-1]).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        norm = Normalization.from_dict(state["normalization"])
        start_epoch, best = int(state["epoch"]) + 1, dict(state["best"])
        rows = [dict(row) for row in state["log"]]  # the log travels in the checkpoint: a kill loses no row
        say(f"resuming from {found[-1]} (epoch {state['epoch']})")
    else:
        norm = compute_normalization(train_segs, clip_length, params)
    weight = class_weights(train_segs).to(device) if settings["class_weight"] else None
    net: torch.nn.Module = model
    if runtime.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_set = TrainClipDataset(train_segs, norm, clip_length, params, int(settings["seed"]))
    sampler = DistributedSampler(train_set, shuffle=True, seed=int(settings["seed"])) if runtime.distributed else None
    generator = torch.Generator()
    per_rank = len(train_set) // runtime.world_size
    loader = DataLoader(train_set, batch_size=settings["batch_size"], shuffle=sampler is None, sampler=sampler,
                        num_workers=settings["num_workers"], generator=generator,
                        drop_last=per_rank > settings["batch_size"], pin_memory=device.type == "cuda")
    record = {"inputs": {**inputs, "clip_length": clip_length}, "optimization": settings, "splits": splits,
              "normalization": norm.to_dict(), "segments": table.report(), "world_size": runtime.world_size,
              "device": str(device)}
    if runtime.is_main:
        util.write_json(record, out_dir / CONFIG_NAME)
    epochs = int(settings["epochs"])
    for epoch in range(start_epoch, epochs + 1):
        started = time.time()
        train_set.set_epoch(epoch)
        generator.manual_seed(int(settings["seed"]) * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        losses = _train_one_epoch(net, loader, optimizer, scaler, device, amp, weight,
                                  f"epoch {epoch}/{epochs}" if log and settings["progress"] else None)
        val = validate(runtime, model, val_segs, norm, clip_length, params, settings)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        improved = val["segment"]["macro_f1"] > best["val_macro_f1"]
        if improved:
            best = {"epoch": epoch, "val_macro_f1": val["segment"]["macro_f1"]}
        row = {"epoch": epoch, **{f"loss_{h}": losses[h] for h in HEADS}, "loss_total": losses["total"],
               "val_loss": val["loss"], "val_accuracy": val["segment"]["accuracy"],
               "val_macro_f1": val["segment"]["macro_f1"], "val_node_accuracy": val["node"]["accuracy"],
               "val_node_macro_f1": val["node"]["macro_f1"], "lr": lr, "seconds": round(time.time() - started, 2)}
        rows.append(row)
        if runtime.is_main:
            state = checkpoint_state(model, norm, signature, epoch=epoch, optimizer=optimizer.state_dict(),
                                     scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), best=best,
                                     val={k: row[k] for k in LOG_COLUMNS[6:11]}, seed=int(settings["seed"]),
                                     splits={k: list(v) for k, v in splits.items()}, log=rows)
            save_checkpoint(state, out_dir / f"epoch_{epoch:03d}.pth")
            if improved:
                save_checkpoint(state, out_dir / "best.pth")
            _prune(out_dir, settings.get("keep_checkpoints"))
            _write_log(rows, out_dir / LOG_NAME)
        say(f"epoch {epoch}/{epochs}: loss {losses['total']:.4f}  val loss {val['loss']:.4f}  "
            f"val acc {row['val_accuracy']:.4f}  val macro-F1 {row['val_macro_f1']:.4f}"
            f"{'  (best)' if improved else ''}  [{row['seconds']:.1f} s]")
        barrier(runtime)
    return {"best_epoch": best["epoch"], "best_val_macro_f1": best["val_macro_f1"],
            "best_checkpoint": out_dir / "best.pth", "log": out_dir / LOG_NAME, "epochs": rows,
            "segments": table.report(), "rank": runtime.rank}


def _train_one_epoch(net: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, device: torch.device, amp: bool,
                     weight: torch.Tensor | None, progress: str | None) -> dict[str, float]:
    net.train()
    sums = dict.fromkeys((*HEADS, "total"), 0.0)
    seen = 0
    for audio, eda, temp, label, _target in tqdm(loader, desc=progress, disable=progress is None, leave=False):
        if len(label) < 2:  # BatchNorm cannot train on a single clip
            continue
        audio, eda, temp, label = (x.to(device, non_blocking=True) for x in (audio, eda, temp, label))
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            out = net(audio, eda, temp)
        total, per_head = encoder_loss(out, label, weight)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        n = len(label)
        seen += n
        sums["total"] += total.detach().item() * n
        for h in HEADS:
            sums[h] += per_head[h].detach().item() * n
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _prune(out_dir: Path, keep: int | None) -> None:
    """Keep the `keep` most recent epoch checkpoints (all when None); best.pth is never pruned."""
    if keep:
        for path in epoch_checkpoints(out_dir)[: -int(keep)]:
            path.unlink()


# --------------------------------------------------------------------------- feature extraction


def extract_features(
    clip_length: int | None = None,
    device: str | int | torch.device = "cpu",
    root: Path | None = None,
    frames: Any = None,
    checkpoint: Path | None = None,
    out_dir: Path | None = None,
    forward: dict[str, Any] | None = None,
    splits: dict[str, Sequence[int]] | None = None,
    log: Log | None = print,
) -> dict[str, Any]:
    """Write `features_{split}/SessSS.pkl` (rows in util.NODE_COLUMNS order), `manifest.json` and
    `encoder_metrics.json` under out_dir; return the metrics. The clip length and spectrogram come
    from the checkpoint (`clip_length`, when given, must match it). `forward` overrides
    config.STE_forward_params (batch_size, num_workers, checkpoint, out_dir)."""
    settings = merge_settings(config.STE_forward_params, forward)
    runtime = start_runtime(device)
    try:
        return _extract(runtime, clip_length, root, frames, Path(checkpoint or settings["checkpoint"]),
                        Path(out_dir or settings["out_dir"]), settings, splits, log if runtime.is_main else None)
    finally:
        stop_runtime(runtime)


def _extract(runtime: Runtime, clip_length: int | None, root: Path | None, frames: Any, ckpt_path: Path,
             out_dir: Path, settings: dict[str, Any], splits: dict[str, Sequence[int]] | None,
             log: Log | None) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    state = load_checkpoint(ckpt_path)
    model = inference_model(model_from_checkpoint(state, ckpt_path)).to(runtime.device)
    signature = state["inputs"]
    if clip_length is not None and int(clip_length) != signature["clip_length"]:
        raise util.DataError(f"checkpoint trained with clip_length {signature['clip_length']}, "
                             f"asked for {clip_length}", ckpt_path)
    params = SpectrogramParams.from_dict(signature)
    norm = Normalization.from_dict(state["normalization"])
    root = Path(root or config.STE_inputs["root"])
    splits = util.session_splits(splits)
    frames = load_frames(root) if frames is None else frames
    table = load_segments(frames, root, splits)
    segments = [s for name in splits for s in sorted(table.by_split.get(name, []), key=lambda s: s.session)]
    sessions = sorted({s.session for s in segments})
    mine = set(sessions[runtime.rank :: runtime.world_size])
    staging = broadcast(runtime, tempfile.mkdtemp(prefix=".staging-", dir=_made(out_dir))
                        if runtime.is_main else None)
    try:
        local = _extract_sessions(runtime, model, [s for s in segments if s.session in mine], norm,
                                  signature["clip_length"], params, settings, Path(staging))
        results = gather(runtime, local)
        metrics = None
        if runtime.is_main:
            written = {k: v for part in results for k, v in part["written"].items()}
            test = [p for part in results if (p := part["test"]) is not None]
            metrics = _encoder_metrics(table.by_split.get("train", []), test)
            manifest = _manifest(ckpt_path, signature, written, splits, root, table.report(), runtime)
            _publish(Path(staging), out_dir, splits, manifest, metrics)
            say(format_metrics(metrics))
            say(f"features: {sum(written.values())} nodes in {len(written)} sessions → {out_dir}")
        barrier(runtime)
        return broadcast(runtime, metrics)
    finally:
        if runtime.is_main and Path(staging).exists():
            shutil.rmtree(staging)


def embed_segments(model: torch.nn.Module, state: dict[str, Any], segments: Sequence[Segment],
                   device: str | int | torch.device = "cpu", forward: dict[str, Any] | None = None) -> Predictions:
    """Embedding (1536-d) and fused-head probabilities of every step of `segments`, in memory: the
    batching path of STE_forward without its files. `model` is the encoder of checkpoint `state`
    (e.g. inference_model(model_from_checkpoint(state, path))) on `device`; `forward` overrides
    config.STE_forward_params (batch_size, num_workers, amp, progress). Nodes come in segment order."""
    if not segments:
        raise ValueError("no segments to embed")
    settings = merge_settings(config.STE_forward_params, forward)
    dataset = SegmentDataset(list(segments), Normalization.from_dict(state["normalization"]),
                             int(state["inputs"]["clip_length"]), SpectrogramParams.from_dict(state["inputs"]))
    return Predictions.concat(list(iter_predictions(
        model, dataset, settings["batch_size"], settings["num_workers"], resolve_device(device),
        bool(settings["amp"]), with_features=True, progress="embed" if settings["progress"] else None)))


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract_sessions(runtime: Runtime, model: torch.nn.Module, segments: list[Segment], norm: Normalization,
                      clip_length: int, params: SpectrogramParams, settings: dict[str, Any],
                      staging: Path) -> dict[str, Any]:
    """Embed every step of `segments` (grouped by session) and write one node file per session."""
    dataset = SegmentDataset(segments, norm, clip_length, params)
    remaining = {}
    for seg in segments:
        remaining[seg.session] = remaining.get(seg.session, 0) + seg.n_steps
    buffers: dict[int, list[Predictions]] = {s: [] for s in remaining}
    written: dict[tuple[str, int], int] = {}
    test_parts: list[tuple[list[str], np.ndarray, np.ndarray]] = []
    progress = "extract" if runtime.is_main and settings["progress"] else None
    for pred in iter_predictions(model, dataset, settings["batch_size"], settings["num_workers"],
                                 runtime.device, bool(settings["amp"]), True, progress):
        sessions_in_batch = np.array([segments[i].session for i in pred.segment_index])
        for session in np.unique(sessions_in_batch):
            mask = sessions_in_batch == session
            buffers[session].append(Predictions(pred.segment_index[mask], pred.step[mask], pred.probs[mask],
                                                pred.loss[mask], pred.features[mask]))
            remaining[session] -= int(mask.sum())
            if remaining[session] == 0:
                done = Predictions.concat(buffers.pop(session))
                split = segments[done.segment_index[0]].split
                written[(split, int(session))] = _write_session(staging, split, int(session), segments, done)
                if split == "test":
                    test_parts.append(([segments[i].segment_id for i in done.segment_index],
                                       np.array([segments[i].target for i in done.segment_index]), done.probs))
    test = None
    if test_parts:
        test = ([x for p in test_parts for x in p[0]], np.concatenate([p[1] for p in test_parts]),
                np.concatenate([p[2] for p in test_parts]))
    return {"written": written, "test": test}


def _write_session(staging: Path, split: str, session: int, segments: list[Segment], pred: Predictions) -> int:
    rows = []
    for i, step, feature in zip(pred.segment_index, pred.step, pred.features, strict=True):
        seg = segments[i]
        rows.append((seg.session, float(seg.ts[step]), seg.identity, seg.label.copy(), seg.target,
                     seg.segment_id, np.ascontiguousarray(feature, dtype=np.float32)))
    rows.sort(key=lambda r: (r[1], r[5]))
    path = staging / f"features_{split}" / f"Sess{session:02d}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return len(rows)


def _encoder_metrics(train: Sequence[Segment], test_parts: list[tuple]) -> dict[str, Any]:
    """Test metrics (segment = mean of node probabilities) beside the training-majority baseline."""
    seg_ids = [x for p in test_parts for x in p[0]]
    targets = np.concatenate([p[1] for p in test_parts]) if test_parts else np.zeros(0, int)
    probs = np.concatenate([p[2] for p in test_parts]) if test_parts else np.zeros((0, config.NUM_CLASSES))
    _, seg_targets, seg_pred, _ = util.segment_predictions(seg_ids, probs, targets)
    train_nodes = np.concatenate([np.full(s.n_steps, s.target) for s in train]) if train else np.zeros(0, int)
    train_segments = np.array([s.target for s in train], dtype=int)
    return {
        "test": {
            "segment": util.classification_metrics(seg_targets, seg_pred),
            "node": util.classification_metrics(targets, probs.argmax(axis=1)),
        },
        "baselines": {"majority": {
            "segment": util.majority_baseline(train_segments, seg_targets),
            "node": util.majority_baseline(train_nodes, targets),
        }},
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    test, majority = metrics["test"], metrics["baselines"]["majority"]
    return util.format_table([
        ("encoder segment", test["segment"]), ("encoder node", test["node"]),
        ("majority segment", majority["segment"]), ("majority node", majority["node"]),
    ], keys=("accuracy", "macro_f1", "weighted_f1", "micro_f1"))


def _manifest(ckpt_path: Path, signature: dict[str, Any], written: dict[tuple[str, int], int],
              splits: dict[str, Sequence[int]], root: Path, report: dict[str, Any], runtime: Runtime) -> dict:
    node_counts: dict[str, dict[str, int]] = {}
    for (split, session), count in sorted(written.items(), key=lambda kv: (list(splits).index(kv[0][0]), kv[0][1])):
        node_counts.setdefault(split, {})[f"Sess{session:02d}"] = count
    return {
        "encoder_checkpoint": str(Path(ckpt_path).resolve()),
        "encoder_sha256": util.file_sha256(ckpt_path),
        "clip_length": signature["clip_length"],
        "spectrogram": {k: signature[k] for k in SPECTROGRAM_KEYS},
        "feature_order": list(FEATURE_ORDER),
        "feature_dims": dict.fromkeys(FEATURE_ORDER, STREAM_DIM),
        "feature_dim": EMBEDDING_DIM,
        "splits": {name: sorted(int(s[4:]) for s in node_counts[name]) for name in splits if name in node_counts},
        "node_counts": node_counts,
        "node_columns": list(util.NODE_COLUMNS),
        "root": str(root),
        "segments": report,
        "world_size": runtime.world_size,
    }


def _publish(staging: Path, out_dir: Path, splits: dict[str, Sequence[int]], manifest: dict[str, Any],
             metrics: dict[str, Any]) -> None:
    """Swap the new split folders in, then write metrics and (last) the manifest. The old manifest
    goes first, so an interrupted swap leaves no manifest that vouches for mixed files."""
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for name in splits:
        target = out_dir / f"features_{name}"
        if target.exists():
            shutil.rmtree(target)
        if (staging / target.name).exists():
            os.replace(staging / target.name, target)
    util.write_json(metrics, out_dir / "encoder_metrics.json")
    util.write_json(manifest, out_dir / "manifest.json")

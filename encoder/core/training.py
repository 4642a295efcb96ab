"""Training of the three-stream encoder, in-process callable and torchrun-aware.

`train_encoder(...)` fits on the training sessions, validates every epoch in eval mode on every step
(or every `val_step_stride`-th step) of the validation segments, and keeps the best checkpoint by
validation segment macro-F1 (segment = mean of its nodes' softmax probabilities). Under `torchrun`
(WORLD_SIZE > 1) it uses DistributedDataParallel with a DistributedSampler; validation is sharded
over the ranks and gathered; rank 0 alone writes.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from encoder.core import config, metrics, participant, util
from encoder.core.checkpoints import (
    encoder_from_checkpoint,
    encoder_state,
    epoch_checkpoints,
    input_signature,
    load_encoder_checkpoint,
    save_torch_file,
)
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import (
    Segment,
    SegmentDataset,
    TrainClipDataset,
    TrainSegmentDataset,
    collate_segments,
    compute_normalization,
    load_segments,
)
from encoder.core.distributed import Runtime, barrier, broadcast_buffers, gather, start_runtime, stop_runtime
from encoder.core.frames import load_frames
from encoder.core.models import STEncoder
from encoder.core.participant import InputOptions
from encoder.core.prediction import HEADS, Predictions, autocast, encoder_loss, iter_predictions, node_metrics

LOG_NAME = "ste_encoder_logs.csv"
CONFIG_NAME = "ste_encoder_config.json"
LOG_COLUMNS = ("epoch", *(f"loss_{h}" for h in HEADS), "loss_total", "val_loss", "val_accuracy",
               "val_macro_f1", "val_node_accuracy", "val_node_macro_f1", "lr", "seconds", "val_seconds")

Log = Callable[[str], None]


def validate(
    runtime: Runtime, model: torch.nn.Module, segments: Sequence[Segment], norm: Normalization, clip_length: int,
    params: SpectrogramParams, settings: dict[str, Any], options: InputOptions | None = None,
) -> dict[str, Any]:
    """Eval-mode validation over a fixed node set, sharded over ranks and gathered on every rank."""
    shard = list(range(runtime.rank, len(segments), runtime.world_size))
    dataset = SegmentDataset([segments[i] for i in shard], norm, clip_length, params,
                             int(settings.get("val_step_stride", 1)), options)
    parts = list(iter_predictions(model, dataset, settings["batch_size"], settings["num_workers"],
                                  runtime.device, settings["amp"],
                                  progress="validate" if runtime.is_main and settings["progress"] else None))
    local = Predictions.concat(parts) if parts else None
    if local is not None:
        local.segment_index = np.asarray(shard)[local.segment_index]
    pred = Predictions.concat([p for p in gather(runtime, local) if p is not None])
    metrics = node_metrics(segments, pred)
    return {"loss": float(pred.loss.mean()), **metrics}


def _write_log(rows: list[dict[str, Any]], path: Path) -> None:
    with util.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


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
    inputs = util.merge_settings(config.STE_inputs, inputs)
    settings = util.merge_settings(config.STE_optimization_params, optimization)
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
    say(table.summary())
    options = InputOptions.from_inputs(inputs)
    participant.attach([*train_segs, *val_segs], params, options, clip_length)
    device = runtime.device
    amp = bool(settings["amp"]) and device.type == "cuda"
    model = STEncoder(weights=inputs.get("weights"), eda_channels=options.eda_channels,
                      audio_pass=options.audio_pass).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(settings["scheduler_T_max"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    signature = input_signature(inputs)
    start_epoch, best, rows = 1, {"epoch": 0, "val_macro_f1": -1.0}, []
    if resume:
        found = epoch_checkpoints(out_dir)
        if not found:
            raise util.DataError("--resume: no epoch checkpoint to resume from", out_dir)
        state = load_encoder_checkpoint(found[-1])
        if state["inputs"] != signature:
            raise util.DataError(f"--resume: checkpoint made with other inputs {state['inputs']}", found[-1])
        recorded = {k: [int(s) for s in v] for k, v in (state.get("splits") or {}).items()}
        if recorded != {k: [int(s) for s in v] for k, v in splits.items()}:
            raise util.DataError(f"--resume: checkpoint trained with other session splits {recorded}, not "
                                 f"{ {k: list(v) for k, v in splits.items()} }: start again without --resume",
                                 found[-1])
        model.load_state_dict(encoder_from_checkpoint(state, found[-1]).state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        norm = Normalization.from_dict(state["normalization"])
        start_epoch, best = int(state["epoch"]) + 1, dict(state["best"])
        if best["epoch"] == state["epoch"] and runtime.is_main:
            # a kill between writing the epoch checkpoint and best.pth leaves best.pth missing or one
            # epoch behind; the checkpoint itself is the best state then
            util.atomic_link(found[-1], out_dir / "best.pth")
        rows = [dict(row) for row in state["log"]]  # the log travels in the checkpoint: a kill loses no row
        say(f"resuming from {found[-1]} (epoch {state['epoch']})")
    else:
        norm = compute_normalization(train_segs, clip_length, params, options=options)
    weight = None
    if settings["class_weight"]:
        labels = np.stack([s.label for s in train_segs])
        weight = torch.from_numpy(metrics.class_weights(labels)).to(device)
    net: torch.nn.Module = model
    if runtime.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if options.segment_pass:
        train_set = TrainSegmentDataset(train_segs, norm, clip_length, params, int(settings["seed"]), options,
                                        int(settings["segment_span_steps"]))
    else:
        train_set = TrainClipDataset(train_segs, norm, clip_length, params, int(settings["seed"]), options)
    sampler = DistributedSampler(train_set, shuffle=True, seed=int(settings["seed"])) if runtime.distributed else None
    generator = torch.Generator()
    per_rank = len(train_set) // runtime.world_size
    loader = DataLoader(train_set, batch_size=settings["batch_size"], shuffle=sampler is None, sampler=sampler,
                        num_workers=settings["num_workers"], generator=generator,
                        worker_init_fn=util.loader_worker_init,
                        drop_last=per_rank > settings["batch_size"], pin_memory=device.type == "cuda",
                        collate_fn=collate_segments if options.segment_pass else None)
    record = {"inputs": {**inputs, "clip_length": clip_length}, "optimization": settings, "splits": splits,
              "normalization": norm.to_dict(), "segments": table.report(), "world_size": runtime.world_size,
              "device": str(device), "environment": util.environment(device)}
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
        broadcast_buffers(runtime, model)  # validate every shard with the statistics the checkpoint saves
        validation_started = time.time()
        val = validate(runtime, model, val_segs, norm, clip_length, params, settings, options)
        val_seconds = time.time() - validation_started
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        improved = val["segment"]["macro_f1"] > best["val_macro_f1"]
        if improved:
            best = {"epoch": epoch, "val_macro_f1": val["segment"]["macro_f1"]}
        row = {"epoch": epoch, **{f"loss_{h}": losses[h] for h in HEADS}, "loss_total": losses["total"],
               "val_loss": val["loss"], "val_accuracy": val["segment"]["accuracy"],
               "val_macro_f1": val["segment"]["macro_f1"], "val_node_accuracy": val["node"]["accuracy"],
               "val_node_macro_f1": val["node"]["macro_f1"], "lr": lr, "seconds": round(time.time() - started, 2),
               "val_seconds": round(val_seconds, 2)}
        rows.append(row)
        if runtime.is_main:
            state = encoder_state(model, norm, signature, epoch=epoch, optimizer=optimizer.state_dict(),
                                     scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), best=best,
                                     val={k: row[k] for k in LOG_COLUMNS[6:11]}, seed=int(settings["seed"]),
                                     splits={k: list(v) for k, v in splits.items()}, log=rows)
            save_torch_file(state, out_dir / f"epoch_{epoch:03d}.pth")
            if improved:  # the same state: best.pth names the epoch file instead of writing it again
                util.atomic_link(out_dir / f"epoch_{epoch:03d}.pth", out_dir / "best.pth")
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
    with util.one_blas_thread():
        for batch in tqdm(loader, desc=progress, disable=progress is None, leave=False):
            sums, seen = _train_step(net, batch, optimizer, scaler, device, amp, weight, sums, seen)
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _train_step(net: torch.nn.Module, batch: Any, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                device: torch.device, amp: bool, weight: torch.Tensor | None, sums: dict[str, float],
                seen: int) -> tuple[dict[str, float], int]:
    """One optimisation step on a batch of clips (per-clip pass) or of segments (segment pass, a dict);
    returns the running loss sums and the count of clips or segments seen."""
    pool = node_weight = None
    if isinstance(batch, dict):
        audio, eda, temp, label, pool, node_weight = (
            batch[k].to(device, non_blocking=True) for k in ("spec", "eda", "temp", "label", "pool", "weight"))
        n = len(batch["spec"])
    else:
        audio, eda, temp, label = (x.to(device, non_blocking=True) for x in batch[:4])
        n = len(label)
    if n < 2:  # BatchNorm cannot train on a single clip or segment
        return sums, seen
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        out = net(audio, eda, temp, pool)
    total, per_head = encoder_loss(out, label, weight, node_weight)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    sums["total"] += total.detach().item() * n
    for h in HEADS:
        sums[h] += per_head[h].detach().item() * n
    return sums, seen + n


def _prune(out_dir: Path, keep: int | None) -> None:
    """Keep the `keep` most recent epoch checkpoints (all when None); best.pth is never pruned."""
    if keep:
        for path in epoch_checkpoints(out_dir)[: -int(keep)]:
            path.unlink()


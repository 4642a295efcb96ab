"""Training of the multi-stream encoder (audio and the bio streams of streams.BIO_STREAMS), in-process
callable and torchrun-aware.

`train_encoder(...)` fits on the training sessions, validates every epoch in eval mode on every step
(or every `val_step_stride`-th step) of the validation segments, and keeps the best checkpoint by
validation segment macro-F1 (segment = mean of its nodes' softmax probabilities). Under `torchrun`
(WORLD_SIZE > 1) it uses DistributedDataParallel with a DistributedSampler; validation is sharded
over the ranks and gathered; rank 0 alone writes.

The learning options (`LearningOptions`, config.STE_optimization_params), each off by default (the
original training, bit for bit) until paired cross-validation runs decide otherwise:

* `clips_per_segment`: k clips (distinct steps) of every training segment per epoch instead of one:
  k times the optimiser steps per epoch from the same segments (dataset.TrainClipDataset).
* `patience`: stop after this many epochs without a better validation criterion (None: never).
* `select_on`: the validation criterion of best.pth and patience: "macro_f1" (segment macro-F1, the
  original), "loss" (the summed per-node validation loss), "macro_f1_loss" (macro-F1, ties broken by
  the lower loss: a few validation segments often give several epochs the same macro-F1) or "last"
  (every epoch replaces the one before, so best.pth is the last epoch's and patience never stops: with
  one or two validation sessions either criterion picks an early epoch by noise, docs/results.md).
* `logit_adjust_tau`: the logit-adjusted loss (Menon et al. 2021): every head's training and validation
  loss is taken on logits + tau · log(prior), prior = the training segments' class frequencies
  (prediction.training_prior). The plain logits then estimate a class-balanced posterior, so argmax
  and the segment decision suit macro-F1, and the embeddings the graph stage reads are trained for it
  too, which a post-hoc shift of the encoder's own scores would not do. 0: off.
* `spec_augment`: time and frequency masks on the training spectrograms (custom_transforms.SpecAugment).
* `vote_weight`: soft labels: the training target mixes the evaluators' vote shares into the total
  evaluation's multi-hot with this weight (dataset.training_label). Extraction writes the nodes' labels
  with the checkpoint's weight, so the GNN and the GRU train on the same targets. 0: off.

Each checkpoint records them (`learning`, with the prior), as does ste_encoder_config.json; a checkpoint
without them was trained with all off.
"""

from __future__ import annotations

import csv
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from encoder.core import config, device_spectrogram, metrics, participant, streams, util
from encoder.core.checkpoints import (
    encoder_from_checkpoint,
    encoder_state,
    epoch_checkpoints,
    input_signature,
    load_encoder_checkpoint,
    save_torch_file,
)
from encoder.core.custom_transforms import Normalization, SpecAugment, SpectrogramParams
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
from encoder.core.prediction import (
    Predictions,
    autocast,
    encoder_loss,
    iter_predictions,
    logit_offset,
    node_metrics,
    training_prior,
)

LOG_NAME = "ste_encoder_logs.csv"
CONFIG_NAME = "ste_encoder_config.json"
VAL_COLUMNS = ("val_loss", "val_accuracy", "val_macro_f1", "val_node_accuracy", "val_node_macro_f1")

Log = Callable[[str], None]
SELECT_ON = ("macro_f1", "loss", "macro_f1_loss", "last")


@dataclass(frozen=True)
class LearningOptions:
    """The learning options of one training (module docstring); the defaults are the original training."""

    clips_per_segment: int = 1
    patience: int | None = None
    select_on: str = "macro_f1"
    logit_adjust_tau: float = 0.0
    spec_augment: SpecAugment = field(default_factory=SpecAugment)
    vote_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.vote_weight <= 1.0:
            raise ValueError(f"vote_weight must be in [0, 1], not {self.vote_weight}")
        if self.select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {SELECT_ON}, not {self.select_on!r}")
        if self.clips_per_segment < 1 or (self.patience is not None and self.patience < 1):
            raise ValueError(f"clips_per_segment and patience must be at least 1 (patience None: off), not "
                             f"{self.clips_per_segment} and {self.patience}")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> LearningOptions:
        """From STE_optimization_params or a checkpoint's `learning` (a missing key: the original's)."""
        patience = settings.get("patience")
        return cls(int(settings.get("clips_per_segment", 1)), None if patience is None else int(patience),
                   str(settings.get("select_on", cls.select_on)), float(settings.get("logit_adjust_tau", 0.0)),
                   SpecAugment.from_dict(settings.get("spec_augment")), float(settings.get("vote_weight", 0.0)))

    def signature(self) -> dict[str, Any]:
        """The options as a checkpoint records them (`vote_weight` only when on, so that records written before
        it existed stay equal)."""
        return {"clips_per_segment": self.clips_per_segment, "patience": self.patience,
                "select_on": self.select_on, "logit_adjust_tau": self.logit_adjust_tau,
                "spec_augment": self.spec_augment.to_dict(),
                **({"vote_weight": self.vote_weight} if self.vote_weight else {})}

    def trains_like(self, other: LearningOptions) -> bool:
        """Whether both give the same weights epoch by epoch (patience only decides where training ends)."""
        return {**self.signature(), "patience": None} == {**other.signature(), "patience": None}


def improves(val_macro_f1: float, val_loss: float, best: dict[str, Any], select_on: str) -> bool:
    """Whether an epoch's validation beats `best` ({"val_macro_f1", "val_loss"}; an old checkpoint's best
    without val_loss: infinite) on the criterion `select_on`."""
    if select_on == "last":
        return True
    best_loss = float(best.get("val_loss", math.inf))
    if select_on == "loss":
        return val_loss < best_loss
    if select_on == "macro_f1_loss" and math.isclose(val_macro_f1, best["val_macro_f1"], rel_tol=0, abs_tol=1e-12):
        return val_loss < best_loss
    return val_macro_f1 > best["val_macro_f1"]


def patience_spent(epoch: int, best_epoch: int, patience: int | None) -> bool:
    """Whether training stops after `epoch`: `patience` epochs since the best one without a better one."""
    return patience is not None and epoch - best_epoch >= patience


def validate(
    runtime: Runtime, model: torch.nn.Module, segments: Sequence[Segment], norm: Normalization, clip_length: int,
    params: SpectrogramParams, settings: dict[str, Any], options: InputOptions | None = None,
    offset: torch.Tensor | None = None, device_spectrogram: bool = False,
) -> dict[str, Any]:
    """Eval-mode validation over a fixed node set, sharded over ranks and gathered on every rank; the
    loss with the training's logit adjustment `offset` (prediction.encoder_loss), when there is one;
    `device_spectrogram`: the spectrograms computed on the model's device (device_spectrogram.py)."""
    shard = list(range(runtime.rank, len(segments), runtime.world_size))
    dataset = SegmentDataset([segments[i] for i in shard], norm, clip_length, params,
                             int(settings.get("val_step_stride", 1)), options, device_spectrogram)
    parts = list(iter_predictions(model, dataset, settings["batch_size"], settings["num_workers"],
                                  runtime.device, settings["amp"],
                                  progress="validate" if runtime.is_main and settings["progress"] else None,
                                  offset=offset))
    local = Predictions.concat(parts) if parts else None
    if local is not None:
        local.segment_index = np.asarray(shard)[local.segment_index]
    pred = Predictions.concat([p for p in gather(runtime, local) if p is not None])
    metrics = node_metrics(segments, pred)
    return {"loss": float(pred.loss.mean()), **metrics}


def log_columns() -> tuple[str, ...]:
    """The training log's columns: a loss per head (streams.heads), the total, validation, rate and times."""
    return ("epoch", *(f"loss_{h}" for h in streams.heads()), "loss_total", *VAL_COLUMNS, "lr", "seconds",
            "val_seconds")


def _write_log(rows: list[dict[str, Any]], path: Path) -> None:
    with util.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=log_columns())
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
    learning = LearningOptions.from_settings(settings)
    table = load_segments(frames, root, splits, wanted=("train", "val"), vote_weight=learning.vote_weight)
    train_segs, val_segs = table.by_split.get("train", []), table.by_split.get("val", [])
    if not train_segs or not val_segs:
        raise util.DataError(f"no usable {'training' if not train_segs else 'validation'} segment "
                             f"(splits {dict(splits)})", root)
    say(table.summary())
    options = InputOptions.from_inputs(inputs)
    if options.contour_norm and not params.contour:
        raise ValueError("contour_norm standardises the contour rows: it needs STE_inputs['contour']")
    participant.attach([*train_segs, *val_segs], params, options, clip_length)
    device = runtime.device
    util.cuda_determinism(bool(settings["deterministic"]), device)
    amp = bool(settings["amp"]) and device.type == "cuda"
    channels_last = amp and bool(settings["channels_last"])
    placement = device_spectrogram.resolve(str(settings["spectrogram_on"]), device, params, options)
    say(placement.line())
    model = STEncoder(weights=inputs.get("weights"), bio_channels=options.bio_channels(streams.names()),
                      audio_pass=options.audio_pass, contour_channels=params.contour_rows,
                      audio_stem=options.audio_stem).to(device)
    if channels_last:  # the 2D stream in NHWC under AMP on CUDA (config.STE_optimization_params)
        model.audio.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(settings["scheduler_T_max"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    signature = input_signature(inputs)
    start_epoch, best, rows = 1, {"epoch": 0, "val_macro_f1": -1.0, "val_loss": math.inf}, []
    if resume:
        found = epoch_checkpoints(out_dir)
        if not found:
            raise util.DataError("--resume: no epoch checkpoint to resume from", out_dir)
        state = load_encoder_checkpoint(found[-1])
        if state["inputs"] != signature:
            raise util.DataError(f"--resume: checkpoint made with other inputs {state['inputs']}", found[-1])
        if not LearningOptions.from_settings(state.get("learning", {})).trains_like(learning):
            raise util.DataError(f"--resume: checkpoint trained with other learning options "
                                 f"{state.get('learning', 'all off')}", found[-1])
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
    labels = np.stack([s.label for s in train_segs])
    if settings["class_weight"]:
        weight = torch.from_numpy(metrics.class_weights(labels)).to(device)
    prior = training_prior(labels)
    offset = logit_offset(prior, learning.logit_adjust_tau)
    offset = None if offset is None else offset.to(device)
    net: torch.nn.Module = model
    if runtime.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_set = _training_set(train_segs, norm, clip_length, params, settings, options, learning,
                              placement.on_device)
    prepare = None
    if placement.on_device:
        prepare = functools.partial(device_spectrogram.segment_batch if options.segment_pass
                                    else device_spectrogram.clip_batch, norm=norm, params=params, device=device)
    sampler = DistributedSampler(train_set, shuffle=True, seed=int(settings["seed"])) if runtime.distributed else None
    generator = torch.Generator()
    per_rank = len(train_set) // runtime.world_size
    loader = DataLoader(train_set, batch_size=settings["batch_size"], shuffle=sampler is None, sampler=sampler,
                        num_workers=settings["num_workers"], generator=generator,
                        worker_init_fn=util.loader_worker_init,
                        drop_last=per_rank > settings["batch_size"], pin_memory=device.type == "cuda",
                        collate_fn=collate_segments if options.segment_pass else None)
    trained = {**learning.signature(), "prior": prior.tolist()}
    record = {"inputs": {**inputs, "clip_length": clip_length}, "optimization": settings, "learning": trained,
              "splits": splits,
              "normalization": norm.to_dict(), "segments": table.report(), "world_size": runtime.world_size,
              "device": str(device), "environment": util.environment(device), "spectrograms": placement.record(),
              "channels_last": channels_last}
    if runtime.is_main:
        util.write_json(record, out_dir / CONFIG_NAME)
    say(f"learning options: {learning.signature()}")
    epochs = int(settings["epochs"])
    for epoch in range(start_epoch, epochs + 1):
        if patience_spent(epoch - 1, best["epoch"], learning.patience):
            say(f"early stop after epoch {epoch - 1}: no better validation {learning.select_on} since epoch "
                f"{best['epoch']} (patience {learning.patience})")
            break
        started = time.time()
        train_set.set_epoch(epoch)
        generator.manual_seed(int(settings["seed"]) * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        losses = _train_one_epoch(net, loader, optimizer, scaler, device, amp, weight, offset,
                                  f"epoch {epoch}/{epochs}" if log and settings["progress"] else None,
                                  prepare, channels_last)
        broadcast_buffers(runtime, model)  # validate every shard with the statistics the checkpoint saves
        validation_started = time.time()
        val = validate(runtime, model, val_segs, norm, clip_length, params, settings, options, offset,
                       placement.on_device)
        val_seconds = time.time() - validation_started
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        improved = improves(val["segment"]["macro_f1"], val["loss"], best, learning.select_on)
        if improved:
            best = {"epoch": epoch, "val_macro_f1": val["segment"]["macro_f1"], "val_loss": val["loss"]}
        row = {"epoch": epoch, **{f"loss_{h}": losses[h] for h in streams.heads()}, "loss_total": losses["total"],
               "val_loss": val["loss"], "val_accuracy": val["segment"]["accuracy"],
               "val_macro_f1": val["segment"]["macro_f1"], "val_node_accuracy": val["node"]["accuracy"],
               "val_node_macro_f1": val["node"]["macro_f1"], "lr": lr, "seconds": round(time.time() - started, 2),
               "val_seconds": round(val_seconds, 2)}
        rows.append(row)
        if runtime.is_main:
            state = encoder_state(model, norm, signature, epoch=epoch, optimizer=optimizer.state_dict(),
                                     scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), best=best,
                                     val={k: row[k] for k in VAL_COLUMNS}, seed=int(settings["seed"]),
                                     splits={k: list(v) for k, v in splits.items()}, log=rows, learning=trained)
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
            "best_val_loss": best.get("val_loss", math.inf), "best_checkpoint": out_dir / "best.pth",
            "log": out_dir / LOG_NAME, "epochs": rows,
            "segments": table.report(), "rank": runtime.rank}


def _train_one_epoch(net: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, device: torch.device, amp: bool,
                     weight: torch.Tensor | None, offset: torch.Tensor | None,
                     progress: str | None = None, prepare: Callable[[Any], Any] | None = None,
                     channels_last: bool = False) -> dict[str, float]:
    """One epoch over `loader`; `prepare` turns each batch into the training step's (the spectrograms of a
    device-path batch, device_spectrogram.clip_batch / segment_batch); `channels_last`: the audio input in
    NHWC (the model's audio stream already is)."""
    net.train()
    sums = dict.fromkeys((*streams.heads(), "total"), 0.0)
    seen = 0
    with util.one_blas_thread():
        for batch in tqdm(loader, desc=progress, disable=progress is None, leave=False):
            sums, seen = _train_step(net, batch if prepare is None else prepare(batch), optimizer, scaler, device,
                                     amp, weight, offset, sums, seen, channels_last)
    return {k: v / max(seen, 1) for k, v in sums.items()}


def _train_step(net: torch.nn.Module, batch: Any, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                device: torch.device, amp: bool, weight: torch.Tensor | None, offset: torch.Tensor | None,
                sums: dict[str, float], seen: int, channels_last: bool = False) -> tuple[dict[str, float], int]:
    """One optimisation step on a batch of clips (per-clip pass) or of segments (segment pass, a dict);
    returns the running loss sums and the count of clips or segments seen. `channels_last`: the audio
    input in NHWC memory order (for a model whose audio stream is channels-last)."""
    pool = node_weight = None
    if isinstance(batch, dict):
        audio, label, pool, node_weight = (batch[k].to(device, non_blocking=True)
                                           for k in ("spec", "label", "pool", "weight"))
        bio, n = batch["bio"], len(batch["spec"])
    else:
        audio, bio, label = batch[0].to(device, non_blocking=True), batch[1], batch[2].to(device, non_blocking=True)
        n = len(label)
    bio = {name: clips.to(device, non_blocking=True) for name, clips in bio.items()}
    if n < 2:  # BatchNorm cannot train on a single clip or segment
        return sums, seen
    if channels_last:
        audio = audio.contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        out = net(audio, bio, pool)
    total, per_head = encoder_loss(out, label, weight, node_weight, offset)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    sums["total"] += total.detach().item() * n
    for h, loss in per_head.items():
        sums[h] += loss.detach().item() * n
    return sums, seen + n


def _training_set(segments: Sequence[Segment], norm: Normalization, clip_length: int, params: SpectrogramParams,
                  settings: dict[str, Any], options: InputOptions, learning: LearningOptions,
                  device_spectrogram: bool = False) -> TrainClipDataset | TrainSegmentDataset:
    """The epoch's training items: clips (per-clip audio pass) or spans of nodes (segment pass); with
    `device_spectrogram` their wav spans, for device_spectrogram.clip_batch / segment_batch."""
    seed = int(settings["seed"])
    if options.segment_pass:
        return TrainSegmentDataset(segments, norm, clip_length, params, seed, options,
                                   int(settings["segment_span_steps"]), learning.clips_per_segment,
                                   learning.spec_augment, device_spectrogram)
    return TrainClipDataset(segments, norm, clip_length, params, seed, options, learning.clips_per_segment,
                            learning.spec_augment, device_spectrogram, bool(settings.get("cache_spectrograms")))


def _prune(out_dir: Path, keep: int | None) -> None:
    """Keep the `keep` most recent epoch checkpoints (all when None); best.pth is never pruned."""
    if keep:
        for path in epoch_checkpoints(out_dir)[: -int(keep)]:
            path.unlink()


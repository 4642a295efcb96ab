"""The encoder's loss and its batched prediction: every 4 Hz step of a set of segments through the
model in eval mode, one spectrogram per segment, with fused-head probabilities, per-node loss and
(optionally) the 1536-d embedding. Validation, feature extraction and predict.py all use it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from torch.utils.data import DataLoader
from tqdm import tqdm

from encoder.core import config, device_spectrogram, metrics, participant, util
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.dataset import (
    CausalSegmentDataset,
    NodeBatch,
    Segment,
    SegmentDataset,
    make_dataset,
    node_batches,
    take_nodes,
)
from encoder.core.distributed import resolve_device
from encoder.core.models import EncoderOutput, segment_audio_map, window_vectors
from encoder.core.participant import InputOptions


def training_prior(labels: np.ndarray) -> np.ndarray:
    """The training segments' class frequencies: each class's summed label mass over `labels` (n, 7),
    normalised multi-hots, add-one smoothed so that a class absent from training keeps a finite log."""
    mass = np.asarray(labels, dtype=np.float64).reshape(-1, config.NUM_CLASSES).sum(axis=0) + 1.0
    return mass / mass.sum()


def logit_offset(prior: np.ndarray, tau: float) -> torch.Tensor | None:
    """tau · log(prior) (7,), the logit adjustment of Menon et al. 2021; None when tau is 0 (off)."""
    if not tau:
        return None
    return torch.from_numpy(float(tau) * np.log(np.asarray(prior, dtype=np.float64))).float()


def encoder_loss(
    output: EncoderOutput, label: torch.Tensor, class_weight: torch.Tensor | None = None,
    node_weight: torch.Tensor | None = None, offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of the heads' cross-entropies (audio, each bio stream, fused: streams.heads), taken on logits against the
    normalised multi-hot `label` (B, 7). Returns (total, per-head losses): the mean over the B rows, or with
    `node_weight` (B,), summing to 1, their weighted sum. `offset` (7,) is added to every head's logits first: the
    logit-adjusted loss (logit_offset), whose model's plain logits then estimate a balanced posterior."""
    reduction = "mean" if node_weight is None else "none"
    per_head = {}
    for name, logits in output.logits.items():
        loss = functional.cross_entropy(adjusted(logits, offset), label, weight=class_weight, reduction=reduction)
        per_head[name] = loss if node_weight is None else (loss * node_weight).sum()
    return sum(per_head.values()), per_head


def adjusted(logits: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """float32 `logits`, plus `offset` when given (logit adjustment)."""
    logits = logits.float()
    return logits if offset is None else logits + offset.to(logits.device)


@dataclass
class Predictions:
    """Per node, in segment order: its segment's index, its step, fused-head probabilities, the
    summed loss of every head against its segment's label, and (optionally) its embedding (1536-d: audio |
    EDA | TEMP)."""

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


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """float16 autocast on CUDA when `amp`, a no-op elsewhere."""
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
    offset: torch.Tensor | None = None,
) -> Iterator[Predictions]:
    """Yield a Predictions per batch of nodes over `dataset`, model in eval mode, one spectrogram
    per segment (with the segment audio pass, not causal: segment_node_batches). The caller restores
    train mode if it needs it. `offset`: the training's logit adjustment, added to the logits of the
    loss only (validation measures the objective it trains); the probabilities come from the plain logits.
    A dataset with `device_spectrogram` gives wav spans, whose spectrograms are computed on `device` about a
    batch of nodes at a time (device_spectrogram.spectrogram_items)."""
    model.eval()
    loader: Iterable[dict[str, Any]] = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                                  worker_init_fn=util.loader_worker_init)
    if getattr(dataset, "device_spectrogram", False):
        loader = device_spectrogram.spectrogram_items(loader, dataset.norm, dataset.params, device, batch_size)
    labels = torch.from_numpy(np.stack([s.label for s in dataset.segments])) if dataset.segments else None
    total = sum(len(dataset.steps(i)) for i in range(len(dataset)))
    bar = tqdm(total=total, desc=progress, unit="node", disable=progress is None, leave=False)
    with torch.inference_mode(), bar, util.one_blas_thread():
        if dataset.options.segment_pass and not isinstance(dataset, CausalSegmentDataset):
            for batch, vectors in segment_node_batches(model, loader, dataset, batch_size, device, amp):
                with autocast(device, amp):
                    out = model.from_vectors(vectors, batch.bio)
                label = labels[torch.from_numpy(batch.segment_index)].to(device)
                yield _predictions(out, label, batch.segment_index, batch.step, with_features, offset)
                bar.update(len(batch.step))
            return
        for batch in node_batches(loader, batch_size, dataset.clip_length, dataset.params, device):
            with autocast(device, amp):
                out = model(batch.audio.to(device), {name: x.to(device) for name, x in batch.bio.items()})
            label = labels[torch.from_numpy(batch.segment_index)].to(device)
            yield _predictions(out, label, batch.segment_index, batch.step, with_features, offset)
            bar.update(len(batch.step))


def segment_node_batches(model: torch.nn.Module, items: Iterable[dict[str, Any]], dataset: SegmentDataset,
                         batch_size: int, device: torch.device, amp: bool) -> Iterator[tuple[NodeBatch, torch.Tensor]]:
    """The segment audio pass over SegmentDataset items: per segment the trunk once over its spectrogram
    (models.segment_audio_map, chunked as the options say) and each node's audio vector averaged over its
    clip window; the nodes of consecutive segments packed into batches of `batch_size` (the last smaller)
    as (NodeBatch without audio, their (n, 512) audio vectors), for the bio streams and the heads."""
    options = dataset.options
    width = dataset.params.clip_frames(dataset.clip_length)
    parts: list[NodeBatch] = []
    pending = 0
    for item in items:
        with autocast(device, amp):
            positions = segment_audio_map(model, item["spec"].to(device)[None, None], options.segment_chunk_frames,
                                          options.segment_context_frames)
            vectors = window_vectors(positions, item["offsets"], width)
        n = len(item["steps"])
        parts.append(NodeBatch(vectors, {name: x.to(device) for name, x in item["bio"].items()},
                               np.full(n, int(item["index"])), item["steps"].numpy()))
        pending += n
        while pending >= batch_size:
            yield _as_vectors(take_nodes(parts, batch_size))
            pending -= batch_size
    if pending:
        yield _as_vectors(take_nodes(parts, pending))


def _as_vectors(batch: NodeBatch) -> tuple[NodeBatch, torch.Tensor]:
    """dataset.take_nodes stacks the parts' `audio`: here the nodes' audio vectors."""
    return NodeBatch(torch.empty(0), batch.bio, batch.segment_index, batch.step), batch.audio


def _predictions(out: EncoderOutput, label: torch.Tensor, index: np.ndarray, steps: np.ndarray,
                 with_features: bool, offset: torch.Tensor | None = None) -> Predictions:
    loss = sum(functional.cross_entropy(adjusted(logits, offset), label, reduction="none")
               for logits in out.logits.values())
    return Predictions(index, steps, torch.softmax(out.fused.float(), dim=1).cpu().numpy(), loss.cpu().numpy(),
                       out.embedding.float().cpu().numpy() if with_features else None)


def node_metrics(segments: Sequence[Segment], pred: Predictions) -> dict[str, Any]:
    """Node and segment metrics (metrics.classification_metrics) of `pred` over `segments`."""
    seg_ids = [segments[i].segment_id for i in pred.segment_index]
    targets = np.array([segments[i].target for i in pred.segment_index], dtype=int)
    _, seg_targets, seg_pred, _ = metrics.segment_predictions(seg_ids, pred.probs, targets)
    return {
        "segment": metrics.classification_metrics(seg_targets, seg_pred),
        "node": metrics.classification_metrics(targets, pred.probs.argmax(axis=1)),
    }



def embed_segments(model: torch.nn.Module, state: dict[str, Any], segments: Sequence[Segment],
                   device: str | int | torch.device = "cpu", forward: dict[str, Any] | None = None,
                   causal: bool = False) -> Predictions:
    """Embedding (1536-d with EDA and TEMP) and fused-head probabilities of every step of `segments`, in memory: the
    batching path of STE_forward without its files. `model` is the encoder of checkpoint `state`
    (e.g. inference_model(model_from_checkpoint(state, path))) on `device`; `forward` overrides
    config.STE_forward_params (batch_size, num_workers, amp, progress). Nodes come in segment order.
    With the checkpoint's participant options on, each participant's statistics come from its segments
    among `segments` (participant.attach), or with `causal` from what has arrived by each node's clip end
    (dataset.CausalSegmentDataset: the inputs of predict.py --online)."""
    if not segments:
        raise ValueError("no segments to embed")
    settings = util.merge_settings(config.STE_forward_params, forward)
    params = SpectrogramParams.from_dict(state["inputs"])
    options = InputOptions.from_inputs(state["inputs"])
    clip_length = int(state["inputs"]["clip_length"])
    if not causal:
        participant.attach(segments, params, options, clip_length)
    device = resolve_device(device)
    util.cuda_determinism(bool(settings["deterministic"]), device)
    placement = device_spectrogram.resolve(settings["spectrogram_on"], device, params, options, causal)
    dataset = make_dataset(list(segments), Normalization.from_dict(state["normalization"]), clip_length, params,
                           options, causal, placement.on_device)
    return Predictions.concat(list(iter_predictions(
        model, dataset, settings["batch_size"], settings["num_workers"], device,
        bool(settings["amp"]), with_features=True, progress="embed" if settings["progress"] else None)))



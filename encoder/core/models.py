"""The multi-stream encoder (the original's three-stream architecture, kept): a 2D ResNet18 over the clip's
log-mel spectrogram and a 1D ResNet18 over the clip's values of each bio stream (EDA and TEMP:
streams.BIO_STREAMS), with per-stream auxiliary heads and a fused head.

Node embedding = the 512-d pooled vectors concatenated in the order audio | EDA | TEMP (streams.feature_order),
1536 values. All heads return logits; the loss applies the softmax itself. The bio trunks and heads are kept
by stream name (`bio.eda`, `bio_heads.eda`); checkpoints.py reads the state dicts of the encoder that named
them `eda`, `eda_head`, ...

The audio stream runs in one of two passes (`audio_pass`, config.STE_inputs): "clip", the original's,
where each node's 2.75 s clip goes through the whole ResNet18 and is average-pooled; or "segment", where
the ResNet18's trunk runs once over a segment's whole spectrogram (`segment_audio_map`) and each node's
vector is the trunk output averaged over the node's clip window (`window_pool`), so that every second of
audio is encoded once rather than once per overlapping clip. A clip given to a segment-pass model is
pooled the same way over its own width, so the per-clip path (causal, online) and the segment path share
one definition of a node's audio vector.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from encoder.core import config, streams, util

STREAM_DIM = 512
HEAD_DIM = 128
AUDIO_PASSES = ("segment", "clip")
# The audio ResNet18's stem: "resnet", torchvision's 7x7 convolution and 3x3 max-pool, each of stride 2 on both axes
# (the mel axis a quarter after the stem); "keep_freq", the same layers with stride 2 on the time axis only, so
# that the first residual stage sees every mel band (a pitch or formant shift of one band stays a shift of one row),
# at about four times the stream's compute. Strides only: the weights have the same shapes either way.
AUDIO_STEMS = ("resnet", "keep_freq")
TRUNK_STRIDE = 32  # spectrogram frames per position of the ResNet18 trunk's output (stride 2 five times)


class EncoderOutput(NamedTuple):
    logits: dict[str, torch.Tensor]  # (B, 7) logits per head (streams.heads: audio, each bio stream, fused)
    embedding: torch.Tensor  # (B, 512 · streams) pooled vectors, audio | EDA | TEMP

    @property
    def fused(self) -> torch.Tensor:
        return self.logits[streams.FUSED]


class BasicBlock1d(nn.Module):
    """torchvision's BasicBlock with 1-D convolutions (kernel 3)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv1d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm1d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet1d(nn.Module):
    """ResNet18 layout ([2, 2, 2, 2] BasicBlock1d) over a (B, 1, L) series; returns (B, 512)."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        channels_in = 64
        for i, (channels, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            for j in range(n_blocks):
                blocks.append(BasicBlock1d(channels_in, channels, 2 if (i > 0 and j == 0) else 1))
                channels_in = channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x))).flatten(1)


def audio_resnet18(weights: Path | str | None = None, stem: str = "resnet") -> nn.Module:
    """torchvision ResNet18 with a one-channel stem and no classifier: (B, 1, mels, frames) → (B, 512).
    `weights`: an optional local ResNet18 state dict (3-channel stem weights are summed to one
    channel; `fc.*` is ignored). Nothing is ever downloaded. `stem`: one of AUDIO_STEMS."""
    if stem not in AUDIO_STEMS:
        raise ValueError(f"audio_stem must be one of {AUDIO_STEMS}, not {stem!r}")
    stride = 2 if stem == "resnet" else (1, 2)  # (mel, time)
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=stride, padding=3, bias=False)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=stride, padding=1)
    net.fc = nn.Identity()
    if weights is not None:
        path = Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise util.DataError(f"cannot read ResNet18 weights ({err})", path) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        stem = state.get("conv1.weight")
        if isinstance(stem, torch.Tensor) and stem.ndim == 4 and stem.shape[1] == 3:
            state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[1].strip() if "\n" in str(err) else str(err)
            raise util.DataError(f"not ResNet18 weights: {first}", path) from None
    return net


class AudioTrunk(nn.Module):
    """The audio ResNet18 without its pooling: (B, 1, mels, frames) → (B, 512, frames / 32), the last
    block's output averaged over the mel axis. It holds the ResNet's own layers (no copy)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x)))).mean(dim=2)


def window_pool(offsets: torch.Tensor, width: int, positions: int, stride: int = TRUNK_STRIDE) -> torch.Tensor:
    """(n, positions) weights that average a trunk output over each node's window [offset, offset + width)
    of spectrogram frames: position t covers frames [t·stride, (t + 1)·stride), weighted by its overlap
    with the window; each row sums to 1 (the window lies within the positions' frames)."""
    starts = offsets.to(torch.float64)[:, None]
    bins = torch.arange(positions, dtype=torch.float64, device=offsets.device)[None, :] * stride
    overlap = (torch.minimum(starts + width, bins + stride) - torch.maximum(starts, bins)).clamp(min=0)
    return (overlap / overlap.sum(dim=1, keepdim=True)).to(torch.float32)


def window_vectors(positions: torch.Tensor, offsets: torch.Tensor, width: int) -> torch.Tensor:
    """(n, 512) audio vectors of the nodes at frame `offsets` of one segment: its trunk output `positions`
    (512, P) averaged over each node's window of `width` frames (window_pool)."""
    weights = window_pool(offsets.to(positions.device), width, positions.shape[1])
    return weights.to(positions.dtype) @ positions.T


class Head(nn.Module):
    """512-d pooled vector → FC 128 → ReLU (kept for the fused head) → 7 auxiliary logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(STREAM_DIM, HEAD_DIM)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Linear(HEAD_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.relu(self.fc(x))
        return hidden, self.out(hidden)


class STEncoder(nn.Module):
    """The audio stream and one 1-D stream per bio stream, an auxiliary head each and a fused head over their
    concatenated 128-d vectors. `bio_channels`: the bio streams in embedding order with the input channels of
    each (EDA 4 with the EDA components, participant.InputOptions.bio_channels); None: every stream of
    streams.BIO_STREAMS with one channel;
    `audio_pass`: "clip" or "segment" (module docstring); the weights are the same in both.
    `contour_channels`: the last rows of an audio clip that are prosodic contours (encoder/core/contours.py),
    read by a 1-D ResNet18 (`contour`) whose vector is added to the 2-D ResNet18's over the mel rows; the
    audio vector stays 512-d. 0: none (the original's stream). Per-clip pass only.
    `audio_stem`: the audio ResNet18's stem, one of AUDIO_STEMS."""

    def __init__(self, num_classes: int = config.NUM_CLASSES, weights: Path | str | None = None,
                 bio_channels: Mapping[str, int] | None = None, audio_pass: str = "clip", contour_channels: int = 0,
                 audio_stem: str = "resnet"):
        super().__init__()
        if audio_pass not in AUDIO_PASSES:
            raise ValueError(f"audio_pass must be one of {AUDIO_PASSES}, not {audio_pass!r}")
        if contour_channels and audio_pass != "clip":
            raise ValueError("contour rows need the per-clip audio pass (audio_pass 'clip')")
        self.audio_pass = audio_pass
        self.contour_channels = int(contour_channels)
        self.audio = audio_resnet18(weights, audio_stem)
        if self.contour_channels:
            self.contour = ResNet1d(in_channels=self.contour_channels)
        channels = dict.fromkeys(streams.names(), 1) if bio_channels is None else dict(bio_channels)
        self.bio = nn.ModuleDict({name: ResNet1d(in_channels=n) for name, n in channels.items()})
        self.audio_head = Head(num_classes)
        self.bio_heads = nn.ModuleDict({name: Head(num_classes) for name in channels})
        self.fused = nn.Linear(HEAD_DIM * (1 + len(channels)), num_classes)

    @property
    def feature_order(self) -> tuple[str, ...]:
        """The blocks of its embedding: audio, then its bio streams."""
        return streams.feature_order(self.bio)

    def trunk(self) -> nn.Module:
        """The audio trunk (AudioTrunk over this model's ResNet18, or its folded copy in an inference model)."""
        folded = getattr(self, "folded_trunk", None)
        return folded if folded is not None else AudioTrunk(self.audio)

    def forward(self, audio: torch.Tensor, bio: Mapping[str, torch.Tensor],
                pool: torch.Tensor | None = None) -> EncoderOutput:
        """`bio`: per bio stream its clips (N, channels, L), L the bio clip length, of N nodes; audio either N
        clips (N, 1, n_mels, clip frames) or, with `pool` (N, B · positions), B segment spectrograms
        (B, 1, n_mels, frames) whose trunk outputs `pool` averages into the N nodes' vectors."""
        if pool is not None:
            positions = self.trunk()(audio)  # (B, 512, P)
            vectors = pool @ positions.permute(0, 2, 1).reshape(-1, STREAM_DIM)
        else:
            vectors = self.clip_vectors(audio)
        return self.from_vectors(vectors, bio)

    def clip_vectors(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, 512) audio vectors of N clips: the ResNet's average pool ("clip"), or the trunk output
        averaged over the clip's own width as window_pool weighs it ("segment")."""
        if self.contour_channels:
            rows = clips.shape[2] - self.contour_channels
            return self.audio(clips[:, :, :rows]) + self.contour(clips[:, 0, rows:])
        if self.audio_pass == "clip":
            return self.audio(clips)
        positions = self.trunk()(clips)
        weights = window_pool(torch.zeros(1, device=clips.device), clips.shape[-1], positions.shape[-1])
        return (positions * weights.to(positions.dtype)[:, None, :]).sum(dim=2)

    def from_vectors(self, audio: torch.Tensor, bio: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """The heads over given (N, 512) audio vectors and the bio streams' clips of the N nodes."""
        pooled = {streams.AUDIO: audio, **{name: trunk(bio[name]) for name, trunk in self.bio.items()}}
        heads = {streams.AUDIO: self.audio_head, **self.bio_heads}
        hidden, logits = {}, {}
        for name, x in pooled.items():
            hidden[name], logits[name] = heads[name](x)
        logits[streams.FUSED] = self.fused(torch.cat(list(hidden.values()), dim=1))
        return EncoderOutput(logits, torch.cat(list(pooled.values()), dim=1))


def segment_audio_map(model: STEncoder, spec: torch.Tensor, chunk_frames: int, context_frames: int) -> torch.Tensor:
    """(512, positions) trunk output of one segment's spectrogram `spec` (1, 1, n_mels, frames). A segment
    longer than `chunk_frames` runs in chunks whose cores tile it, each with `context_frames` of real
    spectrogram either side where the segment has them (both multiples of TRUNK_STRIDE), so a position's
    value never depends on where a chunk boundary fell beyond its context, and the segment's own two ends
    are padded the same way whether it was chunked or not."""
    frames = spec.shape[-1]
    if frames <= chunk_frames:
        return model.trunk()(spec)[0]
    core = chunk_frames - 2 * context_frames
    if core <= 0 or core % TRUNK_STRIDE or context_frames % TRUNK_STRIDE:
        raise ValueError(f"chunk {chunk_frames} and context {context_frames} frames must leave a core that is a "
                         f"positive multiple of {TRUNK_STRIDE}")
    parts = []
    for start in range(0, frames, core):
        lo = max(start - context_frames, 0)
        out = model.trunk()(spec[..., lo : min(start + core + context_frames, frames)])[0]
        first = (start - lo) // TRUNK_STRIDE
        parts.append(out[:, first : first + core // TRUNK_STRIDE])
    return torch.cat(parts, dim=1)


def inference_model(model: STEncoder) -> STEncoder:
    """A copy of `model` for feature extraction: each stream (and the audio trunk the segment pass runs)
    with BatchNorm folded into its convolutions (eval statistics) and channels-last weights; same outputs
    up to float rounding, about twice as fast on CPU."""
    from torch.fx.experimental.optimization import fuse

    copied = copy.deepcopy(model).eval()
    trunk = fuse(AudioTrunk(copied.audio).eval()).to(memory_format=torch.channels_last).eval()
    for name in ("audio", *(("contour",) if model.contour_channels else ())):
        setattr(copied, name, fuse(getattr(copied, name)).to(memory_format=torch.channels_last).eval())
    for name, stream in copied.bio.items():
        copied.bio[name] = fuse(stream).to(memory_format=torch.channels_last).eval()
    copied.folded_trunk = trunk
    return copied.eval()

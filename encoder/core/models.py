"""The three-stream encoder (the original's architecture, kept): a 2D ResNet18 over the clip's log-mel
spectrogram and two 1D ResNet18s over the clip's EDA and TEMP values, with per-stream auxiliary heads and a fused head.

Node embedding = the three 512-d pooled vectors concatenated in the order audio | EDA | TEMP
(`FEATURE_ORDER`), 1536 values. All heads return logits; the loss applies the softmax itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from encoder.core import config, util

FEATURE_ORDER = ("audio", "eda", "temp")
STREAM_DIM = 512
HEAD_DIM = 128
EMBEDDING_DIM = STREAM_DIM * len(FEATURE_ORDER)


class EncoderOutput(NamedTuple):
    audio: torch.Tensor  # (B, 7) logits of the auxiliary audio head
    eda: torch.Tensor
    temp: torch.Tensor
    fused: torch.Tensor  # (B, 7) logits of the fused head
    embedding: torch.Tensor  # (B, 1536) pooled vectors, audio | EDA | TEMP


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


def audio_resnet18(weights: Path | str | None = None) -> nn.Module:
    """torchvision ResNet18 with a one-channel stem and no classifier: (B, 1, mels, frames) → (B, 512).
    `weights`: an optional local ResNet18 state dict (3-channel stem weights are summed to one
    channel; `fc.*` is ignored). Nothing is ever downloaded."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
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
    """Three streams, three auxiliary heads and a fused head over the concatenated 3 × 128 vectors.
    `eda_channels`: input channels of the EDA stream (4 with the EDA components, encoder/core/participant.py)."""

    def __init__(self, num_classes: int = config.NUM_CLASSES, weights: Path | str | None = None,
                 eda_channels: int = 1):
        super().__init__()
        self.audio = audio_resnet18(weights)
        self.eda = ResNet1d(in_channels=eda_channels)
        self.temp = ResNet1d()
        self.audio_head = Head(num_classes)
        self.eda_head = Head(num_classes)
        self.temp_head = Head(num_classes)
        self.fused = nn.Linear(HEAD_DIM * len(FEATURE_ORDER), num_classes)

    def forward(self, audio: torch.Tensor, eda: torch.Tensor, temp: torch.Tensor) -> EncoderOutput:
        """audio (B, 1, n_mels, frames), eda (B, eda_channels, L) and temp (B, 1, L), L the bio clip length."""
        pooled = [self.audio(audio), self.eda(eda), self.temp(temp)]
        heads = [self.audio_head, self.eda_head, self.temp_head]
        hidden, logits = zip(*(head(x) for head, x in zip(heads, pooled, strict=True)), strict=True)
        fused = self.fused(torch.cat(hidden, dim=1))
        return EncoderOutput(*logits, fused, torch.cat(pooled, dim=1))


def inference_model(model: STEncoder) -> nn.Module:
    """A copy of `model` for feature extraction: BatchNorm folded into the convolutions (eval
    statistics) and channels-last weights; same outputs up to float rounding, about twice as fast on CPU."""
    from torch.fx.experimental.optimization import fuse

    fused = fuse(copy.deepcopy(model).eval())
    return fused.to(memory_format=torch.channels_last).eval()


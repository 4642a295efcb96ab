"""Test-only torchrun entry for tests/test_encoder_ddp.py: runs encoder/STE_train.py's main() unchanged and
saves, per rank, what the test compares against a one-process reference to RECORD_DIR/rank<R>.pt:

* `initial`: the encoder's state right after it is built (before DistributedDataParallel wraps it);
* `final`: its state after training (parameters and BatchNorm buffers);
* `drawn`: the (epoch, segment index) of every training clip this rank loaded, in load order.

    torchrun --standalone --nproc_per_node=2 tests/ddp_record_training.py RECORD_DIR <STE_train.py arguments>

The encoder and training-clip classes are wrapped (recording only, same behaviour) in encoder.core.training.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from encoder import STE_train
from encoder.core import training
from encoder.core.dataset import TrainClipDataset
from encoder.core.models import STEncoder


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class RecordedEncoder(STEncoder):
    built: list[RecordedEncoder] = []

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.initial = snapshot(self)
        RecordedEncoder.built.append(self)


class RecordedClips(TrainClipDataset):
    drawn: list[tuple[int, int]] = []

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        RecordedClips.drawn.append((self.epoch, int(index)))
        return super().__getitem__(index)


def main() -> None:
    record_dir = Path(sys.argv[1])
    sys.argv = ["STE_train.py", *sys.argv[2:]]
    training.STEncoder = RecordedEncoder
    training.TrainClipDataset = RecordedClips
    STE_train.main()
    (model,) = RecordedEncoder.built
    record_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"initial": model.initial, "final": snapshot(model), "drawn": RecordedClips.drawn},
               record_dir / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()

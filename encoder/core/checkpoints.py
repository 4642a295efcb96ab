"""Checkpoints: the one loader of torch files with its errors, the state-dict shape check, and the
encoder's checkpoint format (weights, the inputs they expect, the training-session normalisation).

Every torch file the project reads (encoder and GNN checkpoints, graph files) goes through
`read_torch_file`, so a missing, truncated or foreign file always ends in the same one-line
util.DataError naming the file."""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoder.core import config, streams, util
from encoder.core.custom_transforms import Normalization, SpectrogramParams
from encoder.core.models import STEncoder
from encoder.core.participant import InputOptions

ENCODER_FORMAT = "ste_encoder/1"
# What torch.load(weights_only=True) raises for a file that is not a torch file: unreadable, empty,
# truncated, not a zip archive, or a (legacy) pickle stream cut or corrupted anywhere (seen when
# loading every prefix of a checkpoint and random bytes: the last four come from the unpickler).
_UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError,
               struct.error, LookupError)


def save_torch_file(state: Any, path: Path) -> None:
    """torch.save, atomically (a temporary name renamed into place)."""
    with util.atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_torch_file(path: Path, what: str, fmt: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A dict saved with torch.save, loaded with weights_only=True. `what` names the expected kind with
    its article ("an encoder checkpoint"). Missing, unreadable, not a dict, or (when `fmt` is given)
    without `"format": fmt` → util.DataError naming the file and what it should have been."""
    path = Path(path)
    if not path.is_file():
        raise util.DataError(f"file not found (expected {what})", path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except _UNREADABLE as err:
        raise util.DataError(f"unreadable, not {what} ({type(err).__name__})", path) from None
    if not isinstance(state, dict):
        raise util.DataError(f"not {what} (holds a {type(state).__name__}, not a dict)", path)
    if fmt is not None and state.get("format") != fmt:
        raise util.DataError(f"not {what} (format {state.get('format')!r}, expected {fmt!r})", path)
    return state


def load_state_dict(model: nn.Module, stored: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Load `stored` into `model` (described as `what`, e.g. "encoder") after checking every key and
    shape; the first mismatch is a util.DataError naming the file, the parameter and both shapes."""
    expected = model.state_dict()
    for key in sorted(set(expected) | set(stored)):
        mine = tuple(expected[key].shape) if key in expected else "absent"
        theirs = tuple(stored[key].shape) if key in stored else "absent"
        if mine != theirs:
            raise util.DataError(f"checkpoint of another model shape: {key} is {theirs} in the checkpoint, "
                                 f"{mine} in the {what}", path)
    model.load_state_dict(stored, strict=True)


def input_signature(inputs: dict[str, Any]) -> dict[str, Any]:
    """What an encoder checkpoint's features depend on: clip length, spectrogram parameters and the
    input options (participant.InputOptions: bio clip length, participant normalisation, EDA components)."""
    spec = SpectrogramParams.from_dict(inputs).to_dict()
    return {"clip_length": int(inputs["clip_length"]), **spec, **InputOptions.from_inputs(inputs).signature()}


def encoder_state(model: STEncoder, norm: Normalization, signature: dict[str, Any], epoch: int = 0,
                  **extra: Any) -> dict[str, Any]:
    """What an encoder checkpoint holds: weights, the inputs they expect (clip length, spectrogram), the
    training-session normalisation, plus `extra` (optimizer, scheduler, best, splits, log, ...)."""
    return {"format": ENCODER_FORMAT, "epoch": epoch, "model": model.state_dict(), "inputs": signature,
            "normalization": norm.to_dict(), "num_classes": config.NUM_CLASSES,
            "feature_order": list(model.feature_order), **extra}


def load_encoder_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by the encoder's training; anything else raises util.DataError naming the file."""
    return read_torch_file(path, "an encoder checkpoint", ENCODER_FORMAT)


def encoder_from_checkpoint(state: dict[str, Any], path: Path) -> STEncoder:
    """Build the encoder of the checkpoint's bio streams (those its normalisation holds) and load its weights;
    a stream streams.BIO_STREAMS does not list, or another model shape → util.DataError."""
    options = InputOptions.from_inputs(state["inputs"])
    bio = list(Normalization.from_dict(state["normalization"]).bio)
    unknown = [name for name in bio if name not in streams.names()]
    if unknown:
        raise util.DataError(f"encoder of bio stream {unknown[0]!r}, which encoder/core/streams.py BIO_STREAMS does "
                             f"not list ({', '.join(streams.names())})", path)
    model = STEncoder(num_classes=int(state.get("num_classes", config.NUM_CLASSES)),
                      bio_channels=options.bio_channels(bio), audio_pass=options.audio_pass,
                      contour_channels=SpectrogramParams.from_dict(state["inputs"]).contour_rows,
                      audio_stem=options.audio_stem)
    load_state_dict(model, stream_keys(state["model"], bio), path, "encoder")
    return model


def stream_keys(stored: Mapping[str, torch.Tensor], bio: list[str]) -> dict[str, torch.Tensor]:
    """`stored` with the bio streams' parameters under the names STEncoder keeps them by (`bio.eda.*`,
    `bio_heads.eda.*`): an encoder saved before the streams were data named them `eda.*` and `eda_head.*`."""
    old = {**{f"{name}.": f"bio.{name}." for name in bio}, **{f"{name}_head.": f"bio_heads.{name}." for name in bio}}
    renamed = {}
    for key, value in stored.items():
        prefix = next((p for p in old if key.startswith(p)), None)
        renamed[key if prefix is None else old[prefix] + key[len(prefix):]] = value
    return renamed


TRAINING_STATE = ("optimizer", "scheduler", "scaler")  # read only to resume a training


def drop_training_state(path: Path) -> None:
    """Rewrite a finished encoder checkpoint without its optimizer, scheduler and AMP scaler state, which
    only resuming reads (two thirds of the file: 153 of 229 MB on the demo); weights, normalisation and
    the training record stay, so extraction and prediction read it as before."""
    state = load_encoder_checkpoint(path)
    save_torch_file({k: v for k, v in state.items() if k not in TRAINING_STATE}, path)


def epoch_checkpoints(out_dir: Path) -> list[Path]:
    """The epoch_NNN.pth files of a training folder, oldest first."""
    return sorted(Path(out_dir).glob("epoch_*.pth"))

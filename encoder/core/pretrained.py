"""Optional feature blocks from pretrained models in local folders (config.PRETRAINED), frozen:

    lm   a language model folder (any `transformers` AutoModel + AutoTokenizer: KLUE-RoBERTa,
         KoELECTRA, ...). Each segment's transcript (at most `max_text_tokens` tokens) goes through the
         model once; its last hidden states are averaged over the tokens the attention mask covers
         (special tokens included). Every node carries its segment's vector; a segment without a
         readable transcript gets the empty transcript's vector, as the `text` block does.
    ssl  a self-supervised speech model folder (wav2vec2 / HuBERT / WavLM: AutoModel +
         AutoFeatureExtractor). ONE forward pass per segment over its whole wav, resampled to the
         feature extractor's sampling_rate; a node's vector is the mean of the last hidden states of
         the frames inside its clip window, the window the log-mel block uses: it starts clip_length//2
         steps before the node's time after the segment's origin (the wav's start) and lasts
         clip_length × 0.25 s (custom_transforms, dataset.Segment.frame_offsets). Frame k stands at
         the centre of its receptive field, (k × stride + (receptive_field − 1) / 2) / sampling_rate
         seconds, stride and receptive field from the config's conv_stride / conv_kernel (wav2vec2:
         20 ms stride, 25 ms field). A window that runs off the wav keeps the frames inside it (the
         log-mel clip reflect-pads instead); one with no frame at all takes the nearest frame.

Models are read from the folder only (`local_files_only=True`: nothing is downloaded) and run in
float32 in eval mode without gradients. A missing folder, or one `transformers` cannot load, is a
util.DataError naming it. `folder_sha256` identifies a folder's contents for the feature manifest
and the model folder (model.json): prediction refuses a folder whose hash differs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder.core import config, io, util

TEXT, SPEECH = "lm", "ssl"  # block names in feature_order / --modalities
NAMES = (TEXT, SPEECH)  # the order the blocks are appended in, after the text block
SETTING = {TEXT: "text_model", SPEECH: "speech_model"}  # the config.PRETRAINED key naming each folder


def folder_sha256(path: Path) -> str:
    """sha256 over the folder's files, sorted by relative path: each file's path, size and contents.
    Hidden files and folders (a name starting with '.', e.g. a download tool's .cache/) are left out.
    Remembered per process while no file's size or modification time changes."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    stats = [(f.relative_to(path).as_posix(), f.stat()) for f in files]
    key = (str(path.resolve()), tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    if key not in _HASHES:
        digest = hashlib.sha256()
        for file, (name, st) in zip(files, stats, strict=True):
            digest.update(name.encode() + b"\0" + st.st_size.to_bytes(8, "little"))
            with open(file, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


_HASHES: dict[tuple, str] = {}


def check_folder(path: Path | str, what: str) -> Path:
    """`path` as a folder holding a config.json; else util.DataError naming it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise util.DataError(f"{what} folder not found", path)
    if not (path / "config.json").is_file():
        raise util.DataError(f"{what} folder has no config.json: not a model saved by transformers' "
                             "save_pretrained (or downloaded as such)", path)
    return path


def _from_folder(loader: Any, path: Path, what: str) -> Any:
    """`loader.from_pretrained(path)` from the folder only; any failure is a one-line DataError."""
    try:
        return loader.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise util.DataError(f"cannot load the {what} from this folder ({type(err).__name__}: {reason})",
                             path) from None


def _transformers() -> Any:
    """transformers, imported on first use (seconds to import) with its progress bars and warnings off."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


class PretrainedBlock:
    """A frozen pretrained model and how it turns segments into node columns (`columns`)."""

    name: str
    what: str

    def __init__(self, path: Path | str, device: str | torch.device = "cpu"):
        self.path = check_folder(path, self.what)
        self.device = torch.device(device)
        self.sha256 = folder_sha256(self.path)
        self.seconds = 0.0
        self.forward_passes = 0

    def _model(self, transformers: Any) -> torch.nn.Module:
        model = _from_folder(transformers.AutoModel, self.path, f"{self.what} (AutoModel)")
        model = model.float().eval().to(self.device)
        model.requires_grad_(False)
        return model

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def to(self, device: str | torch.device) -> PretrainedBlock:
        """Move the model to `device` (in place); returns the block."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def columns(self, segments: Sequence[Any]) -> dict[str, np.ndarray]:
        """Segment ID -> float32 [dim] (one vector for all its nodes) or [n_steps, dim] (one per node)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the manifest and model.json record about the block."""
        return {"built": True, "folder": str(self.path.resolve()), "sha256": self.sha256, "dim": self.dim,
                "hidden_size": self.dim, "model_type": str(self.model.config.model_type),
                "precision": "float32"}


class TextModel(PretrainedBlock):
    """The `lm` block: a frozen language model, attention-mask weighted mean of its last hidden states."""

    name, what = TEXT, "text model"

    def __init__(self, path: Path | str, device: str | torch.device = "cpu", max_tokens: int = 128,
                 batch_size: int = 32):
        super().__init__(path, device)
        transformers = _transformers()
        self.tokenizer = _from_folder(transformers.AutoTokenizer, self.path, f"{self.what} tokenizer (AutoTokenizer)")
        self.model = self._model(transformers)
        self.max_tokens, self.batch_size = int(max_tokens), int(batch_size)

    def encode(self, documents: Sequence[str]) -> np.ndarray:
        """float32 [n, dim]: one mean-pooled vector per document, one forward pass per batch."""
        out = np.zeros((len(documents), self.dim), dtype=np.float32)
        order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
        started = time.perf_counter()
        for first in range(0, len(order), self.batch_size):
            picks = order[first : first + self.batch_size]
            batch = self.tokenizer([documents[i] for i in picks], padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt")
            mask = batch["attention_mask"].to(self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).float()
                pooled = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            out[picks] = pooled.cpu().numpy()
            self.forward_passes += 1
        self.seconds += time.perf_counter() - started
        return out

    def columns(self, segments: Sequence[Any]) -> dict[str, np.ndarray]:
        vectors = self.encode([s.transcript or "" for s in segments])
        return {s.segment_id: row for s, row in zip(segments, vectors, strict=True)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_text_tokens": self.max_tokens,
                "pooling": "mean of the last hidden states over the attention mask (special tokens included), "
                           "one vector per segment transcript; no transcript: the empty transcript's vector"}


class SpeechModel(PretrainedBlock):
    """The `ssl` block: a frozen self-supervised speech model, one forward pass per segment wav, its
    frames averaged over each node's clip window."""

    name, what = SPEECH, "speech model"

    def __init__(self, path: Path | str, device: str | torch.device = "cpu", clip_length: int = 11):
        super().__init__(path, device)
        transformers = _transformers()
        self.extractor = _from_folder(transformers.AutoFeatureExtractor, self.path,
                                      f"{self.what} feature extractor (AutoFeatureExtractor)")
        self.model = self._model(transformers)
        self.clip_length = int(clip_length)
        self.sampling_rate = int(self.extractor.sampling_rate)
        strides = getattr(self.model.config, "conv_stride", None)
        kernels = getattr(self.model.config, "conv_kernel", None)
        if not strides or not kernels:
            raise util.DataError("speech model config has no conv_stride/conv_kernel: not a wav2vec2, HuBERT or "
                                 "WavLM-family model", self.path / "config.json")
        self.stride, self.receptive_field = conv_geometry(kernels, strides)

    @property
    def frame_seconds(self) -> float:
        return self.stride / self.sampling_rate

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Seconds after the wav's start of each frame (the centre of its receptive field)."""
        return (np.arange(n_frames) * self.stride + (self.receptive_field - 1) / 2) / self.sampling_rate

    def frames(self, wav: np.ndarray, path: Path | None = None) -> np.ndarray:
        """float32 [frames, dim]: the last hidden states of one forward pass over `wav` (at sampling_rate)."""
        if len(wav) < self.receptive_field:
            raise util.DataError(f"wav of {len(wav)} samples at {self.sampling_rate} Hz is shorter than the speech "
                                 f"model's receptive field ({self.receptive_field} samples)", path)
        inputs = self.extractor(wav, sampling_rate=self.sampling_rate, return_tensors="pt")
        started = time.perf_counter()
        with torch.inference_mode():
            hidden = self.model(inputs["input_values"].to(self.device)).last_hidden_state
        self.seconds += time.perf_counter() - started
        self.forward_passes += 1
        return hidden[0].float().cpu().numpy()

    def node_vectors(self, segment: Any) -> np.ndarray:
        """float32 [n_steps, dim]: each node's clip window averaged over the frames of its segment's wav."""
        frames = self.frames(io.read_wav(segment.wav, self.sampling_rate), segment.wav)
        return window_means(frames, self.frame_times(len(frames)), *self.windows(segment))

    def windows(self, segment: Any) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) seconds after the segment's origin of each node's clip window."""
        start = (np.asarray(segment.ts, dtype=np.float64) - segment.origin
                 - (self.clip_length // 2) * config.BIO_STEP_S)
        return start, start + self.clip_length * config.BIO_STEP_S

    def columns(self, segments: Sequence[Any]) -> dict[str, np.ndarray]:
        return {s.segment_id: self.node_vectors(s) for s in segments}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sampling_rate": self.sampling_rate, "clip_length": self.clip_length,
                "frame_stride_s": self.frame_seconds, "receptive_field_s": self.receptive_field / self.sampling_rate,
                "pooling": "one forward pass per segment wav; mean of the last hidden states of the frames whose "
                           "receptive-field centre lies in the node's clip window [t - clip_length//2 × 0.25 s, "
                           "+ clip_length × 0.25 s) after the segment's origin; no frame inside: the nearest frame"}


def conv_geometry(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(stride, receptive field) in input samples of a stack of 1-D convolutions."""
    stride, field = 1, 1
    for kernel, step in zip(kernels, strides, strict=True):
        field += (int(kernel) - 1) * stride
        stride *= int(step)
    return stride, field


def window_means(frames: np.ndarray, times: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """[len(start), dim]: mean of the `frames` whose `times` (increasing) lie in [start, end); a window
    holding none takes the frame nearest to its middle."""
    eps = 1e-9
    lo = np.searchsorted(times, np.asarray(start) - eps, side="left")
    hi = np.searchsorted(times, np.asarray(end) - eps, side="left")
    sums = np.concatenate([np.zeros((1, frames.shape[1])), np.cumsum(frames, axis=0, dtype=np.float64)])
    count = hi - lo
    nearest = np.abs(times[None, :] - ((np.asarray(start) + np.asarray(end)) / 2)[:, None]).argmin(axis=1)
    means = (sums[hi] - sums[lo]) / np.maximum(count, 1)[:, None]
    return np.where((count > 0)[:, None], means, frames[nearest]).astype(np.float32)


def load_blocks(settings: dict[str, Any], device: str | torch.device, clip_length: int) -> list[PretrainedBlock]:
    """The blocks config.PRETRAINED-style `settings` ask for (a folder set), in NAMES order."""
    blocks: list[PretrainedBlock] = []
    if settings.get("text_model"):
        blocks.append(TextModel(settings["text_model"], device, settings["max_text_tokens"],
                                settings["text_batch_size"]))
    if settings.get("speech_model"):
        blocks.append(SpeechModel(settings["speech_model"], device, clip_length))
    return blocks


def load_block(name: str, path: Path | str, record: dict[str, Any], device: str | torch.device) -> PretrainedBlock:
    """Block `name` from `path` for prediction, with the settings of its manifest `record`; a folder whose
    sha256 is not the recorded one is refused with both hashes named."""
    what = TextModel.what if name == TEXT else SpeechModel.what
    path = check_folder(path, what)
    actual = folder_sha256(path)
    if actual != record.get("sha256"):
        raise util.DataError(f"{what} folder sha256 {actual}, but the model was trained on `{name}` features of the "
                             f"folder with sha256 {record.get('sha256')} ({record.get('folder')})", path)
    if name == TEXT:
        return TextModel(path, device, int(record["max_text_tokens"]), config.PRETRAINED["text_batch_size"])
    return SpeechModel(path, device, int(record["clip_length"]))


def settings_key(settings: dict[str, Any]) -> dict[str, Any]:
    """What identifies the pretrained blocks `settings` ask for (folder paths and contents), for a
    stage cache key: a folder changed on disk changes it."""
    key = dict(settings)
    for name, setting in SETTING.items():
        if settings.get(setting):
            key[f"{name}_sha256"] = folder_sha256(check_folder(settings[setting], setting.replace("_", " ")))
    return key

"""CUDA checks of the encoder and GNN stages, run with `pytest -m cuda tests/test_cuda.py` on a GPU machine
(benchmarks/gpu_check.sh does) and skipped where torch sees no CUDA device.

* one AMP training step (float16 autocast + GradScaler, the project's training step and loss) lowers the loss;
* node embeddings through the extraction path (prediction.embed_segments) agree in float16 autocast and
  float32, and on CUDA and CPU;
* an encoder checkpoint written by training on CUDA loads and predicts on CPU;
* GNN training (gnn_training.train_and_evaluate) on CUDA follows the CPU run, and a GNN checkpoint written
  on CUDA predicts the same probabilities on CPU.

Each test also checks that CUDA did the work, which the comparisons alone would not notice when a device
argument were ignored (checkpoints are read onto the CPU in any case): the models are on CUDA when their
checkpoints are saved, and the step allocated CUDA memory beyond what was already held
(torch.cuda.max_memory_allocated after torch.cuda.reset_peak_memory_stats), while the CPU runs allocate none.

Tolerances, with what was measured on CPU where a GPU could not be used:
* embeddings, float16 autocast vs float32: relative error ||a - b|| / ||b|| below EMBED_REL_TOL and every
  node's cosine similarity above EMBED_MIN_COS. Float16 keeps 11 significant bits (unit roundoff 4.9e-4);
  CPU float16 autocast of the same model gave 2.7e-4 and cosine > 0.99999, bfloat16 2.6e-3.
* embeddings, CUDA float32 vs CPU: the same bounds, since cuDNN runs float32 convolutions in TF32 (10-bit
  mantissa, like float16) unless told otherwise.
* fused-head probabilities: absolute PROB_ATOL (CPU float16 autocast: 5e-4).
* GNN: both runs use dropout 0 (the CUDA and CPU random streams differ) and the same CPU-seeded shuffle
  and initial weights, so they differ by float rounding only (summation order of the scatter and matmul
  kernels), which Adam amplifies over the steps: on CPU, a 1e-6 relative perturbation of the node features
  moved the losses of 5 epochs by up to 2.1e-4 relative (1e-7: 1.4e-4). Training losses of 3 epochs must
  agree within GNN_LOSS_RTOL; the probabilities of one checkpoint (one float32 forward pass, no TF32 in
  matrix products by default) within GNN_PROB_ATOL.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional

from encoder.core import checkpoints, config, frames, prediction, training
from encoder.core.custom_transforms import SpectrogramParams
from encoder.core.dataset import Segment, load_segments
from encoder.core.models import STEncoder, inference_model
from encoder.core.synthetic_nodes import write_synthetic_nodes
from temporal_gnn import gnn_model, gnn_training, graph_building, graph_data

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() False)"),
]

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
EMBED_REL_TOL = 1e-2
EMBED_MIN_COS = 0.999
PROB_ATOL = 5e-3
GNN_LOSS_RTOL = 2e-3
GNN_PROB_ATOL = 1e-4
MAX_SCALER_TRIES = 12  # GradScaler halves its scale after each step skipped for inf/NaN gradients
FORWARD = {"batch_size": 64, "num_workers": 2, "progress": False}
GNN_GRAPH_FLAGS = ["--numv", "250"]
GNN_EPOCHS = 3
GNN_TRAIN_FLAGS = ["--num_epoch", str(GNN_EPOCHS), "--dropout", "0", "--batch_size", "4", "--patience", "0"]


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@contextlib.contextmanager
def cuda_allocations() -> Iterator[dict[str, int]]:
    """Yields a dict whose "bytes", once the block is done, is the peak CUDA memory the block allocated beyond
    what was allocated before it: 0 for a block that ran on the CPU."""
    torch.cuda.synchronize(CUDA)
    torch.cuda.reset_peak_memory_stats(CUDA)
    held = torch.cuda.memory_allocated(CUDA)
    used: dict[str, int] = {}
    yield used
    torch.cuda.synchronize(CUDA)
    used["bytes"] = torch.cuda.max_memory_allocated(CUDA) - held


@contextlib.contextmanager
def saved_devices(owner: object, name: str, tensors: Callable[..., Iterable[torch.Tensor]]) -> Iterator[set[str]]:
    """Wraps the checkpoint writer `owner.name` for the block; yields the set of device types of the tensors
    (`tensors` of the writer's arguments) that the block's calls were given to save."""
    seen: set[str] = set()
    original = getattr(owner, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.update(t.device.type for t in tensors(*args, **kwargs))
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(owner, name, recording)
        yield seen


# --------------------------------------------------------------------------- encoder


def clip_batch(n: int, seed: int = 0) -> tuple[Any, ...]:
    """A training batch shaped as TrainClipDataset yields it at the full spectrogram settings
    (config.STE_inputs): audio (n, 1, n_mels, clip frames), EDA and TEMP (n, 1, L) by name, label, target."""
    params = SpectrogramParams.from_dict(config.STE_inputs)
    clip_length = int(config.STE_inputs["clip_length"])
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, 1, params.n_mels, params.clip_frames(clip_length), generator=generator)
    bio = {name: torch.randn(n, 1, clip_length, generator=generator) for name in ("eda", "temp")}
    target = torch.arange(n) % config.NUM_CLASSES
    label = functional.one_hot(target, config.NUM_CLASSES).float()
    return audio, bio, label, target


def train_mode_loss(model: torch.nn.Module, batch: tuple[Any, ...]) -> float:
    """The project's loss of `batch` in float32, train mode (BatchNorm on batch statistics, as the step sees
    it), without a gradient."""
    audio, bio, label, _ = batch
    model.train()
    with torch.no_grad():
        total, _ = prediction.encoder_loss(model(audio.to(CUDA), on_cuda(bio)), label.to(CUDA))
    return float(total)


def on_cuda(bio: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: clips.to(CUDA) for name, clips in bio.items()}


def optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps AdamW applied (GradScaler skips optimizer.step() when the gradients hold inf or NaN)."""
    return max((int(state["step"]) for state in optimizer.state.values()), default=0)


def test_one_amp_training_step_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = STEncoder().to(CUDA)
    # A small learning rate keeps the first-order decrease dominant, so the check is about the AMP machinery
    # (float16 forward, scaled backward, unscaled step), not about the learning rate.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                  weight_decay=config.STE_optimization_params["weight_decay"])
    scaler = torch.amp.GradScaler("cuda")
    batch = clip_batch(16)
    before = train_mode_loss(model, batch)
    step_loss = math.nan
    with cuda_allocations() as used:
        for _ in range(MAX_SCALER_TRIES):
            # training's own step: autocast forward, encoder_loss, scaler.scale(...).backward(), step, update
            step_loss = training._train_one_epoch(model, [batch], optimizer, scaler, CUDA, True, None, None)["total"]
            if optimizer_steps(optimizer):
                break
    assert used["bytes"] > 0, "the training step allocated no CUDA memory"
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert all(s.device.type == "cuda" for state in optimizer.state.values() for s in state.values()
               if isinstance(s, torch.Tensor) and s.dim() > 0), "AdamW's moments are not on CUDA"
    assert optimizer_steps(optimizer) == 1, f"GradScaler skipped {MAX_SCALER_TRIES} steps (inf/NaN gradients)"
    assert math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0
    # the float16 forward of the step saw the weights `before` was measured with
    assert step_loss == pytest.approx(before, rel=1e-2)
    after = train_mode_loss(model, batch)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert after < before, f"loss {before:.5f} -> {after:.5f} after one AMP step"


@pytest.fixture(scope="module")
def cuda_training(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One epoch of the project's training with device=0 and AMP, full spectrogram settings: its best.pth,
    the device types of the weights it saved, the CUDA memory it allocated and the device it recorded."""
    out_dir = tmp_path_factory.mktemp("ste_cuda")
    optimization = {"epochs": 1, "scheduler_T_max": 1, "batch_size": 16, "num_workers": 2, "amp": True,
                    "out_dir": out_dir, "progress": False}
    with saved_devices(training, "save_torch_file", lambda state, *_: state["model"].values()) as saved, \
            cuda_allocations() as used:
        training.train_encoder(device=0, root=tiny_root, optimization=optimization, log=None)
    recorded = json.loads((out_dir / training.CONFIG_NAME).read_text(encoding="utf-8"))
    return {"path": out_dir / "best.pth", "saved_on": saved, "cuda_bytes": used["bytes"],
            "device": recorded["device"]}


@pytest.fixture(scope="module")
def cuda_checkpoint(cuda_training: dict[str, Any]) -> Path:
    """best.pth of one epoch of the project's training on CUDA with AMP, full spectrogram settings."""
    return cuda_training["path"]


def test_encoder_training_with_device_0_runs_on_cuda(cuda_training: dict[str, Any]) -> None:
    assert cuda_training["saved_on"] == {"cuda"}, "the weights saved were not on CUDA"
    assert cuda_training["cuda_bytes"] > 0, "training allocated no CUDA memory"
    assert cuda_training["device"] == "cuda:0"


@pytest.fixture(scope="module")
def held_out_segments(tiny_root: Path) -> list[Segment]:
    return load_segments(frames.load_frames(tiny_root), tiny_root).by_split["test"]


def embed(path: Path, segments: list[Segment], device: torch.device, amp: bool) -> prediction.Predictions:
    """The extraction path: checkpoint → BatchNorm-folded inference model on `device` → embed_segments."""
    state = checkpoints.load_encoder_checkpoint(path)
    model = inference_model(checkpoints.encoder_from_checkpoint(state, path)).to(device)
    assert {p.device.type for p in model.parameters()} == {device.type}
    with cuda_allocations() as used:
        embedded = prediction.embed_segments(model, state, segments, device, {**FORWARD, "amp": amp})
    # on CUDA the forward passes allocate activations there; on the CPU nothing may touch CUDA
    assert (used["bytes"] > 0) == (device.type == "cuda"), f"{used['bytes']} B of CUDA memory embedding on {device}"
    return embedded


def test_float16_and_float32_embeddings_agree(cuda_checkpoint: Path, held_out_segments: list[Segment]) -> None:
    fp32 = embed(cuda_checkpoint, held_out_segments, CUDA, amp=False)
    fp16 = embed(cuda_checkpoint, held_out_segments, CUDA, amp=True)
    assert np.array_equal(fp16.segment_index, fp32.segment_index) and np.array_equal(fp16.step, fp32.step)
    assert fp16.features.dtype == np.float32 and np.isfinite(fp16.features).all()
    assert not np.array_equal(fp16.features, fp32.features), "autocast did not change the arithmetic"
    assert relative_error(fp16.features, fp32.features) < EMBED_REL_TOL
    assert min_cosine(fp16.features, fp32.features) > EMBED_MIN_COS
    np.testing.assert_allclose(fp16.probs, fp32.probs, atol=PROB_ATOL)
    np.testing.assert_allclose(fp16.loss, fp32.loss, rtol=EMBED_REL_TOL, atol=PROB_ATOL)


def test_autocast_runs_the_encoder_in_float16() -> None:
    model = inference_model(STEncoder()).to(CUDA)
    audio, bio, _, _ = clip_batch(4)
    audio, bio = audio.to(CUDA), on_cuda(bio)
    with torch.inference_mode(), prediction.autocast(CUDA, True):
        out = model(audio, bio)
    assert out.embedding.device.type == "cuda" and out.fused.device.type == "cuda"
    assert out.embedding.dtype == torch.float16 and out.fused.dtype == torch.float16
    with torch.inference_mode(), prediction.autocast(CUDA, False):
        assert model(audio, bio).embedding.dtype == torch.float32


def test_encoder_checkpoint_written_on_cuda_predicts_on_cpu(cuda_checkpoint: Path,
                                                            held_out_segments: list[Segment]) -> None:
    state = checkpoints.load_encoder_checkpoint(cuda_checkpoint)
    assert all(t.device == CPU for t in state["model"].values())
    assert "scale" in state["scaler"], "training on CUDA should have used an enabled GradScaler"
    on_cpu = embed(cuda_checkpoint, held_out_segments, CPU, amp=False)
    on_cuda = embed(cuda_checkpoint, held_out_segments, CUDA, amp=False)
    assert len(on_cpu.step) == sum(s.n_steps for s in held_out_segments)
    assert relative_error(on_cuda.features, on_cpu.features) < EMBED_REL_TOL
    assert min_cosine(on_cuda.features, on_cpu.features) > EMBED_MIN_COS
    np.testing.assert_allclose(on_cuda.probs, on_cpu.probs, atol=PROB_ATOL)


# --------------------------------------------------------------------------- GNN


@pytest.fixture(scope="module")
def gnn_flags(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Graph flags of small synthetic node files (1536-d, 6 sessions of about 600 nodes) with graphs built."""
    root = tmp_path_factory.mktemp("gnn_cuda")
    write_synthetic_nodes(root / "features", nodes_per_session=600, seed=0, snr=2.0)
    flags = ["--features_dir", str(root / "features"), "--graphs_dir", str(root / "graphs"), *GNN_GRAPH_FLAGS]
    graph_building.run([*flags, "--force"])
    return flags


@pytest.fixture(scope="module")
def gnn_runs(gnn_flags: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """train_and_evaluate on CPU and on CUDA, same seed and flags; each result with the device types of the
    weights its checkpoints were saved from (`saved_on`) and the CUDA memory it allocated (`cuda_bytes`)."""
    results = tmp_path_factory.mktemp("gnn_results")
    runs = {}
    for device in ("cpu", "cuda:0"):
        flags = [*gnn_flags, *GNN_TRAIN_FLAGS, "--results_dir", str(results), "--exp", device.replace(":", ""),
                 "--device", device]
        with saved_devices(gnn_model, "save_checkpoint", lambda model, *_, **__: model.parameters()) as saved, \
                cuda_allocations() as used:
            result = gnn_training.run(flags)
        runs[device] = {**result, "saved_on": saved, "cuda_bytes": used["bytes"]}
    return runs


def test_gnn_training_with_device_cuda_runs_on_cuda(gnn_runs: dict[str, dict]) -> None:
    assert gnn_runs["cuda:0"]["saved_on"] == {"cuda"}, "the GNN weights saved were not on CUDA"
    assert gnn_runs["cuda:0"]["cuda_bytes"] > 0, "GNN training allocated no CUDA memory"
    assert gnn_runs["cpu"]["saved_on"] == {"cpu"}
    assert gnn_runs["cpu"]["cuda_bytes"] == 0, "GNN training on the CPU allocated CUDA memory"


def test_gnn_training_on_cuda_follows_cpu(gnn_runs: dict[str, dict]) -> None:
    cpu, cuda = gnn_runs["cpu"]["history"], gnn_runs["cuda:0"]["history"]
    assert cuda["epoch"] == cpu["epoch"] == list(range(1, GNN_EPOCHS + 1))
    assert np.isfinite(cuda["train_loss"]).all()
    np.testing.assert_allclose(cuda["train_loss"], cpu["train_loss"], rtol=GNN_LOSS_RTOL)


def test_gnn_checkpoint_written_on_cuda_predicts_on_cpu(gnn_runs: dict[str, dict], gnn_flags: list[str]) -> None:
    path = Path(gnn_runs["cuda:0"]["metrics_path"]).parent / "best.pth"
    on_cpu, _ = gnn_model.load_checkpoint(path)
    assert all(p.device == CPU for p in on_cpu.state_dict().values())
    on_cuda, _ = gnn_model.load_checkpoint(path, map_location=CUDA)
    on_cuda = on_cuda.to(CUDA)
    assert {p.device.type for p in on_cuda.parameters()} == {"cuda"}
    args = gnn_training.parse_args(gnn_flags)
    graph_dir = graph_building.GraphFolders.from_args(args).graph_dir(graph_building.GraphSettings.from_args(args))
    graphs = graph_data.load_split(graph_dir, "test")
    cpu_pred = gnn_training.predict(on_cpu, graphs, 4, CPU)
    with cuda_allocations() as used:
        cuda_pred = gnn_training.predict(on_cuda, graphs, 4, CUDA)
    assert used["bytes"] > 0, "prediction on CUDA allocated no CUDA memory"
    assert cuda_pred["segment_ids"] == cpu_pred["segment_ids"]
    assert np.array_equal(cuda_pred["targets"], cpu_pred["targets"])
    np.testing.assert_allclose(cuda_pred["probs"], cpu_pred["probs"], atol=GNN_PROB_ATOL)

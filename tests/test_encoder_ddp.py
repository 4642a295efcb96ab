"""`torchrun` with two Gloo processes on CPU: DDP training saves once (rank 0) and trains the model a
one-process reference trains on the same data and seed; extraction shards sessions over the ranks and
still writes every session."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, DistributedSampler

from encoder.core import config, participant, training, util
from encoder.core.checkpoints import load_encoder_checkpoint
from encoder.core.custom_transforms import SpectrogramParams
from encoder.core.dataset import TrainClipDataset, compute_normalization, load_segments
from encoder.core.frames import load_frames
from encoder.core.models import STEncoder
from encoder.core.participant import InputOptions
from encoder.core.prediction import encoder_loss

ENCODER_DIR = config.REPO_ROOT / "encoder"
RECORDER = Path(__file__).with_name("ddp_record_training.py")
# the per-clip audio pass, whose one-process reference below replays TrainClipDataset's draws
TINY_INPUTS = {"sample_rate": 4000, "n_fft": 256, "win_length": 250, "hop_length": 250, "n_mels": 16,
               "audio_pass": "clip"}
TINY_FLAGS = [arg for key, value in TINY_INPUTS.items() for arg in (f"--{key}", str(value))]
CLIP_LENGTH, EPOCHS, BATCH_SIZE, SEED = 11, 2, 8, 3  # BATCH_SIZE is per rank, as in STE_train.py
WORLD_SIZE = 2
UPDATE_RTOL = 1e-2  # DDP's final state against the one-process reference's, relative to training's update


def torchrun(script: Path | str, *args: str) -> subprocess.CompletedProcess:
    torchrun_bin = Path(sys.executable).with_name("torchrun")
    if not torchrun_bin.exists():
        pytest.skip("torchrun not installed beside the interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(torchrun_bin), "--standalone", f"--nproc_per_node={WORLD_SIZE}", str(script), *args],
        cwd=ENCODER_DIR, capture_output=True, text=True, timeout=600, env=env,
    )


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def reference_training(root: Path) -> dict:
    """One process doing what the two ranks do together, step by step: same seed and initial weights,
    rank r's clips taken from DistributedSampler(num_replicas=2, rank=r) in the same order, each half
    batch through the model on its own (BatchNorm normalises over that half, as on its rank), and the
    gradient of the mean of the two halves' losses (what DDP's all-reduce averages). BatchNorm running
    statistics follow rank 0's half only: DDP broadcasts rank 0's buffers before every forward (and
    training after every epoch), so the rank-1 half updates a throwaway copy of them.

    Returns the initial and final states, each epoch's two sampler shards and rank 0's mean loss per
    epoch (what rank 0 logs)."""
    settings = util.merge_settings(config.STE_optimization_params,
                                   {"epochs": EPOCHS, "scheduler_T_max": EPOCHS, "batch_size": BATCH_SIZE,
                                    "seed": SEED})
    util.seed_everything(SEED)
    inputs = util.merge_settings(config.STE_inputs, TINY_INPUTS)
    params, options = SpectrogramParams.from_dict(inputs), InputOptions.from_inputs(inputs)
    table = load_segments(load_frames(root), root, util.session_splits(), wanted=("train", "val"))
    train = table.by_split["train"]
    participant.attach([*train, *table.by_split["val"]], params, options)  # as train_encoder does
    model = STEncoder(bio_channels=options.bio_channels(("eda", "temp")), audio_pass=options.audio_pass)
    initial = snapshot(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings["scheduler_T_max"])
    clips = TrainClipDataset(train, compute_normalization(train, CLIP_LENGTH, params, options=options), CLIP_LENGTH,
                             params, SEED, options)
    samplers = [DistributedSampler(clips, num_replicas=WORLD_SIZE, rank=r, shuffle=True, seed=SEED)
                for r in range(WORLD_SIZE)]
    drop_last = len(clips) // WORLD_SIZE > BATCH_SIZE  # as training.py decides it
    shards, rank0_loss = {}, {}
    for epoch in range(1, EPOCHS + 1):
        clips.set_epoch(epoch)
        for sampler in samplers:
            sampler.set_epoch(epoch)
        shards[epoch] = [list(sampler) for sampler in samplers]
        model.train()
        losses = []
        loaders = [DataLoader(clips, batch_size=BATCH_SIZE, sampler=s, drop_last=drop_last) for s in samplers]
        for half0, half1 in zip(*loaders, strict=True):
            if len(half0[2]) < 2:
                continue
            optimizer.zero_grad(set_to_none=True)
            throwaway = {name: buffer.clone() for name, buffer in model.named_buffers()}
            loss1, _ = encoder_loss(torch.func.functional_call(model, throwaway, tuple(half1[:2])), half1[2])
            loss0, _ = encoder_loss(model(*half0[:2]), half0[2])
            ((loss0 + loss1) / WORLD_SIZE).backward()
            optimizer.step()
            losses.append(float(loss0.detach()))
        rank0_loss[epoch] = sum(losses) / len(losses)  # equal half sizes: drop_last leaves full batches only
        scheduler.step()
    return {"initial": initial, "final": snapshot(model), "shards": shards, "rank0_loss": rank0_loss,
            "drop_last": drop_last, "segments": len(clips)}


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two state dicts with the same entries, bit for bit."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def update_error(state: dict[str, torch.Tensor], reference: dict, running_statistics: bool) -> float:
    """||state - reference final|| / ||reference final - initial|| over the parameters, or over the BatchNorm
    running statistics: how far from the reference's training a state ended, relative to how far training
    moved. A norm, not a maximum: Adam divides by the root of the squared gradients, so a rounding-level
    difference in a near-zero gradient can move a single weight by up to the learning rate."""
    final, initial = reference["final"], reference["initial"]
    keys = [k for k in final if final[k].is_floating_point() and ("running_" in k) == running_statistics]

    def flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([d[k].double().flatten() for k in keys])

    return float((flat(state) - flat(final)).norm() / (flat(final) - flat(initial)).norm())


def test_two_process_gloo_training_and_sharded_extraction(tiny_root, tmp_path, one_thread):
    """Two ranks train the model the one-process reference above trains, within UPDATE_RTOL.

    A plain one-process run (`STE_train.py` without torchrun, --batch_size 16) trains another model, and no
    tolerance would make that comparison sound: its BatchNorm normalises over all 16 clips instead of two
    halves of 8, its DataLoader shuffles with its own generator instead of DistributedSampler's
    permutation, and its running statistics follow every clip instead of rank 0's half. The reference
    reproduces those three, so only float rounding could remain, and none does: the halves run the same
    kernels on the same shapes with one thread, and halving a gradient is exact, so the states agree to
    the bit (measured update error 0.0). UPDATE_RTOL = 1e-2 leaves room for another summation order in
    the all-reduce or the kernels, and is far below what broken synchronisation gives: with the bare
    model in place of DDP (gradients not all-reduced) each rank's update error is 1.0 for the parameters
    and 0.30 for the running statistics, and the ranks differ; without the broadcast of rank 0's running
    statistics after each epoch, rank 1's differ from rank 0's by up to 0.46. Both fail the bit-identity
    check."""
    out_dir, records = tmp_path / "ste", tmp_path / "records"
    result = torchrun(RECORDER, str(records), str(CLIP_LENGTH), "cpu", "--root", str(tiny_root), "--out_dir",
                      str(out_dir), "--epochs", str(EPOCHS), "--batch_size", str(BATCH_SIZE), "--seed", str(SEED),
                      "--num_workers", "0", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out_dir.glob("*.pth")) == ["best.pth", "epoch_001.pth", "epoch_002.pth"]
    assert not list(out_dir.glob(".*tmp"))
    assert util.read_json(out_dir / training.CONFIG_NAME)["world_size"] == 2
    assert result.stdout.count("best epoch") == 1

    ranks = [torch.load(records / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    with threadpool_limits(limits=1, user_api="blas"):  # as torchrun's OMP_NUM_THREADS=1 sets the ranks' BLAS:
        reference = reference_training(tiny_root)  # numpy's float32 mel projection rounds by thread count
    # the same seed builds the same encoder on both ranks and in one process
    assert all(identical(rank["initial"], reference["initial"]) for rank in ranks)
    # every epoch, the two ranks' shards cover the training segments (DistributedSampler repeats the first
    # few to even them out: an odd count repeats one), and each rank loads its shard in order, short of its
    # last partial batch
    n_segments = reference["segments"]
    per_rank = -(-n_segments // WORLD_SIZE)
    kept = per_rank // BATCH_SIZE * BATCH_SIZE if reference["drop_last"] else None
    for epoch, shards in reference["shards"].items():
        both = shards[0] + shards[1]
        assert sorted(set(both)) == list(range(n_segments))
        assert len(both) == per_rank * WORLD_SIZE
        for rank, shard in zip(ranks, shards, strict=True):
            assert [index for e, index in rank["drawn"] if e == epoch] == shard[:kept]
    # gradients are all-reduced and rank 0's running statistics broadcast: both ranks end bit-identical ...
    assert identical(ranks[0]["final"], ranks[1]["final"])
    # ... holding the reference's model
    errors = {kind: update_error(ranks[0]["final"], reference, kind == "running statistics")
              for kind in ("parameters", "running statistics")}
    assert max(errors.values()) <= UPDATE_RTOL, errors
    # the checkpoint saves that model, and its log has rank 0's loss curve
    saved = load_encoder_checkpoint(out_dir / f"epoch_{EPOCHS:03d}.pth")
    assert identical(saved["model"], ranks[0]["final"])
    assert {row["epoch"]: row["loss_total"] for row in saved["log"]} == pytest.approx(reference["rank0_loss"],
                                                                                      rel=1e-4)

    features = tmp_path / "features"
    result = torchrun("STE_forward.py", "11", "cpu", "--root", str(tiny_root), "--checkpoint",
                      str(out_dir / "best.pth"), "--features_dir", str(features), "--num_workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = util.read_json(features / "manifest.json")
    assert manifest["world_size"] == 2
    written = sorted(p.relative_to(features).as_posix() for p in features.glob("features_*/*.pkl"))
    expected = sorted(f"features_{split}/Sess{s:02d}.pkl" for split, ss in manifest["splits"].items() for s in ss)
    assert written == expected and len(written) == 4
    assert set(util.read_json(features / "encoder_metrics.json")) == {"test", "baselines", "decision", "splits"}

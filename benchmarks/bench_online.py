"""Online labelling, ours against the straightforward way, on one session and one causal model.

* ours (predict.py --online, online.replay): per arrival, the new nodes' layers over a window of
  time_edge seconds of cached node states (online.OnlineGNN);
* reference: per arrival, rebuild the graph of the whole past (graph_building.build_edges over every
  node so far) and run the causal GNN over all of it, keeping the new nodes' outputs.

Both embed each arriving instant's nodes the same way (online.NodeEmbedder: the node's clip through the
encoder), label every node when it arrives and must give the same probabilities. A node's latency is the
time from its arrival to its label: its instant's embedding and GNN step. Nodes arrive every 250 ms per
speaker, so that is the budget. Torch runs on --threads threads (default 1, as predict.py --online: see
online.py). The last line printed is `latency_ms_p50=<ours> latency_ms_p95=<ours> nodes_per_s=<ours>`.

    python benchmarks/bench_online.py [--model results/demo_causal] [--root encoder/KEMDy20_demo] [--session 37]

Without --model, it builds one in a temporary folder first (about a minute on 2 CPU cores): the `tiny`
synthetic preset (seed 0), whose test session is 37, then run_pipeline's chain (dataframes, encoder
training, extraction, graphs, train_val.py --causal) at the demo's settings (config.DEMO: its spectrogram
and graph size, the GNN's default width) with one encoder epoch and a few GNN epochs, and replays that
session of it (unless --root names another data folder). Latency does not depend on how well the model is
trained, only on its sizes; the tiny preset's session is shorter than the demo's, so the reference (whose
cost grows with the past) is relatively cheaper there.
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from encoder.core import checkpoints, config, frames, layout, synthetic, util
from encoder.core.dataset import Segment
from encoder.core.models import inference_model
from temporal_gnn import gnn_model, gnn_training, graph_building, labelling, model_folder, online, pipeline_run, stages

# The model built without --model: the demo's spectrogram, graph and GNN sizes, trained briefly.
BUILD_SETTINGS: dict[str, Any] = {
    "STE_inputs": config.DEMO["STE_inputs"],
    "STE_optimization_params": {**config.DEMO["STE_optimization_params"], "epochs": 1, "scheduler_T_max": 1,
                                "progress": False},
    "graph": graph_building.GraphSettings.from_config(config.DEMO["GRAPH"]),
    "gnn": gnn_training.GnnSettings.from_config({"causal": True, "num_epoch": 3, "batch_size": 4, "patience": 0}),
}


def ours(embedder: online.NodeEmbedder, gnn: gnn_model.SPELL, graphs: dict, segments: list[Segment]) -> dict:
    stream = online.OnlineGNN(gnn, graphs["time_edge"], graphs["cross_identity"])
    probs, latency, gnn_seconds, window = [], [], [], 0
    started = time.perf_counter()
    for arrival in online.replay(embedder, stream, segments):
        probs.append(arrival.probs)
        latency += [arrival.seconds] * len(arrival.nodes)
        gnn_seconds.append(arrival.seconds - arrival.embed_seconds)
        window = max(window, stream.window)
    return {"probs": np.concatenate(probs), "latency": np.array(latency), "seconds": time.perf_counter() - started,
            "gnn": np.array(gnn_seconds), "window": window}


def reference(embedder: online.NodeEmbedder, gnn: gnn_model.SPELL, graphs: dict, segments: list[Segment]) -> dict:
    """Per arrival: embed, then the causal GNN over the rebuilt graph of every node so far."""
    codes: dict[str, int] = {}
    times, identity, features = [], [], []
    probs, latency, gnn_seconds = [], [], []
    started = time.perf_counter()
    with torch.no_grad():
        for nodes in online.instants(segments):
            began = time.perf_counter()
            features.append(embedder.embed(nodes))
            embedded = time.perf_counter()
            times += [seg.ts[step] for seg, step in nodes]
            identity += [codes.setdefault(seg.identity, len(codes)) for seg, _ in nodes]
            edge_index, edge_attr = graph_building.build_edges(torch.tensor(times, dtype=torch.float64),
                                                               torch.tensor(identity), graphs["time_edge"],
                                                               graphs["cross_identity"])
            logits = gnn(torch.cat(features), edge_index, edge_attr)[-len(nodes):]
            probs.append(functional.softmax(logits, dim=1).numpy())
            for seg, step in nodes:
                if step == seg.n_steps - 1:
                    embedder.release(seg.segment_id)
            done = time.perf_counter()
            latency += [done - began] * len(nodes)
            gnn_seconds.append(done - embedded)
    return {"probs": np.concatenate(probs), "latency": np.array(latency), "seconds": time.perf_counter() - started,
            "gnn": np.array(gnn_seconds)}


def line(result: dict) -> str:
    ms = result["latency"] * 1000
    return (f"latency_ms_p50={np.percentile(ms, 50):.1f} latency_ms_p95={np.percentile(ms, 95):.1f} "
            f"nodes_per_s={len(ms) / result['seconds']:.1f}")


def gnn_part(result: dict) -> str:
    ms = result["gnn"] * 1000
    return (f"GNN step alone p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms, "
            f"last {ms[-1]:.2f} ms")


def build_model(work: Path) -> tuple[Path, Path]:
    """A causal model folder made from scratch in `work`: the `tiny` preset, its dataframes, then
    stages.run_chain with BUILD_SETTINGS on the CPU. Returns (model folder, data root)."""
    root = work / "KEMDy20"
    summary = synthetic.make_dataset(root, preset="tiny", seed=0)
    frames.write_frames(frames.build_frames(root), root)
    args = pipeline_run.parse_args(["--data", str(root), "--device", "cpu", "--work", str(work)])
    dirs = stages.ChainDirs(work / "ste", work / "features", work / "graphs", work / "results", "tiny_causal")
    pipeline = stages.Pipeline(work / layout.STATE_FILE, force=True)
    stages.run_chain(args, pipeline, root, "tiny", BUILD_SETTINGS, dirs, util.session_splits(), None)
    print(f"built a causal model on the tiny preset ({summary['segments']} segments) in "
          f"{sum(pipeline.timings.values()):.0f} s: {dirs.results / dirs.exp}")
    return dirs.results / dirs.exp, root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path,
                        help="model folder of a train_val.py --causal run, e.g. results/demo_causal (default: "
                             "build one on the tiny preset in a temporary folder)")
    parser.add_argument("--root", type=Path, help="folder in the KEMDy20 layout (default: encoder/KEMDy20_demo "
                                                  "with --model, else the tiny preset the model was built on)")
    parser.add_argument("--session", type=int, default=37, help="session to replay (a test session of both the "
                                                                "demo and the tiny preset)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    util.seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:  # the built model and the replayed wavs are read from it
        if args.model is None:
            args.model, built_root = build_model(Path(tmp))
            args.root = args.root or built_root
        args.root = args.root or config.DEMO_ROOT
        torch.set_num_threads(args.threads)
        replay(args)


def replay(args: argparse.Namespace) -> None:
    """Both ways on session args.session of args.root with the model folder args.model; prints the figures."""
    loaded = model_folder.load(args.model)
    gnn, _ = gnn_model.load_checkpoint(loaded["gnn_path"])
    if not gnn.causal:
        raise util.DataError("not a causal GNN (train_val.py --causal)", loaded["gnn_path"])
    gnn.eval()
    state = checkpoints.load_encoder_checkpoint(loaded["encoder_path"])
    encoder = inference_model(checkpoints.encoder_from_checkpoint(state, loaded["encoder_path"]))
    graphs = loaded["graph"]
    _, segments, _ = labelling.session_segments(args.root, [args.session])
    warm_up = online.NodeEmbedder(encoder, state, torch.device("cpu"))
    for size in (1, 2):  # the encoder's first pass per batch size builds its kernels
        warm_up.embed([(segments[0], 0)] * size)
    # each replay has an embedder of its own: with participant normalisation an embedder keeps the
    # statistics of what has arrived, and a second replay through it would see the whole session
    fast = ours(online.NodeEmbedder(encoder, state, torch.device("cpu")), gnn, graphs, segments)
    slow = reference(online.NodeEmbedder(encoder, state, torch.device("cpu")), gnn, graphs, segments)
    diff = float(np.abs(fast["probs"] - slow["probs"]).max())
    if diff > 1e-5:
        raise SystemExit(f"online and rebuilt probabilities disagree: max |diff| = {diff:.3g}")
    nodes, instants = len(fast["latency"]), sum(1 for _ in online.instants(segments))
    print(f"Sess{args.session}: {nodes} nodes in {instants} instants, {len(segments)} segments; causal GNN, "
          f"time_edge {graphs['time_edge']:g} s, {graphs['cross_identity']}; torch threads {torch.get_num_threads()}; "
          f"max |ours - reference| {diff:.1e}")
    print(f"reference (graph of the whole past rebuilt per arrival): {line(slow)}; {gnn_part(slow)}")
    print(f"ours (window of at most {fast['window']} nodes): {gnn_part(fast)}; per node, embedding included:")
    print(line(fast))


if __name__ == "__main__":
    util.run_cli(main)

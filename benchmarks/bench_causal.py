"""Does `predict.py --online` give the causal model's reported predictions? With participant normalisation
on, a causal GNN is trained twice on one encoder: on whole-session features ("session", what the pipeline
did before causal extraction; train_val's refusal of such features is bypassed here to reproduce it) and
on prefix features ("prefix", `STE_forward.py --causal`). For each, the test sessions' segment
probabilities the model reports offline (one unchunked graph per session, as train_val scores a causal
model) are compared with `predict.py --online`'s and with batched `predict.py`'s.

    python benchmarks/bench_causal.py [--preset demo] [--work DIR] [--encoder_epochs 6] [--gnn_epochs 40]

Prints one line per feature kind: max |probability difference| and labels changed, online and batched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from encoder.core import checkpoints, config, extraction, frames, layout, synthetic, training, util
from encoder.core.models import inference_model
from temporal_gnn import gnn_model, gnn_training, graph_building, labelling, model_folder


def reported_probabilities(gnn: gnn_model.SPELL, features: Path, graph: dict) -> dict[str, np.ndarray]:
    """Segment probabilities of the causal GNN on one unchunked graph per test session (as train_val
    scores a causal model): the mean of each segment's node probabilities."""
    manifest = util.read_json(features / extraction.MANIFEST_FILE)
    reported: dict[str, np.ndarray] = {}
    for session in manifest["splits"]["test"]:
        nodes = graph_building.read_nodes(layout.node_file(features, "test", session),
                                          manifest["feature_dim"])
        (whole,) = graph_building.session_graphs(nodes, len(nodes["time_s"]), float(graph["time_edge"]),
                                                 graph["cross_identity"])
        with torch.no_grad():
            probs = torch.softmax(gnn(whole.x, whole.edge_index, whole.edge_attr), 1).numpy()
        ids = np.asarray(whole.segment_id)
        for segment_id in set(ids):
            reported[segment_id] = probs[ids == segment_id].mean(0)
    return reported


def compare(name: str, model_dir: Path, features: Path, root: Path) -> str:
    loaded = model_folder.load(model_dir)
    gnn, _ = gnn_model.load_checkpoint(loaded["gnn_path"])
    gnn.eval()
    reported = reported_probabilities(gnn, features, loaded["graph"])
    state = checkpoints.load_encoder_checkpoint(loaded["encoder_path"])
    encoder = inference_model(checkpoints.encoder_from_checkpoint(state, loaded["encoder_path"]))
    test_sessions = util.read_json(features / extraction.MANIFEST_FILE)["splits"]["test"]
    _, segments, _ = labelling.session_segments(root, test_sessions)
    graph = {"numv": 0, "time_edge": float(loaded["graph"]["time_edge"]),
             "cross_identity": loaded["graph"]["cross_identity"]}
    cpu = torch.device("cpu")
    with util.torch_threads(1):
        ids, online, _, _ = labelling.predict_online(encoder, state, gnn, graph, segments, cpu, False)
        batched_ids, batched = labelling.predict_segments(encoder, state, gnn, graph, segments, cpu,
                                                        {"num_workers": 0, "progress": False})
    want = np.stack([reported[i] for i in ids])
    batched = np.stack([dict(zip(batched_ids, batched, strict=True))[i] for i in ids])
    return (f"{name}: {len(ids)} test segments; online vs reported max|dp| {np.abs(online - want).max():.2e}, "
            f"labels changed {(online.argmax(1) != want.argmax(1)).sum()}; predict (batched) vs reported max|dp| "
            f"{np.abs(batched - want).max():.2e}, labels changed {(batched.argmax(1) != want.argmax(1)).sum()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", choices=sorted(synthetic.PRESETS))
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--encoder_epochs", type=int, default=6)
    parser.add_argument("--gnn_epochs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        started = time.time()
        root = work / "KEMDy20"
        with util.torch_threads(2):
            if not root.exists():
                synthetic.make_dataset(root, preset=args.preset, seed=0)
                frames.write_frames(frames.build_frames(root), root)
            training.train_encoder(11, "cpu", root=root, log=None,
                                   inputs={**config.DEMO["STE_inputs"], "participant_norm": True},
                                   optimization={**config.DEMO["STE_optimization_params"],
                                                 "epochs": args.encoder_epochs, "scheduler_T_max": args.encoder_epochs,
                                                 "num_workers": 0, "out_dir": work / "ste", "progress": False})
            for folder, causal in (("features_session", False), ("features_prefix", True)):
                extraction.extract_features(11, "cpu", root=root, checkpoint=work / "ste" / "best.pth",
                                            out_dir=work / folder, forward={"num_workers": 0, "progress": False},
                                            log=None, causal=causal)
        refuse = extraction.check_participant_statistics
        lines = []
        for name in ("session", "prefix"):
            features = work / f"features_{name}"
            graph = graph_building.GraphSettings.from_config(config.DEMO["GRAPH"])
            folders = graph_building.GraphFolders(features, work / f"graphs_{name}")
            graph_building.build_graphs(graph, folders, force=True)
            gnn = gnn_training.GnnSettings.from_config({"num_epoch": args.gnn_epochs, "causal": True, "patience": 0,
                                                     "skip": ("temporal",)})
            gnn_training.extraction.check_participant_statistics = (lambda *_: None) if name == "session" else refuse
            try:
                gnn_training.train_and_evaluate(gnn, graph, folders, work / "results", name, "cpu")
            finally:
                gnn_training.extraction.check_participant_statistics = refuse
            lines.append(compare(name, work / "results" / name, features, root))
        print("\n".join(lines))
        print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()

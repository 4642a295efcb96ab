"""Train the three-branch GNN on the training sessions' graphs, select the epoch on the validation
sessions and report the test sessions (node and segment level) beside the majority and
encoder-only baselines.

    python train_val.py [graph flags as generate_graph.py] [--num_epoch 700] [--exp NAME] ...

Loss: cross-entropy of the logits against the normalised multi-hot labels (soft targets). Model
selection: validation segment macro-F1 (a segment's prediction = mean of its nodes' softmax
probabilities; metric target = the first listed label), evaluated every --eval_freq epochs, with
early stopping after --patience epochs without improvement. Training graphs are never evaluated.

`--causal` trains the variant whose every edge comes from the past or the same instant (models_gnn;
the one `predict.py --online` runs); the default --exp then ends in `_causal`. It trains on the numv-node
graphs but is validated and tested on one unchunked graph per session (generate_graph.whole_sessions),
as the online replay labels it: cutting a session every numv nodes would drop the edges across each cut
and score a model that never runs.

Writes results/<exp>/ atomically: log.txt, best.pth, metrics.json, predictions_test.csv (per test
segment), confusion_test.png (segment level), curves.png and model/ (model_folder.py: the GNN, the
encoder its features came from and the settings prediction needs, for `predict.py --model`). The
last printed line is the path of metrics.json. `train_and_evaluate(args)` is the importable entry point.
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from torch_geometric.loader import DataLoader
from tqdm import tqdm

import data_loader
import generate_graph
import model_folder
import models_gnn
from encoder.core import config, distributed, util
from encoder.core.metrics import (
    class_weights,
    classification_metrics,
    format_table,
    majority_baseline,
    majority_class,
    segment_predictions,
    segment_targets,
    write_segment_predictions,
)
from encoder.core.plots import plot_confusion

ENCODER_METRICS_FILE = "encoder_metrics.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and evaluate the temporal GNN.")
    generate_graph.add_graph_args(parser)
    parser.add_argument("--results_dir", type=Path, default=config.RESULTS_DIR)
    parser.add_argument("--exp", default=None, help="results/<exp>; default: the graph folder's name")
    parser.add_argument("--channel1", type=int, default=64)
    parser.add_argument("--channel2", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--t_max", type=int, default=100, help="cosine annealing period in epochs")
    parser.add_argument("--batch_size", type=int, default=16, help="graphs per batch")
    parser.add_argument("--num_epoch", type=int, default=700)
    parser.add_argument("--eval_freq", type=int, default=1, help="validate every N epochs")
    parser.add_argument("--patience", type=int, default=100,
                        help="stop after this many epochs without a better validation score (0: never)")
    parser.add_argument("--class_weight", action="store_true", help="weight classes by inverse frequency")
    parser.add_argument("--modalities", default=None,
                        help="comma-separated subset of the manifest's feature_order, e.g. audio,eda or "
                             "audio,eda,temp,text (default: all but text)")
    parser.add_argument("--seed", type=int, default=config.SEED)
    parser.add_argument("--causal", action="store_true",
                        help="causal variant: only edges from the past or the same instant (for predict.py --online)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (a fixed count keeps results reproducible; these graphs gain "
                             "little from more)")
    return parser.parse_args(argv)


@torch.no_grad()
def predict(model: models_gnn.SPELL, graphs: list, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Softmax probabilities, targets, segment IDs and sessions of every node of `graphs`."""
    model.eval()
    probs, targets, segments, sessions = [], [], [], []
    for batch in DataLoader(graphs, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        probs.append(functional.softmax(model(batch.x, batch.edge_index, batch.edge_attr), dim=1).cpu().numpy())
        targets.append(batch.target.cpu().numpy())
        sessions.append(batch.session.cpu().numpy())
        segments += data_loader.flatten(batch.segment_id)
    return {"probs": np.concatenate(probs), "targets": np.concatenate(targets),
            "segment_ids": segments, "sessions": np.concatenate(sessions)}


def evaluate(pred: dict[str, Any]) -> dict[str, Any]:
    """Node- and segment-level metrics (classification_metrics) of a `predict` result."""
    seg_ids, seg_targets, seg_pred, seg_probs = segment_predictions(
        pred["segment_ids"], pred["probs"], pred["targets"])
    return {
        "node": classification_metrics(pred["targets"], pred["probs"].argmax(axis=1)),
        "segment": classification_metrics(seg_targets, seg_pred),
        "_segments": (seg_ids, seg_targets, seg_pred, seg_probs),
    }


def _segment_targets(graphs: list) -> tuple[np.ndarray, np.ndarray]:
    """Node targets and segment targets (first node of each segment) of a list of graphs."""
    targets = np.concatenate([g.target.numpy() for g in graphs])
    return targets, segment_targets(data_loader.flatten([g.segment_id for g in graphs]), targets)


def _encoder_baseline(features_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = features_dir / ENCODER_METRICS_FILE
    if not path.is_file():
        notes.append(f"no {path}: encoder-only baseline not reported")
        return None
    test = util.read_json(path).get("test")
    if not isinstance(test, dict) or "segment" not in test:
        raise util.DataError("lacks test.segment metrics", path)
    return test


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Train, select on validation, evaluate on test, write results/<exp>/; returns metrics.json's
    content plus `metrics_path`. Torch runs on `args.threads` CPU threads meanwhile (float sums depend
    on the thread count, so a fixed count gives the same metrics however the calling process was set)."""
    with util.torch_threads(args.threads):
        return _train_and_evaluate(args)


def _train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    if args.num_epoch < 1 or args.eval_freq < 1 or args.batch_size < 1:
        raise util.DataError("--num_epoch, --eval_freq and --batch_size must be at least 1")
    util.seed_everything(args.seed)
    started = time.time()
    device = distributed.resolve_device(args.device)
    features_dir, graph_dir = generate_graph.graph_paths(args)
    record = data_loader.read_build_record(graph_dir)
    data_loader.check_manifest(graph_dir, features_dir, record)
    notes: list[str] = []
    graphs = {split: data_loader.load_split(graph_dir, split) for split in data_loader.SPLITS}
    if args.causal:
        for split in ("val", "test"):
            graphs[split] = generate_graph.whole_sessions(graphs[split], record["build"]["time_edge"],
                                                          record["build"]["cross_identity"])
    modalities = args.modalities.split(",") if args.modalities else None
    try:
        model = models_gnn.SPELL(record["feature_dims"], modalities, args.channel1, args.channel2,
                                 args.dropout, causal=args.causal).to(device)
    except ValueError as err:
        raise util.DataError(str(err), graph_dir / data_loader.BUILD_FILE) from None
    args.exp = args.exp or graph_dir.name + ("_causal" if args.causal else "")
    out = Path(args.results_dir or config.RESULTS_DIR) / args.exp
    with util.atomic_dir(out) as tmp:
        log = _Log(tmp / "log.txt")
        log(f"graphs {graph_dir} (feature manifest sha256 {record.get('feature_manifest_sha256')})")
        log(f"model {model.config}, {util.count_parameters(model)} parameters; args {vars(args)}")
        history, best = _train(model, graphs, args, device, tmp / "best.pth", log)
        models_gnn.load_checkpoint(tmp / "best.pth", model, map_location=device)
        notes += model_folder.write(tmp, tmp / "best.pth", record, model_folder.feature_manifest(record, features_dir))
        val, test = (evaluate(predict(model, graphs[s], args.batch_size, device)) for s in ("val", "test"))
        metrics = _report(args, record, graph_dir, graphs, model, history, best, val, test,
                          _encoder_baseline(features_dir, notes), notes, time.time() - started)
        write_segment_predictions(*test["_segments"], tmp / "predictions_test.csv")
        plot_confusion(metrics["test"]["segment"]["confusion"], "Test sessions, segment level",
                       tmp / "confusion_test.png")
        _plot_curves(history, best["epoch"], tmp / "curves.png")
        util.write_json(metrics, tmp / "metrics.json")
        log(f"best epoch {best['epoch']}, val segment macro-F1 {best['val_segment_macro_f1']:.4f}, "
            f"test segment macro-F1 {metrics['test']['segment']['macro_f1']:.4f}")
    return {**metrics, "metrics_path": str(out / "metrics.json")}


class _Log:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _train_epoch(model: models_gnn.SPELL, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 weight: torch.Tensor | None, device: torch.device) -> float:
    """One pass over the training graphs; returns the node-weighted mean loss."""
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        optimizer.zero_grad()
        logits = model(batch.x, batch.edge_index, batch.edge_attr)
        loss = functional.cross_entropy(logits, batch.y, weight=weight)  # soft (multi-hot) targets
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * batch.num_nodes, count + batch.num_nodes
    return total / count


def _train(model: models_gnn.SPELL, graphs: dict[str, list], args: argparse.Namespace, device: torch.device,
           best_path: Path, log: _Log) -> tuple[dict[str, list], dict[str, Any]]:
    """Train on graphs["train"]; validate on graphs["val"]; keep the best epoch's checkpoint."""
    loader = DataLoader(graphs["train"], batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.t_max)
    weight = None
    if args.class_weight:  # metrics.class_weights over the training nodes' soft labels
        weight = torch.from_numpy(class_weights(torch.cat([g.y for g in graphs["train"]]).numpy())).to(device)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_epoch": [], "val_segment_macro_f1": []}
    best: dict[str, Any] = {"epoch": 0, "val_segment_macro_f1": -1.0}
    with tqdm(range(1, args.num_epoch + 1), desc="epochs", unit="epoch") as bar:
        for epoch in bar:
            loss = _train_epoch(model, loader, optimizer, weight, device)
            scheduler.step()
            history["epoch"].append(epoch)
            history["train_loss"].append(loss)
            line = f"epoch {epoch} train_loss {loss:.4f}"
            if epoch % args.eval_freq == 0 or epoch == args.num_epoch:
                score = evaluate(predict(model, graphs["val"], args.batch_size, device))["segment"]["macro_f1"]
                history["val_epoch"].append(epoch)
                history["val_segment_macro_f1"].append(score)
                line += f" val_segment_macro_f1 {score:.4f}"
                if score > best["val_segment_macro_f1"]:
                    best = {"epoch": epoch, "val_segment_macro_f1": score}
                    models_gnn.save_checkpoint(model, best_path, **best)
                bar.set_postfix(loss=f"{loss:.3f}", val_f1=f"{score:.3f}", best=best["epoch"])
            log(line)
            if args.patience and epoch - best["epoch"] >= args.patience:
                log(f"early stop: no better validation score for {args.patience} epochs")
                break
    return history, best


def _report(args: argparse.Namespace, record: dict, graph_dir: Path, graphs: dict[str, list],
            model: models_gnn.SPELL, history: dict, best: dict, val: dict, test: dict,
            encoder: dict | None, notes: list[str], seconds: float) -> dict[str, Any]:
    train_nodes, train_segments = _segment_targets(graphs["train"])
    test_nodes, test_segments = _segment_targets(graphs["test"])
    sessions = {s: sorted({int(v) for g in graphs[s] for v in g.session.unique()}) for s in data_loader.SPLITS}
    return {
        "exp": args.exp or graph_dir.name,
        "splits": sessions,
        "counts": {s: {"graphs": len(graphs[s]), "nodes": int(sum(g.num_nodes for g in graphs[s]))}
                   for s in data_loader.SPLITS},
        "metric_target": "first listed label; segment prediction = mean of its nodes' softmax probabilities",
        "best": best,
        "val": {k: v for k, v in val.items() if not k.startswith("_")},
        "test": {k: v for k, v in test.items() if not k.startswith("_")},
        "baselines": {
            "majority": {"segment": majority_baseline(train_segments, test_segments),
                         "node": majority_baseline(train_nodes, test_nodes),
                         "class": config.EMOTIONS[majority_class(train_segments)]},
            "encoder": encoder,
        },
        "model": {"config": model.config, "parameters": util.count_parameters(model)},
        "graphs": {"dir": graph_dir, "feature_manifest_sha256": record.get("feature_manifest_sha256")},
        "eval_graphs": ("one unchunked graph per session (causal: as predict.py --online labels)" if args.causal
                        else f"graphs of numv = {record['build']['numv']} nodes, as training"),
        "args": vars(args),
        "history": history,
        "notes": notes,
        "seconds": round(seconds, 1),
    }


def _plot_curves(history: dict[str, list], best_epoch: int, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    left.plot(history["epoch"], history["train_loss"])
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.plot(history["val_epoch"], history["val_segment_macro_f1"], marker=".")
    right.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    right.legend()
    right.set_xlabel("epoch")
    right.set_ylabel("validation segment macro-F1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_summary(metrics: dict[str, Any]) -> None:
    """The segment-level table (majority, encoder, GNN), then the path of metrics.json as last line."""
    rows = [("majority", metrics["baselines"]["majority"]["segment"])]
    if metrics["baselines"]["encoder"] is not None:
        rows.append(("encoder", metrics["baselines"]["encoder"]["segment"]))
    rows.append(("GNN", metrics["test"]["segment"]))
    print(f"test sessions {metrics['splits']['test']}, segment level (best epoch {metrics['best']['epoch']}):")
    print(format_table(rows))
    print(per_class_line(metrics["test"]["segment"]))
    print(metrics["metrics_path"])


def per_class_line(segment: dict[str, Any]) -> str:
    """GNN per-class F1 with the class's test support, and which macro-F1 is the headline."""
    parts = [f"{name} {m['f1']:.2f} (n={m['support']})" for name, m in segment["per_class"].items()]
    return (f"GNN per-class F1 (test support): {', '.join(parts)}\n"
            f"macro_f1 averages the {len(segment['classes_present'])} classes present in the test truth; "
            f"over all 7 (absent = 0): {segment['macro_f1_7class']:.4f}")


def main() -> None:
    print_summary(train_and_evaluate(parse_args()))


if __name__ == "__main__":
    util.run_cli(main)

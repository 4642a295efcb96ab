"""Train the three-branch GNN on the training sessions' graphs, select the epoch on the validation
sessions and report the test sessions (node and segment level) beside the majority, encoder-only and
temporal baselines.

    python train_val.py [graph flags as generate_graph.py] [--num_epoch 700] [--exp NAME] ...

Loss: cross-entropy of the logits against the normalised multi-hot labels (soft targets); with
`--logit_adjust_tau T` (config.GNN), of the logits + T·log(the training nodes' class prior), the
logit-adjusted loss, for the GNN and the temporal baseline alike (their predictions read the plain logits). Model
selection: validation segment macro-F1 (a segment's prediction = mean of its nodes' softmax
probabilities; metric target = the first listed label), evaluated every --eval_freq epochs, with
early stopping after --patience epochs without improvement. Training graphs are never evaluated.

`--causal` trains the variant whose every edge comes from the past or the same instant (gnn_model;
the one `predict.py --online` runs); the default --exp then ends in `_causal`. It needs features
extracted with `STE_forward.py --causal` when a participant option is on (its inputs at run time: prefix
participant statistics; extraction.check_participant_statistics refuses the wrong kind, and a non-causal
model refuses those features), and refuses the text, lm and ssl blocks, which carry the whole segment.
It trains on the numv-node graphs but is validated and tested on one unchunked graph per session
(graph_building.whole_sessions), as the online replay labels it: cutting a session every numv nodes
would drop the edges across each cut and score a model that never runs.

After the GNN, the temporal baseline without a graph (temporal_model.TemporalGRU; causal with
`--causal`; skipped with `--no_temporal`) is trained and selected by the same loop on the same nodes,
splits, modalities, epochs, optimiser and schedule, and scored the same way. On a Linux CPU with a core
to spare (twice --threads usable cores; config.GNN["temporal_beside"]; `--temporal_in_series` turns it
off, as run_pipeline.py's parallel GNN workers do) it trains in a forked process beside the GNN: it
seeds itself and runs on --threads threads as the sequential run does, so its results and log lines
are the same, and the stage takes the longer of the two trainings instead of their sum. Its input is each
speaker's nodes of a session in time order, cut into windows of 2 x 3 x time_edge seconds
(graph_data.speaker_windows): the GNN's three message-passing layers reach 3 x time_edge seconds back
and ahead, so a window spans what the GNN's receptive field spans. A node sees its whole window
(causal: the part up to itself), on average 3 x time_edge seconds back (and ahead), at most twice
that, and nothing across a window's cut, as the GNN sees nothing across a graph's cut. A batch holds
about as many nodes as --batch_size graphs (graph_data.windows_per_batch).

Writes results/<exp>/ atomically: log.txt, best.pth, metrics.json, predictions_test.csv (per test
segment), predictions_test_temporal.csv (the temporal baseline's), confusion_test.png (segment
level), curves.png and model/ (model_folder.py: the GNN, the encoder its features came from and the
settings prediction needs, for `predict.py --model`). The last printed line is the path of metrics.json.

How the GNN is trained is a `GnnSettings` (config.GNN, overridden by a profile or by the flags in `run()`
only, plus the choices config.GNN has no entry for: modalities, causal, the systems skipped; checked when
built), beside the graphs' graph_building.GraphSettings and GraphFolders. `train_and_evaluate(gnn, graph,
folders, results_dir)` is the importable entry point (run_pipeline.py's stages call it); `run(argv)` is
train_val.py without its printout. metrics.json's `args` and model.json's `settings` record them.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from encoder.core import config, distributed, extraction, streams, util
from encoder.core.metrics import (
    class_weights,
    classification_metrics,
    decided,
    format_table,
    macro_f1,
    majority_baseline,
    majority_class,
    segment_decision,
    segment_predictions,
    segment_targets,
    write_segment_predictions,
)
from encoder.core.plots import plot_confusion
from encoder.core.prediction import logit_offset, training_prior
from encoder.core.training import SELECT_ON, improves
from temporal_gnn import (
    classical,
    gnn_model,
    graph_building,
    graph_data,
    late_fusion,
    model_folder,
    systems,
    temporal_model,
)
from temporal_gnn.graph_building import is_int, is_number
from temporal_gnn.model_folder import GNN_METRICS_FILE, GNN_PREDICTIONS_FILE

GNN_LAYERS = 3  # message-passing layers of gnn_model.SPELL: its receptive field is 3 x time_edge each way

Logits = Callable[[nn.Module, Batch], torch.Tensor]
# The tensors of a batch that the loops read. PyG's Batch.to walks every attribute, the per-node lists of
# segment IDs and identities too (about a tenth of a CPU epoch); those stay on the host, where they are read.
BATCH_TENSORS = ("x", "edge_index", "edge_attr", "y", "batch", "target", "session")


def gnn_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits of a batch of graphs (gnn_model.SPELL)."""
    return model(batch.x, batch.edge_index, batch.edge_attr)


def temporal_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits of a batch of speaker windows (temporal_model.TemporalGRU)."""
    return model(batch.x, batch.batch)


@dataclass(frozen=True)
class GnnSettings:
    """How the GNN and the baselines beside it are trained: config.GNN's entries, each overridden for one run
    by a profile (run_pipeline.py, config.DEMO) or a flag (`run()`), and the choices config.GNN has no entry
    for. Built, it is checked: a bad value is a one-line ValueError naming the setting."""

    channel1: int  # node embedding and edge-convolution width (also the temporal baseline's GRU width)
    channel2: int  # width of the shared SAGE convolution
    dropout: float
    lr: float
    t_max: int  # cosine annealing period in epochs
    batch_size: int  # graphs per batch
    num_epoch: int
    eval_freq: int  # validate every N epochs
    patience: int  # stop after this many epochs without a better validation score (0: never)
    class_weight: bool  # inverse-frequency class weights in the loss
    logit_adjust_tau: float  # the logit-adjusted loss (prediction.logit_offset); 0: off
    decision_tau_grid: tuple[float, ...]  # segment decisions' adjustment, chosen on validation (metrics.py)
    fusion_weight_grid: tuple[float, ...]  # the fusion system's weight of the GNN, chosen on validation (late_fusion)
    select_on: str  # best.pth and patience: "macro_f1", "loss", "macro_f1_loss" or "last" (training.SELECT_ON)
    block_dropout: float  # training only: each node's input block zeroed with this probability (0: off)
    seed: int
    threads: int  # CPU threads for torch
    temporal_beside: bool  # the temporal baseline in a second process beside the GNN where it can (same results)
    modalities: str | None = None  # comma-separated feature blocks the models read; None: all but text
    causal: bool = False  # the causal variant (gnn_model): edges from the past or the same instant only
    skip: tuple[str, ...] = ()  # trained baseline systems (systems.trained) not trained

    def __post_init__(self) -> None:
        for name in ("channel1", "channel2", "t_max", "batch_size", "num_epoch", "eval_freq", "threads"):
            _check(name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an integer >= 1", self)
        _check("patience", is_int(self.patience) and self.patience >= 0, "an integer >= 0", self)
        _check("seed", is_int(self.seed) and 0 <= self.seed < 2**32, "an integer in [0, 2**32)", self)
        _check("dropout", is_number(self.dropout) and 0 <= self.dropout < 1, "a number in [0, 1)", self)
        _check("block_dropout", is_number(self.block_dropout) and 0 <= self.block_dropout < 1, "a number in [0, 1)",
               self)
        _check("select_on", self.select_on in SELECT_ON, f"one of {', '.join(SELECT_ON)}", self)
        _check("lr", is_number(self.lr) and self.lr > 0, "a number > 0", self)
        _check("logit_adjust_tau", is_number(self.logit_adjust_tau), "a finite number", self)
        for name in ("class_weight", "temporal_beside", "causal"):
            _check(name, isinstance(getattr(self, name), bool), "True or False", self)
        names = self.modalities.split(",") if isinstance(self.modalities, str) else []
        known = (*streams.feature_order(), *gnn_model.OPT_IN_BLOCKS)
        _check("modalities", self.modalities is None or (
            isinstance(self.modalities, str) and all(n in known for n in names) and len(set(names)) == len(names)),
            f"None or distinct names among {','.join(known)}", self)
        trained = [system.name for system in systems.trained()]
        _check("skip", isinstance(self.skip, tuple | list) and all(name in trained for name in self.skip),
               f"a sequence of names among {', '.join(trained)}", self)
        for name in ("decision_tau_grid", "fusion_weight_grid"):
            grid = getattr(self, name)
            _check(name, isinstance(grid, tuple | list) and len(grid) > 0
                   and all(is_number(t) and t >= 0 for t in grid), "a non-empty sequence of numbers >= 0", self)
            object.__setattr__(self, name, tuple(float(t) for t in grid))
        for name in ("dropout", "block_dropout", "lr", "logit_adjust_tau"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "skip", tuple(self.skip))

    @property
    def blocks(self) -> list[str] | None:
        """`modalities` as a list of block names (None: the model's default)."""
        return self.modalities.split(",") if self.modalities else None

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None = None) -> GnnSettings:
        """config.GNN as it is now, with `overrides` (e.g. config.DEMO["GNN"], {"causal": True}) over it."""
        return cls(**graph_building.settings_values("GNN", cls, config.GNN, overrides))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GnnSettings:
        """The settings that parse_args' flags (defaults: config.GNN) name."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in ("temporal_beside", "skip")}
        return cls.from_config({**values, "temporal_beside": not args.temporal_in_series,
                                "skip": tuple(s.name for s in systems.trained() if getattr(args, f"no_{s.name}"))})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skip": list(self.skip), "decision_tau_grid": list(self.decision_tau_grid),
                "fusion_weight_grid": list(self.fusion_weight_grid)}


def _check(name: str, ok: bool, what: str, settings: GnnSettings) -> None:
    graph_building.check_setting("GNN", settings, name, ok, what)


@dataclass
class Fit:
    """What the training loop needs of one model: its inputs per split (graphs, or speaker windows for
    the temporal baseline), how many of them make a batch, how to get a batch's logits, and a name."""

    data: dict[str, list[Data]]
    batch_size: int
    logits: Logits = gnn_logits
    name: str = "GNN"


@dataclass
class SystemContext:
    """What a baseline system's `fit` (systems.System.fit) gets: the run's GNN settings, the graph folder's build
    record, the loaded graphs per split (their nodes, segments and sessions are the splits every system
    sees), the device, the features folder, the results folder being written (`results`; a model file goes
    under results/model/) and the log. `progress_position`: the line of its progress bar; `segments`: the
    graphs' segments (classical.graph_segments) when the prosody block has loaded them already. A system fitted after
    the GNN also gets the systems fitted before it (`fitted`, registry order) and the GNN's own evaluations (`gnn`,
    `evaluate`'s form on "val" and "test"): the fusion system reads both."""

    settings: GnnSettings
    record: dict[str, Any]
    graphs: dict[str, list[Data]]
    device: torch.device
    features_dir: Path
    results: Path
    log: Callable[[str], None]
    progress_position: int = 0
    segments: dict[str, list] | None = None  # the graphs' dataset.Segment per split, when already loaded
    fitted: dict[str, SystemResult | None] | None = None  # the systems fitted before this one (None: not fitted)
    gnn: dict[str, dict[str, Any]] | None = None  # the GNN's evaluate() results on "val" and "test"


@dataclass
class SystemResult:
    """A fitted system: its metrics.json entry (baselines.<name>, with at least `segment`), its test
    evaluation (`evaluate`'s form: `_segments` are written as its predictions file) and, when it saves
    itself into the model folder, model.json's record of it (`model`: file name, sha256, ...). `val`: its
    validation evaluation in the same form, for a system that builds on it (the fusion system)."""

    entry: dict[str, Any]
    test: dict[str, Any]
    model: dict[str, Any] | None = None
    val: dict[str, Any] | None = None


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train and evaluate the temporal GNN.")
    graph_building.add_graph_args(parser)
    parser.add_argument("--results_dir", type=Path, default=config.RESULTS_DIR)
    parser.add_argument("--exp", default=None, help="results/<exp>; default: the graph folder's name")
    gnn = config.GNN
    parser.add_argument("--channel1", type=int, default=gnn["channel1"])
    parser.add_argument("--channel2", type=int, default=gnn["channel2"])
    parser.add_argument("--dropout", type=float, default=gnn["dropout"])
    parser.add_argument("--block_dropout", type=float, default=gnn["block_dropout"],
                        help="in training, zero each node's input block (audio, eda, ...) with this probability, "
                             "the kept ones scaled by 1/(1-p); 0: off")
    parser.add_argument("--select_on", choices=SELECT_ON, default=gnn["select_on"],
                        help="the validation criterion of best.pth and patience: segment macro-F1, node loss, "
                             "macro-F1 with the loss breaking ties, or the last epoch")
    parser.add_argument("--lr", type=float, default=gnn["lr"])
    parser.add_argument("--t_max", type=int, default=gnn["t_max"], help="cosine annealing period in epochs")
    parser.add_argument("--batch_size", type=int, default=gnn["batch_size"], help="graphs per batch")
    parser.add_argument("--num_epoch", type=int, default=gnn["num_epoch"])
    parser.add_argument("--eval_freq", type=int, default=gnn["eval_freq"], help="validate every N epochs")
    parser.add_argument("--patience", type=int, default=gnn["patience"],
                        help="stop after this many epochs without a better validation score (0: never)")
    parser.add_argument("--class_weight", action=argparse.BooleanOptionalAction, default=gnn["class_weight"],
                        help="weight classes by inverse frequency")
    parser.add_argument("--logit_adjust_tau", type=float, default=gnn["logit_adjust_tau"],
                        help="train the GNN and the temporal baseline on logits + tau * log(training node class "
                             "prior) (the logit-adjusted loss; predictions read the plain logits); 0: off")
    parser.add_argument("--decision_tau_grid", type=_tau_grid, default=tuple(gnn["decision_tau_grid"]),
                        metavar="T,T,...",
                        help="segment decisions of the GNN and the temporal baseline: argmax(log p - tau * log "
                             "training prior), tau the value with the best validation macro-F1; 0: plain argmax")
    parser.add_argument("--fusion_weight_grid", type=_tau_grid, default=tuple(gnn["fusion_weight_grid"]),
                        metavar="W,W,...",
                        help="the fusion system: argmax(log p_classical + w * log p_GNN) per segment, w the value "
                             "with the best validation macro-F1 (the smallest on a tie)")
    parser.add_argument("--modalities", default=None,
                        help="comma-separated subset of the manifest's feature_order, e.g. audio,eda or "
                             "audio,eda,temp,text (default: all but text)")
    parser.add_argument("--seed", type=int, default=gnn["seed"])
    parser.add_argument("--causal", action="store_true",
                        help="causal variant: only edges from the past or the same instant (for predict.py --online)")
    for system in systems.trained():
        parser.add_argument(f"--no_{system.name}", action="store_true",
                            help=f"skip the {system.name} baseline ({system.description})")
    parser.add_argument("--temporal_in_series", action="store_true", default=not gnn["temporal_beside"],
                        help="train the temporal baseline after the GNN, not beside it in a second process "
                             "(same results; for when every core is busy)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=gnn["threads"],
                        help="CPU threads for torch (a fixed count keeps results reproducible; these graphs gain "
                             "little from more)")
    return parser


def _tau_grid(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return argument_parser().parse_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """train_val.py without its printout: train_and_evaluate with the settings and folders its flags name
    (config.GRAPH and config.GNN by default; a bad value ends it as argparse does)."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    graph = graph_building.settings_from_args(parser, args)
    try:
        gnn = GnnSettings.from_args(args)
    except ValueError as err:
        parser.error(str(err))
    return train_and_evaluate(gnn, graph, graph_building.GraphFolders.from_args(args), args.results_dir, args.exp,
                              args.device)


@torch.no_grad()
def predict(model: nn.Module, graphs: list, batch_size: int, device: torch.device,
            logits: Logits = gnn_logits) -> dict[str, Any]:
    """Softmax probabilities, targets, segment IDs and sessions of every node of `graphs` (or of
    speaker windows, with `logits=temporal_logits`)."""
    model.eval()
    probs, targets, segments, sessions = [], [], [], []
    for batch in DataLoader(graphs, batch_size=batch_size, shuffle=False):
        batch = batch.to(device, *BATCH_TENSORS)
        probs.append(functional.softmax(logits(model, batch), dim=1).cpu().numpy())
        targets.append(batch.target.cpu().numpy())
        sessions.append(batch.session.cpu().numpy())
        segments += graph_data.flatten(batch.segment_id)
    return {"probs": np.concatenate(probs), "targets": np.concatenate(targets),
            "segment_ids": segments, "sessions": np.concatenate(sessions)}


def evaluate(pred: dict[str, Any], decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Node- and segment-level metrics (classification_metrics) of a `predict` result, the segment decisions
    adjusted by `decision` (metrics.segment_decision; None: the plain argmax)."""
    seg_ids, seg_targets, seg_pred, seg_probs = segment_predictions(
        pred["segment_ids"], pred["probs"], pred["targets"])
    if decision is not None:
        seg_pred = decided(seg_probs, decision)
    return {
        "node": classification_metrics(pred["targets"], pred["probs"].argmax(axis=1)),
        "segment": classification_metrics(seg_targets, seg_pred),
        "_segments": (seg_ids, seg_targets, seg_pred, seg_probs),
    }


def segment_macro_f1(pred: dict[str, Any]) -> float:
    """evaluate(pred)["segment"]["macro_f1"] alone: the model-selection score, without the other metrics."""
    _, seg_targets, seg_pred, _ = segment_predictions(pred["segment_ids"], pred["probs"], pred["targets"])
    return macro_f1(seg_targets, seg_pred)


def decide(val: dict[str, Any], train_graphs: list, grid: Sequence[float]) -> dict[str, Any]:
    """The segment decision (metrics.segment_decision) on the validation segments of `val` (an evaluate
    result), against the training graphs' segment prior."""
    _, seg_targets, _, seg_probs = val["_segments"]
    return segment_decision(seg_probs, seg_targets, _segment_targets(train_graphs)[1], grid)


def _segment_targets(graphs: list) -> tuple[np.ndarray, np.ndarray]:
    """Node targets and segment targets (first node of each segment) of a list of graphs."""
    targets = np.concatenate([g.target.numpy() for g in graphs])
    return targets, segment_targets(graph_data.flatten([g.segment_id for g in graphs]), targets)


def _encoder_baseline(features_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = features_dir / extraction.METRICS_FILE
    if not path.is_file():
        notes.append(f"no {path}: encoder-only baseline not reported")
        return None
    test = util.read_json(path).get("test")
    if not isinstance(test, dict) or "segment" not in test:
        raise util.DataError("lacks test.segment metrics", path)
    return test


def train_and_evaluate(gnn: GnnSettings, graph: graph_building.GraphSettings, folders: graph_building.GraphFolders,
                       results_dir: Path | None = None, exp: str | None = None,
                       device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train the GNN of settings `gnn` on the graphs of `graph` in `folders`, select on validation, evaluate
    on test, write <results_dir>/<exp>/ (default config.RESULTS_DIR, the graph folder's name); returns
    metrics.json's content plus `metrics_path`. Torch runs on `gnn.threads` CPU threads meanwhile (float sums
    depend on the thread count, so a fixed count gives the same metrics however the calling process was set)."""
    with util.torch_threads(gnn.threads):
        return _train_and_evaluate(gnn, graph, folders, Path(results_dir or config.RESULTS_DIR), exp, device)


def _train_and_evaluate(settings: GnnSettings, graph: graph_building.GraphSettings,
                        folders: graph_building.GraphFolders, results_dir: Path, exp: str | None,
                        device_name: str | torch.device) -> dict[str, Any]:
    modalities = settings.blocks
    if settings.causal:
        gnn_model.refuse_future_blocks(modalities or [], "--causal cannot read")
    util.seed_everything(settings.seed)
    started = time.time()
    device = distributed.resolve_device(device_name)
    features_dir, graph_dir = folders.features_dir, folders.graph_dir(graph)
    record = graph_data.read_build_record(graph_dir)
    graph_data.check_manifest(graph_dir, features_dir, record)
    manifest_path = features_dir / extraction.MANIFEST_FILE
    extraction.check_participant_statistics(util.read_json(manifest_path), settings.causal, manifest_path)
    notes: list[str] = []
    graphs = {split: graph_data.load_split(graph_dir, split) for split in graph_data.SPLITS}
    if settings.causal:
        for split in ("val", "test"):
            graphs[split] = graph_building.whole_sessions(graphs[split], record["build"]["time_edge"],
                                                          record["build"]["cross_identity"])
    segments = None
    if modalities and classical.PROSODY in modalities:  # the hand-crafted speech statistics, appended per node
        graphs, record, segments = classical.with_prosody(graphs, record, features_dir)
    try:
        model = gnn_model.SPELL(record["feature_dims"], modalities, settings.channel1, settings.channel2,
                                 settings.dropout, causal=settings.causal).to(device)
    except ValueError as err:
        raise util.DataError(str(err), graph_dir / graph_data.BUILD_FILE) from None
    exp = exp or graph_dir.name + ("_causal" if settings.causal else "")
    out = results_dir / exp
    # what metrics.json's `args` and the log record: every setting and folder of the run, by its flag's name
    ran = {**folders.to_dict(), **graph.to_dict(), "results_dir": str(results_dir), "exp": exp,
           **settings.to_dict(), "device": str(device_name)}
    with util.atomic_dir(out) as tmp:
        log = _Log(tmp / "log.txt")
        log(f"graphs {graph_dir} (feature manifest sha256 {record.get('feature_manifest_sha256')})")
        log(f"model {model.config}, {util.count_parameters(model)} parameters; settings {ran}")
        context = SystemContext(settings, record, graphs, device, features_dir, tmp, log, segments=segments)
        chosen = [system for system in systems.trained() if system.name not in settings.skip]
        notes += [f"--no_{system.name}: {system.name} baseline not trained"
                  for system in systems.trained() if system not in chosen]
        beside = {system.name: _Beside(system, context) for system in chosen
                  if system.beside and temporal_beside(settings, device)}
        try:
            history, best = _train(model, Fit(graphs, settings.batch_size), settings, device,
                                   lambda best: gnn_model.save_checkpoint(model, tmp / "best.pth", **best), log)
            gnn_model.load_checkpoint(tmp / "best.pth", model, map_location=device)
            val = evaluate(predict(model, graphs["val"], settings.batch_size, device))
            decision = decide(val, graphs["train"], settings.decision_tau_grid)
            test = evaluate(predict(model, graphs["test"], settings.batch_size, device), decision)
            log(f"best epoch {best['epoch']}, val segment macro-F1 {best['val_segment_macro_f1']:.4f}, "
                f"test segment macro-F1 {test['segment']['macro_f1']:.4f}")
            fitted: dict[str, SystemResult | None] = {system.name: None for system in systems.trained()}
            after = replace(context, fitted=fitted, gnn={"val": val, "test": test})
            for system in chosen:
                result = beside[system.name].result(log) if system.name in beside else system.trainer()(after)
                if result is None:
                    notes.append(f"{system.name} baseline not fitted: see log.txt")
                    continue
                write_segment_predictions(*result.test["_segments"], tmp / system.predictions)
                fitted[system.name] = result
        finally:
            for running in beside.values():
                running.stop()
        notes += model_folder.write(tmp, tmp / "best.pth", record, model_folder.feature_manifest(record, features_dir),
                                    {name: r.model for name, r in fitted.items() if r is not None and r.model},
                                    {"graph": graph.to_dict(), "gnn": settings.to_dict(), "decision": decision,
                                     "fusion": late_fusion.model_record(fitted.get(late_fusion.FUSION))})
        entries = {name: None if result is None else result.entry for name, result in fitted.items()}
        metrics = _report(ran, settings.causal, record, graph_dir, graphs, model, history, best, val, test,
                          {"encoder": _encoder_baseline(features_dir, notes), **entries},
                          notes, time.time() - started, device)
        metrics["decision"] = decision
        write_segment_predictions(*test["_segments"], tmp / GNN_PREDICTIONS_FILE)
        plot_confusion(metrics["test"]["segment"]["confusion"], "Test sessions, segment level",
                       tmp / "confusion_test.png")
        _plot_curves(history, best["epoch"], tmp / "curves.png", entries)
        util.write_json(metrics, tmp / GNN_METRICS_FILE)
    return {**metrics, "metrics_path": str(out / GNN_METRICS_FILE)}


def fit_temporal(context: SystemContext) -> SystemResult:
    """The temporal baseline (systems.py's `temporal`): trained, selected and tested on the nodes of the
    context's graphs (see the module docstring); writes nothing."""
    settings, record, graphs, device, log = (context.settings, context.record, context.graphs, context.device,
                                             context.log)
    started = time.time()
    span = max(2 * GNN_LAYERS * float(record["build"]["time_edge"]), config.BIO_STEP_S)
    windows = {s: graph_data.speaker_windows(graphs[s], span) for s in graph_data.SPLITS}
    util.seed_everything(settings.seed)  # the same initial weights whatever the GNN's run drew
    model = temporal_model.TemporalGRU(record["feature_dims"], settings.blocks, settings.channel1, settings.dropout,
                                        causal=settings.causal).to(device)
    fit = Fit(windows, graph_data.windows_per_batch(graphs["train"], windows["train"], settings.batch_size),
              temporal_logits, "temporal")
    log(f"temporal model {model.config}, {util.count_parameters(model)} parameters; windows of {span:g} s, "
        f"{ {s: len(w) for s, w in windows.items()} }, {fit.batch_size} per batch")
    kept: dict[str, torch.Tensor] = {}

    def keep_best(_: dict[str, Any]) -> None:
        kept.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    history, best = _train(model, fit, settings, device, keep_best, lambda line: log(f"temporal {line}"),
                           context.progress_position)
    model.load_state_dict(kept)
    decision = decide(evaluate(predict(model, windows["val"], fit.batch_size, device, temporal_logits)),
                      graphs["train"], settings.decision_tau_grid)
    test = evaluate(predict(model, windows["test"], fit.batch_size, device, temporal_logits), decision)
    log(f"temporal best epoch {best['epoch']}, val segment macro-F1 {best['val_segment_macro_f1']:.4f}, "
        f"test segment macro-F1 {test['segment']['macro_f1']:.4f}")
    entry = {"segment": test["segment"], "node": test["node"], "best": best,
             "model": {"config": model.config, "parameters": util.count_parameters(model)},
             "decision": decision, "window_s": span, "windows": {s: len(w) for s, w in windows.items()},
             "windows_per_batch": fit.batch_size,
             "history": history, "seconds": round(time.time() - started, 1)}
    return SystemResult(entry, test)


def temporal_beside(settings: GnnSettings, device: torch.device) -> bool:
    """Whether a system that may (systems.System.beside, the temporal baseline) trains beside the GNN in a
    second process: when settings.temporal_beside, on a Linux CPU whose usable cores leave settings.threads
    for each (not on CUDA, where a forked process cannot use the device, nor on macOS, where forking a
    process that has run torch is not safe)."""
    if not settings.temporal_beside or device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    return len(os.sched_getaffinity(0)) >= 2 * settings.threads


class _Beside:
    """A system trained in a forked process while this one trains the GNN. The child shares the loaded
    graphs without copying them, writes nothing, and sends back its result and its log lines; `result`
    appends those lines to the log where the sequential run writes them. `stop` ends the child if it is
    still running (this process failed or was stopped)."""

    def __init__(self, system: systems.System, context: SystemContext):
        self.system = system
        fork = multiprocessing.get_context("fork")
        self._receive, send = fork.Pipe(duplex=False)
        self._process = fork.Process(target=_beside_child, args=(send, system, context),
                                     name=f"{system.name} baseline", daemon=True)
        self._process.start()
        send.close()

    def result(self, log: Callable[[str], None]) -> SystemResult:
        name = self.system.name
        try:
            status, payload = self._receive.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the {name} baseline's process ended without a result "
                               f"(exit code {self._process.exitcode})") from None
        self._process.join()
        if status == "error":
            raise RuntimeError(f"the {name} baseline failed: {payload}")
        result, lines = payload
        for line in lines:
            log(line)
        return result

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receive.close()


def _beside_child(send: Any, system: systems.System, context: SystemContext) -> None:
    """_Beside's process: the sequential run's fit on the same thread count, logging into a list."""
    lines: list[str] = []
    try:
        torch.set_num_threads(context.settings.threads)
        result = system.trainer()(replace(context, log=lines.append, progress_position=1))
        send.send(("ok", (result, lines)))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
        pass
    except Exception as err:  # sent back: the parent raises it
        send.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        send.close()


class _Log:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def drop_blocks(x: torch.Tensor, slices: Mapping[str, tuple[int, int]], p: float) -> torch.Tensor:
    """`x` with each node's block (a column range of `slices`) zeroed with probability `p` and the kept ones
    scaled by 1/(1-p), as dropout does to single units (torch's global generator)."""
    keep = (torch.rand(x.shape[0], len(slices), device=x.device) >= p).to(x.dtype) / (1 - p)
    scale = torch.ones_like(x)
    for column, (a, b) in enumerate(slices.values()):
        scale[:, a:b] = keep[:, column:column + 1]
    return x * scale


def _train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 weight: torch.Tensor | None, device: torch.device, logits: Logits = gnn_logits,
                 offset: torch.Tensor | None = None, block_dropout: float = 0.0) -> float:
    """One pass over the training graphs (or windows); returns the node-weighted mean loss. `offset` (7,):
    added to the logits in the loss only (the logit-adjusted loss, prediction.logit_offset). `block_dropout`:
    drop_blocks' probability over the blocks the model reads (model.slices)."""
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(device, *BATCH_TENSORS)
        if block_dropout:
            batch.x = drop_blocks(batch.x, model.slices, block_dropout)
        optimizer.zero_grad()
        out = logits(model, batch)
        if offset is not None:
            out = out + offset
        loss = functional.cross_entropy(out, batch.y, weight=weight)  # soft (multi-hot) targets
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * batch.num_nodes, count + batch.num_nodes
    return total / count


def _train(model: nn.Module, fit: Fit, settings: GnnSettings, device: torch.device,
           keep_best: Callable[[dict[str, Any]], None], log: Callable[[str], None],
           progress_position: int = 0) -> tuple[dict[str, list], dict[str, Any]]:
    """Train on fit.data["train"]; validate on fit.data["val"]; `keep_best(best)` stores the model at
    each better validation score (best = {"epoch", "val_segment_macro_f1"}). `progress_position`: the
    progress bar's line (1 for a model trained beside another)."""
    graphs = fit.data
    loader = DataLoader(graphs["train"], batch_size=fit.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(settings.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.t_max)
    labels = torch.cat([g.y for g in graphs["train"]]).numpy()  # the training nodes' soft labels
    weight = torch.from_numpy(class_weights(labels)).to(device) if settings.class_weight else None
    offset = logit_offset(training_prior(labels), settings.logit_adjust_tau)
    offset = None if offset is None else offset.to(device)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_epoch": [], "val_segment_macro_f1": [],
                                "val_loss": []}
    best: dict[str, Any] = {"epoch": 0, "val_segment_macro_f1": -1.0, "val_loss": math.inf}
    val_labels = torch.cat([g.y for g in graphs["val"]]).numpy()
    with tqdm(range(1, settings.num_epoch + 1), desc=f"{fit.name} epochs", unit="epoch",
              position=progress_position) as bar:
        for epoch in bar:
            loss = _train_epoch(model, loader, optimizer, weight, device, fit.logits, offset, settings.block_dropout)
            scheduler.step()
            history["epoch"].append(epoch)
            history["train_loss"].append(loss)
            line = f"epoch {epoch} train_loss {loss:.4f}"
            if epoch % settings.eval_freq == 0 or epoch == settings.num_epoch:
                pred = predict(model, graphs["val"], fit.batch_size, device, fit.logits)
                score, val_loss = segment_macro_f1(pred), node_loss(pred["probs"], val_labels, offset)
                history["val_epoch"].append(epoch)
                history["val_segment_macro_f1"].append(score)
                history["val_loss"].append(val_loss)
                line += f" val_segment_macro_f1 {score:.4f} val_loss {val_loss:.4f}"
                if improves(score, val_loss, {"val_macro_f1": best["val_segment_macro_f1"], **best},
                            settings.select_on):
                    best = {"epoch": epoch, "val_segment_macro_f1": score, "val_loss": val_loss}
                    keep_best(best)
                bar.set_postfix(loss=f"{loss:.3f}", val_f1=f"{score:.3f}", best=best["epoch"])
            log(line)
            if settings.patience and epoch - best["epoch"] >= settings.patience:
                log(f"early stop: no better validation score for {settings.patience} epochs")
                break
    return history, best


def node_loss(probs: np.ndarray, labels: np.ndarray, offset: torch.Tensor | None = None) -> float:
    """Mean cross-entropy of node probabilities `probs` (n, 7) against soft `labels` (n, 7), taken, as the training
    loss is, on the logits plus `offset` (the logit-adjusted loss) when given."""
    log_p = torch.from_numpy(np.log(np.maximum(probs, 1e-12))).double()
    if offset is not None:
        log_p = log_p + offset.detach().cpu().double()
    loss = -(torch.from_numpy(labels).double() * torch.log_softmax(log_p, dim=1)).sum(dim=1)
    return float(loss.mean())


def _report(ran: dict[str, Any], causal: bool, record: dict, graph_dir: Path, graphs: dict[str, list],
            model: gnn_model.SPELL, history: dict, best: dict, val: dict, test: dict,
            baselines: dict[str, dict | None], notes: list[str], seconds: float,
            device: torch.device) -> dict[str, Any]:
    """metrics.json; `ran`: the run's settings and folders (`args`); `baselines`: the encoder's and the
    temporal baseline's entries (None: not reported); `environment`: what it was computed with
    (util.environment)."""
    train_nodes, train_segments = _segment_targets(graphs["train"])
    test_nodes, test_segments = _segment_targets(graphs["test"])
    sessions = {s: sorted({int(v) for g in graphs[s] for v in g.session.unique()}) for s in graph_data.SPLITS}
    return {
        "exp": ran["exp"],
        "splits": sessions,
        "counts": {s: {"graphs": len(graphs[s]), "nodes": int(sum(g.num_nodes for g in graphs[s]))}
                   for s in graph_data.SPLITS},
        "metric_target": "first listed label; segment prediction = mean of its nodes' softmax probabilities",
        "best": best,
        "val": {k: v for k, v in val.items() if not k.startswith("_")},
        "test": {k: v for k, v in test.items() if not k.startswith("_")},
        "baselines": {
            "majority": {"segment": majority_baseline(train_segments, test_segments),
                         "node": majority_baseline(train_nodes, test_nodes),
                         "class": config.EMOTIONS[majority_class(train_segments)]},
            **baselines,
        },
        "model": {"config": model.config, "parameters": util.count_parameters(model)},
        "graphs": {"dir": graph_dir, "feature_manifest_sha256": record.get("feature_manifest_sha256")},
        "eval_graphs": ("one unchunked graph per session (causal: as predict.py --online labels)" if causal
                        else f"graphs of numv = {record['build']['numv']} nodes, as training"),
        "args": ran,
        "environment": util.environment(device),
        "history": history,
        "notes": notes,
        "seconds": round(seconds, 1),
    }


def _plot_curves(history: dict[str, list], best_epoch: int, path: Path, entries: dict[str, dict | None]) -> None:
    """Training loss and validation macro-F1 per epoch of the GNN and of every system trained by epochs (an
    entry with a `history`, the temporal baseline's)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    colours = systems.colours()
    left.plot(history["epoch"], history["train_loss"], label="GNN", color=colours[systems.GNN])
    right.plot(history["val_epoch"], history["val_segment_macro_f1"], marker=".", label="GNN",
               color=colours[systems.GNN])
    for name, entry in entries.items():
        if entry is not None and "history" in entry:
            label = systems.get(name).label
            left.plot(entry["history"]["epoch"], entry["history"]["train_loss"], label=label, color=colours[name])
            right.plot(entry["history"]["val_epoch"], entry["history"]["val_segment_macro_f1"], marker=".",
                       label=label, color=colours[name])
    left.legend()
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.axvline(best_epoch, color="grey", linestyle="--", label=f"GNN best epoch {best_epoch}")
    right.legend()
    right.set_xlabel("epoch")
    right.set_ylabel("validation segment macro-F1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row name, segment metrics) of every system in metrics.json, in the registry's order (a baseline not
    reported has no row); the GNN's row is named "GNN"."""
    rows = []
    for system in systems.registered():
        if system.name == systems.GNN:
            rows.append(("GNN", metrics["test"]["segment"]))
        elif system.name == "majority":
            rows.append(("majority", metrics["baselines"]["majority"]["segment"]))
        elif metrics["baselines"].get(system.name) is not None:
            rows.append((system.name, metrics["baselines"][system.name]["segment"]))
    return rows


def print_summary(metrics: dict[str, Any]) -> None:
    """The segment-level table (summary_rows), then the path of metrics.json as last line."""
    print(f"test sessions {metrics['splits']['test']}, segment level (best epoch {metrics['best']['epoch']}):")
    print(format_table(summary_rows(metrics)))
    print(per_class_line(metrics["test"]["segment"]))
    print(metrics["metrics_path"])


def per_class_line(segment: dict[str, Any]) -> str:
    """GNN per-class F1 with the class's test support, and which macro-F1 is the headline."""
    parts = [f"{name} {m['f1']:.2f} (n={m['support']})" for name, m in segment["per_class"].items()]
    return (f"GNN per-class F1 (test support): {', '.join(parts)}\n"
            f"macro_f1 averages the {len(segment['classes_present'])} classes present in the test truth; "
            f"over all 7 (absent = 0): {segment['macro_f1_7class']:.4f}")

"""The pipeline's stages and the one executor that runs them (used by run_pipeline.py).

A run is planned once as a list of chains (plan_single, plan_cv): each chain is one encoder -> features
-> graphs sequence (the single run's, a later seed's, a CV fold's) with the GNNs trained on its graphs
(one per modality set and seed). `execute` runs the chains in order through their stage caches
(Pipeline: a stage runs when its key changed), a chain's GNN stages together, sequentially or in worker
processes (GnnWorkers). Every folder a plan names comes from encoder/core/layout.py.

The run's settings (run_pipeline.py) reach the stages as a dict: the encoder's config sections under their
names, and the graph and GNN stages' as objects, `graph` (graph_building.GraphSettings) and `gnn`
(gnn_training.GnnSettings), which the stages pass on to graph_building.build_graphs and
gnn_training.train_and_evaluate as they are (a modality set, a seed or --cross_identity replaced per stage).
A stage's key holds the settings' to_dict(), so that any setting changed reruns it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from encoder.core import checkpoints, config, extraction, frames, kemdy20, layout, pretrained, training, util
from temporal_gnn import gnn_training, graph_building, model_folder, systems


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(util.to_jsonable(value), sort_keys=True).encode()).hexdigest()[:16]



class Pipeline:
    """Runs stages in order; a stage runs when its key (configuration + upstream keys) changed."""

    def __init__(self, state_path: Path, force: bool, label: str = ""):
        self.state_path = state_path
        self.force = force
        self.label = label
        self.state = util.read_json(state_path) if state_path.is_file() else {}
        self.timings: dict[str, float] = {}

    def stage(self, name: str, key: dict[str, Any], outputs: list[Path], run: Callable[[], Any]) -> str:
        stamp = digest(key)
        if self.up_to_date(name, stamp, outputs):
            return stamp
        print(f"{self.tag(name)} running")
        start = time.perf_counter()
        run()
        self.record(name, stamp, time.perf_counter() - start)
        return stamp

    def tag(self, name: str) -> str:
        return f"[{self.label}{' ' if self.label else ''}{name}]"

    def up_to_date(self, name: str, stamp: str, outputs: list[Path]) -> bool:
        """Whether stage `name` last ran with this stamp and its outputs are there (then it says so)."""
        if self.force or self.state.get(name) != stamp or not all(p.exists() for p in outputs):
            return False
        print(f"{self.tag(name)} up to date, skipped")
        self.timings[name] = 0.0
        return True

    def record(self, name: str, stamp: str, seconds: float) -> None:
        """Stage `name` ran with this stamp: written to the state file at once (a resumed run skips it)."""
        self.timings[name] = seconds
        self.state[name] = stamp
        util.write_json(self.state, self.state_path)

    def reorder(self, before: Sequence[str], names: Sequence[str]) -> None:
        """The state's stages in the order a sequential run records them: those recorded before (`before`)
        where they were, then the new ones among `names` in that order (workers finish in any order)."""
        new = [name for name in names if name in self.state and name not in before]
        order = [name for name in self.state if name not in new] + new
        if order != list(self.state):
            self.state = {name: self.state[name] for name in order}
            util.write_json(self.state, self.state_path)



@dataclass
class ChainDirs:
    """Where one run of the chain (the default run, or one CV fold) writes."""

    ste: Path
    features: Path
    graphs: Path
    results: Path
    exp: str

    @property
    def metrics(self) -> Path:
        return self.results / self.exp / model_folder.GNN_METRICS_FILE



def stacking_splits(splits: dict[str, Sequence[int]], stacking: str) -> tuple[dict, dict]:
    """(encoder splits, GNN splits) for a stacking scheme; both share validation and test sessions.

    insample: both train on the training sessions (the encoder's embeddings of its own training
    sessions are what the GNN learns from). split: the training sessions in time order are dealt
    alternately into halves A and B; the encoder fits on A, the GNN on B, whose embeddings come from
    an encoder that never saw them, as validation and test embeddings do. split-seen: the encoder fits
    on A and the GNN also on A: the control that isolates the effect of seen embeddings."""
    train = sorted(splits["train"])
    if stacking == "insample":
        halves = (train, train)
    elif len(train) < 2:
        raise util.DataError(f"--stacking {stacking} needs at least two training sessions, not {train}")
    else:
        halves = (train[0::2], train[1::2] if stacking == "split" else train[0::2])
    shared = {"val": tuple(splits["val"]), "test": tuple(splits["test"])}
    return {"train": tuple(halves[0]), **shared}, {"train": tuple(halves[1]), **shared}



def frames_stage(pipeline: Pipeline, root: Path, data_stamp: Any) -> str:
    """The dataframe stage, keyed on the data's identity and on kemdy20.fingerprint of the files it
    reads, so that files added, removed or edited under the root rebuild the tables."""

    def build() -> None:
        built = frames.build_frames(root)
        frames.write_frames(built, root)
        print(frames.format_report(built))

    key = {"data": data_stamp, "files": kemdy20.fingerprint(root), "max_skip": config.MAX_SKIP_SHARE}
    return pipeline.stage("frames", key, [root / name for name in frames.artifacts()], build)



def run_chain(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str, settings: dict[str, Any],
              dirs: ChainDirs, splits: dict[str, Sequence[int]], fold: int | None, seed: int | None = None) -> Path:
    """STE_train -> STE_forward -> generate_graph -> train_val for one set of splits, in `pipeline`;
    returns metrics.json. `seed`: of the training (default args.seed)."""
    seed = args.seed if seed is None else seed
    chain = Chain("", dirs, None, splits, fold, seed, [GnnRun(args.modalities, seed, dirs.exp, "")])
    with GnnWorkers(1) as workers:
        execute(args, pipeline, root, frames_stamp, settings, [chain], workers)
    return dirs.metrics



@dataclass
class Upstream:
    """What the GNN stage needs of the stages before it: the graphs' settings and folders and their stage key."""

    graph: graph_building.GraphSettings
    folders: graph_building.GraphFolders
    graphs_stamp: str
    scope: dict[str, Any]
    fold: int | None


def graph_settings(args: argparse.Namespace, settings: dict[str, Any]) -> graph_building.GraphSettings:
    """The run's graph settings, with --cross_identity when it sets a graph variant apart (graph_variant)."""
    graph = settings["graph"]
    return replace(graph, cross_identity=args.cross_identity) if graph_variant(args) else graph


def encoder_seed(optimization: dict[str, Any], seed: int) -> int:
    """The encoder's training seed for pipeline seed `seed`: config.STE_optimization_params["seed"] (or the
    profile's) shifted by the pipeline seed's distance from config.SEED, as gnn_seed does for the GNN."""
    return int(optimization.get("seed", config.STE_optimization_params["seed"])) + seed - config.SEED


def gnn_seed(gnn: gnn_training.GnnSettings, seed: int) -> int:
    """The seed the GNN of the pipeline's seed `seed` (--seed, --seed + 1, ...) trains with: the GNN settings'
    seed (config.GNN["seed"]) shifted by the pipeline seed's distance from config.SEED, so that every pipeline
    seed trains its own GNN seed; with GNN["seed"] == SEED (the shipped config) the pipeline's seed itself."""
    return gnn.seed + seed - config.SEED


def gnn_settings(settings: dict[str, Any], modalities: str, seed: int) -> gnn_training.GnnSettings:
    """The run's GNN settings for the GNN of one modality set and pipeline seed (gnn_seed); a ValueError when
    the seed falls outside GnnSettings' range."""
    return replace(settings["gnn"], modalities=modalities, seed=gnn_seed(settings["gnn"], seed))



def run_upstream(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str,
                 settings: dict[str, Any], dirs: ChainDirs, splits: dict[str, Sequence[int]], fold: int | None,
                 seed: int) -> Upstream:
    """STE_train -> STE_forward -> generate_graph, the stages every modality set shares."""
    encoder_splits, gnn_splits = stacking_splits(splits, args.stacking)
    scope = {"splits": gnn_splits, "encoder_splits": encoder_splits, "fold": fold, "stacking": args.stacking}
    inputs = settings["STE_inputs"]
    opt = {**settings["STE_optimization_params"], "out_dir": dirs.ste}
    opt["seed"] = encoder_seed(opt, seed)
    encoder_key = {"frames": frames_stamp, "inputs": util.merge_settings(config.STE_inputs, inputs),
                   "optimization": util.merge_settings(config.STE_optimization_params, opt),
                   "splits": encoder_splits, "fold": fold}
    best = dirs.ste / "best.pth"

    def train() -> None:
        training.train_encoder(device=args.device, root=root, inputs=inputs, optimization=opt, splits=encoder_splits)
        if fold is not None:  # a fold's best.pth is only read, never resumed from (its epoch files are gone)
            checkpoints.drop_training_state(best)

    encoder_stamp = pipeline.stage("STE_train", encoder_key, [best], train)
    if fold is not None:  # a trained fold encoder serves features and prediction from best.pth alone
        for path in checkpoints.epoch_checkpoints(dirs.ste):  # (each epoch file holds weights and optimizer)
            path.unlink()
    models = {"text_model": args.text_model, "speech_model": args.speech_model}
    features_key = {"encoder": encoder_stamp, "checkpoint": util.file_sha256(best) if best.exists() else None,
                    "text": config.TEXT, **scope}
    if args.text_model or args.speech_model:  # keys of runs without pretrained blocks stay as they were
        features_key["pretrained"] = pretrained.settings_key(util.merge_settings(config.PRETRAINED, models))
    causal = settings["gnn"].causal  # a causal GNN's features: prefix participant statistics
    if causal:
        features_key["causal"] = True
    tau_grid = [float(t) for t in util.merge_settings(config.STE_forward_params,
                                                      settings.get("STE_forward", {}))["decision_tau_grid"]]
    if tau_grid != [0.0]:  # the encoder's decision (encoder_metrics.json); keys of the plain argmax stay as they were
        features_key["decision_tau_grid"] = tau_grid
    features_stamp = pipeline.stage(
        "STE_forward", features_key,
        [dirs.features / extraction.MANIFEST_FILE, dirs.features / extraction.METRICS_FILE],
        lambda: extraction.extract_features(device=args.device, root=root, checkpoint=best, out_dir=dirs.features,
                                            splits=gnn_splits, encoder_splits=encoder_splits, pretrained=models,
                                            forward=settings.get("STE_forward", {}), causal=causal))
    graph = graph_settings(args, settings)
    folders = graph_building.GraphFolders(dirs.features, dirs.graphs)
    graph_key = {"features": features_stamp, "folders": folders.to_dict(), "graph": graph.to_dict(), **scope}
    graphs_stamp = pipeline.stage("generate_graph" + graph_variant(args).replace("_", " "), graph_key,
                                  [folders.graph_dir(graph)],
                                  lambda: graph_building.build_graphs(graph, folders, force=True))
    return Upstream(graph, folders, graphs_stamp, scope, fold)



@dataclass(frozen=True)
class GnnJob:
    """What gnn_training.train_and_evaluate gets for one GNN stage (a worker's task)."""

    gnn: gnn_training.GnnSettings
    graph: graph_building.GraphSettings
    folders: graph_building.GraphFolders
    results_dir: Path
    exp: str
    device: str


@dataclass
class GnnStage:
    """One train_val stage: its name in the stage cache, its key, its outputs and what train_val gets."""

    name: str
    key: dict[str, Any]
    outputs: list[Path]
    job: GnnJob



def gnn_stage(args: argparse.Namespace, settings: dict[str, Any], dirs: ChainDirs, upstream: Upstream,
              modalities: str, seed: int, stage_suffix: str = "") -> GnnStage:
    """The train_val stage of one modality set and seed, into dirs.results/dirs.exp; `stage_suffix` tells
    apart GNN stages that share a stage cache (a seed's on the first seed's encoder)."""
    job = GnnJob(gnn_settings(settings, modalities, seed), upstream.graph, upstream.folders, dirs.results, dirs.exp,
                 str(args.device))
    # a fold's stage cache holds one GNN per modality set; the single run's keeps one
    stage = "train_val" if upstream.fold is None else f"train_val {layout.modality_tag(modalities)}"
    stage += graph_variant(args).replace("_", " ")  # the GNN on other graphs beside the default's
    # every trained system's predictions among the outputs: a GNN folder from before a system existed is retrained
    # every GNN setting (config.GNN with the profile's and the run's choices), HANDCRAFTED and CLASSICAL (but where
    # it caches) in the key: a setting edited there retrains the stage
    classical_settings = {k: v for k, v in config.CLASSICAL.items() if k not in ("cache", "cache_dir")}
    key = {"graphs": upstream.graphs_stamp, "graph": job.graph.to_dict(),
           "folders": {**job.folders.to_dict(), "results_dir": str(job.results_dir), "exp": job.exp},
           "gnn": job.gnn.to_dict(), "device": job.device, "handcrafted": dict(config.HANDCRAFTED),
           "classical": classical_settings, **upstream.scope}
    outputs = [dirs.metrics, *(dirs.metrics.parent / system.predictions for system in systems.trained())]
    return GnnStage(stage + stage_suffix, key, outputs, job)



def train_gnn(job: GnnJob) -> float:
    """gnn_training.train_and_evaluate of one GNN stage; returns its wall time in seconds (a worker's task)."""
    start = time.perf_counter()
    gnn_training.train_and_evaluate(job.gnn, job.graph, job.folders, job.results_dir, job.exp, job.device)
    return time.perf_counter() - start



def _worker_started() -> None:
    """A worker unwinds on SIGTERM as the main process does (util.run_cli): no half-written GNN folder."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))



class GnnWorkers:
    """Runs a fold's train_val stages: one after the other in this process with jobs = 1, else the
    pending ones in up to `jobs` worker processes (spawned, so none inherits this process's torch
    state; train_val fixes its torch thread count, so the results are those of the sequential run).
    The workers start at the first batch with two or more stages to train and serve every later one."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> GnnWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def run(self, pipeline: Pipeline, stages: Sequence[GnnStage]) -> None:
        """Every stage of `stages` that is not up to date, recorded in `pipeline` as it finishes. When one
        fails, the stages not yet started are cancelled, those running finish and are recorded, and the
        first failure (in the order of `stages`) is raised."""
        if self.jobs == 1:
            for stage in stages:
                pipeline.stage(stage.name, stage.key, stage.outputs, partial(train_gnn, stage.job))
            return
        pending = [(stage, stamp) for stage in stages
                   if not pipeline.up_to_date(stage.name, stamp := digest(stage.key), stage.outputs)]
        if len(pending) < 2:  # not worth a worker's start
            for stage, _ in pending:
                pipeline.stage(stage.name, stage.key, stage.outputs, partial(train_gnn, stage.job))
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_started)
        before = list(pipeline.state)
        futures = {}
        for i, (stage, stamp) in enumerate(pending):
            print(f"{pipeline.tag(stage.name)} running")
            # every core runs a worker: each trains its temporal baseline after its GNN, not beside it
            job = replace(stage.job, gnn=replace(stage.job.gnn, temporal_beside=False))
            futures[self._pool.submit(train_gnn, job)] = (i, stage, stamp)
        failures: dict[int, BaseException] = {}
        for future in as_completed(futures):
            i, stage, stamp = futures[future]
            if future.cancelled():
                continue
            if future.exception() is not None:
                failures[i] = future.exception()
                for other in futures:
                    other.cancel()
                continue
            pipeline.record(stage.name, stamp, future.result())
            print(f"{pipeline.tag(stage.name)} done, {future.result():.0f} s")
        pipeline.reorder(before, [stage.name for stage, _ in pending])
        if failures:
            raise failures[min(failures)]



def seed_list(args: argparse.Namespace) -> list[int]:
    """The training seeds: --seed, --seed + 1, ..., --seed + N - 1."""
    return [args.seed + i for i in range(args.seeds)]



@dataclass
class GnnRun:
    """One train_val stage of a chain: the GNN and its temporal baseline on one modality set and seed."""

    modalities: str
    seed: int
    exp: str  # its folder under the chain's results folder
    stage_suffix: str  # " seed S" for a seed's GNN on the first seed's encoder (the stage cache is shared)



@dataclass
class Chain:
    """One encoder -> features -> graphs chain (the single run's, a later seed's or a CV fold's) with the
    GNNs trained on its graphs. `state`: its own stage cache (None: the run's)."""

    label: str
    dirs: ChainDirs
    state: Path | None
    splits: dict[str, Sequence[int]]
    fold: int | None
    seed: int
    gnns: list[GnnRun]



def graph_variant(args: argparse.Namespace) -> str:
    """`_ciy` / `_cin` when --cross_identity differs from config.GRAPH, else empty: the suffix of the GNN
    folders and summaries (and, with a space, of the graph and GNN stage names) of graphs built beside the
    default's on the same encoder and features."""
    chosen = args.cross_identity
    return f"_{chosen}" if chosen is not None and chosen != config.GRAPH["cross_identity"] else ""



def seed_passes(args: argparse.Namespace) -> list[list[int]]:
    """The seeds grouped by the chain they train on: with --keep_encoder every seed on the first seed's
    chain, else one chain per seed."""
    return [seed_list(args)] if args.keep_encoder else [[seed] for seed in seed_list(args)]



def gnn_runs(args: argparse.Namespace, seeds: Sequence[int], modality_sets: Sequence[str],
             folder: Callable[[str, str], str]) -> list[GnnRun]:
    """The GNNs of one chain: per seed, per modality set; `folder(modalities, suffix)` names each."""
    first, keep = args.seed, args.keep_encoder
    return [GnnRun(m, s, folder(m, graph_variant(args) + layout.seed_suffix(s, first, keep)),
                   f" seed {s}" if s != first and keep else "")
            for s in seeds for m in modality_sets]



def plan_single(args: argparse.Namespace, exp: str) -> list[Chain]:
    """The single run's chains: the first seed's in the work folder, a later seed's under results/seed_S/
    (with --keep_encoder every seed's GNN on the first chain, in results/<exp>_seedS)."""
    work, first = args.work, args.seed
    chains = []
    for seeds in seed_passes(args):
        seed = seeds[0]
        if seed == first:
            dirs = ChainDirs(work / "encoder" / "STE_TRAIN", work / "features", work / "graphs", work / "results", exp)
            state, label = None, ""
        else:
            tree = layout.seed_tree(work / "results", seed, first)
            dirs = ChainDirs(tree / "encoder", tree / "features", tree / "graphs", tree, exp)
            state, label = tree / layout.STATE_FILE, f"seed {seed}"
        # the single run's experiment name already ends in the graph variant
        gnns = gnn_runs(args, seeds, [args.modalities], lambda _m, suffix: exp + suffix[len(graph_variant(args)):])
        chains.append(Chain(label, dirs, state, util.session_splits(), None, seed, gnns))
    return chains



def plan_cv(args: argparse.Namespace, cv_dir: Path, folds: Sequence[dict[str, tuple[int, ...]]],
            modality_sets: Sequence[str]) -> list[Chain]:
    """A CV run's chains: per seed pass, per fold, under cv_dir (a later seed's whole chain under seed_S/)."""
    chains = []
    for seeds in seed_passes(args):
        seed = seeds[0]
        tree = layout.seed_tree(cv_dir, seed, args.seed)
        for k, splits in enumerate(folds):
            fold_dir = layout.fold_dir(tree, k)
            label = f"fold {k}" + (f" seed {seed}" if seed != args.seed else "")
            dirs = ChainDirs(fold_dir / "encoder", fold_dir / "features", fold_dir / "graphs", fold_dir, "")
            chains.append(Chain(label, dirs, fold_dir / layout.STATE_FILE, splits, k, seed,
                                gnn_runs(args, seeds, modality_sets, layout.gnn_folder)))
    return chains



def execute(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str, settings: dict[str, Any],
            chains: Sequence[Chain], workers: GnnWorkers) -> None:
    """Every chain in order: its encoder, features and graphs, then its GNN stages together (to `workers`).
    A chain with its own stage cache adds its stage times to `pipeline`'s under its label."""
    for chain in chains:
        if chain.fold is not None:
            note = f" seed {chain.seed}" if chain.seed != args.seed else ""
            print(f"\nfold {chain.fold}/{args.cv}{note}: "
                  + ", ".join(f"{name} {list(chain.splits[name])} ({len(chain.splits[name])})"
                              for name in ("train", "val", "test")))
            util.write_json(chain.splits, chain.dirs.results / layout.SPLITS_FILE)
        own = chain.state is not None
        chain_pipeline = Pipeline(chain.state, args.force, label=chain.label) if own else pipeline
        upstream = run_upstream(args, chain_pipeline, root, frames_stamp, settings, chain.dirs, chain.splits,
                                chain.fold, chain.seed)
        workers.run(chain_pipeline, [gnn_stage(args, settings, replace(chain.dirs, exp=gnn.exp), upstream,
                                               gnn.modalities, gnn.seed, gnn.stage_suffix) for gnn in chain.gnns])
        if own:
            pipeline.timings.update({f"{chain.label} {name}": t for name, t in chain_pipeline.timings.items()})

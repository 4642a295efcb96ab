"""One command from recordings to a results table.

    python run_pipeline.py [--data DIR] [--preset demo] [--device auto|cpu|N] [--force] [--modalities audio,eda,temp]
                           [--profile demo|full] [--stacking insample|split|split-seen] [--cv K [--ablation]]
                           [--seeds N [--keep_encoder]] [--jobs N] [--class_weight] [--text_model DIR]
                           [--speech_model DIR]

Data: `--data DIR` (a KEMDy20 root), else config.KEMDY20_ROOT when it exists, else the synthetic
`--preset` generated into config.DEMO_ROOT. Stages: dataframes -> STE_train -> STE_forward ->
generate_graph -> train_val. A stage is skipped only when its outputs exist for the same configuration,
the same session splits and the same upstream outputs (its key in pipeline_state.json); the dataframe
stage also needs the files it reads to match by name, size and modification time (kemdy20.fingerprint).
`--force` reruns them all. Synthetic data runs config.DEMO (sized for CPU), a KEMDy20 root the STE_*,
GRAPH and GNN settings; `--profile` picks either explicitly.

`--cv K`, `--seeds N`, `--ablation`, `--jobs N`, `--class_weight` and the encoder input options, with
the folders each one writes: docs/cross-validation.md; what every stage writes: docs/outputs.md;
`--text_model` / `--speech_model`: docs/pretrained.md; `--stacking`: docs/evaluation.md (results
folders end in `_<stacking>` unless it is the default). An option that changes a stage's result is in
that stage's key, so a switch retrains it rather than reusing another run's outputs. Each CV fold (and
each seed's tree) has its own pipeline_state.json: an interrupted run resumes at the fold and stage
where it stopped.

Prints the test sessions' segment-level table (majority baseline, encoder only, GNN) and, as the
last line, the path of the run's metrics.json (with --cv: of results/<data>_cvK/summary_<modalities>.json;
with --ablation: of ablation.json; with several seeds: of the seeds summary).
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import cross_validation
import generate_graph
import model_folder
import train_val
from encoder.core import (
    checkpoints,
    config,
    distributed,
    extraction,
    frames,
    kemdy20,
    pretrained,
    synthetic,
    training,
    util,
)

STATE_FILE = "pipeline_state.json"
# On a real KEMDy20 download: config.STE_*, config.GRAPH and config.GNN as they are (a profile like config.DEMO).
NO_OVERRIDES: dict[str, Any] = {"STE_inputs": {}, "STE_optimization_params": {}, "GRAPH": {}, "GNN": {}}
STACKING = ("insample", "split", "split-seen")
DEFAULT_STACKING = "insample"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="KEMDy20 root (default: config.KEMDY20_ROOT if present, else "
                                                  "the synthetic preset)")
    parser.add_argument("--preset", choices=sorted(synthetic.PRESETS), default=config.DEMO["preset"],
                        help="synthetic preset generated when no KEMDy20 is configured")
    parser.add_argument("--seed", type=int, default=config.SEED, help="seed of the synthetic data and of training")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when available, else the CPU), 'cpu' or a CUDA device index")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("--modalities", default="audio,eda,temp",
                        help="modalities the GNN uses (any subset of audio,eda,temp,text,lm,ssl; lm and ssl "
                             "need --text_model / --speech_model), for ablations")
    parser.add_argument("--profile", choices=("demo", "full"), default=None,
                        help="settings: demo = config.DEMO (CPU-sized), full = config.STE_*, GRAPH and GNN; "
                             "default: demo on the synthetic preset, full on a KEMDy20 root")
    parser.add_argument("--stacking", choices=STACKING, default=DEFAULT_STACKING,
                        help="insample: the encoder is fitted on the GNN's training sessions; split: on half of "
                             "them, the GNN trains on the other half only; split-seen: the GNN trains on the "
                             "encoder's half (the control of the in-sample gap measurement)")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="session K-fold cross-validation over the annotated sessions (K >= 2)")
    parser.add_argument("--text_model", type=Path, default=config.PRETRAINED["text_model"],
                        help="local language model folder for the `lm` block (transformers format)")
    parser.add_argument("--speech_model", type=Path, default=config.PRETRAINED["speech_model"],
                        help="local speech SSL model folder (wav2vec2/HuBERT/WavLM) for the `ssl` block")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="train with the N seeds --seed ... --seed+N-1 and report mean ± sd over them")
    parser.add_argument("--keep_encoder", action="store_true",
                        help="with --seeds: every seed's GNN and temporal baseline on the first seed's encoder, "
                             "features and graphs (only they are retrained)")
    parser.add_argument("--ablation", action="store_true",
                        help="with --cv: the GNN and its temporal baseline on every non-empty subset of "
                             "--modalities, from the same fold encoders; writes ablation.json")
    parser.add_argument("--class_weight", action="store_true",
                        help="inverse-frequency class weights in the encoder's and the GNN's loss; results "
                             "folder names end in _cw")
    parser.add_argument("--bio_clip_length", type=int, default=None, metavar="STEPS",
                        help="EDA/TEMP clip length in 4 Hz steps, apart from the audio clip (e.g. 41 ≈ 10 s); "
                             "default config.STE_inputs; folder names get _bioSTEPS")
    parser.add_argument("--participant_norm", action=argparse.BooleanOptionalAction, default=None,
                        help="standardise spectrogram, EDA and TEMP per participant and session from the "
                             "participant's own signal (encoder/core/participant.py); default config.STE_inputs "
                             f"({config.STE_inputs['participant_norm']}); folder names get _pnorm / _nopnorm "
                             "when it differs from the default")
    parser.add_argument("--eda_components", action=argparse.BooleanOptionalAction, default=None,
                        help="NeuroKit2 tonic, phasic and SCR-peak channels beside the raw EDA; default "
                             f"config.STE_inputs ({config.STE_inputs['eda_components']}); folder names get _edac "
                             "/ _noedac when it differs from the default")
    parser.add_argument("--cross_identity", choices=("cin", "ciy"), default=None,
                        help="graph edges within one speaker (cin) or also to the other speaker (ciy); default "
                             f"config.GRAPH ({config.GRAPH['cross_identity']}). Set apart from it, the graphs and "
                             "GNNs are built beside the default's on the same encoders and features (with --cv: in "
                             "the same folds), their folders and summaries ending in _ciy / _cin")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="with --cv: train a fold's GNN stages (one per --ablation subset, one per "
                             "--keep_encoder seed) in up to N worker processes; the same results as N = 1")
    parser.add_argument("--work", type=Path, default=config.REPO_ROOT,
                        help="folder that receives encoder/STE_TRAIN, features/, graphs/ and results/")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.keep_encoder and args.seeds < 2:
        parser.error("--keep_encoder needs --seeds N with N >= 2")
    if args.ablation and not args.cv:
        parser.error("--ablation needs --cv K")
    if args.bio_clip_length is not None and args.bio_clip_length < 1:
        parser.error("--bio_clip_length must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.jobs > 1 and not args.cv:
        parser.error("--jobs N with N >= 2 needs --cv K (the single run trains its GNNs one after the other)")
    return args


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


def resolve_data(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    """The dataset root, what identifies it, and whether it is the project's synthetic data."""
    if args.data is not None:
        return args.data, {"root": str(args.data.resolve())}, False
    if config.KEMDY20_ROOT.exists():
        return config.KEMDY20_ROOT, {"root": str(config.KEMDY20_ROOT.resolve())}, False
    return config.DEMO_ROOT, {"synthetic": args.preset, "seed": args.seed,
                              "generator": synthetic.GENERATOR_VERSION}, True


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
    return pipeline.stage("frames", key, [root / name for name in frames.ARTIFACTS], build)


def run_chain(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str, settings: dict[str, Any],
              dirs: ChainDirs, splits: dict[str, Sequence[int]], fold: int | None, seed: int | None = None) -> Path:
    """STE_train -> STE_forward -> generate_graph -> train_val for one set of splits; returns metrics.json.
    `seed`: of the training (default args.seed)."""
    seed = args.seed if seed is None else seed
    upstream = run_upstream(args, pipeline, root, frames_stamp, settings, dirs, splits, fold, seed)
    return run_gnn(args, pipeline, settings, dirs, upstream, args.modalities, seed)


@dataclass
class Upstream:
    """What the GNN stage needs of the stages before it: the graph flags and the graphs' stage key."""

    graph_flags: list[str]
    graphs_stamp: str
    scope: dict[str, Any]
    fold: int | None


def run_upstream(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str,
                 settings: dict[str, Any], dirs: ChainDirs, splits: dict[str, Sequence[int]], fold: int | None,
                 seed: int) -> Upstream:
    """STE_train -> STE_forward -> generate_graph, the stages every modality set shares."""
    encoder_splits, gnn_splits = stacking_splits(splits, args.stacking)
    scope = {"splits": gnn_splits, "encoder_splits": encoder_splits, "fold": fold, "stacking": args.stacking}
    inputs = settings["STE_inputs"]
    opt = {**settings["STE_optimization_params"], "out_dir": dirs.ste, "seed": seed}
    encoder_key = {"frames": frames_stamp, "inputs": util.merge_settings(config.STE_inputs, inputs),
                   "optimization": util.merge_settings(config.STE_optimization_params, opt),
                   "splits": encoder_splits, "fold": fold}
    best = dirs.ste / "best.pth"
    encoder_stamp = pipeline.stage(
        "STE_train", encoder_key, [best],
        lambda: training.train_encoder(device=args.device, root=root, inputs=inputs, optimization=opt,
                                       splits=encoder_splits))
    if fold is not None:  # a trained fold encoder serves features and prediction from best.pth alone
        for path in checkpoints.epoch_checkpoints(dirs.ste):  # (each epoch file holds weights and optimizer)
            path.unlink()
    models = {"text_model": args.text_model, "speech_model": args.speech_model}
    features_key = {"encoder": encoder_stamp, "checkpoint": util.file_sha256(best) if best.exists() else None,
                    "text": config.TEXT, **scope}
    if args.text_model or args.speech_model:  # keys of runs without pretrained blocks stay as they were
        features_key["pretrained"] = pretrained.settings_key(util.merge_settings(config.PRETRAINED, models))
    causal = "--causal" in settings["gnn_flags"]  # a causal GNN's features: prefix participant statistics
    if causal:
        features_key["causal"] = True
    features_stamp = pipeline.stage(
        "STE_forward", features_key,
        [dirs.features / extraction.MANIFEST_FILE, dirs.features / extraction.METRICS_FILE],
        lambda: extraction.extract_features(device=args.device, root=root, checkpoint=best, out_dir=dirs.features,
                                            splits=gnn_splits, encoder_splits=encoder_splits, pretrained=models,
                                            forward=args.forward, causal=causal))
    variant = graph_variant(args)
    graph_flags = ["--features_dir", str(dirs.features), "--graphs_dir", str(dirs.graphs), *settings["graph_flags"],
                   *(["--cross_identity", args.cross_identity] if variant else [])]
    graph_args = generate_graph.parse_args([*graph_flags, "--force"])
    _, graph_dir = generate_graph.graph_paths(graph_args)
    graph_key = {"features": features_stamp, "flags": graph_flags, "config": dict(config.GRAPH), **scope}
    graphs_stamp = pipeline.stage("generate_graph" + variant.replace("_", " "), graph_key,
                                  [graph_dir], lambda: generate_graph.build_graphs(graph_args))
    return Upstream(graph_flags, graphs_stamp, scope, fold)


def run_gnn(args: argparse.Namespace, pipeline: Pipeline, settings: dict[str, Any], dirs: ChainDirs,
            upstream: Upstream, modalities: str, seed: int, stage_suffix: str = "") -> Path:
    """train_val (the GNN and its temporal baseline) on one modality set, into dirs.results/dirs.exp;
    `stage_suffix` tells apart GNN stages that share a stage cache (a seed's on the first seed's encoder)."""
    stage = gnn_stage(args, settings, dirs, upstream, modalities, seed, stage_suffix)
    pipeline.stage(stage.name, stage.key, stage.outputs, partial(train_gnn, stage.flags))
    return dirs.metrics


@dataclass
class GnnStage:
    """One train_val stage: its name in the stage cache, its key, its outputs and train_val's flags."""

    name: str
    key: dict[str, Any]
    outputs: list[Path]
    flags: list[str]


def gnn_stage(args: argparse.Namespace, settings: dict[str, Any], dirs: ChainDirs, upstream: Upstream,
              modalities: str, seed: int, stage_suffix: str = "") -> GnnStage:
    """The train_val stage of one modality set and seed (see run_gnn)."""
    gnn_flags = [*upstream.graph_flags, "--results_dir", str(dirs.results), "--exp", dirs.exp, "--seed", str(seed),
                 "--modalities", modalities, "--device", str(args.device), *settings["gnn_flags"]]
    # a fold's stage cache holds one GNN per modality set; the single run's keeps one
    stage = "train_val" if upstream.fold is None else f"train_val {cross_validation.modality_tag(modalities)}"
    stage += graph_variant(args).replace("_", " ")  # the GNN on other graphs beside the default's
    # the temporal baseline's predictions among the outputs: a GNN folder from before it existed is retrained
    # config.GNN in the key: a setting edited there (the flags only override it) retrains the stage
    key = {"graphs": upstream.graphs_stamp, "flags": gnn_flags, "config": dict(config.GNN), **upstream.scope}
    return GnnStage(stage + stage_suffix, key,
                    [dirs.metrics, dirs.metrics.parent / model_folder.TEMPORAL_PREDICTIONS_FILE], gnn_flags)


def train_gnn(flags: list[str]) -> float:
    """train_val.py with these flags; returns its wall time in seconds (a worker's task)."""
    start = time.perf_counter()
    train_val.train_and_evaluate(train_val.parse_args(flags))
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
                pipeline.stage(stage.name, stage.key, stage.outputs, partial(train_gnn, stage.flags))
            return
        pending = [(stage, stamp) for stage in stages
                   if not pipeline.up_to_date(stage.name, stamp := digest(stage.key), stage.outputs)]
        if len(pending) < 2:  # not worth a worker's start
            for stage, _ in pending:
                pipeline.stage(stage.name, stage.key, stage.outputs, partial(train_gnn, stage.flags))
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_started)
        before = list(pipeline.state)
        futures = {}
        for i, (stage, stamp) in enumerate(pending):
            print(f"{pipeline.tag(stage.name)} running")
            futures[self._pool.submit(train_gnn, stage.flags)] = (i, stage, stamp)
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


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    work = args.work
    args.device = distributed.resolve_device(args.device)
    root, data_key, is_synthetic = resolve_data(args)
    profile = args.profile or ("demo" if is_synthetic else "full")
    settings = with_class_weight(profile_settings(config.DEMO if profile == "demo" else NO_OVERRIDES),
                                 args.class_weight)
    settings, options_tag = with_input_options(settings, args)
    settings, args.forward = with_device_workers(settings, args.device)
    pipeline = Pipeline(work / STATE_FILE, args.force)

    def generate() -> None:
        if root.exists():
            shutil.rmtree(root)
        summary = synthetic.make_dataset(root, preset=args.preset, seed=args.seed)
        print(f"generated synthetic KEMDy20 ({args.preset}, seed {args.seed}): {summary['segments']} segments "
              f"in {summary['sessions']} sessions at {root}")

    data_stamp = data_key
    if is_synthetic:
        data_stamp = pipeline.stage("data", data_key, [root / "annotation"], generate)

    frames_stamp = frames_stage(pipeline, root, data_stamp)
    data_name = "demo" if is_synthetic else root.name
    stacking = "" if args.stacking == DEFAULT_STACKING else f"_{args.stacking}"
    variant = options_tag + ("_cw" if args.class_weight else "")  # input options and class weights
    if args.cv:
        # not named after the modalities: every modality set shares a fold's encoder, features and graphs
        cv_dir = work / "results" / f"{data_name}{stacking}_cv{args.cv}{variant}"
        run_cv(args, pipeline, root, frames_stamp, settings, cv_dir, started)
        return
    exp = f"{data_name}_{cross_validation.modality_tag(args.modalities)}{stacking}{variant}{graph_variant(args)}"
    run_single(args, pipeline, root, frames_stamp, settings, exp, started)


def as_flags(values: dict[str, Any]) -> list[str]:
    """Command-line flags that set `values` (a config.GRAPH / config.GNN override), in their order:
    `--name value`, or `--name` / `--no-name` for a boolean."""
    flags: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", str(value)]
    return flags


def profile_settings(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile (config.DEMO, NO_OVERRIDES) as the stages take it: its GRAPH and GNN overrides become
    generate_graph.py's and train_val.py's flags (`graph_flags`, `gnn_flags`; in the stage keys)."""
    settings = {k: v for k, v in profile.items() if k not in ("GRAPH", "GNN")}
    return {**settings, "graph_flags": as_flags(profile["GRAPH"]), "gnn_flags": as_flags(profile["GNN"])}


def with_class_weight(settings: dict[str, Any], class_weight: bool) -> dict[str, Any]:
    """`settings` with inverse-frequency class weights in the encoder's and the GNN's loss when asked
    (both stage keys change with them)."""
    if not class_weight:
        return settings
    return {**settings, "STE_optimization_params": {**settings["STE_optimization_params"], "class_weight": True},
            "gnn_flags": [*settings["gnn_flags"], "--class_weight"]}


def with_device_workers(settings: dict[str, Any], device: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """`settings` and STE_forward overrides with at least config.CUDA_MIN_WORKERS loader workers (at most the
    cores less two) on a CUDA device; unchanged elsewhere."""
    if device.type != "cuda":
        return settings, {}
    workers = min(config.CUDA_MIN_WORKERS, max((os.cpu_count() or 1) - 2, 0))
    opt = settings["STE_optimization_params"]
    train = max(int(opt.get("num_workers", config.STE_optimization_params["num_workers"])), workers)
    forward = max(int(config.STE_forward_params["num_workers"]), workers)
    return {**settings, "STE_optimization_params": {**opt, "num_workers": train}}, {"num_workers": forward}


def with_input_options(settings: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """`settings` with the encoder input options (participant.py) the command line sets apart from
    config.STE_inputs, and the tag they add to the results folder names (`_bioN`, `_pnorm` or
    `_nopnorm`, `_edac` or `_noedac`; empty when every option is the default)."""
    asked = {"bio_clip_length": args.bio_clip_length, "participant_norm": args.participant_norm,
             "eda_components": args.eda_components}
    chosen = {k: v for k, v in asked.items() if v is not None and v != config.STE_inputs[k]}
    if not chosen:
        return settings, ""
    names = {"participant_norm": "pnorm", "eda_components": "edac"}
    tag = "".join(f"_bio{v}" if k == "bio_clip_length" else f"_{'' if v else 'no'}{names[k]}"
                  for k, v in chosen.items())
    return {**settings, "STE_inputs": {**settings["STE_inputs"], **chosen}}, tag


def seed_list(args: argparse.Namespace) -> list[int]:
    """The training seeds: --seed, --seed + 1, ..., --seed + N - 1."""
    return [args.seed + i for i in range(args.seeds)]


def run_single(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str, settings: dict[str, Any],
               exp: str, started: float) -> None:
    """The default split, once per seed (see the module docstring for where a seed writes); prints each
    seed's table and, with several seeds, their mean ± sd; the last line is the path of metrics.json
    (several seeds: of results/seeds_<exp>[_keep_encoder].json)."""
    work, first = args.work, args.seed
    runs = []
    for seed in seed_list(args):
        seed_pipeline, stage_suffix = pipeline, ""
        dirs = ChainDirs(work / "encoder" / "STE_TRAIN", work / "features", work / "graphs", work / "results", exp)
        if seed != first and args.keep_encoder:
            dirs, stage_suffix = replace(dirs, exp=f"{exp}_seed{seed}"), f" seed {seed}"
        elif seed != first:
            seed_work = work / "results" / f"seed_{seed}"
            seed_pipeline = Pipeline(seed_work / STATE_FILE, args.force, label=f"seed {seed}")
            dirs = ChainDirs(seed_work / "encoder", seed_work / "features", seed_work / "graphs", seed_work, exp)
        upstream = run_upstream(args, seed_pipeline, root, frames_stamp, settings, dirs, util.session_splits(), None,
                                first if args.keep_encoder else seed)
        metrics_path = run_gnn(args, seed_pipeline, settings, dirs, upstream, args.modalities, seed, stage_suffix)
        if seed_pipeline is not pipeline:
            pipeline.timings.update({f"seed {seed} {name}": t for name, t in seed_pipeline.timings.items()})
        runs.append((seed, dirs, metrics_path))
    print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in pipeline.timings.items())
          + f"; total {time.perf_counter() - started:.0f}")
    per_seed = []
    for seed, dirs, metrics_path in runs:
        if len(runs) > 1:
            print(f"\nseed {seed}:")
        train_val.print_summary({**util.read_json(metrics_path), "metrics_path": str(metrics_path)})
        if len(runs) == 1:
            return
        pred = cross_validation.fold_predictions(dirs.results, dirs.exp, dirs.features)
        per_seed.append({"seed": seed, "modalities": args.modalities, "metrics_path": str(metrics_path),
                         "pooled": cross_validation.pooled_figures(pred["sessions"], pred["targets"],
                                                                   pred["predictions"], seed=first)})
    summary = cross_validation.seeds_summary(per_seed, seed_list(args), args.keep_encoder)
    summary["per_seed"] = per_seed
    path = work / "results" / f"seeds_{exp}{'_keep_encoder' if args.keep_encoder else ''}.json"
    util.write_json(summary, path)
    print("\n" + cross_validation.format_seeds(summary))
    print(path)


def graph_variant(args: argparse.Namespace) -> str:
    """`_ciy` / `_cin` when --cross_identity differs from config.GRAPH, else empty: the suffix of the GNN
    folders and summaries (and, with a space, of the graph and GNN stage names) of graphs built beside the
    default's on the same encoder and features."""
    chosen = args.cross_identity
    return f"_{chosen}" if chosen is not None and chosen != config.GRAPH["cross_identity"] else ""


def seed_suffix(args: argparse.Namespace, seed: int) -> str:
    """Of a seed's GNN folders and summaries: graph_variant, then `_seedS` for a seed's GNN on the first
    seed's fold encoders (--keep_encoder)."""
    return graph_variant(args) + (f"_seed{seed}" if seed != args.seed and args.keep_encoder else "")


def train_folds(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str,
                settings: dict[str, Any], cv_dir: Path, folds: list[dict[str, tuple[int, ...]]],
                modality_sets: list[str], workers: GnnWorkers) -> dict[int, tuple[Path, list[Path]]]:
    """Every fold's stages for every seed; returns per seed the folder of its summaries and its fold
    folders. A fold's train_val stages (one per modality set, and with --keep_encoder per seed) go to
    `workers` together, after the fold's encoder, features and graphs. With --keep_encoder one pass over
    the folds trains every seed's GNNs on the first seed's fold encoders; else each seed has a pass."""
    first = args.seed
    passes = [seed_list(args)] if args.keep_encoder else [[seed] for seed in seed_list(args)]
    seed_dirs = {}
    for pass_seeds in passes:
        tree_seed = pass_seeds[0]
        own_tree = tree_seed != first  # seed S's whole chain under seed_S/
        seed_dir = cv_dir / f"seed_{tree_seed}" if own_tree else cv_dir
        fold_dirs = []
        for k, splits in enumerate(folds):
            fold_dir = seed_dir / f"fold_{k}"
            seed_note = f" seed {tree_seed}" if own_tree else ""
            label = f"fold {k}{seed_note}"
            print(f"\nfold {k}/{args.cv}{seed_note}: " + ", ".join(f"{name} {list(splits[name])} ({len(splits[name])})"
                                                                  for name in ("train", "val", "test")))
            util.write_json(splits, fold_dir / cross_validation.SPLITS_FILE)
            fold_pipeline = Pipeline(fold_dir / STATE_FILE, args.force, label=label)
            dirs = ChainDirs(fold_dir / "encoder", fold_dir / "features", fold_dir / "graphs", fold_dir, "")
            upstream = run_upstream(args, fold_pipeline, root, frames_stamp, settings, dirs, splits, k, tree_seed)
            stages = []
            for seed in pass_seeds:
                suffix = seed_suffix(args, seed)
                keep = seed != args.seed and args.keep_encoder
                stages += [gnn_stage(args, settings, replace(dirs, exp=cross_validation.gnn_folder(modalities, suffix)),
                                     upstream, modalities, seed, f" seed {seed}" if keep else "")
                           for modalities in modality_sets]
            workers.run(fold_pipeline, stages)
            fold_dirs.append(fold_dir)
            pipeline.timings.update({f"{label} {name}": t for name, t in fold_pipeline.timings.items()})
        seed_dirs.update({seed: (seed_dir, fold_dirs) for seed in pass_seeds})
    return seed_dirs


def run_cv(args: argparse.Namespace, pipeline: Pipeline, root: Path, frames_stamp: str, settings: dict[str, Any],
           cv_dir: Path, started: float) -> None:
    """Every fold end to end (cached per fold and stage) for every seed, then the summary of each
    modality set (with --ablation: of every subset of --modalities, and the ablation table), and with
    several seeds their mean ± sd. The last line is the path of the summary of --modalities (with
    --ablation: of ablation.json; with several seeds: of seeds_<modalities>[_keep_encoder].json). The
    folds cut the sessions that have a usable segment (frames.kept_sessions); a session without one is
    named, and left out of every fold."""
    sessions = frames.kept_sessions(root)
    unusable = sorted(kemdy20.sessions_present(root) - set(sessions))
    if unusable:
        print(f"sessions without a usable segment, in no fold: {unusable}")
    try:
        folds = [util.cv_splits(sessions, args.cv, k) for k in range(args.cv)]
    except ValueError as err:
        raise util.DataError(f"--cv {args.cv} over the {len(sessions)} sessions with a usable segment: {err}",
                             root) from None
    modality_sets = cross_validation.modality_subsets(args.modalities) if args.ablation else [args.modalities]
    first, seeds = args.seed, seed_list(args)
    with GnnWorkers(args.jobs) as workers:
        seed_dirs = train_folds(args, pipeline, root, frames_stamp, settings, cv_dir, folds, modality_sets, workers)
    reports, per_seed = [], []
    last: Path | None = None  # the path printed last
    for seed in seeds:
        seed_dir, fold_dirs = seed_dirs[seed]
        summaries = {m: cross_validation.summarise(fold_dirs, m, seed=first, unusable_sessions=unusable,
                                                   suffix=seed_suffix(args, seed)) for m in modality_sets}
        written = {m: cross_validation.write_summary(summaries[m], seed_dir) for m in modality_sets}
        last = written[args.modalities]
        reports.append((f"\nseed {seed}:\n" if args.seeds > 1 else "")
                       + cross_validation.format_summary(summaries[args.modalities]))
        if args.ablation:
            ablation = cross_validation.ablation_summary(fold_dirs, summaries, args.modalities, seed=first,
                                                         suffix=seed_suffix(args, seed))
            last = cross_validation.write_ablation(ablation, seed_dir)
            reports.append(cross_validation.format_ablation(ablation))
        per_seed.append({**summaries[args.modalities], "seed": seed, "summary": str(written[args.modalities])})
    print(f"\nwall time {time.perf_counter() - started:.0f} s for {args.cv} folds"
          + (f" and {args.seeds} seeds" if args.seeds > 1 else ""))
    print("\n".join(reports))
    if args.seeds > 1:
        over_seeds = cross_validation.seed_differences([seed_dirs[s][1] for s in seeds], args.modalities,
                                                       [seed_suffix(args, s) for s in seeds], seed=first)
        summary = cross_validation.seeds_summary(per_seed, seeds, args.keep_encoder, over_seeds)
        summary["per_seed"] = [{"seed": s["seed"], "summary": s["summary"]} for s in per_seed]
        last = cv_dir / (f"seeds_{cross_validation.modality_tag(args.modalities)}{graph_variant(args)}"
                         f"{'_keep_encoder' if args.keep_encoder else ''}.json")
        util.write_json(summary, last)
        print("\n" + cross_validation.format_seeds(summary))
    print(last)


if __name__ == "__main__":
    util.run_cli(main)

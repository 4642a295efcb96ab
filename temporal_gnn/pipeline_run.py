"""One command from recordings to a results table.

    python run_pipeline.py [--data DIR] [--preset demo] [--device auto|cpu|N] [--force]
                           [--modalities prosody,audio,eda,temp] [--profile demo|full]
                           [--stacking insample|split|split-seen] [--cv K [--ablation]]
                           [--seeds N [--keep_encoder]] [--jobs N] [--class_weight] [--text_model DIR]
                           [--speech_model DIR] [--name NAME] [--participant_norm] [--eda_components] [--contour]
                           [--contour_norm] [--bio_norm] [--bio_clip_length STEPS] [--audio_pass segment|clip]
                           [--cross_identity cin|ciy]

Data: `--data DIR` (a KEMDy20 root), else config.KEMDY20_ROOT when it exists, else the synthetic
`--preset` generated into config.DEMO_ROOT. Stages: dataframes -> STE_train -> STE_forward ->
generate_graph -> train_val. A stage is skipped only when its outputs exist for the same configuration,
the same session splits and the same upstream outputs (its key in pipeline_state.json); the dataframe
stage also needs the files it reads to match by name, size and modification time (kemdy20.fingerprint).
`--force` reruns them all. Synthetic data runs config.DEMO (sized for CPU), a KEMDy20 root the STE_*,
GRAPH and GNN settings; `--profile` picks either explicitly. The graph and GNN stages get their settings as
objects built once here (graph_building.GraphSettings, gnn_training.GnnSettings: config.GRAPH / config.GNN with
the profile's entries and the run's flags over them, checked before any stage runs). Each pipeline seed S
(--seed, --seeds) trains the GNN with config.GNN["seed"] + S - config.SEED (stages.gnn_seed) and the encoder
with config.STE_optimization_params["seed"] + S - config.SEED (stages.encoder_seed): the pipeline's seed itself
while both equal SEED, as shipped.

`--cv K`, `--seeds N`, `--ablation`, `--jobs N`, `--class_weight` and the encoder input options, with
the folders each one writes: docs/cross-validation.md; what every stage writes: docs/outputs.md;
`--text_model` / `--speech_model`: docs/pretrained.md; `--stacking`: docs/evaluation.md (results
folders end in `_<stacking>` unless it is the default). An option that changes a stage's result is in
that stage's key, so a switch retrains it rather than reusing another run's outputs. Each CV fold (and
each seed's tree) has its own pipeline_state.json: an interrupted run resumes at the fold and stage
where it stopped. The run is planned once as a list of chains and executed by stages.py; every folder
name comes from encoder/core/layout.py. `--name` names the experiment (its results folders end in
`_<NAME>`; by default the input options set apart from config.py) and every CV folder and single-run
results folder records the resolved settings and the environment in settings.json. One run at a time
holds a work folder (a lock on <work>/.run_pipeline.lock): a second one is refused at once, naming the
first one's pid; a killed run's lock is gone with its process.

Prints the test sessions' segment-level table (majority baseline, encoder only, GNN) and, as the
last line, the path of the run's metrics.json (with --cv: of results/<data>_cvK/summary_<modalities>.json;
with --ablation: of ablation.json; with several seeds: of the seeds summary).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from encoder.core import (
    config,
    distributed,
    frames,
    kemdy20,
    layout,
    models,
    pretrained,
    streams,
    synthetic,
    training,
    util,
)
from temporal_gnn import cv_results, gnn_model, gnn_training, graph_building, stages

# On a real KEMDy20 download: config.STE_*, config.GRAPH and config.GNN as they are (a profile like config.DEMO).
# The encoder input options that are on/off flags (--name / --no-name): name -> (folder-name tag, what it does), in
# the order --help lists them.
INPUT_SWITCHES = {
    "participant_norm": ("pnorm", "standardise spectrogram, EDA and TEMP per participant and session from the "
                                  "participant's own signal (encoder/core/participant.py)"),
    "contour": ("contour", "prosodic contour rows (F0, periodicity, loudness) below the mel bands, read by a 1-D "
                           "ResNet18 of the audio stream (encoder/core/contours.py)"),
    "contour_norm": ("cnorm", "standardise the contour rows alone per participant and session (needs --contour)"),
    "bio_norm": ("bnorm", "standardise EDA and TEMP alone per participant and session, the spectrogram keeping the "
                          "training-set normalisation"),
    "eda_components": ("edac", "NeuroKit2 tonic, phasic and SCR-peak channels beside the raw EDA"),
}
# The encoder's training flags: flag -> (the STE_optimization_params entries it sets, its folder-name tag's prefix).
LEARNING_FLAGS = {"encoder_epochs": (("epochs", "scheduler_T_max"), "e"),
                  "clips_per_segment": (("clips_per_segment",), "c"),
                  "encoder_select_on": (("select_on",), "sel")}
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
    parser.add_argument("--modalities", default=config.MODALITIES,
                        help="modalities the GNN uses (default config.MODALITIES; any subset of prosody,audio,eda,"
                             "temp,text,lm,ssl; lm and ssl need --text_model / --speech_model), for ablations")
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
    for name, (tag, what) in INPUT_SWITCHES.items():
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                            help=f"{what}; default config.STE_inputs ({config.STE_inputs[name]}); folder names get "
                                 f"_{tag} / _no{tag} when it differs from the default")
    parser.add_argument("--audio_pass", choices=models.AUDIO_PASSES, default=None,
                        help="the audio ResNet18 once over each segment's spectrogram, each node pooled from its "
                             "clip window (segment), or over every node's clip (clip, the original's); default "
                             f"config.STE_inputs ({config.STE_inputs['audio_pass']}); folder names get _segpass / "
                             "_clippass when it differs from the default")
    parser.add_argument("--encoder_epochs", type=int, default=None, metavar="N",
                        help="the encoder's epochs, its cosine schedule's period with them; default the profile's "
                             "(config.DEMO or config.STE_optimization_params); folder names get _eN")
    parser.add_argument("--clips_per_segment", type=int, default=None, metavar="K",
                        help="clips of every training segment per encoder epoch; default the profile's; folder "
                             "names get _cK")
    parser.add_argument("--encoder_select_on", choices=training.SELECT_ON, default=None,
                        help="the encoder's best.pth: the epoch with the best validation macro_f1, loss, macro_f1 "
                             "with the loss breaking ties, or the last epoch; default the profile's; folder names "
                             "get _sel<choice> (e.g. _sellast)")
    parser.add_argument("--cross_identity", choices=("cin", "ciy"), default=None,
                        help="graph edges within one speaker (cin) or also to the other speaker (ciy); default "
                             f"config.GRAPH ({config.GRAPH['cross_identity']}). Set apart from it, the graphs and "
                             "GNNs are built beside the default's on the same encoders and features (with --cv: in "
                             "the same folds), their folders and summaries ending in _ciy / _cin")
    parser.add_argument("--name", default=None,
                        help="experiment name: the CV folder becomes results/<data>_cvK_<NAME> and the single run's "
                             "results/<data>_<modalities>_<NAME>, with the run's settings in settings.json "
                             "(default: the input options set apart from config.py, e.g. pnorm, bio41, cw)")
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
    for flag in ("encoder_epochs", "clips_per_segment", "bio_clip_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*", args.name):
        parser.error(f"--name {args.name!r}: letters, digits, '.', '-' and single '_' between them")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.jobs > 1 and not args.cv:
        parser.error("--jobs N with N >= 2 needs --cv K (the single run trains its GNNs one after the other)")
    return args


def resolve_data(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    """The dataset root, what identifies it, and whether it is the project's synthetic data."""
    if args.data is not None:
        return args.data, {"root": str(args.data.resolve())}, False
    if config.KEMDY20_ROOT.exists():
        return config.KEMDY20_ROOT, {"root": str(config.KEMDY20_ROOT.resolve())}, False
    return config.DEMO_ROOT, {"synthetic": args.preset, "seed": args.seed,
                              "generator": synthetic.GENERATOR_VERSION}, True


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before any stage runs, what a later stage would refuse: a `--data` root that is not a folder,
    a `--modalities` set with a name no stage writes, a repeated name, or a pretrained block without
    its model folder, and contour rows with the segment audio pass (one-line util.DataError)."""
    if args.data is not None and not args.data.is_dir():
        raise util.DataError("dataset root not found (--data)", args.data)
    known = (*streams.feature_order(), *gnn_model.OPT_IN_BLOCKS)  # the encoder's streams, then every other block
    names = args.modalities.split(",")
    unknown = [name for name in names if name not in known]
    if unknown or len(set(names)) != len(names):
        what = f"unknown {', '.join(unknown)}" if unknown else "a repeated name"
        raise util.DataError(f"--modalities {args.modalities}: {what} (the blocks are {', '.join(known)})")
    for name, folder, flag in ((pretrained.TEXT, args.text_model, "--text_model"),
                               (pretrained.SPEECH, args.speech_model, "--speech_model")):
        if name in names and folder is None:
            raise util.DataError(f"--modalities {args.modalities}: the `{name}` block needs {flag} DIR")
    contour = config.STE_inputs["contour"] if args.contour is None else args.contour
    audio_pass = args.audio_pass or config.STE_inputs["audio_pass"]
    if contour and audio_pass != "clip":
        raise util.DataError(f"--contour needs the per-clip audio pass, not --audio_pass {audio_pass}")
    if (config.STE_inputs["contour_norm"] if args.contour_norm is None else args.contour_norm) and not contour:
        raise util.DataError("--contour_norm standardises the contour rows: it needs --contour")


def run(args: argparse.Namespace) -> None:
    """The run that the flags `args` name, in the work folder the caller holds (run_pipeline.py's main locks
    it)."""
    started = time.perf_counter()
    work = args.work
    args.device = distributed.resolve_device(args.device)
    root, data_key, is_synthetic = resolve_data(args)
    profile = args.profile or ("demo" if is_synthetic else "full")
    if profile == "demo" and (overrides := profile_overrides(config.DEMO)):
        print("profile demo: config.DEMO sets these for this run, over config.py's sections (edit config.DEMO to "
              "change them, or run --profile full):\n" + "\n".join(overrides))
    settings = checked_settings(args, profile)
    settings, option_tags = with_input_options(settings, args)
    settings, learning_tags = with_learning_options(settings, args)
    option_tags = learning_tags + option_tags
    settings, forward = with_device_workers(settings, args.device)
    settings["STE_forward"] = forward
    name = args.name if args.name is not None else "_".join(option_tags + (["cw"] if args.class_weight else []))
    pipeline = stages.Pipeline(work / layout.STATE_FILE, args.force)

    def generate() -> None:
        if root.exists():
            shutil.rmtree(root)
        summary = synthetic.make_dataset(root, preset=args.preset, seed=args.seed)
        print(f"generated synthetic KEMDy20 ({args.preset}, seed {args.seed}): {summary['segments']} segments "
              f"in {summary['sessions']} sessions at {root}")

    data_stamp = data_key
    if is_synthetic:
        data_stamp = pipeline.stage("data", data_key, [root / "annotation"], generate)

    frames_stamp = stages.frames_stage(pipeline, root, data_stamp)
    data_name = "demo" if is_synthetic else root.name
    stacking = "" if args.stacking == DEFAULT_STACKING else args.stacking
    recorded = run_settings(args, settings, name, data_key, profile)
    if args.cv:
        # not named after the modalities: every modality set shares a fold's encoder, features and graphs
        cv_dir = layout.cv_dir(work / "results", data_name, args.cv, name, stacking)
        run_cv(args, pipeline, root, frames_stamp, settings, cv_dir, started, recorded)
        return
    exp = layout.single_experiment(data_name, args.modalities, name, stacking) + stages.graph_variant(args)
    run_single(args, pipeline, root, frames_stamp, settings, exp, started, recorded)


PROFILE_SECTIONS = ("STE_inputs", "STE_optimization_params", "GRAPH", "GNN")


def profile_overrides(profile: dict[str, Any]) -> list[str]:
    """One line per value of `profile` (config.DEMO) that differs from its config.py section: what an edit of
    that section does not change while the profile is in force."""
    lines = []
    for section in PROFILE_SECTIONS:
        base = getattr(config, section)
        for key, value in profile.get(section, {}).items():
            if base.get(key) != value:
                lines.append(f"  {section}[{key!r}] = {value!r} (config.py's {section}: {base.get(key)!r})")
    return lines


def profile_settings(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile (config.DEMO, NO_OVERRIDES) as the stages take it: the encoder sections' overrides as they
    are, and the graph and GNN settings as objects, config.GRAPH / config.GNN as they are now with the
    profile's GRAPH and GNN entries over them (`graph`, `gnn`; a bad value is a ValueError)."""
    settings = {k: v for k, v in profile.items() if k not in ("GRAPH", "GNN")}
    return {**settings, "graph": graph_building.GraphSettings.from_config(profile["GRAPH"]),
            "gnn": gnn_training.GnnSettings.from_config(profile["GNN"])}


def with_class_weight(settings: dict[str, Any], class_weight: bool) -> dict[str, Any]:
    """`settings` with inverse-frequency class weights in the encoder's and the GNN's loss when asked
    (both stage keys change with them)."""
    if not class_weight:
        return settings
    return {**settings, "STE_optimization_params": {**settings["STE_optimization_params"], "class_weight": True},
            "gnn": replace(settings["gnn"], class_weight=True)}


def checked_settings(args: argparse.Namespace, profile: str) -> dict[str, Any]:
    """The run's settings: the profile's (profile_settings) with --class_weight, the graph and GNN settings
    checked, those of every GNN the run trains (stages.gnn_settings) included, before any stage runs; a bad
    value of config.py or of config.DEMO is a one-line util.DataError naming the setting."""
    try:
        settings = with_class_weight(profile_settings(config.DEMO if profile == "demo" else NO_OVERRIDES),
                                     args.class_weight)
        for seed in stages.seed_list(args):
            stages.gnn_settings(settings, args.modalities, seed)
    except ValueError as err:
        where = "config.py's GRAPH / GNN" + (" or config.DEMO" if profile == "demo" else "")
        raise util.DataError(f"{err} ({where})") from None
    return settings


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


def with_learning_options(settings: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """`settings` with the encoder's training length and checkpoint rule that the command line sets apart from the
    profile's (LEARNING_FLAGS: --encoder_epochs sets the cosine period too; --clips_per_segment;
    --encoder_select_on), and their tags (`eN`, `cK`, `sel<choice>`; none when every value is the profile's)."""
    opt = settings["STE_optimization_params"]
    overrides, tags = {}, []
    for flag, (keys, prefix) in LEARNING_FLAGS.items():
        value = getattr(args, flag)
        if value is None or all(opt.get(key, config.STE_optimization_params[key]) == value for key in keys):
            continue
        overrides.update(dict.fromkeys(keys, value))
        tags.append(prefix + str(value).replace("_", ""))
    if not overrides:
        return settings, tags
    return {**settings, "STE_optimization_params": {**opt, **overrides}}, tags


def with_input_options(settings: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """`settings` with the encoder input options (participant.py) the command line sets apart from
    config.STE_inputs, and their tags, the default experiment name's parts (`bioN`, `pnorm` or
    `nopnorm`, `edac` or `noedac`, `contour` or `nocontour`; none when every option is the default)."""
    asked = {"bio_clip_length": args.bio_clip_length, "participant_norm": args.participant_norm,
             "eda_components": args.eda_components, "audio_pass": args.audio_pass, "contour": args.contour,
             "contour_norm": args.contour_norm, "bio_norm": args.bio_norm}
    chosen = {k: v for k, v in asked.items() if v is not None and v != config.STE_inputs[k]}
    tags = [f"bio{v}" if k == "bio_clip_length" else f"{v[:3]}pass" if k == "audio_pass"
            else f"{'' if v else 'no'}{INPUT_SWITCHES[k][0]}" for k, v in chosen.items()]
    if not chosen:
        return settings, tags
    return {**settings, "STE_inputs": {**settings["STE_inputs"], **chosen}}, tags


def run_settings(args: argparse.Namespace, settings: dict[str, Any], name: str, data_key: dict[str, Any],
                 profile: str) -> dict[str, Any]:
    """What a results folder's settings.json records: the experiment's name and command, its data, every
    stage's resolved settings (config.py with the profile's and the flags' overrides; GRAPH and GNN: the
    settings objects' to_dict(), GNN's of the first seed's GNN on --modalities, `gnn_seeds` the seed of each
    pipeline seed's GNN) and the environment."""
    return {"name": name, "command": ["run_pipeline.py", *sys.argv[1:]], "data": data_key, "profile": profile,
            "modalities": args.modalities, "stacking": args.stacking, "seeds": stages.seed_list(args),
            "keep_encoder": args.keep_encoder, "cross_identity": args.cross_identity or config.GRAPH["cross_identity"],
            "STE_inputs": util.merge_settings(config.STE_inputs, settings["STE_inputs"]),
            "STE_optimization_params": util.merge_settings(config.STE_optimization_params,
                                                           settings["STE_optimization_params"]),
            "GRAPH": stages.graph_settings(args, settings).to_dict(),
            "GNN": stages.gnn_settings(settings, args.modalities, args.seed).to_dict(),
            "gnn_seeds": [stages.gnn_seed(settings["gnn"], seed) for seed in stages.seed_list(args)],
            "environment": util.environment(args.device)}


def run_single(args: argparse.Namespace, pipeline: stages.Pipeline, root: Path, frames_stamp: str,
               settings: dict[str, Any], exp: str, started: float, recorded: dict[str, Any]) -> None:
    """The default split, once per seed (stages.plan_single); prints each seed's table and, with several
    seeds, their mean ± sd; the last line is the path of metrics.json (several seeds: of
    results/seeds_<exp>[_keep_encoder].json). results/<exp>/settings.json records the run's settings."""
    chains = stages.plan_single(args, exp)
    with stages.GnnWorkers(1) as workers:
        stages.execute(args, pipeline, root, frames_stamp, settings, chains, workers)
    util.write_json(recorded, args.work / "results" / exp / layout.SETTINGS_FILE)
    print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in pipeline.timings.items())
          + f"; total {time.perf_counter() - started:.0f}")
    runs = [(gnn.seed, replace(chain.dirs, exp=gnn.exp)) for chain in chains for gnn in chain.gnns]
    per_seed = []
    for seed, dirs in runs:
        if len(runs) > 1:
            print(f"\nseed {seed}:")
        gnn_training.print_summary({**util.read_json(dirs.metrics), "metrics_path": str(dirs.metrics)})
        if len(runs) == 1:
            return
        pred = cv_results.fold_predictions(dirs.results, dirs.exp, dirs.features)
        per_seed.append({"seed": seed, "modalities": args.modalities, "metrics_path": str(dirs.metrics),
                         "pooled": cv_results.pooled_figures(pred["sessions"], pred["targets"],
                                                                   pred["predictions"], seed=args.seed)})
    summary = cv_results.seeds_summary(per_seed, stages.seed_list(args), args.keep_encoder)
    summary["per_seed"] = per_seed
    path = layout.seeds_summary_path(args.work / "results", exp, args.keep_encoder)
    util.write_json(summary, path)
    print("\n" + cv_results.format_seeds(summary))
    print(path)


def run_cv(args: argparse.Namespace, pipeline: stages.Pipeline, root: Path, frames_stamp: str, settings: dict[str, Any],
           cv_dir: Path, started: float, recorded: dict[str, Any]) -> None:
    """Every fold end to end (cached per fold and stage) for every seed (stages.plan_cv), then the summary of each
    modality set (with --ablation: of every subset of --modalities, and the ablation table), and with
    several seeds their mean ± sd. The last line is the path of the summary of --modalities (with
    --ablation: of ablation.json; with several seeds: of seeds_<modalities>[_keep_encoder].json). The
    folds cut the sessions that have a usable segment (frames.kept_sessions); a session without one is
    named, and left out of every fold. cv_dir/settings.json records the run's settings."""
    sessions = frames.kept_sessions(root)
    unusable = sorted(kemdy20.sessions_present(root) - set(sessions))
    if unusable:
        print(f"sessions without a usable segment, in no fold: {unusable}")
    try:
        folds = [util.cv_splits(sessions, args.cv, k) for k in range(args.cv)]
    except ValueError as err:
        raise util.DataError(f"--cv {args.cv} over the {len(sessions)} sessions with a usable segment: {err}",
                             root) from None
    modality_sets = cv_results.modality_subsets(args.modalities) if args.ablation else [args.modalities]
    util.write_json(recorded, cv_dir / layout.SETTINGS_FILE)
    with stages.GnnWorkers(args.jobs) as workers:
        plan = stages.plan_cv(args, cv_dir, folds, modality_sets)
        stages.execute(args, pipeline, root, frames_stamp, settings, plan, workers)
    first, seeds = args.seed, stages.seed_list(args)
    # a seed's summaries go beside the folds it was trained on; its GNN folders are told apart by suffix
    trees = {seed: layout.seed_tree(cv_dir, first if args.keep_encoder else seed, first) for seed in seeds}
    fold_dirs = {seed: [layout.fold_dir(trees[seed], k) for k in range(args.cv)] for seed in seeds}
    suffixes = {seed: stages.graph_variant(args) + layout.seed_suffix(seed, first, args.keep_encoder) for seed in seeds}
    reports, per_seed = [], []
    last: Path | None = None  # the path printed last
    for seed in seeds:
        summaries = {m: cv_results.summarise(fold_dirs[seed], m, seed=first, unusable_sessions=unusable,
                                                   suffix=suffixes[seed]) for m in modality_sets}
        written = {m: cv_results.write_summary(summaries[m], trees[seed]) for m in modality_sets}
        last = written[args.modalities]
        reports.append((f"\nseed {seed}:\n" if args.seeds > 1 else "")
                       + cv_results.format_summary(summaries[args.modalities]))
        if args.ablation:
            ablation = cv_results.ablation_summary(fold_dirs[seed], summaries, args.modalities, seed=first,
                                                         suffix=suffixes[seed])
            last = cv_results.write_ablation(ablation, trees[seed])
            reports.append(cv_results.format_ablation(ablation))
        per_seed.append({**summaries[args.modalities], "seed": seed, "summary": str(written[args.modalities])})
    print(f"\nwall time {time.perf_counter() - started:.0f} s for {args.cv} folds"
          + (f" and {args.seeds} seeds" if args.seeds > 1 else ""))
    print("\n".join(reports))
    if args.seeds > 1:
        over_seeds = cv_results.seed_differences([fold_dirs[s] for s in seeds], args.modalities,
                                                       [suffixes[s] for s in seeds], seed=first)
        summary = cv_results.seeds_summary(per_seed, seeds, args.keep_encoder, over_seeds)
        summary["per_seed"] = [{"seed": s["seed"], "summary": s["summary"]} for s in per_seed]
        last = layout.seeds_summary_path(cv_dir, layout.modality_tag(args.modalities) + stages.graph_variant(args),
                                         args.keep_encoder)
        util.write_json(summary, last)
        print("\n" + cv_results.format_seeds(summary))
    print(last)

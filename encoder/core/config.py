"""Project configuration: the one place for paths, session splits, labels and hyperparameters.

Edit this file to point the pipeline at a KEMDy20 download or to change hyperparameters; scripts
read it at start-up and write the values they used next to their outputs (JSON manifests).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Where a KEMDy20 download lives (KEMDy20_v1_1 unpacked, or a symbolic link to it).
KEMDY20_ROOT = REPO_ROOT / "encoder" / "KEMDy20"
# Where `make demo` generates the synthetic dataset when no KEMDy20 is configured.
DEMO_ROOT = REPO_ROOT / "encoder" / "KEMDy20_demo"

FEATURES_DIR = REPO_ROOT / "features"
GRAPHS_DIR = REPO_ROOT / "graphs"
RESULTS_DIR = REPO_ROOT / "results"
STE_TRAIN_DIR = REPO_ROOT / "encoder" / "STE_TRAIN"

# Emotion classes in the order used by every one-hot vector, logit and confusion matrix.
# "disqust" is the dataset's own spelling of disgust and is kept so that labels read back unchanged.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "surprise", "angry", "sad", "disqust", "fear")
NUM_CLASSES = len(EMOTIONS)

# Session-disjoint splits, never by segment or time step (docs/evaluation.md): train for fitting,
# val for model selection, test for reporting.
SPLITS: dict[str, tuple[int, ...]] = {
    "train": tuple(range(1, 33)),
    "val": tuple(range(33, 37)),
    "test": tuple(range(37, 41)),
}
# Session cross-validation is `python run_pipeline.py --cv K` (util.cv_splits), which passes each fold's
# splits explicitly; it keeps the validation share of this split's non-test sessions (4 of 36).

BIO_RATE_HZ = 4  # EDA and TEMP sample rate; one graph node per sample inside a segment
# The bio streams themselves (EDA, TEMP; a new one is one entry) are listed in encoder/core/streams.py.
BIO_STEP_S = 1.0 / BIO_RATE_HZ

# Share of annotated segments that may be skipped for broken input (missing or unreadable wav,
# no bio rows) before a stage stops with an error instead of reporting the count.
MAX_SKIP_SHARE = 0.15

SEED = 0

# ---------------------------------------------------------------------------------------------
# Encoder stage (names kept from the original repository)
# ---------------------------------------------------------------------------------------------
STE_inputs = {
    "root": KEMDY20_ROOT,
    "clip_length": 11,  # 4 Hz steps per clip (11 steps = 2.75 s)
    "sample_rate": 16000,  # audio is resampled to this rate; hop_length must divide its 0.25 s step
    "n_fft": 512,
    "win_length": 400,  # 25 ms
    "hop_length": 160,  # 10 ms
    "n_mels": 64,
    "fmin": 20.0,
    "fmax": 8000.0,  # None or above Nyquist: sample_rate / 2
    # Prosodic contour rows below the mel bands (F0 in semitones, periodicity, loudness at the spectrogram's
    # frame rate; encoder/core/contours.py), read by a 1-D ResNet18 of the audio stream (issue 35)
    "contour": False,
    "contour_norm": False,  # the contour rows alone standardised per participant and session (participant.py)
    "weights": None,  # optional local file with ResNet18 weights for the audio stream
    # the audio ResNet18's stem (models.AUDIO_STEMS): "resnet" (stride 2 on both axes, the original's) or "keep_freq"
    # (stride 2 on time only: every mel band reaches the first residual stage; about 4x the audio stream's compute)
    "audio_stem": "resnet",
    # Input options (encoder/core/participant.py), each off unless a paired CV over seeds on data with
    # realistic nuisance shows a gain clear of zero (docs/results.md):
    "bio_clip_length": None,  # EDA/TEMP clip length in 4 Hz steps (e.g. 41 ≈ 10 s); None: clip_length
    # Off: on held-out KEMDy20-format data with realistic bio it lowered the encoder and the GRU baseline
    # (docs/results.md); its earlier gain came from synthetic bio levels that z-scoring turned into the label.
    "participant_norm": False,  # standardise spectrogram (per mel band), EDA and TEMP per participant and session
    # EDA and TEMP alone standardised per participant and session, the spectrogram keeping the training-set
    # normalisation (participant.py): a speaker's bio levels tell the encoder who is speaking. Off until held-out
    # recordings decide: on the demo it lifted the 15-epoch encoder and the GNN on it, and cost the GNN on the
    # demo profile's 6-epoch encoder (docs/results.md)
    "bio_norm": False,
    "eda_components": False,  # NeuroKit2 tonic, phasic and SCR-peak channels beside the raw EDA
    # Audio stream: "segment" runs the ResNet18 trunk once over a segment's spectrogram and pools each node's
    # clip window from it; "clip" runs it over every node's clip (the original's; models.py).
    "audio_pass": "clip",
    "segment_chunk_frames": 2048,  # longest spectrogram one trunk pass takes; a longer segment runs in chunks
    "segment_context_frames": 256,  # real spectrogram either side of a chunk's core when a segment is chunked
}

STE_optimization_params = {
    "epochs": 30,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "scheduler_T_max": 30,
    "num_workers": 2,
    "class_weight": False,
    "amp": True,  # automatic mixed precision, used on CUDA only
    # Under AMP on CUDA the audio ResNet18 and its input run channels-last (NHWC, the layout of cuDNN's
    # float16 tensor-core convolutions); nothing changes on the CPU or without AMP.
    "channels_last": True,
    # Deterministic algorithms on CUDA (torch.use_deterministic_algorithms, cuDNN autotuning off): the same
    # run gives the same weights, at a cost in speed on the GPU still to be measured (docs/gpu.md). False:
    # cuDNN picks its fastest kernels (cudnn.benchmark). The CPU always runs the same kernels either way.
    "deterministic": True,
    # Where the log-mel spectrograms are computed (encoder/core/device_spectrogram.py): "auto" on the model's
    # device when it is CUDA (torch.stft + the mel filter bank, batched in the main process), with librosa in
    # the loader workers on the CPU; "cpu" or "device" force one. Equal within float rounding (1e-4 dB
    # tested), so a checkpoint's inputs do not record it; the run's record (ste_encoder_config.json) does.
    "spectrogram_on": "auto",
    # per-clip pass on the CPU: keep each training segment's spectrogram after its first clip and cut the later
    # clips from it (the same frames, bit for bit; dataset.TrainClipDataset). Costs one spectrogram per segment in
    # every loader process (about 2 GB for KEMDy20 at 64 mels), so on only in the demo profile.
    "cache_spectrograms": False,
    "seed": SEED,  # run_pipeline.py: + its seed S - SEED (temporal_gnn/stages.py encoder_seed), S itself as shipped
    "out_dir": STE_TRAIN_DIR,
    "val_step_stride": 1,  # validate on every k-th step of every validation segment (fixed set)
    "segment_span_steps": 5,  # segment audio pass: consecutive nodes per training item (dataset.TrainSegmentDataset)
    "keep_checkpoints": 3,  # epoch_NNN.pth files kept besides best.pth (None: keep all)
    "progress": True,  # tqdm bars
    # Learning options (encoder/core/training.py), each off (the original training) until paired CV runs
    # over seeds decide (issue 35):
    "clips_per_segment": 1,  # clips (distinct steps) of every training segment per epoch
    "patience": None,  # stop after this many epochs without a better validation criterion (None: never)
    # best.pth and patience by "macro_f1", "loss", "macro_f1_loss" (loss breaks ties) or "last" (the last epoch's)
    "select_on": "macro_f1",
    "logit_adjust_tau": 0.0,  # loss on logits + tau * log(training class prior) (Menon et al. 2021); 0: off
    # SpecAugment masks on training spectrograms: count and largest width (mel bands, frames); 0: off
    "spec_augment": {"freq_masks": 0, "freq_width": 0, "time_masks": 0, "time_width": 0},
    # soft labels: the target mixes the evaluators' vote shares into the total evaluation's multi-hot with this
    # weight (dataset.training_label); the node files, and so the GNN and GRU, get the same targets; 0: off
    "vote_weight": 0.0,
}

# On a CUDA device run_pipeline.py gives the encoder's loaders (training and extraction) at least this many
# worker processes, capped at the cores less two: num_workers above is sized for 2 CPU cores, and one process
# computing spectrograms leaves a GPU idle. Clips, their order and the results do not depend on the count.
CUDA_MIN_WORKERS = 8

STE_forward_params = {
    "checkpoint": STE_TRAIN_DIR / "best.pth",
    "batch_size": 256,
    "num_workers": 2,
    "out_dir": FEATURES_DIR,
    "amp": True,  # float16 autocast, used on CUDA only
    "deterministic": True,  # as STE_optimization_params' (CUDA only; False: cudnn.benchmark)
    "spectrogram_on": "auto",  # as STE_optimization_params'; the feature manifest records where they ran
    "progress": True,
    # The encoder's segment decision: argmax(log p - tau * log(training class prior)), tau the value of this grid
    # whose decisions score the best macro-F1 on the validation sessions (metrics.choose_decision_tau); (0.0,):
    # the plain argmax of the mean node probabilities (issue 35)
    "decision_tau_grid": (0.0,),
}

# The `text` feature block (encoder/core/text.py): each segment's transcript as a `dim`-d vector, a
# character n-gram TF-IDF fitted on the training sessions' transcripts, reduced by truncated SVD. It is
# extracted with the embeddings (STE_forward.py) whenever the training sessions have transcripts and
# appended to every node's feature as the last block; the GNN reads it only when --modalities names it.
TEXT = {
    "analyzer": "char_wb",  # character n-grams inside word boundaries (Hangul syllables are characters)
    "ngram_range": (1, 3),
    "min_df": 2,  # an n-gram must occur in at least this many training transcripts
    "max_features": 20000,  # the most frequent n-grams kept
    "sublinear_tf": True,  # 1 + log(tf)
    "dim": 64,  # size of the block (SVD directions); fewer training documents or n-grams: zero-padded
    "seed": SEED,  # TruncatedSVD's random_state
}

# Optional pretrained encoders from local folders (encoder/core/pretrained.py), off by default (None). A
# folder saved by `transformers` (save_pretrained, or a model repository downloaded by the user): the
# `lm` block from `text_model` (AutoModel + AutoTokenizer, each transcript mean-pooled), the `ssl` block
# from `speech_model` (wav2vec2/HuBERT/WavLM: AutoModel + AutoFeatureExtractor, one forward pass per
# segment wav, frames averaged over each node's clip window). STE_forward.py / run_pipeline.py
# --text_model DIR --speech_model DIR set them; extraction appends the blocks after the text block, and
# the GNN reads them only when --modalities names them (lm, ssl). Nothing is ever downloaded.
PRETRAINED = {
    "text_model": None,  # folder of a Korean language model, e.g. a download of klue/roberta-base
    "speech_model": None,  # folder of a speech SSL model, e.g. a download of facebook/wav2vec2-base
    "max_text_tokens": 128,  # a transcript is truncated to this many tokens (special tokens included)
    "text_batch_size": 32,  # transcripts per language-model forward pass
}

# Hand-crafted per-segment statistics (encoder/core/handcrafted.py): the classical system's inputs and the
# `prosody` node block (temporal_gnn/classical.py). An eGeMAPS-like speech set at the wav's own rate (YIN F0
# in semitones,
# voicing, loudness, MFCC 1-13, spectral shape, rhythm) and EDA / TEMP statistics. Changing one recomputes
# the cached speech statistics (their cache is keyed on these settings).
HANDCRAFTED = {
    "frame_s": 0.04,  # analysis window: 2.6 periods of the lowest F0, 25 Hz bins
    "hop_s": 0.01,
    "f0_method": "yin",  # "yin" (+ a periodicity test for voicing) or "pyin" (about 7x slower)
    "f0_min_hz": 65.0,
    "f0_max_hz": 500.0,
    "f0_ref_hz": 27.5,  # semitone reference (A0)
    "yin_trough_threshold": 0.35,  # librosa's 0.1 often takes the doubled period on noisy voices
    "voicing_min_periodicity": 0.8,  # normalised autocorrelation at the YIN period (yin only); on the demo
    # 33-48% of the frames between 0.5 and 0.7 were an octave or more off their segment's median F0
    "voicing_db_below_max": 35.0,  # a voiced frame's RMS is at most this far below the loudest frame's
    "min_pause_s": 0.1,
    "power_floor": 1e-10,  # -100 dB
    "n_mfcc": 13,  # fixed by handcrafted.SPEECH_NAMES; here so that the cache's key records it
    "n_mels": 40,
    "rolloff_share": 0.85,
    "alpha_bands_hz": [[50.0, 1000.0], [1000.0, 5000.0]],
    "hammarberg_bands_hz": [[0.0, 2000.0], [2000.0, 5000.0]],
    "scr_min_amp": 0.01,  # µS: the smallest skin-conductance response counted
    "scr_max_rise_s": 5.0,  # a slower rise is tonic drift, not a response
}

# The classical system (temporal_gnn/classical.py, systems.py): participant-normalised hand-crafted statistics,
# standardised,
# class-balanced logistic regression with C chosen on the validation sessions.
CLASSICAL = {
    "C_grid": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),  # candidate inverse regularisation strengths
    "max_iter": 5000,
    "cache": True,  # keep each wav's speech statistics on disk (False: computed again by every run)
    "cache_dir": None,  # where: None = <dataset root>/handcrafted_cache/ (a read-only root: give a folder here)
}

# ---------------------------------------------------------------------------------------------
# Graph and GNN stages: graph_building.GraphSettings and gnn_training.GnnSettings (temporal_gnn) are built from
# these (checked
# then: a bad value is a one-line error naming it); a flag of generate_graph.py / train_val.py, or config.DEMO
# under run_pipeline.py's demo profile, overrides an entry for one run. The graph folder's name records numv,
# time_edge and cross_identity.
# ---------------------------------------------------------------------------------------------
GRAPH = {
    "numv": 2000,  # nodes per graph
    "time_edge": 7.2,  # longest edge in seconds
    "cross_identity": "cin",  # cin: timed edges within one identity only; ciy: across identities too
}

GNN = {
    "channel1": 64,  # node embedding and edge-convolution width (also the temporal baseline's GRU width)
    "channel2": 16,  # width of the shared SAGE convolution
    "dropout": 0.2,  # of the GNN and of the temporal baseline
    # in training, each node's input block (prosody, audio, eda, temp, ...) zeroed with this probability and the kept
    # ones scaled by 1/(1-p), in the GNN and the temporal baseline (gnn_training.drop_blocks); 0: off
    "block_dropout": 0.0,
    "lr": 1e-3,
    "t_max": 100,  # cosine annealing period in epochs
    "batch_size": 16,  # graphs per batch
    "num_epoch": 700,
    "eval_freq": 1,  # validate every N epochs
    "patience": 100,  # stop after this many epochs without a better validation score (0: never)
    # best.pth and patience by "macro_f1", "loss", "macro_f1_loss" (loss breaks ties) or "last" (the last epoch's)
    "select_on": "macro_f1",
    "class_weight": False,  # inverse-frequency class weights in the loss (--[no-]class_weight)
    "logit_adjust_tau": 0.0,  # logit-adjusted loss of the GNN and the GRU (prediction.logit_offset); 0: off
    # segment decisions of the GNN and the GRU: argmax(log p - tau * log(training class prior)), tau the value of
    # this grid with the best validation macro-F1 (as STE_forward_params' for the encoder); (0.0,): plain argmax
    "decision_tau_grid": (0.0,),
    # the fusion system (temporal_gnn/late_fusion.py): each test segment's argmax(log p_classical + w * log p_GNN), the
    # classical system's and the GNN's segment probabilities, w the value of this grid whose fused decisions score the
    # best macro-F1 on the validation sessions (the smallest on a tie); (0.0,): the classical system's decisions
    "fusion_weight_grid": (0.0, 0.125, 0.25, 0.5, 1.0),
    # train_val.py's --seed; run_pipeline.py trains pipeline seed S's GNN (--seed S, --seeds) with
    # GNN["seed"] + S - SEED: the pipeline's seed itself while the two are equal
    "seed": SEED,
    "threads": 1,  # CPU threads for torch (a fixed count keeps results reproducible)
    # the temporal baseline trains in a second process beside the GNN on a Linux CPU with 2 x threads cores
    # (same results, the stage takes the longer of the two instead of their sum); False: after the GNN
    "temporal_beside": True,
}

# The node blocks the pipeline's GNN and GRU read by default (run_pipeline.py --modalities; cv_results.py's
# default): the encoder's three streams and the hand-crafted speech statistics (`prosody`, temporal_gnn/classical.py).
# Decided by paired CV over three seeds on the demo (docs/results.md): the prosody block gained the GNN
# +0.0699 [+0.0304, +0.1254] and the GRU +0.1330 [+0.0824, +0.1883] macro-F1. train_val.py run alone reads
# the encoder's blocks unless its --modalities names others, as the original did.
MODALITIES = "prosody,audio,eda,temp"

# Cross-validation summaries and comparisons (cv_results.py; run_pipeline.py --cv K, --seeds N).
CV = {
    "bootstrap_resamples": 2000,  # session-bootstrap resamples of every pooled interval and paired difference
    "min_sessions_for_interval": 8,  # fewer tested sessions: no interval (printed n/a), the bootstrap says too little
}

# ---------------------------------------------------------------------------------------------
# `make demo` (run_pipeline.py on the synthetic preset): the same pipeline, sized for 2 CPU cores.
# A coarser spectrogram and fewer epochs for the encoder; smaller graphs and fewer epochs for the GNN.
# Each section overrides the entries it names of the section above of the same name (GRAPH and GNN: in
# the GraphSettings / GnnSettings the graph and GNN stages get). On a real KEMDy20 download
# run_pipeline.py uses the sections above as they are.
# ---------------------------------------------------------------------------------------------
DEMO = {
    "preset": "demo",
    "STE_inputs": {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 200, "n_mels": 32,
                   "fmax": 4000.0},
    "STE_optimization_params": {"epochs": 6, "scheduler_T_max": 6, "batch_size": 32, "num_workers": 0,
                                "val_step_stride": 2, "cache_spectrograms": True},
    "GRAPH": {"numv": 250},
    "GNN": {"batch_size": 4, "num_epoch": 40, "patience": 15, "t_max": 40},
}

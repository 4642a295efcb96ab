"""Train the three-stream encoder on the training sessions; keep the best epoch by validation macro-F1.

    python STE_train.py <clip_length> <device>          e.g. python STE_train.py 11 0   (device: CUDA index or cpu)
    torchrun --nproc_per_node=N STE_train.py 11 0       DistributedDataParallel over N processes

Defaults come from encoder/core/config.py (STE_inputs, STE_optimization_params); flags override them.
"""

import argparse
from pathlib import Path

from encoder.core import models, training, util


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip_length", type=int, help="4 Hz steps per clip (11 = 2.75 s)")
    parser.add_argument("device", help="CUDA device index or 'cpu' (CPU with a warning when CUDA is absent)")
    parser.add_argument("--root", type=Path, help="KEMDy20 root with the dataframe artifacts")
    parser.add_argument("--out_dir", type=Path, help="where checkpoints, log and config go")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--num_workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--class_weight", action="store_true", default=None, help="inverse-frequency class weights")
    parser.add_argument("--weights", type=Path, help="local ResNet18 weights for the audio stream (never downloaded)")
    parser.add_argument("--sample_rate", type=int)
    parser.add_argument("--n_fft", type=int)
    parser.add_argument("--win_length", type=int)
    parser.add_argument("--hop_length", type=int)
    parser.add_argument("--n_mels", type=int)
    parser.add_argument("--fmax", type=float)
    parser.add_argument("--contour", action=argparse.BooleanOptionalAction, default=None,
                        help="prosodic contour rows below the mel bands (encoder/core/contours.py)")
    parser.add_argument("--contour_norm", action=argparse.BooleanOptionalAction, default=None,
                        help="the contour rows alone standardised per participant (needs --contour)")
    parser.add_argument("--bio_norm", action=argparse.BooleanOptionalAction, default=None,
                        help="EDA and TEMP alone standardised per participant, the spectrogram as before")
    parser.add_argument("--audio_pass", choices=models.AUDIO_PASSES,
                        help="the audio ResNet18 once per segment, nodes pooled from it, or once per node's clip")
    parser.add_argument("--resume", action="store_true", help="continue from the latest epoch checkpoint in out_dir")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    given = {k: v for k, v in vars(args).items() if v is not None}
    input_keys = ("weights", "sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmax", "audio_pass",
                  "contour", "contour_norm", "bio_norm")
    opt_keys = ("out_dir", "epochs", "batch_size", "lr", "num_workers", "seed", "class_weight")
    if "epochs" in given:
        given.setdefault("scheduler_T_max", given["epochs"])
        opt_keys += ("scheduler_T_max",)
    summary = training.train_encoder(
        clip_length=args.clip_length,
        device=args.device,
        root=args.root,
        inputs={k: given[k] for k in input_keys if k in given},
        optimization={k: given[k] for k in opt_keys if k in given},
        resume=args.resume,
    )
    if summary["rank"] == 0:
        print(f"best epoch {summary['best_epoch']}: val macro-F1 {summary['best_val_macro_f1']:.4f} "
              f"-> {summary['best_checkpoint']}")


if __name__ == "__main__":
    util.run_cli(main)

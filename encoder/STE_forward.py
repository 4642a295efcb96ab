"""Embed every 4 Hz step of every segment with a trained encoder (1536-d: audio | EDA | TEMP) and
report the encoder's own test metrics, the "no graph" baseline.

    python STE_forward.py <clip_length> <device>        e.g. python STE_forward.py 11 0
    python STE_forward.py 11 0 --text_model DIR --speech_model DIR   also the pretrained lm / ssl blocks
    torchrun --nproc_per_node=N STE_forward.py 11 0     sessions sharded over N processes
    python STE_forward.py 11 0 --causal                 features for train_val.py --causal (default folder:
                                                        <features_dir>_causal)

--causal: with a participant option of the checkpoint on, each node is normalised with its participant's
statistics of what has arrived by its clip end, as predict.py --online does (extraction.py), not with the
whole session's; train_val.py --causal refuses features extracted without it, train_val.py features
extracted with it.

Writes <features_dir>/features_{train,val,test}/SessSS.pkl, manifest.json and encoder_metrics.json.
"""

import argparse
from pathlib import Path

from encoder.core import config, extraction, util


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip_length", type=int, help="must match the checkpoint's clip length")
    parser.add_argument("device", help="CUDA device index or 'cpu' (CPU with a warning when CUDA is absent)")
    parser.add_argument("--root", type=Path, help="KEMDy20 root with the dataframe artifacts")
    parser.add_argument("--checkpoint", "--weights", type=Path, dest="checkpoint",
                        help="encoder checkpoint (default: STE_TRAIN/best.pth)")
    parser.add_argument("--features_dir", "--out_dir", type=Path, dest="features_dir")
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--num_workers", type=int)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--text_model", type=Path,
                        help="local language model folder for the `lm` block (default: config.PRETRAINED, off)")
    parser.add_argument("--speech_model", type=Path,
                        help="local speech SSL model folder for the `ssl` block (default: config.PRETRAINED, off)")
    parser.add_argument("--causal", action="store_true",
                        help="prefix participant statistics, the inputs of a train_val.py --causal model")
    return parser.parse_args()


def features_dir(args: argparse.Namespace) -> Path | None:
    """--features_dir, else with --causal the default folder with `_causal` appended (None: the default)."""
    if args.features_dir is not None or not args.causal:
        return args.features_dir
    default = Path(config.STE_forward_params["out_dir"])
    return default.with_name(default.name + "_causal")


def main() -> None:
    args = parse_args()
    if args.seed is not None:
        util.seed_everything(args.seed)
    extraction.extract_features(
        clip_length=args.clip_length,
        device=args.device,
        root=args.root,
        checkpoint=args.checkpoint,
        out_dir=features_dir(args),
        forward={k: v for k, v in (("batch_size", args.batch_size), ("num_workers", args.num_workers))
                 if v is not None},
        pretrained={k: v for k, v in (("text_model", args.text_model), ("speech_model", args.speech_model))
                    if v is not None},
        causal=args.causal,
    )


if __name__ == "__main__":
    util.run_cli(main)

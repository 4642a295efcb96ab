"""Dataframe stage: read a KEMDy20 root, write EDA_aug.csv, TEMP_aug.csv, gt_aug.csv,
all_entity.pickle, ts_script.pickle and frames_report.json under it, and print what was kept and
dropped (per reason) and which rows were irregular.

    python encoder/build_frames.py --root DIR [--no-wav-check]
"""

import argparse
from pathlib import Path

from encoder.core import config, frames, util


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=config.KEMDY20_ROOT, help="KEMDy20 dataset root")
    parser.add_argument("--no-wav-check", action="store_true",
                        help="keep segments without a wav (for data generated with --no-wav)")
    parser.add_argument("--max-skip-share", type=float, default=config.MAX_SKIP_SHARE,
                        help="fail when more than this share of segments must be dropped")
    args = parser.parse_args()
    built = frames.build_frames(args.root, check_wav=not args.no_wav_check, max_skip_share=args.max_skip_share)
    written = frames.write_frames(built, args.root)
    print(frames.format_report(built))
    print(f"\nwrote {len(written)} artifacts under {args.root}")


if __name__ == "__main__":
    util.run_cli(main)

"""Write a synthetic dataset in the exact KEMDy20 layout.

    python encoder/data/make_synthetic_kemdy20.py --out DIR --preset {tiny,demo,full} --seed N [--no-wav]
                                                  [--sessions 1,33,37]
"""

import argparse
from pathlib import Path

from encoder.core import synthetic, util


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="dataset root to create")
    parser.add_argument("--preset", choices=sorted(synthetic.PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-wav", action="store_true", help="skip audio (benchmarks of the bio path)")
    parser.add_argument("--balance", choices=sorted(synthetic.PRIORS), default="kemdy20",
                        help="label balance: KEMDy20-like (neutral majority) or uniform")
    parser.add_argument("--sessions", help="only these of the preset's sessions (comma-separated), each drawn as "
                                           "in the whole preset")
    args = parser.parse_args()
    sessions = [int(s) for s in args.sessions.split(",")] if args.sessions else None
    summary = synthetic.make_dataset(args.out, args.preset, args.seed, not args.no_wav, args.balance, sessions)
    print(", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    util.run_cli(main)

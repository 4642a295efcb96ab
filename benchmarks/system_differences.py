"""Is one system of a run better than another? Paired differences between two systems of one `run_pipeline.py --cv K`
run, over its seeds (temporal_gnn/balanced_decision.py's `system_differences`).

    python benchmarks/system_differences.py RUN --pair A B [--pair A B ...] [--tau T] [--modalities M] [--out FILE]

A and B are systems of systems.py (majority, encoder, temporal, classical, fusion, gnn). Per seed: every system's
pooled segment macro-F1 and A − B; then A − B as a mean over the seeds with a 95% interval from one session
bootstrap. `--tau 1` lets the encoder, the GRU (temporal) and the GNN decide by the balanced decision,
argmax(log p - log training prior), instead of the plain argmax. A run whose seeds kept the first seed's encoder
(--keep_encoder) is read too. `--out` also writes the figures as JSON.
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import sys
from pathlib import Path

from encoder.core import config, util
from temporal_gnn.balanced_decision import format_differences, system_differences


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run_pipeline.py --cv folder")
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"),
                        help="report system A − system B (repeat for more pairs)")
    parser.add_argument("--tau", type=float, default=0.0,
                        help="decision of the encoder, GRU and GNN: 0 the plain argmax, 1 the balanced decision")
    parser.add_argument("--modalities", default=config.MODALITIES, help="the GNN folders whose predictions are read")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = system_differences(args.run, [tuple(pair) for pair in args.pair], args.tau, args.modalities)
    print(format_differences(result))
    if args.out is not None:
        util.write_json(result, args.out)


if __name__ == "__main__":
    util.run_cli(main)

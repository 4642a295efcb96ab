"""Does a learned system know anything the hand-crafted statistics do not? Late fusion of the classical system
with it, over a `run_pipeline.py --cv K` run's test predictions (temporal_gnn/late_fusion.py says how).

    python benchmarks/late_fusion.py RUN [--partner encoder|temporal|gnn] [--modalities M] [--grid 0,0.25,...]
                                         [--recorded] [--out FILE.json]

Per seed of RUN: the classical system, the partner (the encoder alone by default) and their fusion
argmax(log p_classical + w · log p_partner), w chosen per fold on the other folds' test segments, pooled
segment macro-F1 with session-bootstrap intervals, and fusion − classical paired; then over the seeds.
`--recorded --partner gnn`: the run's own fusion system, its weight chosen by train_val.py on validation.
`--out` also writes the figures as JSON (docs/render_results.py --record takes it).
"""

from __future__ import annotations

import encoder as _warning_filter  # noqa: F401  # isort: skip  (a script's first import: encoder/__init__.py)
import argparse
import sys
from pathlib import Path

from encoder.core import config, util
from temporal_gnn.late_fusion import GRID, PARTNERS, format_fusion, late_fusion


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run_pipeline.py --cv folder")
    parser.add_argument("--partner", choices=PARTNERS, default="encoder")
    parser.add_argument("--modalities", default=config.MODALITIES, help="the GNN folder whose predictions are read")
    parser.add_argument("--grid", default=",".join(f"{w:g}" for w in GRID), help="candidate weights w, commas")
    parser.add_argument("--recorded", action="store_true",
                        help="the run's own fusion system (train_val.py's, its weight chosen on the validation "
                             "sessions; partner gnn) instead of the nested choice")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    grid = [float(w) for w in args.grid.split(",")]
    result = late_fusion(args.run, args.partner, args.modalities, grid, recorded=args.recorded)
    print(format_fusion(result))
    if args.out is not None:
        util.write_json(result, args.out)


if __name__ == "__main__":
    util.run_cli(main)

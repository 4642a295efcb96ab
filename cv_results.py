"""Paired comparison of two `run_pipeline.py --cv K` runs over the same folds, on every seed both have:

    python cv_results.py --compare A B [--modalities prosody,audio,eda,temp] [--suffix_b _ciy]
                          [--modalities_b audio,eda,temp]

The command of temporal_gnn/cv_results.py, whose docstring (this command's --help) documents the CV
summaries and the comparison; it prints the comparison, then the path of the JSON file it wrote.
"""

import argparse
from pathlib import Path

from encoder.core import config, layout, util
from temporal_gnn import cv_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=cv_results.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), required=True,
                        help="two run_pipeline.py --cv folders over the same folds, e.g. results/demo_cv5 "
                             "results/demo_cv5_pnorm; reports B − A (over every seed both have, with --seeds runs)")
    parser.add_argument("--modalities", default=config.MODALITIES,
                        help="the modality set whose GNN folders to read (default config.MODALITIES)")
    parser.add_argument("--suffix_b", default=None, metavar="SUFFIX",
                        help="B's GNN folders end in SUFFIX, e.g. _ciy: the GNN on cross-identity graphs that "
                             "run_pipeline.py --cross_identity ciy trains in the same folds (A and B may then be "
                             "the same folder)")
    parser.add_argument("--modalities_b", default=None, metavar="MODALITIES",
                        help="B's GNN folders are of this modality set, e.g. prosody,audio,eda,temp beside A's "
                             "audio,eda,temp in the same folds (A and B may then be the same folder)")
    args = parser.parse_args(argv)
    both = dict(suffix_b=args.suffix_b, modalities_b=args.modalities_b)
    if len(layout.seed_trees(args.compare[0]).keys() & layout.seed_trees(args.compare[1]).keys()) >= 2:
        comparison = cv_results.compare_seeds(*args.compare, args.modalities, **both)
    else:
        comparison = cv_results.compare_runs(*args.compare, args.modalities, **both)
    path = cv_results.write_comparison(comparison)
    print(cv_results.format_comparison(comparison))
    print(path)


if __name__ == "__main__":
    util.run_cli(main)

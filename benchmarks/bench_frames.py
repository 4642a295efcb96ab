"""Entity-table benchmark: the project's one-sort build against per-segment DataFrame filtering.

    python benchmarks/bench_frames.py [--root DIR]

Without --root it generates the `full` synthetic preset (KEMDy20 scale, --no-wav) in a temporary
folder. Both builders start from the same joined EDA/TEMP rows (read once, timed once and counted
in both totals, so the times are those of the whole dataframe stage); the tables must be identical.
Last line: ratio=<reference/ours> reference_s=<s> ours_s=<s>
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from encoder.core import frames, synthetic, util


def reference_entities(joined: pd.DataFrame) -> dict[str, np.ndarray]:
    """The original's approach: filter the whole DataFrame once per segment."""
    entities = {}
    for segment in tqdm(sorted(joined["segment_id"].unique()), desc="reference", unit="segment", leave=False):
        rows = joined[joined["segment_id"] == segment].sort_values("ts")
        entities[segment] = rows[["ts", "EDA_value", "TEMP_value"]].to_numpy(dtype=np.float64)
    return entities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="a KEMDy20 root (default: generate the full preset)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "KEMDy20_full"
            synthetic.make_dataset(root, preset="full", seed=0, with_wav=False)
        start = time.perf_counter()
        sessions = set(range(1, 100))
        eda, _ = frames.read_modality(root, "EDA", sessions)
        temp, _ = frames.read_modality(root, "TEMP", sessions)
        joined = eda.merge(temp, on=["segment_id", "ts"], how="inner")
        read_s = time.perf_counter() - start
        print(f"joined rows: {len(joined)}, segments: {joined['segment_id'].nunique()}, read+join {read_s:.2f} s")

        start = time.perf_counter()
        ours = frames.build_entities(joined)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        reference = reference_entities(joined)
        reference_s = time.perf_counter() - start

    if ours.keys() != reference.keys() or not all(np.array_equal(ours[k], reference[k]) for k in ours):
        raise SystemExit("entity tables differ")
    print(f"entity tables identical; entity build alone: ours {ours_s:.3f} s, reference {reference_s:.2f} s")
    ours_s += read_s
    reference_s += read_s
    print(f"ratio={reference_s / ours_s:.1f} reference_s={reference_s:.2f} ours_s={ours_s:.2f}")


if __name__ == "__main__":
    util.run_cli(main)

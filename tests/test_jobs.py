"""run_pipeline.py --jobs: a fold's GNN stages trained in worker processes give the sequential run's
results, bit for bit, and are recorded in the fold's stage cache as the sequential run records them."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from test_cv import cv_runner

from encoder.core import layout, util
from temporal_gnn import cv_results, pipeline_run

pytestmark = pytest.mark.usefixtures("one_thread")

MODALITIES = "audio,eda"
SUBSETS = cv_results.modality_subsets(MODALITIES)


@pytest.fixture(scope="module")
def ablations(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`--cv 2 --ablation --modalities audio,eda` of a tiny-preset copy with --jobs 1; then every GNN
    folder and its stage-cache entry removed and the same run with --jobs 2 on the same fold encoders.
    Per jobs: what the GNN stages wrote and recorded, and what the run printed; `run(*flags)` reruns."""
    base = tmp_path_factory.mktemp("jobs")
    data = base / "KEMDy20"
    shutil.copytree(tiny_raw, data)
    cv_dir = base / "work" / "results" / "KEMDy20_cv2"
    states = [cv_dir / f"fold_{k}" / layout.STATE_FILE for k in range(2)]
    runs: dict = {"cv_dir": cv_dir}
    with cv_runner(data, base / "work") as run:
        for jobs in (1, 2):
            out = run("--ablation", "--modalities", MODALITIES, "--jobs", str(jobs))
            runs[jobs] = {"out": out, "gnn": gnn_files(cv_dir), "summaries": summaries(cv_dir),
                          "states": [list(util.read_json(path)) for path in states],
                          "metrics": {(k, m): util.read_json(cv_dir / f"fold_{k}" / layout.gnn_folder(m)
                                                             / "metrics.json") for k in range(2) for m in SUBSETS}}
            if jobs == 1:
                for k, path in enumerate(states):
                    kept = {name: stamp for name, stamp in util.read_json(path).items()
                            if not name.startswith("train_val")}
                    util.write_json(kept, path)
                    for m in SUBSETS:
                        shutil.rmtree(cv_dir / f"fold_{k}" / layout.gnn_folder(m))
        runs["run"] = run
        yield runs


def gnn_files(cv_dir: Path) -> dict[str, bytes]:
    """Every fold's GNN and temporal test predictions, by path under the CV folder."""
    files = [cv_dir / f"fold_{k}" / layout.gnn_folder(m) / name for k in range(2) for m in SUBSETS
             for name in ("predictions_test.csv", "predictions_test_temporal.csv")]
    return {str(path.relative_to(cv_dir)): path.read_bytes() for path in files}


def summaries(cv_dir: Path) -> dict[str, bytes]:
    files = [layout.summary_files(cv_dir, m)["json"] for m in SUBSETS] + [cv_dir / "ablation.json"]
    return {path.name: path.read_bytes() for path in files}


def test_jobs_give_the_sequential_results(ablations: dict) -> None:
    one, two = ablations[1], ablations[2]
    assert two["gnn"] == one["gnn"]
    assert two["summaries"] == one["summaries"]
    assert "[fold 0 STE_train] up to date, skipped" in two["out"]  # the same fold encoders
    for k in range(2):
        for m in SUBSETS:
            tag = f"[fold {k} train_val {layout.modality_tag(m)}]"
            assert f"{tag} running" in one["out"] and f"{tag} running" in two["out"]
            assert f"{tag} done, " in two["out"]  # said as each worker's stage finishes
            first, second = one["metrics"][k, m], two["metrics"][k, m]
            assert first["test"] == second["test"] and first["best"] == second["best"]
    assert two["out"].strip().splitlines()[-1] == str(ablations["cv_dir"] / "ablation.json")


def test_workers_record_their_stages_as_the_sequential_run(ablations: dict) -> None:
    one, two, cv_dir = ablations[1], ablations[2], ablations["cv_dir"]
    for k in range(2):
        assert one["states"][k] == two["states"][k] == [
            "STE_train", "STE_forward", "generate_graph",
            *(f"train_val {layout.modality_tag(m)}" for m in SUBSETS)]
    # the parallel run's cache serves a sequential rerun: nothing retrained
    assert ablations["run"]("--ablation", "--modalities", MODALITIES).count("] running") == 0
    # a parallel rerun trains only what is missing (one stage: in this process), as the sequential run did
    before = util.read_json(cv_dir / "fold_1" / layout.STATE_FILE)
    shutil.rmtree(cv_dir / "fold_1" / layout.gnn_folder("eda"))
    out = ablations["run"]("--ablation", "--modalities", MODALITIES, "--jobs", "2")
    assert out.count("] running") == 1 and "[fold 1 train_val eda] running" in out
    assert "[fold 1 train_val audio] up to date, skipped" in out
    assert util.read_json(cv_dir / "fold_1" / layout.STATE_FILE) == before
    assert gnn_files(cv_dir) == one["gnn"]


@pytest.mark.parametrize("flags", [["--jobs", "0"], ["--jobs", "2"]])
def test_jobs_that_cannot_work_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        pipeline_run.parse_args(flags)

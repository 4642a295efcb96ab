"""run_pipeline.py expands CV × seeds × ablation once into chains (plan_cv, plan_single) that one executor
runs: every chain and GNN folder is named once, by encoder/core/layout.py."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from script_module import load_script

from encoder.core import config, layout, util
from temporal_gnn import pipeline_run, stages

run_pipeline = load_script(config.REPO_ROOT / "run_pipeline.py")  # the script, for its main() in this process
FOLDS = [{"train": (3, 4), "val": (2,), "test": (1,)}, {"train": (1, 2), "val": (4,), "test": (3,)}]
FIRST = config.SEED


def plan_cv(tmp_path: Path, *flags: str) -> list[stages.Chain]:
    args = pipeline_run.parse_args(["--cv", "2", "--modalities", "audio,eda", "--work", str(tmp_path), *flags])
    subsets = ["audio", "eda", "audio,eda"] if args.ablation else [args.modalities]
    return stages.plan_cv(args, tmp_path / "cv", FOLDS, subsets)


def gnn_paths(chains: list[stages.Chain]) -> list[Path]:
    return [chain.dirs.results / gnn.exp for chain in chains for gnn in chain.gnns]


def test_the_cv_plan_names_every_chain_and_gnn_once(tmp_path: Path) -> None:
    chains = plan_cv(tmp_path, "--seeds", "2", "--ablation")
    cv = tmp_path / "cv"
    # each seed's whole chain: the first seed's folds in the CV folder, a later seed's under seed_S/
    later = cv / f"seed_{FIRST + 1}"
    assert [c.dirs.results for c in chains] == [cv / "fold_0", cv / "fold_1", later / "fold_0", later / "fold_1"]
    assert [(c.fold, c.seed, c.label) for c in chains] == [
        (0, FIRST, "fold 0"), (1, FIRST, "fold 1"), (0, FIRST + 1, f"fold 0 seed {FIRST + 1}"),
        (1, FIRST + 1, f"fold 1 seed {FIRST + 1}")]
    assert all(c.state == c.dirs.results / layout.STATE_FILE and c.dirs.ste == c.dirs.results / "encoder"
               for c in chains)
    assert [c.splits for c in chains] == FOLDS * 2
    assert [g.exp for g in chains[0].gnns] == ["gnn_audio", "gnn_eda", "gnn_audio-eda"]
    assert all(g.seed == c.seed and g.stage_suffix == "" for c in chains for g in c.gnns)
    paths = gnn_paths(chains)
    assert len(paths) == 2 * 2 * 3 and len(set(paths)) == len(paths)


def test_keep_encoder_puts_every_seeds_gnn_on_the_first_seeds_chains(tmp_path: Path) -> None:
    chains = plan_cv(tmp_path, "--seeds", "3", "--keep_encoder", "--cross_identity", "ciy")
    assert [c.dirs.results for c in chains] == [tmp_path / "cv" / "fold_0", tmp_path / "cv" / "fold_1"]
    assert all(c.seed == FIRST for c in chains)
    gnns = chains[0].gnns
    assert [(g.seed, g.exp, g.stage_suffix) for g in gnns] == [
        (FIRST, "gnn_audio-eda_ciy", ""), (FIRST + 1, f"gnn_audio-eda_ciy_seed{FIRST + 1}", f" seed {FIRST + 1}"),
        (FIRST + 2, f"gnn_audio-eda_ciy_seed{FIRST + 2}", f" seed {FIRST + 2}")]
    assert len(set(gnn_paths(chains))) == 2 * 3


def test_the_single_runs_plan(tmp_path: Path) -> None:
    args = pipeline_run.parse_args(["--seeds", "2", "--work", str(tmp_path)])
    first, later = stages.plan_single(args, "demo_x")
    assert first.state is None and first.dirs.ste == tmp_path / "encoder" / "STE_TRAIN"  # the run's own cache
    assert first.dirs.results / first.gnns[0].exp == tmp_path / "results" / "demo_x"
    tree = tmp_path / "results" / f"seed_{FIRST + 1}"
    assert later.state == tree / layout.STATE_FILE and later.label == f"seed {FIRST + 1}"
    assert later.dirs.results / later.gnns[0].exp == tree / "demo_x" and later.seed == FIRST + 1
    keep = pipeline_run.parse_args(["--seeds", "2", "--keep_encoder", "--work", str(tmp_path)])
    (only,) = stages.plan_single(keep, "demo_x")
    assert [(g.exp, g.stage_suffix) for g in only.gnns] == [("demo_x", ""), (f"demo_x_seed{FIRST + 1}",
                                                                                f" seed {FIRST + 1}")]


def test_an_experiment_name_names_the_folders(tmp_path: Path) -> None:
    assert layout.cv_dir(tmp_path, "demo", 5) == tmp_path / "demo_cv5"
    assert layout.cv_dir(tmp_path, "demo", 5, "pnorm", "split") == tmp_path / "demo_split_cv5_pnorm"
    assert layout.single_experiment("demo", "audio,eda", "long_context") == "demo_audio-eda_long_context"
    assert pipeline_run.parse_args(["--name", "bio41.v2"]).name == "bio41.v2"


@pytest.mark.parametrize("name", ["", "a/b", "_x", "x__y", "../up"])
def test_a_name_that_is_not_a_folder_name_is_refused(name: str) -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        pipeline_run.parse_args(["--name", name])


def test_the_demo_profile_names_every_value_it_sets_over_config_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = pipeline_run.profile_overrides(config.DEMO)
    assert "  GNN['num_epoch'] = 40 (config.py's GNN: 700)" in lines
    assert len(lines) == sum(config.DEMO[s][k] != getattr(config, s).get(k)
                             for s in pipeline_run.PROFILE_SECTIONS for k in config.DEMO.get(s, {}))
    # a user who sets config.GNN's value to the profile's sees no line for it; one the profile does not set
    # (config.GNN["lr"]) is never listed: it reaches the run as edited
    monkeypatch.setitem(config.GNN, "num_epoch", 40)
    monkeypatch.setitem(config.GNN, "lr", 0.5)
    edited = pipeline_run.profile_overrides(config.DEMO)
    assert not any("num_epoch" in line or "'lr'" in line for line in edited) and len(edited) == len(lines) - 1
    assert pipeline_run.profile_overrides(pipeline_run.NO_OVERRIDES) == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--modalities", "audio,foo"], "--modalities audio,foo: unknown foo (the blocks are audio, eda, temp, text, lm, "
                                    "ssl, prosody)"),
    (["--modalities", "audio,audio"], "--modalities audio,audio: a repeated name"),
    (["--modalities", "audio,lm"], "--modalities audio,lm: the `lm` block needs --text_model DIR"),
    (["--data", "nowhere"], "dataset root not found (--data)"),
])
def test_bad_flags_are_refused_before_any_stage_runs(flags: list[str], message: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["run_pipeline.py", "--preset", "tiny", "--work", str(work), *flags])
    with pytest.raises(util.DataError) as err:
        run_pipeline.main()
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not work.exists()  # no stage ran: not even the work folder was made

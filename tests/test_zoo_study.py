"""The zoo study: studies scored by their runs' own validation numbers (``eval.source: validation``),
``after`` overrides that refine each run's own preset, the shipped studies/zoo.yaml (runs of different
recipes), and a real three-run zoo sweep through the real sweep code and its report page."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from swaplab.study import StudyError, load_study, parse_study, read_sweep, run_sweep
from swaplab.study.cli import add_sweep_parser
from swaplab.study.launch import Job
from swaplab.study.study import dump_study
from swaplab.study.sweep import validation_scores

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the study file


def test_eval_validation_is_a_typed_source_and_refuses_protocol_options():
    study = parse_study({"name": "z", "runs": {"a": []}, "eval": "validation"})
    assert study.eval is not None and study.eval.source == "validation" and study.eval.by_validation
    mapping = parse_study({"name": "z", "runs": {"a": []}, "eval": {"source": "validation"}})
    assert mapping.eval == study.eval
    assert parse_study({"name": "z", "runs": {"a": []}, "eval": "oneshot_v1"}).eval.source == "protocol"
    with pytest.raises(StudyError, match=r"bad.yaml: .*eval.limit belong to protocol scoring"):
        parse_study({"name": "z", "runs": {"a": []}, "eval": {"source": "validation", "limit": 5}}, "bad.yaml")
    with pytest.raises(StudyError, match="source"):
        parse_study({"name": "z", "runs": {"a": []}, "eval": {"source": "vibes"}}, "bad.yaml")


def test_after_overrides_come_last_and_say_what_they_replace(tmp_path):
    study = parse_study(
        {
            "name": "z",
            "base": ["trainer.steps=5"],
            "runs": {"ae": ["model=ae-digits", "model.code=4"], "gan": ["model=gan-digits"]},
            "after": {"model.channels": 3, "model.code": 8},
            "eval": "validation",
        }
    )
    planned = {r.name: r for r in study.expand(["data.train=[faces]"])}
    assert planned["ae"].overrides == (
        "trainer.steps=5",
        "data.train=[faces]",
        "model=ae-digits",
        "model.code=4",
        "model.channels=3",
        "model.code=8",
    )
    # refining a run's preset is no replacement; setting the run's own key again is
    assert planned["ae"].warnings == ("run ae: the study's after 'model.code=8' replaces its own 'model.code=4'",)
    assert planned["gan"].warnings == ()

    resolved = load_study(dump_study(study, tmp_path / "resolved.yaml", ["data.train=[faces]"]))
    assert [r.overrides for r in resolved.expand()] == [r.overrides for r in study.expand(["data.train=[faces]"])]
    assert resolved.eval == study.eval


def test_the_cli_folds_after_into_the_study_and_builds_every_run(tmp_path, capsys):
    path = tmp_path / "z.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "z",
                "runs": {"ae": ["model=ae-digits", "model.code=4"], "vae": ["model=vae-digits"]},
                "eval": "validation",
            }
        )
    )
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    after = ["--after", "model.channels=3", "model.resolution=16"]
    args = parser.parse_args(["sweep", str(path), "-o", str(tmp_path / "s"), "--dry-run", *after])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ae: train, scored by its own validation numbers" in out
    assert "model=ae-digits model.code=4 model.channels=3 model.resolution=16 run_dir=" in out
    assert "model=vae-digits model.channels=3 model.resolution=16 run_dir=" in out
    assert not (tmp_path / "s").exists()


def test_the_shipped_zoo_study_trains_every_recipe_at_several_code_sizes():
    from swaplab.train.entry import build_config, choose_recipe

    study = load_study(REPO / "studies" / "zoo.yaml")
    assert study.eval is not None and study.eval.by_validation
    assert study.launcher.max_parallel == 1
    recipes, codes = {}, {}
    for run in study.expand():
        recipe, _, _ = choose_recipe(list(run.overrides))
        cfg = build_config(list(run.overrides))  # each run's own run-config class, built as the trainer will
        assert type(cfg) is recipe.config_type
        assert cfg.data.holdout == 256 and cfg.data.resolved(cfg.model).source == "digits"
        recipes[run.name] = recipe.name
        model = cfg.model
        code = getattr(model, "code", None) or getattr(model, "latent", None) or getattr(model, "atoms", None)
        codes[run.name] = code or (model.hidden[-1] if hasattr(model, "hidden") else None)
    assert set(recipes.values()) == {
        "autoencoder",
        "sparse-coding",
        "sparse-autoencoder",
        "denoising-autoencoder",
        "contractive-autoencoder",
        "stacked-autoencoder",
        "vae",
        "gan",
        "stylegan",
        "cyclegan",
    }
    assert sorted(codes[n] for n in recipes if n.startswith("ae-c")) == [2, 4, 8, 16, 32]
    assert codes["stacked-ae-h32"] == 32 and codes["sparse-coding-a128"] == 128 and codes["vae-z4"] == 4
    header = (REPO / "studies" / "zoo.yaml").read_text().split("\nname:")[0]
    assert "data.train=[" in header and "peopleDevTrain" in header and "swaplab extract" in header


# ---------------------------------------------------------------- validation scoring in the sweep


class _ScriptedHandle:
    description = "scripted"

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass


class ValidatingLauncher:
    """Plays the trainer: writes a run folder whose metrics.jsonl has validation rows (or none)."""

    max_parallel = 1

    def __init__(self, silent: tuple[str, ...] = ()) -> None:
        self.silent = silent
        self.started: list[str] = []

    def start(self, job: Job) -> _ScriptedHandle:
        self.started.append(job.name)
        run_dir = Path(next(w for w in job.command if w.startswith("run_dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text("fake: true\n")
        (run_dir / "manifest.json").write_text(json.dumps({"final_step": 4, "sessions": [{"stop_reason": "steps"}]}))
        rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)]
        if job.name not in self.silent:
            rows.insert(2, {"step": 2, "val/reconstruction_mse": 0.5, "val/fd_pixels": 9.0})
            rows.append({"step": 4, "val/reconstruction_mse": 0.25})
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "val/')
        return _ScriptedHandle(0)


def test_validation_scoring_records_each_runs_final_numbers_without_an_eval_job(tmp_path):
    study = parse_study({"name": "z", "runs": {"a": [], "b": []}, "eval": "validation"})
    launcher = ValidatingLauncher(silent=("b",))
    result = run_sweep(
        study, tmp_path / "s", [], launcher=launcher, validate=False, report=False, printer=None, poll_s=0.0
    )
    assert launcher.started == ["a", "b"]  # trainings only: no "a:eval"
    records = {r["name"]: r for r in read_sweep(tmp_path / "s")["runs"]}
    # the last value of each key (a torn last line is skipped), and the step of the last validation
    assert records["a"]["eval"] == {
        "status": "done",
        "step": 4,
        "values": {"val/reconstruction_mse": 0.25, "val/fd_pixels": 9.0},
        "spec": {"source": "validation"},
    }
    assert records["b"]["eval"]["status"] == "failed" and "no val/*" in records["b"]["eval"]["error"]
    assert result.exit_code == 1  # a run without numbers is not scored

    again = ValidatingLauncher()
    run_sweep(study, tmp_path / "s", [], launcher=again, validate=False, report=False, printer=None, poll_s=0.0)
    assert again.started == []  # both trained: re-read, not retrained
    assert validation_scores(tmp_path / "s" / "a")["values"]["val/reconstruction_mse"] == 0.25


# ---------------------------------------------------------------- a real zoo sweep and its page


@pytest.fixture(scope="module")
def zoo_sweep(tmp_path_factory, one_thread_module):
    """Three zoo runs of three recipes on digits (a few steps each), one at a time, then the report."""
    root = tmp_path_factory.mktemp("zoo")
    study = parse_study(
        {
            "name": "zoo-test",
            "base": ["trainer=zoo-test"],
            "runs": {
                "ae-c4": ["model=ae-digits", "model.code=4"],
                "vae-z2": ["model=vae-digits", "model.latent=2"],
                "gan": ["model=gan-digits"],
            },
            "eval": "validation",
            "launcher": {"name": "local", "max_parallel": 1, "threads_per_run": 1},
        }
    )
    result = run_sweep(study, root / "sweep", [], printer=None, poll_s=0.2)
    return root / "sweep", result


def _last_values(run_dir: Path) -> dict[str, float]:
    values = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        values.update({k: v for k, v in json.loads(line).items() if k.startswith("val/")})
    return values


@pytest.mark.slow
def test_zoo_sweep_page_plots_the_runs_own_numbers_against_pca(zoo_sweep, capsys):
    from swaplab.models.zoo.pca import fit_pca, pca_reconstruct
    from swaplab.provenance import verify
    from swaplab.study.cli import cmd_report
    from swaplab.train.image_data import ImageData
    from swaplab.train.run import read_run_config

    sweep_dir, result = zoo_sweep
    assert result.exit_code == 0, [(r.name, r.status, r.eval) for r in result.runs]
    assert result.report == sweep_dir / "report" / "index.html" and result.report.is_file()
    records = {r.name: r for r in result.runs}
    logged = {name: _last_values(sweep_dir / name) for name in records}
    for name, record in records.items():
        assert record.eval["status"] == "done" and record.eval["values"] == logged[name]

    numbers = json.loads((sweep_dir / "report" / "zoo.json").read_text())
    # the autoencoder points: the runs' own final numbers, at the code sizes their encoders give
    points = {p["run"]: p for p in numbers["autoencoders"]}
    assert set(points) == {"ae-c4", "vae-z2"}
    assert points["ae-c4"]["code_size"] == 4 and points["vae-z2"]["code_size"] == 2
    for name, point in points.items():
        assert point["mse"] == logged[name]["val/reconstruction_mse"]

    # the reference line: fit_pca on the same training images, pca_reconstruct of the same held-out ones
    _, cfg = read_run_config(sweep_dir / "ae-c4")
    data = ImageData.for_run(cfg)
    held, _ = data.heldout()
    train = data.images.float().div(255.0)
    (pca,) = numbers["pca"]
    assert pca["codes"] == [1, 2, 3, 4] and pca["heldout_images"] == len(held) == 64
    for k, reported in zip(pca["codes"], pca["mse"]):
        mean, components = fit_pca(train, k)
        expected = float(((pca_reconstruct(held, mean, components).clamp(0, 1) - held) ** 2).mean())
        assert reported == pytest.approx(expected, rel=1e-6)
    assert pca["mse"] == sorted(pca["mse"], reverse=True)  # more components, less error
    assert points["ae-c4"]["pca_mse"] == pytest.approx(pca["mse"][3])
    # a few steps leave the autoencoders far above the best linear code of their size
    assert points["ae-c4"]["mse"] > points["ae-c4"]["pca_mse"]

    generators = {g["run"]: g for g in numbers["generators"]}
    assert set(generators) == {"vae-z2", "gan"}
    for name, entry in generators.items():
        assert entry["fd"] == logged[name]["val/fd_pixels"]
        # the page's own features and samples reproduce the logged distance: KID is of the same samples
        assert entry["fd_recomputed"] == pytest.approx(entry["fd"], rel=1e-3)
        assert math.isfinite(entry["kid"]) and entry["kid"] > 0  # untrained samples are far from digits

    page = (sweep_dir / "report" / "index.html").read_text()
    figures = sweep_dir / "report" / "figures"
    for name in ("reconstruction-vs-code.png", "losses.png", "reconstructions.png", "samples.png"):
        assert (figures / name).is_file() and f"figures/{name}" in page
    for name in ("reconstructions.png", "samples.png"):
        assert verify(figures / name).synthetic  # pictures of generated images are marked
    assert "PCA" in page and all(name in page for name in records)

    parser = argparse.ArgumentParser()
    from swaplab.study.cli import add_report_parser

    add_report_parser(parser.add_subparsers())
    assert cmd_report(parser.parse_args(["report", str(sweep_dir)])) == 0
    printed = capsys.readouterr().out
    assert "autoencoders (2 runs)" in printed and "ae-c4" in printed and "generators by Frechet distance" in printed
    assert torch.get_num_threads() == 1

"""Ablation studies: the study file, grid expansion, the sweep (scheduling, records, resume,
failures, interrupts) and the study report, with fake launchers for the logic and one real
two-run sweep of the per-pair trainer for the whole path."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from swaplab.study import LAUNCHERS, LauncherUnavailable, StudyError, load_study, parse_study, read_sweep, run_sweep
from swaplab.study.cli import add_report_parser, add_sweep_parser
from swaplab.study.launch import Job, thread_env
from swaplab.study.study import dump_study
from swaplab.study.sweep import latest_step

REPO = Path(__file__).resolve().parents[1]

#: The per-pair test model of tests/test_trainer.py: about 1 M parameters at 64 px.
TINY_MODEL = ["model=liae-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


def write_study(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the study file


def test_runs_and_grid_expand_to_named_runs_with_ordered_overrides():
    study = parse_study(
        {
            "name": "s",
            "base": ["model=simswap-tiny", "trainer=oneshot-tiny"],
            "runs": {"baseline": [], "no-decoder": ["model.parts.decoder=none"]},
            "grid": {"loss.identity.weight": [0, 10], "loss.feature_matching.layers": ["weak", "full"]},
        }
    )
    planned = study.expand(["data.train=faces"])
    names = [run.name for run in planned]
    assert len(planned) == 2 * 2 * 2
    assert names[:4] == [
        "baseline_weight-0_layers-weak",
        "baseline_weight-0_layers-full",
        "baseline_weight-10_layers-weak",
        "baseline_weight-10_layers-full",
    ]
    assert names[4] == "no-decoder_weight-0_layers-weak"
    run = planned[5]
    assert run.own == ("model.parts.decoder=none", "loss.identity.weight=0", "loss.feature_matching.layers=full")
    # base, then the command line, then the run's own switches (which must survive a preset on the command line)
    assert run.overrides == ("model=simswap-tiny", "trainer=oneshot-tiny", "data.train=faces", *run.own)
    assert study.baseline_name() == "baseline_weight-0_layers-weak"


def test_grid_alone_names_runs_from_the_shortest_unique_key_suffix():
    study = parse_study(
        {"name": "g", "grid": {"loss.identity.weight": [0, 1.5], "loss.reconstruction.weight": [0], "seed": [True]}}
    )
    names = [run.name for run in study.expand()]
    assert names == [
        "identity.weight-0_reconstruction.weight-0_seed-true",
        "identity.weight-1.5_reconstruction.weight-0_seed-true",
    ]
    assert study.expand()[1].own == ("loss.identity.weight=1.5", "loss.reconstruction.weight=0", "seed=true")
    assert study.baseline_name() == names[0]  # no run is called baseline: the first one


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "s", "runz": {"a": []}}, "unknown key(s) runz"),
        ({"name": "s", "runs": {"a": []}, "launcher": {"max_paralel": 2}}, "max_paralel"),
        ({"name": "s", "runs": {"a": []}, "eval": {"protocl": "x"}}, "protocl"),
        ({"name": "s", "runs": {"a": ["trainer.steps"]}}, "must look like key=value"),
        ({"name": "s", "base": ["run_dir=x"], "runs": {"a": []}}, "run_dir is set by the sweep"),
        ({"name": "s", "runs": {"logs": []}}, "reserved"),
        ({"name": "s", "runs": {"a b": []}}, "run name 'a b'"),
        ({"name": "s"}, "has no runs"),
        ({"name": "s", "runs": {"a": []}, "baseline": "b"}, "baseline 'b' is not one of"),
        ({"name": "s", "grid": {"x": []}}, "non-empty list"),
        ({"name": "s", "runs": {"a": []}, "launcher": {"max_parallel": 0}}, "max_parallel must be >= 1"),
        ({"name": "s", "runs": {"a": []}, "eval": 3}, "eval must be off"),
    ],
)
def test_invalid_studies_fail_with_the_file_and_the_reason(data, message):
    with pytest.raises(StudyError) as err:
        parse_study(data, "studies/bad.yaml")
    assert message in str(err.value)
    assert "studies/bad.yaml" in str(err.value)


def test_duplicate_generated_names_are_refused():
    with pytest.raises(StudyError, match="d.yaml: two runs are named 'a-x_y'"):
        parse_study({"name": "s", "grid": {"a": ["x/y", "x_y"]}}, "d.yaml")


def test_shorthands_and_a_study_round_trips_through_its_resolved_file(tmp_path):
    path = write_study(
        tmp_path / "short.yaml",
        {
            "base": {"trainer.steps": 5, "model": "liae-cpu"},
            "runs": {"a": None, "b": {"trainer.lr": 1e-3}},
            "eval": "off",
            "launcher": "serial",
        },
    )
    study = load_study(path)
    assert study.name == "short"  # from the file name
    assert study.eval is None and study.launcher.name == "serial"
    assert study.base == ["trainer.steps=5", "model=liae-cpu"]
    assert [r.own for r in study.expand()] == [(), ("trainer.lr=0.001",)]
    assert parse_study({"name": "p", "runs": {"a": []}, "eval": "oneshot_v1"}).eval.protocol == "oneshot_v1"

    resolved = dump_study(study, tmp_path / "resolved.yaml", ["data.src=A"], header="made by a test")
    assert resolved.read_text().startswith("# made by a test\n")
    again = load_study(resolved)
    assert [r.overrides for r in again.expand()] == [r.overrides for r in study.expand(["data.src=A"])]
    assert again.eval is None


def test_a_run_that_replaces_a_command_line_setting_says_so():
    study = parse_study({"name": "s", "runs": {"l2": ["loss=simswap-l2"], "plain": []}})
    planned = {r.name: r for r in study.expand(["loss.identity.weight=30", "trainer.steps=9"])}
    assert planned["l2"].warnings == (
        "run l2: its own 'loss=simswap-l2' replaces the command line's 'loss.identity.weight=30'",
    )
    assert planned["plain"].warnings == ()
    base = parse_study({"name": "s", "base": ["trainer=oneshot-tiny", "trainer.progress=false"], "runs": {"a": []}})
    assert base.replaced_base(["trainer=oneshot-paper", "model=simswap-paper"]) == [
        "the command line's 'trainer=oneshot-paper' replaces the study's base 'trainer.progress=false'",
    ]


def test_the_shipped_studies_reproduce_and_extend_the_original_study():
    from swaplab.train.entry import resolve_aliases

    def resolved(study):  # the study's switch names (ablation.*, loss.fm ...) as config keys
        return {r.name: tuple(resolve_aliases(list(r.own))) for r in study.expand()}

    original = load_study(REPO / "studies" / "simswap-original.yaml")
    assert resolved(original) == {
        "baseline": (),
        "no-encoder": ("model.parts.encoder=none",),
        "no-bottleneck": ("model.parts.bottleneck=none",),
        "no-decoder": ("model.parts.decoder=none",),
        "l2": ("loss=simswap-l2",),
    }
    extensions = load_study(REPO / "studies" / "simswap-extensions.yaml")
    assert set(resolved(extensions).values()) == {
        (),
        ("loss.identity.weight=0",),
        ("loss.reconstruction.weight=0",),
        ("loss.feature_matching.weight=0",),
        ("loss.feature_matching.layers=full",),
        ("loss.feature_matching.layers=early",),
        ("model.parts.discriminator=projected",),
    }
    for study in (original, extensions):
        assert study.base[:2] == ["model=simswap-tiny", "trainer=oneshot-tiny"]
        assert study.eval is not None and study.eval.protocol == "oneshot_v1" and study.eval.limit > 0
        assert study.baseline_name() == "baseline"
        assert study.launcher.name == "local"


# ---------------------------------------------------------------- the sweep, with a fake launcher


class FakeHandle:
    def __init__(self, code: int, polls: int, launcher: FakeLauncher, interrupt: bool = False) -> None:
        self.code, self.polls, self.launcher, self.interrupt = code, polls, launcher, interrupt
        self.description = "fake"
        self.terminated = False

    def poll(self):
        if self.interrupt and not self.terminated:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while this job ran
        if self.terminated:
            self.launcher.active -= 1
            return -signal.SIGTERM
        self.polls -= 1
        if self.polls > 0:
            return None
        self.launcher.active -= 1
        return self.code

    def terminate(self):
        self.terminated = True

    def kill(self):
        self.terminated = True


class FakeLauncher:
    """Plays a trainer and the evaluator: writes the files they would, records what ran and how many at once."""

    def __init__(self, max_parallel: int = 2, fail: tuple[str, ...] = (), interrupt: tuple[str, ...] = ()) -> None:
        self.max_parallel = max_parallel
        self.fail, self.interrupt = fail, interrupt
        self.started: list[str] = []
        self.active = 0
        self.peak = 0
        self.envs: list[dict] = []

    def start(self, job: Job) -> FakeHandle:
        self.started.append(job.name)
        self.envs.append(job.env)
        self.active += 1
        self.peak = max(self.peak, self.active)
        name = job.name.split(":")[0]
        if name in self.interrupt:
            return FakeHandle(0, 1, self, interrupt=True)
        if name in self.fail:
            job.log.write_text("Traceback ...\nFileNotFoundError: no faceset here\n")
            return FakeHandle(1, 2, self)
        if job.name.endswith(":eval"):
            out = Path(job.command[job.command.index("-o") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps({"metrics": {}}))
        else:
            run_dir = Path(next(w for w in job.command if w.startswith("run_dir=")).split("=", 1)[1])
            steps = int(next((w.split("=")[1] for w in job.command if w.startswith("trainer.steps=")), 4))
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text("fake: true\n")
            manifest = (
                json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
            )
            sessions = manifest.get("sessions", []) + [{"stop_reason": "steps"}]
            (run_dir / "manifest.json").write_text(
                json.dumps({"config_hash": "abc", "final_step": steps, "sessions": sessions})
            )
            (run_dir / "metrics.jsonl").write_text(
                "".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in range(1, steps + 1))
            )
        return FakeHandle(0, 2, self)


def fake_study(**extra) -> dict:
    return {
        "name": "fake",
        "base": ["trainer=test"],
        "runs": {"baseline": [], "b": ["trainer.lr=1e-3"], "c": ["trainer.lr=1e-2"]},
        "eval": {"protocol": "per_pair_v1", "limit": 2},
        "launcher": {"max_parallel": 2, "threads_per_run": 1},
        **extra,
    }


def sweep(study, tmp_path, launcher, *overrides, **kwargs):
    kwargs.setdefault("validate", False)
    kwargs.setdefault("report", False)
    kwargs.setdefault("printer", None)
    return run_sweep(parse_study(study), tmp_path / "sweep", list(overrides), launcher=launcher, poll_s=0.0, **kwargs)


def test_sweep_trains_then_scores_each_run_at_most_max_parallel_at_once(tmp_path):
    launcher = FakeLauncher(max_parallel=2)
    lines: list[str] = []
    result = sweep(fake_study(), tmp_path, launcher, "data.src=A", printer=lines.append)
    assert result.exit_code == 0 and not result.interrupted
    assert sorted(launcher.started) == sorted(["baseline", "b", "c", "baseline:eval", "b:eval", "c:eval"])
    for name in ("baseline", "b", "c"):
        assert launcher.started.index(name) < launcher.started.index(f"{name}:eval")
    assert launcher.peak == 2
    assert all(env["OMP_NUM_THREADS"] == "1" for env in launcher.envs)
    doc = read_sweep(tmp_path / "sweep")
    assert doc["format"] == "swaplab-sweep" and doc["baseline"] == "baseline"
    assert doc["command_line"] == ["data.src=A"]
    runs = {r["name"]: r for r in doc["runs"]}
    assert list(runs) == ["baseline", "b", "c"]
    b = runs["b"]
    assert b["status"] == "done" and b["returncode"] == 0 and b["final_step"] == 4 and b["config_hash"] == "abc"
    assert b["overrides"] == ["trainer=test", "data.src=A", "trainer.lr=1e-3", f"run_dir={tmp_path / 'sweep' / 'b'}"]
    assert b["log"] == "logs/b.log" and b["start"] and b["end"]
    assert b["eval"]["status"] == "done" and b["eval"]["metrics"] == "b/eval/metrics.json"
    log = (tmp_path / "sweep" / "logs" / "b.log").read_text()
    assert "-m swaplab.train trainer=test data.src=A trainer.lr=1e-3 run_dir=" in log
    assert "-m swaplab.cli eval" in (tmp_path / "sweep" / "logs" / "b.eval.log").read_text()
    assert load_study(tmp_path / "sweep" / "study.yaml").base == ["trainer=test", "data.src=A"]
    assert any(line.startswith("finished b: step 4 (steps)") for line in lines)


def test_a_rerun_skips_finished_scored_runs_and_redoes_what_changed(tmp_path):
    sweep(fake_study(), tmp_path, FakeLauncher())
    again = FakeLauncher()
    result = sweep(fake_study(), tmp_path, again)
    assert again.started == [] and result.exit_code == 0
    assert [r.status for r in result.runs] == ["done"] * 3

    # a lost evaluation is redone without retraining
    (tmp_path / "sweep" / "c" / "eval" / "metrics.json").unlink()
    third = FakeLauncher()
    sweep(fake_study(), tmp_path, third)
    assert third.started == ["c:eval"]

    # a longer budget on the command line resumes every run (the trainer continues its folder), then rescores
    fourth = FakeLauncher()
    result = sweep(fake_study(), tmp_path, fourth, "trainer.steps=6", only=["b"])
    assert fourth.started == ["b", "b:eval"]
    records = {r["name"]: r for r in read_sweep(tmp_path / "sweep")["runs"]}
    assert records["b"]["final_step"] == 6 and records["baseline"]["final_step"] == 4  # others kept as they were
    assert len(json.loads((tmp_path / "sweep" / "b" / "manifest.json").read_text())["sessions"]) == 2


def test_a_rerun_through_another_spelling_of_the_folder_skips_finished_runs(tmp_path, monkeypatch):
    sweep(fake_study(), tmp_path, FakeLauncher())
    monkeypatch.chdir(tmp_path)
    again = FakeLauncher()
    result = run_sweep(
        parse_study(fake_study()),
        Path("sweep"),
        [],
        launcher=again,
        poll_s=0.0,
        validate=False,
        report=False,
        printer=None,
    )
    assert again.started == [] and [r.status for r in result.runs] == ["done"] * 3
    assert result.runs[0].run_dir == str(Path("sweep") / "baseline")  # the spelling of this call


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path):
    launcher = FakeLauncher(fail=("b",))
    lines: list[str] = []
    result = sweep(fake_study(), tmp_path, launcher, printer=lines.append)
    assert result.exit_code == 1
    records = {r.name: r for r in result.runs}
    assert records["b"].status == "failed" and records["b"].returncode == 1
    assert records["b"].eval["status"] == "skipped"
    assert records["baseline"].status == records["c"].status == "done"
    assert "b:eval" not in launcher.started
    assert "FAILED b (exit 1); last lines of" in "\n".join(lines)
    assert "    FileNotFoundError: no faceset here" in lines
    retry = FakeLauncher()
    assert sweep(fake_study(), tmp_path, retry).exit_code == 0
    assert retry.started == ["b", "b:eval"]  # only the failed run is launched again


def test_only_selects_runs_by_pattern_and_unknown_names_fail(tmp_path):
    launcher = FakeLauncher()
    result = sweep(fake_study(eval="off"), tmp_path, launcher, only=["ba*", "c"])
    assert launcher.started == ["baseline", "c"] and [r.name for r in result.runs] == ["baseline", "c"]
    with pytest.raises(StudyError, match="--only nope: no such run"):
        sweep(fake_study(), tmp_path, FakeLauncher(), only=["nope"])


def test_an_interrupt_stops_running_jobs_once_and_a_rerun_resumes_them(tmp_path):
    launcher = FakeLauncher(max_parallel=1, interrupt=("baseline",))
    result = sweep(fake_study(eval="off"), tmp_path, launcher)
    assert result.interrupted and result.exit_code == 130
    assert launcher.started == ["baseline"]  # nothing else was started after the interrupt
    doc = {r["name"]: r for r in read_sweep(tmp_path / "sweep")["runs"]}
    assert doc["baseline"]["status"] == "interrupted" and doc["b"]["status"] == "pending"
    resumed = FakeLauncher(max_parallel=1)
    assert sweep(fake_study(eval="off"), tmp_path, resumed).exit_code == 0
    assert resumed.started == ["baseline", "b", "c"]


def test_dry_run_prints_every_run_and_writes_nothing(tmp_path, capsys):
    study = write_study(tmp_path / "dry.yaml", fake_study())
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_sweep_parser(sub)
    add_report_parser(sub)
    args = parser.parse_args(
        [
            "sweep",
            str(study),
            "-o",
            str(tmp_path / "out"),
            "--dry-run",
            "--no-validate",
            "--only",
            "baseline",
            "c",
            "data.src=faces/a",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "baseline: train, then score with per_pair_v1" in out and "c: train" in out and "b: train" not in out
    assert "-m swaplab.train trainer=test data.src=faces/a trainer.lr=1e-2 run_dir=" in out
    assert "-m swaplab.cli eval" in out and "--limit 2" in out
    assert not (tmp_path / "out").exists()
    args = parser.parse_args(["sweep", str(study), "-o", str(tmp_path / "out"), "--dry-run", "--no-validate",
                              "--eval-limit", "7"])  # fmt: skip
    assert args.func(args) == 0
    assert "--limit 7" in capsys.readouterr().out and not (tmp_path / "out").exists()


def test_validation_stops_a_typo_before_anything_starts(tmp_path):
    study = fake_study(runs={"baseline": [], "typo": ["trainer.stepz=3"]})
    launcher = FakeLauncher()
    with pytest.raises(StudyError) as err:
        sweep(study, tmp_path, launcher, validate=True)
    assert "typo:" in str(err.value) and "stepz" in str(err.value) and "baseline:" not in str(err.value)
    assert launcher.started == [] and not (tmp_path / "sweep").exists()


def test_launchers_are_registered_and_submitit_fails_clearly_without_its_package():
    assert {"local", "serial", "submitit"} <= set(LAUNCHERS.names())
    assert LAUNCHERS.create("serial", max_parallel=4).max_parallel == 1
    try:
        import submitit  # noqa: F401
    except ImportError:
        with pytest.raises(LauncherUnavailable, match="pip install submitit"):
            LAUNCHERS.create("submitit", max_parallel=2)
    assert thread_env(3)["OMP_NUM_THREADS"] == "3"


def test_submitit_launcher_maps_the_study_options_and_runs_the_logged_command(tmp_path, monkeypatch):
    """With a stand-in for the submitit package: the executor gets the study's resources, the job
    runs the same command line into the same log, and a failed job polls as a failure."""
    from types import SimpleNamespace

    from swaplab.study import SubmititOptions

    calls: dict = {}

    class SlurmJob:  # runs the submitted function at once, as submitit's "debug" executor does
        def __init__(self, fn, args):
            self.job_id = "42"
            self.value = fn(*args)

        def done(self):
            return True

        def result(self):
            return self.value

        def cancel(self, check=True):
            calls["cancelled"] = True

    class AutoExecutor:
        def __init__(self, folder, cluster=None):
            calls["folder"], calls["cluster"] = str(folder), cluster

        def update_parameters(self, **params):
            calls["params"] = params

        def submit(self, fn, *args):
            return SlurmJob(fn, args)

    monkeypatch.setitem(sys.modules, "submitit", SimpleNamespace(AutoExecutor=AutoExecutor))
    options = SubmititOptions(partition="gpu", gpus=2, time=90, mem_gb=32, account="lab", additional={"gres": "x"})
    launcher = LAUNCHERS.create("submitit", max_parallel=3, threads_per_run=4, options=options, folder=tmp_path / "s")
    assert launcher.max_parallel == 3 and calls["folder"] == str(tmp_path / "s" / "%j")

    log = tmp_path / "logs" / "a.log"
    handle = launcher.start(Job("a:eval", [sys.executable, "-c", "print('on the node')"], log, thread_env(4)))
    params = calls["params"]
    assert params["name"] == "a-eval" and params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 2
    assert params["cpus_per_task"] == 4 and params["timeout_min"] == 90 and params["mem_gb"] == 32.0
    assert params["slurm_account"] == "lab" and params["slurm_additional_parameters"] == {"gres": "x"}
    assert handle.description == "slurm job 42" and handle.poll() == 0
    assert log.read_text().strip() == "on the node"

    failing = launcher.start(Job("b", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "logs" / "b.log"))
    assert failing.poll() == 3
    failing.terminate()
    assert calls["cancelled"]


def test_local_launcher_logs_output_and_terminates_the_child(tmp_path):
    launcher = LAUNCHERS.create("local", max_parallel=2)
    done = launcher.start(
        Job(
            "ok",
            [sys.executable, "-c", "import os; print('threads', os.environ['OMP_NUM_THREADS'])"],
            tmp_path / "logs" / "ok.log",
            thread_env(2),
        )
    )
    sleeper = launcher.start(Job("slow", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "slow.log"))
    deadline = time.time() + 30
    while done.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert done.poll() == 0
    assert (tmp_path / "logs" / "ok.log").read_text().strip() == "threads 2"
    assert sleeper.poll() is None
    sleeper.terminate()
    while sleeper.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert sleeper.poll() == -signal.SIGTERM


def test_latest_step_reads_the_last_complete_row(tmp_path):
    assert latest_step(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    assert latest_step(tmp_path) == 2


# ---------------------------------------------------------------- the report, on a synthetic one-shot study


def _gan_rows(steps: int, identity_floor: float, recon_floor: float, rate: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(1, steps + 1):
        decay = math.exp(-rate * step)
        identity = identity_floor + (1 - identity_floor) * decay + 0.01 * rng.standard_normal()
        recon = recon_floor + 0.5 * decay + 0.005 * rng.standard_normal()
        fm = 0.2 + 0.8 * decay
        adversarial = 1.0 + 0.05 * rng.standard_normal()
        rows.append(
            {
                "step": step,
                "loss": identity + recon + fm + adversarial,
                "loss/adversarial": adversarial,
                "loss/identity": identity,
                "loss/reconstruction": recon,
                "loss/feature_matching": fm,
                "d_loss": 1.8 + 0.1 * rng.standard_normal(),
                "d_loss/real": 0.9,
                "d_loss/fake": 0.9,
                "d_loss/gradient_penalty": 1e-5,
                "lr": 2e-4,
                "images_per_s": 12.0,
                "time_s": step * 0.5,
            }
        )
    return rows


def _eval_doc(similarity: float, target_similarity: float, retrieval: float, ssim: float, pose: float) -> dict:
    return {
        "protocol": {"name": "oneshot_v1", "version": 1, "seed": 0, "sha256": "0" * 64},
        "metrics": {
            "identity_similarity/dlib-resnet": {"mean": similarity, "std": 0.01, "better": "higher"},
            "target_identity_similarity/dlib-resnet": {"mean": target_similarity, "better": "reference"},
            "identity_retrieval/dlib-resnet": {
                "top1": retrieval,
                "top5": min(1.0, retrieval + 0.2),
                "better": "higher",
            },
            "pose_error": {"mean": pose, "std": 0.5, "better": "lower"},
            "expression_error": {"mean": 0.1, "better": "lower"},
            "masked_ssim/self": {"mean": ssim, "better": "higher"},
        },
    }


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC).astype(float)


def make_oneshot_sweep(root: Path, *, no_bottleneck_similarity: float = 0.06, count: int = 3, res: int = 64) -> Path:
    """A sweep folder as the one-shot trainer and the evaluator would leave it (no training)."""
    runs = {
        # name: (own overrides, rows args, eval args)
        "baseline": ([], (0.3, 0.05, 0.05), (0.55, 0.05, 0.8, 0.80, 3.0)),
        "no-bottleneck": (
            ["model.parts.bottleneck=none"],
            (0.95, 0.05, 0.05),
            (no_bottleneck_similarity, 0.05, 0.0, 0.82, 1.0),
        ),
        "no-decoder": (["model.parts.decoder=none"], (0.4, 0.4, 0.05), (0.40, 0.05, 0.5, 0.35, 6.0)),
        "l2": (["loss=simswap-l2"], (0.35, 0.04, 0.012), (0.45, 0.05, 0.6, 0.78, 3.2)),
    }
    pairs = {"resolution": res, "pairs": [{"source": f"s{i}", "target": f"t{i}"} for i in range(count)]}
    rng = np.random.default_rng(0)
    records = []
    for index, (name, (own, rows_args, eval_args)) in enumerate(runs.items()):
        run_dir = root / name
        (run_dir / "previews").mkdir(parents=True)
        (run_dir / "eval").mkdir()
        rows = _gan_rows(120, *rows_args, seed=index)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "config.yaml").write_text("model: {name: simswap-tiny}\n")
        (run_dir / "manifest.json").write_text(
            json.dumps({"config_hash": f"hash{index}", "final_step": 120, "sessions": [{"stop_reason": "steps"}]})
        )
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(_eval_doc(*eval_args)))
        row = rng.integers(0, 255, (res, count * res, 3), dtype=np.uint8)
        Image.fromarray(row).save(run_dir / "previews" / "eval-swaps.png")
        for stem in ("eval-sources.png", "eval-targets.png"):
            Image.fromarray(rng.integers(0, 255, (res, count * res, 3), dtype=np.uint8)).save(
                run_dir / "previews" / stem
            )
        (run_dir / "previews" / "eval-pairs.json").write_text(json.dumps(pairs))
        records.append(
            {"name": name, "own_overrides": own, "status": "done", "seconds": 600.0, "eval": {"status": "done"}}
        )
    (root / "sweep.json").write_text(json.dumps({"study": "synthetic", "baseline": "baseline", "runs": records}))
    return root


def test_report_of_a_oneshot_study_has_the_original_figures_grid_table_and_findings(tmp_path):
    from swaplab.provenance import verify
    from swaplab.study.report import load_study_data, qualitative_checks, summary_lines, write_study_report

    root = make_oneshot_sweep(tmp_path / "sweep")
    page = write_study_report(root)
    assert page == root / "report" / "index.html"
    text = page.read_text()
    figures = root / "report" / "figures"
    for stem in (
        "loss",
        "loss-identity",
        "loss-reconstruction",
        "loss-feature_matching",
        "loss-adversarial",
        "d_loss",
        "d_loss-gradient_penalty",
        "swap-grid",
    ):
        assert (figures / f"{stem}.png").is_file(), stem
        assert f"figures/{stem}.png" in text, stem
    for name in ("baseline", "no-bottleneck", "no-decoder", "l2"):
        assert f"<th>{name}</th>" in text
    assert "generator total loss" in text and "discriminator loss" in text

    grid = np.asarray(Image.open(figures / "swap-grid.png"))
    assert grid.shape == ((2 + 4) * (18 + 96), 3 * 96, 3)  # sources, targets, 4 runs: label strip + tiles
    # each tile is its 64 px face enlarged: the first source tile is the source row's first square
    source = np.asarray(Image.open(root / "baseline" / "previews" / "eval-sources.png"))[:, :64]
    assert np.abs(grid[18 : 18 + 96, :96].astype(float) - _resize(source, 96)).mean() < 8
    marked = verify(figures / "swap-grid.png")
    assert marked.synthetic and marked.watermark.present

    data = load_study_data(root)
    checks = {c.run: c for c in qualitative_checks(data)}
    assert {name: c.verdict for name, c in checks.items()} == {
        "no-bottleneck": "held",
        "no-decoder": "held",
        "l2": "held",
    }
    assert (
        "identity transfer by dlib-resnet: 0.01 (no-bottleneck) vs 0.5 (baseline)" in checks["no-bottleneck"].evidence
    )
    assert "masked_ssim/self: 0.35 vs 0.8 (baseline)" in checks["no-decoder"].evidence
    summary = summary_lines(data)
    assert "masked_ssim/self: no-decoder moved it most, 0.8 -> 0.35 (-0.45, -56%, worse)" in summary
    assert "pose_error: no-decoder moved it most, 3 -> 6 (+3, +100%, worse)" in summary
    assert "overall, no-bottleneck moved 3 of 5 metrics most from the baseline" in summary
    assert not any(line.startswith("expression_error") for line in summary)  # no run moved it
    assert "target_identity_similarity" not in " ".join(
        line.split(":")[0] for line in summary
    )  # a reference, not a score


def test_findings_that_the_numbers_do_not_support_are_reported_not_held(tmp_path):
    from swaplab.study.report import load_study_data, qualitative_checks

    root = make_oneshot_sweep(tmp_path / "sweep", no_bottleneck_similarity=0.6)  # transfers as much as the baseline
    checks = {c.run: c.verdict for c in qualitative_checks(load_study_data(root))}
    assert checks["no-bottleneck"] == "not held"
    # a baseline that has not learnt to swap yet cannot tell
    doc = json.loads((root / "baseline" / "eval" / "metrics.json").read_text())
    doc["metrics"]["identity_similarity/dlib-resnet"]["mean"] = 0.06
    (root / "baseline" / "eval" / "metrics.json").write_text(json.dumps(doc))
    checks = {c.run: c for c in qualitative_checks(load_study_data(root))}
    assert checks["no-bottleneck"].verdict == "not measured"
    assert "the baseline itself transfers (almost) no identity yet: train longer" in checks["no-bottleneck"].evidence
    # slower convergence: swap the l2 run's curves for faster ones than the baseline's
    rows = _gan_rows(120, 0.35, 0.04, 0.2, seed=9)
    (root / "l2" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    checks = {c.run: c.verdict for c in qualitative_checks(load_study_data(root))}
    assert checks["l2"] == "not held"


def test_report_cli_prints_the_summary(tmp_path, capsys):
    root = make_oneshot_sweep(tmp_path / "sweep")
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(root)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "no-bottleneck: 'without the bottleneck the output is the target unchanged" in out
    assert f"report: {root / 'report' / 'index.html'}" in out


# ---------------------------------------------------------------- a real sweep of the per-pair trainer


@pytest.fixture(scope="module")
def real_sweep(pair_facesets, tmp_path_factory):
    """Two tiny per-pair runs and one that cannot find its data, all at once, one thread each."""
    src, dst = pair_facesets
    root = tmp_path_factory.mktemp("study")
    study = write_study(
        root / "pair.yaml",
        {
            "name": "pair",
            "base": [*TINY_MODEL, "trainer=test", "trainer.steps=4", "trainer.checkpoint_every=0"],
            "runs": {"baseline": [], "high-lr": ["trainer.lr=1e-3"], "broken": ["data.dst=/nonexistent/faceset"]},
            "eval": "off",
            "launcher": {"name": "local", "max_parallel": 3, "threads_per_run": 1},
        },
    )
    lines: list[str] = []
    result = run_sweep(study, root / "sweep", [f"data.src={src}", f"data.dst={dst}"], printer=lines.append, poll_s=0.2)
    return root, result, lines


def test_real_sweep_trains_each_run_into_its_folder_and_records_a_failure(real_sweep):
    root, result, lines = real_sweep
    sweep_dir = root / "sweep"
    assert result.exit_code == 1
    doc = read_sweep(sweep_dir)
    runs = {r["name"]: r for r in doc["runs"]}
    assert {name: r["status"] for name, r in runs.items()} == {
        "baseline": "done",
        "high-lr": "done",
        "broken": "failed",
    }
    for name in ("baseline", "high-lr"):
        manifest = json.loads((sweep_dir / name / "manifest.json").read_text())
        assert manifest["final_step"] == 4 and manifest["sessions"][-1]["stop_reason"] == "steps"
        assert runs[name]["config_hash"] == manifest["config_hash"] and runs[name]["final_step"] == 4
        assert (sweep_dir / name / "checkpoints" / "latest.json").is_file()
    assert runs["high-lr"]["config_hash"] != runs["baseline"]["config_hash"]
    assert runs["broken"]["returncode"] not in (0, None)
    assert "nonexistent" in (sweep_dir / "logs" / "broken.log").read_text()
    assert any(line.startswith("FAILED broken") for line in lines)


def test_real_sweep_report_names_both_runs_and_embeds_the_loss_figures(real_sweep):
    root, result, _ = real_sweep
    assert result.report == root / "sweep" / "report" / "index.html"
    text = result.report.read_text()
    for name in ("baseline", "high-lr", "broken"):
        assert name in text
    assert "<img src='figures/loss.png'" in text
    assert (root / "sweep" / "report" / "figures" / "loss.png").is_file()
    assert "discriminator" not in text.lower()  # per-pair runs have none
    assert "no run is scored yet" in text
    assert "<img src='../baseline/previews/latest.png'" in text


def test_real_sweep_rerun_skips_finished_runs(real_sweep):
    root, _, _ = real_sweep
    sweep_dir = root / "sweep"
    before = (sweep_dir / "baseline" / "manifest.json").read_text()
    doc = read_sweep(sweep_dir)
    lines: list[str] = []
    result = run_sweep(
        root / "pair.yaml",
        sweep_dir,
        doc["command_line"],
        only=["baseline", "high-lr"],
        printer=lines.append,
        report=False,
    )
    assert result.launched == [] and result.exit_code == 0
    assert (sweep_dir / "baseline" / "manifest.json").read_text() == before
    assert "skipped baseline: trained to step 4" in lines
    assert {r["name"]: r["status"] for r in read_sweep(sweep_dir)["runs"]}["broken"] == "failed"  # kept

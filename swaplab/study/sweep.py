"""Run a study: launch its runs, evaluate each finished one, record everything, write the report.

``run_sweep(study, sweep_dir)`` trains every run with ``python -m swaplab.train ... run_dir=
SWEEP_DIR/<run>`` (log in ``SWEEP_DIR/logs/<run>.log``) through a launcher, at most
``max_parallel`` jobs at once; scores each finished run with ``swaplab eval`` into
``SWEEP_DIR/<run>/eval/`` when the study asks for a protocol, or records the run's own final
held-out numbers (``val/*`` of its metrics.jsonl) with ``eval.source: validation``; keeps
``SWEEP_DIR/sweep.json`` current after every change; and writes ``SWEEP_DIR/report/``. A re-run
skips finished, evaluated runs and resumes the others (the trainer resumes its run folder).
Training and scoring happen in the children: this module schedules, records and reports
progress, nothing else.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from swaplab.config import ConfigError, to_dict
from swaplab.io.atomic import atomic_write_json
from swaplab.study.launch import LAUNCHERS, Job, JobHandle, Launcher, python_executable, thread_env
from swaplab.study.study import PlannedRun, Study, StudyError, dump_study, load_study

__all__ = [
    "SWEEP_FORMAT",
    "RunRecord",
    "SweepResult",
    "default_sweep_dir",
    "eval_command",
    "latest_step",
    "read_sweep",
    "run_references",
    "run_sweep",
    "share_training",
    "train_command",
    "training_identity",
    "validate_overrides",
    "validation_scores",
]

SWEEP_FORMAT = "swaplab-sweep"
SWEEP_VERSION = 1
#: Run statuses in sweep.json: not started yet, running, finished (exit 0 and not stopped by a
#: signal), failed (non-zero exit), interrupted (stopped by Ctrl-C / SIGTERM; a re-run resumes it).
STATUSES = ("pending", "running", "done", "failed", "interrupted")

Printer = Callable[[str], None]


@dataclass
class RunRecord:
    """One run's entry in sweep.json (paths relative to the sweep folder where they lie inside it)."""

    name: str
    own_overrides: list[str]
    overrides: list[str]  # what the trainer got, run_dir last
    run_dir: str
    status: str = "pending"
    returncode: int | None = None
    start: str | None = None
    end: str | None = None
    seconds: float | None = None
    log: str = ""
    config_hash: str | None = None
    final_step: int | None = None
    stop_reason: str | None = None
    eval: dict[str, Any] = field(default_factory=lambda: {"status": "off"})
    warnings: list[str] = field(default_factory=list)
    shares_training_of: str | None = None  # the run whose weights it took (it differs only at swap time)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def finished(self) -> bool:
        """Trained to the end and, when the study evaluates, scored."""
        return self.status == "done" and self.eval.get("status") in ("done", "off")


@dataclass
class SweepResult:
    """What one ``run_sweep`` call did; ``runs`` are the selected runs' records."""

    sweep_dir: Path
    runs: list[RunRecord]
    launched: list[str] = field(default_factory=list)  # job names started by this call ("a", "a:eval")
    report: Path | None = None
    interrupted: bool = False
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every selected run finished (and was scored), 130 after an interrupt, else 1."""
        if self.interrupted:
            return 130
        if self.dry_run:
            return 0
        return 0 if all(r.finished for r in self.runs) and not self.warnings else 1


# ---------------------------------------------------------------- commands


def train_command(overrides: Sequence[str]) -> list[str]:
    """The child's argv for training (or resuming) a run: ``python -m swaplab.train key=value ...``."""
    return [python_executable(), "-m", "swaplab.train", *overrides]


def eval_command(study: Study, run_dir: Path) -> list[str]:
    """The child's argv for scoring a run into ``run_dir/eval`` with the study's protocol and limit."""
    spec = study.eval
    if spec is None:
        raise ValueError(f"study {study.name} does not evaluate (eval: off)")
    if spec.by_validation:
        raise ValueError(f"study {study.name} scores runs by their own validation numbers: no evaluation job")
    command = [python_executable(), "-m", "swaplab.cli", "eval", str(run_dir), "-o", str(run_dir / "eval")]
    if spec.also:  # several protocols in one job: swaplab.study.score (the same options, and --also)
        command = [python_executable(), "-m", "swaplab.study.score", str(run_dir), "--also", *spec.also]
    command += ["--protocol", spec.protocol, "--limit", str(spec.limit), "--device", spec.device]
    if spec.detector_pairs:
        command += ["--detector-pairs", str(spec.detector_pairs)]
    if spec.data_root:
        command += ["--data", spec.data_root]
    if spec.encoders:
        command += ["--encoders", *spec.encoders]
    return command


def validate_overrides(overrides: Sequence[str]) -> str:
    """Build the run's config as ``python -m swaplab.train`` will and return its config hash; a
    typo'd key or a wrong value raises ``ConfigError`` before anything starts."""
    from swaplab.config import config_hash
    from swaplab.train.entry import build_config

    return config_hash(build_config(list(overrides)))


def training_identity(overrides: Sequence[str]) -> str:
    """What a run's training depends on, hashed: its config without ``run_dir`` and without the
    sections its recipe only exports as swap-time defaults (``Recipe.swap_time_sections``). Two runs
    with one identity train bit-identical weights (every draw comes from the seed's streams)."""
    import hashlib

    from swaplab.train.entry import build_config
    from swaplab.train.recipe import recipe_for_config

    cfg = build_config([o for o in overrides if not o.startswith("run_dir=")])
    recipe = recipe_for_config(cfg)
    tree = to_dict(cfg)
    for section in ("run_dir", *recipe.swap_time_sections):
        tree.pop(section, None)
    text = json.dumps({"recipe": recipe.name, **tree}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def share_training(trained_dir: str | Path, run_dir: str | Path, overrides: Sequence[str]) -> None:
    """Make ``run_dir`` the run of ``overrides`` with the training of ``trained_dir``: its files
    (checkpoints hard-linked where the file system allows), the run's own ``config.yaml`` (so its
    export carries its own swap-time defaults) and a manifest that names where the weights came
    from. Built beside ``run_dir`` and renamed into place; a ``run_dir`` with checkpoints is refused."""
    import shutil

    from swaplab.config import config_hash
    from swaplab.train.entry import build_config
    from swaplab.train.recipe import recipe_for_config
    from swaplab.train.run import RunFolder

    trained_dir, run_dir = Path(trained_dir), Path(run_dir)
    if any((run_dir / "checkpoints").glob("step-*")):
        raise StudyError(f"{run_dir} holds checkpoints of its own: it is not replaced by {trained_dir}'s")
    cfg = build_config([o for o in overrides if not o.startswith("run_dir=")] + [f"run_dir={run_dir}"])
    staging = run_dir.with_name(f".{run_dir.name}.sharing")
    shutil.rmtree(staging, ignore_errors=True)
    skipped = {"config.yaml", "manifest.json", ".lock"}
    for source in sorted(trained_dir.rglob("*")):
        relative = source.relative_to(trained_dir)
        if relative.parts[0].startswith("eval") or source.name in skipped or not source.is_file():
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)  # checkpoints are never rewritten in place, so a link is safe
        except OSError:
            shutil.copy2(source, target)
    folder = RunFolder(staging)
    folder.create()
    folder.save_config(cfg, recipe_for_config(cfg).name)
    manifest = RunFolder(trained_dir).read_manifest() or {}
    manifest.update(config_hash=config_hash(cfg), shares_training_of=str(trained_dir))
    atomic_write_json(folder.manifest_path, manifest)
    shutil.rmtree(run_dir, ignore_errors=True)  # nothing trained there (checked above)
    os.replace(staging, run_dir)


def default_sweep_dir(study: Study) -> Path:
    return Path("sweeps") / study.name


# ---------------------------------------------------------------- sweep.json and progress


def read_sweep(sweep_dir: str | Path) -> dict[str, Any] | None:
    """``SWEEP_DIR/sweep.json`` as a dict, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(sweep_dir) / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def latest_step(run_dir: str | Path) -> int | None:
    """The step of the last complete row of ``run_dir/metrics.jsonl`` (read from its end), or None."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line, or the cut first one
    return None


def validation_scores(run_dir: str | Path) -> dict[str, Any]:
    """A run's own final held-out numbers as a sweep record's ``eval``: the last logged value of each
    ``val/*`` key of ``run_dir/metrics.jsonl`` (the trainer validates right before its final
    checkpoint) and the step of the last validation; ``status`` is ``failed`` when it logged none."""
    from swaplab.study.sweep_data import final_validation, read_rows

    step, values = final_validation(read_rows(Path(run_dir)))
    if not values:
        return {"status": "failed", "error": "the run logged no val/* numbers in its metrics.jsonl"}
    return {"status": "done", "step": step, "values": values}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _manifest(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _log_tail(path: Path, lines: int = 6) -> list[str]:
    try:
        text = path.read_bytes()[-16384:].decode("utf-8", errors="replace")
    except OSError:
        return []
    # tqdm redraws with carriage returns: keep what the terminal would show last on each line.
    shown = [line.split("\r")[-1] for line in text.splitlines()]
    return [line for line in shown if line.strip()][-lines:]


@contextlib.contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """One sweep process per folder: two would launch the same runs into the same run folders."""
    lock = sweep_dir / ".sweep.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise StudyError(
                    f"another sweep (pid {pid}) is running in {sweep_dir}; wait for it or stop it"
                ) from None
            lock.unlink(missing_ok=True)  # left behind by a killed sweep
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cluster's cancel, ``kill``) stops the sweep like Ctrl-C: children stop cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- planning


def _select(planned: list[PlannedRun], only: Sequence[str]) -> list[PlannedRun]:
    if not only:
        return planned
    names = [run.name for run in planned]
    unmatched = [pattern for pattern in only if not fnmatch.filter(names, pattern)]
    if unmatched:
        raise StudyError(f"--only {' '.join(unmatched)}: no such run; the study's runs: {', '.join(names)}")
    return [run for run in planned if any(fnmatch.fnmatchcase(run.name, p) for p in only)]


def _eval_spec(study: Study) -> dict[str, Any] | None:
    """The scoring settings a record keeps (a change rescores): None when off."""
    if study.eval is None:
        return None
    if study.eval.by_validation:
        return {"source": "validation"}
    spec = to_dict(study.eval)
    spec.pop("source")  # protocol specs read as they did before ``source`` existed: old sweeps stay scored
    if not spec["also"]:
        spec.pop("also")  # likewise before ``also``
    return spec


@dataclass
class _Plan:
    record: RunRecord
    train: bool  # launch training (start, or resume)
    evaluate: bool  # score after training (or now, when training is skipped)
    needs: tuple[str, ...] = ()  # runs whose training must be done first (``${run:NAME}``)
    shares: str | None = None  # instead of training: take this run's weights once it has trained


#: ``${run:NAME}`` in an override is the folder of the study's run NAME (``aei=${run:faceshifter}``:
#: a second phase on another run's result); the run then starts only after NAME has trained.
RUN_REFERENCE = re.compile(r"\$\{run:([^}]*)\}")


def run_references(overrides: Sequence[str]) -> list[str]:
    """The names of the runs ``overrides`` refer to with ``${run:NAME}``, in order, each once."""
    names: list[str] = []
    for override in overrides:
        for name in RUN_REFERENCE.findall(override):
            if name not in names:
                names.append(name)
    return names


def _resolve_references(overrides: Sequence[str], sweep_dir: Path, run: str, names: Sequence[str]) -> list[str]:
    for name in run_references(overrides):
        if name not in names:
            raise StudyError(f"run {run}: ${{run:{name}}} names no run of the study; its runs: {', '.join(names)}")
        if name == run:
            raise StudyError(f"run {run}: ${{run:{name}}} refers to the run itself")
    return [RUN_REFERENCE.sub(lambda m: str(sweep_dir / m.group(1)), o) for o in overrides]


def _without_run_dir(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("run_dir=")]


def _plan(
    study: Study,
    sweep_dir: Path,
    selected: list[PlannedRun],
    previous: dict[str, RunRecord],
    names: Sequence[str] = (),
) -> list[_Plan]:
    spec = _eval_spec(study)
    plans = []
    for run in selected:
        run_dir = sweep_dir / run.name
        overrides = [*_resolve_references(run.overrides, sweep_dir, run.name, names), f"run_dir={run_dir}"]
        old = previous.get(run.name)
        trained = (
            old is not None
            and old.status == "done"
            and _without_run_dir(old.overrides) == _without_run_dir(overrides)
            and (run_dir / "config.yaml").is_file()
        )
        if trained:
            record = old
            # The folder may be spelt differently this time (relative, absolute, moved sweep).
            record.own_overrides, record.overrides, record.run_dir = list(run.own), overrides, str(run_dir)
        else:
            record = RunRecord(run.name, list(run.own), overrides, str(run_dir), log=f"logs/{run.name}.log")
            if old is not None:  # keep the history a re-run extends
                record.start, record.config_hash, record.seconds = old.start, old.config_hash, old.seconds
        record.warnings = list(run.warnings)
        if study.eval is not None and study.eval.by_validation:
            # No evaluation job: the numbers are the run's own, read again (cheap) whenever trained.
            record.eval = {**(validation_scores(run_dir) if trained else {"status": "pending"}), "spec": spec}
            plans.append(_Plan(record, train=not trained, evaluate=False))
            continue
        scored = (
            trained
            and spec is not None
            and record.eval.get("status") == "done"
            and record.eval.get("spec") == spec
            and (run_dir / "eval" / "metrics.json").is_file()
        )
        if spec is None:
            record.eval = {"status": "off"}
        elif not scored:
            record.eval = {"status": "pending", "spec": spec, "log": f"logs/{run.name}.eval.log"}
        plans.append(_Plan(record, train=not trained, evaluate=spec is not None and not scored))
    return plans


# ---------------------------------------------------------------- the sweep


class _Sweep:
    """The scheduler of one ``run_sweep`` call: a queue of stages, the running jobs, the records."""

    def __init__(
        self,
        study: Study,
        sweep_dir: Path,
        plans: list[_Plan],
        others: list[RunRecord],
        launcher: Launcher,
        extra: Sequence[str],
        printer: Printer,
        status_every: float,
        poll_s: float,
    ) -> None:
        self.study = study
        self.sweep_dir = sweep_dir
        self.records = [p.record for p in plans]
        self.others = others  # records of runs this call did not select: kept in sweep.json as they were
        self.launcher = launcher
        self.extra = list(extra)
        self.print = printer
        self.status_every = status_every
        self.poll_s = poll_s
        self.env = thread_env(study.launcher.threads_per_run)
        self.queue: deque[tuple[RunRecord, str]] = deque()
        self.eval_after: set[str] = {p.record.name for p in plans if p.evaluate}
        self.needs: dict[str, tuple[str, ...]] = {p.record.name: p.needs for p in plans}
        for plan in plans:
            if plan.shares:
                self.needs[plan.record.name] = (plan.shares,)
                self.queue.append((plan.record, "share"))
            elif plan.train:
                self.queue.append((plan.record, "train"))
            elif plan.evaluate:
                self.queue.append((plan.record, "eval"))
        self.running: dict[str, tuple[RunRecord, str, JobHandle, float]] = {}
        self.launched: list[str] = []
        self.created = _now()
        self.last_status = 0.0

    # ------------------------------------------------------------ records

    def save(self) -> None:
        previous = read_sweep(self.sweep_dir) or {}
        document = {
            "format": SWEEP_FORMAT,
            "version": SWEEP_VERSION,
            "study": self.study.name,
            "description": self.study.description,
            "baseline": self.study.baseline_name(),
            "created": previous.get("created", self.created),
            "updated": _now(),
            "command_line": self.extra,
            "launcher": asdict(self.study.launcher),
            "eval": _eval_spec(self.study),
            "runs": [asdict(r) for r in self._all_records()],
        }
        atomic_write_json(self.sweep_dir / "sweep.json", document)

    def _all_records(self) -> list[RunRecord]:
        order = [run.name for run in self.study.expand(self.extra)]
        by_name = {r.name: r for r in [*self.others, *self.records]}
        # Study order first; runs a changed study no longer has stay at the end (their folders remain).
        return [by_name[n] for n in order if n in by_name] + [r for n, r in by_name.items() if n not in order]

    # ------------------------------------------------------------ stages

    def _share(self, record: RunRecord) -> None:
        """Give ``record`` the weights of the run it trains exactly like (no job: a few file links)."""
        leader = next(r for r in [*self.records, *self.others] if r.name == record.shares_training_of)
        record.start = record.start or _now()
        try:
            share_training(leader.run_dir, record.run_dir, record.overrides)
        except (OSError, StudyError) as err:
            record.status, record.end = "failed", _now()
            if record.eval.get("status") == "pending":
                record.eval["status"] = "skipped"
            self.print(f"FAILED {record.name}: could not take {leader.name}'s weights: {err}")
            self.save()
            return
        manifest = _manifest(Path(record.run_dir))
        record.status, record.returncode, record.end, record.seconds = "done", 0, _now(), 0.0
        record.final_step = manifest.get("final_step", latest_step(record.run_dir))
        record.stop_reason = "shared"
        record.config_hash = manifest.get("config_hash", record.config_hash)
        self.print(
            f"{record.name}: trains exactly as {leader.name} (it differs only in swap-time settings): "
            f"took its weights at step {record.final_step}"
        )
        if self.study.eval is not None and self.study.eval.by_validation:
            record.eval = {**validation_scores(record.run_dir), "spec": _eval_spec(self.study)}
        if record.name in self.eval_after:
            self.queue.appendleft((record, "eval"))
        self.save()

    def _start(self, record: RunRecord, stage: str) -> None:
        if stage == "share":
            self._share(record)
            return
        run_dir = Path(record.run_dir)
        if stage == "train":
            command, log = train_command(record.overrides), self.sweep_dir / record.log
        else:
            command, log = eval_command(self.study, run_dir), self.sweep_dir / record.eval["log"]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"\n=== swaplab sweep {self.study.name}: {stage} {record.name} at {_now()}\n")
            handle.write("=== " + " ".join(command) + "\n")
        job_name = record.name if stage == "train" else f"{record.name}:eval"
        handle = self.launcher.start(Job(job_name, command, log, dict(self.env)))
        started = time.time()
        if stage == "train":
            record.status, record.returncode, record.end = "running", None, None
            record.start = record.start or _now()
        else:
            record.eval.update(status="running", returncode=None, start=_now(), end=None)
        self.running[job_name] = (record, stage, handle, started)
        self.launched.append(job_name)
        self.print(f"started {job_name} ({handle.description}), log {log}")
        self.save()

    def _finish(self, job_name: str, code: int) -> None:
        record, stage, _, started = self.running.pop(job_name)
        seconds = time.time() - started
        if stage == "train":
            self._finish_train(record, code, seconds)
        else:
            self._finish_eval(record, code, seconds)
        self.save()

    def _finish_train(self, record: RunRecord, code: int, seconds: float) -> None:
        manifest = _manifest(Path(record.run_dir))
        sessions = manifest.get("sessions") or [{}]
        record.returncode, record.end = code, _now()
        record.seconds = round((record.seconds or 0.0) + seconds, 1)
        record.final_step = manifest.get("final_step", latest_step(record.run_dir))
        record.stop_reason = sessions[-1].get("stop_reason")
        record.config_hash = manifest.get("config_hash", record.config_hash)
        if code == 0 and record.stop_reason != "signal":
            record.status = "done"
            self.print(f"finished {record.name}: step {record.final_step} ({record.stop_reason}) in {seconds:.0f} s")
            if self.study.eval is not None and self.study.eval.by_validation:
                record.eval = {**validation_scores(record.run_dir), "spec": _eval_spec(self.study)}
                if record.eval["status"] == "failed":
                    self.print(f"FAILED {record.name}:eval: {record.eval['error']}")
            if record.name in self.eval_after:
                self.queue.appendleft((record, "eval"))  # score it while the next runs train
        elif code == 0 or (code < 0 and -code in (signal.SIGTERM, signal.SIGINT)):
            record.status = "interrupted"
            self.print(f"interrupted {record.name} at step {record.final_step}; a re-run resumes it")
        else:
            record.status = "failed"
            if record.eval.get("status") == "pending":
                record.eval["status"] = "skipped"
            self._report_failure(record.name, code, self.sweep_dir / record.log)

    def _finish_eval(self, record: RunRecord, code: int, seconds: float) -> None:
        record.eval.update(returncode=code, end=_now(), seconds=round(seconds, 1))
        metrics = Path(record.run_dir) / "eval" / "metrics.json"
        if code == 0 and metrics.is_file():
            record.eval.update(status="done", metrics=str(metrics.relative_to(self.sweep_dir)))
            self.print(f"scored {record.name} in {seconds:.0f} s: {metrics}")
        elif code < 0 and -code in (signal.SIGTERM, signal.SIGINT):
            record.eval["status"] = "interrupted"
        else:
            record.eval["status"] = "failed"
            self._report_failure(f"{record.name}:eval", code, self.sweep_dir / record.eval["log"])

    def _report_failure(self, job_name: str, code: int, log: Path) -> None:
        self.print(f"FAILED {job_name} (exit {code}); last lines of {log}:")
        for line in _log_tail(log):
            self.print(f"    {line}")

    # ------------------------------------------------------------ the loop

    def status_line(self) -> str:
        done = sum(r.status == "done" for r in self.records)
        failed = sum(r.status == "failed" for r in self.records)
        parts = []
        for job_name, (record, stage, _, _) in self.running.items():
            step = latest_step(record.run_dir) if stage == "train" else None
            parts.append(f"{job_name} step {step}" if step is not None else job_name)
        text = f"[{time.strftime('%H:%M:%S')}] trained {done}/{len(self.records)}, failed {failed}"
        if parts:
            text += " | running: " + ", ".join(parts)
        if self.queue:
            text += f" | queued: {len(self.queue)}"
        return text

    def _status_of(self, name: str) -> str:
        for record in [*self.records, *self.others]:
            if record.name == name:
                return record.status
        return "pending"

    def _next_ready(self) -> tuple[RunRecord, str] | None:
        """The first queued stage whose runs it refers to have trained; a stage whose referred run
        failed, or can no longer train (not queued, not running), fails without starting."""
        active = {record.name for record, _, _, _ in self.running.values()} | {r.name for r, _ in self.queue}
        for index, (record, stage) in enumerate(self.queue):
            needs = self.needs.get(record.name, ()) if stage in ("train", "share") else ()
            waiting = [name for name in needs if self._status_of(name) != "done"]
            if not waiting:
                del self.queue[index]
                return record, stage
            lost = [name for name in waiting if name not in active]
            if lost:
                del self.queue[index]
                record.status, record.end = "failed", _now()
                if record.eval.get("status") == "pending":
                    record.eval["status"] = "skipped"
                self.print(f"FAILED {record.name}: it needs run(s) {', '.join(lost)}, which did not train")
                self.save()
                return self._next_ready()
        return None

    def _take_shared_weights(self) -> None:
        """Every queued share whose run has trained, now: it starts no job, so it needs no slot."""
        for record, stage in list(self.queue):
            if stage == "share" and all(self._status_of(n) == "done" for n in self.needs.get(record.name, ())):
                self.queue.remove((record, stage))
                self._share(record)

    def loop(self) -> None:
        while self.queue or self.running:
            self._take_shared_weights()
            while self.queue and len(self.running) < self.launcher.max_parallel:
                ready = self._next_ready()
                if ready is None:
                    break
                self._start(*ready)
            changed = False
            for job_name, (_, _, handle, _) in list(self.running.items()):
                code = handle.poll()
                if code is not None:
                    self._finish(job_name, code)
                    changed = True
            now = time.time()
            if changed or (self.status_every > 0 and now - self.last_status >= self.status_every):
                if self.running or self.queue:
                    self.print(self.status_line())
                self.last_status = now
            if self.running and not changed:
                time.sleep(self.poll_s)

    def stop(self, grace_s: float) -> None:
        """Ask every running job to stop (once), wait up to ``grace_s`` for checkpoints, then kill."""
        if self.running:
            self.print(
                f"interrupted: asking {len(self.running)} job(s) to stop after their step with a checkpoint "
                f"(up to {grace_s:.0f} s; Ctrl-C again kills them)"
            )
        for _, _, handle, _ in self.running.values():
            handle.terminate()
        deadline = time.time() + grace_s
        try:
            while self.running and time.time() < deadline:
                for job_name, (_, _, handle, _) in list(self.running.items()):
                    code = handle.poll()
                    if code is not None:
                        self._finish(job_name, code)
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        for job_name, (record, stage, handle, _) in list(self.running.items()):
            handle.kill()
            self.running.pop(job_name)
            if stage == "train":
                record.status, record.end = "interrupted", _now()
            else:
                record.eval["status"] = "interrupted"
        self.queue.clear()
        self.save()


def run_sweep(
    study: Study | str | Path,
    sweep_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    only: Sequence[str] = (),
    dry_run: bool = False,
    launcher: Launcher | None = None,
    validate: bool = True,
    report: bool = True,
    printer: Printer | None = print,
    status_every: float = 30.0,
    poll_s: float = 0.5,
) -> SweepResult:
    """Train, evaluate and report every run of ``study`` (a ``Study`` or a study file) in ``sweep_dir``.

    ``overrides``: ``key=value`` words applied to every run after the study's ``base``. ``only``:
    run names or shell patterns (``no-*``) to run; the other runs' records are kept. ``dry_run``
    prints the plan and writes nothing. ``launcher`` replaces the study's launcher (tests, custom
    schedulers). ``validate`` builds every run's config first so a wrong key fails before any
    run starts. ``printer`` gets progress lines (None: silent); a status line with each running
    job's latest step is printed every ``status_every`` seconds. Ctrl-C (or SIGTERM) asks running
    jobs to stop with a checkpoint, records them as interrupted and returns (exit code 130).
    """
    say: Printer = printer or (lambda line: None)
    if not isinstance(study, Study):
        study = load_study(study)
    sweep_path = Path(sweep_dir) if sweep_dir is not None else default_sweep_dir(study)
    selected = _select(study.expand(overrides), only)
    previous_doc = read_sweep(sweep_path) or {}
    previous = {r["name"]: RunRecord.from_json(r) for r in previous_doc.get("runs", [])}
    names = [run.name for run in study.expand(overrides)]
    plans = _plan(study, sweep_path, selected, previous, names)
    for plan, run in zip(plans, selected, strict=True):
        plan.needs = tuple(run_references(run.overrides))
    retrained = {plan.record.name for plan in plans if plan.train}
    for plan in plans:
        stale = [name for name in plan.needs if name in retrained]
        if stale and not plan.train:  # its own overrides did not change, so it is skipped as trained
            plan.record.warnings.append(
                f"run {plan.record.name} was trained on run(s) {', '.join(stale)}, which train again now: it keeps "
                f"its old result; delete {plan.record.run_dir} and re-run to retrain it on the new one"
            )

    if validate:
        problems = []
        for plan in plans:
            if not plan.train:
                continue
            try:
                plan.record.config_hash = validate_overrides(plan.record.overrides)
            except (ConfigError, KeyError) as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else err
                problems.append(f"  {plan.record.name}: {message}")
        if problems:
            raise StudyError("these runs' configs do not build (nothing was started):\n" + "\n".join(problems))
        _share_identical_trainings(plans)

    for note in study.replaced_base(overrides):
        say(f"note: {note}")
    for plan in plans:
        for warning in plan.record.warnings:
            say(f"note: {warning}")
    if dry_run:
        for plan in plans:
            _print_plan(study, plan, say)
        return SweepResult(sweep_path, [p.record for p in plans], dry_run=True)

    sweep_path.mkdir(parents=True, exist_ok=True)
    (sweep_path / "logs").mkdir(exist_ok=True)
    with _sweep_lock(sweep_path):
        header = (
            f"swaplab sweep: the resolved study (command-line overrides folded into base), {_now()}\n"
            f"command line: {' '.join(overrides) or '(none)'}\n"
            "re-run: swaplab sweep " + str(sweep_path / "study.yaml") + f" -o {sweep_path}"
        )
        dump_study(study, sweep_path / "study.yaml", overrides, header=header)
        if launcher is None:
            launcher = LAUNCHERS.create(
                study.launcher.name,
                max_parallel=study.launcher.max_parallel,
                threads_per_run=study.launcher.threads_per_run,
                options=study.submitit,
                folder=sweep_path / "logs" / "submitit",
            )
        selected_names = {p.record.name for p in plans}
        others = [r for name, r in previous.items() if name not in selected_names]
        sweep = _Sweep(study, sweep_path, plans, others, launcher, overrides, say, status_every, poll_s)
        for plan in plans:
            if plan.shares:
                say(f"{plan.record.name}: trains as {plan.shares} does (swap-time settings differ): takes its weights")
            elif not plan.train:
                what = "and scored" if plan.record.eval.get("status") == "done" else "(scoring it now)"
                if plan.record.eval.get("status") == "failed":  # validation scoring: no numbers logged
                    what = "(it logged no validation numbers)"
                if plan.record.eval.get("status") == "off":
                    what = ""
                say(f"skipped {plan.record.name}: trained to step {plan.record.final_step} {what}".rstrip())
        sweep.save()
        interrupted = False
        with _sigterm_as_interrupt():
            try:
                sweep.loop()
            except KeyboardInterrupt:
                interrupted = True
                sweep.stop(study.launcher.grace_s)
        result = SweepResult(sweep_path, sweep.records, sweep.launched, interrupted=interrupted)
        failed = [r.name for r in sweep.records if r.status == "failed"]
        unscored = [r.name for r in sweep.records if r.status == "done" and r.eval.get("status") == "failed"]
        if interrupted:
            say(f"stopped; finished work is kept in {sweep_path}: re-run the same command to resume")
            return result
        if failed:
            say(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in {sweep_path / 'logs'})")
        if unscored:
            say(f"{len(unscored)} evaluation(s) failed: {', '.join(unscored)}")
        if report:
            from swaplab.study.report import write_study_report

            try:
                result.report = write_study_report(sweep_path)
                say(f"report: {result.report}")
            except Exception as err:  # the runs are done and recorded; a broken report must not hide that
                result.warnings.append(f"report failed: {type(err).__name__}: {err}")
                say(f"error: the report failed ({type(err).__name__}: {err}); runs are recorded in sweep.json")
        return result


def _share_identical_trainings(plans: list[_Plan]) -> None:
    """Runs to train whose training equals an earlier run's (they differ only in the recipe's
    swap-time sections) take that run's weights instead of training again; a run folder with
    checkpoints of its own keeps training itself."""
    first: dict[str, str] = {}
    for plan in plans:
        record = plan.record
        if record.shares_training_of and not plan.train:
            continue  # took its weights in an earlier call
        identity = training_identity(record.overrides)
        leader = first.setdefault(identity, record.name)
        own_checkpoints = any((Path(record.run_dir) / "checkpoints").glob("step-*"))
        if leader == record.name or not plan.train or own_checkpoints or plan.needs:
            record.shares_training_of = None
            continue
        plan.train, plan.shares, record.shares_training_of = False, leader, leader


def _print_plan(study: Study, plan: _Plan, say: Printer) -> None:
    record = plan.record
    if plan.shares:
        action = f"take {plan.shares}'s weights (it trains exactly alike; only swap-time settings differ)"
    elif plan.train:
        action = "resume" if (Path(record.run_dir) / "config.yaml").is_file() else "train"
    else:
        action = "skip (trained)"
    if plan.evaluate:
        action += f", then score with {study.eval.protocol if study.eval else ''}"
    elif study.eval is not None and study.eval.by_validation:
        action += ", scored by its own validation numbers (val/* of its metrics.jsonl)"
    say(f"{record.name}: {action}")
    say(f"    own overrides: {' '.join(record.own_overrides) or '(none: the baseline settings)'}")
    say(f"    config hash: {record.config_hash or 'not computed'}")
    if not plan.shares:
        say("    " + " ".join(train_command(record.overrides)))
    if plan.evaluate:
        say("    " + " ".join(eval_command(study, Path(record.run_dir))))

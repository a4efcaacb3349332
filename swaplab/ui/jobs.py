"""Training jobs that outlive a page: each one a separate process running the library's ``train``.

A job is ``swaplab.train.loop.train(build_config(overrides))`` in a child process (started fresh,
so the training loop runs on its main thread and stops on SIGTERM with a checkpoint, as a Ctrl-C
of ``swaplab train`` does). The manager lives in the server, not in a browser tab, so reloading
the page finds the same jobs. A second job on a run is refused before it starts: by this
manager for its own jobs, and by the run folder's lock (``swaplab.io.locks``) for a training
started elsewhere. A failed job keeps its error as one line.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swaplab.io.atomic import atomic_write_json
from swaplab.io.locks import BusyError, exclusive


def one_line(err: BaseException) -> str:
    """An error as the one line the page shows (as the command line prints it)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    lines = message.strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _train_in_child(overrides: list[str], result_path: str) -> None:
    """The child process: the same two calls as ``swaplab train``; the outcome written as JSON."""
    outcome: dict[str, Any]
    try:
        from swaplab.train.entry import build_config
        from swaplab.train.loop import train

        result = train(build_config(overrides))
        outcome = {"state": "finished", "step": result.step, "stop_reason": result.stop_reason}
    except BaseException as err:  # noqa: BLE001 - any failure is reported to the page as one line
        outcome = {"state": "failed", "error": one_line(err)}
    atomic_write_json(Path(result_path), outcome)


@dataclass
class TrainingJob:
    """One training process and what is known of it."""

    number: int
    run_dir: Path
    overrides: list[str]
    process: Any
    result_path: Path
    started: float = field(default_factory=time.time)
    stop_requested: bool = False

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def outcome(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def state_line(self) -> str:
        """``running``, ``stopping``, ``stopped at step N``, ``finished ...`` or ``failed: why``."""
        if self.alive:
            return "stopping (after this step, with a checkpoint)" if self.stop_requested else "running"
        outcome = self.outcome()
        if outcome is None:
            return f"ended without a result (exit code {self.process.exitcode})"
        if outcome["state"] == "failed":
            return f"failed: {outcome['error']}"
        if outcome["stop_reason"] == "signal":
            return f"stopped at step {outcome['step']} (resume continues from its checkpoint)"
        return f"finished at step {outcome['step']} ({outcome['stop_reason']})"


class JobManager:
    """The server's training jobs, by number; at most one per run folder."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.jobs: dict[int, TrainingJob] = {}
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")

    def start(self, run_dir: str | Path, overrides: list[str]) -> TrainingJob:
        """Start training ``run_dir`` with ``overrides``; ``BusyError`` if a job already trains it."""
        run_dir = Path(run_dir).resolve()
        with self._lock:
            for job in self.jobs.values():
                if job.alive and job.run_dir == run_dir:
                    raise BusyError(
                        f"run {run_dir} is in use by training job {job.number}: wait for it to finish, or stop it first"
                    )
            # A training started elsewhere (the command line, another app) holds the run's lock.
            with exclusive(run_dir / ".lock", f"run {run_dir}"):
                pass
            number = max(self.jobs, default=0) + 1
            result_path = self.scratch / f"job-{number}.json"
            process = self._context.Process(
                target=_train_in_child, args=([*overrides, f"run_dir={run_dir}"], str(result_path)), daemon=False
            )
            process.start()
            job = TrainingJob(number, run_dir, overrides, process, result_path)
            self.jobs[number] = job
            return job

    def stop(self, number: int) -> TrainingJob:
        """Ask a job to stop after its current step (it writes a checkpoint first)."""
        job = self.get(number)
        if job.alive and job.process.pid:
            job.stop_requested = True
            os.kill(job.process.pid, signal.SIGTERM)
        return job

    def get(self, number: int) -> TrainingJob:
        if number not in self.jobs:
            raise LookupError(f"no training job {number}; jobs: {', '.join(map(str, self.jobs)) or 'none'}")
        return self.jobs[number]

    def latest_for(self, run_dir: str | Path) -> TrainingJob | None:
        run_dir = Path(run_dir).resolve()
        mine = [job for job in self.jobs.values() if job.run_dir == run_dir]
        return mine[-1] if mine else None

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every running job (each checkpoints first) and wait for them."""
        for job in list(self.jobs.values()):
            if job.alive:
                self.stop(job.number)
        deadline = time.time() + timeout
        for job in self.jobs.values():
            job.process.join(max(0.0, deadline - time.time()))
            if job.alive:
                job.process.kill()

"""Launchers: how one sweep job (a command line with its log file) gets run, by name.

``LAUNCHERS.create("local", max_parallel=2)`` starts jobs as child processes of this machine;
``serial`` is the same, one at a time; ``submitit`` submits each job to SLURM through submitit
(imported only when used). A launcher starts, polls and stops jobs; which jobs to run, in which
order, and what their results mean is ``swaplab.study.sweep``'s business, not this module's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from swaplab.registry import Registry

__all__ = [
    "LAUNCHERS",
    "Job",
    "JobHandle",
    "Launcher",
    "LauncherUnavailable",
    "LocalLauncher",
    "SerialLauncher",
    "SubmititLauncher",
    "run_logged",
    "thread_env",
]


class LauncherUnavailable(RuntimeError):
    """A launcher whose package or cluster is not available here."""


@dataclass
class Job:
    """One command to run: ``command`` (argv), its log file (appended to), extra environment."""

    name: str  # "baseline" or "baseline:eval": shown in progress lines and job names
    command: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


class JobHandle(Protocol):
    """A started job. ``poll`` returns None while it runs, then its exit code."""

    description: str  # "pid 1234", "slurm job 5678"

    def poll(self) -> int | None: ...

    def terminate(self) -> None:
        """Ask the job to stop (SIGTERM: a trainer stops after its step with a checkpoint)."""

    def kill(self) -> None:
        """Stop it now."""


class Launcher(Protocol):
    max_parallel: int

    def start(self, job: Job) -> JobHandle: ...


LAUNCHERS: Registry[Any] = Registry("launcher")


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps a child's intra-op threads (torch reads OMP_NUM_THREADS at start-up).

    Parallel runs on a few cores must not each spin one OpenMP thread per core: on a 2-core machine
    two runs of two threads run several times slower than two runs of one.
    """
    value = str(max(1, int(threads)))
    return {"OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value}


def _child_env(job: Job) -> dict[str, str]:
    # Unbuffered output keeps the log in step with the child, so a failure's last lines are there.
    return {**os.environ, "PYTHONUNBUFFERED": "1", **job.env}


def run_logged(command: list[str], log: str | Path, env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Run ``command`` with stdout and stderr appended to ``log``; return its exit code.

    What a submitit job executes on the cluster node (module-level, so it pickles by reference).
    """
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        return subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        ).returncode


# ---------------------------------------------------------------- local processes


class _ProcessHandle:
    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.description = f"pid {process.pid}"

    def poll(self) -> int | None:
        return self.process.poll()

    def _signal_group(self, sig: int) -> None:
        # The child leads its own process group (start_new_session): signal it and anything it started.
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)


@LAUNCHERS.register("local")
class LocalLauncher:
    """Child processes of this machine, at most ``max_parallel`` at once.

    Each child runs in its own session, so a Ctrl-C in the terminal reaches only the sweep, which
    then asks every child once (SIGTERM) to stop cleanly: a second signal would make a trainer
    abort without its checkpoint.
    """

    def __init__(self, max_parallel: int = 1, **_: Any) -> None:
        self.max_parallel = max(1, int(max_parallel))

    def start(self, job: Job) -> _ProcessHandle:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "ab") as handle:
            process = subprocess.Popen(
                job.command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_child_env(job),
                cwd=job.cwd,
                start_new_session=True,
            )
        return _ProcessHandle(process)


@LAUNCHERS.register("serial")
class SerialLauncher(LocalLauncher):
    """Local child processes, one at a time (``max_parallel`` is ignored)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_parallel=1)


# ---------------------------------------------------------------- SLURM through submitit


class _SubmititHandle:
    def __init__(self, job: Any) -> None:
        self.job = job
        self.description = f"slurm job {job.job_id}"

    def poll(self) -> int | None:
        if not self.job.done():
            return None
        try:
            return int(self.job.result())
        except Exception:  # submitit raises its own errors for failed, timed-out and cancelled jobs
            return 1

    def terminate(self) -> None:
        self.job.cancel(check=False)

    def kill(self) -> None:
        self.job.cancel(check=False)


@LAUNCHERS.register("submitit")
class SubmititLauncher:
    """Each job as a SLURM job through submitit (``pip install submitit``), at most ``max_parallel`` queued.

    The job runs ``run_logged`` on the node: the same command line and log file as a local run, so
    the run folders, logs and sweep.json look the same. The sweep process polls the jobs: keep it
    running (in tmux or screen on the login node). ``options`` is the study's ``submitit`` section.
    """

    def __init__(
        self, max_parallel: int = 1, threads_per_run: int = 1, options: Any = None, folder: str | Path = "", **_: Any
    ) -> None:
        try:
            import submitit
        except ImportError:
            raise LauncherUnavailable(
                "launcher 'submitit' needs the submitit package (pip install submitit) in this environment, "
                "which must also be the one on the cluster's nodes; or use launcher: local"
            ) from None
        self.max_parallel = max(1, int(max_parallel))
        opts = options
        folder = Path(getattr(opts, "folder", "") or folder or "submitit-logs")
        cluster = getattr(opts, "cluster", "") or None
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        params: dict[str, Any] = {
            "timeout_min": int(getattr(opts, "time", 240)),
            "cpus_per_task": int(getattr(opts, "cpus", 0) or threads_per_run),
            "gpus_per_node": int(getattr(opts, "gpus", 0)),
            "tasks_per_node": 1,
            "nodes": 1,
            "stderr_to_stdout": True,
        }
        if getattr(opts, "mem_gb", 0):
            params["mem_gb"] = float(opts.mem_gb)
        if getattr(opts, "partition", ""):
            params["slurm_partition"] = opts.partition
        if getattr(opts, "account", ""):
            params["slurm_account"] = opts.account
        if getattr(opts, "qos", ""):
            params["slurm_qos"] = opts.qos
        if getattr(opts, "additional", None):
            params["slurm_additional_parameters"] = dict(opts.additional)
        self.params = params

    def start(self, job: Job) -> _SubmititHandle:
        self.executor.update_parameters(name=job.name.replace(":", "-"), **self.params)
        submitted = self.executor.submit(
            run_logged, job.command, str(job.log), {"PYTHONUNBUFFERED": "1", **job.env}, str(job.cwd or os.getcwd())
        )
        return _SubmititHandle(submitted)


def python_executable() -> str:
    """The interpreter children run with: this one (the venv that has swaplab)."""
    return sys.executable

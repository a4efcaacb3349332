"""The typed study file of an ablation sweep, and its expansion into named runs.

A study (YAML) gives ``base`` overrides applied to every run, ``runs`` (name -> overrides) and/or a
``grid`` (key -> values, cartesian product, names made from the values), ``after`` overrides applied
after each run's own, how each finished run is scored (a swap protocol, or the run's own validation
numbers) and how runs are launched. This module parses, validates and expands; it starts no
process and imports no torch (``swaplab.study.sweep`` runs the plan).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from swaplab.config import ConfigError, from_dict, to_dict
from swaplab.io.atomic import atomic_write_text

__all__ = [
    "RESERVED_NAMES",
    "EvalSource",
    "EvalSpec",
    "LauncherSpec",
    "PlannedRun",
    "Study",
    "StudyError",
    "SubmititOptions",
    "dump_study",
    "load_study",
    "parse_study",
]

#: Names a run cannot take: they are the sweep folder's own entries.
RESERVED_NAMES = ("logs", "report")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class StudyError(ConfigError):
    """A study file (or a command-line addition to it) that cannot be run as written."""


#: ``eval.source``: ``protocol`` scores each finished run with ``swaplab eval`` (a face swapper on a
#: pinned swap protocol); ``validation`` takes the numbers the run itself measured on its held-out
#: data (the last ``val/*`` values of its metrics.jsonl): models that are not face swappers, such as
#: the generative-model zoo.
EvalSource = Literal["protocol", "validation"]
#: The shorthand ``eval: validation`` (any other string names a protocol).
VALIDATION = "validation"


@dataclass
class EvalSpec:
    """How each finished run is scored: ``swaplab eval RUN --protocol ... --limit ...`` (``source:
    protocol``), or by its own held-out numbers (``source: validation``, no evaluation job)."""

    source: EvalSource = "protocol"
    protocol: str = "per_pair_v1"  # a pinned protocol name or a protocol .json file
    limit: int = 0  # score only the first N pairs (0 = all)
    data_root: str | None = None  # default: $SWAPLAB_DATA or ../shared/data (``swaplab data path``)
    encoders: list[str] = field(default_factory=list)  # identity networks (empty = every registered one)
    device: str = "cpu"
    detector_pairs: int = 0  # detectability: peopleDevTrain pairs to swap and train on (0 = all, -1 = skip)
    # More protocols scored after ``protocol``, each into RUN/eval-<name>/ (oneshot_occluded_v1: does an
    # occluder survive the swap); the same options, without detectability (the main protocol has it).
    also: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise StudyError(f"eval.limit must be >= 0, got {self.limit}")
        if self.source == VALIDATION:
            # The protocol's options would be silently ignored: a study that sets them meant a protocol.
            defaults = EvalSpec()
            given = [
                name
                for name in ("protocol", "limit", "data_root", "encoders", "device", "detector_pairs", "also")
                if getattr(self, name) != getattr(defaults, name)
            ]
            if given:
                raise StudyError(
                    f"eval.source=validation scores runs by their own held-out numbers: "
                    f"{', '.join('eval.' + n for n in given)} belong to protocol scoring (source: protocol)"
                )

    @property
    def by_validation(self) -> bool:
        return self.source == VALIDATION


@dataclass
class LauncherSpec:
    """Where runs execute: ``local`` processes (default), ``serial`` (one at a time), ``submitit`` (SLURM)."""

    name: str = "local"
    max_parallel: int = 1  # runs (and evaluations) at once
    threads_per_run: int = 1  # OMP_NUM_THREADS / MKL_NUM_THREADS of each child: torch's intra-op threads
    grace_s: float = 60.0  # after Ctrl-C, how long children get to checkpoint before they are killed

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise StudyError(f"launcher.max_parallel must be >= 1, got {self.max_parallel}")
        if self.threads_per_run < 1:
            raise StudyError(f"launcher.threads_per_run must be >= 1, got {self.threads_per_run}")


@dataclass
class SubmititOptions:
    """SLURM resources of each job when ``launcher: submitit`` (ignored by the local launchers)."""

    partition: str = ""  # empty: the cluster's default partition
    gpus: int = 1  # GPUs per job (per node)
    cpus: int = 0  # CPUs per task (0 = launcher.threads_per_run)
    mem_gb: float = 0.0  # memory per job (0 = the cluster's default)
    time: int = 240  # time limit of each job, minutes
    account: str = ""
    qos: str = ""
    cluster: str = ""  # submitit's executor: "" (auto: slurm when available), "slurm", "local", "debug"
    folder: str = ""  # submitit's pickles and logs (default SWEEP_DIR/logs/submitit); shared with the nodes
    additional: dict[str, Any] = field(default_factory=dict)  # extra sbatch options (slurm_additional_parameters)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its name, the overrides that make it differ, and all of its overrides."""

    name: str
    own: tuple[str, ...]  # the run's own overrides (from ``runs`` and/or the grid point)
    overrides: tuple[str, ...]  # base + command line + own, in that order (run_dir not included)
    warnings: tuple[str, ...] = ()


@dataclass
class Study:
    """An ablation study: what every run shares, what each run changes, how to evaluate and launch.

    ``runs`` and ``grid`` combine: with both, every named run is crossed with every grid point
    (``<run>_<grid name>``). ``after`` holds overrides applied after each run's own: settings every
    run shares whatever preset it picks (``model.channels=3 model.resolution=32`` on runs that each
    name their own ``model=`` preset). ``baseline`` names the run the report compares against
    (default: the run called ``baseline``, else the first run).
    """

    name: str
    description: str = ""
    base: list[str] = field(default_factory=list)
    runs: dict[str, list[str]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)
    baseline: str = ""
    eval: EvalSpec | None = None
    launcher: LauncherSpec = field(default_factory=LauncherSpec)
    submitit: SubmititOptions = field(default_factory=SubmititOptions)

    def __post_init__(self) -> None:
        _check_name(self.name, "study name")
        self.base = _override_list(self.base, "base")
        self.after = _override_list(self.after, "after")
        self.runs = {str(k): _override_list(v, f"runs.{k}") for k, v in (self.runs or {}).items()}
        for run_name in self.runs:
            _check_run_name(run_name)
        for key, values in (self.grid or {}).items():
            _check_key(key, f"grid key {key!r}")
            if not isinstance(values, (list, tuple)) or not values:
                raise StudyError(f"grid.{key}: give a non-empty list of values, got {values!r}")
        if not self.runs and not self.grid:
            raise StudyError(f"study {self.name!r} has no runs: give `runs` (name -> overrides) and/or a `grid`")
        names = [run.name for run in self.expand()]
        if self.baseline and self.baseline not in names:
            raise StudyError(f"baseline {self.baseline!r} is not one of the study's runs: {', '.join(names)}")

    # ------------------------------------------------------------ expansion

    def expand(self, extra: list[str] | tuple[str, ...] = ()) -> list[PlannedRun]:
        """The study's runs in file order, each with ``base + extra + own + after`` overrides.

        ``extra`` (the command line's ``key=value`` words) comes after ``base`` and before the run's
        own overrides, so a run's ablation survives a command-line preset (``model=simswap-paper``
        then ``model.parts.encoder=none``); a run that sets a key the command line also sets wins,
        and says so in ``warnings``. ``after`` comes last: it refines each run's presets (and an
        ``after`` key that replaces a run's own setting says so too).
        """
        extra = _override_list(list(extra), "command line")
        named = list(self.runs.items()) or [("", [])]
        points = _grid_points(self.grid) or [("", [])]
        planned: list[PlannedRun] = []
        for (run_name, run_overrides), (point_name, point_overrides) in itertools.product(named, points):
            name = "_".join(part for part in (run_name, point_name) if part)
            _check_run_name(name)
            own = tuple(run_overrides) + tuple(point_overrides)
            notes = _replaced(extra, own, f"run {name}: its own", "the command line's")
            notes += _replaced(own, self.after, f"run {name}: the study's after", "its own")
            overrides = tuple(self.base) + tuple(extra) + own + tuple(self.after)
            planned.append(PlannedRun(name, own, overrides, tuple(notes)))
        seen: set[str] = set()
        for run in planned:
            if run.name in seen:
                raise StudyError(f"two runs are named {run.name!r}; rename one (grid names come from the values)")
            seen.add(run.name)
        return planned

    def replaced_base(self, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Notes on the study's ``base`` overrides that a command-line override replaces (a preset
        such as ``trainer=oneshot-paper`` resets the ``trainer.*`` keys set before it)."""
        return _replaced(self.base, list(extra), "the command line's", "the study's base", same_key=False)

    def baseline_name(self) -> str:
        """The run the report compares against: ``baseline`` if set, else a run named so, else the first."""
        names = [run.name for run in self.expand()]
        if self.baseline:
            return self.baseline
        return "baseline" if "baseline" in names else names[0]


# ---------------------------------------------------------------- parsing


def parse_study(data: dict[str, Any], source: str = "<study>") -> Study:
    """A ``Study`` from a parsed YAML mapping; unknown keys and wrong types fail with the file's name.

    Shorthands: ``launcher: local`` (a launcher name), ``eval: off`` (no evaluation),
    ``eval: validation`` (the runs' own held-out numbers) or ``eval: oneshot_v1`` (a protocol with
    default options); ``base``, ``after`` and each run may be a list of ``key=value`` strings or a
    mapping ``key: value``.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file is a mapping (name, base, runs, grid, eval, launcher ...)")
    try:
        return from_dict(Study, _expand_shorthands(dict(data), source))
    except ConfigError as err:  # StudyError included: every message names the file
        raise StudyError(f"{source}: {err}") from None


def _expand_shorthands(data: dict[str, Any], source: str) -> dict[str, Any]:
    if "name" not in data:
        data["name"] = Path(source).stem if source != "<study>" else ""
    if "eval" in data:
        data["eval"] = _eval_shorthand(data["eval"])
    if isinstance(data.get("launcher"), str):
        data["launcher"] = {"name": data["launcher"]}
    for key in ("base", "after"):
        if isinstance(data.get(key), dict):
            data[key] = _override_list(data[key], key)
    if isinstance(data.get("runs"), dict):
        data["runs"] = {k: _override_list(v, f"runs.{k}") for k, v in data["runs"].items()}
    elif data.get("runs") is not None:
        raise StudyError("runs must be a mapping of run name -> overrides")
    return data


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (YAML); its name defaults to the file's stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise StudyError(f"cannot read study file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    return parse_study(data or {}, str(path))


def dump_study(study: Study, path: str | Path, extra: list[str] | tuple[str, ...] = (), header: str = "") -> Path:
    """Write the resolved study: ``extra`` (command-line overrides) folded into ``base``.

    The file loads back with ``load_study`` and expands to the same runs with the same overrides;
    ``header`` lines are written as YAML comments above it.
    """
    resolved = replace(study, base=[*study.base, *_override_list(list(extra), "command line")])
    tree = to_dict(resolved)
    if resolved.eval is None:
        tree["eval"] = "off"
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    atomic_write_text(Path(path), comment + yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    return Path(path)


# ---------------------------------------------------------------- helpers


def _eval_shorthand(value: Any) -> Any:
    if value is None or value is False or (isinstance(value, str) and value.lower() in ("off", "none", "false", "no")):
        return None
    if value is True:
        return {}
    if isinstance(value, str) and value.lower() == VALIDATION:
        return {"source": VALIDATION}
    if isinstance(value, str):
        return {"protocol": value}
    if isinstance(value, dict):
        return value
    raise StudyError(
        f"eval must be off, validation, a protocol name or a mapping (source, protocol, limit ...), got {value!r}"
    )


def _override_list(value: Any, where: str) -> list[str]:
    """``["a.b=1", ...]`` or ``{"a.b": 1}`` -> ``["a.b=1", ...]``, each checked to look like key=value."""
    if value is None:
        return []
    if isinstance(value, dict):
        items = [f"{key}={format_value(v)}" for key, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if not isinstance(item, str):
                raise StudyError(f"{where}: overrides are key=value strings, got {item!r}")
            items.append(item.strip())
    else:
        raise StudyError(f"{where}: give a list of key=value strings (or a mapping), got {value!r}")
    for item in items:
        key = item.split("=", 1)[0]
        if "=" not in item or not key.strip():
            raise StudyError(f"{where}: override {item!r} must look like key=value")
        _check_key(key.strip().lstrip("+"), f"{where}: override {item!r}")
    return items


def _check_key(key: str, where: str) -> None:
    if key == "run_dir":
        raise StudyError(f"{where}: run_dir is set by the sweep (SWEEP_DIR/<run name>); leave it out")
    if not key or any(not part for part in key.split(".")):
        raise StudyError(f"{where}: {key!r} is not a dotted config key")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StudyError(
            f"{what} {name!r} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        )


def _check_run_name(name: str) -> None:
    _check_name(name, "run name")
    if name in RESERVED_NAMES:
        raise StudyError(f"run name {name!r} is reserved for the sweep folder's own {name}/ (rename the run)")


def format_value(value: Any) -> str:
    """A YAML value as the text of an override: ``true``, ``none``, ``1e-05``, ``[1, 2]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key ends with (``loss.id.weight`` -> ``id.weight``)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        out[key] = suffix
    return out


def _grid_points(grid: dict[str, list[Any]]) -> list[tuple[str, list[str]]]:
    """(name, overrides) of each point of the cartesian product, in the grid's key and value order."""
    if not grid:
        return []
    keys = list(grid)
    short = _short_keys(keys)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        texts = [format_value(v) for v in values]
        name = "_".join(_UNSAFE.sub("_", f"{short[k]}-{t}").strip("_") for k, t in zip(keys, texts))
        points.append((name, [f"{k}={t}" for k, t in zip(keys, texts)]))
    return points


def _replaced(
    earlier: list[str] | tuple[str, ...],
    later: tuple[str, ...] | list[str],
    who: str,
    whose: str,
    same_key: bool = True,
) -> list[str]:
    """Notes for each ``earlier`` override that a ``later`` one replaces: a parent's preset, and
    with ``same_key`` the same key again."""
    notes = []
    later_keys = [item.split("=", 1)[0].lstrip("+") for item in later]
    for item in earlier:
        key = item.split("=", 1)[0].lstrip("+")
        for later_key, later_item in zip(later_keys, later):
            if (same_key and key == later_key) or key.startswith(later_key + "."):
                notes.append(f"{who} {later_item!r} replaces {whose} {item!r}")
    return notes

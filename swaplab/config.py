"""Typed configs: dataclasses with defaults in one place, overridable from the command line.

A config is a tree of dataclasses. Command-line overrides use dotted keys (``trainer.steps=500``,
``model.ae_dims=128``) and are parsed against the field's declared type, so a wrong value fails at
parse time with the valid choices: ``Literal`` fields list them, and a name field declared with
``choice_field`` is checked against its registry (the registry is the list, never a copy). A field
whose type is a
registered *group* (``model``, ``loss`` ...) can be replaced wholesale by a preset name
(``model=liae-ud``), after which its own fields accept overrides. The resolved config is saved as
YAML with every run, and loads back into the same classes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from swaplab.io.atomic import atomic_write_text
from swaplab.registry import Registry

C = TypeVar("C")

#: Presets for config fields that have variants, keyed by group name, then preset name.
#: ``CONFIG_GROUPS["model"].register("liae")(lambda: LIAEConfig(...))``.
CONFIG_GROUPS: dict[str, Registry[Any]] = {}


def config_group(name: str, providers: tuple[str, ...] = ()) -> Registry[Any]:
    """The registry of presets for group ``name`` (created on first use); ``providers`` are modules
    whose import registers presets of it (see ``Registry``)."""
    registry = CONFIG_GROUPS.setdefault(name, Registry(f"{name} preset"))
    registry.add_providers(*providers)
    return registry


class ConfigError(ValueError):
    """A config value or override that does not fit the declared type."""


# ---------------------------------------------------------------- conversion of one value


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str = "value") -> Any:
    """Convert ``value`` (a YAML/JSON scalar, list, dict or command-line string) to type ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: {value!r} fits none of {_type_name(tp)} ({'; '.join(errors)})")
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a, key) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [coerce(v, item, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): coerce(v, vt, key) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not one of {[e.value for e in tp]}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(str(value)).expanduser()
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _group_of(tp: Any, field: dataclasses.Field) -> str | None:
    return field.metadata.get("group") if field.metadata else None


def _check_choices(value: Any, field: dataclasses.Field, key: str) -> None:
    """A ``choice_field``'s value (a name, or a list of names) must be registered in its registry."""
    registry = field.metadata.get("choices") if field.metadata else None
    if registry is None:
        return
    allowed = set(field.metadata.get("also", ()))
    for name in value if isinstance(value, (list, tuple)) else [value]:
        if name not in allowed and name not in registry:
            raise ConfigError(f"{key}: {registry.unknown(name)}")


# ---------------------------------------------------------------- dataclass <-> dict


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a mapping, validating every value; unknown keys are an error."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}{where}; valid: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        group = _group_of(hints[name], fields[name])
        if group and isinstance(value, dict) and "name" in value:
            preset = config_group(group).create(value["name"])
            rest = {k: v for k, v in value.items() if k != "name"}
            kwargs[name] = _update(preset, rest, key) if rest else preset
        else:
            kwargs[name] = coerce(value, hints[name], key)
            _check_choices(kwargs[name], fields[name], key)
    return cls(**kwargs)


def _update(obj: Any, data: dict[str, Any], prefix: str) -> Any:
    merged = to_dict(obj)
    _deep_merge(merged, data)
    return from_dict(type(obj), merged, prefix)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v


def to_dict(cfg: Any) -> Any:
    """A plain, YAML/JSON-ready tree (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    if isinstance(cfg, enum.Enum):
        return cfg.value
    return cfg


# ---------------------------------------------------------------- command-line overrides


def apply_overrides(cfg: C, overrides: list[str] | tuple[str, ...]) -> C:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied, in order.

    ``group=preset`` replaces a grouped field with a registered preset; later overrides of the
    same field's keys then apply to that preset.
    """
    tree = to_dict(cfg)
    cls = type(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("+")
        path = key.split(".")
        node_cls: Any = cls
        node = tree
        for depth, part in enumerate(path):
            fields = {f.name: f for f in dataclasses.fields(node_cls)}
            if part not in fields:
                where = ".".join(path[:depth]) or "the config"
                close = ", ".join(sorted(fields))
                raise ConfigError(f"unknown key {key!r}: {where} has no field {part!r} (fields: {close})")
            field = fields[part]
            tp = _hints(node_cls)[part]
            last = depth == len(path) - 1
            group = _group_of(tp, field)
            if last:
                if group and not raw.strip().startswith("{"):
                    try:
                        preset = config_group(group).create(raw.strip())
                    except KeyError as err:
                        raise ConfigError(f"{key}: {err.args[0]}") from None
                    node[part] = to_dict(preset)
                else:
                    value = yaml.safe_load(raw) if raw.strip().startswith(("{", "[")) else raw
                    node[part] = to_dict(coerce(value, tp, key))
            else:
                current = _section_type(node, part, tp, group)
                if current is None:
                    raise ConfigError(f"{key}: {'.'.join(path[: depth + 1])} is not a config section")
                node_cls = current
                node = node[part]
    return from_dict(cls, tree)


def _section_type(node: dict[str, Any], part: str, tp: Any, group: str | None) -> type | None:
    """The dataclass type of a nested section; for a grouped field, the chosen preset's type."""
    if not dataclasses.is_dataclass(tp):
        return None
    sub = node.get(part)
    if group and isinstance(sub, dict) and sub.get("name") in config_group(group):
        return type(config_group(group).create(sub["name"]))
    return tp


# ---------------------------------------------------------------- files


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
    return path


def load_config(cls: type[C], path: str | Path) -> C:
    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
    return from_dict(cls, data or {})


def config_hash(cfg: Any) -> str:
    """A short stable hash of the resolved config (for manifests)."""
    import hashlib

    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def register_preset(group: str, name: str, config_type: type, **fields: Any) -> None:
    """Register ``config_type(name=name, **fields)`` as preset ``name`` of ``group``; a dict given for
    a field that holds a dataclass changes only the keys it names (``discriminator=dict(dims=16)``)."""

    def build() -> Any:
        flat = {k: v for k, v in fields.items() if not isinstance(v, dict)}
        cfg = config_type(name=name, **flat)
        for key, changes in fields.items():
            if isinstance(changes, dict):
                setattr(cfg, key, dataclasses.replace(getattr(cfg, key), **changes))
        return cfg

    config_group(group).register(name)(build)


def group_field(default: Any, group: str) -> Any:
    """A dataclass field that can be replaced by a preset of ``group`` (``model=liae``). ``default``
    is a config type or factory, or the name of one of the group's presets (built when the field is)."""
    if isinstance(default, str):
        preset = default
        default = lambda: config_group(group).create(preset)  # noqa: E731 - late: presets register on import
    return dataclasses.field(default_factory=default, metadata={"group": group})


def since_field(default: Any, *, before: Any) -> Any:
    """A setting added after runs were saved, whose default changes what training does: ``before`` is
    the value that reproduces a run saved without it. ``fill_absent`` gives it to a saved run config
    that lacks the setting, so resuming such a run under the new default is refused (the configs
    differ) instead of changing its training halfway, and its exported card says what it was."""
    return dataclasses.field(default=default, metadata={"before": before})


def fill_absent(cls: type, tree: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str], list[str]]:
    """A saved run config's tree with the settings it lacks (written before they existed) filled with
    their ``since_field`` values; the dotted keys so filled; and those it lacks that have none (read
    as their defaults)."""
    hints = _hints(cls)
    tree, filled, lacking = dict(tree), [], []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{prefix}.{field.name}" if prefix else field.name
        if field.name not in tree:
            if field.metadata and "before" in field.metadata:
                tree[field.name] = field.metadata["before"]
                filled.append(key)
            else:
                lacking.append(key)
            continue
        section = _section_type(tree, field.name, hints[field.name], _group_of(hints[field.name], field))
        if section is not None and isinstance(tree[field.name], dict):
            tree[field.name], more_filled, more_lacking = fill_absent(section, tree[field.name], key)
            filled += more_filled
            lacking += more_lacking
    return tree, filled, lacking


def choice_field(default: Any, registry: Registry[Any], *, also: tuple[str, ...] = ()) -> Any:
    """A name field (``str``, or a list or tuple of names) whose values must be registered in
    ``registry``; ``also`` lists extra accepted words (such as ``"none"``). Checked whenever a config
    is built from text (files, ``key=value`` overrides), with the registry's names in the error."""
    metadata = {"choices": registry, "also": also}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)

"""Typed configs: overrides are parsed against declared types, presets replace whole groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from swaplab.config import (
    ConfigError,
    apply_overrides,
    config_group,
    config_hash,
    fill_absent,
    from_dict,
    group_field,
    load_config,
    save_config,
    since_field,
)
from swaplab.registry import Registry


@dataclass
class Net:
    name: str = "small"
    width: int = 8


@dataclass
class WideNet(Net):
    name: str = "wide"
    width: int = 64
    dropout: float = 0.1


@dataclass
class LaterNet(Net):
    name: str = "later"
    # Added after runs were saved; 0.5 changes training, 0.0 is what those runs did.
    mixing: float = since_field(0.5, before=0.0)


config_group("test-net").register("small")(Net)
config_group("test-net").register("later")(LaterNet)
config_group("test-net").register("wide")(WideNet)


@dataclass
class Opt:
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Top:
    net: Net = group_field(Net, "test-net")
    opt: Opt = field(default_factory=Opt)
    steps: int = 10
    out: Path = Path("runs/x")
    tags: list[str] = field(default_factory=list)
    resume: bool = True
    seed: int | None = None


def test_scalar_overrides_are_typed() -> None:
    cfg = apply_overrides(Top(), ["steps=200", "opt.lr=3e-4", "resume=false", "tags=a,b", "seed=none"])
    assert cfg.steps == 200 and isinstance(cfg.steps, int)
    assert cfg.opt.lr == pytest.approx(3e-4)
    assert cfg.resume is False and cfg.tags == ["a", "b"] and cfg.seed is None
    assert apply_overrides(Top(), ["opt.betas=[0.5,0.9]"]).opt.betas == (0.5, 0.9)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=ten", "expected an integer"),
        ("steps=1.5", "expected an integer"),
        ("opt.schedule=linear", "'constant', 'cosine'"),
        ("opt.momentum=0.9", "no field 'momentum'"),
        ("nonsense", "key=value"),
        ("net=huge", "unknown test-net preset 'huge'"),
    ],
)
def test_bad_overrides_fail_at_parse_time(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Top(), [override])


def test_group_preset_then_its_own_fields() -> None:
    cfg = apply_overrides(Top(), ["net=wide", "net.dropout=0.3"])
    assert isinstance(cfg.net, WideNet) and cfg.net.width == 64 and cfg.net.dropout == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="dropout"):
        apply_overrides(Top(), ["net.dropout=0.3"])  # the default preset has no dropout


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    cfg = apply_overrides(Top(), ["net=wide", "steps=7", "out=/tmp/a b", "tags=x"])
    save_config(cfg, tmp_path / "config.yaml")
    loaded = load_config(Top, tmp_path / "config.yaml")
    assert loaded == cfg and isinstance(loaded.net, WideNet)
    assert config_hash(loaded) == config_hash(cfg)
    assert config_hash(apply_overrides(cfg, ["steps=8"])) != config_hash(cfg)


def test_registry_errors_suggest_names() -> None:
    reg: Registry = Registry("widget")
    reg.register("gear")(int)
    with pytest.raises(KeyError, match="Did you mean 'gear'"):
        reg.get("geer")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("gear")(float)
    assert reg.create("gear", "5") == 5 and "gear" in reg and reg.names() == ["gear"]


def test_a_saved_config_lacking_a_later_setting_reads_as_it_was_trained() -> None:
    # Written before ``mixing`` and ``seed`` existed: ``mixing`` takes its value from before it
    # existed (the preset's type found through the group), ``seed`` has none and is listed.
    saved = {"net": {"name": "later", "width": 8}, "opt": {"lr": 0.01}, "steps": 5}
    tree, filled, lacking = fill_absent(Top, saved)
    assert filled == ["net.mixing"]
    assert "seed" in lacking and "opt.schedule" in lacking and "net.mixing" not in lacking
    cfg = from_dict(Top, tree)
    assert cfg.net.mixing == 0.0 and cfg.opt.lr == 0.01
    # A config built today takes the new default; a saved one that has the setting keeps it.
    assert LaterNet().mixing == 0.5
    assert from_dict(Top, fill_absent(Top, {"net": {"name": "later", "mixing": 0.3}})[0]).net.mixing == 0.3

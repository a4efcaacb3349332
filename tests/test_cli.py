"""The command line: each command is a thin wrapper, so these check wiring and messages."""

from __future__ import annotations

from pathlib import Path

import yaml

from swaplab.cli import main


def test_config_prints_defaults_with_overrides(capsys) -> None:
    assert main(["config", "extract", "size=128", "faces.detect_every=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["size"] == 128 and printed["faces"]["detect_every"] == 3
    assert main(["config", "train", "model=df-cpu"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["arch"] == "df"
    assert main(["config", "swap"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["mark"] is True
    assert main(["config", "nonsense"]) == 2


def test_train_then_export(pair_facesets: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    src, dst = pair_facesets
    run = tmp_path / "run"
    args = ["train", "model=df-cpu", f"data.src={src}", f"data.dst={dst}", "trainer=test", "trainer.steps=2"]
    assert main([*args, f"run_dir={run}"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 2 (steps)" in out and str(run) in out
    assert (run / "config.yaml").is_file() and (run / "manifest.json").is_file()
    assert main(["export", str(run), "-o", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert main(["train", "model=nope", f"run_dir={tmp_path / 'x'}"]) == 2
    assert "unknown model preset 'nope'" in capsys.readouterr().err


def test_unknown_words_are_refused(capsys) -> None:
    try:
        main(["faceset", "info", "somewhere", "size=3"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err

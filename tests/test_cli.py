"""The command line: each command is a thin wrapper, so these check wiring and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    assert main(["config", "train", "model=simswap-tiny"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["arch"] == "simswap" and printed["trainer"]["name"] == "oneshot-tiny"
    assert main(["config", "swap", "mask=bogus"]) == 2
    assert "unknown swap mask mode 'bogus'" in capsys.readouterr().err


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
    with pytest.raises(SystemExit) as exit_:
        main(["faceset", "info", "somewhere", "size=3"])
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_exporting_onto_a_model_asks_first(pair_facesets: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    src, dst = pair_facesets
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "model=df-cpu",
                f"data.src={src}",
                f"data.dst={dst}",
                "trainer=test",
                "trainer.steps=1",
                f"run_dir={run}",
            ]
        )
        == 0
    )
    assert main(["export", str(run), "-o", str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "model.json").read_bytes()
    assert main(["export", str(run), "-o", str(tmp_path / "model")]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert (tmp_path / "model" / "model.json").read_bytes() == card
    assert main(["export", str(run), "-o", str(tmp_path / "model"), "--overwrite"]) == 0


def test_verify_reports_every_file_and_goes_on(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    plain = tmp_path / "plain.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 90, 60)).save(plain)
    assert main(["verify", str(tmp_path / "missing.png"), str(broken), str(plain)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "missing.png: unreadable: no such file" in out[0] and "broken.png: unreadable" in out[1]
    assert out[2].startswith(f"{plain}: ")
    assert main(["verify", str(plain)]) == 3


def test_list_prints_every_registered_name(capsys) -> None:
    assert main(["list", "masks"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "hull",
        "intersection",
        "learned",
        "segment",
        "segment+hull",
        "union",
    ]
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out
    assert "per-pair" in out and "oneshot" in out and "identity-net" in out and "swap-detector" in out
    assert main(["list", "trainers"]) == 0
    assert "steps=2000" in next(line for line in capsys.readouterr().out.splitlines() if "cpu-quick" in line)
    assert main(["list", "nonsense"]) == 2

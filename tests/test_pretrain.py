"""Pretraining per-pair models: the many-identity faces, ``init=`` from a run or an exported model,
and exact resume of a run that started from pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swaplab.config import ConfigError
from swaplab.data.lfw import LFW_TRAIN_PEOPLE, read_people_list
from swaplab.models import create_model
from swaplab.train.entry import build_config
from swaplab.train.export import export_model
from swaplab.train.loop import train
from swaplab.train.pretrain import lfw_pretraining_photos
from swaplab.train.recipes.per_pair import load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = ["model=liae-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


def run(src: Path, dst: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*TINY_MODEL, "trainer=test", f"data.src={src}", f"data.dst={dst}", f"run_dir={run_dir}", *extra]


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"checkpoints/step-{step:07d}/model.safetensors")


def test_pretraining_photos_come_from_the_training_split_without_the_excluded_pair(lfw):
    photos = lfw_pretraining_photos(lfw, per_person=2, max_people=50, exclude=["Aaron_Peirsol"])
    people = {photo.parent.name for photo in photos}
    train_people = read_people_list(lfw.parent / LFW_TRAIN_PEOPLE)
    assert people <= set(train_people) and "Aaron_Peirsol" not in people
    assert 40 <= len(people) <= 50 and len(photos) <= 100
    assert all(sum(p.parent.name == person for p in photos) <= 2 for person in people)
    with pytest.raises(ValueError, match="per_person"):
        lfw_pretraining_photos(lfw, per_person=0)


@pytest.mark.slow
def test_pretrained_weights_load_and_a_run_from_them_resumes_exactly(pair_facesets, tmp_path):
    src, dst = pair_facesets
    # Pretraining: both sides draw from one faceset (a many-identity one in practice).
    pretrain = tmp_path / "pretrain"
    cfg = build_config(run(dst, dst, pretrain, "trainer.steps=2"))
    train(cfg)
    pretrained = weights(pretrain, 2)
    for source in (pretrain, export_model(pretrain, tmp_path / "pretrained-model").parent):
        model = create_model(cfg.model)
        load_pretrained(model, source)
        state = model.state_dict()
        assert sorted(state) == sorted(pretrained)
        assert all(torch.equal(state[key], pretrained[key]) for key in pretrained)

    # A pair started from it: uninterrupted against stopped at step 2 and resumed to 4.
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    train(build_config(run(src, dst, whole, "trainer.steps=4", f"init={pretrain}")))
    train(build_config(run(src, dst, halves, "trainer.steps=2", f"init={pretrain}")))
    pretrain.rename(tmp_path / "pretrain-away")  # resuming needs the checkpoint, not the weights it started from
    result = train(build_config([f"run_dir={halves}", "trainer.steps=4"]))
    (tmp_path / "pretrain-away").rename(pretrain)
    assert result.step == 4
    want, got = weights(whole, 4), weights(halves, 4)
    assert all(torch.equal(got[key], want[key]) for key in want)
    scratch = tmp_path / "scratch"  # the same pair from a fresh initialisation ends elsewhere
    train(build_config(run(src, dst, scratch, "trainer.steps=4")))
    assert not torch.equal(weights(scratch, 4)["encoder.body.0.conv.weight"], want["encoder.body.0.conv.weight"])

    with pytest.raises(ConfigError, match="do not fit"):
        train(build_config(run(src, dst, tmp_path / "other", "model.ae_dims=16", f"init={pretrain}")))
    with pytest.raises(ConfigError, match="init="):
        train(build_config(run(src, dst, tmp_path / "none", f"init={tmp_path / 'missing'}")))
    assert not (tmp_path / "none").exists()  # refused before any file was written

"""Shared fixtures: where the real data lives, and small synthetic inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$SWAPLAB_DATA`` or ``../shared/data`` beside the checkout (as in CI)."""
    candidates = [os.environ.get("SWAPLAB_DATA"), REPO.parent / "shared" / "data"]
    for cand in candidates:
        if cand and Path(cand, "lfw").is_dir():
            return Path(cand)
    return None


@pytest.fixture
def one_thread():
    """One intra-op thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a shared
    2-core machine two OpenMP threads spin against other processes and run 5-20x slower
    (measured here: a tiny SimSwap step 3.1 s against 0.15 s), and float results do not vary."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread_module():
    """``one_thread`` for a whole module, module-scoped fixtures included: float results depend on
    the thread count (oneDNN splits its reductions by thread), so numbers compared across a module's
    fixtures and tests must all come from one setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real face data not found: set SWAPLAB_DATA or place shared/data beside the repo")
    return path


@pytest.fixture(scope="session")
def lfw(shared_data: Path) -> Path:
    return shared_data / "lfw" / "lfw-deepfunneled"


def _lfw_images(lfw_root: Path, person: str, count: int, offset: int = 0) -> list[Path]:
    return sorted((lfw_root / person).glob("*.jpg"))[offset : offset + count]


@pytest.fixture(scope="session")
def pair_facesets(tmp_path_factory: pytest.TempPathFactory, lfw: Path) -> tuple[Path, Path]:
    """Small real facesets of the reference pair (George_W_Bush -> Colin_Powell), 128 px crops."""
    from swaplab.facesets.extract import ExtractConfig, extract

    root = tmp_path_factory.mktemp("pair")
    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1  # LFW images sometimes show a second person at the edge
    out = []
    for person in ("George_W_Bush", "Colin_Powell"):
        dest = root / person
        summary = extract(_lfw_images(lfw, person, 24), dest, cfg, progress=False)
        assert summary.faces >= 20, summary.lines()
        out.append(dest)
    return out[0], out[1]


@pytest.fixture(scope="session")
def pair_model(tmp_path_factory: pytest.TempPathFactory, pair_facesets: tuple[Path, Path]) -> Path:
    """A real liae-cpu model trained for 2 steps on the reference pair, exported for swapping. One per
    session: each copy is about 430 MB on disk with its checkpoint, so tests share it and never write into it."""
    from swaplab.config import apply_overrides
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.per_pair import TrainConfig

    root = tmp_path_factory.mktemp("pair-model")
    src, dst = pair_facesets
    words = ["model=liae-cpu", f"data.src={src}", f"data.dst={dst}", "trainer=test", "trainer.steps=2"]
    train(apply_overrides(TrainConfig(), [*words, f"run_dir={root / 'run'}"]))
    export_model(root / "run", root / "model")
    return root / "model"


@pytest.fixture(scope="session", autouse=True)
def temporary_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test writes swaplab's user cache (identity networks, chips) into a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWAPLAB_CACHE", str(tmp_path_factory.mktemp("swaplab-cache")))
        patch.setenv("SWAPLAB_CONFIG", str(tmp_path_factory.mktemp("swaplab-config")))  # the C2PA signer
        patch.delenv("SWAPLAB_LFW_ARCFACE", raising=False)
        yield


@pytest.fixture(scope="session")
def lfw_arcface(temporary_user_cache, shared_data: Path) -> Path:
    """swaplab's own identity network, its tiny ``test`` build (seconds), installed in the temporary cache."""
    import torch

    from swaplab.train.recipes.identity_net import build_identity_network

    threads = torch.get_num_threads()
    try:
        return build_identity_network("lfw-arcface", "test", progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_segmenter(tmp_path_factory: pytest.TempPathFactory, pair_facesets: tuple[Path, Path]):
    """A test-sized face segmenter trained on the reference pair's faces for a fixed number of steps: (run, result)."""
    import torch

    from swaplab.config import apply_overrides
    from swaplab.train.loop import train
    from swaplab.train.recipes.segmenter import SegmenterTrainConfig

    root = tmp_path_factory.mktemp("segmenter")
    cfg = apply_overrides(
        SegmenterTrainConfig(),
        [
            "model=face-segmenter-test",
            "trainer=segmenter-test",
            "trainer.steps=450",
            "trainer.batch_size=8",
            "trainer.checkpoint_every=0",
            f"data.facesets=[{pair_facesets[0]},{pair_facesets[1]}]",
            "data.val_faces=10",
            f"run_dir={root / 'run'}",
        ],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cfg)
    finally:
        torch.set_num_threads(threads)
    return root / "run", result


@pytest.fixture(scope="session")
def split_facesets(tmp_path_factory: pytest.TempPathFactory, lfw: Path):
    """``make(train_people, train_count, eval_people, eval_count)``: 128 px facesets of the first photos
    of peopleDevTrain people (``train``) and peopleDevTest people (``eval``), with ``lists`` (the split
    files' folder). Each combination is extracted once per session and shared by the one-shot tests."""
    from swaplab.facesets.extract import ExtractConfig, extract

    made: dict[tuple, dict[str, Path]] = {}

    def make(train_people: tuple[str, ...], train_count: int, eval_people: tuple[str, ...], eval_count: int):
        key = (tuple(train_people), train_count, tuple(eval_people), eval_count)
        if key not in made:
            root = tmp_path_factory.mktemp("oneshot-faces")
            cfg = ExtractConfig(size=128)
            cfg.faces.max_faces = 1
            for role, people, count in (("train", train_people, train_count), ("eval", eval_people, eval_count)):
                images = [p for person in people for p in sorted((lfw / person).glob("*.jpg"))[:count]]
                summary = extract(images, root / role, cfg, progress=False)
                assert summary.faces == len(images), summary.lines()
            made[key] = {"train": root / "train", "eval": root / "eval", "lists": lfw.parent}
        return made[key]

    return make

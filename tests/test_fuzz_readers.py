"""Property-based fuzzing of the readers of files users hand to swaplab (Hypothesis).

Every malformed faceset, model card, checkpoint index or dlib network file must raise the
project's own error type (``FacesetError``, ``CardError``, ``CheckpointError``,
``DlibFormatError``), which the CLI turns into one line, and never another exception. Inputs are
valid files with seeded mutations (a field replaced by any JSON value, a field removed, bytes
flipped or cut) and plain noise; example counts are kept to a few seconds per reader.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swaplab.facesets.format import FaceRecord, Faceset, FacesetError, FacesetHeader
from swaplab.identity.dlib_format import DlibFormatError, parse_face_recognition_bytes
from swaplab.models.card import CardError, load_model, read_card
from swaplab.train.checkpoint import CheckpointError, load_checkpoint, load_latest_good, read_state, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _mutated(document: Any, data: st.DataObject) -> Any:
    """``document`` with one value anywhere in it replaced by any JSON value or removed, or the
    whole document replaced."""
    document = json.loads(json.dumps(document))
    places: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            places.append((node, key))
            walk(value)

    walk(document)
    choice = data.draw(st.integers(-1, len(places) - 1))
    if choice < 0:
        return data.draw(json_values)
    node, key = places[choice]
    if data.draw(st.booleans()):
        del node[key]
    else:
        node[key] = data.draw(json_values)
    return document


def _write_document(path: Path, document: Any, data: st.DataObject) -> None:
    text = json.dumps(document)
    if data.draw(st.booleans()):
        path.write_text(text, encoding="utf-8")
        return
    raw = text.encode("utf-8")
    cut = data.draw(st.integers(0, len(raw)))  # a torn write, or noise in place of the file
    path.write_bytes(raw[:cut] + data.draw(st.binary(max_size=8)))


# ---------------------------------------------------------------- facesets


def _record() -> dict[str, Any]:
    points = [[float(i), float(i % 7)] for i in range(68)]
    record = FaceRecord(
        id="clip-0123456789_f000000_0",
        file="faces/clip-0123456789_f000000_0.jpg",
        source="clip.jpg",
        frame=0,
        time=0.0,
        face_index=0,
        track_id=0,
        score=0.99,
        box=[1.0, 2.0, 30.0, 40.0],
        source_size=[64, 64],
        matrix=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        landmarks=points,
        landmarks_source=points,
        landmarks5_source=points[:5],
        identity=[0.1] * 128,
        mask=points[:10],
        blur=12.5,
        pose=[1.0, 2.0, 3.0],
    )
    return asdict(record)


def _use_faceset(root: Path) -> None:
    """What training and sorting do with a faceset's records."""
    faceset = Faceset(root, allow_damaged=True)
    for index, record in enumerate(faceset):
        assert record.matrix_array.shape == (2, 3)
        assert record.landmarks_array.ndim == 2 and record.landmarks_array.shape[1] == 2
        assert faceset.identities().shape == (len(faceset), 128)
        assert faceset.image_path(index).resolve().is_relative_to(root.resolve())


@FUZZ
@given(data=st.data())
def test_faceset_reader_fuzz(data: st.DataObject) -> None:
    header = asdict(FacesetHeader(template="ffhq", size=128))
    shard = {"records": [_record()], "source": "clip.jpg"}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "shards").mkdir()
        (root / "faces").mkdir()
        target = data.draw(st.sampled_from(["header", "shard", "both"]))
        header_doc = _mutated(header, data) if target in ("header", "both") else header
        shard_doc = _mutated(shard, data) if target in ("shard", "both") else shard
        _write_document(root / "faceset.json", header_doc, data)
        _write_document(root / "shards" / "clip-0123456789.json", shard_doc, data)
        try:
            Faceset(root)
        except FacesetError:
            pass
        try:
            _use_faceset(root)
        except FacesetError:
            pass


def test_a_record_naming_a_file_outside_the_faceset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "faceset.json").write_text(json.dumps(asdict(FacesetHeader(template="ffhq", size=128))))
    record = {**_record(), "file": "../../../etc/passwd"}
    (tmp_path / "shards" / "a.json").write_text(json.dumps({"records": [record]}))
    with pytest.raises(FacesetError, match="outside the faceset"):
        Faceset(tmp_path)


# ---------------------------------------------------------------- model cards


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real card and weights of a tiny per-pair network, written as export writes them."""
    from safetensors.torch import save_file

    from swaplab.config import to_dict
    from swaplab.io.atomic import sha256_file
    from swaplab.models.config import model_preset
    from swaplab.models.factory import create_model

    folder = tmp_path_factory.mktemp("card")
    config = model_preset("df-cpu", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4)
    model = create_model(config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    card = {
        "format": "swaplab-model",
        "version": 2,
        "recipe": "per-pair",
        "swapper": "per-pair",
        "arch": config.arch,
        "model": to_dict(config),
        "weights": {"file": "model.safetensors", "sha256": sha256_file(folder / "model.safetensors")},
    }
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    load_model(folder)  # the unmutated card loads
    return folder


@FUZZ
@given(data=st.data())
def test_model_card_reader_fuzz(tiny_model: Path, data: st.DataObject) -> None:
    card = json.loads((tiny_model / "model.json").read_text(encoding="utf-8"))
    if data.draw(st.booleans()):
        card["version"] = 1  # the upgrade path reads other fields
        card["kind"] = data.draw(json_values)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shutil.copyfile(tiny_model / "model.safetensors", root / "model.safetensors")
        _write_document(root / "model.json", _mutated(card, data), data)
        try:
            read_card(root)
            load_model(root)
        except CardError:
            pass


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    names = [n for n, _ in model.named_parameters()]
    for step in (1, 2):
        save_checkpoint(root, step, model=model, optimizer=optimizer, param_names=names, state={"metrics": {}})
    return root


@FUZZ
@given(data=st.data())
def test_checkpoint_index_fuzz(checkpoint_root: Path, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "checkpoints"
        shutil.copytree(checkpoint_root, root)
        which = data.draw(st.sampled_from(["latest", "state", "both"]))
        if which in ("latest", "both"):
            latest = json.loads((root / "latest.json").read_text(encoding="utf-8"))
            _write_document(root / "latest.json", _mutated(latest, data), data)
        state_path = root / "step-0000002" / "state.json"
        if which in ("state", "both"):
            _write_document(state_path, _mutated(json.loads(state_path.read_text(encoding="utf-8")), data), data)
        try:
            read_state(state_path.parent)
            load_checkpoint(state_path.parent)
        except CheckpointError:
            pass
        checkpoint, _ = load_latest_good(root)  # never raises: it falls back to step 1
        assert checkpoint is not None and checkpoint.step in (1, 2)


# ---------------------------------------------------------------- the dlib network file


@pytest.fixture(scope="module")
def dlib_head() -> bytes:
    """The start of the real dlib face-recognition file (its header, nest and first layers)."""
    from swaplab.identity.dlib_resnet import default_dlib_model_path

    path = default_dlib_model_path()
    if not path.is_file():
        pytest.skip("face_recognition_models is not installed")
    with path.open("rb") as handle:
        return handle.read(1 << 16)


@FUZZ
@given(data=st.data())
def test_dlib_parser_fuzz(dlib_head: bytes, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["flip", "cut", "noise"]))
    if kind == "noise":
        blob = data.draw(st.binary(max_size=256))
    else:
        blob = bytearray(dlib_head[: data.draw(st.integers(0, len(dlib_head)))])
        if kind == "flip" and blob:
            for _ in range(data.draw(st.integers(1, 4))):
                # Most structure (versions, names, the nest) sits in the first few hundred bytes.
                where = data.draw(st.integers(0, min(len(blob), 2048) - 1))
                blob[where] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    with pytest.raises(DlibFormatError):
        parse_face_recognition_bytes(blob, "fuzzed.dat")


def test_dlib_huge_exponents_are_format_errors() -> None:
    from swaplab.identity.dlib_format import DlibReader

    # mantissa 1, exponent 5000: beyond any float, which dlib never writes
    reader = DlibReader(bytes([0x01, 0x01, 0x02, 0x88, 0x13]), "huge.dat")
    with pytest.raises(DlibFormatError, match="huge.dat"):
        reader.float("a weight")
    assert np.isfinite(DlibReader(bytes([0x01, 0x01, 0x00]), "one.dat").float())

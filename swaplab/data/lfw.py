"""LFW's official split and its files: the one place that says who may be trained on and who scored.

Models that learn from many identities (one-shot swappers, identity networks, swap detectors)
train only on ``peopleDevTrain.txt`` people and are evaluated only on ``peopleDevTest.txt`` people;
``check_split`` refuses anything else with a ``SplitError`` that names the people. Also the people
and pairs list readers and the LFW image path. Reads text files only: no images, no training.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

Role = Literal["train", "eval"]

#: The official LFW people lists: training uses the first, evaluation the second (disjoint).
SPLIT_FILES: dict[str, str] = {"train": "peopleDevTrain.txt", "eval": "peopleDevTest.txt"}
LFW_TRAIN_PEOPLE = SPLIT_FILES["train"]
LFW_TEST_PEOPLE = SPLIT_FILES["eval"]


class SplitError(ValueError):
    """Faces of people outside the LFW split that a role (train or eval) may use."""


def default_lists_dir() -> Path:
    """``<data root>/lfw`` (see ``swaplab.data.fetch.locate_data_root``)."""
    from swaplab.data.fetch import data_root

    return data_root() / "lfw"


def read_people_list(path: str | Path) -> dict[str, int]:
    """An LFW ``people*.txt`` list: its first line is the count, then ``Name<TAB>images`` per line."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise FileNotFoundError(f"cannot read the LFW people list {path}: {err}") from None
    if not lines or not lines[0].isdigit():
        raise ValueError(f"{path}: not an LFW people list (the first line must be the number of people)")
    people: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"{path}, line {number}: expected 'Name<TAB>count', got {line!r}")
        people[fields[0]] = int(fields[1])
    if len(people) != int(lines[0]):
        raise ValueError(f"{path}: announces {lines[0]} people but lists {len(people)}")
    return people


def person_of(source: str | Path) -> str:
    """The person of an LFW photo (or a face extracted from one): the name of the photo's folder."""
    return Path(source).parent.name


def check_split(
    people: Iterable[str],
    role: Role,
    lists_dir: str | Path | None = None,
    *,
    what: str = "the data",
    strict: bool = True,
) -> None:
    """Raise ``SplitError`` unless every person may be used for ``role``.

    ``train`` allows only ``peopleDevTrain.txt`` people, ``eval`` only ``peopleDevTest.txt``
    people. With ``strict``, people in neither list are refused too (a faceset that is not LFW);
    without it only the other split's people are (a network trained on a folder of other faces).
    ``what`` names the offending data in the message.
    """
    lists = Path(lists_dir) if lists_dir is not None else default_lists_dir()
    other: Role = "eval" if role == "train" else "train"
    allowed = read_people_list(lists / SPLIT_FILES[role])
    forbidden = read_people_list(lists / SPLIT_FILES[other])
    names = set(people)
    wrong_split = sorted(n for n in names if n in forbidden and n not in allowed)
    unknown = sorted(n for n in names if n not in allowed and n not in forbidden) if strict else []
    problems = []
    if wrong_split:
        problems.append(f"{len(wrong_split)} people of {SPLIT_FILES[other]}, e.g. {', '.join(wrong_split[:5])}")
    if unknown:
        problems.append(f"{len(unknown)} people in neither LFW list, e.g. {', '.join(unknown[:5])}")
    if problems:
        use = "trained on" if role == "train" else "evaluated on"
        raise SplitError(
            f"{what} may only hold people of {SPLIT_FILES[role]} (those models are {use}); it holds "
            + " and ".join(problems)
            + ". Extract the faces of the right split into a separate faceset."
        )


def read_pairs(path: str | Path) -> list[tuple[str, int, str, int]]:
    """An LFW pairs file as (name1, index1, name2, index2) rows; same-person rows repeat the name.

    Lines of 3 fields (``Name i j``) are same-person pairs, of 4 (``Name1 i Name2 j``) different
    people; all-number lines (the counts header) are skipped. Works for View 1's
    ``pairsDevTrain.txt``/``pairsDevTest.txt`` and View 2's ``pairs.txt``.
    """
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or all(f.isdigit() for f in fields):
            continue
        if len(fields) == 3:
            pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
        elif len(fields) == 4:
            pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
        else:
            raise ValueError(f"{path}, line {number}: expected 'Name i j' or 'Name1 i Name2 j', got {line!r}")
    return pairs


def lfw_image(images: Path, name: str, index: int) -> Path:
    """``images/<Name>/<Name>_<index:04d>.jpg``."""
    return images / name / f"{name}_{index:04d}.jpg"

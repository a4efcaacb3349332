"""The catalog of public sample data sets swaplab can fetch, one ``DatasetSpec`` per set.

Each entry says where every file comes from, how big it is, which digest proves it intact and
where it lands, mirroring the layout of the workplace's ``shared/data`` folder. It holds no I/O:
downloading and unpacking live in ``swaplab.data.fetch``. Never write a digest here that was not
published by the file's source or computed from a byte-identical copy (say which, in a comment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swaplab.registry import Registry

Unpack = Literal["none", "tgz", "zip"]


@dataclass(frozen=True)
class DatasetFile:
    """One downloadable file of a data set.

    ``url`` is the canonical address; ``mirrors`` are tried in order when it cannot be reached
    (only without ``base_url``). ``filename`` is the name on disk, inside ``<root>/<into>/``.
    ``size`` is the exact byte count or None where the publisher states none. ``sha256`` and
    ``md5`` are the digests to verify (either, or both); a file with neither is kept only with
    ``trust_unverified``. ``unpack`` says whether to extract it (the archive itself is then not
    kept) and ``creates`` names the top-level entries the archive must produce.
    """

    url: str
    filename: str
    size: int | None
    sha256: str | None
    md5: str | None = None
    unpack: Unpack = "none"
    into: str = ""
    creates: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    approx_mb: float | None = None  # for listings only, where ``size`` is unknown

    def __post_init__(self) -> None:
        if self.unpack != "none" and not self.creates:
            raise ValueError(f"{self.filename}: an archive must say which top-level entries it creates")
        for digest, length in ((self.sha256, 64), (self.md5, 32)):
            if digest is not None and (len(digest) != length or digest != digest.lower()):
                raise ValueError(f"{self.filename}: digest {digest!r} is not {length} lowercase hex digits")

    @property
    def verified(self) -> bool:
        """Whether a published (or byte-identical-copy) digest exists for this file."""
        return self.sha256 is not None or self.md5 is not None

    @property
    def size_mb(self) -> float | None:
        return self.size / 1e6 if self.size is not None else self.approx_mb


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: what it is, its terms of use, and its files.

    ``root`` is the folder, relative to the data root, that the set fills (``lfw`` gives
    ``<data root>/lfw/...``). ``download_note`` is appended to network errors, e.g. to say that
    the official host is known to be down.
    """

    name: str
    description: str
    terms: str
    homepage: str
    root: str
    files: tuple[DatasetFile, ...]
    download_note: str = ""

    @property
    def size_mb(self) -> float:
        return sum(f.size_mb or 0.0 for f in self.files)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """File ``spec`` in ``DATASETS`` under its own name."""
    return DATASETS.register(spec.name)(spec)


# ---------------------------------------------------------------------------------------------
# Labeled Faces in the Wild, deep-funneled.
#
# URLs: the download section of the official LFW page (vis-www.cs.umass.edu/lfw/index.html, as
# kept in the umass-vis-lfw/umass-vis-lfw.github.io repository). md5 digests: published on that
# page for the archive ("111MB, md5sum 68331da3eb755a505a502b5aacb3c201") and, for every file
# below, in torchvision's LFW loader (torchvision/datasets/lfw.py, `file_dict` and `checksums`).
# The md5 of every text list in /work/shared/data/lfw equals torchvision's published one, so
# those copies are the official bytes: their sizes and sha256 below were computed from them.
# The sha256 of pairs*.txt also equals the one scikit-learn publishes (sklearn/datasets/_lfw.py,
# `TARGETS`), whose figshare copies serve as mirrors. No sha256 of the archive is published
# anywhere we found, so it is verified by the published md5 alone (sha256=None, md5 set).

_LFW_PAGE = "http://vis-www.cs.umass.edu/lfw/"


def _lfw_list(filename: str, size: int, sha256: str, md5: str, mirror: str | None = None) -> DatasetFile:
    return DatasetFile(
        url=_LFW_PAGE + filename,
        filename=filename,
        size=size,
        sha256=sha256,
        md5=md5,
        mirrors=(mirror,) if mirror else (),
    )


LFW = register_dataset(
    DatasetSpec(
        name="lfw",
        description=(
            "Labeled Faces in the Wild, deep-funneled: 13,233 aligned 250x250 photos of 5,749 people, "
            "with the official development split (peopleDevTrain/peopleDevTest) and pair lists"
        ),
        terms=(
            "LFW (University of Massachusetts, Amherst) is a public research benchmark published without "
            "a formal licence. The photographs were collected from news sites on the web and belong to "
            "their photographers and agencies: research use only. Cite Huang et al., "
            "'Labeled Faces in the Wild', UMass TR 07-49 (2007), and for the deep-funneled images Huang, "
            "Mattar, Lee and Learned-Miller, 'Learning to Align from Scratch', NIPS 2012. The LFW page "
            "warns that results on LFW do not show that an algorithm is fit for commercial use."
        ),
        homepage=_LFW_PAGE,
        root="lfw",
        files=(
            DatasetFile(
                url=_LFW_PAGE + "lfw-deepfunneled.tgz",
                filename="lfw-deepfunneled.tgz",
                size=None,
                sha256=None,
                md5="68331da3eb755a505a502b5aacb3c201",  # published on the LFW page and by torchvision
                unpack="tgz",
                creates=("lfw-deepfunneled",),
                approx_mb=111,  # "111MB" on the LFW page
            ),
            _lfw_list(
                "peopleDevTrain.txt",
                66403,
                "2e58df13ba4cc143189336e001cc2c195f1dfa5b29a6475c02857be353c2a2fa",
                "54eaac34beb6d042ed3a7d883e247a21",
            ),
            _lfw_list(
                "peopleDevTest.txt",
                28334,
                "c3ed1f90499473401542101a56c14c1d82396bb8218c67a356d7460601047555",
                "e4bf5be0a43b5dcd9dc5ccfcb8fb19c5",
            ),
            _lfw_list(
                "pairsDevTrain.txt",
                56579,
                "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa",
                "4f27cbf15b2da4a85c1907eb4181ad21",
                mirror="https://ndownloader.figshare.com/files/5976012",
            ),
            _lfw_list(
                "pairsDevTest.txt",
                26002,
                "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c",
                "5132f7440eb68cf58910c8a45a2ac10b",
                mirror="https://ndownloader.figshare.com/files/5976009",
            ),
            _lfw_list(
                "pairs.txt",
                155335,
                "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
                "9f1ba174e4e1c508ff7cdf10ac338a7d",
                mirror="https://ndownloader.figshare.com/files/5976006",
            ),
            _lfw_list(
                "people.txt",
                94770,
                "bc8fa2b7f25c895cf7efb6de4f4fc27ca8b8d1cfa63350ad8b96eae2b198d365",
                "450f0863dd89e85e73936a6d71a3474b",
            ),
            _lfw_list(
                "lfw-names.txt",
                94727,
                "403cd39411ee297f99f69241959bd8f0496b44377711913a76ccdd8562874164",
                "a6d0a479bd074669f656265a6e693f6d",
            ),
        ),
        download_note=(
            "The official LFW host (vis-www.cs.umass.edu) has been reported unreachable since 2025 "
            "(pytorch/vision issue #8888). Any mirror of the same files works: every file is checked "
            "against the md5 the LFW page published, so a wrong copy is refused."
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# Two HDTF talking-head clips as shipped in SadTalker's examples/ref_video folder. No digest is
# published for them; sizes and sha256 were computed from /work/shared/data/videos/hdtf_sadtalker,
# which holds byte-for-byte copies of the repository's files (see its README.md).

_SADTALKER_RAW = "https://raw.githubusercontent.com/OpenTalker/SadTalker/main/examples/ref_video/"

HDTF_SADTALKER = register_dataset(
    DatasetSpec(
        name="hdtf-sadtalker",
        description="two HDTF talking-head clips (512x512, 25 fps, 8 s, with audio) for fast video tests",
        terms=(
            "The clips come from the HDTF data set (Zhang et al., 'Flow-guided One-shot Talking Face "
            "Generation with a High-resolution Audio-visual Dataset', CVPR 2021), built from public "
            "videos, as redistributed in SadTalker's repository (code under Apache-2.0). The footage "
            "belongs to the people filmed and its original publishers: research use only."
        ),
        homepage="https://github.com/OpenTalker/SadTalker",
        root="videos/hdtf_sadtalker",
        files=(
            DatasetFile(
                url=_SADTALKER_RAW + "WDA_AlexandriaOcasioCortez_000.mp4",
                filename="WDA_AlexandriaOcasioCortez_000.mp4",
                size=2257667,
                sha256="a85242c3fc4d50e2202cea393b9e7ee59019759b68e78e26a254d528c22615a7",
            ),
            DatasetFile(
                url=_SADTALKER_RAW + "WDA_KatieHill_000.mp4",
                filename="WDA_KatieHill_000.mp4",
                size=3548230,
                sha256="1fbb4cfd64eedc49b170c441714a9c4fd5e2c2f8a11592070ad89fbd257f2817",
            ),
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# scikit-image's astronaut photo. The sha256 is the one scikit-image publishes in
# skimage/data/_registry.py ("data/astronaut.png"); the copy in
# /work/shared/data/photos/pypi_package_samples/scikit-image has the same digest, and its size.
# The URL is pinned to a release tag so that it never moves.

SKIMAGE_ASTRONAUT = register_dataset(
    DatasetSpec(
        name="skimage-astronaut",
        description="scikit-image's 512x512 astronaut portrait (one frontal face, high resolution)",
        terms=(
            "Photograph of astronaut Eileen Collins from NASA's Great Images database; scikit-image "
            "states it has no known copyright restrictions (public domain)."
        ),
        homepage="https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.astronaut",
        root="photos/pypi_package_samples/scikit-image",
        files=(
            DatasetFile(
                url="https://raw.githubusercontent.com/scikit-image/scikit-image/v0.19.3/skimage/data/astronaut.png",
                filename="astronaut.png",
                size=791555,
                sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            ),
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# MNIST: the training and test images and labels of handwritten digits, as gzipped idx files.
#
# URLs: Yann LeCun's page (often unreachable) with the PyTorch project's S3 copy as the mirror.
# md5 digests: published in torchvision's MNIST loader (torchvision/datasets/mnist.py,
# ``resources``); the sizes are those of the same files. No sha256 is published.

_MNIST_PAGE = "http://yann.lecun.com/exdb/mnist/"
_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _mnist_file(filename: str, size: int, md5: str) -> DatasetFile:
    return DatasetFile(
        url=_MNIST_PAGE + filename,
        filename=filename,
        size=size,
        sha256=None,
        md5=md5,
        mirrors=(_MNIST_MIRROR + filename,),
    )


MNIST = register_dataset(
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 grey (for the zoo)",
        terms=(
            "Yann LeCun, Corinna Cortes and Christopher J.C. Burges; made available for research under the "
            "Creative Commons Attribution-Share Alike 3.0 licence, as stated on the dataset's page."
        ),
        homepage=_MNIST_PAGE,
        root="mnist",
        files=(
            _mnist_file("train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            _mnist_file("train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432"),
            _mnist_file("t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3"),
            _mnist_file("t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        download_note="LeCun's page is often down; the files are fetched from the PyTorch project's mirror then.",
    )
)

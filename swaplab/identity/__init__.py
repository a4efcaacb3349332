"""swaplab.identity: identity networks by name, the face chips they read, and running them on faces.

``IDENTITY_ENCODERS`` holds ``dlib-resnet`` (dlib's face-recognition ResNet re-built in PyTorch from
its own weights file) and ``lfw-arcface`` (swaplab's own network, trained on LFW's peopleDevTrain
people by ``swaplab identity build``). ``swaplab.identity.chips`` cuts dlib-geometry chips,
``swaplab.identity.embed`` runs a network on faces and compares embeddings. Nothing here detects
faces or trains: training is the ``identity-net`` recipe in ``swaplab.train``.
"""

from swaplab.identity.chips import (
    DLIB_CHIP_PADDING,
    DLIB_CHIP_SIZE,
    DLIB_FACE_TEMPLATE_5,
    chip_from_landmarks,
    dlib_chip,
    face_chip_matrix,
)
from swaplab.identity.dlib_resnet import (
    DLIB_CHANNEL_MEANS,
    DlibResNetIdentity,
    FrozenAffine,
    ResidualBlock,
    add_zero_padded,
    default_dlib_model_path,
    load_dlib_identity,
)
from swaplab.identity.embed import (
    DLIB_SAME_PERSON_THRESHOLD,
    cosine_distance,
    cosine_similarity,
    embed_chips,
    embed_faces,
    identity_distance,
    identity_features,
    same_person,
)
from swaplab.identity.registry import IDENTITY_ENCODERS

__all__ = [
    "DLIB_CHANNEL_MEANS",
    "DLIB_CHIP_PADDING",
    "DLIB_CHIP_SIZE",
    "DLIB_FACE_TEMPLATE_5",
    "DLIB_SAME_PERSON_THRESHOLD",
    "IDENTITY_ENCODERS",
    "DlibResNetIdentity",
    "FrozenAffine",
    "ResidualBlock",
    "add_zero_padded",
    "chip_from_landmarks",
    "cosine_distance",
    "cosine_similarity",
    "default_dlib_model_path",
    "dlib_chip",
    "embed_chips",
    "embed_faces",
    "face_chip_matrix",
    "identity_distance",
    "identity_features",
    "load_dlib_identity",
    "same_person",
]

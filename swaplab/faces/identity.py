"""Identity encoders: dlib's face-recognition ResNet re-built in PyTorch, its face chips, distances.

Gives swaplab a differentiable identity embedding (for identity losses) that reproduces dlib's
``compute_face_descriptor`` to float precision (for identity metrics), and the 150x150 face chips
it expects. It must not detect faces or landmarks (callers pass 5-point landmarks) and must not
train anything; other encoders register in ``IDENTITY_ENCODERS`` from their own modules.

Conventions: chips inside the library are float32 tensors N x 3 x 150 x 150, RGB, values in
[0, 1]; images at the boundary are uint8 H x W x 3 RGB numpy arrays; landmarks are (5, 2) float
(x, y) pixel coordinates in the order of dlib's 5-point predictor (see ``DLIB_FACE_TEMPLATE_5``).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import nn

from swaplab.faces.dlib_format import (
    AddPrevLayer,
    AffineLayer,
    ConvLayer,
    DlibFormatError,
    DlibLayer,
    DlibMetricNet,
    FullyConnectedLayer,
    PoolLayer,
    ReluLayer,
    parse_face_recognition_net,
)
from swaplab.registry import Registry

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
    "face_chip_matrix",
    "identity_distance",
    "load_dlib_identity",
    "same_person",
]

IDENTITY_ENCODERS: Registry = Registry("identity encoder")

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
# dlib's same-person threshold on the Euclidean distance between descriptors (99.38 % on LFW).
DLIB_SAME_PERSON_THRESHOLD = 0.6
# The input layer's channel means (R, G, B) on the [0, 255] scale, as stored in the .dat file.
DLIB_CHANNEL_MEANS = (122.782, 117.001, 104.298)

# dlib's 5-point face template (``get_face_chip_details`` in dlib/image_transforms/interpolation.h)
# on the unit square, before padding, in the 5-point predictor's part order. "Left"/"right" are as
# seen in the image: parts 0-1 are the outer and inner corner of the eye on the image's right (the
# subject's left eye), parts 2-3 the outer and inner corner of the other eye, part 4 is the base of
# the nose. A chip of ``size`` and ``padding`` places point p at (padding + p) / (2 padding + 1) * size.
DLIB_FACE_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


# -- the network ----------------------------------------------------------------------------
def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: add two N x C x H x W tensors of possibly different shapes.

    dlib sizes the output to the larger extent of each dimension and zero-pads the smaller
    operand at the *end* of that dimension (extra channels, bottom rows, right columns). The
    face-recognition net relies on it: its stride-2 convolutions have no padding, so a
    downsampling block's 3x3 output meets a 4x4 average-pooled shortcut (and later 1x1 meets
    2x2), and the shortcut has half the channels of the block.
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class FrozenAffine(nn.Module):
    """Per-channel ``x * gamma + beta``: dlib's ``affine_``, a batch norm frozen after training."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta.view(1, -1, 1, 1), x, self.gamma.view(1, -1, 1, 1))


class ResidualBlock(nn.Module):
    """conv3x3-affine-relu-conv3x3-affine, plus the shortcut, then relu.

    A downsampling block strides its first conv by 2 *without padding* (dlib pads only
    stride-1 convs) and average-pools the shortcut 2x2; the two are added with
    :func:`add_zero_padded`.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.affine1 = FrozenAffine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = FrozenAffine(out_channels)
        self.shortcut = nn.AvgPool2d(2, stride=2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        return F.relu(add_zero_padded(y, self.shortcut(x)))


class DlibResNetIdentity(nn.Module):
    """dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

    Architecture (forward order): stem conv 7x7/2 without padding (3->32), affine, relu, max
    pool 3x3/2; residual stages of 3 blocks at 32 channels, 4 at 64, 3 at 128, 3 at 256 and 1 at
    256, each stage after the first starting with a downsampling block; global average pool
    (256-d features); fc 256->128 without bias. 5,614,592 parameters.

    Input: float RGB chips N x 3 x 150 x 150 in [0, 1] aligned as ``dlib.get_face_chip`` does
    (see :func:`dlib_chip` / :func:`chip_from_landmarks`). dlib's own input is [0, 255] minus the
    channel means, divided by 256; the conversion happens inside. Output: N x 128 descriptors,
    compared by Euclidean distance (same person below 0.6). The module has no batch statistics,
    so train and eval modes compute the same thing.
    """

    STAGES: tuple[tuple[int, int], ...] = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
    embedding_dim = 128
    feature_dim = 256
    chip_size = DLIB_CHIP_SIZE
    chip_padding = DLIB_CHIP_PADDING
    same_person_threshold = DLIB_SAME_PERSON_THRESHOLD

    def __init__(self, channel_means: Sequence[float] = DLIB_CHANNEL_MEANS) -> None:
        super().__init__()
        self.register_buffer("channel_means", torch.tensor(channel_means, dtype=torch.float32).view(1, 3, 1, 1))
        stem_channels = self.STAGES[0][0]
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, stem_channels, 7, stride=2, padding=0),
                affine=FrozenAffine(stem_channels),
                relu=nn.ReLU(),
                pool=nn.MaxPool2d(3, stride=2),
            )
        )
        stages, in_channels = [], stem_channels
        for index, (channels, n_blocks) in enumerate(self.STAGES):
            blocks = [ResidualBlock(in_channels, channels, downsample=index > 0)]
            blocks += [ResidualBlock(channels, channels, downsample=False) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, self.embedding_dim, bias=False)

    def to_dlib_input(self, chips: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB chips -> dlib's input scale: (255 * x - channel mean) / 256."""
        return (chips * 255.0 - self.channel_means) * (1.0 / 256.0)

    def features(self, chips: torch.Tensor) -> torch.Tensor:
        """Penultimate 256-d pooled features (N x 256) of N x 3 x 150 x 150 chips in [0, 1]."""
        x = self.stem(self.to_dlib_input(chips))
        return self.pool(self.stages(x)).flatten(1)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """N x 128 dlib face descriptors of N x 3 x 150 x 150 RGB chips in [0, 1]."""
        return self.fc(self.features(chips))

    # -- loading dlib's weights ---------------------------------------------------------------
    def _dlib_layer_order(self) -> list[tuple[type, nn.Module | None]]:
        """The layers dlib's file must hold, in forward order, with the module each one fills."""
        order: list[tuple[type, nn.Module | None]] = [
            (ConvLayer, self.stem.conv),
            (AffineLayer, self.stem.affine),
            (ReluLayer, None),
            (PoolLayer, self.stem.pool),
        ]
        for block in self.stages.modules():
            if not isinstance(block, ResidualBlock):
                continue
            order += [(ConvLayer, block.conv1), (AffineLayer, block.affine1), (ReluLayer, None)]
            order += [(ConvLayer, block.conv2), (AffineLayer, block.affine2)]
            if block.downsample:
                order.append((PoolLayer, block.shortcut))
            order += [(AddPrevLayer, None), (ReluLayer, None)]
        order += [(PoolLayer, self.pool), (FullyConnectedLayer, self.fc)]
        return order

    @torch.no_grad()
    def load_dlib_net(self, net: DlibMetricNet) -> DlibResNetIdentity:
        """Copy a parsed dlib network into this module, checking every layer's kind and shape."""
        order = self._dlib_layer_order()
        if len(net.layers) != len(order):
            raise DlibFormatError(
                f"{net.source}: has {len(net.layers)} layers, dlib's face-recognition ResNet has "
                f"{len(order)}: not dlib_face_recognition_resnet_model_v1"
            )
        for index, (layer, (kind, module)) in enumerate(zip(net.layers, order)):
            problem = _load_layer(layer, kind, module)
            if problem:
                raise DlibFormatError(
                    f"{net.source}: layer {index} does not fit dlib's face-recognition ResNet: {problem}"
                )
        self.channel_means.copy_(torch.tensor(net.channel_means, dtype=torch.float32).view(1, 3, 1, 1))
        return self


def _load_layer(layer: DlibLayer, kind: type, module: nn.Module | None) -> str | None:
    """Copy ``layer`` into ``module``; return what is wrong, or None."""
    if not isinstance(layer, kind):
        return f"found {type(layer).__name__}, expected {kind.__name__}"
    if isinstance(layer, ConvLayer):
        assert isinstance(module, nn.Conv2d)
        geometry = (tuple(layer.weight.shape), layer.stride, layer.padding)
        expected = (tuple(module.weight.shape), module.stride, module.padding)
        if geometry != expected:
            return f"conv (weight, stride, padding) {geometry}, expected {expected}"
        module.weight.copy_(torch.from_numpy(layer.weight))
        module.bias.copy_(torch.from_numpy(layer.bias))
    elif isinstance(layer, AffineLayer):
        assert isinstance(module, FrozenAffine)
        if layer.gamma.shape != tuple(module.gamma.shape):
            return f"affine over {layer.gamma.shape[0]} channels, expected {module.gamma.shape[0]}"
        module.gamma.copy_(torch.from_numpy(layer.gamma))
        module.beta.copy_(torch.from_numpy(layer.beta))
    elif isinstance(layer, PoolLayer):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            expected_pool = ("avg", (0, 0), (1, 1), (0, 0))
        else:
            assert isinstance(module, nn.MaxPool2d | nn.AvgPool2d)
            mode = "max" if isinstance(module, nn.MaxPool2d) else "avg"
            expected_pool = (mode, _pair(module.kernel_size), _pair(module.stride), _pair(module.padding))
        found = (layer.mode, layer.window, layer.stride, layer.padding)
        if found != expected_pool:
            return f"pool (mode, window, stride, padding) {found}, expected {expected_pool}"
    elif isinstance(layer, FullyConnectedLayer):
        assert isinstance(module, nn.Linear)
        if layer.weight.shape != tuple(module.weight.shape) or layer.bias is not None:
            found_fc = f"{layer.weight.shape} with{'' if layer.bias is not None else 'out'} bias"
            return f"fc weight {found_fc}, expected {tuple(module.weight.shape)} without bias"
        module.weight.copy_(torch.from_numpy(layer.weight))
    return None


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def default_dlib_model_path() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` from the installed face_recognition_models."""
    import face_recognition_models

    return Path(face_recognition_models.face_recognition_model_location())


@functools.lru_cache(maxsize=4)
def _parse_cached(path: str, size: int, mtime_ns: int) -> DlibMetricNet:
    # size and mtime are part of the key so that a replaced file is parsed again.
    return parse_face_recognition_net(path)


@IDENTITY_ENCODERS.register("dlib-resnet")
def load_dlib_identity(
    path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
) -> DlibResNetIdentity:
    """dlib's face-recognition ResNet with its weights, frozen (no parameter gradients), in eval mode.

    ``path`` defaults to the file shipped in ``face_recognition_models``. The file is parsed once
    per process; each call returns a new module (so moving or unfreezing one does not affect
    another). Gradients still flow to the input chips, for identity losses. ``channels_last``
    stores the conv weights channels-last, which makes the convolutions run channels-last even
    for NCHW input (1.2-1.4x faster on this CPU, same results to 1e-6).
    """
    resolved = Path(path) if path is not None else default_dlib_model_path()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise DlibFormatError(f"{resolved}: cannot read the dlib network file ({exc})") from exc
    net = _parse_cached(str(resolved.resolve()), stat.st_size, stat.st_mtime_ns)
    model = DlibResNetIdentity().load_dlib_net(net).requires_grad_(False).eval()
    return model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# -- embeddings and distances ---------------------------------------------------------------
def embed_chips(
    encoder: nn.Module,
    chips: np.ndarray | Sequence[np.ndarray],
    batch_size: int = 32,
) -> np.ndarray:
    """Descriptors (N x D float32) of uint8 RGB chips (N x 150 x 150 x 3), without autograd."""
    stacked = np.ascontiguousarray(np.stack(list(chips)) if not isinstance(chips, np.ndarray) else chips)
    if stacked.ndim != 4 or stacked.shape[-1] != 3 or stacked.dtype != np.uint8:
        raise ValueError(f"expected uint8 chips of shape (N, H, W, 3), got {stacked.dtype} {stacked.shape}")
    parameter = next(encoder.parameters())
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(stacked), batch_size):
            batch = torch.from_numpy(stacked[start : start + batch_size]).to(parameter.device)
            batch = batch.permute(0, 3, 1, 2).to(parameter.dtype).div_(255.0).contiguous()
            outputs.append(encoder(batch).float().cpu())
    if not outputs:
        return np.zeros((0, getattr(encoder, "embedding_dim", 0)), dtype=np.float32)
    return torch.cat(outputs).numpy()


def identity_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Euclidean distance between descriptors along the last axis (dlib's convention).

    Broadcasts; returns numpy for numpy inputs, a tensor otherwise. With dlib's ResNet, a
    distance below ``DLIB_SAME_PERSON_THRESHOLD`` (0.6) means the same person.
    """
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.linalg.norm(a - b, axis=-1)
    return torch.linalg.vector_norm(torch.as_tensor(a) - torch.as_tensor(b), dim=-1)


def same_person(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, threshold: float = DLIB_SAME_PERSON_THRESHOLD
) -> torch.Tensor | np.ndarray:
    """True where the descriptors are closer than ``threshold`` (dlib's verification rule)."""
    return identity_distance(a, b) < threshold


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of descriptors along the last axis, in [-1, 1] (broadcasts)."""
    return F.cosine_similarity(a, b, dim=-1, eps=eps)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cosine_similarity``: the usual identity loss (0 for the same direction, up to 2).

    Scale-free, unlike :func:`identity_distance`; dlib's descriptors have norms near 1 but the
    0.6 threshold applies to the Euclidean distance only.
    """
    return 1.0 - cosine_similarity(a, b, eps)


# -- face chips -----------------------------------------------------------------------------
def _as_landmark_batch(landmarks5: torch.Tensor | np.ndarray) -> torch.Tensor:
    points = torch.as_tensor(landmarks5)
    if points.ndim == 2:
        points = points.unsqueeze(0)
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"expected 5-point landmarks of shape (5, 2) or (N, 5, 2), got {tuple(points.shape)}")
    return points


def face_chip_matrix(
    landmarks5: torch.Tensor | np.ndarray, size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING
) -> torch.Tensor:
    """N x 2 x 3 float64 matrices mapping image (x, y, 1) to dlib's face-chip pixels (cv2 convention).

    Reproduces ``dlib.get_face_chip_details`` + ``extract_image_chip`` geometry:

    1. the least-squares similarity ``img = M chip + t`` (``find_similarity_transform``) from the
       padded template points to the landmarks; ``M = s R(angle)``;
    2. dlib keeps only the angle, the scale ``s`` and the image point ``c = M (size/2, size/2) + t``,
       as a rectangle centred on ``c`` of span ``size * s - 1`` (``centered_drect`` subtracts 1);
    3. chip pixel (0, 0) goes to the rectangle's rotated top-left corner and (size-1, size-1) to
       its bottom-right, so chip pixel u maps to ``c + R(angle) (u - (size-1)/2) * step`` with
       ``step = (size * s - 1) / (size - 1)``, a hair larger than ``s``.

    Differentiable with respect to the landmarks; ``landmarks5`` is (5, 2) or (N, 5, 2) pixels.
    """
    points = _as_landmark_batch(landmarks5).to(torch.float64)
    template = torch.as_tensor((padding + DLIB_FACE_TEMPLATE_5) / (2 * padding + 1) * size, device=points.device)
    template_centred = template - template.mean(0)
    points_mean = points.mean(1, keepdim=True)
    points_centred = points - points_mean
    # Closed-form least squares for M = [[a, -b], [b, a]]; equals Umeyama's for a proper rotation.
    norm = (template_centred**2).sum()
    a = (template_centred * points_centred).sum((1, 2)) / norm
    b = (template_centred[:, 0] * points_centred[..., 1] - template_centred[:, 1] * points_centred[..., 0]).sum(
        1
    ) / norm
    scale = torch.sqrt(a * a + b * b)
    chip_centre = torch.full((2,), size / 2.0, dtype=torch.float64, device=points.device)
    rotation_scale = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # N x 2 x 2
    translation = points_mean.squeeze(1) - rotation_scale @ template.mean(0)
    centre = rotation_scale @ chip_centre + translation  # image point at the chip's centre
    step = (size * scale - 1.0) / (size - 1)
    # Invert chip -> image (c + (step / s) M (u - h)) analytically: u = h + (s / step) M^-1 (img - c),
    # with M^-1 = M^T / s^2.
    inverse = rotation_scale.transpose(1, 2) / (scale * step).view(-1, 1, 1)
    half = (size - 1) / 2.0
    offset = half - inverse @ centre.unsqueeze(-1)
    return torch.cat([inverse, offset], dim=-1)


def chip_from_landmarks(
    images: torch.Tensor,
    landmarks5: torch.Tensor | np.ndarray,
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> torch.Tensor:
    """Differentiable, batched dlib face chips: N x 3 x H x W in [0, 1] -> N x 3 x size x size.

    Same geometry as ``dlib.get_face_chip`` (:func:`face_chip_matrix`), warped bilinearly with
    ``kornia.geometry.transform.warp_affine``; gradients reach the images and the landmarks.
    Differences from dlib, all small on faces (measured in tests/test_identity.py): dlib
    truncates its interpolated values to uint8 (its chips are 0.5/255 darker on average; flooring
    ``255 * chip`` reproduces them to about 0.001 grey levels); it blacks out any sample whose
    2x2 neighbourhood leaves the image (kornia blends with zeros); and when the face is more than
    about twice the chip's size it samples from an image pyramid, where this function aliases
    (downscale such images first).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W images, got {tuple(images.shape)}")
    matrices = face_chip_matrix(landmarks5, size, padding).to(device=images.device)
    if matrices.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {matrices.shape[0]} landmark sets")
    return warp_affine(
        images.contiguous(),
        matrices.to(images.dtype),
        dsize=(size, size),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )


def _full_object_detection(points: np.ndarray):  # -> dlib.full_object_detection
    import dlib

    rounded = np.rint(np.asarray(points, dtype=np.float64)).astype(np.int64)
    left, top = rounded.min(0)
    right, bottom = rounded.max(0)
    parts = [dlib.point(int(x), int(y)) for x, y in rounded]
    return dlib.full_object_detection(dlib.rectangle(int(left), int(top), int(right), int(bottom)), parts)


def dlib_chip(
    image_rgb_uint8: np.ndarray,
    shape5_points: np.ndarray,
    size: int = DLIB_CHIP_SIZE,
    padding: float = DLIB_CHIP_PADDING,
) -> np.ndarray:
    """dlib's own face chip (``dlib.get_face_chip``): size x size x 3 uint8 RGB.

    ``shape5_points`` is (5, 2) float (x, y) from dlib's 5-point predictor, or a
    ``dlib.full_object_detection``. dlib stores landmarks as integer points, so float landmarks
    are rounded here (dlib's predictor already returns integers); use
    :func:`chip_from_landmarks` for sub-pixel landmarks.
    """
    import dlib

    if image_rgb_uint8.dtype != np.uint8 or image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb_uint8.dtype} {image_rgb_uint8.shape}")
    if isinstance(shape5_points, dlib.full_object_detection):
        detection = shape5_points
    else:
        points = np.asarray(shape5_points)
        if points.shape != (5, 2):
            raise ValueError(f"expected 5-point landmarks of shape (5, 2), got {points.shape}")
        detection = _full_object_detection(points)
    return dlib.get_face_chip(np.ascontiguousarray(image_rgb_uint8), detection, size=size, padding=padding)

"""Reader for dlib's binary serialisation, and a parser of its face-recognition ResNet file.

Turns ``dlib_face_recognition_resnet_model_v1.dat`` into plain numpy arrays so that swaplab can
run the network in PyTorch. It must not import torch or dlib, and it never guesses: anything it
does not expect (a truncated file, another network, trailing bytes) raises ``DlibFormatError``
naming the file and the byte offset.

The format, as dlib's ``serialize`` writes it:

- **integer**: a control byte whose low nibble is the number of bytes that follow and whose bit
  0x80 marks a negative value, then the magnitude in that many little-endian bytes;
- **float / double**: an integer mantissa and an integer exponent, value = mantissa * 2**exponent
  (exponents 32000, 32001, 32002 stand for +inf, -inf and NaN);
- **bool**: one ASCII byte, ``'0'`` or ``'1'``;
- **string**: its length as an integer, then the bytes;
- **tensor**: version 2, four integer dimensions (num_samples, k, nr, nc), then raw
  little-endian float32 values; an **alias tensor** (a view into a layer's ``params``) stores
  version 1 and the four dimensions only.

A dlib network is a nest of templates and writes its outermost layer first: the loss layer's
version and details, then one version number per wrapping layer down to the input (2 for a
computational ``add_layer``, 1 for a tag or a skip layer, which store nothing else), then the input
layer, then each computational layer's details from the innermost to the outermost, each followed
by three flags and its (empty) gradient and output tensors. So the details come out in forward
order, which is the order :func:`parse_face_recognition_net` returns them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "AddPrevLayer",
    "AffineLayer",
    "ConvLayer",
    "DlibFormatError",
    "DlibLayer",
    "DlibMetricNet",
    "DlibReader",
    "FullyConnectedLayer",
    "PoolLayer",
    "ReluLayer",
    "parse_face_recognition_net",
]

# float_details' markers for non-finite values (dlib/float_details.h).
_EXPONENT_INF, _EXPONENT_NINF, _EXPONENT_NAN = 32000, 32001, 32002
# An add_layer whose sub-network is the input layer also stores grad_final (version 2) and, from
# version 3 on, the sample expansion factor.
_INPUT_ADD_LAYER_VERSIONS = (2, 3)
_WRAPPER_ADD_LAYER_VERSION = 2
_TAG_OR_SKIP_VERSION = 1
_INPUT_LAYER_NAME = "input_rgb_image_sized"
# Nesting deeper than this is not a network dlib wrote for face recognition; it bounds the scan.
_MAX_NESTING = 10_000


class DlibFormatError(ValueError):
    """The bytes are not what dlib's serialisation of the expected object would be."""


class DlibReader:
    """Sequential reader of dlib-serialised values from an in-memory byte string.

    ``source`` (usually the file path) is named in every error, with the byte offset.
    """

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = data
        self.source = source
        self.pos = 0

    # -- primitives -------------------------------------------------------------------------
    def error(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: {message} (at byte {self.pos} of {len(self.data)})")

    def _take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(f"file ends inside {what}: needed {n} more bytes, the file may be truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str = "an integer") -> int:
        control = self._take(1, what)[0]
        # Bits 0x70 are never set by dlib's pack_int; seeing them means we are out of step.
        if control & 0x70 or (control & 0x0F) > 8:
            self.pos -= 1
            raise self.error(f"invalid integer control byte 0x{control:02x} while reading {what}")
        magnitude = int.from_bytes(self._take(control & 0x0F, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def float(self, what: str = "a float") -> float:
        mantissa = self.int(what)
        exponent = self.int(what)
        if exponent == _EXPONENT_INF:
            return math.inf
        if exponent == _EXPONENT_NINF:
            return -math.inf
        if exponent == _EXPONENT_NAN:
            return math.nan
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:  # dlib writes float32 values: a result beyond any float means bad bytes
            raise self.error(f"{what} overflows ({mantissa} x 2^{exponent})") from None

    def bool(self, what: str = "a flag") -> bool:
        byte = self._take(1, what)
        if byte not in (b"0", b"1"):
            self.pos -= 1
            raise self.error(f"expected '0' or '1' for {what}, found {byte!r}")
        return byte == b"1"

    def string(self, what: str = "a string") -> str:
        length = self.int(what)
        if length > 1 << 16:
            raise self.error(f"implausible string length {length} while reading {what}")
        raw = self._take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"non-ASCII bytes where {what} should be") from None

    def expect_string(self, expected: str) -> None:
        start = self.pos
        found = self.string(f"the tag {expected!r}")
        if found != expected:
            self.pos = start
            raise self.error(f"expected {expected!r}, found {found!r}")

    def peek_string(self) -> str | None:
        """The string at the current position, or None if the bytes there are not a string."""
        start = self.pos
        try:
            return self.string()
        except DlibFormatError:
            return None
        finally:
            self.pos = start

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        start = self.pos
        found = self.int(f"the version of {what}")
        if found not in allowed:
            self.pos = start
            raise self.error(f"unsupported version {found} of {what} (expected one of {allowed})")
        return found

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A ``resizable_tensor`` as a float32 array of shape (num_samples, k, nr, nc)."""
        self.version((2,), what)
        shape = tuple(self.int(f"the shape of {what}") for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.error(f"negative dimension in the shape {shape} of {what}")
        count = math.prod(shape)
        raw = self._take(4 * count, what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_shape(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        self.version((1,), what)
        shape = tuple(self.int(f"the shape of {what}") for _ in range(4))
        return shape  # type: ignore[return-value]

    def at_end(self) -> bool:
        return self.pos == len(self.data)


# -- layers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvLayer:
    """dlib ``con_``: cross-correlation like ``torch.nn.functional.conv2d``, with a bias."""

    weight: np.ndarray  # (out_channels, in_channels, kernel_h, kernel_w)
    bias: np.ndarray  # (out_channels,)
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x), zeros on both sides


@dataclass(frozen=True)
class AffineLayer:
    """dlib ``affine_``: per-channel ``x * gamma + beta`` (a batch norm frozen after training)."""

    gamma: np.ndarray  # (channels,)
    beta: np.ndarray  # (channels,)


@dataclass(frozen=True)
class ReluLayer:
    """dlib ``relu_``."""


@dataclass(frozen=True)
class PoolLayer:
    """dlib ``max_pool_`` / ``avg_pool_``; a window of (0, 0) means the whole feature map."""

    mode: str  # "max" or "avg"
    window: tuple[int, int]  # (nr, nc)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrevLayer:
    """dlib ``add_prev_``: adds a tagged earlier output (which one is fixed by the C++ type)."""


@dataclass(frozen=True)
class FullyConnectedLayer:
    """dlib ``fc_``; ``weight`` is stored transposed to torch's ``Linear`` layout here."""

    weight: np.ndarray  # (out_features, in_features)
    bias: np.ndarray | None  # (out_features,) or None


DlibLayer = ConvLayer | AffineLayer | ReluLayer | PoolLayer | AddPrevLayer | FullyConnectedLayer


@dataclass(frozen=True)
class DlibMetricNet:
    """A parsed ``loss_metric`` network: its layers in forward order and its input's settings."""

    layers: tuple[DlibLayer, ...]
    channel_means: tuple[float, float, float]  # RGB, on dlib's [0, 255] pixel scale
    input_size: tuple[int, int]  # (rows, cols) the input layer expects
    loss_margin: float
    distance_threshold: float  # dlib's same-person threshold on Euclidean distance
    source: str


def _read_multipliers(reader: DlibReader, what: str) -> None:
    # learning-rate and weight-decay multipliers: training state, irrelevant to inference.
    for _ in range(4):
        reader.float(f"a multiplier of {what}")


def _read_conv(reader: DlibReader) -> ConvLayer:
    params = reader.tensor("the conv params").reshape(-1)
    num_filters, nr, nc = (reader.int("the conv geometry") for _ in range(3))
    stride = (reader.int("the conv stride"), reader.int("the conv stride"))
    padding = (reader.int("the conv padding"), reader.int("the conv padding"))
    filters_shape = reader.alias_shape("the conv filters")
    biases_shape = reader.alias_shape("the conv biases")
    _read_multipliers(reader, "a conv")
    n_filters = math.prod(filters_shape)
    if filters_shape[0] != num_filters or filters_shape[2:] != (nr, nc):
        raise reader.error(f"conv filters shape {filters_shape} disagrees with {num_filters}x{nr}x{nc}")
    if n_filters + math.prod(biases_shape) != params.size:
        raise reader.error(f"conv params hold {params.size} values, filters and biases need more")
    return ConvLayer(
        weight=params[:n_filters].reshape(filters_shape).copy(),
        bias=params[n_filters:].copy(),
        stride=stride,
        padding=padding,
    )


def _read_affine(reader: DlibReader) -> AffineLayer:
    params = reader.tensor("the affine params").reshape(-1)
    gamma_shape = reader.alias_shape("the affine gamma")
    beta_shape = reader.alias_shape("the affine beta")
    mode = reader.int("the affine mode")
    if mode != 0:  # 0 = CONV_MODE: one gamma/beta per channel
        raise reader.error(f"affine layer in mode {mode}, only per-channel (conv) mode is supported")
    n = math.prod(gamma_shape)
    if math.prod(beta_shape) != n or params.size != 2 * n:
        raise reader.error(f"affine params hold {params.size} values for gamma {gamma_shape}")
    return AffineLayer(gamma=params[:n].copy(), beta=params[n:].copy())


def _read_pool(reader: DlibReader, mode: str) -> PoolLayer:
    nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int(f"the {mode} pool geometry") for _ in range(6))
    return PoolLayer(mode=mode, window=(nr, nc), stride=(stride_y, stride_x), padding=(pad_y, pad_x))


def _read_fc(reader: DlibReader) -> FullyConnectedLayer:
    num_outputs = reader.int("the fc size")
    num_inputs = reader.int("the fc size")
    params = reader.tensor("the fc params").reshape(-1)
    reader.alias_shape("the fc weights")
    reader.alias_shape("the fc biases")
    bias_mode = reader.int("the fc bias mode")  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    _read_multipliers(reader, "an fc layer")
    n_weights = num_inputs * num_outputs
    expected = n_weights + (num_outputs if bias_mode == 0 else 0)
    if bias_mode not in (0, 1) or params.size != expected:
        raise reader.error(f"fc params hold {params.size} values, expected {expected} (bias mode {bias_mode})")
    # dlib multiplies row vectors by a (num_inputs x num_outputs) matrix.
    weight = params[:n_weights].reshape(num_inputs, num_outputs).T.copy()
    bias = params[n_weights:].copy() if bias_mode == 0 else None
    return FullyConnectedLayer(weight=weight, bias=bias)


def _read_layer_details(reader: DlibReader) -> DlibLayer:
    start = reader.pos
    name = reader.string("a layer name")
    if name == "con_4":
        return _read_conv(reader)
    if name == "affine_":
        return _read_affine(reader)
    if name == "relu_":
        return ReluLayer()
    if name == "max_pool_2":
        return _read_pool(reader, "max")
    if name == "avg_pool_2":
        return _read_pool(reader, "avg")
    if name == "add_prev_":
        return AddPrevLayer()
    if name == "fc_2":
        return _read_fc(reader)
    reader.pos = start
    raise reader.error(f"unsupported layer {name!r}")


def _read_layer_state(reader: DlibReader, n_tensors: int) -> None:
    # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled,
    # then gradient/output buffers (empty in a saved model, but read them in full regardless).
    for _ in range(3):
        reader.bool("a layer flag")
    for _ in range(n_tensors):
        reader.tensor("a layer buffer")


def parse_face_recognition_net(path: str | Path) -> DlibMetricNet:
    """Parse dlib's face-recognition network file (``loss_metric`` over ``input_rgb_image_sized``).

    Returns the computational layers in forward order (input side first) with their parameters
    as float32 numpy arrays. The file must parse exactly to its last byte; anything else raises
    ``DlibFormatError`` naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DlibFormatError(f"{path}: cannot read the dlib network file ({exc})") from exc
    return parse_face_recognition_bytes(data, str(path))


def parse_face_recognition_bytes(data: bytes, source: str = "<bytes>") -> DlibMetricNet:
    """``parse_face_recognition_net`` of the file's bytes; ``source`` names it in errors."""
    reader = DlibReader(data, source)

    reader.version((1,), "the loss layer")
    start = reader.pos
    loss_name = reader.string("the loss layer name")
    if loss_name != "loss_metric_2":
        reader.pos = start
        raise reader.error(f"not a metric-learning network: loss layer is {loss_name!r}, expected 'loss_metric_2'")
    margin = reader.float("the loss margin")
    threshold = reader.float("the loss distance threshold")

    # Walk down the nest: one version per wrapping layer until the add_layer that holds the input.
    n_wrapping_layers = 0
    while True:
        if n_wrapping_layers > _MAX_NESTING:
            raise reader.error("no input layer found: not a dlib network file")
        version = reader.int("a layer version")
        if reader.peek_string() == _INPUT_LAYER_NAME:
            if version not in _INPUT_ADD_LAYER_VERSIONS:
                raise reader.error(f"unsupported version {version} of the input's add_layer")
            input_version = version
            break
        if version == _WRAPPER_ADD_LAYER_VERSION:
            n_wrapping_layers += 1
        elif version != _TAG_OR_SKIP_VERSION:
            raise reader.error(f"unexpected layer version {version}")

    reader.expect_string(_INPUT_LAYER_NAME)
    means = tuple(reader.float("an input channel mean") for _ in range(3))
    input_size = (reader.int("the input rows"), reader.int("the input columns"))

    layers: list[DlibLayer] = [_read_layer_details(reader)]
    _read_layer_state(reader, n_tensors=3)  # x_grad, cached_output, grad_final
    if input_version >= 3:
        reader.int("the sample expansion factor")
    for _ in range(n_wrapping_layers):
        layers.append(_read_layer_details(reader))
        _read_layer_state(reader, n_tensors=3)  # x_grad, cached_output, params_grad

    if not reader.at_end():
        raise reader.error(f"{len(data) - reader.pos} unexpected bytes after the last layer")
    return DlibMetricNet(
        layers=tuple(layers),
        channel_means=means,  # type: ignore[arg-type]
        input_size=input_size,
        loss_margin=margin,
        distance_threshold=threshold,
        source=source,
    )

"""Ablation substitutes: what each one computes, exactly, and that they plug into SimSwap and per-pair models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from swaplab.config import apply_overrides
from swaplab.models import SimSwapConfig, create_model, model_preset
from swaplab.models.parts import BOTTLENECKS, DECODERS, ENCODERS
from swaplab.models.parts.ablation import LUMA_WEIGHTS, pca_basis, pca_project

SIMSWAP_KEYWORDS = dict(in_channels=3, resolution=64, dims=8, n_down=3, max_dims=32, norm="batch")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_no_encoder_is_the_grayscale_target_resized_and_repeated_to_the_encoder_width() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    encoder = ENCODERS.create("none", **SIMSWAP_KEYWORDS)
    real = ENCODERS.create("simswap", **SIMSWAP_KEYWORDS)
    out = encoder(images)
    assert (encoder.out_channels, encoder.out_size) == (real.out_channels, real.out_size) == (32, 8)
    assert out.shape == real(images).shape == (2, 32, 8, 8)
    assert torch.equal(out, out[:, :1].expand_as(out))  # every channel is the same grayscale map
    luma = sum(w * images[:, c : c + 1] for c, w in enumerate(LUMA_WEIGHTS))
    expected = F.interpolate(luma, size=(8, 8), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(out[:, :1], expected, atol=1e-6, rtol=0)
    bilinear = ENCODERS.create("none-bilinear", **SIMSWAP_KEYWORDS)(images)
    assert bilinear.shape == out.shape and not torch.allclose(bilinear, out)
    # A colour change with the same luma does not reach the encoder's output.
    shifted = images.clone()
    shifted[:, 0] += 0.1 / LUMA_WEIGHTS[0] * LUMA_WEIGHTS[2]
    shifted[:, 2] -= 0.1
    torch.testing.assert_close(encoder(shifted), out, atol=1e-5, rtol=0)


def test_no_encoder_imitates_deepfacelab_geometry_for_per_pair_keywords() -> None:
    for variant, size in (("ud", 4), ("t", 2)):
        dfl = ENCODERS.create("dfl", in_channels=3, resolution=64, dims=8, variant=variant)
        none = ENCODERS.create("none", in_channels=3, resolution=64, dims=8, variant=variant)
        assert (none.out_channels, none.out_size, none.out_features) == (
            dfl.out_channels,
            dfl.out_size,
            dfl.out_features,
        )
        assert none.out_size == size


def test_no_bottleneck_passes_features_through_and_ignores_the_identity() -> None:
    features = torch.randn(2, 32, 8, 8)
    bottleneck = BOTTLENECKS.create("none", in_channels=32, in_size=8, identity_dim=128, n_blocks=9, resolution=64)
    assert bottleneck(features, torch.randn(2, 128)) is features
    assert bottleneck(features) is features
    assert (bottleneck.out_channels, bottleneck.out_size) == (32, 8)
    # A per-pair (flat) code is only reshaped.
    flat = BOTTLENECKS.create(
        "none", in_features=32 * 64, in_channels=32, in_size=8, ae_dims=16, resolution=64, variant="ud"
    )
    assert torch.equal(flat(features.flatten(1)), features)
    assert list(bottleneck.parameters()) == []


def test_no_decoder_keeps_exactly_the_first_three_channels_resized() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 16, 8, 8)
    decoder = DECODERS.create("none", in_channels=16, in_size=8, dims=8, max_dims=32, resolution=64, norm="batch")
    rgb, mask = decoder(features)
    expected = torch.sigmoid(F.interpolate(features[:, :3], size=(64, 64), mode="bicubic", align_corners=False))
    assert rgb.shape == (2, 3, 64, 64) and mask.shape == (2, 1, 64, 64)
    torch.testing.assert_close(rgb, expected, atol=1e-6, rtol=0)
    assert torch.equal(mask, torch.ones_like(mask))
    later = features.clone()
    later[:, 3:] = torch.randn(2, 13, 8, 8)
    assert torch.equal(decoder(later)[0], rgb)  # channels after the third never matter
    bilinear = DECODERS.create("none-bilinear", in_channels=16, in_size=8, dims=8, resolution=64)(features)[0]
    expected_bilinear = torch.sigmoid(
        F.interpolate(features[:, :3], size=(64, 64), mode="bilinear", align_corners=False)
    )
    torch.testing.assert_close(bilinear, expected_bilinear, atol=1e-6, rtol=0)


def test_pca_basis_matches_a_brute_force_eigendecomposition() -> None:
    generator = torch.Generator().manual_seed(0)
    # Correlated channels with clearly separated variances along known directions.
    mixing = torch.randn(6, 6, generator=generator)
    latent = torch.randn(3, 6, 5, 5, generator=generator) * torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.2]).view(
        1, 6, 1, 1
    )
    features = torch.einsum("oc,nchw->nohw", mixing, latent)
    basis = pca_basis(features, k=3)

    vectors = features.permute(0, 2, 3, 1).reshape(-1, 6).double().numpy()
    covariance = np.cov(vectors, rowvar=False)
    values, vectors_np = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:3]
    np.testing.assert_allclose(basis.variances.numpy(), values[order], rtol=1e-4)
    for j in range(3):
        cosine = abs(float(basis.components[:, j].double().numpy() @ vectors_np[:, order[j]]))
        assert cosine > 0.9999
    projected = pca_project(features, basis)
    variances = projected.permute(1, 0, 2, 3).reshape(3, -1).var(dim=1)
    np.testing.assert_allclose(variances.numpy(), values[order], rtol=1e-4)
    assert variances[0] > variances[1] > variances[2]  # the first component explains the most
    # Sign convention: each component's largest loading is positive.
    assert all(basis.components[basis.components[:, j].abs().argmax(), j] > 0 for j in range(3))


def test_pca_decoder_outputs_three_minmax_channels_and_passes_gradients() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 16, 8, 8, requires_grad=True)
    rgb, mask = DECODERS.create("pca", in_channels=16, in_size=8, dims=8, resolution=64)(features)
    assert rgb.shape == (2, 3, 64, 64) and mask.shape == (2, 1, 64, 64)
    for image in rgb.detach():
        assert float(image.min()) == pytest.approx(0.0, abs=1e-6) and float(image.max()) == pytest.approx(1.0, abs=1e-4)
    rgb.square().mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "overrides",
    [
        ["parts.bottleneck=none"],
        ["parts.decoder=pca"],
        ["parts.bottleneck=none", "parts.decoder=pca"],
        ["parts.encoder=none"],
        ["parts.decoder=none-bilinear"],
    ],
)
@pytest.mark.parametrize("arch", ["liae-cpu", "df-cpu"])
def test_substitutes_plug_into_per_pair_models(arch: str, overrides: list[str]) -> None:
    torch.manual_seed(0)
    config = apply_overrides(model_preset(arch, ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4), overrides)
    model = create_model(config)
    faces = torch.rand(4, 3, 64, 64)
    pair = model(faces[:2], faces[2:])
    for tensor in pair:
        assert tensor.shape[0] == 2 and tensor.shape[-2:] == (64, 64)
        assert torch.isfinite(tensor).all() and 0.0 <= tensor.min() and tensor.max() <= 1.0
    rgb, mask = model.swap(faces)
    assert rgb.shape == (4, 3, 64, 64) and mask.shape == (4, 1, 64, 64)
    (pair.src_rgb - faces[:2]).abs().mean().add((pair.dst_rgb - faces[2:]).abs().mean()).backward()
    trained = [p for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trained, "no parameter receives a gradient"


def test_liae_without_bottleneck_decodes_the_encoder_code_itself() -> None:
    torch.manual_seed(0)
    config = apply_overrides(
        model_preset("liae-cpu", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4), ["parts.bottleneck=none"]
    )
    model = create_model(config)
    faces = torch.rand(2, 3, 64, 64)
    code = model.encoder(faces).view(2, model.encoder.out_channels, model.encoder.out_size, model.encoder.out_size)
    assert torch.equal(model.src_code(faces), torch.cat([code, code], dim=1))
    assert list(model.inter_AB.parameters()) == [] and list(model.inter_B.parameters()) == []


@pytest.mark.parametrize(
    "part,name", [("encoder", "none"), ("decoder", "none"), ("decoder", "pca"), ("bottleneck", "none")]
)
def test_substitutes_plug_into_the_simswap_generator(part: str, name: str) -> None:
    torch.manual_seed(0)
    config = SimSwapConfig(resolution=64, dims=8, max_dims=32, n_blocks=2)
    setattr(config.parts, part, name)
    generator = create_model(config)
    swapped = generator(torch.rand(2, 3, 64, 64), torch.randn(2, 128))
    assert swapped.shape == (2, 3, 64, 64)
    assert torch.isfinite(swapped).all() and 0.0 <= swapped.min() and swapped.max() <= 1.0

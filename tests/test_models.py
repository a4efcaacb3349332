"""Per-pair models: shapes at several resolutions, parts by name, LIAE's code composition, learning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from swaplab.config import ConfigError, apply_overrides, config_group, group_field
from swaplab.losses import LossConfig, ReconstructionObjective
from swaplab.models import MODELS, DeepFakesModel, LIAEModel, ModelConfig, create_model, model_preset
from swaplab.models.parts import BOTTLENECKS, DECODERS, ENCODERS, DenseBottleneck

TINY = dict(ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=2)
VARIANTS = ["", "u", "d", "t", "ud", "dt", "udt"]


def tiny(name: str, **overrides) -> ModelConfig:
    return model_preset(name, **{**TINY, **overrides})


@pytest.mark.parametrize("arch", ["df", "liae"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_path_outputs_resolution_sized_rgb_and_mask(arch: str, variant: str) -> None:
    torch.manual_seed(0)
    for resolution in (64, 96, 128, 256):
        model = create_model(tiny(arch, variant=variant, resolution=resolution))
        faces = torch.rand(2, 3, resolution, resolution)
        for rgb, mask in (model.reconstruct_src(faces), model.reconstruct_dst(faces), model.swap(faces)):
            assert rgb.shape == (2, 3, resolution, resolution)
            assert mask.shape == (2, 1, resolution, resolution)
            assert 0.0 <= rgb.min() and rgb.max() <= 1.0 and 0.0 <= mask.min() and mask.max() <= 1.0
        pair = model(faces[:1], faces[1:])
        assert pair.src_rgb.shape == (1, 3, resolution, resolution)
        assert pair.dst_mask.shape == (1, 1, resolution, resolution)


def test_resolution_must_fit_the_variant() -> None:
    model_preset("df", resolution=80)  # a multiple of 16 is fine without 'd'
    with pytest.raises(ConfigError, match="multiple of 32"):
        model_preset("liae-ud", resolution=80)
    with pytest.raises(ConfigError, match="multiple of 16"):
        model_preset("df", resolution=100)
    with pytest.raises(ValueError, match="unknown variant letter"):
        model_preset("df", variant="ux")


def test_wrong_input_size_is_a_clear_error() -> None:
    model = create_model(tiny("df-cpu"))
    with pytest.raises(ValueError, match=r"expects faces of shape \(N, 3, 64, 64\)"):
        model.swap(torch.rand(1, 3, 128, 128))


def test_presets_have_deepfacelab_defaults_and_cover_the_variants() -> None:
    presets = config_group("model")
    for name in ("df", "liae", "liae-ud", "liae-udt", "df-ud", "df-t", "df-cpu", "liae-cpu"):
        assert name in presets
    cfg = presets.create("liae-ud")
    assert (cfg.arch, cfg.variant, cfg.resolution) == ("liae", "ud", 128)
    assert (cfg.ae_dims, cfg.e_dims, cfg.d_dims, cfg.d_mask_dims) == (256, 64, 64, 22)
    assert cfg.bottleneck == "liae-inter" and presets.create("df").bottleneck == "dense"
    assert presets.create("df-cpu").resolution == 64


def test_named_parts() -> None:
    df = create_model(tiny("df"))
    liae = create_model(tiny("liae"))
    assert isinstance(df, DeepFakesModel) and isinstance(liae, LIAEModel)
    assert set(df.named_parts()) == {"encoder", "inter", "decoder_src", "decoder_dst"}
    assert set(liae.named_parts()) == {"encoder", "inter_AB", "inter_B", "decoder"}
    assert all(isinstance(p, nn.Module) for p in liae.named_parts().values())
    # LIAE's bottlenecks are twice as wide as DF's, and its decoder reads both of them.
    assert liae.inter_AB.out_channels == 2 * TINY["ae_dims"] == df.inter.out_channels * 2
    assert liae.decoder.body[0].conv.in_channels == 4 * TINY["ae_dims"]
    assert set(MODELS.names()) >= {"df", "liae"}


class _MeanBottleneck(nn.Module):
    """A stand-in part: averages the code into a constant spatial map (no dense layers)."""

    def __init__(self, *, in_features, in_channels, in_size, ae_dims, resolution, variant=""):
        super().__init__()
        self.out_channels, self.out_size = 8, resolution // 8
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        value = code.flatten(1).mean(dim=1) * self.scale
        return value.view(-1, 1, 1, 1).expand(-1, self.out_channels, self.out_size, self.out_size)


if "test-mean" not in BOTTLENECKS:
    BOTTLENECKS.register("test-mean")(_MeanBottleneck)


@dataclasses.dataclass
class _RunConfig:
    model: ModelConfig = group_field(lambda: config_group("model").create("df-cpu"), "model")


def test_parts_are_replaced_by_registry_name_through_the_config() -> None:
    run = apply_overrides(_RunConfig(), ["model=liae-cpu", "model.parts.bottleneck=test-mean"])
    run = apply_overrides(run, [f"model.{k}={v}" for k, v in TINY.items()])
    model = create_model(run.model)
    assert isinstance(model.inter_AB, _MeanBottleneck) and isinstance(model.inter_B, _MeanBottleneck)
    assert model.decoder.body[0].conv.in_channels == 16  # wired from the part's out_channels
    rgb, _ = model.swap(torch.rand(1, 3, 64, 64))
    assert rgb.shape == (1, 3, 64, 64)

    df = create_model(tiny("df", parts=dataclasses.replace(ModelConfig().parts, bottleneck="liae-inter")))
    assert isinstance(df.inter, DenseBottleneck) and df.inter.out_channels == 2 * TINY["ae_dims"]

    with pytest.raises(KeyError, match="unknown bottleneck 'nope'.*Known:"):
        create_model(tiny("df", parts=dataclasses.replace(ModelConfig().parts, bottleneck="nope")))
    assert {"dfl"} <= set(ENCODERS.names()) and {"dfl"} <= set(DECODERS.names())


def test_liae_codes_are_composed_as_specified() -> None:
    torch.manual_seed(0)
    model = create_model(tiny("liae-ud")).eval()
    src, dst = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    enc, ab, b, dec = model.encoder, model.inter_AB, model.inter_B, model.decoder
    with torch.no_grad():
        expected_src = dec(torch.cat([ab(enc(src)), ab(enc(src))], dim=1))
        expected_dst = dec(torch.cat([b(enc(dst)), ab(enc(dst))], dim=1))
        expected_swap = dec(torch.cat([ab(enc(dst)), ab(enc(dst))], dim=1))
        for got, want in (
            (model.reconstruct_src(src), expected_src),
            (model.reconstruct_dst(dst), expected_dst),
            (model.swap(dst), expected_swap),
        ):
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])
        pair = model(src, dst)  # the batched training path gives the same numbers
        torch.testing.assert_close(pair.src_rgb, expected_src[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(pair.dst_rgb, expected_dst[0], atol=1e-5, rtol=1e-4)

    # inter_B never sees src faces nor takes part in the swap.
    calls: list[str] = []
    handles = [
        part.register_forward_hook(lambda *_, name=name: calls.append(name))
        for name, part in model.named_parts().items()
    ]
    with torch.no_grad():
        model.swap(dst)
        swap_calls, calls[:] = list(calls), []
        model.reconstruct_src(src)
        src_calls, calls[:] = list(calls), []
        model.reconstruct_dst(dst)
    for handle in handles:
        handle.remove()
    assert swap_calls == ["encoder", "inter_AB", "decoder"] == src_calls
    assert sorted(calls) == sorted(["encoder", "inter_B", "inter_AB", "decoder"])


def test_deepfakes_swap_decodes_dst_with_the_src_decoder() -> None:
    torch.manual_seed(0)
    model = create_model(tiny("df")).eval()
    dst = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        code = model.inter(model.encoder(dst))
        torch.testing.assert_close(model.swap(dst)[0], model.decoder_src(code)[0])
        torch.testing.assert_close(model.reconstruct_dst(dst)[0], model.decoder_dst(code)[0])
        assert not torch.allclose(model.swap(dst)[0], model.reconstruct_dst(dst)[0])


def test_u_variant_pixel_normalises_the_encoder_code() -> None:
    model = create_model(tiny("df-u"))
    code = model.encoder(torch.rand(3, 3, 128, 128))
    torch.testing.assert_close(code.pow(2).mean(dim=1), torch.ones(3), atol=1e-4, rtol=0)


def test_channels_last_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    model = create_model(tiny("liae-udt", resolution=64)).eval()
    faces = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = model.swap(faces)[0]
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model.swap(faces.contiguous(memory_format=torch.channels_last))[0]
    assert fast.dtype == torch.bfloat16 and torch.isfinite(fast.float()).all()
    assert (fast.float() - reference).abs().max() < 0.05


# ---------------------------------------------------------------- learning on real faces


def _lfw_faces(lfw: Path, person: str, count: int, size: int = 64) -> torch.Tensor:
    """A fixed centre crop of LFW deep-funneled photos (250x250, face near the centre)."""
    files = sorted((lfw / person).glob("*.jpg"))[:count]
    faces = []
    for path in files:
        image = Image.open(path).convert("RGB").crop((62, 62, 188, 188)).resize((size, size), Image.BICUBIC)
        faces.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(faces).contiguous()


def _ellipse_mask(n: int, size: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    inside = (xs / 0.7) ** 2 + (ys / 0.85) ** 2 <= 1.0
    return inside.float().expand(n, 1, size, size).contiguous()


@pytest.mark.slow  # about 10-15 s each on an idle 2-core machine, much more under load
@pytest.mark.parametrize("preset", ["liae-cpu", "df-cpu"])
def test_loss_decreases_on_real_faces(lfw: Path, preset: str) -> None:
    torch.manual_seed(0)
    src = _lfw_faces(lfw, "George_W_Bush", 4)
    dst = _lfw_faces(lfw, "Colin_Powell", 4)
    mask = _ellipse_mask(4, 64)
    model = create_model(model_preset(preset)).to(memory_format=torch.channels_last)
    objective = ReconstructionObjective(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    targets = {"target": src, "mask": mask}, {"target": dst, "mask": mask}
    losses = []
    for _ in range(40):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(src, dst)
        terms = objective.pair((out.src_rgb, out.src_mask), (out.dst_rgb, out.dst_mask), *targets)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.item())
    assert set(terms.components) == {f"{s}/{t}" for s in ("src", "dst") for t in ("dssim", "pixel", "mask")}
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.6 * first, (first, last)

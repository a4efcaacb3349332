"""Benchmark: training throughput of swaplab's own identity network, and its LFW View-1 accuracy.

Measures one full training step of the ``identity-net`` recipe (augmentation, forward, ArcFace head
over the 4,028 DevTrain people, backward, SGD) of the default ``CompactFaceNet`` at batch 128 in
fp32 NCHW, fp32 channels-last, bf16 autocast NCHW and bf16 autocast + channels-last (the training
default), side by side and interleaved, and the same for a MobileFaceNet-style depthwise network of
the same chip size (the alternative it was chosen over). The step is the recipe's ``train_step``
rebuilt on random chips: its augmentation preset, ``swaplab.losses.margin``'s margin logits and the
recipe's optimiser (``build_optimizer``, ``apply_gradients``). Then prints the LFW View-1 lines
(threshold on pairsDevTrain, accuracy on pairsDevTest) of the installed ``lfw-arcface`` network and of
dlib's port, recorded in its model.json by ``swaplab identity build lfw-arcface --verify`` (or
``swaplab identity verify``), or measured now with ``--verify``.

    .venv/bin/python benchmarks/bench_identity_net.py [--threads 1] [--repeats 5] [--verify [--faceset DIR ...]]

Chips are random (speed does not depend on content). On the busy shared 2-core machine use
``--threads 1``: the training run itself uses one thread.

``--smoke``: the ``test`` build's tiny network at its batch (8), one repeat, and, in a temporary
user cache, the ``test`` build trained and installed so that its card is read back: checks the
script end to end in seconds (the numbers mean nothing; it never touches the real user cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from swaplab.evaluate.lfw_verification import lfw_view1  # noqa: E402
from swaplab.identity.lfw_arcface import CompactFaceNet, find_weights, metadata_path  # noqa: E402
from swaplab.losses.margin import MarginHead, margin_logits  # noqa: E402
from swaplab.system import cpu_supports_bf16  # noqa: E402
from swaplab.train.augment import Augmenter  # noqa: E402
from swaplab.train.recipes.identity_net import IdentityTrainConfig, identity_config  # noqa: E402
from swaplab.train.session import apply_gradients, build_optimizer  # noqa: E402

CLASSES = 4028  # DevTrain people with a face found


def _depthwise_block(channels_in: int, channels_out: int, stride: int, expand: int) -> nn.Sequential:
    hidden = channels_in * expand
    return nn.Sequential(
        nn.Conv2d(channels_in, hidden, 1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.PReLU(hidden),
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
        nn.BatchNorm2d(hidden),
        nn.PReLU(hidden),
        nn.Conv2d(hidden, channels_out, 1, bias=False),
        nn.BatchNorm2d(channels_out),
    )


class _Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MobileFaceNetLike(nn.Module):
    """MobileFaceNet's layout (Chen et al., 2018): bottlenecks (expansion, channels, repeats, stride)."""

    LAYOUT = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))

    def __init__(self, chip_size: int, embedding_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 3, 2, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
            nn.Conv2d(64, 64, 3, 1, 1, groups=64, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
        ]
        channels = 64
        for expand, width, repeats, stride in self.LAYOUT:
            for index in range(repeats):
                block = _depthwise_block(channels, width, stride if index == 0 else 1, expand)
                layers.append(_Residual(block) if index and channels == width else block)
                channels = width
        side = chip_size // 16
        layers += [
            nn.Conv2d(channels, 512, 1, bias=False),
            nn.BatchNorm2d(512),
            nn.PReLU(512),
            nn.Conv2d(512, 512, side, groups=512, bias=False),  # global depthwise conv
            nn.BatchNorm2d(512),
            nn.Flatten(),
            nn.Linear(512, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        ]
        self.layers = nn.Sequential(*layers)

    def embedding(self, chips: torch.Tensor) -> torch.Tensor:
        return self.layers((chips - 0.5) * 2.0)


def train_step(
    net: nn.Module, cfg: IdentityTrainConfig, bf16: bool, channels_last: bool, batch: int
) -> Callable[[], None]:
    """One optimiser step of ``net`` + an ArcFace head, as the ``identity-net`` recipe runs it."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    size = cfg.model.chip_size
    head = MarginHead(cfg.model.embedding_dim, CLASSES, cfg.head)
    net = net.to(memory_format=memory).train()
    optimizer = build_optimizer(cfg.trainer, [*net.parameters(), *head.parameters()], torch.device("cpu"))
    chips = torch.rand(batch, 3, size, size)
    labels = torch.randint(0, CLASSES, (batch,))
    augmenter = Augmenter(cfg.augment)

    def step() -> None:
        x = augmenter({"image": chips}, torch.Generator().manual_seed(0))["target"].contiguous(memory_format=memory)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embeddings = net.embedding(x)
        cosine = head.cosine(embeddings)
        loss = F.cross_entropy(margin_logits(cosine, labels, cfg.head.margin, cfg.head.scale, cfg.head.kind), labels)
        loss.backward()
        apply_gradients(optimizer, loss.detach(), cfg.trainer.grad_clip)

    return step


def interleaved(contenders: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each contender, runs interleaved so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm-up (oneDNN picks its kernels)
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def training_summary(card: dict) -> str:
    """Steps and time of the training that made an installed network (its card and run folder)."""
    training = card.get("training") or {}  # weights cached before training became a recipe
    steps = training.get("steps", card.get("step"))
    if training.get("cpu_s") is not None:
        return f"{steps} steps, {training['cpu_s'] / 60:.1f} CPU-minutes"
    run_dir = (card.get("trained_from") or {}).get("run_dir")
    metrics = Path(run_dir) / "metrics.jsonl" if run_dir else None
    if metrics is not None and metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        times = [row["time_s"] for row in rows if "time_s" in row]
        if times:
            return f"{steps} steps, {times[-1] / 60:.1f} wall-minutes (last session)"
    return f"{steps} steps"


def view1(args: argparse.Namespace) -> None:
    print("\nLFW View 1 (threshold chosen on pairsDevTrain.txt, accuracy on pairsDevTest.txt):")
    weights = find_weights()
    if args.verify:
        for result in lfw_view1(["lfw-arcface", "dlib-resnet"], facesets=args.faceset):
            print("  " + result.line())
    elif weights is not None and metadata_path(weights).is_file():
        document = json.loads(metadata_path(weights).read_text(encoding="utf-8"))
        results = (document.get("verification") or {}).get("results") or []
        for result in results:
            own = result.get("test_accuracy_own_threshold")
            print(
                f"  {result['encoder']:14s} test accuracy {100 * result['test_accuracy']:6.2f} % at threshold "
                f"{result['threshold']:.4f} (AUC {result['test_auc']:.4f})"
                + (f"; at its held-out threshold {result['own_threshold']:.4f}: {100 * own:.2f} %" if own else "")
            )
        print(f"  (recorded in {metadata_path(weights)})")
        if not results:
            print(f"  none recorded in {metadata_path(weights)}: run with --verify")
        print(f"  training: {training_summary(document)}")
    else:
        print("  no installed lfw-arcface network: build it (swaplab identity build lfw-arcface --verify)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=0, help="chips per step (0: the build's, 128)")
    parser.add_argument("--verify", action="store_true", help="measure LFW View 1 now (minutes)")
    parser.add_argument("--faceset", action="append", default=[], help="facesets of LFW photos (landmarks)")
    parser.add_argument("--smoke", action="store_true", help="the test build's tiny net, 1 repeat: checks the script")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.verify = 1, False
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    preset = "test" if args.smoke else "default"
    cfg = identity_config("lfw-arcface", preset)
    size = cfg.model.chip_size
    batch = args.batch or cfg.trainer.batch_size
    print(
        f"train step ({preset} build, {cfg.model.name}): batch {batch}, {size} px chips, "
        f"ArcFace head over {CLASSES} classes, {cfg.trainer.optimizer.upper()}"
    )

    variants = {"fp32 NCHW": (False, False), "fp32 channels_last": (False, True)}
    if cpu_supports_bf16():
        variants |= {"bf16 NCHW": (True, False), "bf16 channels_last": (True, True)}
    dim = cfg.model.embedding_dim
    nets = {
        "CompactFaceNet": lambda: CompactFaceNet(cfg.model),
        "MobileFaceNet-like": lambda: MobileFaceNetLike(size, dim),
    }
    for net_name, build in nets.items():
        torch.manual_seed(0)
        params = sum(p.numel() for p in build().parameters()) / 1e6
        contenders = {v: train_step(build(), cfg, bf16, cl, batch) for v, (bf16, cl) in variants.items()}
        seconds = interleaved(contenders, args.repeats)
        reference = seconds["fp32 NCHW"]
        print(f"\n{net_name} ({params:.2f} M parameters)")
        for name, value in seconds.items():
            print(
                f"  {name:20s} {value * 1000:8.0f} ms/step  {batch / value:7.1f} chips/s  "
                f"x{reference / value:4.2f} vs fp32 NCHW"
            )

    if not args.smoke:
        view1(args)
        return
    # Smoke: build the test network into a temporary user cache, then read its card back as above.
    from swaplab.train.recipes.identity_net import build_identity_network

    with tempfile.TemporaryDirectory(prefix="bench-identity-net-") as cache:
        os.environ["SWAPLAB_CACHE"] = cache
        os.environ.pop("SWAPLAB_LFW_ARCFACE", None)
        threads = torch.get_num_threads()
        build_identity_network("lfw-arcface", "test", progress=False)
        torch.set_num_threads(threads)
        view1(args)


if __name__ == "__main__":
    main()

"""The end-to-end demo behind `make demo`: extract two people, train a small model, swap a clip.

Every step is one call of the public API, so this file doubles as a worked example. It reads the
sample data (``$SWAPLAB_DATA`` or ``../shared/data``; ``swaplab data fetch`` for users elsewhere),
writes everything under one output folder, and prints where each result went.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SOURCE_CLIP = Path("videos/hdtf_sadtalker/WDA_AlexandriaOcasioCortez_000.mp4")  # the face to paste
TARGET_CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")  # the clip whose face is replaced


@dataclass
class DemoConfig:
    data: Path | None = None  # sample data root; default: $SWAPLAB_DATA or ../shared/data
    output: Path = Path("demo-output")
    train_minutes: float = 4.0  # CPU time budget for training
    model: str = "liae-cpu"
    swap_frames: int = 0  # frames of the target clip to swap (0 = the whole 8 s clip)
    # The face restorer on the pasted face (built on first use, about 8 CPU-minutes, then cached).
    restore: bool = False
    steps: int = 100_000  # upper bound; the time budget normally stops training first


def run_demo(cfg: DemoConfig, progress: bool = True) -> dict[str, str]:
    """Run the demo; returns the paths of what it wrote."""
    from swaplab.data.fetch import data_root
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.facesets.sheet import contact_sheet
    from swaplab.provenance import verify
    from swaplab.swap.pipeline import SwapConfig, swap
    from swaplab.train.entry import build_config
    from swaplab.train.export import export_model
    from swaplab.train.loop import train

    root = Path(cfg.data) if cfg.data else data_root()
    source, target = root / SOURCE_CLIP, root / TARGET_CLIP
    for clip in (source, target):
        if not clip.is_file():
            raise FileNotFoundError(
                f"{clip} not found: set SWAPLAB_DATA, pass --data, or `swaplab data fetch hdtf-sadtalker --dest DIR`"
            )
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    say = print if progress else (lambda *a, **k: None)

    stages = 5 if cfg.restore else 4
    say(f"[1/{stages}] extracting faces from {source.name} and {target.name}")
    started = time.perf_counter()
    extract_cfg = ExtractConfig(size=128, every=2)
    extract_cfg.faces.max_faces = 1
    facesets = {}
    for name, clip in (("src", source), ("dst", target)):
        summary = extract(clip, out / f"faceset-{name}", extract_cfg, progress=progress)
        contact_sheet(out / f"faceset-{name}", out / f"faceset-{name}" / "contact_sheet.jpg", max_faces=24)
        facesets[name] = out / f"faceset-{name}"
        say("      " + summary.lines()[1])
    timings["extract"] = time.perf_counter() - started

    say(f"[2/{stages}] training {cfg.model} for {cfg.train_minutes:g} CPU-minutes")
    started = time.perf_counter()
    train_cfg = build_config(
        [
            f"model={cfg.model}",
            f"data.src={facesets['src']}",
            f"data.dst={facesets['dst']}",
            "trainer=cpu-quick",
            f"trainer.steps={cfg.steps}",
            f"trainer.time_budget_s={cfg.train_minutes * 60}",
            # The last fifth without random warp at a tenth of the LR: the per-pair study's largest
            # single gain in reconstruction at equal steps (docs/per-pair.md).
            "trainer.final_stretch=0.2",
            f"trainer.progress={progress}",
            "trainer.preview_every=200",
            f"run_dir={out / 'run'}",
        ],
    )
    result = train(train_cfg)
    model_dir = out / "model"
    export_model(out / "run", model_dir, overwrite=True)
    timings["train"] = time.perf_counter() - started

    if cfg.restore:
        from swaplab.models.installed import find_weights
        from swaplab.train.built_networks import build_network

        started = time.perf_counter()
        if find_weights("face-restorer") is None:
            say(f"[3/{stages}] building the face restorer (once, about 8 CPU-minutes; later runs reuse it)")
            build_network("face-restorer", progress=progress)
        else:
            say(f"[3/{stages}] the face restorer is built")
        timings["restorer"] = time.perf_counter() - started

    say(f"[{stages - 1}/{stages}] swapping {target.name} (audio kept, every frame marked as synthetic)")
    started = time.perf_counter()
    swap_cfg = SwapConfig(
        overwrite=True, max_frames=cfg.swap_frames, which="largest", restore="on" if cfg.restore else "off"
    )
    video = out / "swap.mp4"
    report = swap(model_dir, target, video, swap_cfg, progress=progress)
    timings["swap"] = time.perf_counter() - started

    say(f"[{stages}/{stages}] verifying the mark and writing the summary")
    check = verify(video)
    side_by_side = out / "side_by_side.jpg"
    _side_by_side(target, video, side_by_side)
    preview = _latest_preview(out / "run")
    paths = {
        "video": str(video),
        "side_by_side": str(side_by_side),
        "model": str(model_dir),
        "run": str(out / "run"),
        "preview": str(preview) if preview else "",
        "summary": str(out / "summary.html"),
    }
    facts = {
        "source clip": str(source),
        "target clip": str(target),
        "model": cfg.model,
        "face restorer": "on" if cfg.restore else "off",
        "training steps": result.step if hasattr(result, "step") else "",
        "training minutes": round(timings["train"] / 60, 2),
        "swap frames/s": round(report.fps, 1),
        "frames swapped": f"{report.frames_swapped} of {report.frames}",
        "watermark found by verify": bool(check.synthetic),
    }
    _write_summary(out, paths, facts, timings)
    for key, value in paths.items():
        if value:
            say(f"  {key:13s} {value}")
    return paths


def _side_by_side(target: Path, swapped: Path, path: Path, frame_index: int = 50) -> None:
    """Target frame | swapped frame, with the mark applied (the image shows a synthetic face)."""
    from swaplab.io.video import VideoReader
    from swaplab.provenance import Provenance, write_marked_image

    def nth(video: Path) -> np.ndarray:
        last = None
        for frame in VideoReader(video, stop=frame_index + 1):
            last = frame.image
        assert last is not None
        return last

    left, right = nth(target), nth(swapped)
    right = cv2.resize(right, (left.shape[1], left.shape[0]))
    strip = np.concatenate([left, right], axis=1)
    write_marked_image(path, strip, Provenance.create("swaplab-demo", content=str(swapped)))


def _latest_preview(run: Path) -> Path | None:
    previews = sorted((run / "previews").glob("*.png"))
    return previews[-1] if previews else None


def _write_summary(out: Path, paths: dict[str, str], facts: dict, timings: dict[str, float]) -> None:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    times = "".join(f"<tr><th>{k}</th><td>{v:.1f} s</td></tr>" for k, v in timings.items())
    images = "".join(
        f'<figure><img src="{html.escape(Path(p).relative_to(out).as_posix())}" style="max-width:100%">'
        f"<figcaption>{html.escape(k)}</figcaption></figure>"
        for k, p in paths.items()
        if p and p.endswith((".jpg", ".png")) and Path(p).is_relative_to(out)
    )
    page = f"""<!doctype html><meta charset="utf-8"><title>swaplab demo</title>
<h1>swaplab demo</h1>
<p>Every image and video here that shows a swapped face carries swaplab's invisible watermark and
metadata marking it as synthetic (<code>swaplab verify FILE</code>).</p>
<table>{rows}</table><h2>Time</h2><table>{times}</table>
<p>Video: <a href="swap.mp4">swap.mp4</a></p>{images}
"""
    (out / "summary.html").write_text(page, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"paths": paths, "facts": facts, "seconds": timings}, indent=1))

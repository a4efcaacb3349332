"""Benchmark: swaplab's DWT-DCT watermark (swaplab.provenance.watermark): cost, invisibility, robustness.

Prints embed and extract times per 512x512 and 1920x1080 frame (medians of interleaved runs) against
the swap pipeline's frame budget (20 frames/s = 50 ms per frame), the PSNR of marked against
original, and for each attack the raw bit error rate (share of the 1,280 slots read wrong before
voting), the voted bit error rate (share of the 72 coded bits wrong after voting) and the detection
rate (payload read back exactly and ``present``), plus the vote margin of unmarked images beside
the decision threshold. Inputs (no randomness but the fixed sample below):
  * 512x512: 24 frames (every 8th) of videos/hdtf_sadtalker/WDA_KatieHill_000.mp4 and
    WDA_AlexandriaOcasioCortez_000.mp4;
  * 1080p: 8 frames (every 10th) of videos/multiface_crowd/facenet_pytorch_video.mp4;
  * photos: every 4th of the jpg/png files under photos/ (sorted), downscaled to <= 1024 px;
  * LFW: 16 deep-funneled faces (250 px), first photo of every 300th person (sorted).

    .venv/bin/python benchmarks/bench_watermark.py [--data ../shared/data] [--repeats 15] [--smoke]

``--smoke``: one frame of each clip, two photos and two LFW faces, one repeat: checks the script
end to end in seconds (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from swaplab.provenance import PayloadFields
from swaplab.provenance.sync import SCORE_MIN, add_template, detect, read_payload
from swaplab.provenance.watermark import CONFIDENCE_MIN, bit_error_rates, embed, extract
from swaplab.system import cpu_model

PAYLOAD = PayloadFields.from_ids("bench model card", "bench content").pack()
FRAME_BUDGET_MS = 1000.0 / 20


# ------------------------------------------------------------------ inputs


def video_frames(path: Path, every: int, count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def load_image(path: Path, max_side: int = 1024) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("RGB", (max_side, max_side))
        pixels = np.asarray(image.convert("RGB"))
    scale = max_side / max(pixels.shape[:2])
    if scale < 1:
        size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return pixels


def inputs(data: Path, smoke: bool = False) -> dict[str, list[np.ndarray]]:
    """The fixed sample above; ``smoke``: its first frame of each clip, first two photos and faces."""
    talking = data / "videos" / "hdtf_sadtalker"
    per_clip, photos, faces = (1, 2, 2) if smoke else (12, None, 16)
    frames_512 = video_frames(talking / "WDA_KatieHill_000.mp4", 8, per_clip)
    frames_512 += video_frames(talking / "WDA_AlexandriaOcasioCortez_000.mp4", 8, per_clip)
    frames_1080 = video_frames(data / "videos" / "multiface_crowd" / "facenet_pytorch_video.mp4", 10, min(8, per_clip))
    photo_files = sorted(p for p in (data / "photos").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    people = sorted(p for p in (data / "lfw" / "lfw-deepfunneled").iterdir() if p.is_dir())
    lfw_files = [sorted(person.glob("*.jpg"))[0] for person in people[::300]][:faces]
    return {
        "512x512 frames": frames_512,
        "1080p frames": frames_1080,
        "photos": [load_image(p) for p in photo_files[::4][:photos]],
        "lfw 250px": [load_image(p) for p in lfw_files],
    }


# ------------------------------------------------------------------ attacks


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def attack(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    return attack


def scale(factor: float, interpolation: int = cv2.INTER_AREA) -> Callable[[np.ndarray], np.ndarray]:
    def attack(image: np.ndarray) -> np.ndarray:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        return cv2.resize(image, size, interpolation=interpolation)

    return attack


def then(*attacks: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def attack(image: np.ndarray) -> np.ndarray:
        for step in attacks:
            image = step(image)
        return image

    return attack


def brightness(offset: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: np.clip(image.astype(np.int16) + offset, 0, 255).astype(np.uint8)


def contrast(gain: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: np.clip(np.rint((image.astype(np.float32) - 128) * gain + 128), 0, 255).astype(np.uint8)


def noise(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    return lambda image: np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


IMAGE_ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda image: image,
    "jpeg 90": jpeg(90),
    "jpeg 75": jpeg(75),
    "jpeg 50": jpeg(50),
    "half (area)": scale(0.5),
    "half (bilinear)": scale(0.5, cv2.INTER_LINEAR),
    "half + jpeg 75": then(scale(0.5), jpeg(75)),
    "quarter (area)": scale(0.25),
    "double (bicubic)": scale(2.0, cv2.INTER_CUBIC),
    "noise sigma 5": noise(5.0),
    "brightness +20": brightness(20),
    "contrast x0.8": contrast(0.8),
}


def crop(share: float, corner: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Cut ``share`` of each side's length away: half from each edge, or all from the top-left corner."""

    def attack(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        cut_y, cut_x = round(height * share), round(width * share)
        top, left = (cut_y, cut_x) if corner else (cut_y // 2, cut_x // 2)
        return np.ascontiguousarray(image[top : top + height - cut_y, left : left + width - cut_x])

    return attack


def crop_side(share: float, side: str) -> Callable[[np.ndarray], np.ndarray]:
    """Cut ``share`` of the image away from one ``side`` only (right or bottom): a caption or border removed."""

    def attack(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if side == "right":
            return np.ascontiguousarray(image[:, : width - round(width * share)])
        return np.ascontiguousarray(image[: height - round(height * share)])

    return attack


def rotate(degrees: float) -> Callable[[np.ndarray], np.ndarray]:
    """Turn about the centre, keeping the size (corners filled by reflection, as editors fill them)."""

    def attack(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
        return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)

    return attack


def mirror(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


#: Edits that move the payload off its grid: the synchronisation template (sync.py) finds them.
GEOMETRIC_ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "crop 10% (centre)": crop(0.10),
    "crop 10% (corner)": crop(0.10, corner=True),
    "crop 10% + jpeg 75": then(crop(0.10), jpeg(75)),
    "crop 10% (right only)": crop_side(0.10, "right"),
    "crop 10% (bottom only) + jpeg 75": then(crop_side(0.10, "bottom"), jpeg(75)),
    "mirror": mirror,
    "mirror + jpeg 75": then(mirror, jpeg(75)),
    "rotate +2 deg": rotate(2.0),
    "rotate -2 deg": rotate(-2.0),
    "rotate +3 deg": rotate(3.0),
    "rotate -3 deg + jpeg 75": then(rotate(-3.0), jpeg(75)),
}


def h264(frames: list[np.ndarray], crf: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height = frames[0].shape[1] // 2 * 2, frames[0].shape[0] // 2 * 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                cropped = np.ascontiguousarray(frame[: stream.height, : stream.width])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(cropped, format="rgb24")))
            container.mux(stream.encode())
        with av.open(str(path)) as container:
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# ------------------------------------------------------------------ measurements


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def robustness_row(name: str, attacked: list[np.ndarray]) -> str:
    rates = [bit_error_rates(image, PAYLOAD) for image in attacked]
    readings = [extract(image) for image in attacked]
    found = sum(r.present and r.payload == PAYLOAD for r in readings)
    raw, voted = np.mean([r[0] for r in rates]), np.mean([r[1] for r in rates])
    margin = min(r.confidence for r in readings)
    counts = f"detected {found:>3}/{len(attacked):<3}"
    return f"  {name:<20} raw BER {raw:6.3f}  voted BER {voted:6.3f}  {counts} min margin {margin:.2f}"


def geometric_row(name: str, attacked: list[np.ndarray]) -> str:
    """Direct raw BER; after the template's search: voted BER, payload read back, template found."""
    direct = np.mean([bit_error_rates(image, PAYLOAD)[0] for image in attacked])
    voted, found, templates, scores = [], 0, 0, []
    for image in attacked:
        reading, template, _, source = read_payload(image)
        if reading.present:  # read through the CRC (a placed crop has no undone image to re-measure)
            voted.append(
                float(
                    np.mean(np.unpackbits(np.frombuffer(reading.payload, np.uint8) ^ np.frombuffer(PAYLOAD, np.uint8)))
                )
            )
        else:
            voted.append(bit_error_rates(source, PAYLOAD)[1])
        found += reading.present and reading.payload == PAYLOAD
        template = template or detect(image)
        templates += template.present
        scores.append(template.score)
    n = len(attacked)
    return (
        f"  {name:<24} raw BER {direct:6.3f}  voted BER after search {np.mean(voted):6.3f}  "
        f"payload {found:>3}/{n:<3} template {templates:>3}/{n:<3} min score {min(scores):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = os.environ.get("SWAPLAB_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="a few inputs, 1 repeat: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1

    versions = f"Python {platform.python_version()}, OpenCV {cv2.__version__}, numpy {np.__version__}"
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; {versions}")
    sets = inputs(args.data, args.smoke)
    print("inputs: " + ", ".join(f"{name}: {len(images)}" for name, images in sets.items()))

    print(f"\ncost per frame (median of {args.repeats}; budget at 20 frames/s: {FRAME_BUDGET_MS:.0f} ms)")
    for name in ("512x512 frames", "1080p frames"):
        frame = sets[name][0]
        marked = embed(frame, PAYLOAD)
        embed_ms = median_ms(lambda f=frame: embed(f, PAYLOAD), args.repeats)
        extract_ms = median_ms(lambda m=marked: extract(m), args.repeats)
        share = embed_ms / FRAME_BUDGET_MS
        print(f"  {name:<16} embed {embed_ms:6.2f} ms ({share:5.1%} of budget)  extract {extract_ms:6.2f} ms")

    for name in ("512x512 frames", "1080p frames"):
        frame = sets[name][0]
        marked = embed(frame, PAYLOAD)
        template_ms = median_ms(lambda m=marked: add_template(m), args.repeats)
        detect_ms = median_ms(lambda m=marked: detect(m), args.repeats)
        print(f"  {name:<16} + template {template_ms:6.2f} ms  template search {detect_ms:6.2f} ms")

    payload_only = {name: [embed(image, PAYLOAD) for image in images] for name, images in sets.items()}
    # What swaplab writes (provenance.mark_image): the payload mark, then the synchronisation template.
    marked_sets = {name: [add_template(image) for image in images] for name, images in payload_only.items()}
    print("\ninvisibility: PSNR marked vs original (dB): payload mark alone | with the template")
    for name, images in sets.items():
        alone = [psnr(m, o) for m, o in zip(payload_only[name], images)]
        values = [psnr(m, o) for m, o in zip(marked_sets[name], images)]
        spread = f"min {min(values):5.2f}  median {statistics.median(values):5.2f}  max {max(values):5.2f}"
        print(f"  {name:<16} median {statistics.median(alone):5.2f} | {spread}")

    print("\nrobustness (images: photos + lfw 250px)")
    stills = marked_sets["photos"] + marked_sets["lfw 250px"]
    for attack_name, attack in IMAGE_ATTACKS.items():
        print(robustness_row(attack_name, [attack(image) for image in stills]))

    print("\ngeometric edits (images: photos + lfw 250px; frames: 512x512 and 1080p)")
    moving = stills + marked_sets["512x512 frames"] + marked_sets["1080p frames"]
    for attack_name, attack in GEOMETRIC_ATTACKS.items():
        print(geometric_row(attack_name, [attack(image) for image in moving]))

    for name in ("512x512 frames", "1080p frames"):
        print(f"\nrobustness ({name}, H.264 libx264 yuv420p)")
        for crf in (23, 28, 32):
            print(robustness_row(f"crf {crf}", h264(marked_sets[name], crf)))
        print(robustness_row("crf 28 + half", [scale(0.5)(f) for f in h264(marked_sets[name], 28)]))

    print(f"\nunmarked images: vote margin (threshold {CONFIDENCE_MIN}; false positives also need a CRC hit)")
    margins = [extract(image).confidence for images in sets.values() for image in images]
    present = sum(extract(i).present for images in sets.values() for i in images)
    spread = f"mean {np.mean(margins):.3f}  sd {np.std(margins):.3f}  max {max(margins):.3f}"
    print(f"  {len(margins)} images: {spread}  present {present}")

    # The template's search tries 338 transforms per image, so its false positives are measured on
    # unmarked images as they are and after the edits a marked one would meet.
    unmarked = [image for images in sets.values() for image in images]
    variants = {"as is": unmarked, "half (area)": [scale(0.5)(i) for i in unmarked]}
    variants["jpeg 75"] = [jpeg(75)(i) for i in unmarked]
    variants["crop 10% (centre)"] = [crop(0.10)(i) for i in unmarked]
    variants["crop 10% (right only)"] = [crop_side(0.10, "right")(i) for i in unmarked]
    print(f"\nunmarked images: template score under the search (threshold {SCORE_MIN})")
    for name, images in variants.items():
        readings = [read_payload(image) for image in images]
        scores = [(t or detect(i)).score for (_, t, _, _), i in zip(readings, images)]
        payloads = sum(r.present for r, _, _, _ in readings)
        spread = f"mean {np.mean(scores):.2f}  sd {np.std(scores):.2f}  max {max(scores):.2f}"
        print(
            f"  {name:<18} {len(images)} images: {spread}  template present {sum(s >= SCORE_MIN for s in scores)}"
            f"  payload present (with the search) {payloads}"
        )


if __name__ == "__main__":
    main()

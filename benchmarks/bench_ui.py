"""The web app's costs: how long ``swaplab ui`` takes to serve its page, and a photo swap through the
app against the same library call the command line makes, side by side in one run.

Start-up: ``swaplab ui`` is started as a user starts it (a fresh process) and timed until its page
answers, ``--starts`` times. Swap: a per-pair model (``liae-cpu`` trained one step on faces of the
HDTF clip; the weights do not matter for speed) swaps the same LFW photo ``--reps`` times through
the app's HTTP API (``gradio_client``, the requests the page's Swap button sends: upload, queue,
the handler, the result's download) and by ``swaplab.swap.pipeline.swap`` directly, alternating,
so load from other jobs hits both alike. Medians are reported, and the app's overhead as their
difference and ratio.

    .venv/bin/python benchmarks/bench_ui.py [--reps 5] [--starts 3] [--threads 1] [--smoke]

``--smoke``: one start and one swap each: checks the script end to end (the numbers mean little).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import data_root, load_average, machine, use_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = Path("videos/hdtf_sadtalker/WDA_KatieHill_000.mp4")
PHOTO = Path("lfw/lfw-deepfunneled/George_W_Bush/George_W_Bush_0021.jpg")
OPTIONS = {"mask": "intersection", "colour": "rct", "blend": "alpha", "smoothing": "one_euro", "restore": "off"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(allow: list[Path], output: Path, threads: int) -> tuple[subprocess.Popen, str, float]:
    """``swaplab ui`` in a fresh process; returns it, its address, and seconds until its page answered."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads or os.cpu_count())}
    started = time.perf_counter()
    command = [sys.executable, "-m", "swaplab.cli", "ui", "--port", str(port), "--output", str(output), "--allow"]
    log = open(output.parent / f"ui-{port}.log", "w")  # noqa: SIM115 - the app's own process writes it
    process = subprocess.Popen([*command, *map(str, allow)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            sys.exit(f"swaplab ui exited {process.returncode}: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return process, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.05)
        if time.perf_counter() - started > 300:
            process.kill()
            sys.exit("swaplab ui did not answer within 300 s")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def make_model(work: Path) -> Path:
    from swaplab.config import apply_overrides
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.train.export import export_model
    from swaplab.train.loop import train
    from swaplab.train.recipes.per_pair import TrainConfig

    faces = work / "faces"
    extract(data_root() / CLIP, faces, ExtractConfig(size=128, max_frames=8), progress=False)
    run = work / "run"
    overrides = ["model=liae-cpu", f"data.src={faces}", f"data.dst={faces}", "data.holdout=0", "trainer=test"]
    train(apply_overrides(TrainConfig(), [*overrides, "trainer.steps=1", f"run_dir={run}"]))
    return export_model(run, work / "model").parent


def swap_by_library(model: Path, photo: Path, out: Path) -> float:
    from swaplab.config import apply_overrides
    from swaplab.swap.pipeline import SwapConfig, swap

    started = time.perf_counter()
    cfg = apply_overrides(SwapConfig(), [f"{k}={v}" for k, v in OPTIONS.items()])
    swap(model, photo, out, cfg, progress=False)
    return time.perf_counter() - started


def swap_through_app(client, model: Path, photo: Path) -> float:
    from gradio_client import handle_file

    started = time.perf_counter()
    before, after, slider, download, report = client.predict(
        str(model),
        handle_file(str(photo)),
        "",
        None,
        "",
        *OPTIONS.values(),
        "installed",  # the restorer (unused with restore off)
        0,
        api_name="/swap",
    )
    seconds = time.perf_counter() - started
    if "1 faces swapped" not in report or not Path(download).is_file():
        sys.exit(f"the app's swap did not swap the face: {report}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="swaps by each route")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts of the app")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the app (0 = default)")
    parser.add_argument("--smoke", action="store_true", help="one start and one swap each")
    args = parser.parse_args()
    if args.smoke:
        args.reps, args.starts = 1, 1
    use_threads(args.threads)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    print(f"machine: {machine()}")
    print(f"load before: {load_average()} (other jobs share this machine; they slow both routes alike)")
    photo = data_root() / PHOTO
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        work = Path(tmp)
        model = make_model(work)
        from gradio_client import Client

        starts = []
        for start in range(args.starts):
            process, url, seconds = start_app([work, photo.parent], work / "out", args.threads)
            starts.append(seconds)
            if start < args.starts - 1:  # the last one serves the swaps
                stop_app(process)
        print(f"start-up (fresh process until the page answers), {args.starts} starts: "
              f"median {statistics.median(starts):.2f} s, min {min(starts):.2f} s")  # fmt: skip
        try:
            client = Client(url, verbose=False)
            swap_through_app(client, model, photo)  # warm-up: the first call imports the swap stage in the app
            swap_by_library(model, photo, work / "warm.png")
            app_s, lib_s = [], []
            for rep in range(args.reps):
                app_s.append(swap_through_app(client, model, photo))
                lib_s.append(swap_by_library(model, photo, work / f"lib-{rep}.png"))
        finally:
            stop_app(process)
    app_median, lib_median = statistics.median(app_s), statistics.median(lib_s)
    print(f"photo swap ({photo.name}, liae-cpu, {args.reps} each, median seconds):")
    print(f"  {'route':38s} {'median s':>9s} {'min s':>7s}")
    print(f"  {'library call (as swaplab swap makes it)':38s} {lib_median:9.3f} {min(lib_s):7.3f}")
    print(f"  {'through the app (HTTP API, upload+queue)':38s} {app_median:9.3f} {min(app_s):7.3f}")
    print(f"app overhead per swap: {app_median - lib_median:+.3f} s ({app_median / lib_median:.2f} x the library call)")
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()

"""Benchmark: what a new user's mistakes and accidents do. Each case runs the real CLI and is scored.

For every case it prints the exit code, whether stderr holds exactly one ``error:`` line and no
traceback (a warning-only case is scored on its own check), and whether anything was lost (a model,
a faceset, a checkpoint or a photo changed or gone that should not have). Inputs: 12 LFW photos of
each of George_W_Bush and Colin_Powell (first by name), a tiny per-pair model (df-cpu with small
widths, 2 steps), the clip videos/hdtf_vexpress/RD_Radio10_0_clip_0.mp4.

    .venv/bin/python benchmarks/bench_reliability.py [--data ../shared/data] [--smoke]

``--smoke`` runs the three cases that need no training (the numbers are then a sample, not the table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_PAIR = ["model=df-cpu", "model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def one_line(self) -> bool:
        lines = [line for line in self.err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        return len(errors) == 1 and "Traceback" not in self.err


def cli(*args: str, limit: int | None = None, cwd: Path | None = None) -> Outcome:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def file_size_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "swaplab.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        preexec_fn=file_size_limit if limit else None,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def digest(path: Path) -> str:
    """A hash of a file or of a folder's files (names and bytes), to tell whether anything changed."""
    sha = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".lock")
    for file in files:
        sha.update(str(file.relative_to(path.parent)).encode())
        sha.update(file.read_bytes())
    return sha.hexdigest()


@dataclass
class Case:
    name: str
    expect: str  # what a careful user expects, in a few words
    run: Callable[[Path], tuple[Outcome, bool, bool]]  # -> (outcome, behaved as expected, lost something)
    error: bool = True  # whether the right answer is an error (then scored on printing exactly one line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = os.environ.get("SWAPLAB_DATA") or REPO.parents[1] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    data: Path = args.data
    lfw = data / "lfw" / "lfw-deepfunneled"
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        setup: dict[str, Path] = {}

        def prepare() -> None:
            for person in ("George_W_Bush", "Colin_Powell"):
                photos = [str(p) for p in sorted((lfw / person).glob("*.jpg"))[:12]]
                result = cli("extract", *photos, "-o", str(work / person), "--quiet", "--no-sheet", "size=96")
                assert result.code == 0, result.err
            setup["src"], setup["dst"] = work / "George_W_Bush", work / "Colin_Powell"
            base = [*TINY_PAIR, f"data.src={setup['src']}", f"data.dst={setup['dst']}", "trainer=test"]
            setup_run = work / "run"
            result = cli("train", *base, "trainer.steps=2", "trainer.checkpoint_every=2", f"run_dir={setup_run}")
            assert result.code == 0, result.err
            result = cli("export", str(setup_run), "-o", str(work / "model"))
            assert result.code == 0, result.err
            setup["run"], setup["model"] = setup_run, work / "model"

        def train_args(run: Path, src: Path | None = None, steps: int = 2) -> list[str]:
            return [
                "train",
                *TINY_PAIR,
                f"data.src={src or setup['src']}",
                f"data.dst={setup['dst']}",
                "trainer=test",
                f"trainer.steps={steps}",
                "trainer.checkpoint_every=2",
                f"run_dir={run}",
            ]

        # ------------------------------------------------------------ the cases

        def unknown_name(tmp: Path):
            result = cli("train", "model=liae-cpuu", f"run_dir={tmp / 'r'}")
            return result, result.code == 2 and "liae-cpu" in result.err, False

        def verify_missing_and_unreadable(tmp: Path):
            bad = tmp / "bad.png"
            bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
            result = cli("verify", str(tmp / "missing.png"), str(bad))
            lines = result.out.strip().splitlines()
            ok = result.code == 1 and len(lines) == 2 and all("unreadable" in line for line in lines)
            return result, ok, False

        def extract_nothing(tmp: Path):
            (tmp / "empty").mkdir()
            result = cli("extract", str(tmp / "empty"), "-o", str(tmp / "fs"), "--quiet")
            return result, result.code == 1, False

        def extract_tiny_image(tmp: Path):
            from PIL import Image

            Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp / "tiny.png")
            result = cli("extract", str(tmp / "tiny.png"), "-o", str(tmp / "fs"), "--quiet")
            return result, result.code == 1, False

        def damaged_shard_info(tmp: Path):
            faceset = tmp / "fs"
            shutil.copytree(setup["src"], faceset)
            shard = sorted((faceset / "shards").glob("*.json"))[0]
            shard.write_bytes(shard.read_bytes()[:40])
            result = cli("faceset", "info", str(faceset))
            err = "\n".join(line for line in result.err.splitlines() if line.startswith("error:"))
            return Outcome(result.code, result.out, err), result.code == 1 and "damaged" in err, False

        def damaged_shard_train(tmp: Path):
            faceset = tmp / "fs"
            shutil.copytree(setup["src"], faceset)
            shard = sorted((faceset / "shards").glob("*.json"))[0]
            shard.write_bytes(shard.read_bytes()[:40])
            result = cli(*train_args(tmp / "r", src=faceset))
            return result, result.code != 0 and "damaged" in result.err, False

        def wrong_schema_shard(tmp: Path):
            faceset = tmp / "fs"
            shutil.copytree(setup["src"], faceset)
            shard = sorted((faceset / "shards").glob("*.json"))[0]
            shard.write_text(json.dumps({"records": [{"id": "x", "file": "faces/x.jpg"}]}))
            result = cli(*train_args(tmp / "r", src=faceset))
            return result, result.code != 0 and "lacks the field" in result.err, False

        def export_onto_model(tmp: Path):
            target = tmp / "model"
            shutil.copytree(setup["model"], target)
            before = digest(target)
            result = cli("export", str(setup["run"]), "-o", str(target))
            return result, result.code == 2, digest(target) != before

        def sort_onto_faceset(tmp: Path):
            target = tmp / "fs"
            shutil.copytree(setup["dst"], target)
            before = digest(target)
            result = cli("faceset", "sort", str(setup["src"]), "-o", str(target))
            return result, result.code == 2, digest(target) != before

        def read_only_output(tmp: Path):
            locked = tmp / "locked"
            locked.mkdir()
            locked.chmod(0o500)
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            result = cli("extract", photo, "-o", str(locked / "fs"), "--quiet")
            locked.chmod(0o700)
            # As root the permission bits do not stop a write; then the extraction simply works.
            return result, result.code in (0, 1) and (result.code == 0 or result.one_line), False

        def output_is_a_file(tmp: Path):
            (tmp / "file").write_text("mine")
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            result = cli("extract", photo, "-o", str(tmp / "file"), "--quiet")
            return result, result.code != 0, (tmp / "file").read_text() != "mine"

        def one_face_faceset(tmp: Path):
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            cli("extract", photo, "-o", str(tmp / "one"), "--quiet", "--no-sheet", "size=96")
            result = cli(*train_args(tmp / "r", src=tmp / "one"))
            return result, result.code != 0, False

        def resume_other_config(tmp: Path):
            run = tmp / "r"
            assert cli(*train_args(run)).code == 0
            result = cli(*[a if not a.startswith("model.ae_dims") else "model.ae_dims=48" for a in train_args(run)])
            return result, result.code != 0, not (run / "checkpoints" / "step-0000002").is_dir()

        def disk_full_checkpoint(tmp: Path):
            run = tmp / "r"
            assert cli(*train_args(run)).code == 0
            result = cli(*train_args(run, steps=4), limit=1 << 20)
            lost = not (run / "checkpoints" / "step-0000002" / "state.json").is_file()
            return result, result.code == 1 and "previous checkpoint is intact" in result.err, lost

        def export_without_checkpoint(tmp: Path):
            run = tmp / "r"
            shutil.copytree(setup["run"], run)
            shutil.rmtree(run / "checkpoints")
            result = cli("export", str(run), "-o", str(tmp / "m"))
            return result, result.code == 1, False

        def model_without_card(tmp: Path):
            model = tmp / "m"
            shutil.copytree(setup["model"], model)
            (model / "model.json").unlink()
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            result = cli("swap", str(model), photo, "-o", str(tmp / "out.png"))
            return result, result.code != 0 and not (tmp / "out.png").exists(), False

        def tampered_card(tmp: Path):
            model = tmp / "m"
            shutil.copytree(setup["model"], model)
            card = json.loads((model / "model.json").read_text())
            card["model"]["ae_dims"] = 40
            (model / "model.json").write_text(json.dumps(card))
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            result = cli("swap", str(model), photo, "-o", str(tmp / "out.png"))
            return result, result.code != 0, False

        def unknown_suffix(tmp: Path):
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            started = time.monotonic()
            result = cli("swap", str(setup["model"]), photo, "-o", str(tmp / "out.webp2"))
            fast = time.monotonic() - started
            return result, result.code != 0 and "png" in result.err, False if fast else False

        def no_face_photo(tmp: Path):
            from PIL import Image

            Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(tmp / "wall.png")
            swapped = cli("swap", str(setup["model"]), str(tmp / "wall.png"), "-o", str(tmp / "out.png"))
            checked = cli("verify", str(tmp / "out.png"))
            ok = swapped.code == 0 and checked.code == 3 and "no face" in swapped.out + swapped.err
            return swapped, ok, False

        def sigint_train(tmp: Path):
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            command = [sys.executable, "-m", "swaplab.cli", *train_args(tmp / "r", steps=400)]
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (tmp / "r" / "checkpoints" / "latest.json").exists():
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=120)
            return Outcome(process.returncode, out, err), process.returncode == 130, False

        def edit_list_clip(tmp: Path):
            from swaplab.io.video import VideoReader

            reader = VideoReader(data / "videos" / "hdtf_vexpress" / "RD_Radio10_0_clip_0.mp4")
            frames = sum(1 for _ in reader)
            ok = frames == 61 and not reader.problems
            return Outcome(0, f"{frames} frames, problems {reader.problems}", ""), ok, False

        def killed_video_swap_leftover(tmp: Path):
            clip = str(data / "videos" / "hdtf_vexpress" / "RD_Radio10_0_clip_0.mp4")
            stale = tmp / ".out.video-999999-abcdef.mp4"  # what a killed swap (pid 999999, gone) leaves
            stale.write_bytes(b"half a video")
            result = cli("swap", str(setup["model"]), clip, "-o", str(tmp / "out.mp4"), "max_frames=4", "--quiet")
            ok = result.code == 0 and not stale.exists()
            return result, ok, False

        def two_trainers_one_run(tmp: Path):
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            run = tmp / "r"
            command = [sys.executable, "-m", "swaplab.cli", *train_args(run, steps=400)]
            first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (run / "checkpoints" / "latest.json").exists():
                time.sleep(0.2)
            second = cli(*train_args(run, steps=400))
            first.send_signal(signal.SIGINT)
            first.wait(timeout=120)
            return second, second.code != 0 and "in use" in second.err, False

        def two_swaps_one_output(tmp: Path):
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            clip = str(data / "videos" / "hdtf_vexpress" / "RD_Radio10_0_clip_0.mp4")
            out = tmp / "out.mp4"
            command = [sys.executable, "-m", "swaplab.cli", "swap", str(setup["model"]), clip, "-o", str(out)]
            first = subprocess.Popen(
                [*command, "max_frames=60", "--quiet"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (tmp / ".out.mp4.lock").exists():
                time.sleep(0.05)
            second = cli("swap", str(setup["model"]), clip, "-o", str(out), "max_frames=4", "--quiet")
            first_err = first.communicate(timeout=600)[1]
            kept = first.returncode == 0 and out.exists() and not (tmp / ".out.mp4.lock").exists()
            return second, second.code != 0 and "in use" in second.err and kept, not kept and not first_err

        def failed_first_step_then_fixed(tmp: Path):
            run = tmp / "r"
            photo = str(sorted((lfw / "Colin_Powell").glob("*.jpg"))[0])
            cli("extract", photo, "-o", str(tmp / "one"), "--quiet", "--no-sheet", "size=96")
            broken = cli(*train_args(run, src=tmp / "one"))  # too few faces: fails before its first step
            fixed = cli(*train_args(run))
            ok = broken.code != 0 and fixed.code == 0
            return Outcome(broken.code, broken.out, broken.err), ok, False

        cases = [
            Case("unknown preset name", "exit 2, names the valid ones", unknown_name),
            Case("verify: missing + unreadable file", "each file reported, exit 1", verify_missing_and_unreadable),
            Case("extract: empty folder", "exit 1, one line", extract_nothing),
        ]
        if not args.smoke:
            cases += [
                Case("extract: a 10x10 image", "exit 1, one line", extract_tiny_image),
                Case("faceset info: truncated shard", "exit 1, names the shard", damaged_shard_info),
                Case("train: truncated shard", "refused, names the shard", damaged_shard_train),
                Case("train: shard with wrong fields", "one line naming file and field", wrong_schema_shard),
                Case("export onto an existing model", "exit 2, model untouched", export_onto_model),
                Case("faceset sort onto an existing faceset", "exit 2, faceset untouched", sort_onto_faceset),
                Case("extract into a read-only folder", "one line (or works as root)", read_only_output, error=False),
                Case("extract -o an existing file", "one line, file untouched", output_is_a_file),
                Case("train on a 1-face faceset", "one line", one_face_faceset),
                Case("resume with another model config", "one line, run untouched", resume_other_config),
                Case("disk full during a checkpoint", "one line, previous checkpoint kept", disk_full_checkpoint),
                Case("export a run without checkpoints", "one line", export_without_checkpoint),
                Case("swap with a model folder without model.json", "one line", model_without_card),
                Case("swap with a tampered model.json", "one line", tampered_card),
                Case("swap to an unknown output suffix", "one line, before the model loads", unknown_suffix),
                Case("swap a photo with no face", "unchanged, unmarked, verify exit 3", no_face_photo, error=False),
                Case("SIGINT during training", "exit 130", sigint_train, error=False),
                Case("valid clip with an edit list (62/61)", "no damage warning", edit_list_clip, error=False),
                Case(
                    "temporary of a killed video swap",
                    "removed at the next swap",
                    killed_video_swap_leftover,
                    error=False,
                ),
                Case("two trainings of one run", "the second refused", two_trainers_one_run),
                Case("two swaps onto one output", "the second refused, the first done", two_swaps_one_output),
                Case("first run fails, fixed re-run", "the re-run starts", failed_first_step_then_fixed),
            ]
            prepare()

        print(f"\n{'case':<46} {'expected':<38} exit  one-line  as expected  lost")
        totals = {"one_line": 0, "expected": 0, "lost": 0, "errors": 0}
        for index, case in enumerate(cases):
            tmp = work / f"case-{index}"
            tmp.mkdir()
            outcome, behaved, lost = case.run(tmp)
            one_line = outcome.one_line if case.error else None
            if case.name.startswith("verify"):  # each file gets its own line on stdout, none on stderr
                one_line = behaved and not outcome.err.strip()
            totals["errors"] += case.error
            totals["one_line"] += bool(one_line)
            totals["expected"] += behaved
            totals["lost"] += lost
            shown = "-" if one_line is None else "yes" if one_line else "NO"
            flags = f"{shown:<8}  {'yes' if behaved else 'NO':<11}  {'YES' if lost else 'no'}"
            print(f"{case.name:<46} {case.expect:<38} {outcome.code:>4}  {flags}")
            if not behaved:
                print(f"    stderr: {outcome.err.strip()[-300:]!r}")
        n = len(cases)
        print(
            f"\n{n} cases: {totals['expected']} behave as expected; {totals['errors']} are errors, of which "
            f"{totals['one_line']} print exactly one error line and no traceback; {totals['lost']} lose anything"
        )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()

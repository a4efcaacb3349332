"""The page: one tab per step of the workflow, each button one library call.

``build_app(settings)`` returns the FastAPI application (Gradio's page mounted at ``/``, plus one
route that serves report files from the allowed folders); ``serve(settings)`` runs it on
127.0.0.1 until interrupted. Analytics are off and there are no share links: nothing leaves the
machine. Every handler turns the library's errors into one readable line on the page.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

# Set before Gradio is imported: it reads these once, at import time. (The upload folder,
# GRADIO_TEMP_DIR, is read when a page is built, so ``build_app`` sets it per app.)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402 - after the settings above

from swaplab.ui.access import DEFAULT_MAX_UPLOAD_MB, AccessError, AllowList, Uploads  # noqa: E402
from swaplab.ui.jobs import JobManager, one_line  # noqa: E402

#: The route that serves report pages (and the figures beside them) from the allowed folders.
FILE_ROUTE = "/swaplab-file"
#: How often the training tab refreshes its status, preview and curve (seconds).
REFRESH_S = 2.0


@dataclass
class UiSettings:
    """How ``swaplab ui`` was started."""

    allow: list[str] = field(default_factory=list)  # folders the page may use (default: the current one)
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    output: str = ""  # where swaps and exports go (default: ALLOWED[0]/swaplab-ui)


class Labelling:
    """The faces being labelled, held by the server under a token the page keeps.

    The page sends one event per click with its state as it was when clicked, so two quick clicks
    would each add their point to the same old list and one would be lost. Every labelling event
    instead changes the server's copy under a lock, and the events run one at a time in the order
    they were made (one concurrency group), so no click, close or undo is lost or reordered.
    """

    def __init__(self, keep: int = 64) -> None:
        self._labels: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._keep = keep  # faces held at once: the oldest is let go (its saved polygons stay saved)

    def start(self, labels: dict[str, Any]) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._labels[token] = labels
            while len(self._labels) > self._keep:
                self._labels.pop(next(iter(self._labels)))
        return token

    def get(self, token: str | None) -> dict[str, Any]:
        with self._lock:
            labels = self._labels.get(token or "")
        if labels is None:
            raise AccessError("load a faceset and pick a face first")
        return labels

    def change(self, token: str | None, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """``edit(labels)`` -> new labels, stored and returned; it may raise to refuse the change."""
        with self._lock:
            labels = self._labels.get(token or "")
            if labels is None:
                raise AccessError("load a faceset and pick a face first")
            self._labels[token] = labels = edit(labels)
        return labels


@dataclass
class UiState:
    """What the server holds for every page: the allow-list, uploads, outputs and jobs."""

    allow: AllowList
    uploads: Uploads
    output: Path
    jobs: JobManager
    labelling: Labelling = field(default_factory=Labelling)

    @classmethod
    def create(cls, settings: UiSettings) -> UiState:
        allow = AllowList.of(list(settings.allow))
        uploads = Uploads(max_bytes=int(settings.max_upload_mb * 1024 * 1024))
        output = allow.check(settings.output or allow.roots[0] / "swaplab-ui", must_exist=False)
        output.mkdir(parents=True, exist_ok=True)
        scratch = uploads.root / "jobs"
        scratch.mkdir()
        return cls(allow, uploads, output, JobManager(scratch))

    def close(self) -> None:
        self.jobs.shutdown()
        self.uploads.close()

    def media(self, upload: Any, typed: str, what: str, kinds: tuple[str, ...] = ("photo", "video")) -> Path:
        """The file the page names: an upload (checked and kept) or a typed path (allow-listed)."""
        if upload:
            return self.uploads.accept(_upload_path(upload), kinds)
        if typed and typed.strip():
            return self.allow.check(typed)
        raise AccessError(f"give the {what}: upload a file or type a path inside the allowed folders")

    def new_output(self, kind: str, name: str, suffix: str) -> Path:
        """A fresh file under the output folder (never overwriting an earlier result)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = self.output / kind
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{Path(name).stem}-{stamp}{suffix}"
        count = 1
        while path.exists():
            count += 1
            path = folder / f"{Path(name).stem}-{stamp}-{count}{suffix}"
        return path


def _upload_path(upload: Any) -> str:
    return upload if isinstance(upload, str) else getattr(upload, "name", None) or getattr(upload, "path", "")


def _failures() -> tuple[type[BaseException], ...]:
    from swaplab.config import ConfigError
    from swaplab.facesets.format import FacesetError
    from swaplab.io.images import MediaError
    from swaplab.train.checkpoint import CheckpointError

    return (OSError, ValueError, RuntimeError, LookupError, MediaError, FacesetError, CheckpointError, ConfigError)


def _one_line_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """The library's errors as one line in the page (``gr.Error``), never a traceback."""

    @wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except _failures() as err:
            raise gr.Error(one_line(err), print_exception=False) from None

    return wrapped


def _names(kind: str) -> list[str]:
    """The names in one of the registries ``swaplab list`` shows (masks, colour, blend ...)."""
    import importlib

    module, attr = {
        "masks": ("swaplab.swap.masking", "MASK_MODES"),
        "colour": ("swaplab.swap.colour", "COLOUR_TRANSFERS"),
        "blend": ("swaplab.swap.blend", "BLENDERS"),
        "smoothing": ("swaplab.swap.smoothing", "SMOOTHERS"),
    }[kind]
    return list(getattr(importlib.import_module(module), attr).names())


def _pair_model_presets() -> list[str]:
    """``model`` presets whose recipe trains on a pair of facesets (``data.src``, ``data.dst``): what
    the training tab's two faceset fields can feed. Other families train from the command line."""
    import dataclasses

    import swaplab.train.recipe  # noqa: F401 - names the modules that register presets
    from swaplab.config import config_group
    from swaplab.train.recipe import recipe_for_model

    group, names = config_group("model"), []
    for name in group.names():
        fields = {f.name: f for f in dataclasses.fields(recipe_for_model(group.create(name)).config_type)}
        data = fields.get("data")
        factory = getattr(data, "default_factory", None) if data else None
        if callable(factory) and {"src", "dst"} <= {f.name for f in dataclasses.fields(factory())}:
            names.append(name)
    return names


def _trainer_presets() -> list[str]:
    import swaplab.train.recipe  # noqa: F401
    from swaplab.config import config_group

    return list(config_group("trainer").names())


# ---------------------------------------------------------------- handlers (each one library call)


def extract_faces(state: UiState, uploads: list[Any] | None, typed: str, output: str, size: str, progress: Any):
    from swaplab.config import apply_overrides
    from swaplab.facesets.extract import ExtractConfig, extract
    from swaplab.facesets.sheet import contact_sheet

    inputs = [state.uploads.accept(_upload_path(u)) for u in uploads or []]
    inputs += [state.allow.check(p) for p in (typed or "").split("\n") if p.strip()]
    if not inputs:
        raise AccessError("give photos or videos: upload them or type paths inside the allowed folders")
    faceset = state.allow.check(output, must_exist=False)
    progress(0, desc="extracting")
    summary = extract(inputs, faceset, apply_overrides(ExtractConfig(), [f"size={size}"]), progress=True)
    lines = summary.lines() + [f"skipped {p['path']}: {p['reason']}" for p in summary.problems[:20]]
    sheet = contact_sheet(faceset, faceset / "contact_sheet.jpg") if summary.faces else None
    return "\n".join(lines), (str(sheet) if sheet else None)


def start_training(state: UiState, model: str, trainer: str, src: str, dst: str, run: str, steps: float,
                   preview_every: float) -> str:  # fmt: skip
    run_dir = state.allow.check(run, must_exist=False)
    overrides = [f"model={model}", f"trainer={trainer}"]
    if (run_dir / "config.yaml").is_file():  # resume: the saved config; only the step budget may change
        overrides = []
    else:
        overrides += [f"data.src={state.allow.check(src)}", f"data.dst={state.allow.check(dst)}"]
        if preview_every:
            overrides.append(f"trainer.preview_every={int(preview_every)}")
    if steps:
        overrides.append(f"trainer.steps={int(steps)}")
    job = state.jobs.start(run_dir, overrides)
    return f"job {job.number}: {job.state_line()} ({run_dir})"


def stop_training(state: UiState, run: str) -> str:
    job = state.jobs.latest_for(state.allow.check(run, must_exist=False))
    if job is None:
        raise LookupError(f"no training job of this app trains {run}")
    state.jobs.stop(job.number)
    return f"job {job.number}: {job.state_line()}"


def watch_training(state: UiState, run: str) -> tuple[str, str | None, Any]:
    """The run's job state, latest preview grid and loss curve (read from the run folder)."""
    import pandas as pd

    from swaplab.train.run import RunFolder

    empty = pd.DataFrame({"step": [], "loss": []})
    if not run or not run.strip():
        return "no run folder given", None, empty
    try:
        run_dir = state.allow.check(run, must_exist=False)
    except AccessError as err:
        return str(err), None, empty
    folder = RunFolder(run_dir)
    job = state.jobs.latest_for(run_dir)
    rows = [r for r in folder.read_metrics() if isinstance(r.get("loss"), (int, float))]
    step = rows[-1]["step"] if rows else 0
    state_text = f"job {job.number}: {job.state_line()}" if job else "no job of this app on this run"
    latest = folder.previews / "latest.png"
    curve = pd.DataFrame({"step": [r["step"] for r in rows], "loss": [r["loss"] for r in rows]})
    return f"{state_text}; logged step {step}", (str(latest) if latest.is_file() else None), curve


def export_run(state: UiState, run: str) -> str:
    from swaplab.train.export import export_model

    run_dir = state.allow.check(run)
    card = export_model(run_dir, state.new_output("models", run_dir.name, ""))
    return f"exported: {card.parent}"


INSTALLED_RESTORER = "installed"  # the restorer picker's entry for the one `swaplab nets build face-restorer` installed


def exported_folders(state: UiState, kind: str) -> list[str]:
    """The pickers' folders: exported swap models (``kind="swapper"``: cards naming a swapper kind) or
    built face restorers (``kind="face-restorer"``, such as a personal build's ``--out`` folder)."""
    found = []
    for folder in state.allow.find("model.json"):
        try:
            card = json.loads((Path(folder) / "model.json").read_text())
        except (OSError, ValueError):
            continue  # a folder being written, or not a card: not offered
        if (kind == "swapper" and card.get("swapper")) or card.get("arch") == kind:
            found.append(folder)
    return found


def swap_media(state: UiState, model: str, target_upload: Any, target_typed: str, source_upload: Any,
               source_typed: str, mask: str, colour: str, blend: str, smoothing: str, restore: str, restorer: str,
               preview_frames: float) -> tuple[str | None, str | None, Any, str | None, str]:  # fmt: skip
    from swaplab.config import apply_overrides
    from swaplab.io.images import is_video_path
    from swaplab.swap.pipeline import SwapConfig, swap

    model_dir = state.allow.check(model)
    target = state.media(target_upload, target_typed, "target photo or video")
    overrides = [f"mask={mask}", f"colour={colour}", f"blend={blend}", f"smoothing={smoothing}", f"restore={restore}"]
    if restore == "on" and restorer and restorer.strip() not in ("", INSTALLED_RESTORER):
        overrides.append(f"restorer={state.allow.check(restorer.strip())}")  # a folder the page may read
    video = is_video_path(target)
    if video and preview_frames:
        overrides.append(f"preview={int(preview_frames)}")
    cfg = apply_overrides(SwapConfig(), overrides)
    if source_upload or (source_typed and source_typed.strip()):
        cfg.source = [state.media(source_upload, source_typed, "source photo", kinds=("photo",))]
    suffix = ".mp4" if video and not preview_frames else ".png"
    report = swap(model_dir, target, state.new_output("swaps", target.name, suffix), cfg, progress=False)
    out = report.output
    before = None if video else str(target)
    shown = out if not out.endswith(".mp4") else None
    slider = (before, shown) if before and shown else None
    return before, shown, slider, out, "\n".join(report.lines())


def model_needs(state: UiState, model: str) -> str:
    """What the chosen model takes, from its card: a source photo (identity-conditioned) or none."""
    from swaplab.models.card import read_card

    if not model or not model.strip():
        return ""
    card, _ = read_card(state.allow.check(model))
    conditions_on = (card.get("identity") or {}).get("conditions_on")
    name = (card.get("model") or {}).get("name") or card.get("family") or "model"
    if conditions_on:
        return f"{name}: swaps in the identity of a source photo (embedded by {conditions_on}); give one"
    return f"{name}: swaps in the identity it was trained on; no source photo"


def verify_file(state: UiState, upload: Any, typed: str) -> str:
    from swaplab.provenance import verify

    path = state.media(upload, typed, "file to check")
    report = verify(path)
    return f"{path.name}: {report.summary()}"


def report_frame(state: UiState, path: str) -> str:
    """An evaluation's ``report.html`` or a study's ``report/index.html``, shown in a frame."""
    page = state.allow.check(path)
    if page.is_dir():
        page = next((p for p in (page / "report.html", page / "report" / "index.html") if p.is_file()), page)
    if page.suffix.lower() != ".html" or not page.is_file():
        raise AccessError(f"{path}: not a report (an eval's report.html or a study's report/index.html)")
    src = html.escape(f"{FILE_ROUTE}{page}", quote=True)
    return f'<iframe id="report-frame" src="{src}" style="width:100%;height:720px;border:1px solid #ccc"></iframe>'


def polygon_faces(state: UiState, faceset: str) -> list[str]:
    """The face ids of a faceset, for the mask labelling picker."""
    from swaplab.facesets.format import Faceset

    ids = [record.id for record in Faceset(state.allow.check(faceset))]
    if not ids:
        raise LookupError(f"{faceset}: the faceset has no faces")
    return ids


def polygon_start(state: UiState, faceset: str, face_id: str) -> dict[str, Any]:
    """One face's polygons to edit: those of the faceset's polygons file, else its landmark hull
    (what ``swaplab faceset polygons`` starts from)."""
    from swaplab.faces.masks import face_hull_polygon
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import POLYGONS_FILE, read_mask_polygons

    root = state.allow.check(faceset)
    ids = [record.id for record in Faceset(root)]
    if face_id not in ids:
        raise LookupError(f"faceset {root} has no face {face_id!r}")
    saved = read_mask_polygons(root / POLYGONS_FILE).get(face_id) if (root / POLYGONS_FILE).is_file() else None
    if saved is not None:
        face, occluder = [p.tolist() for p in saved.face], [p.tolist() for p in saved.occluder]
    else:
        face, occluder = [face_hull_polygon(Faceset(root).landmarks(ids.index(face_id))).tolist()], []
    return {"faceset": str(root), "face_id": face_id, "index": ids.index(face_id), "size": Faceset(root).size,
            "face": face, "occluder": occluder, "points": []}  # fmt: skip


#: The labelling picture is drawn at least this many pixels wide (crops are enlarged by a whole factor).
POLYGON_VIEW_PX = 384


def polygon_view_scale(labels: dict[str, Any]) -> int:
    """How many screen pixels one crop pixel takes in the labelling picture."""
    return max(1, POLYGON_VIEW_PX // labels["size"])


def polygon_picture(labels: dict[str, Any]) -> Any:
    """The crop, enlarged, with its labels tinted (face green, occluder red) and the polygon being drawn."""
    import cv2
    import numpy as np

    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import FacePolygons, polygon_labels

    crop = Faceset(labels["faceset"]).image(labels["index"])
    scale = polygon_view_scale(labels)
    polygons = FacePolygons([np.asarray(p, np.float32) for p in labels["face"]],
                            [np.asarray(p, np.float32) for p in labels["occluder"]])  # fmt: skip
    big = cv2.resize(crop, (crop.shape[1] * scale, crop.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    label_map = polygon_labels(polygons, big.shape[0], scale=scale)
    tinted = big.astype(np.float32)
    for value, colour in ((1, (0, 200, 0)), (2, (230, 0, 0))):
        where = label_map == value
        tinted[where] = 0.6 * tinted[where] + 0.4 * np.asarray(colour, np.float32)
    picture = tinted.astype(np.uint8)
    points = ((np.asarray(labels["points"], np.float32).reshape(-1, 2) + 0.5) * scale - 0.5).round().astype(np.int32)
    if len(points) > 1:
        cv2.polylines(picture, [points], False, (255, 255, 0), 2, cv2.LINE_AA)
    for x, y in points:
        cv2.circle(picture, (int(x), int(y)), 4, (255, 255, 0), -1, cv2.LINE_AA)
    return picture


def polygon_save(labels: dict[str, Any]) -> str:
    import numpy as np

    from swaplab.facesets.mask_polygons import POLYGONS_FILE, FacePolygons, update_mask_polygons

    polygons = FacePolygons([np.asarray(p, np.float32) for p in labels["face"]],
                            [np.asarray(p, np.float32) for p in labels["occluder"]])  # fmt: skip
    path = update_mask_polygons(Path(labels["faceset"]) / POLYGONS_FILE, labels["face_id"], polygons)
    return (f"saved {len(polygons.face)} face and {len(polygons.occluder)} occluder polygon(s) of "
            f"{labels['face_id']} to {path} (segmenter training reads it)")  # fmt: skip


# ---------------------------------------------------------------- the page


def _reports(state: UiState) -> list[str]:
    """Evaluation reports (``report.html``) and study reports (``report/index.html``) in the allowed folders."""
    studies = [str(Path(p).parent) for p in state.allow.find("index.html") if Path(p).name == "report"]
    return state.allow.find("report.html") + studies


def build_blocks(state: UiState) -> Any:
    limit = state.uploads.limit_text
    roots = ", ".join(str(r) for r in state.allow.roots)
    media_types = ["image", "video"]

    def errors(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _one_line_errors(fn)

    with gr.Blocks(title="swaplab", analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
        gr.Markdown(
            f"## swaplab\nAllowed folders: `{roots}`. Uploads up to {limit} (photos and videos only). "
            f"Results go to `{state.output}`; every output is marked as synthetic."
        )
        with gr.Tab("Extract"):
            with gr.Row():
                ex_files = gr.File(
                    label=f"photos or videos (up to {limit} each)",
                    file_count="multiple",
                    file_types=media_types,
                    elem_id="extract-files",
                )
                with gr.Column():
                    ex_typed = gr.Textbox(label="or paths on disk (one per line)", lines=3, elem_id="extract-paths")
                    ex_out = gr.Textbox(label="faceset folder", elem_id="extract-output")
                    ex_size = gr.Dropdown(
                        ["64", "128", "256", "512"], value="256", label="crop size (px)", elem_id="extract-size"
                    )
                    ex_go = gr.Button("Extract", variant="primary", elem_id="extract-go")
            with gr.Row():
                ex_summary = gr.Textbox(label="summary", lines=6, elem_id="extract-summary")
                ex_sheet = gr.Image(label="contact sheet", type="filepath", elem_id="extract-sheet")

            def on_extract(files, typed, out, size, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
                return extract_faces(state, files, typed, out, size, progress)

            ex_go.click(
                errors(on_extract), [ex_files, ex_typed, ex_out, ex_size], [ex_summary, ex_sheet], api_name="extract"
            )

        with gr.Tab("Train"):
            models = _pair_model_presets()
            trainers = _trainer_presets()
            with gr.Row():
                with gr.Column():
                    tr_model = gr.Dropdown(models, value="liae-cpu" if "liae-cpu" in models else models[0],
                                           label="model preset", elem_id="train-model")  # fmt: skip
                    tr_trainer = gr.Dropdown(trainers, value="cpu-quick" if "cpu-quick" in trainers else trainers[0],
                                             label="trainer preset", elem_id="train-trainer")  # fmt: skip
                    tr_src = gr.Textbox(label="source faceset (the face that goes in)", elem_id="train-src")
                    tr_dst = gr.Textbox(label="target faceset (the faces it replaces)", elem_id="train-dst")
                    tr_run = gr.Textbox(label="run folder (an existing one resumes)", elem_id="train-run")
                    with gr.Row():
                        tr_steps = gr.Number(0, precision=0, minimum=0, label="steps (0: the preset's)",
                                             elem_id="train-steps")  # fmt: skip
                        tr_every = gr.Number(0, precision=0, minimum=0, label="preview every N steps (0: the preset's)",
                                             elem_id="train-preview-every")  # fmt: skip
                    with gr.Row():
                        tr_start = gr.Button("Start / resume", variant="primary", elem_id="train-start")
                        tr_stop = gr.Button("Stop", elem_id="train-stop")
                        tr_export = gr.Button("Export model", elem_id="train-export")
                    tr_status = gr.Textbox(label="job", elem_id="train-status")
                with gr.Column():
                    tr_preview = gr.Image(label="latest preview", type="filepath", elem_id="train-preview")
                    tr_curve = gr.LinePlot(x="step", y="loss", label="loss", elem_id="train-curve")
                    tr_watch = gr.Textbox(label="run", elem_id="train-watch")
            inputs = [tr_model, tr_trainer, tr_src, tr_dst, tr_run, tr_steps, tr_every]
            tr_start.click(errors(lambda *a: start_training(state, *a)), inputs, tr_status, api_name="train_start")
            tr_stop.click(errors(lambda run: stop_training(state, run)), tr_run, tr_status, api_name="train_stop")
            tr_export.click(errors(lambda run: export_run(state, run)), tr_run, tr_status, api_name="export")
            timer = gr.Timer(REFRESH_S)
            timer.tick(
                lambda run: watch_training(state, run),
                tr_run,
                [tr_watch, tr_preview, tr_curve],
                api_name="watch",
                show_progress="hidden",
            )

        with gr.Tab("Swap") as swap_tab:
            with gr.Row():
                with gr.Column():
                    sw_model = gr.Dropdown(exported_folders(state, "swapper"), label="exported model folder",
                                           allow_custom_value=True, elem_id="swap-model")  # fmt: skip
                    sw_needs = gr.Markdown(elem_id="swap-model-needs")
                    sw_target = gr.File(label=f"target photo or video (up to {limit})", file_types=media_types,
                                        elem_id="swap-target")  # fmt: skip
                    sw_target_typed = gr.Textbox(label="or its path on disk", elem_id="swap-target-path")
                    sw_source = gr.File(label="source photo (one-shot models only)", file_types=["image"],
                                        elem_id="swap-source")  # fmt: skip
                    sw_source_typed = gr.Textbox(label="or its path on disk", elem_id="swap-source-path")
                with gr.Column():
                    sw_mask = gr.Dropdown(_names("masks"), value="intersection", label="mask", elem_id="swap-mask")
                    sw_colour = gr.Dropdown(_names("colour"), value="rct", label="colour", elem_id="swap-colour")
                    sw_blend = gr.Dropdown(_names("blend"), value="alpha", label="blend", elem_id="swap-blend")
                    sw_smooth = gr.Dropdown(_names("smoothing"), value="one_euro", label="smoothing (video)")
                    sw_restore = gr.Dropdown(["off", "on"], value="off", label="restore (needs the face restorer)",
                                             elem_id="swap-restore")  # fmt: skip
                    sw_restorer = gr.Dropdown([INSTALLED_RESTORER, *exported_folders(state, "face-restorer")],
                                              value=INSTALLED_RESTORER, allow_custom_value=True,
                                              label="restorer, with restore on: the installed one or a build's folder "
                                              "(e.g. one personal to the source)", elem_id="swap-restorer")  # fmt: skip
                    sw_preview = gr.Number(0, precision=0, minimum=0, label="video: preview strip of N frames (0: all)",
                                           elem_id="swap-preview-frames")  # fmt: skip
                    sw_go = gr.Button("Swap", variant="primary", elem_id="swap-go")
            with gr.Row():
                sw_before = gr.Image(label="before", type="filepath", elem_id="swap-before")
                sw_after = gr.Image(label="after (marked)", type="filepath", elem_id="swap-after")
            sw_slider = gr.ImageSlider(label="before | after: drag the handle", type="filepath", elem_id="swap-slider")
            sw_download = gr.File(label="download the marked result", elem_id="swap-download")
            sw_report = gr.Textbox(label="report", lines=4, elem_id="swap-report")
            # Models exported since the page was built appear when the tab is opened again.
            swap_tab.select(
                lambda: (gr.Dropdown(choices=exported_folders(state, "swapper")),
                         gr.Dropdown(choices=[INSTALLED_RESTORER, *exported_folders(state, "face-restorer")])),
                None,
                [sw_model, sw_restorer],
            )  # fmt: skip
            sw_model.change(errors(lambda m: model_needs(state, m)), sw_model, sw_needs)
            sw_go.click(
                errors(lambda *a: swap_media(state, *a)),
                [sw_model, sw_target, sw_target_typed, sw_source, sw_source_typed, sw_mask, sw_colour, sw_blend,
                 sw_smooth, sw_restore, sw_restorer, sw_preview],
                [sw_before, sw_after, sw_slider, sw_download, sw_report],
                api_name="swap",
            )  # fmt: skip

        with gr.Tab("Verify"):
            vf_file = gr.File(label=f"photo or video to check (up to {limit})", file_types=media_types,
                              elem_id="verify-file")  # fmt: skip
            vf_typed = gr.Textbox(label="or its path on disk", elem_id="verify-path")
            vf_go = gr.Button("Check the mark", variant="primary", elem_id="verify-go")
            vf_out = gr.Textbox(label="verdict", elem_id="verify-result")
            vf_go.click(errors(lambda f, t: verify_file(state, f, t)), [vf_file, vf_typed], vf_out, api_name="verify")

        with gr.Tab("Reports") as reports_tab:
            rp_path = gr.Dropdown(_reports(state), label="evaluation or study report (folder or .html)",
                                  allow_custom_value=True, elem_id="report-path")  # fmt: skip
            rp_go = gr.Button("Open", variant="primary", elem_id="report-go")
            rp_view = gr.HTML(elem_id="report-view")
            reports_tab.select(lambda: gr.Dropdown(choices=_reports(state)), None, rp_path)
            rp_go.click(errors(lambda p: report_frame(state, p)), rp_path, rp_view, api_name="report")

        with gr.Tab("Masks"):
            gr.Markdown(
                "Correct the face segmenter's labels (docs/masks.md): pick a face, click points on the crop to "
                "draw a polygon, close it as face or occluder (hands, glasses, microphones), save. Face polygons "
                "are filled first, occluders over them."
            )
            labels = gr.State(None)
            with gr.Row():
                with gr.Column():
                    pg_faceset = gr.Textbox(label="faceset folder", elem_id="poly-faceset")
                    pg_load = gr.Button("Load faces", elem_id="poly-load")
                    pg_face = gr.Dropdown([], label="face", elem_id="poly-face")
                    pg_kind = gr.Radio(["face", "occluder"], value="occluder", label="close the polygon as",
                                       elem_id="poly-kind")  # fmt: skip
                    with gr.Row():
                        pg_close = gr.Button("Close polygon", elem_id="poly-close")
                        pg_undo = gr.Button("Undo point", elem_id="poly-undo")
                        pg_reset = gr.Button("Reload (saved, else the landmark hull)", elem_id="poly-reset")
                    pg_save = gr.Button("Save", variant="primary", elem_id="poly-save")
                    pg_status = gr.Textbox(label="status", elem_id="poly-status")
                pg_picture = gr.Image(label="click to add points", type="numpy", interactive=False,
                                      elem_id="poly-picture")  # fmt: skip

            def on_load(faceset):
                ids = polygon_faces(state, faceset)
                return gr.Dropdown(choices=ids, value=ids[0])

            # The page keeps only the token of the face being labelled; the labels live in state.labelling.
            def on_face(faceset, face_id):
                if not face_id:
                    return None, None
                started = polygon_start(state, faceset, face_id)
                return state.labelling.start(started), polygon_picture(started)

            def on_click(token, evt: gr.SelectData):
                def add(labels):
                    scale = polygon_view_scale(labels)  # the picture's pixels -> the crop's
                    point = [(float(evt.index[0]) + 0.5) / scale - 0.5, (float(evt.index[1]) + 0.5) / scale - 0.5]
                    return {**labels, "points": [*labels["points"], point]}

                return token, polygon_picture(state.labelling.change(token, add))

            def on_close(token, kind):
                def close(labels):
                    if len(labels["points"]) < 3:
                        raise ValueError("a polygon needs at least 3 points: click on the crop to add them")
                    return {**labels, kind: [*labels[kind], labels["points"]], "points": []}

                return token, polygon_picture(state.labelling.change(token, close))

            def on_undo(token):
                undone = state.labelling.change(token, lambda labels: {**labels, "points": labels["points"][:-1]})
                return token, polygon_picture(undone)

            def on_save(token):
                return polygon_save(state.labelling.get(token))

            pg_load.click(errors(on_load), pg_faceset, pg_face)
            # Every click queues ("multiple": none is dropped while one is handled) and the labelling
            # events share one concurrency group of one, so they run in the order they were made; no
            # progress overlay covers the picture while one runs, which would swallow the next click.
            one_by_one = {"trigger_mode": "multiple", "concurrency_id": "labelling", "concurrency_limit": 1,
                          "show_progress": "hidden"}  # fmt: skip
            pg_face.change(errors(on_face), [pg_faceset, pg_face], [labels, pg_picture], **one_by_one)
            pg_reset.click(errors(on_face), [pg_faceset, pg_face], [labels, pg_picture], **one_by_one)
            pg_picture.select(errors(on_click), labels, [labels, pg_picture], **one_by_one)
            pg_close.click(errors(on_close), [labels, pg_kind], [labels, pg_picture], **one_by_one)
            pg_undo.click(errors(on_undo), labels, [labels, pg_picture], **one_by_one)
            pg_save.click(errors(on_save), labels, pg_status, api_name="save_polygons", **one_by_one)
    return blocks


def build_app(settings: UiSettings) -> tuple[Any, UiState]:
    """The FastAPI application serving the page, and the state it holds (``state.close()`` ends it)."""
    state = UiState.create(settings)
    os.environ["GRADIO_TEMP_DIR"] = str(state.uploads.root / "server")  # the server's copies go with ours
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse

    app = FastAPI()

    @app.get(FILE_ROUTE + "/{path:path}")
    def report_file(path: str) -> FileResponse:
        try:
            resolved = state.allow.check("/" + path.lstrip("/"))
        except AccessError as err:
            raise HTTPException(status_code=403, detail=str(err)) from None
        if not resolved.is_file():
            raise HTTPException(status_code=404, detail="not a file")
        # Sandboxed: a page from an allowed folder is shown, never run (no scripts, its own origin).
        return FileResponse(
            resolved, headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
        )

    blocks = build_blocks(state)
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        server_name=settings.host,
        server_port=settings.port,
        run_history=False,
        allowed_paths=[str(r) for r in state.allow.roots] + [str(state.uploads.root)],
        max_file_size=int(settings.max_upload_mb * 1024 * 1024),
        ssr_mode=False,
        footer_links=[],
    )
    return app, state


def serve(settings: UiSettings) -> None:
    """Run the app until Ctrl-C; running training jobs stop with a checkpoint."""
    import uvicorn

    app, state = build_app(settings)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {settings.host} lets other machines use this app, which has no login", flush=True)
    print(f"swaplab ui: http://{settings.host}:{settings.port}/ (Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        state.close()

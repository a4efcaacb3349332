"""The web app (``swaplab ui``): its guards without a browser, then the workflow in headless Chromium.

The browser tests start one app for the module (in this process, on a free port, allowed to use a
temporary folder and the LFW photos) and drive Debian's ``chromium`` with Playwright: extract a
faceset, train a tiny run and see its preview, swap a photo and download it, check its mark, open
a study report, and the refusals (a path outside the allowed folders, an oversized or non-media
upload, a second job on one run). Screenshots are kept under the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swaplab.io.locks import BusyError, exclusive
from swaplab.ui.access import AccessError, AllowList, Uploads

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Gradio's queue uses pandas options that pandas 3 deprecates: its own business, not the app's.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

#: Debian's chromium (``.ci/run`` installs it when missing), or the browser ``$SWAPLAB_CHROMIUM`` names.
CHROMIUM = os.environ.get("SWAPLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TINY_MODEL = ["model.ae_dims=32", "model.e_dims=8", "model.d_dims=8", "model.d_mask_dims=4"]


# ---------------------------------------------------------------- guards (no browser)


def test_allow_list_refuses_paths_outside_and_links_out(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir(), outside.mkdir()
    (outside / "secret.txt").write_text("x")
    (inside / "photo.jpg").write_text("x")
    (inside / "link").symlink_to(outside)
    allow = AllowList.of([inside])
    assert allow.check(inside / "photo.jpg") == (inside / "photo.jpg").resolve()
    assert allow.check("photo.jpg") == (inside / "photo.jpg").resolve()  # relative: from the first folder
    for bad in (outside / "secret.txt", inside / "link" / "secret.txt", inside / ".." / "outside" / "secret.txt"):
        with pytest.raises(AccessError, match="outside the allowed folders"):
            allow.check(bad)
    with pytest.raises(AccessError, match="no such file"):
        allow.check(inside / "missing.jpg")
    assert allow.check(inside / "new-faceset", must_exist=False) == (inside / "new-faceset").resolve()


def _photo(path: Path, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_uploads_keep_media_and_refuse_the_rest(tmp_path: Path) -> None:
    uploads = Uploads(max_bytes=50_000, root=tmp_path / "uploads")
    uploads.root.mkdir()
    kept = uploads.accept(_photo(tmp_path / "face.png"))
    assert kept.is_file() and kept.is_relative_to(uploads.root) and Image.open(kept).size == (64, 64)
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(AccessError, match="notes.txt: not a photo or video"):
        uploads.accept(text)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"plain text in a photo's name")
    with pytest.raises(AccessError, match="fake.jpg: not a readable photo"):
        uploads.accept(fake)
    big = _photo(tmp_path / "big.png", size=400)
    with pytest.raises(AccessError, match="over the upload limit of 0.0476837 MB"):
        uploads.accept(big)
    assert not text.exists() and not fake.exists() and not big.exists()  # refused uploads are deleted
    uploads.close()
    assert not uploads.root.exists()


def test_polygons_of_one_face_are_set_and_the_others_kept(tmp_path: Path) -> None:
    from swaplab.facesets.mask_polygons import FacePolygons, read_mask_polygons, update_mask_polygons

    path = tmp_path / "mask_polygons.json"
    square = np.array([[1, 1], [9, 1], [9, 9], [1, 9]], np.float32)
    update_mask_polygons(path, "a", FacePolygons([square], []))
    update_mask_polygons(path, "b", FacePolygons([square * 2], [square + 0.25]))
    update_mask_polygons(path, "a", FacePolygons([square + 1], []))
    faces = read_mask_polygons(path)
    assert sorted(faces) == ["a", "b"]
    np.testing.assert_allclose(faces["a"].face[0], square + 1)
    np.testing.assert_allclose(faces["b"].occluder[0], square + 0.25, atol=0.051)  # stored to 0.1 px
    with pytest.raises(ValueError, match="at least 3 finite"):
        update_mask_polygons(path, "c", FacePolygons([square[:2]], []))
    assert sorted(read_mask_polygons(path)) == ["a", "b"]  # a refused polygon leaves the file as it was


def test_labelling_keeps_each_faces_labels_on_the_server_and_refuses_what_it_does_not_hold() -> None:
    from swaplab.ui.access import AccessError
    from swaplab.ui.app import Labelling

    labelling = Labelling()
    token = labelling.start({"points": [], "face": [], "occluder": []})
    for x in range(4):  # each change sees the last one's result, whatever the page sent with it
        labelling.change(token, lambda labels, x=x: {**labels, "points": [*labels["points"], [x, x]]})
    assert labelling.get(token)["points"] == [[0, 0], [1, 1], [2, 2], [3, 3]]

    def refuse(labels):
        raise ValueError("a polygon needs at least 3 points")

    with pytest.raises(ValueError, match="3 points"):
        labelling.change(token, refuse)
    assert len(labelling.get(token)["points"]) == 4  # a refused change changes nothing
    for unknown in (None, "", "not-a-token"):
        with pytest.raises(AccessError, match="pick a face first"):
            labelling.change(unknown, lambda labels: labels)
    assert labelling.get(labelling.start({"points": [[9, 9]]}))["points"] == [[9, 9]]  # faces apart
    few = Labelling(keep=2)
    tokens = [few.start({"points": [[i, i]]}) for i in range(3)]
    with pytest.raises(AccessError):  # the oldest face is let go once more are held
        few.get(tokens[0])
    assert few.get(tokens[2])["points"] == [[2, 2]]


def test_job_manager_refuses_a_run_that_another_process_trains(tmp_path: Path) -> None:
    from swaplab.ui.jobs import JobManager

    manager = JobManager(tmp_path)
    run = tmp_path / "run"
    with exclusive(run / ".lock", f"run {run.resolve()}"):  # as a `swaplab train` elsewhere holds it
        with pytest.raises(BusyError, match="is in use by"):
            manager.start(run, ["model=liae-cpu"])
    assert manager.jobs == {}


# ---------------------------------------------------------------- the app in a browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not Path(CHROMIUM).is_file():
        pytest.skip("no browser: install Debian's chromium (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(browser, one_thread_module, tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """The app on a free port (only once a browser is found), allowed a work folder, the LFW photos and the
    sample videos; uploads limited to 1 MB."""
    import uvicorn

    from swaplab.ui.app import UiSettings, build_app

    work = tmp_path_factory.mktemp("ui-work")
    lfw = shared_data / "lfw" / "lfw-deepfunneled"
    port = _free_port()
    videos = shared_data / "videos"
    settings = UiSettings(allow=[str(work), str(lfw), str(videos)], port=port, max_upload_mb=1.0)
    fastapi_app, state = build_app(settings)
    server = uvicorn.Server(uvicorn.Config(fastapi_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    assert server.started, "the app did not start"
    shots = work / "screenshots"
    shots.mkdir()
    yield {
        "url": f"http://127.0.0.1:{port}/",
        "work": work,
        "lfw": lfw,
        "videos": videos,
        "state": state,
        "shots": shots,
    }
    server.should_exit = True
    thread.join(10)
    state.close()


@pytest.fixture(scope="module")
def page(app, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(app["url"])
    page.wait_for_selector("#extract-go", timeout=60_000)
    yield page
    context.close()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(str(text))


def _choose(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    page.locator("ul[role=listbox] li", has_text=value).filter(has_text=value).first.wait_for(timeout=10_000)
    page.get_by_role("option", name=value, exact=True).click()


def _value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _wait_value(page, elem_id: str, contains: str, timeout_s: float = 120) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = _value(page, elem_id)
        if contains in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"#{elem_id} never showed {contains!r}; it shows {_value(page, elem_id)!r}")


def _error_toast(page, contains: str) -> str:
    toast = page.locator(".toast-body", has_text=contains).first
    toast.wait_for(timeout=30_000)
    text = toast.inner_text()
    page.locator(".toast-close").first.click()
    return text


def _image_pixels(page, elem_id: str, path: Path) -> np.ndarray:
    page.locator(f"#{elem_id} img").first.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB"))


def _lfw(app, person: str, count: int, offset: int = 0) -> list[Path]:
    return sorted((app["lfw"] / person).glob("*.jpg"))[offset : offset + count]


@pytest.mark.slow
def test_extract_uploads_and_paths_with_a_contact_sheet(app, page) -> None:
    photos = _lfw(app, "George_W_Bush", 10)
    _tab(page, "Extract")
    page.locator("#extract-files input[type=file]").set_input_files([str(p) for p in photos[:2]])
    _fill(page, "extract-paths", "\n".join(str(p) for p in photos[2:]))
    _fill(page, "extract-output", str(app["work"] / "faces" / "bush"))
    _choose(page, "extract-size", "128")
    page.locator("#extract-go").click()
    summary = _wait_value(page, "extract-summary", "faces", timeout_s=180)
    page.locator("#extract-sheet img").first.wait_for(timeout=30_000)
    page.screenshot(path=str(app["shots"] / "extract.png"), full_page=True)
    from swaplab.facesets.format import Faceset

    faces = len(Faceset(app["work"] / "faces" / "bush"))
    assert faces >= 8, summary
    assert (app["work"] / "faces" / "bush" / "contact_sheet.jpg").is_file()


@pytest.fixture(scope="module")
def powell_faceset(app) -> Path:
    """The second side of the pair, extracted by the library call the Extract tab makes."""
    from swaplab.facesets.extract import ExtractConfig, extract

    out = app["work"] / "faces" / "powell"
    cfg = ExtractConfig(size=128)
    cfg.faces.max_faces = 1
    extract(_lfw(app, "Colin_Powell", 10), out, cfg, progress=False)
    return out


def _run_dir(app) -> Path:
    return app["work"] / "study" / "bush-to-powell"


@pytest.mark.slow
def test_training_starts_refuses_a_second_job_shows_a_preview_stops_and_resumes(app, page, powell_faceset) -> None:
    run = _run_dir(app)
    _tab(page, "Train")
    _choose(page, "train-model", "liae-cpu")
    _choose(page, "train-trainer", "test")
    _fill(page, "train-src", powell_faceset)
    _fill(page, "train-dst", app["work"] / "faces" / "bush")
    _fill(page, "train-run", run)
    _fill(page, "train-steps", 400)  # far more than it will run: the Stop button ends it
    _fill(page, "train-preview-every", 2)
    page.locator("#train-start").click()
    _wait_value(page, "train-status", "job 1: running", timeout_s=30)
    page.locator("#train-start").click()  # the same run again, while the first job trains it
    assert "is in use by training job 1" in _error_toast(page, "is in use by")
    _wait_value(page, "train-watch", "job 1: running", timeout_s=30)
    deadline = time.time() + 240
    while not (run / "previews" / "latest.png").is_file() and time.time() < deadline:
        time.sleep(1)
    assert (run / "previews" / "latest.png").is_file(), "no preview was written"
    page.locator("#train-preview img").first.wait_for(timeout=30_000)

    page.reload()  # the job belongs to the server, not the page
    page.wait_for_selector("#extract-go", timeout=60_000)
    _tab(page, "Train")
    _fill(page, "train-run", run)
    _wait_value(page, "train-watch", "job 1: running", timeout_s=30)
    page.locator("#train-preview img").first.wait_for(timeout=30_000)
    page.locator("#train-curve canvas, #train-curve svg").first.wait_for(timeout=30_000)
    page.screenshot(path=str(app["shots"] / "training.png"), full_page=True)
    pixels = _image_pixels(page, "train-preview", app["shots"] / "training-preview.png")
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 10, "the preview image is blank"

    page.locator("#train-stop").click()
    stopped = _wait_value(page, "train-watch", "stopped at step", timeout_s=180)
    step = int(stopped.split("stopped at step ")[1].split()[0])
    assert 2 <= step < 400
    _fill(page, "train-steps", step + 2)
    page.locator("#train-start").click()  # resumes from the checkpoint
    _wait_value(page, "train-watch", f"job 2: finished at step {step + 2}", timeout_s=180)
    page.locator("#train-export").click()
    exported = _wait_value(page, "train-status", "exported: ", timeout_s=120)
    model = Path(exported.split("exported: ")[1].strip())
    assert (model / "model.json").is_file() and model.is_relative_to(app["work"])
    app["model"] = model


@pytest.mark.slow
def test_swap_a_photo_side_by_side_download_and_verify_its_mark(app, page, powell_faceset) -> None:
    if "model" not in app:
        pytest.skip("needs the model exported by the training test")
    from swaplab.provenance import verify
    from swaplab.train.built_networks import build_network
    from swaplab.ui.access import AccessError
    from swaplab.ui.app import swap_media

    target = _lfw(app, "George_W_Bush", 1, offset=20)[0]
    # A built restorer in a folder of its own (as a personal build's --out), offered once the tab opens.
    restorer = build_network("face-restorer", "test", [f"data.facesets=[{powell_faceset}]"], progress=False,
                             out=app["work"] / "restorer")  # fmt: skip
    _tab(page, "Swap")
    box = page.locator("#swap-model input").first
    box.fill(str(app["model"]))
    box.press("Enter")
    page.locator("#swap-model-needs", has_text="the identity it was trained on; no source photo").wait_for()
    page.locator("#swap-target input[type=file]").set_input_files(str(target))
    _choose(page, "swap-colour", "lct")
    page.locator("#swap-go").click()
    _wait_value(page, "swap-report", "faces swapped", timeout_s=120)
    page.locator("#swap-after img").first.wait_for(timeout=30_000)
    page.locator("#swap-before img").first.wait_for(timeout=30_000)
    assert page.locator("#swap-slider img").count() == 2  # the same pair under the before | after slider
    page.screenshot(path=str(app["shots"] / "swap.png"), full_page=True)
    with page.expect_download() as info:
        page.locator("#swap-download a").first.click()
    downloaded = app["work"] / "downloaded.png"
    info.value.save_as(downloaded)
    assert verify(downloaded).synthetic

    # Restored by the restorer picked from its folder: the sidecar names its weights by hash.
    _choose(page, "swap-restore", "on")
    _choose(page, "swap-restorer", str(restorer.parent.resolve()))
    page.locator("#swap-go").click()
    report = _wait_value(page, "swap-report", "restore ", timeout_s=120)  # the restore stage's time
    out = Path(report.split("wrote ")[1].split()[0])
    used = json.loads(out.with_name(out.name + ".swaplab.json").read_text())["networks"]
    assert used["face-restorer"]["path"] == str(restorer.resolve())
    with pytest.raises(AccessError):  # a restorer outside the allowed folders is refused, as every path
        swap_media(app["state"], str(app["model"]), None, str(target), None, "", "intersection", "rct", "alpha",
                   "none", "on", "/etc", 0)  # fmt: skip
    _choose(page, "swap-restore", "off")

    # A video: a short strip of target | swap pairs before committing to the whole clip.
    page.locator("#swap-target button[aria-label='Clear']").first.click()
    _fill(page, "swap-target-path", app["videos"] / "hdtf_sadtalker" / "WDA_KatieHill_000.mp4")
    _fill(page, "swap-preview-frames", 3)
    page.locator("#swap-go").click()
    report = _wait_value(page, "swap-report", "WDA_KatieHill_000", timeout_s=120)
    strip = Path(report.split("wrote ")[1].split()[0])
    assert strip.suffix == ".png" and verify(strip).synthetic
    width, height = Image.open(strip).size
    assert height == 3 * 256 and width == 2 * 256  # three target | swap rows of the square clip
    page.locator("#swap-after img").first.wait_for(timeout=30_000)

    _tab(page, "Verify")
    page.locator("#verify-file input[type=file]").set_input_files(str(downloaded))
    page.locator("#verify-go").click()
    assert "SYNTHETIC" in _wait_value(page, "verify-result", "SYNTHETIC", timeout_s=60)
    page.locator("#verify-file button[aria-label='Clear']").first.click()
    _fill(page, "verify-path", target)  # an unswapped photo, by path
    page.locator("#verify-go").click()
    assert "no swaplab mark found" in _wait_value(page, "verify-result", "no swaplab mark", timeout_s=60)


@pytest.mark.slow
def test_a_study_report_opens_in_the_page(app, page) -> None:
    if not (_run_dir(app) / "metrics.jsonl").is_file():
        pytest.skip("needs the run trained by the training test")
    from swaplab.study.report import write_study_report

    report = write_study_report(_run_dir(app).parent)
    _tab(page, "Reports")
    box = page.locator("#report-path input").first
    box.fill(str(report))
    box.press("Enter")
    page.locator("#report-go").click()
    frame = page.frame_locator("#report-frame")
    frame.locator("h1").first.wait_for(timeout=30_000)
    figure = frame.locator("img").first
    figure.wait_for(timeout=30_000)
    deadline = time.time() + 60  # shown before its bytes arrive on a loaded machine
    while not figure.evaluate("img => img.complete && img.naturalWidth > 0") and time.time() < deadline:
        time.sleep(0.5)
    assert figure.evaluate("img => img.complete && img.naturalWidth > 0"), "the report's figure did not load"
    served = page.request.get(app["url"] + "swaplab-file" + str(report))
    assert served.status == 200 and served.headers["content-security-policy"] == "sandbox"  # shown, never run
    page.screenshot(path=str(app["shots"] / "report.png"), full_page=True)


@pytest.mark.slow  # the module's app and browser take about 10 s to start
def test_refusals_outside_paths_oversized_and_non_media_uploads(app, page) -> None:
    _tab(page, "Verify")
    _fill(page, "verify-path", "/etc/passwd")
    page.locator("#verify-go").click()
    assert "outside the allowed folders" in _error_toast(page, "outside the allowed folders")
    assert page.request.get(app["url"] + "swaplab-file/etc/passwd").status == 403
    _fill(page, "verify-path", "")

    notes = app["work"] / "notes.txt"
    notes.write_text("not a photo")
    page.locator("#verify-file input[type=file]").set_input_files(str(notes))  # refused by its type at upload
    assert "Invalid file type: notes.txt" in _error_toast(page, "Invalid file type")
    fake = app["work"] / "fake.jpg"
    fake.write_text("plain text under a photo's name")
    page.locator("#verify-file input[type=file]").set_input_files(str(fake))  # refused by its content
    page.locator("#verify-go").click()
    assert "fake.jpg: not a readable photo" in _error_toast(page, "not a readable photo")
    page.locator("#verify-file button[aria-label='Clear']").first.click()

    big = _photo(app["work"] / "big.png", size=800)  # about 1.9 MB of noise; the limit is 1 MB
    assert big.stat().st_size > 1024 * 1024
    page.locator("#verify-file input[type=file]").set_input_files(str(big))
    assert "exceed the maximum allowed size of 1.0 Mb" in _error_toast(page, "exceed the maximum")
    # The server refuses it too, when a client skips the page's own check.
    payload = {"files": {"name": "big.png", "mimeType": "image/png", "buffer": big.read_bytes()}}
    assert page.request.post(app["url"] + "gradio_api/upload", multipart=payload).status == 413
    assert not list(app["state"].uploads.root.rglob("big.png"))


def test_a_failed_job_reports_one_line(tmp_path: Path) -> None:
    from swaplab.ui.jobs import JobManager

    empty = tmp_path / "empty"
    empty.mkdir()
    manager = JobManager(tmp_path)
    job = manager.start(tmp_path / "run", ["model=liae-cpu", "trainer=test", f"data.src={empty}", f"data.dst={empty}"])
    job.process.join(120)
    state = job.state_line()
    assert state.startswith("failed: ") and "\n" not in state and "Traceback" not in state, state
    assert str(empty) in state  # it names what is wrong


@pytest.mark.slow
def test_label_an_occluder_polygon_on_a_face(app, page) -> None:
    faceset = app["work"] / "faces" / "bush"
    if not (faceset / "shards").is_dir():
        pytest.skip("needs the faceset extracted by the extraction test")
    from swaplab.facesets.format import Faceset
    from swaplab.facesets.mask_polygons import read_mask_polygons

    first = Faceset(faceset).records[0].id
    _tab(page, "Masks")
    _fill(page, "poly-faceset", faceset)
    page.locator("#poly-load").click()
    picture = page.locator("#poly-picture img").first
    picture.wait_for(timeout=30_000)
    time.sleep(1)  # the picture's layout settles before its clicks are measured
    # Where the crop is drawn inside the element (scaled to fit, centred).
    natural_w, natural_h, shown_w, shown_h = picture.evaluate(
        "img => [img.naturalWidth, img.naturalHeight, img.clientWidth, img.clientHeight]"
    )
    scale = min(shown_w / natural_w, shown_h / natural_h)
    left, top = (shown_w - natural_w * scale) / 2, (shown_h - natural_h * scale) / 2
    corners = [(0.3, 0.6), (0.7, 0.6), (0.7, 0.9), (0.3, 0.9)]  # a microphone in front of the chin
    for fx, fy in corners:
        before = picture.get_attribute("src")
        picture.click(position={"x": left + fx * natural_w * scale, "y": top + fy * natural_h * scale})
        # Redrawn with the point before the next click: the page replaces the picture, and a click
        # while it does can miss it; a loaded machine can take seconds to redraw.
        deadline = time.time() + 90
        while picture.get_attribute("src") == before and time.time() < deadline:
            time.sleep(0.2)
        assert picture.get_attribute("src") != before, "the picture was not redrawn after a click"
    page.get_by_label("occluder").check()
    page.locator("#poly-close").click()  # queued behind the clicks: the labelling events run in order
    page.locator("#poly-save").click()
    _wait_value(page, "poly-status", "saved 1 face and 1 occluder polygon(s)", timeout_s=30)
    page.screenshot(path=str(app["shots"] / "masks.png"), full_page=True)
    saved = read_mask_polygons(faceset)[first]
    assert len(saved.face) == 1 and len(saved.occluder) == 1  # the landmark hull kept, the occluder added
    size = Faceset(faceset).size
    drawn = saved.occluder[0] / size  # crop pixels, as fractions of the crop
    assert drawn.shape == (4, 2)
    np.testing.assert_allclose(drawn, np.asarray(corners), atol=0.06)

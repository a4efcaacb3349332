"""The web app (``swaplab ui``): its guards without a browser, then the workflow in headless Chromium.

The browser tests start one app for the module (in this process, on a free port, allowed to use a
temporary folder and the LFW photos) and drive Debian's ``chromium`` with Playwright: extract a
faceset, train a tiny run and see its preview, swap a photo and download it, check its mark, open
a study report, and the refusals (a path outside the allowed folders, an oversized or non-media
upload, a second job on one run). Screenshots are kept under the test's temporary folder.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swaplab.io.locks import BusyError, exclusive
from swaplab.ui.access import AccessError, AllowList, Uploads

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = Path("/usr/bin/chromium")
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
    if not CHROMIUM.is_file():
        pytest.skip("no browser: install Debian's chromium (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(one_thread_module, tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """The app on a free port, allowed a work folder and the LFW photos; uploads limited to 1 MB."""
    import uvicorn

    from swaplab.ui.app import UiSettings, build_app

    work = tmp_path_factory.mktemp("ui-work")
    lfw = shared_data / "lfw" / "lfw-deepfunneled"
    port = _free_port()
    settings = UiSettings(allow=[str(work), str(lfw)], port=port, max_upload_mb=1.0)
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
    yield {"url": f"http://127.0.0.1:{port}/", "work": work, "lfw": lfw, "state": state, "shots": shots}
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

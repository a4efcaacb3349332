"""What the browser may touch: folders allowed at start-up, and uploads that are media and small.

A path typed in the page is resolved (symlinks followed, ``..`` collapsed) and refused unless it
lies inside one of the allowed folders, so a link inside an allowed folder cannot reach out of it.
An upload is refused above the stated size limit and unless it decodes as a photo or a video; an
accepted one is copied atomically into the app's own upload folder (removed when the app stops)
and a refused one is deleted at once (the web server's own copies live in the same temporary
folder, so they go too).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from swaplab.io.atomic import atomic_path
from swaplab.io.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, read_image
from swaplab.io.video import probe_video

#: Default upload limit, in megabytes (a few minutes of phone video).
DEFAULT_MAX_UPLOAD_MB = 200


class AccessError(ValueError):
    """A path outside the allowed folders, or an upload that is too large or not media."""


@dataclass
class AllowList:
    """The folders the page may read and write, resolved once at start-up."""

    roots: list[Path]

    @classmethod
    def of(cls, folders: list[str | Path]) -> AllowList:
        roots = []
        for folder in folders or [Path.cwd()]:
            root = Path(folder).expanduser().resolve()
            if not root.is_dir():
                raise AccessError(f"--allow {folder}: not a folder")
            roots.append(root)
        return cls(roots)

    def check(self, path: str | Path, must_exist: bool = True) -> Path:
        """``path`` resolved, if it lies inside an allowed folder; relative paths are taken from the first."""
        text = str(path).strip()
        if not text:
            raise AccessError("no path given")
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            candidate = self.roots[0] / candidate
        resolved = candidate.resolve()
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            allowed = ", ".join(str(r) for r in self.roots)
            raise AccessError(f"{text}: outside the allowed folders ({allowed}); restart with --allow to add one")
        if must_exist and not resolved.exists():
            raise AccessError(f"{text}: no such file or folder")
        return resolved

    def find(self, marker: str, depth: int = 3) -> list[str]:
        """Folders (up to ``depth`` below a root) holding a file named ``marker``, for the page's pickers."""
        found: list[str] = []
        for root in self.roots:
            for level in range(depth + 1):
                for hit in sorted(root.glob("/".join(["*"] * level + [marker]))):
                    resolved = hit.parent.resolve()
                    if resolved.is_relative_to(root) and str(resolved) not in found:
                        found.append(str(resolved))
        return found


@dataclass
class Uploads:
    """The app's upload folder: checked media only, written atomically, removed with ``close``."""

    max_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="swaplab-ui-")))

    @property
    def limit_text(self) -> str:
        return f"{self.max_bytes / 1024 / 1024:g} MB"

    def accept(self, upload: str | Path, kinds: tuple[str, ...] = ("photo", "video")) -> Path:
        """Check the web server's temporary file and move it into the upload folder; returns the copy."""
        source = Path(upload)
        name = source.name
        accepted = False
        try:
            size = source.stat().st_size
            if size > self.max_bytes:
                raise AccessError(f"{name}: {size / 1024 / 1024:.1f} MB is over the upload limit of {self.limit_text}")
            suffix = source.suffix.lower()
            is_photo = suffix in IMAGE_SUFFIXES and suffix != ".gif"
            is_video = suffix in VIDEO_SUFFIXES
            if not ((is_photo and "photo" in kinds) or (is_video and "video" in kinds)):
                raise AccessError(f"{name}: not a {' or '.join(kinds)} (accepted: {self._accepted(kinds)})")
            try:
                read_image(source) if is_photo else probe_video(source)
            except MediaError as err:
                raise AccessError(f"{name}: not a readable {'photo' if is_photo else 'video'} ({err})") from None
            folder = Path(tempfile.mkdtemp(dir=self.root))  # one folder per upload: names never collide
            target = folder / name
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            accepted = True
            return target
        finally:
            if not accepted:
                source.unlink(missing_ok=True)

    @staticmethod
    def _accepted(kinds: tuple[str, ...]) -> str:
        suffixes = set()
        if "photo" in kinds:
            suffixes |= IMAGE_SUFFIXES
        if "video" in kinds:
            suffixes |= VIDEO_SUFFIXES
        return " ".join(sorted(suffixes))

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

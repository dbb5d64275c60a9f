"""The photos, masks and weights files the page works on: uploads (kept only in the app's
temporary folder, checked against the pixel budget before anything is decoded) and the offline
demo set (built once into the same folder, each photo with its category's mask)."""
from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # a photo or mask; a photo's pixels are checked separately
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024
DEMO_MIN_AREA = 0.01  # as configs/demo.toml: the demo's photos whose object is big enough to score


@dataclass
class Photo:
    token: str
    name: str
    rgb: np.ndarray  # H×W×3 uint8, stored orientation (as a run reads a dataset's photo)
    mask: np.ndarray | None = None  # bool H×W at the photo's resolution, NOT dilated
    category: str | None = None  # the dataset's category when the photo came from one
    mask_source: str = ""  # "dataset", "upload" or ""


class PhotoStore:
    """Uploaded photos, masks and weights files (in ``folder``), and the demo set's photos."""

    def __init__(self, folder: Path, max_pixels: int) -> None:
        self.folder = folder
        self.max_pixels = max_pixels
        self._photos: dict[str, Photo] = {}
        self._weights: dict[str, Path] = {}
        self._demo: list[tuple[str, object]] | None = None  # (key, Sample)
        self._lock = threading.Lock()

    def get(self, token: str) -> Photo:
        if token.startswith("demo:"):
            return self._demo_photo(token)
        photo = self._photos.get(token)
        if photo is None:
            raise XcnnError("that photo is no longer on the server (it restarted?); upload it again")
        return photo

    def add_photo(self, data: bytes, name: str) -> Photo:
        """A photo from the page: XcnnError for a file that is not an image, too large or too wide."""
        from xcnn.data import load_image

        path = self._save(data, name, MAX_UPLOAD_BYTES)
        try:
            rgb = load_image(path, max_pixels=self.max_pixels)
        except XcnnError as err:
            raise XcnnError(str(err).replace(str(path), repr(name))) from None
        photo = Photo(path.stem, name, rgb)
        self._photos[photo.token] = photo
        return photo

    def add_mask(self, token: str, data: bytes, name: str) -> Photo:
        """A mask PNG for a photo: nonzero pixels are the object; resized (nearest) to the photo."""
        from xcnn.data import resize_mask

        photo = self.get(token)
        path = self._save(data, name, MAX_UPLOAD_BYTES)
        try:
            with Image.open(path) as img:
                if img.width * img.height > self.max_pixels:
                    raise XcnnError(f"mask {name!r} is {img.width}×{img.height}, over the pixel budget")
                grey = np.asarray(img.convert("L"))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise XcnnError(f"mask {name!r} is not a readable image ({type(err).__name__}); upload a PNG") from None
        mask = grey > 0
        if not mask.any():
            raise XcnnError(f"mask {name!r} is all black: its nonzero pixels must mark the object")
        if mask.shape != photo.rgb.shape[:2]:
            mask = resize_mask(mask, photo.rgb.shape[:2])
        if token.startswith("demo:"):  # a demo photo is shared: the upload makes a private copy
            photo = Photo(secrets.token_hex(8), photo.name, photo.rgb, category=photo.category)
            self._photos[photo.token] = photo
        photo.mask, photo.mask_source = mask, "upload"
        return photo

    def add_weights(self, data: bytes, name: str) -> str:
        path = self._save(data, name, MAX_WEIGHTS_BYTES)
        self._weights[path.stem] = path
        return path.stem

    def weights(self, token: str) -> Path:
        path = self._weights.get(token)
        if path is None:
            raise XcnnError("that weights file is no longer on the server; upload it again")
        return path

    def _save(self, data: bytes, name: str, limit: int) -> Path:
        if not data:
            raise XcnnError(f"{name!r} is empty; choose a file")
        if len(data) > limit:
            raise XcnnError(f"{name!r} is {len(data) / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB an upload may be")
        token = secrets.token_hex(8)
        suffix = "".join(c for c in Path(name).suffix.lower()[:6] if c.isalnum() or c == ".")
        path = self.folder / f"{token}{suffix}"  # never the page's file name: it is data
        path.write_bytes(data)
        return path

    # --- the demo set ---------------------------------------------------------------------

    def demo_list(self) -> list[dict[str, str]]:
        """The demo photos as the page lists them: key, file name and category."""
        try:
            samples = self._demo_samples()
        except XcnnError as err:
            log.warning("the demo set is not available: %s", err)
            return []
        return [{"key": key, "file": Path(s.file).name, "category": s.category}  # type: ignore[attr-defined]
                for key, s in samples]

    def _demo_samples(self) -> list[tuple[str, object]]:
        with self._lock:
            if self._demo is None:
                from xcnn.data import CocoDataset, demo

                ann, images = demo.build(self.folder / "demo-data")
                samples, _ = CocoDataset(ann, images).select(demo.categories(), 2, 0, DEMO_MIN_AREA)
                self._demo = [(f"demo:{s.image_id}|{s.category}", s) for s in samples]
            return self._demo

    def _demo_photo(self, key: str) -> Photo:
        from xcnn.data import load_image

        for k, s in self._demo_samples():
            if k == key:
                rgb = load_image(s.file, max_pixels=self.max_pixels)  # type: ignore[attr-defined]
                return Photo(key, Path(s.file).name, rgb, mask=s.mask, category=s.category,  # type: ignore[attr-defined]
                             mask_source="dataset")
        raise XcnnError(f"no demo photo {key[5:]!r}; pick one from the list")

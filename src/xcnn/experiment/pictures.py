"""The pictures of a run folder: photos, masks and map pictures as bytes, and saved maps (--save-maps)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def encode_picture(rgb: np.ndarray, fmt: str) -> bytes:
    from xcnn.render import shrink

    img = shrink(Image.fromarray(np.ascontiguousarray(rgb)))
    if img.mode == "RGB":
        a = np.asarray(img)
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
            img = img.convert("L")  # grey pictures at a third of the size
    buf = io.BytesIO()
    if fmt == "jpg":
        # Photos and maps: noisy gradient maps compress badly as PNG (~0.4 MB a unit, and the
        # encoding cost a quarter of the engine's time on 2 cores); JPEG is 10x smaller and faster.
        img.save(buf, format="JPEG", quality=88)
    else:
        img.save(buf, format="PNG", compress_level=1)  # masks: lossless
    return buf.getvalue()


def encode_maps(maps: dict[str, np.ndarray], mask: np.ndarray) -> bytes:
    """float16 maps, each scaled by its own max |value| (stored as <method>_scale) so that
    small gradients keep their precision instead of underflowing float16."""
    arrays: dict[str, np.ndarray | np.float32] = {"mask": mask}
    for method, m in maps.items():
        scale = float(np.abs(m).max())
        arrays[method] = (m / scale if scale > 0 else m).astype(np.float16)
        arrays[f"{method}_scale"] = np.float32(scale)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    """Maps saved with --save-maps, back as float32 (method -> C×H×W), plus "mask" (bool H×W)."""
    with np.load(path) as z:
        out: dict[str, np.ndarray] = {"mask": z["mask"]}
        for name in z.files:
            if name != "mask" and not name.endswith("_scale"):
                out[name] = z[name].astype(np.float32) * np.float32(z[f"{name}_scale"])
    return out

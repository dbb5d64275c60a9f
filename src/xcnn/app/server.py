"""The FastAPI app: the page, its JSON API and the pictures. Every error reaches the page as one
line of JSON ({"error": ...}); a traceback goes only to the server's log."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from xcnn.app.explain import Explaining, Models
from xcnn.app.explain import Request as ExplainRequest
from xcnn.app.explain import npz_bytes, numbers, one_line
from xcnn.app.photos import MAX_UPLOAD_BYTES, MAX_WEIGHTS_BYTES, PhotoStore
from xcnn.app.runs import Runs
from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

OFFLINE_MODELS = ("mobilenet_v2", "efficientnet_lite0")  # ImageNet weights from installed packages


@dataclass
class Settings:
    runs: list[Path] = field(default_factory=list)
    models: dict[str, str | None] = field(default_factory=dict)  # --model NAME -> its --weights
    device: str = "cpu"
    max_pixels: int = 50_000_000
    temp: Path = Path("/tmp")


def create_app(settings: Settings) -> FastAPI:
    """The app; ``settings.temp`` is the folder uploads go to (the caller removes it)."""
    # Imported here, once: requests run in threads, and two threads importing torch (the explainer
    # and a run's reader, through SciPy) at the same moment find it half-initialised.
    import torch  # noqa: F401

    import xcnn.report.tables  # noqa: F401
    from xcnn import registry

    registry.methods()
    # No /docs, /redoc or /openapi.json: the docs pages load their scripts from a CDN.
    app = FastAPI(title="xcnn", docs_url=None, redoc_url=None, openapi_url=None)
    photos = PhotoStore(settings.temp, settings.max_pixels)
    explaining = Explaining(photos, Models(settings.device, dict(settings.models)))
    runs = Runs(settings.runs)
    app.state.explaining = explaining

    @app.exception_handler(XcnnError)
    async def _xcnn_error(_: Request, err: XcnnError) -> JSONResponse:
        return JSONResponse({"error": one_line(err)}, status_code=400)

    @app.exception_handler(Exception)
    async def _bug(_: Request, err: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse({"error": f"internal error: {one_line(err)}"}, status_code=500)

    _page_routes(app)
    _upload_routes(app, settings, photos)
    _explain_routes(app, photos, explaining)
    _run_routes(app, runs)
    return app


def _static(name: str) -> bytes:
    return resources.files("xcnn.app").joinpath("static", name).read_bytes()


def _page_routes(app: FastAPI) -> None:
    types = {"app.js": "text/javascript", "app.css": "text/css"}

    @app.get("/")
    def index() -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in types:
            raise XcnnError(f"no file {name!r}")
        return Response(_static(name), media_type=types[name])


async def _body(request: Request, limit: int) -> tuple[bytes, str]:
    """An upload: the raw body (the page sends the file as it is) and its name (X-Filename)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise XcnnError(f"the file is {int(size) / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB an upload may be")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise XcnnError(f"the file is over the {limit / 2**20:.0f} MB an upload may be")
    return data, unquote(request.headers.get("x-filename", "upload"))[:200]


def _upload_routes(app: FastAPI, settings: Settings, photos: PhotoStore) -> None:
    from xcnn import registry

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        methods = registry.methods()
        return {"models": list(dict.fromkeys([*settings.models, *OFFLINE_MODELS])),
                "methods": [{"name": n, "label": m.label, "slow": m.extra_passes} for n, m in methods.items()
                            if not m.baseline],
                "default_methods": list(registry.DEFAULT_METHODS), "demo": photos.demo_list(),
                "runs": len(settings.runs)}

    @app.post("/api/photo")
    async def photo(request: Request) -> dict[str, Any]:
        data, name = await _body(request, MAX_UPLOAD_BYTES)
        p = photos.add_photo(data, name)
        return {"token": p.token, "name": name, "width": p.rgb.shape[1], "height": p.rgb.shape[0]}

    @app.post("/api/mask")
    async def mask(request: Request, photo: str) -> dict[str, Any]:
        data, name = await _body(request, MAX_UPLOAD_BYTES)
        p = photos.add_mask(photo, data, name)
        return {"token": p.token, "area": float(p.mask.mean()) if p.mask is not None else 0.0}

    @app.post("/api/weights")
    async def weights(request: Request) -> dict[str, Any]:
        data, name = await _body(request, MAX_WEIGHTS_BYTES)
        return {"token": photos.add_weights(data, name), "name": name}


def _explain_routes(app: FastAPI, photos: PhotoStore, explaining: Explaining) -> None:
    @app.post("/api/explain")
    async def explain(request: Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict):
            raise XcnnError("the request must be a JSON object")
        try:
            target = body.get("target")
            req = ExplainRequest(photo=str(body["photo"]), model=str(body.get("model") or "mobilenet_v2"),
                                 weights=body.get("weights") or None, methods=tuple(body.get("methods") or ()),
                                 size=str(body.get("size") or "224"),
                                 target=None if target in (None, "") else int(target),
                                 growth=float(body.get("growth", 0.2)))
        except (KeyError, TypeError, ValueError) as err:
            raise XcnnError(f"bad request: {one_line(err)}") from None
        if req.weights is not None and "/" in req.weights:
            raise XcnnError("a weights file comes from an upload (or `xcnn app --weights`), not a path")
        return explaining.submit(req).summary()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return explaining.job(job_id).summary()

    @app.get("/api/jobs/{job_id}/maps/{method}.png")
    def map_png(job_id: str, method: str) -> Response:
        found = explaining.job(job_id).maps.get(method)
        if found is None:
            raise XcnnError(f"no map {method!r} in that explanation")
        return Response(found.png, media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{method}.png"'})

    @app.get("/api/jobs/{job_id}/maps.npz")
    def maps_npz(job_id: str) -> Response:
        return Response(npz_bytes(explaining.job(job_id)), media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="maps.npz"'})

    @app.get("/api/jobs/{job_id}/numbers.json")
    def numbers_json(job_id: str) -> JSONResponse:
        return JSONResponse(numbers(explaining.job(job_id)),
                            headers={"Content-Disposition": 'attachment; filename="numbers.json"'})


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in ("method", "CNN", "size", "class", "max_rank")}


def _run_routes(app: FastAPI, runs: Runs) -> None:
    @app.get("/api/runs")
    def run_list() -> list[dict[str, Any]]:
        return [r.summary() for r in runs.runs]

    @app.post("/api/runs/{index}/refresh")
    def refresh(index: int) -> dict[str, Any]:
        run = runs.get(index)
        run.refresh()
        return run.summary()

    @app.get("/api/runs/{index}/gallery")
    def gallery(index: int, request: Request) -> list[dict[str, Any]]:
        return runs.get(index).gallery(_filters(request))

    @app.get("/api/runs/{index}/unit")
    def unit(index: int, id: str, cls: str, cnn: str, size: str) -> dict[str, Any]:
        return runs.get(index).unit(id, cls, cnn, size)

    @app.get("/api/runs/{index}/scatter")
    def scatter(index: int, a: str, b: str, request: Request) -> list[dict[str, Any]]:
        return runs.get(index).scatter(a, b, _filters(request))

    @app.get("/api/runs/{index}/card")
    def card(index: int) -> dict[str, Any]:
        return runs.get(index).card()

    @app.get("/api/runs/{index}/file/{rel:path}")
    def run_file(index: int, rel: str) -> FileResponse:
        return FileResponse(runs.get(index).file(rel))

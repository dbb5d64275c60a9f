"""`xcnn app`: a local web page to explain one photo live and to browse finished runs.

The server is a small FastAPI app (``xcnn.app.server``) serving one hand-written page
(``static/``: no CDN, no web font, no analytics; the scatter is inline SVG), so that every
request the page makes goes to the server that served it. Explaining (``xcnn.app.explain``)
goes through the public engine, models, metrics and data functions, the same ones `xcnn run`
calls, so a map's P equals the run's for the same photo, target, size and growth. Browsing
(``xcnn.app.runs``) only reads a run folder, through the report's readers.

Needs the ``app`` extra (``pip install xcnn[app]``).
"""
from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args: object, **kwargs: object) -> object:
    """The FastAPI app (see ``xcnn.app.server.create_app``); imported on call: FastAPI is an extra."""
    from xcnn.app.server import create_app as create

    return create(*args, **kwargs)  # type: ignore[arg-type]

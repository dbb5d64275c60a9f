"""Report layer: reads RUN_DIR only and writes RUN_DIR/report/ (tables, figures, grids, index.html).

Imports neither torch nor anything that does: the report runs where only the records are.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["write_report"]


def write_report(run_dir: Path, images: list[int | str | tuple[int | str, str]] | None = None,
                 eps: bool = False) -> Path:
    """Write RUN_DIR/report/ and return the path of its index.html.

    `images` picks the images of the grids: ids (every category of that image) or (id, category)
    pairs; None picks informative ones. `eps`: the figures in EPS too (beside PNG and SVG).
    Everything is checked before anything is written, and the new report replaces an old one only
    once it is complete.
    """
    # Imported here so `import xcnn.report` stays cheap for callers that only need the name.
    from xcnn.report.build import write_report as build

    return build(Path(run_dir), images, eps)

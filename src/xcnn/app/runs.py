"""Browsing runs, read-only: the records, checks and pictures of RUN_DIRs, through the report's
readers. Nothing here opens a file of a run folder for writing; a picture is served only when
its path, taken from the records, stays inside its run folder."""
from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

UNIT = ["id", "class", "CNN", "size"]
SHOWN = ("P", "chance", "lift", "pointing_hit", "ms", "target_name", "target_rank", "target_prob")
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
GALLERY_MAX = 300


def _clean(value: Any) -> Any:
    """A cell as JSON: NaN -> None, NumPy scalars -> Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Run:
    """One run folder; its records are read on first use and again on refresh."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise XcnnError(f"run folder {path} does not exist; give a folder that 'xcnn run' wrote")
        self.path = path
        self._lock = threading.Lock()
        self._df: Any = None
        self._checks: Any = None
        self._card: list[dict[str, Any]] | None = None
        self.status = ""
        self.error = ""

    def refresh(self) -> None:
        from xcnn.report import progress, run_info, tables

        with self._lock:
            self._card = None
            try:
                df, _ = tables.load_run(self.path)
                self._df = df
                self._checks = _read_checks(self.path)
                body = run_info.read_config(self.path)
                self.status = progress.banner(self.path, body, df) or ("finished" if body.get("finished") else "")
                self.error = "" if df is not None else "no records yet"
            except XcnnError as err:
                self._df, self._checks, self.error = None, None, str(err)

    def frame(self) -> Any:
        if self._df is None and not self.error:
            self.refresh()
        if self._df is None:
            raise XcnnError(self.error or f"{self.path}: no records")
        return self._df

    def summary(self) -> dict[str, Any]:
        from xcnn.report import tables

        try:
            df = self.frame()
        except XcnnError as err:
            return {"path": str(self.path), "name": self.path.name, "status": self.status, "error": str(err)}
        ranks = sorted({int(r) for r in df["target_rank"].dropna()})
        return {"path": str(self.path), "name": self.path.name, "status": self.status, "error": "",
                "records": len(df), "methods": tables.order_methods(set(df["method"])),
                "labels": {m: tables.method_label(m) for m in set(df["method"])},
                "cnns": sorted(set(df["CNN"])), "sizes": tables.order_sizes(set(df["size"])),
                "classes": sorted(set(df["class"])), "ranks": ranks,
                "finished": self.status == "finished"}

    def filtered(self, filters: dict[str, str]) -> Any:
        df = self.frame()
        for column in ("method", "CNN", "size", "class"):
            if filters.get(column):
                df = df[df[column] == filters[column]]
        if filters.get("max_rank"):
            df = df[df["target_rank"] <= float(filters["max_rank"])]
        return df

    def gallery(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """One card per (photo, category, CNN, size) that the filters keep; with a method chosen,
        the card shows that map and its P."""
        df = self.filtered(filters)
        df = df[df["CNN"] != "none"] if not filters.get("CNN") and not filters.get("method") else df
        cards = []
        for key, rows in df.groupby(UNIT, sort=False):
            first = rows.iloc[0]
            picture = first["map_png"] if filters.get("method") else first["image_png"]
            cards.append({"id": _clean(key[0]), "class": key[1], "CNN": key[2], "size": key[3],
                          "picture": picture, "P": _clean(first["P"]) if filters.get("method") else None,
                          "target_name": first["target_name"], "target_rank": _clean(first["target_rank"])})
            if len(cards) == GALLERY_MAX:
                break
        return cards

    def unit(self, photo: str, category: str, cnn: str, size: str) -> dict[str, Any]:
        """Every map of one photo, its baselines' too, best P first."""
        df = self.frame()
        rows = df[(df["id"].astype(str) == photo) & (df["class"] == category) & (df["size"] == size)
                  & df["CNN"].isin([cnn, "none"])]
        if rows.empty:
            raise XcnnError(f"no records of photo {photo} ({category}, {cnn}, {size}) in {self.path}")
        rows = rows.sort_values("P", ascending=False, na_position="last")
        maps = [{"method": r["method"], "CNN": r["CNN"], "picture": r["map_png"],
                 **{k: _clean(r[k]) for k in SHOWN if k in rows.columns}} for _, r in rows.iterrows()]
        for m in maps:  # the report reads the pointing game as 1 / 0 (NaN: an all-zero map); the page as hit / miss
            m["pointing_hit"] = None if m.get("pointing_hit") is None else m["pointing_hit"] == 1.0
        first = rows[rows["CNN"] == cnn].iloc[0] if (rows["CNN"] == cnn).any() else rows.iloc[0]
        return {"id": photo, "class": category, "CNN": cnn, "size": size, "file": first["file"],
                "photo": first["image_png"], "mask": first["mask_png"], "target_name": first["target_name"],
                "target_rank": _clean(first["target_rank"]), "maps": maps}

    def scatter(self, a: str, b: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        """P of method a against P of method b, one point per (photo, category, CNN, size) with both."""
        df = self.filtered({k: v for k, v in filters.items() if k != "method"})
        wide = df[df["method"].isin([a, b])].pivot_table(index=UNIT, columns="method", values="P", aggfunc="first")
        if a not in wide.columns or b not in wide.columns:
            return []
        wide = wide.dropna(subset=[a, b])
        return [{"id": _clean(k[0]), "class": k[1], "CNN": k[2], "size": k[3], "a": float(r[a]), "b": float(r[b])}
                for k, r in wide.iterrows()]

    def card(self) -> dict[str, Any]:
        """The method card as the report computes it, and the checks' mean curves per method."""
        from xcnn.report import tables

        df = self.frame()
        if self._card is None:
            shown = tables.card_for_display(tables.method_card(df, self._checks))
            self._card = [{str(k): _clean(v) for k, v in row.items()} for row in shown.to_dict("records")]
        return {"card": self._card, "curves": curves(self._checks)}

    def file(self, rel: str) -> Path:
        """RUN_DIR/rel when it is a picture inside the run folder; XcnnError otherwise."""
        from xcnn.report.files import inside

        found = inside(self.path, rel)
        if found is None or found.suffix.lower() not in PICTURE_SUFFIXES:
            raise XcnnError(f"{rel!r} is not a picture of run {self.path.name}")
        return found


def _read_checks(path: Path) -> Any:
    import pandas as pd

    from xcnn.runfolder.reading import current_checks

    return pd.DataFrame(current_checks(path))


def curves(checks: Any) -> list[dict[str, Any]]:
    """Each check measure that has steps, as mean value per step and method (the report's curves)."""
    if checks is None or checks.empty or "step" not in checks.columns:
        return []
    stepped = checks.dropna(subset=["step", "value"])
    out = []
    for (test, measure), rows in stepped.groupby(["test", "measure"], sort=True):
        means = rows.groupby(["method", "step"])["value"].mean()
        lines = {}
        for method in dict.fromkeys(rows["method"]):
            series = means.loc[method]
            lines[method] = [[float(s), float(v)] for s, v in series.items()]
        out.append({"test": test, "measure": measure, "lines": lines})
    return out


class Runs:
    """The run folders given on the command line."""

    def __init__(self, paths: list[Path]) -> None:
        self.runs = [Run(p) for p in paths]

    def get(self, index: int) -> Run:
        if not 0 <= index < len(self.runs):
            raise XcnnError(f"no run number {index}; the app was started with {len(self.runs)} run folder(s)")
        return self.runs[index]

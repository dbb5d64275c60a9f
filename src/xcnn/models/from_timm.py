"""``timm:NAME``: any timm image classifier, with timm's own input statistics and class names.

Published weights come through timm (``pretrained=True``: its Hugging Face / torch hub cache,
downloading when a network exists). Token-grid models (ViT, DeiT: B×N×C tokens; Swin: B×h×w×C
stages) name their last block as the CAM layer and say how to read it as a B×C×h×w map.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from xcnn.errors import XcnnError, did_you_mean

log = logging.getLogger(__name__)

INSTALL = "pip install 'xcnn[timm]'"


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise XcnnError(f"timm models need timm: {INSTALL}") from None
    return timm


def check_name(arch: str) -> None:
    """One line if timm is missing or does not know ``arch``."""
    timm = _timm()
    if not timm.is_model(arch):
        prefixed = [f"timm:{m}" for m in timm.list_models()]  # suggested as they are written
        hint = did_you_mean(f"timm:{arch}", prefixed) or "see timm.list_models()"
        raise XcnnError(f"unknown timm model {arch!r}; {hint}")


def create(arch: str, weights: str | Path | None) -> nn.Module:
    """The network; ``weights`` None: timm's published weights, "random", or a state-dict file
    (read by the caller)."""
    check_name(arch)
    from xcnn.models import WEIGHTS_FILE_HINT

    timm = _timm()
    try:
        return timm.create_model(arch, pretrained=weights is None)
    except Exception as err:  # no network, no cached file, no published weights: one line
        raise XcnnError(f"timm could not load weights for {arch} ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); run once with a network, or give a state-dict "
                        f"file ({WEIGHTS_FILE_HINT})") from None


def statistics(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the weights were trained with (timm's pretrained config)."""
    cfg = _timm().data.resolve_data_config({}, model=model)
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


def class_names(model: nn.Module) -> tuple[list[str], list[str]] | None:
    """(names, WordNet ids) of the ImageNet subset the model was trained on, or None."""
    data = _timm().data
    subset = data.infer_imagenet_subset(model)
    if subset is None:
        return None
    info = data.ImageNetInfo(subset)
    # Descriptions read "tabby, tabby cat": the first synonym is the class's short name.
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    return names, list(info.label_names())


def token_layer(model: nn.Module) -> tuple[str, str] | None:
    """(CAM layer, layout) for token-grid models: the output of the last block, not an
    attention internal; None for convolutional ones (the engine's "auto" finds their layer)."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and hasattr(model, "num_prefix_tokens") and len(blocks):
        return f"blocks.{len(blocks) - 1}", "tokens"
    layers = getattr(model, "layers", None)
    if getattr(model, "output_fmt", None) == "NHWC" and isinstance(layers, nn.Sequential) and len(layers):
        return f"layers.{len(layers) - 1}", "nhwc"
    return None


def fixed_size(model: nn.Module) -> tuple[int, int] | None:
    """The only input size a model takes (patch embeddings with a strict image size), or None."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not getattr(embed, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return None
    size = getattr(embed, "img_size", None)
    return (int(size[0]), int(size[1])) if size is not None else None

"""Canonizers for LRP: which models xcnn's LRP covers, and the canonical form it explains them in.

zennit's rules hook modules, so everything a forward pass does outside a module — a residual
``x + f(x)``, a functional pooling or relu, a gating product — is propagated as the plain
gradient, silently. zennit 0.5.1 canonizes torchvision's ResNets (``ResNetCanonizer``: batch
norm merged, each residual sum a ``Sum`` module) and sequential models (``VGGCanonizer`` =
``SequentialMergeBatchNorm``). This module adds, in zennit's canonizer form:

- ``MobileNetV2Canonizer``: torchvision MobileNetV2's residual ``x + self.conv(x)`` as a ``Sum``
  and its functional ``adaptive_avg_pool2d`` as a module (which the Norm rule then sees);
- ``EfficientNetLiteCanonizer``: efficientnet_lite_pytorch's Lite models as xcnn loads them
  (``EfficientNet.from_name("efficientnet-lite0")``): its convolutions pad in a child module, so
  zennit's sequential merge never sees a convolution next to its batch norm; the pairs are named
  here, and the residual ``x + inputs`` becomes a ``Sum``.

:func:`canonizers` decides, by module types, whether a model is covered, and refuses in one line
naming the first module that is not.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer, MergeBatchNorm
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.layer import Sum
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

from xcnn.errors import XcnnError

COVERED = ("torchvision ResNet, ResNeXt, Wide ResNet, VGG (with or without batch norm), AlexNet, SqueezeNet, "
           "MobileNetV2, and EfficientNet-Lite0 (efficientnet_lite_pytorch)")


# --- MobileNetV2 ------------------------------------------------------------------------------

class MobileNetV2ResidualCanonizer(AttributeCanonizer):  # type: ignore[misc]  # zennit is untyped
    """torchvision MobileNetV2's ``InvertedResidual``: ``x + self.conv(x)`` through a ``Sum`` module."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict[str, Any] | None:
        from torchvision.models.mobilenetv2 import InvertedResidual

        if type(module) is InvertedResidual and module.use_res_connect:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))
        return out


class MobileNetV2PoolCanonizer(AttributeCanonizer):  # type: ignore[misc]  # zennit is untyped
    """torchvision MobileNetV2's functional ``adaptive_avg_pool2d`` as an ``AdaptiveAvgPool2d`` module."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict[str, Any] | None:
        from torchvision.models.mobilenetv2 import MobileNetV2

        if type(module) is MobileNetV2:
            return {"forward": cls.forward.__get__(module), "canonizer_pool": nn.AdaptiveAvgPool2d((1, 1))}
        return None

    @staticmethod
    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        x = self.canonizer_pool(self.features(x))
        out: torch.Tensor = self.classifier(torch.flatten(x, 1))
        return out


class MobileNetV2Canonizer(CompositeCanonizer):  # type: ignore[misc]  # zennit is untyped
    """torchvision MobileNetV2: batch norms merged into their convolutions, residuals as ``Sum``
    modules, the global pooling as a module."""

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), MobileNetV2ResidualCanonizer(), MobileNetV2PoolCanonizer()))


# --- EfficientNet-Lite ------------------------------------------------------------------------

def _lite_types() -> tuple[type, ...]:
    """(EfficientNet, MBConvBlock, Conv2dStaticSamePadding, Identity) of efficientnet_lite_pytorch, or
    () when it is not installed. Its dynamic-padding convolution is left out: it is a leaf, which
    zennit's sequential merge would merge a second time."""
    try:
        from efficientnet_lite_pytorch import model, utils
    except ImportError:
        return ()
    return model.EfficientNet, model.MBConvBlock, utils.Conv2dStaticSamePadding, utils.Identity


class EfficientNetLiteMergeBatchNorm(MergeBatchNorm):  # type: ignore[misc]  # zennit is untyped
    """Each batch norm of an efficientnet_lite_pytorch model merged into the convolution before it,
    named by the package's attribute names (its convolutions are not leaves: they pad in a child)."""

    _PAIRS = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"),  # the network's stem and head
              ("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))  # a block's

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        types = _lite_types()
        instances: list[Canonizer] = []
        for module in root_module.modules():
            if types and type(module) in types[:2]:
                for conv, norm in self._PAIRS:
                    if hasattr(module, conv) and hasattr(module, norm):
                        instance = self.copy()
                        instance.register((getattr(module, conv),), getattr(module, norm))
                        instances.append(instance)
        return instances


class EfficientNetLiteResidualCanonizer(AttributeCanonizer):  # type: ignore[misc]  # zennit is untyped
    """efficientnet_lite_pytorch's ``MBConvBlock``: the skip connection ``x + inputs`` through a ``Sum``."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict[str, Any] | None:
        types = _lite_types()
        if types and type(module) is types[1]:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self: Any, inputs: torch.Tensor, drop_connect_rate: float | None = None) -> torch.Tensor:
        from efficientnet_lite_pytorch.utils import drop_connect

        # The package's MBConvBlock.forward without squeeze-excitation (refused in canonizers()).
        x: torch.Tensor = inputs
        if self._block_args.expand_ratio != 1:
            x = self._swish(self._bn0(self._expand_conv(inputs)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        args = self._block_args
        if self.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
            if drop_connect_rate:
                x = drop_connect(x, p=drop_connect_rate, training=self.training)
            x = self.canonizer_sum(torch.stack([x, inputs], dim=-1))
        return x


class EfficientNetLiteCanonizer(CompositeCanonizer):  # type: ignore[misc]  # zennit is untyped
    """efficientnet_lite_pytorch's Lite models (ReLU6, no squeeze-excitation): batch norms merged,
    residuals as ``Sum`` modules. The global pooling is a module already."""

    def __init__(self) -> None:
        super().__init__((EfficientNetLiteMergeBatchNorm(), EfficientNetLiteResidualCanonizer()))


# --- coverage ---------------------------------------------------------------------------------

def _activation_types() -> set[type]:
    from zennit.types import Activation

    # zennit's elementwise activations (its Pass rule); MultiheadAttention is in its list, not elementwise
    return {t for t in Activation.__subclass__ if t is not nn.MultiheadAttention}


def _plain_types() -> set[type]:
    """Modules whose own forward zennit's rules, or the plain gradient, propagate correctly."""
    return {nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveMaxPool2d, nn.Dropout, nn.Flatten, nn.Identity, nn.ZeroPad2d, nn.Sequential,
            nn.ModuleList, *_activation_types()}


def _block_types() -> dict[type, str]:
    """Blocks and networks whose forward is known: family -> which canonizers they need."""
    from torchvision.models.alexnet import AlexNet
    from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    from torchvision.models.squeezenet import Fire, SqueezeNet
    from torchvision.models.vgg import VGG
    from torchvision.ops.misc import Conv2dNormActivation

    blocks: dict[type, str] = {ResNet: "resnet", BasicBlock: "resnet", Bottleneck: "resnet",
                               VGG: "sequential", AlexNet: "sequential", SqueezeNet: "sequential",
                               Fire: "sequential", Conv2dNormActivation: "sequential",
                               MobileNetV2: "mobilenet_v2", InvertedResidual: "mobilenet_v2"}
    blocks.update({t: "lite" for t in _lite_types()})
    return blocks


def _known_bad(module: nn.Module) -> str | None:
    """Why a module of a known architecture cannot be explained by LRP, or None."""
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    lite = _lite_types()
    if kind == "torchvision.ops.misc.SqueezeExcitation":
        return "multiplies activations by a gate (squeeze-excitation, scale * input)"
    if lite and type(module) is lite[1] and module.has_se:
        return "multiplies activations by a gate (squeeze-excitation, sigmoid(s) * x)"
    if lite and type(module) is lite[0] and getattr(module._global_params, "local_pooling", False):
        return "pools with a functional mean (local_pooling)"
    if kind in ("torchvision.models.googlenet.BasicConv2d", "torchvision.models.inception.BasicConv2d"):
        return "applies relu as a function (F.relu), which no rule sees"
    if kind == "torchvision.models.densenet.DenseNet":
        return "applies relu and its pooling as functions, which no rule sees"
    if kind.startswith("timm."):
        return "is a timm block, which neither zennit nor xcnn canonizes"
    if isinstance(module, nn.BatchNorm2d) and (module.weight is None or module.running_var is None):
        return "has no affine parameters or running statistics to merge into a convolution"
    return None


def _named(name: str, module: nn.Module) -> str:
    where = "the model itself" if not name else f"module {name!r}"
    return f"{where} ({type(module).__name__})"


def refusal(model: nn.Module) -> str | None:
    """Why LRP cannot explain ``model`` (naming the module), or None when every module is covered.

    A module is covered when its exact type is a plain layer or a known block: a subclass may run
    anything in its forward. A known block that cannot be covered names its reason; otherwise the
    first unknown module is named, the model itself last (its children say more)."""
    plain, blocks = _plain_types(), _block_types()
    unknown: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        reason = _known_bad(module)
        if reason is not None:
            return f"{_named(name, module)} {reason}"
        if type(module) not in plain and type(module) not in blocks:
            unknown.append((name, module))
    if unknown:
        name, module = next(((n, m) for n, m in unknown if n), unknown[0])
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        return f"{_named(name, module)} is a {kind}, not a layer or block LRP knows how to propagate"
    return None


def canonizers(model: nn.Module, method: str) -> list[Canonizer]:
    """The canonizers that put ``model`` in the form ``method`` explains; one XcnnError line naming the
    first module no canonizer covers."""
    why = refusal(model)
    if why is not None:
        raise XcnnError(f"{method} cannot explain this model: {why}; LRP covers {COVERED} — choose a gradient "
                        "or CAM method for it")
    blocks = _block_types()
    families = {blocks[type(m)] for m in model.modules() if type(m) in blocks}
    # One sequential merge for all (a batch norm merged twice would be scaled twice).
    chosen: list[Canonizer] = [SequentialMergeBatchNorm()]
    extra: dict[str, Callable[[], list[Canonizer]]] = {
        "resnet": lambda: [ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()],
        "mobilenet_v2": lambda: [MobileNetV2ResidualCanonizer(), MobileNetV2PoolCanonizer()],
        "lite": lambda: [EfficientNetLiteMergeBatchNorm(), EfficientNetLiteResidualCanonizer()],
    }
    for family in sorted(families & set(extra)):
        chosen += extra[family]()
    return chosen


def unmerged(model: nn.Module, applied: Iterator[Any] | list[Any]) -> str | None:
    """The first batch norm of ``model`` that no applied merge covers (named), or None."""
    merged = {id(c.batch_norm) for c in applied if isinstance(c, MergeBatchNorm)}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and id(module) not in merged:
            return f"{_named(name, module)} follows no convolution it could be merged into"
    return None

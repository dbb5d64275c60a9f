"""Class-activation maps from the target layer of the engine's one forward pass.

A are the layer's activations (B×K×h×w) and G = ∂y_c/∂A from the gradient-rule pass. Each
``*_layer`` function gives the rectified map at the layer's resolution (B×1×h×w), the quantity
pytorch-grad-cam's ``get_cam_image`` computes before it rectifies and scales; the registry's
compute function then upsamples it and scales it to [0, 1] per image with ``to_heat``, as
Grad-CAM does. None of them runs the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xcnn.methods.context import Context, to_heat
from xcnn.registry import method

_SPATIAL = (2, 3)


def gradcam_layer(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """relu(Σ_k mean_ij(G_k) · A_k) (Selvaraju et al. 2017)."""
    weights = g.mean(dim=_SPATIAL, keepdim=True)
    return F.relu((weights * a).sum(dim=1, keepdim=True))


def gradcam_pp_layer(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ in the closed form of its paper's eq. 19 with exponential scores
    (Chattopadhay et al. 2018), as pytorch-grad-cam 1.5.7 writes it: the higher derivatives of
    exp(y_c) become powers of G, and S_k is the spatial sum of A_k."""
    g2 = g * g
    g3 = g2 * g
    s = a.sum(dim=_SPATIAL, keepdim=True)
    alpha = g2 / (2 * g2 + s * g3 + 1e-6)
    # Where G is 0 the position carries no evidence (and the ratio may be 0/0 in low precision).
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * F.relu(g)).sum(dim=_SPATIAL, keepdim=True)
    return F.relu((weights * a).sum(dim=1, keepdim=True))


def xgradcam_layer(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """w_k = Σ_ij G·A / (Σ_ij A + 1e-7), relu(Σ_k w_k A_k) (Fu et al. 2020)."""
    weights = (g * a).sum(dim=_SPATIAL, keepdim=True) / (a.sum(dim=_SPATIAL, keepdim=True) + 1e-7)
    return F.relu((weights * a).sum(dim=1, keepdim=True))


def layercam_layer(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """relu(Σ_k relu(G_k) ⊙ A_k): every position weighted by its own positive gradient (Jiang et al. 2021)."""
    return F.relu((F.relu(g) * a).sum(dim=1, keepdim=True))


def hirescam_layer(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """relu(Σ_k G_k ⊙ A_k): Grad-CAM without the spatial average of G (Draelos & Carin 2020)."""
    return F.relu((g * a).sum(dim=1, keepdim=True))


def eigencam_layer(a: torch.Tensor) -> torch.Tensor:
    """relu of the activations' projection on their first principal direction (Muhammad & Yeasin 2020).

    Per image, the hw×K matrix of positions × channels is centred per channel and projected on
    its first right singular vector. The SVD runs in float64: the direction is ill-conditioned
    when the two leading singular values are close, and the matrix is small (positions of the
    last feature map × channels), so the precision costs little. A singular vector's sign is
    arbitrary, so the projection is flipped when its most
    negative value outweighs its most positive one (the sign correction of pytorch-grad-cam's
    ``get_2d_projection_with_sign_correction``); without it the map could be the background.
    """
    b, k, h, w = a.shape
    x = a.double().reshape(b, k, h * w)  # B×K×hw: the transpose of the positions × channels matrix
    x = x - x.mean(dim=2, keepdim=True)
    # The SVD of the K×hw transpose: its left singular vectors are the right ones of hw×K, and
    # LAPACK factors this tall layout 2-3× faster than the wide one (measured, ResNet-50 layer4).
    v, _, _ = torch.linalg.svd(x, full_matrices=False)
    p = x.transpose(1, 2) @ v[:, :, :1]  # B×hw×1
    flip = p.amin(dim=1, keepdim=True).abs() > p.amax(dim=1, keepdim=True).abs()
    p = torch.where(flip, -p, p)
    return F.relu(p).transpose(1, 2).reshape(b, 1, h, w).to(a.dtype)


def _layer(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.activation is None or ctx.layer_grad is None:
        raise RuntimeError("a gradient CAM needs the layer activation and its gradient; the registry entry "
                           "must list needs_layer=True and the gradient rule")
    return ctx.activation, ctx.layer_grad


@method("gradcam", label="Grad-CAM", kind="heat", rules=("gradient",), needs_layer=True, reference="Selvaraju et al. 2017")
def gradcam(ctx: Context) -> torch.Tensor:
    return to_heat(gradcam_layer(*_layer(ctx)), ctx.size)


@method("guided_gradcam", label="Guided Grad-CAM", kind="signed", rules=("gradient", "guided"), needs_layer=True,
        reference="Selvaraju et al. 2017")
def guided_gradcam(ctx: Context) -> torch.Tensor:
    """Guided Backprop ⊙ Grad-CAM (Selvaraju et al. 2017); reuses Grad-CAM's map when it was asked too."""
    cam = ctx.maps.get("gradcam")
    if cam is None:
        cam = gradcam(ctx)
    return ctx.grads["guided"] * cam


@method("gradcam_pp", label="Grad-CAM++", kind="heat", rules=("gradient",), needs_layer=True,
        reference="Chattopadhay et al. 2018")
def gradcam_pp(ctx: Context) -> torch.Tensor:
    return to_heat(gradcam_pp_layer(*_layer(ctx)), ctx.size)


@method("xgradcam", label="XGrad-CAM", kind="heat", rules=("gradient",), needs_layer=True, reference="Fu et al. 2020")
def xgradcam(ctx: Context) -> torch.Tensor:
    return to_heat(xgradcam_layer(*_layer(ctx)), ctx.size)


@method("layercam", label="LayerCAM", kind="heat", rules=("gradient",), needs_layer=True, reference="Jiang et al. 2021")
def layercam(ctx: Context) -> torch.Tensor:
    return to_heat(layercam_layer(*_layer(ctx)), ctx.size)


@method("hirescam", label="HiResCAM", kind="heat", rules=("gradient",), needs_layer=True, reference="Draelos & Carin 2020")
def hirescam(ctx: Context) -> torch.Tensor:
    return to_heat(hirescam_layer(*_layer(ctx)), ctx.size)


@method("eigencam", label="Eigen-CAM", kind="heat", needs_layer=True, reference="Muhammad & Yeasin 2020")
def eigencam(ctx: Context) -> torch.Tensor:
    """Class-agnostic: needs the activations only, no backward pass."""
    if ctx.activation is None:
        raise RuntimeError("Eigen-CAM needs the layer activation; its registry entry must say needs_layer=True")
    return to_heat(eigencam_layer(ctx.activation), ctx.size)

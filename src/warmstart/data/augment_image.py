"""Image augmentation on batch tensors: random resized crop, flip, colour jitter,
TrivialAugment, mixup and cutmix, each example's randomness given as a row of numbers.

Everything here is a pure function of the batch and of `draws` (one row of uniform numbers
per example, plus a mixing weight), which `augment.py` draws from a generator seeded by
(train.seed, epoch, example). So the ops run wherever the batch is (CPU or GPU) and a resumed
run replays the same augmentations.

Why plain torch ops and not kornia (the maintained library that needs no torchvision): kornia
draws its random parameters from torch's global generator, batch by batch, so "the same
example in the same epoch gets the same crop" whatever the batch, process count or resume
point would need its parameters passed in by hand for every op anyway; what is left is a few
lines each. Measured on one CPU thread, a batch of 32 images at 128 px (crop + flip + colour
jitter): kornia 0.9 took longer than these ops (bench/README.md, "Augmentation"). The
geometric ops (crop, flip, rotate, shear, translate) compose into one affine matrix per image,
so each batch is resampled once (`affine_grid` + `grid_sample`).

Deliberate simplifications: a crop whose side would exceed the image is clamped to it (instead
of torchvision's ten retries); TrivialAugment leaves out `equalize` (a per-image histogram
pass with no vectorised form); areas outside a rotated or shifted image take the mean colour
(0 after normalising).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The columns of `draws`, one uniform number in [0, 1) each.
CROP_AREA, CROP_RATIO, CROP_X, CROP_Y, FLIP = 0, 1, 2, 3, 4
TA_APPLY, TA_OP, TA_LEVEL, TA_SIGN = 5, 6, 7, 8
JITTER_B, JITTER_C, JITTER_S = 9, 10, 11
MIX_APPLY, MIX_KIND, BOX_X, BOX_Y = 12, 13, 14, 15
COLUMNS = 16

# TrivialAugment's ops (Müller & Hutter 2021) at RandAugment's ranges (the "light" choice;
# TrivialAugment-wide doubles most of them), each scaled by the drawn level in [0, 1].
TA_OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y",
          "brightness", "color", "contrast", "sharpness", "posterize", "solarize",
          "autocontrast")
ROTATE_DEG, SHEAR, TRANSLATE, ENHANCE, POSTERIZE_BITS = 30.0, 0.3, 0.45, 0.9, 4
CROP_RATIOS = (3 / 4, 4 / 3)  # aspect ratios of the crop, as torchvision's default


@dataclass(frozen=True)
class ImageOps:
    """The image ops of a recipe, resolved (`augment.py` builds it from `augment.*`)."""

    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip: float = 0.0
    jitter: float = 0.0
    trivial: float = 0.0
    trivial_strength: float = 1.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 0.0

    @property
    def mixes(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_prob > 0


def _op_of(draws: torch.Tensor, ops: ImageOps) -> torch.Tensor:
    """Each example's TrivialAugment op index (0, identity, where none applies)."""
    index = (draws[:, TA_OP] * len(TA_OPS)).long().clamp_max(len(TA_OPS) - 1)
    return torch.where(draws[:, TA_APPLY] < ops.trivial, index, torch.zeros_like(index))


def _signed_level(draws: torch.Tensor, ops: ImageOps) -> torch.Tensor:
    sign = torch.where(draws[:, TA_SIGN] < 0.5, -1.0, 1.0)
    return draws[:, TA_LEVEL] * ops.trivial_strength * sign


def affine(draws: torch.Tensor, ops: ImageOps) -> torch.Tensor:
    """One (B, 2, 3) sampling matrix per image: crop and flip, then TrivialAugment's
    geometric op, in `affine_grid`'s normalised coordinates (output -> input)."""
    n = draws.shape[0]
    low, high = ops.crop_scale
    area = low + (high - low) * draws[:, CROP_AREA]
    log_lo, log_hi = math.log(CROP_RATIOS[0]), math.log(CROP_RATIOS[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * draws[:, CROP_RATIO])
    if (low, high) == (1.0, 1.0):  # crop off: the whole image, not a squeezed one
        ratio = torch.ones_like(ratio)
    w = torch.sqrt(area * ratio).clamp_max(1.0)
    h = torch.sqrt(area / ratio).clamp_max(1.0)
    flip = torch.where(draws[:, FLIP] < ops.flip, -1.0, 1.0)
    crop = torch.zeros(n, 3, 3)
    crop[:, 0, 0], crop[:, 1, 1], crop[:, 2, 2] = w * flip, h, 1.0
    crop[:, 0, 2] = (2 * draws[:, CROP_X] - 1) * (1 - w)
    crop[:, 1, 2] = (2 * draws[:, CROP_Y] - 1) * (1 - h)

    op, level = _op_of(draws, ops), _signed_level(draws, ops)
    geo = torch.eye(3).repeat(n, 1, 1)
    angle = torch.deg2rad(level * ROTATE_DEG)
    rot = op == TA_OPS.index("rotate")
    geo[rot, 0, 0], geo[rot, 0, 1] = torch.cos(angle[rot]), -torch.sin(angle[rot])
    geo[rot, 1, 0], geo[rot, 1, 1] = torch.sin(angle[rot]), torch.cos(angle[rot])
    for name, row, col, scale in (("shear_x", 0, 1, SHEAR), ("shear_y", 1, 0, SHEAR),
                                  ("translate_x", 0, 2, 2 * TRANSLATE),
                                  ("translate_y", 1, 2, 2 * TRANSLATE)):
        chosen = op == TA_OPS.index(name)
        geo[chosen, row, col] = level[chosen] * scale
    return (crop @ geo)[:, :2]


def geometric(x: torch.Tensor, draws: torch.Tensor, ops: ImageOps) -> torch.Tensor:
    """Crop, flip and the geometric TrivialAugment ops of normalised images (B, C, H, W),
    resampled once; the batch as it is where every matrix is the identity."""
    theta = affine(draws, ops)
    if torch.equal(theta, torch.eye(3)[:2].expand_as(theta)):
        return x
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, (B, 1, H, W), as PIL's `convert("L")`."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _blend(x: torch.Tensor, base: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`base + factor * (x - base)`, per image (PIL's ImageEnhance)."""
    return base + factor.view(-1, 1, 1, 1) * (x - base)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (the 'degenerate' image of sharpness), borders kept."""
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype)
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    inner = F.conv2d(x, kernel, groups=x.shape[1])
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _colour_op(name: str, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """TrivialAugment's colour op `name` on images in [0, 1] at signed `level` in [-1, 1]
    (posterize, solarize: its size); the result clamped to [0, 1]."""
    return _colour_unclamped(name, x, level).clamp(0, 1)


def _colour_unclamped(name: str, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    factor = 1 + level * ENHANCE
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), factor)
    if name == "color":
        return _blend(x, _gray(x).expand_as(x), factor)
    if name == "contrast":
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factor)
    if name == "sharpness":
        return _blend(x, _smooth(x), factor)
    if name == "posterize":
        bits = 8 - (level.abs() * POSTERIZE_BITS).round()
        step = (2 ** (8 - bits)).view(-1, 1, 1, 1)
        return torch.floor(x * 255 / step) * step / 255
    if name == "solarize":
        threshold = (1 - level.abs()).view(-1, 1, 1, 1)
        return torch.where(x >= threshold, 1 - x, x)
    if name == "autocontrast":
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        span = high - low
        return torch.where(span > 0, (x - low) / span.clamp_min(1e-6), x)
    raise ValueError(f"not a colour op: {name}")


def colour(x: torch.Tensor, draws: torch.Tensor, ops: ImageOps) -> torch.Tensor:
    """Colour jitter, then the colour ops of TrivialAugment, on images in [0, 1]; each op
    computed only on the images that drew it."""
    d = draws.to(x.device)
    if ops.jitter > 0:
        b, c, s = (1 + (2 * d[:, k] - 1) * ops.jitter for k in (JITTER_B, JITTER_C, JITTER_S))
        x = _blend(x, torch.zeros_like(x), b)
        x = _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), c)
        x = _blend(x, _gray(x).expand_as(x), s).clamp(0, 1)
    if ops.trivial > 0:
        op, level = _op_of(d, ops), _signed_level(d, ops)
        x = x.clone()
        for k, name in enumerate(TA_OPS):
            if name in ("identity", "rotate", "shear_x", "shear_y", "translate_x",
                        "translate_y"):
                continue
            chosen = (op == k).nonzero().flatten()
            if len(chosen):
                x[chosen] = _colour_op(name, x[chosen], level[chosen])
    return x


def colour_normalised(x: torch.Tensor, draws: torch.Tensor, ops: ImageOps,
                      mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`colour` for normalised images: to [0, 1], the ops, and back."""
    if ops.jitter <= 0 and ops.trivial <= 0:
        return x
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (colour((x * s + m).clamp(0, 1), draws, ops) - m) / s


def mix_images(x: torch.Tensor, draws: torch.Tensor, lam: torch.Tensor, ops: ImageOps
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix of each chosen image with its neighbour in the batch (the one before
    it); returns the images and each one's own share (1 where nothing was mixed).

    Each example draws whether it is mixed and, with both on, which of the two it gets
    (timm's per-example mode), so no example's fate depends on the others'.
    """
    n, _, height, width = x.shape
    partner = torch.roll(torch.arange(n, device=x.device), 1)
    d, lam = draws.to(x.device), lam.to(device=x.device, dtype=x.dtype)
    mixed = d[:, MIX_APPLY] < ops.mix_prob
    if ops.mixup > 0 and ops.cutmix > 0:
        cut = mixed & (d[:, MIX_KIND] < 0.5)
    else:
        cut = mixed & (ops.cutmix > 0)
    blend = mixed & ~cut
    share = torch.where(mixed, lam, torch.ones_like(lam))
    # cutmix: a box of area (1 - lam) from the neighbour, clipped to the image
    side = torch.sqrt(1 - lam)
    cy, cx = d[:, BOX_Y] * height, d[:, BOX_X] * width
    y0, y1 = (cy - side * height / 2).clamp(0, height), (cy + side * height / 2).clamp(0, height)
    x0, x1 = (cx - side * width / 2).clamp(0, width), (cx + side * width / 2).clamp(0, width)
    y0, y1, x0, x1 = (v.round() for v in (y0, y1, x0, x1))
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)
    box = ((rows >= y0.view(-1, 1, 1)) & (rows < y1.view(-1, 1, 1))
           & (cols >= x0.view(-1, 1, 1)) & (cols < x1.view(-1, 1, 1)) & cut.view(-1, 1, 1))
    boxed = torch.where(cut, 1 - (y1 - y0) * (x1 - x0) / (height * width), share)
    share = torch.where(cut, boxed, share)
    other = x[partner]
    out = torch.where(blend.view(-1, 1, 1, 1), _mix(x, other, lam), x)
    out = torch.where(box.unsqueeze(1), other, out)
    return out, share


def _mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    w = lam.view(-1, *[1] * (a.dim() - 1))
    return w * a + (1 - w) * b


def mix_labels(labels: torch.Tensor, share: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels mixed as the images were (`share` of one's own, the rest the neighbour's):
    class indices become soft class probabilities; 0/1 rows and values mix as they are."""
    y = F.one_hot(labels, num_classes).float() if labels.dtype == torch.long else labels.float()
    partner = torch.roll(torch.arange(len(y), device=y.device), 1)
    return _mix(y, y[partner], share.to(y.device, y.dtype))

"""What the image adapters share: decoding, resizing and normalising images; safetensors saving.

Images arrive as uint8 numpy arrays, (H, W) or (H, W, 3), or as paths to image files. They are
decoded in `collate`, batch by batch, so a dataset of photos never sits in memory decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import WarmstartError
from warmstart.models.base import write_model_file

WEIGHTS_FILE = "model.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelModel(nn.Module):
    """Lets a plain CNN be called as `module(pixel_values=...)`, the batch key images use."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


def to_rgb_array(image: Any) -> np.ndarray:
    """One image as a uint8 (H, W, 3) array; grayscale becomes three equal channels."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        try:
            with Image.open(image) as img:
                image = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as e:
            raise WarmstartError(
                f"cannot read image {str(image)!r} ({e}); remove or fix the file"
            ) from None
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise WarmstartError(
            f"an image has shape {array.shape}; images must be (H, W) or (H, W, 3) arrays"
        )
    return array[:, :, :3]


def to_batch(images: Sequence[Any], size: int, mean: Sequence[float],
             std: Sequence[float]) -> torch.Tensor:
    """Decode, resize (bilinear) to size x size, scale to [0, 1] and normalise.

    Returns:
        A float tensor (B, 3, size, size).
    """
    arrays = [to_rgb_array(im) for im in images]
    if all(a.shape == arrays[0].shape for a in arrays):  # e.g. digits: one resize call
        x = _resize(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float(), size)
    else:
        x = torch.cat([_resize(torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float(), size)
                       for a in arrays])
    # (x / 255 - mean) / std, folded into one multiply-add over the batch
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return x.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t).contiguous()


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    # antialias only matters (and only costs) when shrinking, e.g. photos down to 224
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrink)


def image_collate(size: int, mean: Sequence[float],
                  std: Sequence[float]) -> Callable[[list[Any]], dict[str, torch.Tensor]]:
    """An `Adapter.collate` for images: {"pixel_values": (B, 3, size, size)}."""

    def collate(batch: list[Any]) -> dict[str, torch.Tensor]:
        return {"pixel_values": to_batch(batch, size, mean, std)}

    return collate


def keep_inputs(images: Sequence[Any]) -> list[Any]:
    """An `Adapter.encode` for images: nothing to do ahead of time (decoding is lazy)."""
    return list(images)


def save_weights(module: nn.Module, directory: Path, meta: dict[str, Any]) -> None:
    """Write the module's weights as safetensors and the warmstart model file beside them."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(module, str(directory / WEIGHTS_FILE))  # handles shared tensors, unlike save_file
    write_model_file(directory, meta)


def load_weights(module: nn.Module, directory: Path) -> None:
    """Load weights written by `save_weights` (strict: every key must match)."""
    from safetensors.torch import load_model

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise WarmstartError(f"{str(path)!r} is missing; save the model again")
    load_model(module, str(path), strict=True, device="cpu")

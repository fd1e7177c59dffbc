"""Batched, generator-driven training augmentation on normalised image tensors."""

import torch
from torch import Tensor


class CropFlip:
    """Random crop to the input size after padding by ``padding``, then a random horizontal flip.

    The standard CIFAR augmentation, done for a whole NCHW batch at once. ``fill`` is the
    per-channel value of the padding (a black pixel after normalisation).
    """

    def __init__(self, padding: int, fill: Tensor) -> None:
        self.padding = padding
        self.fill = fill

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The augmented copy of a batch of images."""
        n, c, h, w = images.shape
        p = self.padding
        padded = self.fill.to(images).view(1, c, 1, 1).repeat(n, 1, h + 2 * p, w + 2 * p)
        padded[:, :, p : p + h, p : p + w] = images
        top = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        rows = (top[:, None] + torch.arange(h))[:, None, :, None]
        cols = left[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
        batch = torch.arange(n)[:, None, None, None]
        channel = torch.arange(c)[None, :, None, None]
        return padded[batch, channel, rows, cols]

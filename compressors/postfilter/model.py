"""The post-filter: a small residual CNN that undoes part of a codec's loss after decoding.

The denoising autoencoder of the source methods (a network mapping noisy images to clean
ones) applied where it costs no bits: at the decoder, after any codec. The network sees
the decoded image at half resolution (a 2x2 pixel-unshuffle makes the four phases
channels, as FFDNet does: Zhang, Zuo, Zhang, "FFDNet: Toward a Fast and Flexible Solution
for CNN-Based Image Denoising", IEEE TIP 2018) and predicts the residual to add (global
residual learning as in DnCNN: Zhang et al., "Beyond a Gaussian Denoiser", IEEE TIP 2017).
Working at half resolution makes it ~4x cheaper per pixel than the same stack at full
resolution while its receptive field covers a JPEG MCU (16 px) and its neighbours.

Pure PyTorch; no I/O.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compressors.hardware import has_bf16_units

TILE = 512  # inference tile side (pixels): bounds memory on large images
HALO = 32  # pixels of context kept around each tile (> the receptive field's radius, 2 * layers)


class PostFilter(nn.Module):
    """Residual CNN at half resolution: ``x + shuffle(conv stack(unshuffle(x)))``.

    ``channels`` feature maps, ``layers`` 3x3 convolutions in all (ReLU between them),
    ``shuffle`` the pixel-unshuffle factor. He initialisation (PyTorch's default shrinks
    the signal ~2.4x per ReLU layer and stalls training); the last convolution starts at
    zero, so an untrained filter is the identity.
    """

    def __init__(self, channels: int = 64, layers: int = 8, shuffle: int = 2):
        super().__init__()
        if layers < 2 or channels < 1 or shuffle < 1:
            raise ValueError(f"PostFilter needs layers >= 2, channels >= 1, shuffle >= 1; got {layers}, {channels}, {shuffle}")
        self.channels, self.layers, self.shuffle = channels, layers, shuffle
        io = 3 * shuffle * shuffle
        body: list[nn.Module] = [nn.Conv2d(io, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(channels, io, 3, padding=1))
        for conv in body[:-1:2]:  # He init keeps the activations' scale through the ReLU stack
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(body[-1].weight)
        nn.init.zeros_(body[-1].bias)
        self.body = nn.Sequential(*body)
        self.unshuffle, self.reshuffle = nn.PixelUnshuffle(shuffle), nn.PixelShuffle(shuffle)

    def config(self) -> dict:
        return {"channels": self.channels, "layers": self.layers, "shuffle": self.shuffle}

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The correction for ``x`` in [0, 1], (B, 3, H, W) with H, W multiples of ``shuffle``."""
        return self.reshuffle(self.body(self.unshuffle(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x).float()


def inference_dtype() -> torch.dtype | None:
    """bf16 autocast where the CPU has bf16 units (AMX / AVX512-BF16: ~3-5x faster here), else float32."""
    return torch.bfloat16 if has_bf16_units() else None


@torch.inference_mode()
def filter_image(model: PostFilter, image: np.ndarray, *, autocast: torch.dtype | None = None) -> np.ndarray:
    """Filter one uint8 (H, W, C) image, C in {1, 3}; returns uint8 of the same shape.

    Gray images go through as three equal channels and come back as their mean. Large
    images are filtered in ``TILE`` tiles with ``HALO`` pixels of context, so memory stays
    bounded and the result equals the whole-image result up to float rounding.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"post-filter takes uint8 (H, W, 1|3) images, got {image.dtype} {image.shape}")
    h, w, c = image.shape
    rgb = np.repeat(image, 3, axis=2) if c == 1 else image
    x = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0)
    out = torch.empty_like(x)
    s = model.shuffle
    for y0 in range(0, h, TILE):
        for x0 in range(0, w, TILE):
            y1, x1 = min(y0 + TILE, h), min(x0 + TILE, w)
            # context around the tile, aligned to the unshuffle factor so the phases stay put
            ya, xa = max(0, y0 - HALO) // s * s, max(0, x0 - HALO) // s * s
            yb, xb = min(h, y1 + HALO), min(w, x1 + HALO)
            tile = x[:, :, ya:yb, xa:xb]
            pb, pr = (-tile.shape[2]) % s, (-tile.shape[3]) % s
            if pb or pr:
                tile = nn.functional.pad(tile, (0, pr, 0, pb), mode="replicate")
            tile = tile.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                res = model.residual(tile)
            out[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1] + res.float()[:, :, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    pix = out[0].clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
    if c == 1:
        pix = np.round(pix.astype(np.float32).mean(axis=2, keepdims=True)).astype(np.uint8)
    return np.ascontiguousarray(pix)

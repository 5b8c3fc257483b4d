"""The digit autoencoder: 28x28 gray digits to a code of ``latent`` integers and back.

The small convolutional autoencoder of the source methods (LeakyReLU, Adam; codes of 28
and 128 values), made a real codec: the code is quantised to integers and each of its
``latent`` values is entropy-coded under its own learned Gaussian (a factorized prior,
Ballé, Laparra, Simoncelli, "End-to-end Optimized Image Compression", ICLR 2017), so
training trades bits against squared error (``bpp + lambda * 255^2 * MSE``) and the
bytes the codec writes are what the rate term estimated.

Pure PyTorch; no I/O. The bitstream side is :mod:`compressors.digits.codec`.
"""

from __future__ import annotations

import torch
from torch import nn

from compressors.autoencoder.model import SCALE_MIN, gaussian_likelihood, ste_round

SIDE = 28
PIXELS = SIDE * SIDE
LATENTS = (28, 128)


class DigitsAutoencoder(nn.Module):
    """Conv encoder -> ``latent`` values -> conv decoder, with a per-value Gaussian prior.

    Training (``forward``): additive uniform noise for the rate term, straight-through
    rounding of ``y - mean`` for the decoder, exactly what coding gives.
    """

    def __init__(self, latent: int = 28, width: int = 32):
        super().__init__()
        self.latent, self.width = latent, width
        w = width
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.g_a = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), act(),
            nn.Conv2d(w, w, 4, stride=2, padding=1), act(),  # 14x14
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), act(),  # 7x7
            nn.Flatten(), nn.Linear(2 * w * 49, latent),
        )
        self.g_s = nn.Sequential(
            nn.Linear(latent, 2 * w * 49), act(), nn.Unflatten(1, (2 * w, 7, 7)),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), act(),  # 14x14
            nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), act(),  # 28x28
            nn.Conv2d(w, 1, 3, padding=1),
        )
        self.means = nn.Parameter(torch.zeros(latent))
        self.log_scales = nn.Parameter(torch.full((latent,), 1.0))

    def config(self) -> dict:
        return {"latent": self.latent, "width": self.width}

    def prior_parameters(self) -> list[nn.Parameter]:
        """The code's per-value Gaussian (trained with its own, larger learning rate)."""
        return [self.means, self.log_scales]

    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scales).clamp_min(SCALE_MIN)

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 1, 28, 28) in [0, 1] -> continuous code (B, latent)."""
        return self.g_a(x)

    def decode_latent(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Dequantised code (B, latent) -> image (B, 1, 28, 28) in [0, 1]."""
        return self.g_s(y_hat).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.encode_latent(x)
        means, scales = self.means.expand_as(y), self.scales().expand_as(y)
        y_lik = gaussian_likelihood(y + torch.empty_like(y).uniform_(-0.5, 0.5), scales, means)
        y_hat = ste_round(y - means) + means
        # unclamped in training: a sigmoid (or clamp) saturates on MNIST's black background and the
        # decoder stops learning; the squared error of the raw output bounds the clamped one's
        return {"x_hat": self.g_s(y_hat), "likelihoods": y_lik}


def rd_terms(out: dict[str, torch.Tensor], x: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """Mean ``bpp + lam * 255^2 * MSE`` over the batch, with its terms."""
    bpp = -torch.log2(out["likelihoods"]).sum(1).mean() / PIXELS
    mse = ((out["x_hat"] - x) ** 2).mean()
    return {"loss": bpp + lam * 255**2 * mse, "bpp": bpp, "mse": mse}

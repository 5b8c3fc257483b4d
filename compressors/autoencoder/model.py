"""The learned transform and entropy models of the ``autoencoder`` codec.

Pure PyTorch; no I/O. The bitstream side (integer tables, constriction) lives in
:mod:`compressors.autoencoder.entropy`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCALE_MIN = 0.11  # lower bound of the Gaussian scale, as in CompressAI
SCALE_MAX = 256.0
SCALE_LEVELS = 64
LIKELIHOOD_MIN = 1e-9
Z_TAIL = 48  # z symbols are coded in [-Z_TAIL, Z_TAIL] per channel


def scale_table() -> np.ndarray:
    """The fixed table of Gaussian scales a coded scale is rounded *up* to (float64)."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def _nonneg(param: torch.Tensor, pedestal: float, bound: float) -> torch.Tensor:
    # Stored as sqrt(x + pedestal) so small values keep useful gradients (Ballé 2018, App. 6.1).
    return torch.clamp(param, min=math.sqrt(bound + pedestal)) ** 2 - pedestal


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé, Laparra, Simoncelli, ICLR 2016).

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; ``inverse=True`` gives IGDN
    (multiply instead of divide), used in the synthesis transform.
    """

    _PEDESTAL = 2.0**-36

    def __init__(self, channels: int, *, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_min = beta_min
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self._PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self._PEDESTAL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = _nonneg(self.beta, self._PEDESTAL, self.beta_min)
        gamma = _nonneg(self.gamma, self._PEDESTAL, 0.0).view(c, c, 1, 1)
        if not torch.is_grad_enabled():  # inference: in place, the same values, ~10 % faster decode
            norm = F.conv2d(x * x, gamma, beta).sqrt_()
            return norm.mul_(x) if self.inverse else x.div(norm)
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=k // 2, output_padding=s - 1)


class FactorizedDensity(nn.Module):
    """Per-channel learned univariate density of Ballé et al. 2018 (App. 6.1), used for ``z``.

    ``logits_cumulative`` is a monotone function whose sigmoid is the CDF; the
    likelihood of a unit bin is ``CDF(v + 1/2) - CDF(v - 1/2)``.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cumulative(self, v: torch.Tensor) -> torch.Tensor:
        """``v``: (C, 1, n) -> (C, 1, n)."""
        logits = v
        for i in range(len(self.matrices)):
            logits = torch.matmul(F.softplus(self.matrices[i]), logits) + self.biases[i]
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i]) * torch.tanh(logits)
        return logits

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Bin likelihoods of ``z`` (B, C, H, W) under the per-channel density."""
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail that is numerically safe
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3).clamp_min(LIKELIHOOD_MIN)

    @torch.no_grad()
    def pmf_table(self, tail: int = Z_TAIL) -> np.ndarray:
        """(C, 2*tail+1) float64 probabilities of the integers ``-tail..tail``, tails folded in.

        Computed in float64 on CPU so every machine derives the same table from the weights.
        """
        dens = _double_copy(self)
        k = torch.arange(-tail, tail + 2, dtype=torch.float64) - 0.5  # bin edges
        cdf = torch.sigmoid(dens.logits_cumulative(k.view(1, 1, -1).expand(self.channels, 1, -1))).squeeze(1)
        pmf = cdf[:, 1:] - cdf[:, :-1]
        pmf[:, 0] += cdf[:, 0]
        pmf[:, -1] += 1 - cdf[:, -1]
        return pmf.clamp_min(0).numpy()


def _double_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).to(device="cpu", dtype=torch.float64)


def gaussian_likelihood(y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Bin likelihood of ``y`` under N(means, scales^2) convolved with U(-1/2, 1/2)."""
    v = torch.abs(y - means)
    s = scales.clamp_min(SCALE_MIN)
    normal = torch.distributions.Normal(0.0, 1.0)
    lik = normal.cdf((0.5 - v) / s) - normal.cdf((-0.5 - v) / s)
    return lik.clamp_min(LIKELIHOOD_MIN)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return _RoundSTE.apply(x)


class MeanScaleHyperprior(nn.Module):
    """Variable-rate mean-scale hyperprior codec.

    Transforms and hyperprior follow Minnen, Ballé, Toderici, "Joint Autoregressive and
    Hierarchical Priors for Learned Image Compression", NeurIPS 2018 (the mean-scale
    hyperprior without the context model, CompressAI's ``mbt2018-mean``), built on
    Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale
    hyperprior", ICLR 2018. One model covers ``len(lambdas)`` qualities through
    per-quality channel gain vectors on ``y`` (gain units of Cui et al., "Asymmetric
    Gained Deep Image Compression With Continuous Rate Adaptation", CVPR 2021):
    ``y_q = y * gain[q]`` is quantised and coded, ``g_s`` sees ``y_hat * inv_gain[q]``.

    Training: additive uniform noise on ``y_q`` and ``z`` for the rate terms; the
    decoder sees ``round(y_q - mu) + mu`` (straight-through), exactly what coding gives.
    """

    STRIDE = 64  # 4 stride-2 layers in g_a, 2 more in h_a

    def __init__(self, N: int = 96, M: int = 128, qualities: int = 5):
        super().__init__()
        self.N, self.M, self.qualities = N, M, qualities
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), nn.LeakyReLU(inplace=True), conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N)
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True), deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, 2 * M, 3, 1),
        )
        self.entropy_z = FactorizedDensity(N)
        # log-gains start spread so qualities differ from step 0 (gain ~ sqrt(lambda)).
        spread = torch.linspace(-1.0, 1.0, qualities).view(qualities, 1).expand(qualities, M)
        self.log_gain = nn.Parameter(spread.clone())
        self.log_inv_gain = nn.Parameter(-spread.clone())

    def config(self) -> dict:
        """The constructor arguments (the model store records them as the architecture)."""
        return {"N": self.N, "M": self.M, "qualities": self.qualities}

    def gains(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (B, M, 1, 1) gain and inverse gain for 0-based qualities ``q`` (B,)."""
        return (
            torch.exp(self.log_gain[q]).view(-1, self.M, 1, 1),
            torch.exp(self.log_inv_gain[q]).view(-1, self.M, 1, 1),
        )

    def hyper_params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales, means = self.h_s(z_hat).chunk(2, dim=1)
        return scales, means

    def forward(self, x: torch.Tensor, q: torch.Tensor, *, autocast: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Training pass on ``x`` in [0, 1] (B, 3, H, W), H and W multiples of 64.

        ``autocast``: run the four transforms (convolutions and GDN) under autocast to this
        dtype (bf16 on CPUs with AMX / AVX512-BF16, and on GPUs); the quantisation, the
        likelihoods and the loss stay in float32 either way.
        """
        def transform(net: nn.Module, v: torch.Tensor) -> torch.Tensor:
            if autocast is None:
                return net(v)
            with torch.autocast(v.device.type, dtype=autocast):
                return net(v).float()

        gain, inv_gain = self.gains(q)
        y = transform(self.g_a, x) * gain
        z = transform(self.h_a, y)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_lik = self.entropy_z.likelihood(z_noisy)
        scales, means = transform(self.h_s, ste_round(z)).chunk(2, dim=1)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_lik = gaussian_likelihood(y_noisy, scales, means)
        y_hat = ste_round(y - means) + means
        x_hat = transform(self.g_s, y_hat * inv_gain)
        return {"x_hat": x_hat, "y_likelihoods": y_lik, "z_likelihoods": z_lik}

    @torch.no_grad()
    def extend_qualities(self, qualities: int) -> None:
        """Add rate levels above the current top one (for fine-tuning to larger lambdas).

        New log-gains continue the spacing of the two highest trained levels, so a new level
        starts as a finer quantiser than the old top one and training refines it.
        """
        if qualities <= self.qualities:
            return
        step_g = self.log_gain[-1] - self.log_gain[-2] if self.qualities > 1 else torch.full((self.M,), 0.5)
        step_i = self.log_inv_gain[-1] - self.log_inv_gain[-2] if self.qualities > 1 else torch.full((self.M,), -0.5)
        extra = torch.arange(1, qualities - self.qualities + 1, dtype=self.log_gain.dtype).view(-1, 1)
        self.log_gain = nn.Parameter(torch.cat([self.log_gain, self.log_gain[-1] + extra * step_g]))
        self.log_inv_gain = nn.Parameter(torch.cat([self.log_inv_gain, self.log_inv_gain[-1] + extra * step_i]))
        self.qualities = qualities


def rd_loss(out: dict[str, torch.Tensor], x: torch.Tensor, lambdas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-batch mean of ``R + lambda * 255^2 * MSE`` (bpp, x in [0, 1]) with per-sample lambdas."""
    b, _, h, w = x.shape
    bits = -(torch.log2(out["y_likelihoods"]).sum((1, 2, 3)) + torch.log2(out["z_likelihoods"]).sum((1, 2, 3)))
    bpp = bits / (h * w)
    mse = ((out["x_hat"] - x) ** 2).mean((1, 2, 3))
    loss = (bpp + lambdas * 255**2 * mse).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}

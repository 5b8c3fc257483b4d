"""The learned pixel model of the ``lossless`` codec: a small MLP over the causal context.

For each pixel the trunk (two ReLU layers) reads the integer context of
:mod:`.features`; three heads give, for the planes G, R, B in that order, the mean and
log-scale of a discretized logistic over the pixel's value (the tails folded onto 0 and
255, as in PixelCNN++, Salimans et al. 2017). The R head also reads G's prediction error
at the same pixel, the B head G's and R's: their means are ``mu0 + alpha . e`` (the
linear channel dependence of PixelCNN++) and their scales see ``|e|``.

Training runs this module in float (:meth:`LosslessMLP.forward` gives bits per value).
:meth:`LosslessMLP.freeze` then turns it into integers (12-bit weights per output row,
10-bit activations, integer requantisation multipliers, integer coding tables) stored as
buffers, so the model file itself holds the integer network. Coding only ever runs the
integer network (:class:`.integer.IntegerNet`): every matrix product multiplies integers whose
partial sums stay integers below 2**24, computed exactly in float64 in any order, on any
machine and thread count. The means land on a
1/``FRACTIONS`` grid and the scales on a log grid of ``SCALES`` steps; the coding tables
(65536-sum integer frequencies, one per grid point) are computed once at freeze time and
shipped in the model, so decoding never evaluates a transcendental function.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .features import N_FEATURES
from .integer import (AMAX, EXACT, FRACTIONS, INPUT_SCALE, LOG_STEP, MEAN_UNIT, SCALE_OFFSET, SCALES,
                      SYMBOLS, WMAX, coding_tables)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# Extra inputs of each head (the errors of the planes coded before, and their sizes) and its outputs.
HEAD_EXTRA = (0, 2, 4)
HEAD_OUT = (2, 3, 4)  # (mu, logs), (mu0, alpha_g, logs), (mu0, alpha_g, alpha_r, logs)


class LosslessMLP(nn.Module):
    """Causal-context MLP with one head per plane; float for training, integers after :meth:`freeze`."""

    def __init__(self, hidden: int = 64, trunk2: int = 48, head: int = 24):
        super().__init__()
        self.hidden, self.trunk2, self.head = hidden, trunk2, head
        self.trunk = _mlp([N_FEATURES, hidden, trunk2])
        self.heads = nn.ModuleList(
            [nn.Linear(trunk2, HEAD_OUT[0])]
            + [_mlp([trunk2 + HEAD_EXTRA[p], head, HEAD_OUT[p]]) for p in (1, 2)]
        )
        for name, shape in self._frozen_shapes().items():
            self.register_buffer(name, torch.zeros(shape))
        with torch.no_grad():  # start from MED with a fixed scale: training only has to refine it
            for out in (self.heads[0], self.heads[1][2], self.heads[2][2]):
                out.weight.mul_(0.01)
                out.bias.zero_()
                out.bias[-1] = math.log(2.0)

    def config(self) -> dict:
        return {"hidden": self.hidden, "trunk2": self.trunk2, "head": self.head}

    # ------------------------------------------------------------------ float (training)

    def params(self, feats: torch.Tensor, base: torch.Tensor, values: torch.Tensor):
        """Means and log-scales (n, 3) in levels, given integer features, MED bases and true values."""
        h = F.relu(self.trunk(feats * INPUT_SCALE))
        err = (values - base) * INPUT_SCALE
        out0 = self.heads[0](h)
        e1 = torch.cat([err[:, :1], err[:, :1].abs()], 1)
        out1 = self.heads[1](torch.cat([h, e1], 1))
        e2 = torch.cat([err[:, :1], err[:, :1].abs(), err[:, 1:2], err[:, 1:2].abs()], 1)
        out2 = self.heads[2](torch.cat([h, e2], 1))
        e = values - base
        mu = torch.stack([out0[:, 0], out1[:, 0] + out1[:, 1] * e[:, 0],
                          out2[:, 0] + out2[:, 1] * e[:, 0] + out2[:, 2] * e[:, 1]], 1) + base
        logs = torch.stack([out0[:, 1], out1[:, 2], out2[:, 3]], 1)
        lo, hi = LOG_STEP * SCALE_OFFSET, LOG_STEP * (SCALE_OFFSET + SCALES - 1)
        return mu, logs.clamp(lo, hi)

    def forward(self, feats: torch.Tensor, base: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Bits of each value (n, 3) under the discretized logistic with tails folded onto 0 and 255."""
        mu, logs = self.params(feats, base, values)
        return logistic_bits(values, mu, logs)

    # ------------------------------------------------------------------ integers (coding)

    def _frozen_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for name, (k, n) in self._layer_sizes().items():
            shapes[f"q_{name}_w"] = (n, k)  # int8 weights
            shapes[f"q_{name}_b"] = (n,)  # bias in accumulator units
            shapes[f"q_{name}_m"] = (n,)  # requantisation multiplier
            shapes[f"q_{name}_k"] = (n,)  # requantisation shift (a power of two)
        shapes["q_cdf"] = (SCALES, FRACTIONS, SYMBOLS + 1)
        shapes["q_frozen"] = (1,)
        return shapes

    def _layer_sizes(self) -> dict[str, tuple[int, int]]:
        out = {"t0": (N_FEATURES, self.hidden), "t1": (self.hidden, self.trunk2), "h0": (self.trunk2, HEAD_OUT[0])}
        for p in (1, 2):
            out[f"h{p}a"] = (self.trunk2 + HEAD_EXTRA[p], self.head)
            out[f"h{p}b"] = (self.head, HEAD_OUT[p])
        return out

    def _float_layers(self) -> dict[str, nn.Linear]:
        return {"t0": self.trunk[0], "t1": self.trunk[2], "h0": self.heads[0], "h1a": self.heads[1][0],
                "h1b": self.heads[1][2], "h2a": self.heads[2][0], "h2b": self.heads[2][2]}

    @torch.no_grad()
    def freeze(self, feats: torch.Tensor, base: torch.Tensor, values: torch.Tensor) -> None:
        """Quantise to the integer network, calibrating activation scales on these samples."""
        layers = self._float_layers()
        # Activation scales: the 99.99th percentile of each ReLU layer's output maps to AMAX.
        h1 = F.relu(layers["t0"](feats * INPUT_SCALE))
        h2 = F.relu(layers["t1"](h1))
        err = (values - base) * INPUT_SCALE
        e1 = torch.cat([err[:, :1], err[:, :1].abs()], 1)
        e2 = torch.cat([e1, err[:, 1:2], err[:, 1:2].abs()], 1)
        a1 = F.relu(layers["h1a"](torch.cat([h2, e1], 1)))
        a2 = F.relu(layers["h2a"](torch.cat([h2, e2], 1)))

        def act_scale(a):
            return max(float(torch.quantile(a.flatten()[:1_000_000], 0.9999)), 1e-3) / AMAX

        s_t0, s_t1, s_h1, s_h2 = act_scale(h1), act_scale(h2), act_scale(a1), act_scale(a2)
        feat_in = np.full(N_FEATURES, INPUT_SCALE)
        e_in = np.full(4, INPUT_SCALE)
        # (input column scales, output unit per column or None for a ReLU layer with scale s)
        mu_units = [1 / MEAN_UNIT, LOG_STEP]
        plan = {
            "t0": (feat_in, s_t0), "t1": (np.full(self.hidden, s_t0), s_t1),
            "h0": (np.full(self.trunk2, s_t1), np.array(mu_units)),
            "h1a": (np.concatenate([np.full(self.trunk2, s_t1), e_in[:2]]), s_h1),
            "h1b": (np.full(self.head, s_h1), np.array([1 / MEAN_UNIT, 1 / MEAN_UNIT, LOG_STEP])),
            "h2a": (np.concatenate([np.full(self.trunk2, s_t1), e_in]), s_h2),
            "h2b": (np.full(self.head, s_h2), np.array([1 / MEAN_UNIT] * 3 + [LOG_STEP])),
        }
        for name, (in_scale, out_unit) in plan.items():
            lin = layers[name]
            w = lin.weight.double().numpy() * in_scale[None, :]
            b = lin.bias.double().numpy()
            sw = np.maximum(np.abs(w).max(axis=1), 1e-12) / WMAX
            wq = np.clip(np.round(w / sw[:, None]), -WMAX, WMAX)
            unit = np.full(len(b), out_unit) if np.isscalar(out_unit) else out_unit
            ratio = sw / unit  # accumulator unit -> output unit
            k = 22 - np.ceil(np.log2(ratio))  # per row: the multiplier keeps 22-23 bits
            m = np.round(ratio * 2.0**k)
            bq = np.clip(np.round(b / sw), -(EXACT - 1), EXACT - 1)
            getattr(self, f"q_{name}_w").copy_(torch.from_numpy(wq))
            getattr(self, f"q_{name}_b").copy_(torch.from_numpy(bq))
            getattr(self, f"q_{name}_m").copy_(torch.from_numpy(m))
            getattr(self, f"q_{name}_k").copy_(torch.from_numpy(k))
        self.q_cdf.copy_(torch.from_numpy(coding_tables().astype(np.float64)))
        self.q_frozen.fill_(1)


def logistic_bits(x: torch.Tensor, mu: torch.Tensor, logs: torch.Tensor) -> torch.Tensor:
    """-log2 P(x) for integer x in 0..255 under a discretized logistic, tails folded onto 0 and 255."""
    inv = torch.exp(-logs)
    c = x - mu
    plus, minus = inv * (c + 0.5), inv * (c - 0.5)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for x = 0
    log_one_minus_cdf_min = -F.softplus(minus)  # log(1 - sigmoid(minus)), for x = 255
    mid = minus + 0.5 * (plus - minus)  # fallback when the difference underflows: density * 1
    log_pdf_mid = mid - logs - 2.0 * F.softplus(mid)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
    logp = torch.where(x < 0.5, log_cdf_plus, torch.where(x > 254.5, log_one_minus_cdf_min, inner))
    return -logp / math.log(2.0)

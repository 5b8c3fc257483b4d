"""Entropy coding of the latents with constriction (ANS), from the model's own tables.

* ``z`` (hyper-latent): each channel has a categorical table over the integers
  ``-Z_TAIL..Z_TAIL``, the learned factorized density evaluated at the unit bins
  (computed once per model in float64 on CPU).
* ``y``: a quantized Gaussian per element with mean 0 over the residual
  ``round(y - mu)``; its scale is rounded *up* to a fixed table of 64 scales
  (as CompressAI does), and ``mu`` and the scale index come from ``h_s(z_hat)``
  evaluated in float64.

Determinism: on one machine with one torch build and thread count, encoding is
bit-exact and decoding reproduces exactly the image the encoder's caller measured.
Across devices (CPU vs GPU, other thread counts) the bitstream stays decodable unless a
float64 ``h_s`` output lands within ~1e-12 of a scale-table boundary (the parse depends
only on ``z`` symbols and those scale indices); the float32 synthesis ``g_s`` may then
differ in the last bits, i.e. rarely by one 8-bit level in a pixel.
"""

from __future__ import annotations

import copy

import constriction
import numpy as np
import torch

from .model import Z_TAIL, MeanScaleHyperprior, scale_table

Y_RANGE = 2047  # y residual symbols are clamped to [-Y_RANGE, Y_RANGE]


class EntropyTables:
    """Frozen coding tables of one model (the ``update()`` step of CompressAI)."""

    def __init__(self, z_pmf: np.ndarray, h_s64: torch.nn.Module):
        self.z_pmf = z_pmf
        self.z_models = [constriction.stream.model.Categorical(p, perfect=False) for p in z_pmf]
        self.scales = scale_table()
        self.h_s64 = h_s64
        self.y_family = constriction.stream.model.QuantizedGaussian(-Y_RANGE, Y_RANGE)

    @classmethod
    def from_model(cls, model: MeanScaleHyperprior) -> "EntropyTables":
        h_s64 = copy.deepcopy(model.h_s).to("cpu", torch.float64).eval()
        return cls(model.entropy_z.pmf_table(Z_TAIL), h_s64)

    @torch.inference_mode()
    def y_params(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scale_index int32, mean float64)`` arrays of shape (B, M, h, w) from z symbols."""
        out = self.h_s64(torch.from_numpy(z_hat.astype(np.float64))).numpy()
        scales, means = np.split(out, 2, axis=1)
        idx = np.searchsorted(self.scales[:-1], scales, side="left").astype(np.int32)
        return idx, means

    def encode(self, z_sym: np.ndarray, y_sym: np.ndarray, y_idx: np.ndarray) -> bytes:
        """One image: ``z_sym`` (Cz, hz, wz), ``y_sym`` and ``y_idx`` (M, h, w) -> ANS words."""
        coder = constriction.stream.stack.AnsCoder()
        std = self.scales[y_idx.ravel()]
        coder.encode_reverse(y_sym.ravel().astype(np.int32), self.y_family, np.zeros_like(std), std)
        for c in range(z_sym.shape[0] - 1, -1, -1):  # a stack: decoded first = encoded last
            coder.encode_reverse((z_sym[c].ravel() + Z_TAIL).astype(np.int32), self.z_models[c])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode_z(self, coder, z_shape: tuple[int, int, int]) -> np.ndarray:
        cz, hz, wz = z_shape
        z = np.empty((cz, hz * wz), dtype=np.int32)
        for c in range(cz):
            z[c] = coder.decode(self.z_models[c], hz * wz)
        return (z - Z_TAIL).reshape(cz, hz, wz)

    def decode_y(self, coder, y_idx: np.ndarray) -> np.ndarray:
        std = self.scales[y_idx.ravel()]
        return coder.decode(self.y_family, np.zeros_like(std), std).reshape(y_idx.shape)


def ans_decoder(payload: bytes):
    if len(payload) % 4:
        raise ValueError("autoencoder payload length is not a multiple of 4 bytes")
    return constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))

"""Entropy coding of the latents with constriction (ANS), from tables every machine derives alike.

Container version 2 (written now; Ballé, Johnston, Minnen, ICLR 2019 "Integer networks
for data compression with latent-variable models"):

* ``z`` (hyper-latent): symbols ``-Z_TAIL..Z_TAIL``, one integer table per channel from
  the learned factorized density, evaluated with :mod:`compressors.exact`'s deterministic
  float64 functions and rounded to 24-bit integers.
* ``y``: the residual ``round(y - mu)`` under a zero-mean Gaussian whose scale is the
  first entry ``>=`` the predicted scale in a fixed table of 64 scales (correctly rounded
  values), as 64 integer tables; ``mu`` and the table index come from
  :class:`~compressors.exact.IntegerNetwork` ``h_s`` on the integer ``z``: a fixed-point
  mean (``mean_q / 2**MEAN_FRAC_BITS``, so ``y_hat = symbol + mean`` is exact) and an index
  found by integer comparison.

Encoder and decoder therefore derive the same tables, indices and ``y_hat`` bit for bit
whatever the device, thread count, float precision, BLAS or torch version; only the float
synthesis ``g_s`` after them may differ in the last bits. The container also carries a
checksum of the latent (:func:`compressors.exact.latent_checksum` over the ``z`` and ``y``
symbols, indices and fixed-point means) so a decoder that still reads another latent
(another constriction build, a bug) reports an error instead of returning wrong pixels.

Container version 1 (the first shipped format) is decoded by :class:`LegacyTables`:
the same tables as when it was written, from float64 ``h_s`` and constriction's
``QuantizedGaussian``; bit-exact on one machine and torch build, decodable elsewhere
unless a float64 scale lands within ~1e-12 of a table boundary.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import constriction
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .. import exact
from .model import SCALE_LEVELS, SCALE_MAX, SCALE_MIN, Z_TAIL, FactorizedDensity, MeanScaleHyperprior, scale_table

Y_RANGE = 2047  # y residual symbols are clamped to [-Y_RANGE, Y_RANGE]
MEAN_FRAC_BITS = 16  # h_s outputs (scales and means) in units of 2**-16
H_S_ACT_BOUND = 4096.0  # |hidden activation| clamp of the integer h_s (real inputs stay below ~50)
# The integer h_s runs layer by layer over bands of rows (compressors.rowstream; integers, so
# exactly the whole latent's values): each layer holds about H_S_BAND_ELEMENTS int64 values of
# its output (at least 2 rows of its strip), and the output is taken H_S_ROWS y rows and
# H_S_STRIP y columns at a time (issue 12.4).
H_S_BAND_ELEMENTS = 1 << 16
H_S_ROWS = 8
H_S_STRIP = 32  # y columns (512 pixels) at a time: a wide image's bands stay a few MB


@dataclass
class Latent:
    """One image's quantised latent as the bitstream carries it (container version 2)."""

    z: np.ndarray  # int32 (N, h, w): hyper-latent symbols
    y: np.ndarray  # int32 (M, H/16, W/16): residual symbols round(y - mean)
    index: np.ndarray  # uint8 (int32 before issue 12.4), like y: scale-table index
    mean_q: np.ndarray  # int32, or int64 when a value needs it, like y: mean * 2**MEAN_FRAC_BITS

    def y_hat(self) -> np.ndarray:
        """``y + mean`` exactly, float64."""
        return self.y + np.ldexp(self.mean_q.astype(np.float64), -MEAN_FRAC_BITS)

    def y_hat_into(self, out: np.ndarray) -> None:
        """``y_hat()`` rounded into ``out`` (float32, like y), a channel at a time (no whole float64 copy)."""
        for c in range(self.y.shape[0]):
            out[c] = self.y[c] + np.ldexp(self.mean_q[c].astype(np.float64), -MEAN_FRAC_BITS)

    def y_hat_in_place(self) -> np.ndarray:
        """``y_hat()`` rounded to float32 in ``y``'s own memory (its int32 symbols are gone after):
        a decoder's last use of the latent needs no second array (issue 12.4)."""
        y = np.ascontiguousarray(self.y, dtype=np.int32)
        out = y.view(np.float32)
        for c in range(y.shape[0]):  # a channel's float64 values are made before its symbols are overwritten
            out[c] = y[c] + np.ldexp(self.mean_q[c].astype(np.float64), -MEAN_FRAC_BITS)
        self.y = None
        return out

    def checksum(self) -> bytes:
        return exact.latent_checksum(self.z, self.y, self.index, self.mean_q)


def z_symbols(z: np.ndarray) -> np.ndarray:
    """The hyper-latent's symbols from the float ``h_a`` output: the parameter path's only input
    from the float side, made integer here (round half to even, clamped to ``±Z_TAIL``)."""
    return np.clip(np.rint(np.asarray(z, dtype=np.float64)), -Z_TAIL, Z_TAIL).astype(np.int32)


@functools.lru_cache(maxsize=1)
def y_coding() -> tuple[np.ndarray, np.ndarray, exact.IndexedCategoricals]:
    """The model-independent ``y`` side: (scale table, its integer thresholds, coding tables)."""
    scales = exact.exp_table(SCALE_MIN, SCALE_MAX, SCALE_LEVELS)
    counts = exact.gaussian_counts(scales, -Y_RANGE, Y_RANGE)
    return scales, exact.thresholds(scales[:-1], MEAN_FRAC_BITS), exact.IndexedCategoricals(counts, -Y_RANGE)


def z_pmf(density: FactorizedDensity, tail: int = Z_TAIL) -> np.ndarray:
    """(C, 2*tail+1) probabilities of ``-tail..tail`` under the factorized density, tails folded
    in: :meth:`FactorizedDensity.logits_cumulative` with deterministic float64 functions and
    sums in a fixed order, so every machine gets the same bits."""
    def arr(p: torch.Tensor) -> np.ndarray:
        return p.detach().to("cpu", torch.float64).numpy()

    mats = [exact.softplus(arr(m)) for m in density.matrices]  # (C, out, in)
    biases = [arr(b) for b in density.biases]  # (C, out, 1)
    factors = [exact.tanh(arr(f)) for f in density.factors]  # (C, out, 1)
    edges = np.arange(-tail, tail + 2, dtype=np.float64) - 0.5
    logits = np.broadcast_to(edges, (density.channels, 1, edges.size))
    for i, mat in enumerate(mats):
        acc = mat[:, :, :1] * logits[:, :1, :]
        for j in range(1, mat.shape[2]):
            acc = acc + mat[:, :, j:j + 1] * logits[:, j:j + 1, :]
        logits = acc + biases[i]
        if i < len(factors):
            logits = logits + factors[i] * exact.tanh(logits)
    cdf = exact.sigmoid(logits[:, 0, :])
    pmf = cdf[:, 1:] - cdf[:, :-1]
    pmf[:, 0] += cdf[:, 0]
    pmf[:, -1] += 1.0 - cdf[:, -1]
    return np.maximum(pmf, 0.0)


def ans_decoder(payload: bytes):
    if len(payload) % 4:
        raise ValueError("autoencoder payload length is not a multiple of 4 bytes")
    try:
        return constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    except (RuntimeError, ValueError) as exc:  # e.g. a last word of zero: no valid ANS state
        raise ValueError(f"autoencoder payload does not decode: {exc}") from None


class EntropyTables:
    """Frozen coding tables of one model (the ``update()`` step of CompressAI), version 2."""

    def __init__(self, model: MeanScaleHyperprior):
        self.h_s = exact.IntegerNetwork.from_torch(model.h_s, input_bound=Z_TAIL, out_frac_bits=MEAN_FRAC_BITS,
                                                   act_bound=H_S_ACT_BOUND)
        self.z_codes = exact.IndexedCategoricals(exact.categorical_counts(z_pmf(model.entropy_z)), -Z_TAIL)
        self.scales, self.thresholds, self.y_codes = y_coding()
        assert len(self.thresholds) < 256  # scale indices are stored as uint8

    def y_params(self, z_sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scale index uint8, mean_q int32 or int64)``, each (B, M, h, w), from z symbols (B, N, hz, wz).

        ``h_s`` runs layer by layer over bands of rows (:meth:`exact.IntegerNetwork.bands`,
        ``H_S_BAND_ELEMENTS``): the same integers as on all rows at once, no whole activation held."""
        b, _, hz, wz = z_sym.shape
        m = self.h_s.layers[-1].cout // 2
        shape = (b, m, self.h_s.out_size(hz), self.h_s.out_size(wz))
        idx, mean_q = np.empty(shape, np.uint8), np.empty(shape, np.int32)
        with threadpool_limits(limits=1, user_api="blas"):  # a band's products are small: threads only wait
            for r0, c0, piece in self.h_s.bands(z_sym, H_S_ROWS, band_elements=H_S_BAND_ELEMENTS,
                                                strip=H_S_STRIP):  # (B, rows, cols, 2M)
                dest = (slice(r0, r0 + piece.shape[1]), slice(c0, c0 + piece.shape[2]))
                idx[:, :, dest[0], dest[1]] = exact.table_index(piece[..., :m], self.thresholds).transpose(0, 3, 1, 2)
                means = piece[..., m:]
                if mean_q.dtype != np.int64 and max(-int(means.min()), int(means.max())) >= 2**31:
                    mean_q = mean_q.astype(np.int64)  # a mean beyond 2**15: only a crafted z makes one
                mean_q[:, :, dest[0], dest[1]] = means.transpose(0, 3, 1, 2)
        return idx, mean_q

    def latents(self, z_sym: np.ndarray, y: np.ndarray) -> list[Latent]:
        """The encoder's latents from z symbols (B, N, hz, wz) and the float ``y`` (B, M, h, w)."""
        idx, mean_q = self.y_params(z_sym)
        y_sym = np.clip(np.rint(y.astype(np.float64) - np.ldexp(mean_q.astype(np.float64), -MEAN_FRAC_BITS)),
                        -Y_RANGE, Y_RANGE).astype(np.int32)
        return [Latent(z_sym[i], y_sym[i], idx[i], mean_q[i]) for i in range(len(z_sym))]

    def _z_index(self, shape: tuple[int, int, int]) -> np.ndarray:
        return np.broadcast_to(np.arange(shape[0], dtype=np.int32).reshape(-1, 1, 1), shape)

    def encode(self, latent: Latent) -> bytes:
        """One image's latent -> ANS words (y pushed first, so the decoder reads z first)."""
        coder = constriction.stream.stack.AnsCoder()
        self.y_codes.encode(coder, latent.y, latent.index)
        self.z_codes.encode(coder, latent.z, self._z_index(latent.z.shape))
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, z_shape: tuple[int, int, int]) -> Latent:
        """ANS words -> the latent; ``ValueError`` if the words do not parse or are left over."""
        coder = ans_decoder(payload)
        try:
            z = self.z_codes.decode(coder, self._z_index(z_shape))
            idx, mean_q = self.y_params(z[None])
            y = self.y_codes.decode(coder, idx[0])
        except (RuntimeError, ValueError) as exc:  # constriction raises on exhausted / invalid data
            raise ValueError(f"autoencoder payload does not decode: {exc}") from None
        if not coder.is_empty():
            raise ValueError(f"autoencoder payload has {coder.num_valid_bits()} bits left after the latent: "
                             "this decoder read another latent than the encoder wrote")
        return Latent(z.astype(np.int32), y, idx[0], mean_q[0])


class LegacyTables:
    """Container version 1: float64 ``h_s``, table snapping in float64, constriction's
    ``QuantizedGaussian`` and categorical z tables from torch float64 (kept unchanged so the
    artifacts written with it still decode as they did)."""

    def __init__(self, model: MeanScaleHyperprior):
        self.z_models = [constriction.stream.model.Categorical(p, perfect=False)
                         for p in model.entropy_z.pmf_table(Z_TAIL)]
        self.scales = scale_table()
        # contiguous float64, exactly as version 1 evaluated it (the coding model runs channels-last)
        self.h_s64 = copy.deepcopy(model.h_s).to("cpu", torch.float64, memory_format=torch.contiguous_format).eval()
        self.y_family = constriction.stream.model.QuantizedGaussian(-Y_RANGE, Y_RANGE)

    @torch.inference_mode()
    def y_params(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scale_index int32, mean float64)`` arrays of shape (B, M, h, w) from z symbols."""
        out = self.h_s64(torch.from_numpy(z_hat.astype(np.float64))).numpy()
        scales, means = np.split(out, 2, axis=1)
        idx = np.searchsorted(self.scales[:-1], scales, side="left").astype(np.int32)
        return idx, means

    def encode(self, z_sym: np.ndarray, y_sym: np.ndarray, y_idx: np.ndarray) -> bytes:
        """Version-1 words (kept to test the legacy decoder on fresh models)."""
        coder = constriction.stream.stack.AnsCoder()
        std = self.scales[y_idx.ravel()]
        coder.encode_reverse(y_sym.ravel().astype(np.int32), self.y_family, np.zeros_like(std), std)
        for c in range(z_sym.shape[0] - 1, -1, -1):  # a stack: decoded first = encoded last
            coder.encode_reverse((z_sym[c].ravel() + Z_TAIL).astype(np.int32), self.z_models[c])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode_y_hat(self, payload: bytes, z_shape: tuple[int, int, int]) -> np.ndarray:
        """Version-1 words -> ``y_hat`` float64 (M, h, w)."""
        coder = ans_decoder(payload)
        cz, hz, wz = z_shape
        try:
            z = np.empty((cz, hz * wz), dtype=np.int32)
            for c in range(cz):
                z[c] = coder.decode(self.z_models[c], hz * wz)
            z = (z - Z_TAIL).reshape(cz, hz, wz)
            idx, means = self.y_params(z[None])
            std = self.scales[idx[0].ravel()]
            y = coder.decode(self.y_family, np.zeros_like(std), std).reshape(idx[0].shape)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"autoencoder payload does not decode: {exc}") from None
        return y + means[0]

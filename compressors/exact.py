"""Entropy-coding parameters that every machine derives bit for bit the same.

An entropy decoder must rebuild exactly the probability tables the encoder used, or the
stream desynchronises and the image comes back wrong. A learned codec derives those
tables from a network (here: the hyperprior ``h_s`` predicts a scale and a mean per
latent element); evaluated in floating point, that network gives slightly different
numbers on another device, thread count, precision or library version, and a value near
a table boundary then picks another table. Ballé, Johnston and Minnen, "Integer networks
for data compression with latent-variable models" (ICLR 2019) cure this by computing the
parameters with integer arithmetic. This module holds the pieces any learned codec that
entropy-codes can reuse:

* :class:`IntegerNetwork` -- a fixed-point integer version of a trained
  ``torch.nn.Sequential`` of ``Conv2d`` / ``ConvTranspose2d`` / ``LeakyReLU`` / ``ReLU``
  layers, derived deterministically from its float weights (weights and biases rounded to
  a power-of-two grid, activations requantised per layer with integer rounding,
  LeakyReLU as an integer multiply and floor division). The products are summed by float64
  BLAS on integer values whose worst-case sums stay below 2**53 (checked when the network
  is built), so every summation order gives the same exact integer result: fast and exact.
* :func:`thresholds` / :func:`table_index` -- the index of an integer fixed-point
  parameter (e.g. a scale) in a table, by integer comparison.
* :func:`categorical_counts`, :func:`gaussian_counts` and :class:`IndexedCategoricals` --
  integer coding tables (24-bit fixed point, every symbol at least 1/2**24) and ANS coding
  of symbols that each pick their table by an integer index. constriction receives integer
  counts that sum to its exact budget, so its tables equal ours exactly (no rounding of its
  own; ``tests/test_exact.py`` probes the boundaries).
* :func:`exp`, :func:`log`, :func:`tanh`, :func:`sigmoid`, :func:`softplus`,
  :func:`normal_sf` -- float64 functions built only from IEEE-754 basic operations (+, -,
  *, /, rint, frexp, ldexp, each correctly rounded), so unlike ``np.exp`` (SIMD variants)
  or libm they return the same bits on every platform. They build tables from weights.
* :func:`latent_checksum` -- a 64-bit BLAKE2b digest of decoded integer arrays, to put in a
  container so a decoder that derived a different latent says so instead of returning
  wrong pixels.

Pure numpy (torch only to read a module's weights); no I/O.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal, getcontext
from typing import Sequence

import numpy as np

PRECISION = 24  # constriction's fixed-point precision for the default ANS coder
EXACT_LIMIT = 2**52  # float64 sums of integers stay exact below 2**53; one bit of margin

# ---------------------------------------------------------------------------------------------
# Deterministic float64 functions (IEEE-754 basic operations only)

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two (fdlibm): k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_COEFFS = [1.0 / math.factorial(n) for n in range(15)]  # Taylor series of exp on |r| <= ln2/2
_SQRT_HALF = 0.70710678118654752440


def exp(x) -> np.ndarray:
    """``e**x`` in float64, within ~2 ulp, identical on every IEEE-754 platform."""
    x = np.clip(np.asarray(x, dtype=np.float64), -745.0, 709.0)
    k = np.rint(x * _INV_LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _EXP_COEFFS[-1])
    for c in reversed(_EXP_COEFFS[:-1]):
        p = p * r + c
    return np.ldexp(p, k.astype(np.int64))


def log(x) -> np.ndarray:
    """Natural logarithm of positive float64 values, identical on every IEEE-754 platform."""
    x = np.asarray(x, dtype=np.float64)
    if np.any(~(x > 0)):
        raise ValueError("log of a non-positive value")
    m, e = np.frexp(x)  # x = m * 2**e, m in [0.5, 1)
    small = m < _SQRT_HALF
    m = np.where(small, m * 2.0, m)
    e = (e - small).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)  # |s| <= 0.1716: log m = 2 atanh s
    s2 = s * s
    acc = np.full_like(s, 1.0 / 23.0)
    for n in range(21, 0, -2):
        acc = acc * s2 + 1.0 / n
    return e * _LN2_HI + (2.0 * s * acc + e * _LN2_LO)


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + exp(-np.asarray(x, dtype=np.float64)))


def tanh(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    t = exp(-2.0 * np.abs(x))
    return np.sign(x) * ((1.0 - t) / (1.0 + t))


def softplus(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0.0) + log(1.0 + exp(-np.abs(x)))


def normal_sf(x) -> np.ndarray:
    """``P(X > x)`` for a standard normal X (relative error < 1.2e-7 everywhere, tails included).

    ``erfc`` by the Chebyshev fit of Press et al., *Numerical Recipes* (erfcc), on the
    deterministic :func:`exp`.
    """
    z = np.abs(np.asarray(x, dtype=np.float64)) * _SQRT_HALF
    t = 1.0 / (1.0 + 0.5 * z)
    poly = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
              1.00002368, -1.26551223):
        poly = poly * t + c
    half_erfc = 0.5 * (t * exp(poly - z * z))
    return np.where(np.asarray(x) >= 0, half_erfc, 1.0 - half_erfc)


def exp_table(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` values evenly spaced in log between ``lo`` and ``hi``, each correctly rounded.

    Computed with :mod:`decimal` (its ``exp`` and ``ln`` are correctly rounded), so every
    platform gets the same float64 values.
    """
    getcontext().prec = 40
    a, b = Decimal(repr(lo)).ln(), Decimal(repr(hi)).ln()
    return np.array([float((a + (b - a) * i / (n - 1)).exp()) for i in range(n)], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Integer coding tables and indexed ANS coding


def categorical_counts(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer tables for the rows of ``pmf`` (K, n): ``counts + 1`` are the probabilities in
    units of ``2**-precision`` (every symbol at least one unit); each row of counts sums to
    ``2**precision - n``. Deterministic given ``pmf`` (rounded to nearest; the rounding
    remainder goes to the row's mode).
    """
    pmf = np.atleast_2d(np.asarray(pmf, dtype=np.float64))
    k, n = pmf.shape
    free = 2**precision - n
    if n < 2 or free <= 0:
        raise ValueError(f"a categorical table needs 2 .. {2**precision - 1} symbols, got {n}")
    pmf = np.maximum(pmf, 0.0)
    total = pmf.sum(axis=1, keepdims=True)
    if np.any(~(total > 0)):
        raise ValueError("a categorical table needs positive mass")
    counts = np.rint(pmf * (free / total)).astype(np.int64)
    counts[np.arange(k), np.argmax(pmf, axis=1)] += free - counts.sum(axis=1)
    return counts


def gaussian_counts(scales: Sequence[float], lo: int, hi: int, precision: int = PRECISION) -> np.ndarray:
    """Integer tables (len(scales), hi - lo + 1) of N(0, s**2) integrated over the unit bins
    of ``lo..hi`` (the tails folded into the end bins), as :func:`categorical_counts`."""
    v = np.abs(np.arange(lo, hi + 1, dtype=np.float64))
    s = np.asarray(scales, dtype=np.float64).reshape(-1, 1)
    # N(0, s**2) is symmetric: a bin's mass is a difference of upper tails at |v| -/+ 1/2 (accurate).
    pmf = normal_sf((v - 0.5) / s) - normal_sf((v + 0.5) / s)
    pmf[:, 0] = normal_sf(-(lo + 0.5) / s[:, 0])  # P(X < lo + 1/2)
    pmf[:, -1] = normal_sf((hi - 0.5) / s[:, 0])  # P(X > hi - 1/2)
    return categorical_counts(pmf, precision)


class IndexedCategoricals:
    """A family of categorical tables over the symbols ``lo..hi``; each symbol is coded with
    the table its integer index names.

    Symbols are grouped by index (a stable sort) and each group is coded in one
    constriction call, so coding costs a few vectorised calls, not one per symbol. The
    decoder must know the indices before it reads the symbols (they come from already
    decoded data, e.g. a hyper-latent), and decodes exactly what was encoded.
    """

    def __init__(self, counts: np.ndarray, lo: int):
        import constriction

        self.counts = np.asarray(counts, dtype=np.int64)
        self.lo = int(lo)
        self.hi = self.lo + self.counts.shape[1] - 1
        self.models = [constriction.stream.model.Categorical(c.astype(np.float64), perfect=False)
                       for c in self.counts]

    def _groups(self, indices: np.ndarray):
        idx = np.asarray(indices).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.models)):
            raise ValueError(f"table index outside 0..{len(self.models) - 1}")
        order = np.argsort(idx.astype(np.uint16 if len(self.models) <= 65536 else np.int64), kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=len(self.models)))])
        return order, bounds

    def encode(self, coder, symbols: np.ndarray, indices: np.ndarray) -> None:
        """Push ``symbols`` (clipped to ``lo..hi`` by the caller) onto the ANS stack ``coder``."""
        sym = np.asarray(symbols).ravel()
        if sym.size and (sym.min() < self.lo or sym.max() > self.hi):
            raise ValueError(f"symbol outside {self.lo}..{self.hi}")
        order, bounds = self._groups(indices)
        sym = (sym[order] - self.lo).astype(np.int32)
        for k in range(len(self.models) - 1, -1, -1):  # a stack: the first group decoded is pushed last
            if bounds[k + 1] > bounds[k]:
                coder.encode_reverse(sym[bounds[k]:bounds[k + 1]], self.models[k])

    def decode(self, coder, indices: np.ndarray) -> np.ndarray:
        """Pop the symbols whose table indices are ``indices``; returns them in its shape (int32).

        Group by group in table order, each group's symbols in position order (the encoder's
        stable sort), placed through a boolean mask: no position array (8 bytes an element)
        is built, so a decoder holds ~1 byte per element beyond the symbols (issue 12.4).
        """
        idx = np.ascontiguousarray(indices).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.models)):
            raise ValueError(f"table index outside 0..{len(self.models) - 1}")
        counts = sum(np.bincount(idx[i:i + _CHUNK], minlength=len(self.models))
                     for i in range(0, idx.size, _CHUNK))
        out = np.empty(idx.size, dtype=np.int32)
        mask = np.empty(idx.size, dtype=bool)
        for k in np.flatnonzero(counts):
            np.equal(idx, k, out=mask)
            out[mask] = coder.decode(self.models[k], int(counts[k]))
        out += self.lo
        return out.reshape(np.shape(indices))


# ---------------------------------------------------------------------------------------------
# Integer networks


def thresholds(table: np.ndarray, frac_bits: int) -> np.ndarray:
    """Integer thresholds ``floor(table * 2**frac_bits)``: for an integer ``q``,
    ``table[i] < q / 2**frac_bits`` exactly when ``thresholds[i] < q``."""
    return np.floor(np.ldexp(np.asarray(table, dtype=np.float64), frac_bits)).astype(np.int64)


def table_index(values_q: np.ndarray, thresholds_q: np.ndarray) -> np.ndarray:
    """For fixed-point ``values_q``, the index of the first table entry ``>= value`` (the entry
    the value is rounded *up* to), i.e. how many thresholds lie strictly below it. Integer
    comparisons only."""
    return np.searchsorted(thresholds_q, values_q, side="left").astype(np.int32)


def _bits_above(x: float) -> int:
    """The smallest ``e`` with ``|x| < 2**e``."""
    return math.frexp(abs(float(x)))[1]


@dataclass(frozen=True)
class _Affine:
    kind: str  # "conv" or "deconv"
    weight: np.ndarray  # integer-valued float64; conv (k*k*in, out), deconv (in, k*k*out)
    bias: np.ndarray  # int64 (out,), at the accumulator's scale
    cout: int
    k: int
    stride: int
    padding: int
    output_padding: int
    shift: int  # output = round(accumulator / 2**shift) (a negative shift multiplies)
    slope: int | None  # LeakyReLU negative slope in units of 2**-SLOPE_BITS (0 = ReLU); None: none
    clamp: int | None  # |output| <= clamp (integer units) after the activation; None: no clamp


class IntegerNetwork:
    """Fixed-point integer evaluation of a ``torch.nn.Sequential`` (Ballé et al. 2019).

    Built once from the float module (:meth:`from_torch`); called on an integer array
    (B, C, H, W) holding ``x * 2**input_frac_bits`` with ``|x| <= input_bound`` (in those
    integer units); returns an int64 array (B, C', H', W') holding ``out * 2**out_frac_bits``,
    the same integers on every machine.
    """

    SLOPE_BITS = 16

    def __init__(self, layers: list[_Affine], *, input_bound: int, input_frac_bits: int, frac_bits: list[int]):
        self.layers = layers
        self.input_bound = int(input_bound)
        self.input_frac_bits = int(input_frac_bits)
        self.frac_bits = frac_bits  # fraction bits of each affine layer's output
        self.out_frac_bits = frac_bits[-1]

    @classmethod
    def from_torch(cls, module, *, input_bound: int, input_frac_bits: int = 0, weight_bits: int = 16,
                   act_frac_bits: int = 16, out_frac_bits: int = 16,
                   act_bound: float | None = None) -> "IntegerNetwork":
        """Derive the integer network from ``module``: a Sequential of Conv2d / ConvTranspose2d
        (square kernels, one stride and padding, no groups or dilation), each optionally
        followed by LeakyReLU (slope in [0, 1]) or ReLU.

        Each affine layer's weights are rounded to ``round(w * 2**s)`` with the power of two
        chosen per layer so that ``|wq| <= 2**weight_bits``, its bias to the accumulator's
        scale; the output keeps ``out_frac_bits`` fraction bits; hidden activations are
        clamped to ``±act_bound`` (real units; None = no clamp) and keep up to
        ``act_frac_bits`` fraction bits, fewer where the next layer's worst-case accumulator
        (from the bounds and its weights' L1 norms) would come within 4x of 2**52. A clamp far
        above the activations real inputs produce costs nothing and buys precision; hostile
        inputs stay exact either way. Raises ``ValueError`` for unsupported layers or when
        no choice is exact.
        """
        import torch
        from torch import nn

        specs: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int, int, int]]] = []
        acts: list[int | None] = []
        for m in module:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                kh, kw = m.kernel_size
                if (kh != kw or len(set(m.stride)) != 1 or len(set(m.padding)) != 1 or m.groups != 1
                        or set(m.dilation) != {1} or m.padding_mode != "zeros"):
                    raise ValueError(f"IntegerNetwork: unsupported layer {m}")
                deconv = isinstance(m, nn.ConvTranspose2d)
                w = m.weight.detach().to("cpu", torch.float64).numpy()
                cout = w.shape[1] if deconv else w.shape[0]
                b = m.bias.detach().to("cpu", torch.float64).numpy() if m.bias is not None else np.zeros(cout)
                specs.append(("deconv" if deconv else "conv", w, b,
                              (kh, m.stride[0], m.padding[0], m.output_padding[0] if deconv else 0)))
                acts.append(None)
            elif isinstance(m, (nn.LeakyReLU, nn.ReLU)):
                slope = float(m.negative_slope) if isinstance(m, nn.LeakyReLU) else 0.0
                if not specs or acts[-1] is not None or not 0.0 <= slope <= 1.0:
                    raise ValueError(f"IntegerNetwork: unsupported activation {m} here")
                acts[-1] = int(round(slope * 2**cls.SLOPE_BITS))
            else:
                raise ValueError(f"IntegerNetwork: unsupported layer {type(m).__name__}")
        if not specs:
            raise ValueError("IntegerNetwork: no layers")

        # Weights on a power-of-two grid per layer, |wq| <= 2**weight_bits.
        shifts = [weight_bits - _bits_above(np.abs(w).max() or 1.0) for _, w, _, _ in specs]
        wqs = [np.rint(np.ldexp(w, s)) for (_, w, _, _), s in zip(specs, shifts)]
        # Worst-case gain per output channel: the L1 norm of its weights (real and quantised).
        axes = [(1, 2, 3) if kind == "conv" else (0, 2, 3) for kind, _, _, _ in specs]
        l1_real = [np.abs(w).sum(axis=ax) for (_, w, _, _), ax in zip(specs, axes)]
        l1_q = [[int(v) for v in np.abs(wq).sum(axis=ax)] for wq, ax in zip(wqs, axes)]

        layers: list[_Affine] = []
        fracs: list[int] = []
        f_in, bound_in = int(input_frac_bits), int(input_bound)  # integer bound of the layer's input
        real_in = input_bound / 2**input_frac_bits
        for i, (kind, w, b, (k, stride, pad, op)) in enumerate(specs):
            last = i == len(specs) - 1
            real_out = float(np.max(l1_real[i] * real_in + np.abs(b)))
            if not last and act_bound is not None:
                real_out = min(real_out, float(act_bound))
            if last:
                f_out = int(out_frac_bits)
            else:
                nxt_b = float(np.abs(specs[i + 1][2]).max()) * 2.0 ** shifts[i + 1]
                room = EXACT_LIMIT / 4 / (max(l1_q[i + 1]) * (real_out + 1.0) + nxt_b + 1.0)
                f_out = min(int(act_frac_bits), math.floor(math.log2(room)) if room >= 1 else -1)
                if f_out < 0:
                    raise ValueError(f"IntegerNetwork: layer {i + 1} cannot be exact in float64 (bounds too large)")
            acc_frac = shifts[i] + f_in
            bq = np.rint(np.ldexp(b, acc_frac)).astype(np.int64)
            acc_bound = max(l * bound_in + abs(int(c)) for l, c in zip(l1_q[i], bq))  # exact: Python ints
            if acc_bound >= EXACT_LIMIT:
                raise ValueError(f"IntegerNetwork: layer {i} accumulator bound 2**{math.log2(acc_bound):.1f} "
                                 "is not exact in float64")
            shift = acc_frac - f_out
            bound_in = (acc_bound >> shift) + 1 if shift >= 0 else acc_bound << -shift
            clamp = None
            if not last and act_bound is not None:
                clamp = int(math.floor(act_bound * 2**f_out))
                bound_in = min(bound_in, clamp)
            if kind == "conv":  # (out, in, k, k) -> (k*k*in, out): rows match channels-last windows
                wmat = wqs[i].transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
            else:  # (in, out, k, k) -> (in, k*k*out)
                wmat = wqs[i].transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            cout = w.shape[0] if kind == "conv" else w.shape[1]
            layers.append(_Affine(kind, np.ascontiguousarray(wmat), bq, cout, k, stride, pad, op, shift, acts[i],
                                  clamp))
            fracs.append(f_out)
            f_in, real_in = f_out, real_out
        return cls(layers, input_bound=input_bound, input_frac_bits=input_frac_bits, frac_bits=fracs)

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or not np.issubdtype(x.dtype, np.integer):
            raise ValueError("IntegerNetwork input must be an integer array (B, C, H, W)")
        if x.size and int(np.abs(x.astype(np.int64)).max()) > self.input_bound:
            raise ValueError(f"IntegerNetwork input outside its bound {self.input_bound}")
        return x

    def _layer(self, h: np.ndarray, layer: _Affine, rows: tuple[int, int] | None = None) -> np.ndarray:
        """One affine layer with its rounding, activation and clamp on channels-last int64 ``h``;
        ``rows``: (padding, output padding) along the rows instead of the layer's own."""
        h = _conv(h, layer, rows) if layer.kind == "conv" else _deconv(h, layer, rows)
        h += layer.bias  # integer arithmetic in place: the same integers, fewer copies
        if layer.shift > 0:
            h += 1 << (layer.shift - 1)
            h //= 1 << layer.shift  # round half up: floor division
        else:
            h *= 1 << -layer.shift
        if layer.slope is not None:
            neg = h * layer.slope
            neg += 1 << (self.SLOPE_BITS - 1)
            neg //= 1 << self.SLOPE_BITS
            np.copyto(h, neg, where=h < 0)
            del neg
        if layer.clamp is not None:
            np.clip(h, -layer.clamp, layer.clamp, out=h)
        return h

    def __call__(self, x: np.ndarray, *, channels_last: bool = False) -> np.ndarray:
        h = self._checked(x).astype(np.int64).transpose(0, 2, 3, 1)  # channels last inside
        for layer in self.layers:
            h = self._layer(h, layer)
        return h if channels_last else np.ascontiguousarray(h.transpose(0, 3, 1, 2))

    def geometries(self) -> list:
        """Each layer's :class:`compressors.rowstream.Geometry` (the same along rows and columns)."""
        from compressors.rowstream import Geometry  # noqa: PLC0415

        return [Geometry(lay.k, lay.stride, lay.padding, lay.output_padding, lay.kind == "deconv")
                for lay in self.layers]

    def out_size(self, n: int) -> int:
        """Output rows (or columns) for ``n`` input rows (columns)."""
        for g in self.geometries():
            n = g.out_size(n)
        return n

    def bands(self, x: np.ndarray, rows: int, *, band_elements: int = 1 << 16, strip: int | None = None):
        """The output of ``self(x, channels_last=True)`` in blocks of ``rows`` rows and (with
        ``strip``) ``strip`` columns, as ``(first row, first column, int64 (B, rows, cols, C'))``:
        layer by layer over bands of rows (:mod:`compressors.rowstream`; each layer holds about
        ``band_elements`` values of its output, at least 2 rows of its strip), so no activation
        exists for the whole input, however wide. The same integers as :meth:`__call__`."""
        from compressors.rowstream import Layer, Rows, column_strips  # noqa: PLC0415

        x = self._checked(x)
        geometries = self.geometries()
        width_out = self.out_size(x.shape[3])
        for st in column_strips(geometries, x.shape[3], width_out, strip or width_out):
            src = Rows(x[..., st.a:st.b], axis=2, prepare=lambda v: v.astype(np.int64).transpose(0, 2, 3, 1),
                       out_axis=1)
            height, width = x.shape[2], st.b - st.a
            for layer, g in zip(self.layers, geometries):
                height, width = g.out_size(height), g.out_size(width)
                band = max(2, band_elements // max(1, x.shape[0] * width * layer.cout))
                src = Layer(src, g, lambda v, pad, out_pad, layer=layer: self._layer(v, layer, (pad, out_pad)),
                            height, band, axis=1)
            for r0 in range(0, height, rows):
                yield r0, st.c0, src.rows(r0, min(r0 + rows, height))[:, :, st.c0 - st.origin:st.c1 - st.origin]


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of integer-valued float64 matrices whose worst-case sums are below 2**53:
    every partial sum is an exactly representable integer, so BLAS's order, blocking,
    threading and FMA use cannot change the result."""
    return (a @ b).astype(np.int64)


_CHUNK = 1 << 17  # float64 elements of one im2col / scatter block (1 MB): memory stays flat for big inputs


def _conv(x: np.ndarray, layer: _Affine, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Convolution of channels-last int64 ``x`` (B, H, W, C) -> int64 (B, Ho, Wo, Cout);
    ``rows``: (padding, unused) along the rows instead of the layer's own."""
    b, h, w, c = x.shape
    k, s, pw = layer.k, layer.stride, layer.padding
    ph = pw if rows is None else rows[0]
    ho, wo = (h + 2 * ph - k) // s + 1, (w + 2 * pw - k) // s + 1
    out = np.empty((b, ho, wo, layer.cout), dtype=np.int64)
    chunk = max(1, _CHUNK // max(1, b * wo * c * k * k))
    for r0 in range(0, ho, chunk):
        r1 = min(ho, r0 + chunk)
        # this block's rows of the zero-padded input, padded here (not a padded copy of all of x)
        top, bottom = r0 * s - ph, (r1 - 1) * s + k - ph
        band = np.zeros((b, bottom - top, w + 2 * pw, c), dtype=np.float64)
        band[:, max(0, -top):bottom - top - max(0, bottom - h), pw:pw + w] = x[:, max(0, top):min(h, bottom)]
        win = np.lib.stride_tricks.sliding_window_view(band, (k, k), axis=(1, 2))[:, ::s, ::s][:, :, :wo]
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)  # (B*rows*Wo, k*k*C)
        out[:, r0:r1] = _exact_matmul(cols, layer.weight).reshape(b, r1 - r0, wo, layer.cout)
    return out


def _deconv(x: np.ndarray, layer: _Affine, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Transposed convolution as a scatter: every input pixel adds its (k, k, Cout) patch;
    ``rows``: (padding, output padding) along the rows instead of the layer's own."""
    b, h, w, c = x.shape
    k, s, pw, opw = layer.k, layer.stride, layer.padding, layer.output_padding
    ph, oph = (pw, opw) if rows is None else rows
    ho, wo = (h - 1) * s - 2 * ph + k + oph, (w - 1) * s - 2 * pw + k + opw
    full = np.zeros((b, max((h - 1) * s + k, ph + ho), max((w - 1) * s + k, pw + wo), layer.cout), dtype=np.int64)
    chunk = max(1, _CHUNK // max(1, b * w * k * k * layer.cout))
    for r0 in range(0, h, chunk):
        r1 = min(h, r0 + chunk)
        cols = _exact_matmul(x[:, r0:r1].reshape(-1, c).astype(np.float64), layer.weight)
        cols = cols.reshape(b, r1 - r0, w, k, k, layer.cout)
        for i in range(k):
            for j in range(k):
                full[:, r0 * s + i:(r1 - 1) * s + i + 1:s, j:j + s * w:s] += cols[:, :, :, i, j]
    return full[:, ph:ph + ho, pw:pw + wo]


# ---------------------------------------------------------------------------------------------
# Checksums


def latent_checksum(*arrays: np.ndarray) -> bytes:
    """8-byte BLAKE2b digest of integer arrays (values and shapes, little-endian int64)."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.asarray(a)
        h.update(np.asarray(a.shape, dtype="<i8").tobytes())
        flat = np.ascontiguousarray(a).reshape(-1)
        for i in range(0, flat.size, 1 << 18):  # as int64, a block at a time: the digest of the whole
            h.update(np.ascontiguousarray(flat[i:i + (1 << 18)], dtype="<i8"))
    return h.digest()

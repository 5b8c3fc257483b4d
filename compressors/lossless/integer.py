"""The frozen integer form of the lossless pixel model, and its coding tables: numpy only.

:class:`IntegerNet` is what coding runs (never the float module): every matrix product
multiplies 12-bit integer weights by integer inputs of at most 1023 in magnitude, so every
partial sum is an integer below 2**40 and float64 BLAS computes it exactly in any
order, on any machine and thread count; requantisation multiplies by an integer times a
power of two and floors, exactly. Means land on a 1/``FRACTIONS`` grid and scales on a log grid of
``SCALES`` steps; each grid point has an integer coding table (frequencies summing to
2**16), computed once when the model is frozen and stored in the model file, so decoding
never evaluates a transcendental function.
"""

from __future__ import annotations

import math

import numpy as np

SCALES = 64  # log-scale grid points
LOG_STEP = math.log(64 / 0.12) / (SCALES - 1)  # log-scale grid: s_i = exp(LOG_STEP * (i + SCALE_OFFSET))
SCALE_OFFSET = round(math.log(0.12) / LOG_STEP)
FRACTIONS = 4  # the mean's grid: 1/4 level
PRECISION = 16  # coding tables sum to 2**16
MARGIN = 32  # a mean may lie this far outside 0..255: saturated pixels put most of the mass on 0 or 255
RMAX = 255 + MARGIN  # residuals (value - integer mean) -RMAX..RMAX
SYMBOLS = 2 * RMAX + 1
WMAX = 2047  # 12-bit weights
AMAX = 1023  # 10-bit activations
MEAN_UNIT = 256  # means and channel coefficients in 1/256 level before the grid
INPUT_SCALE = 1 / 32  # float model's view of the integer inputs
EXACT = 1 << 24  # integers stored in the model's float32 tensors are exact below this


def coding_tables() -> np.ndarray:
    """Cumulative frequencies (SCALES, FRACTIONS, SYMBOLS + 1), each row 0 .. 2**PRECISION.

    Row ``(i, f)`` is the discretized logistic of scale ``exp(LOG_STEP * (i + SCALE_OFFSET))``
    centred at ``f / FRACTIONS`` over residuals -RMAX..RMAX, every residual at least 1/65536.
    """
    total = 1 << PRECISION
    r = np.arange(-RMAX, RMAX + 1, dtype=np.float64)
    out = np.zeros((SCALES, FRACTIONS, SYMBOLS + 1), dtype=np.int64)
    for i in range(SCALES):
        s = math.exp(LOG_STEP * (i + SCALE_OFFSET))
        for f in range(FRACTIONS):
            c = r - f / FRACTIONS
            upper = 0.5 * (1 + np.tanh((c + 0.5) / (2 * s)))  # the logistic CDF, without overflow
            lower = 0.5 * (1 + np.tanh((c - 0.5) / (2 * s)))
            upper[-1], lower[0] = 1.0, 0.0
            p = upper - lower
            freq = np.maximum(1, np.floor(p * (total - SYMBOLS)).astype(np.int64))
            freq[np.argmax(freq)] += total - freq.sum()  # the rounding slack goes to the mode
            out[i, f, 1:] = np.cumsum(freq)
    return out


class IntegerNet:
    """The frozen integer network and coding tables of a :class:`LosslessMLP`, in numpy.

    ``trunk`` and ``head`` only multiply and add integers (and integers times powers of
    two) whose every partial result stays far below 2**53, in float64: exact whatever the
    summation order, so the same bits on any machine, BLAS library and thread count.
    """

    def __init__(self, module):
        if float(module.q_frozen[0]) != 1:
            raise ValueError("lossless model was never frozen (no integer network in it)")
        self.layers = {}
        for name, (k_in, _) in module._layer_sizes().items():
            w = getattr(module, f"q_{name}_w").double().numpy()
            b = getattr(module, f"q_{name}_b").double().numpy()
            m = getattr(module, f"q_{name}_m").double().numpy()
            k = getattr(module, f"q_{name}_k").double().numpy()
            if not (np.all(w == np.round(w)) and np.abs(w).max(initial=0) <= WMAX and np.all(m == np.round(m))
                    and np.all(np.abs(m) < EXACT) and np.all(np.abs(b) < EXACT) and np.all(b == np.round(b))
                    and np.all(k == np.round(k)) and np.all(np.abs(k) <= 60)):
                raise ValueError(f"lossless model layer {name} is not a valid integer layer")
            # the largest input a layer sees is AMAX (activations) or 510 (context differences, errors);
            # every partial sum of the product is then an integer far below 2**53: exact in float64
            if k_in * max(AMAX, 510) * WMAX >= 2**40:
                raise ValueError(f"lossless model layer {name} is too wide for exact sums")
            m = m * 2.0**-k  # a 23-bit integer times a power of two
            # floor((acc + b) * m + 0.5) == floor(acc * m + (b * m + 0.5)): every step exact (< 2**53 units of 2**-k)
            self.layers[name] = (np.ascontiguousarray(w.T), m, b * m + 0.5)
        cdf = module.q_cdf.double().numpy()
        if cdf.shape != (SCALES, FRACTIONS, SYMBOLS + 1) or not np.all(cdf == np.round(cdf)):
            raise ValueError("lossless model coding tables are malformed")
        cdf = cdf.astype(np.int64).reshape(SCALES * FRACTIONS, SYMBOLS + 1)
        freq = np.diff(cdf, axis=1)
        if np.any(cdf[:, 0] != 0) or np.any(cdf[:, -1] != 1 << PRECISION) or np.any(freq < 1):
            raise ValueError("lossless model coding tables are malformed")
        self.cdf = cdf.ravel()  # table t, residual index i: cdf[t * (SYMBOLS + 1) + i]
        # slot -> residual index, for decoding: 2**16 entries per table, inverse[t << 16 | slot]
        self.inverse = np.repeat(np.tile(np.arange(SYMBOLS, dtype=np.int16), SCALES * FRACTIONS), freq.ravel())

    def _layer(self, name: str, x: np.ndarray, relu: bool, extra: list[np.ndarray] = ()) -> np.ndarray:
        """One integer layer; ``extra`` columns (the planes' errors) are added after ``x``'s."""
        w, m, c = self.layers[name]
        acc = x @ w[: x.shape[1]]  # float64 products of integers: exact in any summation order
        for j, e in enumerate(extra):
            acc += e[:, None] * w[x.shape[1] + j]
        acc *= m
        acc += c
        np.floor(acc, out=acc)
        if relu:
            np.maximum(acc, 0, out=acc)
            np.minimum(acc, AMAX, out=acc)
        return acc

    def trunk(self, feats: np.ndarray) -> np.ndarray:
        return self._layer("t1", self._layer("t0", feats, True), True)

    def head(self, plane: int, h: np.ndarray, base: np.ndarray, errors: list[np.ndarray]):
        """Table index (n,) and integer mean ``b`` (n,) of ``plane`` for pixels with trunk output ``h``.

        ``base``: the plane's MED prediction; ``errors``: true value - MED of the planes
        before (float64 arrays of integers).
        """
        if plane == 0:
            out = self._layer("h0", h, False)
        else:
            extra = []
            for e in errors:
                extra += [e, np.abs(e)]
            out = self._layer(f"h{plane}b", self._layer(f"h{plane}a", h, True, extra), False)
        mean = base * float(MEAN_UNIT) + out[:, 0]
        for j, e in enumerate(errors):
            mean += out[:, 1 + j] * e
        np.clip(mean, -MARGIN * MEAN_UNIT, (255 + MARGIN) * MEAN_UNIT, out=mean)
        grid = np.floor(mean * (FRACTIONS / MEAN_UNIT) + 0.5)  # the 1/FRACTIONS grid, exactly
        b = np.floor(grid * (1 / FRACTIONS))
        scale = np.clip(out[:, -1] - SCALE_OFFSET, 0, SCALES - 1)
        table = scale * FRACTIONS + (grid - b * FRACTIONS)
        return table.astype(np.int64), b.astype(np.int64)


def prepare(module, metadata: dict) -> "IntegerNet":
    """The model store's ``prepare`` hook: what the codec uses of a loaded lossless model."""
    return IntegerNet(module)

"""A chain of (transposed) convolutions evaluated band by band of rows, layer by layer.

Each output row of a convolution reads only a few rows of its input, so a chain of them
need not hold any whole feature map: every layer keeps a short band of its own output rows,
computes its next band from exactly the input rows that band reads (asking the layer before
it for them), and hands its rows on. Nothing is computed twice except a band's edge rows
being read by two consecutive bands of the next layer; memory is a few rows per layer
(issue 12.4: decoding the ``autoencoder`` codec's synthesis transform). A band is computed
by the layer itself with a padding chosen so that it yields exactly the wanted rows
(:meth:`Geometry.padding`), so each output value is summed over the same terms as on the
whole image; rows outside the image are zeros, as the layer's own padding makes them.

Works on torch tensors (rows along ``axis`` 2 of (N, C, H, W)) or numpy arrays (any axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence


@dataclass(frozen=True)
class Geometry:
    """How a convolution maps rows along one axis: kernel ``k``, stride ``s``, padding ``p``
    and, for a transposed convolution, output padding ``op`` (PyTorch's definitions)."""

    k: int
    s: int
    p: int
    op: int = 0
    transposed: bool = False

    @classmethod
    def of(cls, module, dim: int = 0) -> "Geometry":
        """The geometry of a ``torch.nn`` Conv2d / ConvTranspose2d along ``dim`` (0 rows, 1 columns)."""
        from torch import nn  # noqa: PLC0415

        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) or module.dilation[dim] != 1 \
                or module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(f"rowstream: unsupported layer {module}")
        transposed = isinstance(module, nn.ConvTranspose2d)
        return cls(module.kernel_size[dim], module.stride[dim], module.padding[dim],
                   module.output_padding[dim] if transposed else 0, transposed)

    def out_size(self, n: int) -> int:
        k, s, p = self.k, self.s, self.p
        return (n - 1) * s - 2 * p + k + self.op if self.transposed else (n + 2 * p - k) // s + 1

    def needs(self, o0: int, o1: int) -> tuple[int, int]:
        """The input rows ``[i0, i1)`` that output rows ``[o0, o1)`` read (may reach outside the input)."""
        k, s, p = self.k, self.s, self.p
        if self.transposed:  # output row o = s * i - p + t for kernel taps t in [0, k)
            return math.ceil((o0 + p - k + 1) / s), (o1 - 1 + p) // s + 1
        return o0 * s - p, (o1 - 1) * s - p + k

    def padding(self, o0: int, o1: int) -> tuple[int, int]:
        """``(padding, output_padding)`` with which this layer, run on input rows ``needs(o0, o1)``
        alone, yields exactly output rows ``[o0, o1)`` (a transposed convolution's padding crops
        its output; for a convolution, no padding: the rows read are all given). An output
        padding of -1 (a band starting on an odd row): run with 0 and drop the last row."""
        if not self.transposed:
            return 0, 0
        i0, i1 = self.needs(o0, o1)
        pad = o0 - self.s * i0 + self.p  # local output row 0 is global row s * i0 - pad + p
        out_pad = (o1 - o0) - ((i1 - i0 - 1) * self.s - 2 * pad + self.k)
        assert 0 <= pad < self.k and -1 <= out_pad < self.s, (self, o0, o1)
        return pad, out_pad


@dataclass(frozen=True)
class Strip:
    """Output columns ``[c0, c1)`` of a chain, computed from its input columns ``[a, b)``
    alone; column 0 of that local output is global output column ``origin``."""

    c0: int
    c1: int
    a: int
    b: int
    origin: int


def column_strips(geometries: Sequence[Geometry], width_in: int, width_out: int, strip: int) -> Iterator[Strip]:
    """The chain's output columns ``[0, width_out)`` in strips of ``strip``, each with the input
    columns it reads (back through every layer; clipped to the input) so that running the
    chain, with the layers' own column padding, on those input columns alone gives the
    strip's columns exactly (the columns the strip's edges spoil are not among them). A
    chain with a strided (not transposed) convolution, whose local and global columns need
    not line up, is one strip."""
    if any(g.s != 1 and not g.transposed for g in geometries):
        strip = width_out
    for c0 in range(0, width_out, max(1, strip)):
        c1 = min(c0 + strip, width_out)
        a, b = c0, c1
        for g in reversed(geometries):
            a, b = g.needs(a, b)
        a, b = max(a, 0), min(b, width_in)
        origin = a
        for g in geometries:  # local column 0 of a layer's output: s times its input's
            origin *= g.s if g.transposed else 1
        yield Strip(c0, c1, a, b, origin)


class Source(Protocol):
    def rows(self, a: int, b: int): ...


def _take(x, axis: int, a: int, b: int):
    return x[(slice(None),) * axis + (slice(a, b),)]


def _cat(parts: list, axis: int):
    if len(parts) == 1:
        return parts[0]
    if hasattr(parts[0], "new_zeros"):  # torch
        import torch  # noqa: PLC0415

        return torch.cat(parts, dim=axis)
    import numpy as np  # noqa: PLC0415

    return np.concatenate(parts, axis=axis)


def _zeros(like, axis: int, n: int):
    shape = list(like.shape)
    shape[axis] = n
    if hasattr(like, "new_zeros"):
        return _empty(like, axis, n).zero_()
    import numpy as np  # noqa: PLC0415

    return np.zeros(shape, like.dtype)


def _empty(like, axis: int, n: int):
    """An uninitialised array like ``like`` with ``n`` rows along ``axis``, in its memory layout
    (a channels-last torch tensor stays channels-last, so its row bands are contiguous)."""
    shape = list(like.shape)
    shape[axis] = n
    if not hasattr(like, "new_empty"):
        import numpy as np  # noqa: PLC0415

        return np.empty(shape, like.dtype)
    order = sorted(range(like.dim()), key=lambda d: (-like.stride(d), d))  # outermost dimension first
    return like.new_empty([shape[d] for d in order]).permute(*[order.index(d) for d in range(like.dim())])


def _assign(dst, src) -> None:
    if hasattr(dst, "copy_"):
        dst.copy_(src)
    else:
        dst[...] = src


def padded(rows: Callable[[int, int], object], a: int, b: int, height: int, axis: int):
    """``rows(a, b)``, defined for ``0 <= a < b <= height``, for any ``a < b`` overlapping the
    rows: those outside ``[0, height)`` are zeros (a convolution's zero padding)."""
    a0, b0 = max(a, 0), min(b, height)
    assert a0 < b0, (a, b, height)
    x = rows(a0, b0)
    if a0 == a and b0 == b:
        return x
    parts = ([_zeros(x, axis, a0 - a)] if a0 > a else []) + [x] + ([_zeros(x, axis, b - b0)] if b > b0 else [])
    return _cat(parts, axis)


class Layer:
    """One layer of the chain: its output rows, computed band by band from ``source``'s rows.

    ``compute(x, padding, output_padding)`` runs the layer (and any row-local operation after
    it) on input rows ``x`` with that padding along the rows. ``rows(a, b)`` returns output rows
    ``[a, b)`` (zeros outside ``[0, height)``) as a view valid until the next call; ``a`` must
    never decrease from call to call (rows before it are dropped). Bands are ``band`` rows
    each from row 0 (the last one may be shorter): every band has the same shapes, so the
    temporaries of one band reuse the memory of the last one's. The rows still to be read
    and the new band live in one buffer, allocated once.
    """

    def __init__(self, source: Source, geometry: Geometry, compute: Callable, height: int, band: int,
                 axis: int = 2):
        self.source, self.geometry, self.compute = source, geometry, compute
        self.height, self.band_rows, self.axis = height, max(1, band), axis
        self.buffer, self.lo, self.hi = None, 0, 0  # rows [lo, hi) of the output, at the buffer's start
        self.asked = 0  # the first row of the last ask

    def rows(self, a: int, b: int):
        return padded(self._rows, a, b, self.height, self.axis)

    def _rows(self, a: int, b: int):
        assert a >= self.asked, "rows are asked for in order"
        self.asked = a
        ax = self.axis
        while self.hi < b:
            o0, o1 = self.hi, min(self.height, self.hi + self.band_rows)
            pad, out_pad = self.geometry.padding(o0, o1)
            new = self.compute(self.source.rows(*self.geometry.needs(o0, o1)), pad, max(out_pad, 0))
            kept = max(self.hi - a, 0)  # rows [a, hi) are still to be read: they move to the buffer's start
            held = _take(self.buffer, ax, a - self.lo, self.hi - self.lo) if kept else None
            if self.buffer is None or self.buffer.shape[ax] < kept + o1 - o0:
                self.buffer = _empty(new, ax, max(kept, b - a) + self.band_rows)
            elif kept and a == self.lo:  # already there
                held = None
            elif kept and a - self.lo < kept:  # overlapping move: through a copy
                held = held.clone() if hasattr(held, "clone") else held.copy()
            if held is not None:
                _assign(_take(self.buffer, ax, 0, kept), held)
            _assign(_take(self.buffer, ax, kept, kept + o1 - o0), _take(new, ax, 0, o1 - o0))
            del new, held
            self.lo, self.hi = o0 - kept, o1
        return _take(self.buffer, ax, a - self.lo, b - self.lo)


class Rows:
    """A fixed array's rows (along ``axis``) as a :class:`Source`, zeros outside it: the chain's
    input. ``prepare`` turns a slice into what the first layer takes (its rows then along
    ``out_axis``, by default ``axis``)."""

    def __init__(self, x, axis: int = 2, prepare: Callable | None = None, out_axis: int | None = None):
        self.x, self.axis, self.prepare = x, axis, prepare
        self.out_axis = axis if out_axis is None else out_axis

    def _rows(self, a: int, b: int):
        x = _take(self.x, self.axis, a, b)
        return x if self.prepare is None else self.prepare(x)

    def rows(self, a: int, b: int):
        return padded(self._rows, a, b, self.x.shape[self.axis], self.out_axis)

"""compressors.rowstream: a chain of convolutions evaluated band by band of rows gives the
whole input's output exactly (issue 12.4: the autoencoder's synthesis and integer h_s use it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compressors.rowstream import Geometry, Layer, Rows, column_strips

CHAINS = {
    "g_s-like": [nn.ConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
                 nn.ConvTranspose2d(4, 2, 5, stride=2, padding=2, output_padding=1)],
    "h_s-like": [nn.ConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1), nn.LeakyReLU(),
                 nn.Conv2d(4, 2, 3, stride=1, padding=1)],
    "other strides": [nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1),
                      nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
                      nn.Conv2d(2, 2, 3, stride=1, padding=0)],
}


def _integer_valued(chain: list[nn.Module]) -> nn.Sequential:
    """Small integer weights in float64: every sum is exact, so any grouping of the terms gives
    the same value and a wrong row (or a missing one) shows as a difference."""
    torch.manual_seed(0)
    net = nn.Sequential(*chain).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randint(-3, 4, p.shape))
    return net


def _streamed(net: nn.Sequential, x: torch.Tensor, band: int, step: int) -> torch.Tensor:
    """The chain through rowstream (each activation joins the convolution before it), taken
    ``step`` rows at a time."""
    pairs: list[tuple[nn.Module, list[nn.Module]]] = []
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            pairs.append((m, []))
        else:
            pairs[-1][1].append(m)
    src, height = Rows(x), x.shape[2]
    for conv, post in pairs:
        def run(v, pad, out_pad, conv=conv, post=post):
            if isinstance(conv, nn.ConvTranspose2d):
                v = nn.functional.conv_transpose2d(v, conv.weight, conv.bias, conv.stride, (pad, conv.padding[1]),
                                                   (out_pad, conv.output_padding[1]))
            else:
                v = nn.functional.conv2d(v, conv.weight, conv.bias, conv.stride, (pad, conv.padding[1]))
            for m in post:
                v = m(v)
            return v
        geometry = Geometry.of(conv)
        height = geometry.out_size(height)
        src = Layer(src, geometry, run, height, band)
    return torch.cat([src.rows(r, min(r + step, height)).clone() for r in range(0, height, step)], dim=2)


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("band, step", [(1, 1), (2, 3), (3, 2), (5, 7), (64, 64)])
def test_a_chain_streamed_over_bands_of_rows_equals_the_chain_on_all_rows(chain, band, step):
    net = _integer_valued(CHAINS[chain])
    for rows in (1, 2, 7, 12):
        x = torch.randint(-4, 5, (1, 3, rows, 5)).double()
        with torch.no_grad():
            whole = net(x)
            streamed = _streamed(net, x, band, step)
        assert streamed.shape == whole.shape
        torch.testing.assert_close(streamed, whole, rtol=0, atol=0)


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("strip", [1, 2, 5, 64])
def test_column_strips_of_a_chain_put_together_equal_the_chain_on_all_columns(chain, strip):
    """Each strip run alone on the input columns it reads, with the layers' own column padding,
    cropped at its origin: together, the whole output (a chain with a strided convolution
    is one strip)."""
    net = _integer_valued(CHAINS[chain])
    geometries = [Geometry.of(m, 1) for m in net if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for cols in (1, 3, 9, 16):
        x = torch.randint(-4, 5, (1, 3, 6, cols)).double()
        with torch.no_grad():
            whole = net(x)
            strips = list(column_strips(geometries, cols, whole.shape[3], strip))
            parts = [net(x[..., s.a:s.b])[..., s.c0 - s.origin:s.c1 - s.origin] for s in strips]
        assert [s.c0 for s in strips] == [0] + [s.c1 for s in strips[:-1]] and strips[-1].c1 == whole.shape[3]
        torch.testing.assert_close(torch.cat(parts, dim=3), whole, rtol=0, atol=0)
        if chain != "other strides":
            assert len(strips) == -(-whole.shape[3] // strip)


def test_geometry_follows_pytorchs_output_sizes_and_reads_only_the_rows_it_needs():
    for conv in (nn.ConvTranspose2d(1, 1, 5, stride=2, padding=2, output_padding=1),
                 nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1), nn.Conv2d(1, 1, 3, stride=2, padding=1)):
        g = Geometry.of(conv)
        for n in (1, 2, 5, 8):
            assert g.out_size(n) == conv(torch.zeros(1, 1, n, 3)).shape[2]
    g = Geometry.of(nn.ConvTranspose2d(1, 1, 5, stride=2, padding=2, output_padding=1))
    assert g.needs(0, 2) == (-1, 2) and g.needs(4, 6) == (1, 4)  # 5 taps, stride 2: 2-3 input rows per output row
    with pytest.raises(ValueError, match="unsupported"):
        Geometry.of(nn.Conv2d(2, 2, 3, groups=2))


def test_rows_outside_the_input_are_zeros_and_rows_go_forward_only():
    x = np.arange(12.0).reshape(1, 4, 3)  # rows along axis 1
    src = Rows(x, axis=1)
    np.testing.assert_array_equal(src.rows(-1, 2)[0, 0], 0)
    np.testing.assert_array_equal(src.rows(3, 6)[0], [[9, 10, 11], [0, 0, 0], [0, 0, 0]])
    layer = Layer(src, Geometry(1, 1, 0), lambda v, pad, out_pad: v * 2, height=4, band=1, axis=1)
    np.testing.assert_array_equal(layer.rows(0, 1), 2 * x[:, :1])
    np.testing.assert_array_equal(layer.rows(0, 4), 2 * x)  # a longer ask than the buffer held: it grows
    np.testing.assert_array_equal(layer.rows(1, 3), 2 * x[:, 1:3])
    with pytest.raises(AssertionError, match="in order"):
        layer.rows(0, 1)

"""compressors.exact: entropy-coding parameters every machine derives bit for bit alike."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
import torch
from torch import nn

from compressors import exact


def _digest(a: np.ndarray) -> str:
    return exact.latent_checksum(np.asarray(a, dtype=np.float64).view(np.int64)).hex()


GRID = np.arange(-3000, 3001) / 100.0  # one correctly rounded division each: the same bits everywhere


def test_deterministic_functions_are_accurate():
    x = GRID
    np.testing.assert_allclose(exact.exp(x), np.exp(x), rtol=4e-16, atol=0)
    pos = np.exp(np.linspace(-700, 700, 5001))
    np.testing.assert_allclose(exact.log(pos), np.log(pos), rtol=4e-16, atol=1e-300)
    np.testing.assert_allclose(exact.tanh(x), np.tanh(x), rtol=0, atol=4e-16)
    np.testing.assert_allclose(exact.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
    np.testing.assert_allclose(exact.softplus(x), np.logaddexp(0, x), rtol=1e-15, atol=4e-16)
    from scipy.special import ndtr

    z = np.linspace(-12, 12, 4801)
    np.testing.assert_allclose(exact.normal_sf(z), ndtr(-z), rtol=1.2e-7, atol=0)
    with pytest.raises(ValueError):
        exact.log(np.array([1.0, 0.0]))


def test_deterministic_functions_give_these_exact_bits():
    # Pinned digests of the float64 results on a grid: another platform or numpy that rounded
    # any basic operation differently (or fused a multiply-add) would change them.
    got = {name: _digest(getattr(exact, name)(GRID)) for name in ("exp", "tanh", "sigmoid", "softplus", "normal_sf")}
    got["log"] = _digest(exact.log(exact.exp(GRID)))
    got["exp_table"] = _digest(exact.exp_table(0.11, 256.0, 64))
    assert got == {
        "exp": "49a6938f84e96593",
        "tanh": "0cf3ec2f8ab7a226",
        "sigmoid": "e8eb98a505c66c9f",
        "softplus": "36e675bd9c448ba5",
        "normal_sf": "0f47ccf1abfb8012",
        "log": "5b848299ad429be7",
        "exp_table": "321c39bedd58943c",
    }


def test_exp_table_is_correctly_rounded():
    table = exact.exp_table(0.11, 256.0, 64)
    ref = np.exp(np.linspace(math.log(0.11), math.log(256.0), 64))
    assert np.abs(table / ref - 1).max() < 4e-15  # numpy's own rounding errors, not the table's
    assert table[0] == 0.11 and table[-1] == 256.0


def _int_reference(net: nn.Sequential, inet: exact.IntegerNetwork, x: np.ndarray) -> np.ndarray:
    """The integer network evaluated with pure int64 numpy (einsum, no BLAS): the exact answer."""
    h = x.astype(np.int64)
    layers = iter(inet.layers)
    for m in net:
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        layer = next(layers)
        k, s, p = layer.k, layer.stride, layer.padding
        b, c, hh, ww = h.shape
        if layer.kind == "conv":
            w = layer.weight.astype(np.int64).reshape(k, k, c, layer.cout)
            hp = np.pad(h, ((0, 0), (0, 0), (p, p), (p, p)))
            ho, wo = (hh + 2 * p - k) // s + 1, (ww + 2 * p - k) // s + 1
            acc = np.zeros((b, layer.cout, ho, wo), np.int64)
            for i in range(k):
                for j in range(k):
                    patch = hp[:, :, i:i + s * ho:s, j:j + s * wo:s]
                    acc += np.einsum("bchw,co->bohw", patch, w[i, j])
        else:
            w = layer.weight.astype(np.int64).reshape(c, k, k, layer.cout)
            op = layer.output_padding
            ho, wo = (hh - 1) * s - 2 * p + k + op, (ww - 1) * s - 2 * p + k + op
            full = np.zeros((b, layer.cout, max((hh - 1) * s + k, p + ho), max((ww - 1) * s + k, p + wo)), np.int64)
            for i in range(k):
                for j in range(k):
                    full[:, :, i:i + s * hh:s, j:j + s * ww:s] += np.einsum("bchw,co->bohw", h, w[:, i, j])
            acc = full[:, :, p:p + ho, p:p + wo]
        acc = acc + layer.bias.reshape(1, -1, 1, 1)
        h = (acc + (1 << (layer.shift - 1))) // (1 << layer.shift)
        if layer.slope is not None:
            h = np.where(h < 0, (h * layer.slope + (1 << 15)) // (1 << 16), h)
        if layer.clamp is not None:
            h = np.clip(h, -layer.clamp, layer.clamp)
    return h


@pytest.fixture(scope="module")
def hyper_synthesis() -> nn.Sequential:
    """A small h_s-shaped network (the autoencoder's layer kinds), random weights with an outlier."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.ConvTranspose2d(8, 12, 5, stride=2, padding=2, output_padding=1), nn.LeakyReLU(),
        nn.ConvTranspose2d(12, 16, 5, stride=2, padding=2, output_padding=1), nn.LeakyReLU(),
        nn.Conv2d(16, 10, 3, stride=1, padding=1),
    )
    with torch.no_grad():
        net[4].weight[0, 0, 1, 1] = 1.7
    return net.eval()


@pytest.mark.parametrize("chunk", [None, 700], ids=["whole", "row-blocks"])
def test_integer_network_equals_its_int64_reference_even_at_the_worst_case(hyper_synthesis, chunk, monkeypatch):
    if chunk:  # big inputs are computed in blocks of rows: the same integers
        monkeypatch.setattr(exact, "_CHUNK", chunk)
    inet = exact.IntegerNetwork.from_torch(hyper_synthesis, input_bound=48, act_bound=256.0)
    rng = np.random.default_rng(0)
    typical = rng.integers(-5, 6, (2, 8, 3, 5))
    worst = np.where(rng.random((1, 8, 3, 5)) < 0.5, -48, 48)  # the largest accumulators
    for x in (typical, worst):
        np.testing.assert_array_equal(inet(x), _int_reference(hyper_synthesis, inet, x))


def test_integer_network_follows_the_float_network(hyper_synthesis):
    inet = exact.IntegerNetwork.from_torch(hyper_synthesis, input_bound=48, act_bound=256.0)
    x = np.random.default_rng(1).integers(-4, 5, (1, 8, 4, 6))
    with torch.inference_mode():
        ref = hyper_synthesis.double()(torch.from_numpy(x.astype(np.float64))).numpy()
    hyper_synthesis.float()
    got = inet(x) / 2.0**inet.out_frac_bits
    assert got.shape == ref.shape == (1, 10, 16, 24)
    assert np.abs(got - ref).max() < 2e-3 * max(1.0, np.abs(ref).max())


def test_integer_network_refuses_inputs_outside_its_bound_and_float_inputs(hyper_synthesis):
    inet = exact.IntegerNetwork.from_torch(hyper_synthesis, input_bound=48)
    with pytest.raises(ValueError, match="bound"):
        inet(np.full((1, 8, 2, 2), 49))
    with pytest.raises(ValueError, match="integer"):
        inet(np.zeros((1, 8, 2, 2), np.float32))
    with pytest.raises(ValueError, match="unsupported"):
        exact.IntegerNetwork.from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), input_bound=1)


def test_table_index_rounds_up_to_the_table_exactly():
    table = exact.exp_table(0.11, 256.0, 64)
    th = exact.thresholds(table[:-1], 16)
    q = np.arange(-10, 300 * 2**16, 997, dtype=np.int64)
    expected = np.searchsorted(table[:-1], q / 2.0**16, side="left")  # q / 2**16 is exact in float64
    np.testing.assert_array_equal(exact.table_index(q, th), expected)


def test_constriction_codes_with_exactly_our_integer_tables():
    counts = exact.categorical_counts(np.array([[0.2, 0.0, 0.5, 0.3]]))[0]
    assert counts.sum() == 2**24 - 4 and counts[1] == 0
    model = constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)
    cdf = np.concatenate([[0], np.cumsum(counts + 1)])
    for sym in range(4):  # an ANS state whose low 24 bits are q decodes the symbol whose interval holds q
        for q in (cdf[sym], cdf[sym + 1] - 1):
            coder = constriction.stream.stack.AnsCoder(np.array([q, 1 << 31], dtype=np.uint32))
            assert coder.decode(model) == sym


def test_gaussian_counts_are_the_quantised_gaussian():
    counts = exact.gaussian_counts([0.11, 1.0, 40.0], -50, 50)
    p = (counts + 1) / 2**24
    assert p.shape == (3, 101) and np.allclose(p.sum(axis=1), 1.0)
    from scipy.stats import norm

    ref = norm.cdf(np.arange(-50, 51) + 0.5, scale=1.0) - norm.cdf(np.arange(-50, 51) - 0.5, scale=1.0)
    assert np.all(np.abs(p[1] - ref) <= 2e-5 * ref + 2**-23)  # leaky: every bin gets 2**-24 more
    assert p[0, 50] > 0.9999 and np.all(np.diff(p[2, 1:51]) >= 0) and p[2, 0] > p[2, 1]  # tail folded in


def test_indexed_categoricals_round_trip_any_index_pattern():
    rng = np.random.default_rng(2)
    tables = exact.IndexedCategoricals(exact.gaussian_counts([0.5, 2.0, 9.0], -20, 20), -20)
    idx = rng.integers(0, 3, (4, 7, 9))
    sym = np.clip(np.rint(rng.normal(0, 1, idx.shape) * np.array([0.5, 2.0, 9.0])[idx]), -20, 20).astype(np.int32)
    coder = constriction.stream.stack.AnsCoder()
    tables.encode(coder, sym, idx)
    words = coder.get_compressed()
    dec = constriction.stream.stack.AnsCoder(words)
    np.testing.assert_array_equal(tables.decode(dec, idx), sym)
    assert dec.is_empty()
    with pytest.raises(ValueError, match="outside"):
        tables.encode(constriction.stream.stack.AnsCoder(), sym + 100, idx)


def test_latent_checksum_sees_every_value_and_the_shape():
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    base = exact.latent_checksum(a, a[0])
    assert len(base) == 8 and base == exact.latent_checksum(a.astype(np.int64), a[0])
    b = a.copy()
    b[1, 2, 3] += 1
    assert exact.latent_checksum(b, a[0]) != base
    assert exact.latent_checksum(a.reshape(4, 6), a[0]) != base

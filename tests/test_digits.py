"""The `digits` codec, the digit classifier and the agreement measurement.

No ../shared: digits are drawn here (a stroke per class on a 28x28 canvas); models are
trained for a few steps in the test, or are the shipped ones.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from typer.testing import CliRunner

from compressors import classifiers, get_codec, models
from compressors.classifiers.train import fit as fit_classifier
from compressors.digits import codec as digits_codec
from compressors.digits.mnist import digits_and_labels, parse_idx
from compressors.digits.train import fit as fit_digits
from compressors.roundtrip import classify_pair, measure
from imgpress import cli
from tasks.plan import prepare_run
from tasks.query import codec_stats, open_reports
from tasks.formatting import number
from tasks.report import read_reports
from tasks.shard import compress_shard

DIGITS = get_codec("digits")


def drawn_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 digit-like images: class 0 a ring, 1 a vertical bar, 2 a diagonal; jittered."""
    rng = np.random.default_rng(seed)
    images, labels = np.zeros((n, 28, 28), np.uint8), rng.integers(0, 3, n)
    for i, label in enumerate(labels):
        canvas = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(canvas)
        dx, dy = rng.integers(-3, 4, 2)
        if label == 0:
            draw.ellipse((7 + dx, 5 + dy, 21 + dx, 23 + dy), outline=255, width=3)
        elif label == 1:
            draw.line((14 + dx, 4 + dy, 14 + dx, 24 + dy), fill=255, width=3)
        else:
            draw.line((6 + dx, 22 + dy, 22 + dx, 6 + dy), fill=255, width=3)
        images[i] = np.asarray(canvas)
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    return gzip.compress(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def tiny_digits():
    """A 28-value digit autoencoder trained for a few steps on drawn digits; its id."""
    x, _ = drawn_digits(256)
    module, meta = fit_digits(x, options={"latent": 28, "batch": 16}, max_steps=30, log=lambda s: None)
    mid, blob, js = models.serialize(module, meta)
    return models.load_model(blob, js, kind="digits")


@pytest.fixture(scope="module")
def tiny_classifier():
    """A classifier of the three drawn classes, trained in the test from IDX files; its id."""
    x, y = drawn_digits(600, seed=1)
    files = {"drawn-images-idx3-ubyte.gz": idx_bytes(x), "drawn-labels-idx1-ubyte.gz": idx_bytes(y.astype(np.uint8))}
    module, meta = fit_classifier(files, options={"batch": 32, "lr": 3e-3, "shift": 0, "name": "drawn"},
                                  max_steps=80, log=lambda s: None)
    mid, blob, js = models.serialize(module, meta)
    return models.load_model(blob, js, kind="classifier")


def test_idx_files_parse_and_a_lying_header_is_refused():
    x, y = drawn_digits(5)
    images, labels = digits_and_labels({"a/t-images-idx3-ubyte.gz": idx_bytes(x),
                                        "a/t-labels-idx1-ubyte": gzip.decompress(idx_bytes(y.astype(np.uint8)))})
    assert np.array_equal(images, x) and np.array_equal(labels, y)
    with pytest.raises(ValueError, match="claims"):
        parse_idx(gzip.decompress(idx_bytes(x))[:-1])
    with pytest.raises(ValueError, match="IDX"):
        parse_idx(b"\x89PNG....")


def test_a_digit_round_trips_through_real_bytes(tiny_digits):
    x, _ = drawn_digits(8, seed=5)
    for image in x[:, :, :, None]:
        data = DIGITS.encode(image, latent=28, model=tiny_digits)
        assert data[:4] == b"IMPD"
        payload = struct.unpack_from("<H", data, 16)[0]
        assert len(data) == digits_codec.HEADER_SIZE + payload + 4 and payload % 4 == 0
        out = DIGITS.decode(data)
        assert out.shape == (28, 28, 1) and out.dtype == np.uint8
        assert DIGITS.decode(data).tobytes() == out.tobytes()  # decoding is deterministic


def test_the_bytes_cost_what_the_prior_says():
    """Payload bits (all but the 22-byte container) ~ -log2 P(code) under the model's prior, + ANS slack."""
    import torch

    from compressors.autoencoder.model import gaussian_likelihood
    from compressors.digits.model import DigitsAutoencoder

    torch.manual_seed(3)
    net = DigitsAutoencoder(28)
    with torch.no_grad():
        net.g_a[-1].weight.mul_(20)  # codes spread over several integers, inside the coded range
        net.log_scales.fill_(1.5)
    mid = models.load_model(*models.serialize(net, {})[1:], kind="digits")
    x, _ = drawn_digits(32, seed=9)
    with torch.no_grad():
        y = net.encode_latent(torch.from_numpy(x.astype(np.float32) / 255)[:, None])
        y_hat = torch.round(y - net.means) + net.means
        bits = -torch.log2(gaussian_likelihood(y_hat, net.scales(), net.means)).sum(1).numpy()
    assert y_hat.abs().max() < digits_codec.SYMBOL_RANGE and bits.mean() > 64
    payload = np.array([8 * (len(DIGITS.encode(im[:, :, None], model=mid)) - 22) for im in x])
    assert np.all(payload >= bits - 1) and np.all(payload <= bits + 64)  # ANS writes whole 32-bit words


@pytest.mark.parametrize("shape", [(32, 32, 1), (28, 28, 3), (27, 28, 1)])
def test_other_images_are_refused_with_a_clear_message(shape, tiny_digits):
    with pytest.raises(ValueError, match="28x28 grayscale"):
        DIGITS.encode(np.zeros(shape, np.uint8), model=tiny_digits)


def test_a_model_of_the_other_code_size_is_refused(tiny_digits):
    with pytest.raises(ValueError, match="28-value code, not 128"):
        DIGITS.encode(np.zeros((28, 28, 1), np.uint8), latent=128, model=tiny_digits)


def test_damaged_artifacts_are_refused_before_the_network_runs(tiny_digits):
    data = bytearray(DIGITS.encode(drawn_digits(1)[0][0][:, :, None], model=tiny_digits))
    fixed = lambda b: bytes(b[:-4]) + struct.pack("<I", zlib.crc32(bytes(b[:-4])))  # noqa: E731
    cases = {"magic": b"JUNK" + bytes(data[4:]), "checksum": bytes(data[:-1]) + bytes([data[-1] ^ 1]),
             "truncated": bytes(data[:10])}
    bad_model = bytearray(data)
    bad_model[6:14] = b"\x00" * 8
    cases["unknown model"] = fixed(bad_model)
    big = bytearray(data)
    big[14] = 200
    cases["shape"] = fixed(big)
    for what, case in cases.items():
        with pytest.raises(ValueError):
            DIGITS.decode(case)
    extra = bytearray(data[:-4]) + b"\x01\x02\x03\x04"
    struct.pack_into("<H", extra, 16, struct.unpack_from("<H", data, 16)[0] + 4)
    with pytest.raises(ValueError, match="left over|does not decode"):
        DIGITS.decode(fixed(extra + b"\0\0\0\0"))


def test_the_classifier_learns_the_drawn_classes(tiny_classifier):
    x, y = drawn_digits(60, seed=11)
    got = [classifiers.classify(tiny_classifier, im[:, :, None])[0] for im in x]
    assert np.mean(np.array(got) == y) >= 0.9
    assert classifiers.describe(tiny_classifier) == f"drawn@{tiny_classifier}"


def test_classifier_columns_for_a_pair_and_none_for_shapes_it_does_not_take(tiny_classifier):
    x, _ = drawn_digits(1, seed=2)
    image = x[0][:, :, None]
    cols = classify_pair(tiny_classifier, image, image)
    assert cols["labels_agree"] is True and cols["label_source"] == cols["label_decoded"]
    assert 0 < cols["confidence_source"] <= 1 and cols["confidence_source"] == cols["confidence_decoded"]
    assert classify_pair(tiny_classifier, np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)) == {
        "classifier": classifiers.describe(tiny_classifier)}


def test_classifiers_load_only_from_safetensors_with_a_registered_architecture(tiny_classifier):
    lm = models.get(tiny_classifier, "classifier")
    blob, meta = models.serialize(lm.module, {})[1:]
    wrong = json.loads(meta)
    wrong["arch"]["class"] = "SomeOtherNet"
    with pytest.raises(ValueError, match="unknown model architecture"):
        models.load_model(blob, json.dumps(wrong), kind="classifier")
    import pickle

    unpinned = {k: v for k, v in json.loads(meta).items() if k != "model_id"}
    with pytest.raises(ValueError, match="not a safetensors"):
        models.load_model(pickle.dumps(lm.module.state_dict()), json.dumps(unpinned), kind="classifier")
    with pytest.raises(ValueError, match="not a 'digits' model"):
        models.load_model(*models.serialize(models.get(tiny_classifier, "classifier").module, {})[1:], kind="digits")


@pytest.fixture
def digit_folder(tmp_path):
    root = tmp_path / "digits"
    root.mkdir()
    x, _ = drawn_digits(6, seed=3)
    for i, image in enumerate(x):
        Image.fromarray(image).save(root / f"d{i}.png")
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(root / "too-big.png")
    return str(root)


def test_a_run_with_a_classifier_reports_labels_and_the_agreement_rate(digit_folder, tmp_path, tiny_digits,
                                                                       tiny_classifier):
    dest = str(tmp_path / "out")
    plan = prepare_run(digit_folder, dest, "digits", DIGITS.canonical_params({"model": tiny_digits}),
                       classifier=tiny_classifier)
    for spec in plan.specs:
        compress_shard(spec)
    rows = {r["source"]: r for r in read_reports(dest).to_pylist()}
    assert rows["too-big.png"]["status"] == "error" and "28x28 grayscale" in rows["too-big.png"]["error"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["classifier"] == f"drawn@{tiny_classifier}" for r in ok)
    assert all(r["labels_agree"] == (r["label_source"] == r["label_decoded"]) for r in ok)
    assert all(r["bpp"] == r["artifact_bytes"] * 8 / 784 for r in ok)
    with open_reports(dest) as reports:
        (stats,) = codec_stats(reports)
    assert stats["classified"] == 6 and stats["classifier"] == f"drawn@{tiny_classifier}"
    assert stats["agreement"] == pytest.approx(np.mean([r["labels_agree"] for r in ok]))
    printed = CliRunner().invoke(cli.app, ["report", dest], env={"COLUMNS": "240"})  # what a user reads
    assert printed.exit_code == 0, printed.output
    agreement_row = next(line for line in printed.output.splitlines() if "agreement (6 classified by" in line)
    assert number(stats["agreement"]) in agreement_row.split() and f"drawn@{tiny_classifier}" in printed.output


def test_measure_classifies_the_post_filtered_image_when_there_is_one(tiny_classifier, tiny_digits):
    x, _ = drawn_digits(1, seed=4)
    m = measure(DIGITS, x[0][:, :, None], {"latent": 28, "model": tiny_digits}, classifier=tiny_classifier)
    assert m.fields(100)["label_decoded"] == classifiers.classify(tiny_classifier, m.decoded)[0]


@pytest.mark.skipif({"digits-28", "digits-128"} - set(models.shipped_names("digits"))
                    or "digits" not in models.shipped_names("classifier"), reason="digit models not shipped yet")
@pytest.mark.parametrize("latent", [28, 128])
def test_the_shipped_models_code_digits_in_fewer_bytes_than_png(latent):
    from compressors.imageio import encode_png

    x, _ = drawn_digits(20, seed=6)
    sizes = [len(DIGITS.encode(im[:, :, None], latent=latent)) for im in x]
    assert np.mean(sizes) < np.mean([len(encode_png(im[:, :, None])) for im in x])
    decoded = [DIGITS.decode(DIGITS.encode(im[:, :, None], latent=latent)) for im in x]
    labels = [classifiers.classify("digits", d)[0] for d in decoded]
    assert len(labels) == 20  # the shipped classifier takes the shipped codec's output

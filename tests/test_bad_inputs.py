"""Bad input, on purpose: every kind gives the row it should and none stops a run.

The corpus is generated here (nothing from ../shared). Each entry states what its row
must say: ``ok`` with the conversion :mod:`compressors.imageio` applied, or ``error``
with a message a person understands. One real run (Prefect server, Dask cluster,
``jpeg``) goes over the whole corpus; the byte-level kinds are also checked directly
against :func:`compressors.imageio.decode_image`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from compressors.imageio import ImageError, decode_image, max_file_bytes
from flows.compress import compress_collection
from flows.params import CompressRequest
from flows.runner import dask_runner
from tasks.report import read_reports

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RNG = np.random.default_rng(5)
PHOTO = RNG.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
PHOTO[:, :20] = np.linspace(0, 255, 20, dtype=np.uint8)[None, :, None]  # some structure, not only noise


@dataclass(frozen=True)
class Expect:
    status: str  # "ok" | "error"
    text: str = ""  # ok: the exact conversion; error: a substring of the message
    shape: tuple[int, int, int] | None = None  # ok: (height, width, channels)
    fmt: str | None = None  # ok: the source format Pillow saw


def ok(conversion: str = "", shape=None, fmt=None) -> Expect:
    return Expect("ok", conversion, shape, fmt)


def error(text: str) -> Expect:
    return Expect("error", text)


def save(image, fmt: str, **options) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_raw(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes] | None) -> bytes:
    """A PNG written by hand: any header, valid CRCs (for 16-bit RGB and lying headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + r for r in rows) if rows is not None else b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(save(PHOTO[:16, :16], "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gray16() -> np.ndarray:
    return (np.arange(32 * 48, dtype=np.uint32).reshape(32, 48) * 43 % 65536).astype(np.uint16)


def rgb16() -> np.ndarray:
    return np.random.default_rng(16).integers(0, 65536, size=(12, 10, 3), dtype=np.uint16)


def byte_kinds() -> dict[str, tuple[str, bytes, Expect]]:
    """kind -> (relative path, file bytes, expected row): inputs that are just bytes."""
    h, w = PHOTO.shape[:2]
    palette = Image.fromarray(PHOTO).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    frames = [Image.fromarray(np.full((20, 30, 3), (40 * i, 200 - 40 * i, 90), np.uint8)) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    la = np.dstack([PHOTO[..., 0], np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))])
    rgba_opaque = np.dstack([PHOTO, np.full((h, w), 255, np.uint8)])
    tiff_pages = io.BytesIO()
    frames[0].save(tiff_pages, format="TIFF", save_all=True, append_images=frames[1:2])
    good_png = save(PHOTO, "PNG")
    bad_crc = bytearray(good_png)
    bad_crc[good_png.find(b"IDAT") + 10] ^= 0xFF
    return {
        "truncated PNG": ("broken/truncated.png", good_png[: len(good_png) // 2], error("truncated")),
        "truncated JPEG": ("broken/truncated.jpg", save(PHOTO, "JPEG")[:200], error("truncated")),
        "PNG with a corrupt chunk": ("broken/bad-crc.png", bytes(bad_crc), error("corrupt")),
        "zero bytes": ("broken/empty.png", b"", error("empty file (0 bytes)")),
        "text named .png": ("broken/notes.png", b"these are notes, not pixels\n" * 3,
                            error("not an image in a format this pipeline reads")),
        "PNG header claiming 100000x100000": ("bombs/huge-header.png", png_raw(100_000, 100_000, 8, 2, None),
                                              error("10,000,000,000 pixels")),
        "JPEG header claiming 65000x65000": ("bombs/huge-header.jpg", jpeg_claiming(65_000, 65_000),
                                             error("4,225,000,000 pixels")),
        "header over the run's pixel limit": ("bombs/over-limit.jpg", jpeg_claiming(12_000, 12_000),
                                              error("12000x12000 = 144,000,000 pixels")),
        "1x1": ("sizes/1x1.png", save(np.array([[[200, 30, 90]]], np.uint8), "PNG"), ok("", (1, 1, 3))),
        "1x20000": ("sizes/1x20000.png", save(np.tile(PHOTO[:1, 20:], (1, 1000, 1)), "PNG"), ok("", (1, 20000, 3))),
        "16-bit gray PNG": ("depth/gray16.png", save(gray16(), "PNG"), ok("16-bit to 8-bit", (32, 48, 1), "PNG")),
        "16-bit RGB PNG": ("depth/rgb16.png",
                           png_raw(10, 12, 16, 2, [r.astype(">u2").tobytes() for r in rgb16()]),
                           ok("16-bit to 8-bit", (12, 10, 3), "PNG")),
        "CMYK JPEG": ("modes/cmyk.jpg", save(Image.fromarray(PHOTO).convert("CMYK"), "JPEG", quality=95),
                      ok("CMYK to RGB", (h, w, 3), "JPEG")),
        "palette with transparency": ("modes/palette-transparent.png", save(palette, "PNG", transparency=0),
                                      ok("palette expanded;alpha composited over white", (h, w, 3), "PNG")),
        "LA (gray + alpha)": ("modes/la.png", save(Image.fromarray(la, "LA"), "PNG"),
                              ok("alpha composited over white", (h, w, 1), "PNG")),
        "RGBA, fully opaque": ("modes/opaque.png", save(rgba_opaque, "PNG"), ok("opaque alpha dropped", (h, w, 3))),
        "bilevel": ("modes/bilevel.png", save(Image.fromarray(PHOTO).convert("1"), "PNG"),
                    ok("bilevel to grayscale", (h, w, 1))),
        "gray stored as RGB": ("modes/gray-rgb.png", save(np.repeat(PHOTO[..., :1], 3, axis=2), "PNG"),
                               ok("equal RGB channels stored as grayscale", (h, w, 1))),
        "float TIFF": ("modes/float.tif", save(Image.fromarray(PHOTO[..., 0].astype(np.float32) * 1.5, "F"), "TIFF"),
                       ok("float samples clipped to 0..255", (h, w, 1), "TIFF")),
        "animated GIF": ("frames/animated.gif", save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
                         ok("first frame of 3;palette expanded", (20, 30, 3), "GIF")),
        "animated WebP": ("frames/animated.webp",
                          save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
                          ok("first frame of 3", (20, 30, 3), "WEBP")),
        "multi-page TIFF": ("frames/pages.tif", tiff_pages.getvalue(), ok("first frame of 2", (20, 30, 3), "TIFF")),
        "EXIF-rotated JPEG": ("modes/exif-rotated.jpg", save(PHOTO, "JPEG", exif=exif, quality=95),
                              ok("exif orientation 6 applied", (w, h, 3), "JPEG")),
        "PNG named .jpg": ("names/actually-a-png.jpg", good_png, ok("", (h, w, 3), "PNG")),
        "upper-case extension": ("names/SHOUTING.PNG", good_png, ok("", (h, w, 3), "PNG")),
        "spaces and non-ASCII in the name": ("names/my photo – été 東京.png", good_png, ok("", (h, w, 3))),
        "nested folders": ("a/b/c/d/e/deep.png", good_png, ok("", (h, w, 3))),
        "JPEG 2000 input": ("formats/input.jp2", save(PHOTO, "JPEG2000"), ok("", (h, w, 3), "JPEG2000")),
        "AVIF input": ("formats/input.avif", save(PHOTO, "AVIF", quality=90), ok("", (h, w, 3), "AVIF")),
        "BMP input": ("formats/input.bmp", save(PHOTO, "BMP"), ok("", (h, w, 3), "BMP")),
    }


def fs_kinds(root: str) -> dict[str, tuple[str, Expect | None]]:
    """Kinds that are file-system states, made under ``root``; ``None``: must get no row."""
    good = save(PHOTO, "PNG")
    out: dict[str, tuple[str, Expect | None]] = {}

    def put(rel: str, data: bytes) -> str:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    os.makedirs(os.path.join(root, "links"), exist_ok=True)
    os.symlink("loop.png", os.path.join(root, "links/loop.png"))  # a link to itself
    out["symlink loop"] = ("links/loop.png", error("Too many levels of symbolic links"))
    os.symlink("../links", os.path.join(root, "links/back"))  # a folder link loop: not followed
    os.symlink("missing.png", os.path.join(root, "links/dangling.png"))
    out["dangling symlink"] = ("links/dangling.png", error("no such file"))
    os.symlink(os.path.join(root, "a/b/c/d/e/deep.png"), os.path.join(root, "links/to-a-good-file.png"))
    out["symlink to a good file"] = ("links/to-a-good-file.png", ok("", PHOTO.shape))
    os.symlink("/dev/zero", os.path.join(root, "links/dev-zero.png"))  # endless bytes
    out["link to /dev/zero"] = ("links/dev-zero.png", error("not a regular file (a character device)"))
    os.makedirs(os.path.join(root, "special"), exist_ok=True)
    os.mkfifo(os.path.join(root, "special/pipe.png"))  # opening it for reading would block forever
    out["FIFO named .png"] = ("special/pipe.png", error("not a regular file (a FIFO)"))
    put("special/folder.png/inside.png", good)  # a folder with an image's name: a folder, listed through
    out["folder named .png"] = ("special/folder.png/inside.png", ok("", PHOTO.shape))
    locked = put("special/unreadable.png", good)
    os.chmod(locked, 0)
    # root reads through mode 000, so there the honest expectation is an ok row.
    out["unreadable file (mode 000)"] = ("special/unreadable.png",
                                         ok("", PHOTO.shape) if IS_ROOT else error("Permission denied"))
    with open(os.path.join(root, "special/sparse-huge.tif"), "wb") as fh:
        fh.truncate(max_file_bytes(SMALL_LIMIT) + 1)  # sparse: costs no disk
    out["file over the size limit"] = ("special/sparse-huge.tif", error("over the limit"))
    put(".hidden/ignored.png", good)
    put("special/.hidden.png", good)
    out["hidden files"] = (".hidden/ignored.png", None)
    put("special/readme.txt", b"not listed: not an image extension")
    out["non-image extension"] = ("special/readme.txt", None)
    return out


SMALL_LIMIT = 50_000_000  # pixels: 12000x12000 is over, every real image here is under


def build_corpus(root: str) -> dict[str, tuple[str, Expect | None]]:
    corpus = {}
    for kind, (rel, data, expect) in byte_kinds().items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        corpus[kind] = (rel, expect)
    corpus.update(fs_kinds(root))
    return corpus


@pytest.fixture(scope="module")
def corpus_run(prefect_server, dask_address, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad-inputs"))
    source, dest = os.path.join(root, "in"), os.path.join(root, "out")
    corpus = build_corpus(source)
    request = CompressRequest(source=source, dest=dest, codec="jpeg", quality=80, shard_size=8,
                              max_megapixels=SMALL_LIMIT / 1e6)
    summary = compress_collection.with_options(task_runner=dask_runner(dask_address))(request)
    rows = {r["source"]: r for r in read_reports(dest).to_pylist()}
    return corpus, summary, rows, len(read_reports(dest))


def test_the_corpus_has_at_least_twenty_kinds_of_bad_input(corpus_run):
    corpus, *_ = corpus_run
    assert len(corpus) >= 20
    print(f"\nbad-input kinds: {len(corpus)}")


def test_one_run_over_the_corpus_completes_with_one_row_per_listed_file(corpus_run):
    corpus, summary, rows, n_rows = corpus_run
    expected = {rel for rel, expect in corpus.values() if expect is not None}
    assert n_rows == len(rows) == summary["images"]  # one row per file, no duplicates
    assert set(rows) == expected
    assert summary["ok"] + summary["errors"] == summary["images"]
    for rel, expect in corpus.values():
        if expect is None:
            assert rel not in rows


@pytest.mark.parametrize("kind", sorted(byte_kinds()) + sorted(
    ["symlink loop", "dangling symlink", "symlink to a good file", "link to /dev/zero", "FIFO named .png",
     "folder named .png", "unreadable file (mode 000)", "file over the size limit"]))
def test_each_kind_gets_the_row_it_should(corpus_run, kind):
    corpus, _, rows, _ = corpus_run
    rel, expect = corpus[kind]
    row = rows[rel]
    if expect.status == "error":
        assert row["status"] == "error", row
        assert expect.text in row["error"], row["error"]
        assert row["artifact"] is None
        return
    assert row["status"] == "ok", row.get("error")
    assert row["conversion"] == expect.text
    if expect.shape:
        assert (row["height"], row["width"], row["channels"]) == tuple(expect.shape)
    if expect.fmt:
        assert row["source_format"] == expect.fmt
    assert os.path.isfile(row["artifact"]) and os.path.getsize(row["artifact"]) == row["artifact_bytes"]
    assert row["psnr"] > 5 and 0 < row["ssim"] <= 1


@pytest.mark.parametrize("kind", sorted(byte_kinds()))
def test_decode_image_per_kind(kind):
    rel, data, expect = byte_kinds()[kind]
    if expect.status == "error":
        with pytest.raises(ImageError) as info:
            decode_image(data, max_pixels=SMALL_LIMIT)
        assert expect.text in str(info.value)
        assert "0x7f" not in str(info.value)  # no object reprs in messages
        return
    decoded = decode_image(data, max_pixels=SMALL_LIMIT)
    assert decoded.image.dtype == np.uint8 and decoded.image.flags.c_contiguous
    assert decoded.conversion == expect.text
    if expect.shape:
        assert decoded.image.shape == tuple(expect.shape)


def test_sixteen_bit_gray_is_scaled_by_257_with_rounding():
    decoded = decode_image(save(gray16(), "PNG")).image[..., 0]
    np.testing.assert_array_equal(decoded, np.round(gray16() / 257).astype(np.uint8))


def test_sixteen_bit_rgb_is_within_one_level_of_v_over_257():
    data = png_raw(10, 12, 16, 2, [r.astype(">u2").tobytes() for r in rgb16()])
    decoded = decode_image(data).image.astype(int)
    assert np.abs(decoded - np.round(rgb16() / 257)).max() <= 1


def test_transparency_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red: white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black stays black
    rgba[1, :] = (0, 0, 255, 128)  # half blue over white
    out = decode_image(save(rgba, "PNG")).image
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 0]
    assert out[1, 0].tolist() == [127, 127, 255]


def test_exif_rotation_gives_the_image_a_viewer_shows():
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(save(PHOTO, "PNG", exif=exif)).image
    np.testing.assert_array_equal(out, np.rot90(PHOTO, k=-1))


def test_cmyk_jpeg_comes_back_as_rgb_close_to_the_original():
    out = decode_image(save(Image.fromarray(PHOTO).convert("CMYK"), "JPEG", quality=100)).image
    assert out.shape == PHOTO.shape
    assert np.abs(out.astype(int) - PHOTO).mean() < 12  # not inverted, not channel-swapped


def test_a_header_over_the_limit_is_refused_before_decoding(monkeypatch):
    data = jpeg_claiming(12_000, 12_000)

    def boom(*_a, **_k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", boom)
    with pytest.raises(ImageError, match="possible decompression bomb"):
        decode_image(data, max_pixels=SMALL_LIMIT)


def test_odd_names_and_nesting_survive_s3(s3_endpoint, s3_bucket):
    """Spaces, non-ASCII and nesting in object keys, through the plain shard function on moto."""
    from tasks.plan import prepare_run
    from tasks.shard import compress_shard
    from tasks.storage import Storage, write_bytes

    storage = Storage(endpoint_url=s3_endpoint)
    kinds = byte_kinds()
    chosen = ["spaces and non-ASCII in the name", "nested folders", "truncated PNG", "CMYK JPEG", "zero bytes"]
    for kind in chosen:
        rel, data, _ = kinds[kind]
        write_bytes(f"{s3_bucket}/in/{rel}", data, storage)
    plan = prepare_run(f"{s3_bucket}/in", f"{s3_bucket}/out", "jpeg", {"quality": 75}, shard_size=2, storage=storage)
    for spec in plan.specs:
        compress_shard(spec)
    rows = {r["source"]: r for r in read_reports(f"{s3_bucket}/out", storage).to_pylist()}
    assert len(rows) == len(chosen)
    for kind in chosen:
        rel, _, expect = kinds[kind]
        assert rows[rel]["status"] == expect.status, rows[rel]
        if expect.status == "ok":
            fs, _ = storage.fs(rows[rel]["artifact"])
            assert fs.cat_file(rows[rel]["artifact"])[:3] == b"\xff\xd8\xff"

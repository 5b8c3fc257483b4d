"""Hostile bytes for every decoder: the cases ``bench/fuzz.py`` and ``tests/test_fuzz.py`` share.

A case is a real artifact of a codec (or a real input file), mutated: bit flips, bytes,
header fields overwritten with extreme integers, the format's width/height fields set to
huge values, truncation, insertion, deletion, splices; checksums recomputed on half of
them so the mutation reaches the parser behind them. Randomness comes from a ``pick``
object (``randint``, ``choice``, ``random``, ``randbytes``): a seeded ``random.Random``
in the benchmark, hypothesis draws in the tests (:class:`DrawPick`), so both run the
same mutations.

**A new codec** needs nothing here when its artifacts are standard or start with a magic
that :func:`size_fields` knows; add its width/height offsets to :func:`size_fields` (and
a checksum rule to :func:`fix_checksums` if its format has one) so the ``dims`` mutation
and the huge-header test reach it. Pure: no I/O besides ``/proc/self/status``.
"""

from __future__ import annotations

import contextlib
import io
import re
import resource
import struct
import zlib
from typing import Any, Sequence

import numpy as np

INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0xFFFFFFFF, 16383, 65500)
HUGE = (0, 1, 0x3FFF, 0x7FFF, 0xFFFF, 0x10000, 12_000, 65_500, 100_000, 0x7FFFFFFF, 0xFFFFFFFF)
OPS = ("flip", "byte", "int", "truncate", "insert", "delete", "splice", "dims")


def seed_images() -> list[np.ndarray]:
    """Small images of every shape class: smooth RGB, gray, noise, 1x1, a larger noisy one."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:40]
    smooth = np.dstack([(xx * 6) % 256, (yy * 10) % 256, ((xx + yy) * 4) % 256]).astype(np.uint8)
    return [smooth, smooth[..., :1].copy(), rng.integers(0, 256, (9, 13, 3), dtype=np.uint8),
            np.full((1, 1, 3), 77, np.uint8), rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)]


def _mask(fmt: str) -> int:
    return {"B": 0xFF, "H": 0xFFFF}.get(fmt[-1], 0xFFFFFFFF)


def digit_images() -> list[np.ndarray]:
    """28x28 gray images: the only shape the ``digits`` codec takes (a stroke, and noise)."""
    stroke = np.zeros((28, 28, 1), np.uint8)
    stroke[6:22, 12:16] = 255
    return [stroke, np.random.default_rng(2).integers(0, 256, (28, 28, 1), dtype=np.uint8)]


def codec_seeds(name: str, qualities: Sequence[int] = (5, 50, 95), images: int | None = None) -> list[bytes]:
    """Real artifacts of codec ``name`` (at a few qualities when it has a ``quality``)."""
    from compressors import get_codec  # noqa: PLC0415

    codec = get_codec(name)
    q = codec.params.get("quality")  # the qualities asked for, moved into this codec's own range
    params = ([{"quality": v} for v in sorted({int(min(max(v, q.lo), q.hi)) for v in qualities})]
              if q is not None and q.lo is not None and q.hi is not None else [{}])
    out = []
    for image in seed_images()[:images] + digit_images():
        for p in params:
            try:
                out.append(codec.encode(image, **p))
            except Exception:  # noqa: BLE001  (no model here ...)
                pass
    if out and name == "autoencoder":  # artifacts of the previous container version still decode: fuzz that path too
        from compressors.autoencoder.codec import encode_version1  # noqa: PLC0415

        out += [encode_version1(image, quality=int(q.lo)) for image in seed_images()[:2]]
    if "lossless" in codec.params:  # exact artifacts too: pixels coded losslessly, JPEG files transcoded
        from skimage import data as samples  # noqa: PLC0415

        smooth = seed_images()[0]
        photo = np.ascontiguousarray(samples.astronaut()[100:260, 150:310])  # big enough to transcode
        for image in (smooth, smooth[..., :1].copy(), photo):
            out.append(codec.compress(image, lossless=True, effort=1).data)
        for image in (photo, np.ascontiguousarray(photo[..., :1])):
            out.append(codec.compress(image, source=jpeg_file(image), lossless=True).data)
    return out


def jpeg_file(image: np.ndarray, quality: int = 85) -> bytes:
    """A JPEG file of ``image``: the source a ``takes_source`` codec is given."""
    from PIL import Image  # noqa: PLC0415

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def input_seeds() -> list[bytes]:
    """Real input files of every kind the input decoder takes."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8))
    frames = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    variants = [
        ("PNG", img, {}), ("PNG", img.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), {"transparency": 0}),
        ("PNG", img.convert("L").convert("I;16"), {}), ("PNG", img.convert("LA"), {}), ("JPEG", img, {}),
        ("JPEG", img.convert("CMYK"), {}), ("GIF", frames[0], {"save_all": True, "append_images": frames[1:]}),
        ("TIFF", img, {}), ("TIFF", img.convert("L").convert("F"), {}), ("BMP", img, {}),
        ("WEBP", img.convert("RGBA"), {"lossless": True}), ("WEBP", img, {"quality": 50}),
        ("JPEG2000", img, {}), ("AVIF", img, {}), ("ICO", img, {}), ("PPM", img, {}), ("TGA", img, {}),
    ]
    out = []
    for fmt, im, kw in variants:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        out.append(buf.getvalue())
    import imagecodecs  # noqa: PLC0415  (a 12-bit JPEG: Pillow cannot read it; imageio uses libjpeg-turbo)

    out.append(bytes(imagecodecs.jpeg8_encode(np.asarray(img).astype(np.uint16) * 16, bitspersample=12, level=90)))
    return out


def fix_checksums(data: bytearray, template: bytes) -> bytearray:
    """Recompute the checksums the template's format carries, so a mutation gets past them."""
    if template.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            if pos + 12 + length > len(data):
                break
            struct.pack_into(">I", data, pos + 8 + length, zlib.crc32(bytes(data[pos + 4 : pos + 8 + length])))
            pos += 12 + length
    elif len(template) > 4 and struct.unpack("<I", template[-4:])[0] == zlib.crc32(template[:-4]) and len(data) > 4:
        # imgpress containers: a CRC32 of everything before it, last
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    return data


def size_fields(data: bytes) -> list[tuple[int, str]]:
    """Where this artifact's format keeps its width and height: ``(offset, struct format)``."""
    def at(marker: bytes, skip: int, fmt: str, count: int = 2) -> list[tuple[int, str]]:
        i = data.find(marker)
        return [] if i < 0 else [(i + skip + k * struct.calcsize(fmt), fmt) for k in range(count)]

    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return [(16, ">I"), (20, ">I")]
    if data.startswith(b"\xff\xd8\xff"):
        return at(b"\xff\xc0", 5, ">H") + at(b"\xff\xc2", 5, ">H")
    if data[8:12] == b"WEBP":
        return at(b"\x9d\x01\x2a", 3, "<H") + at(b"VP8X", 8, "<I", 1)
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return at(b"ispe", 8, ">I")
    if data.startswith(b"\x00\x00\x00\x0cjP  "):
        return at(b"ihdr", 4, ">I") + at(b"\xff\x51", 6, ">I")
    if data.startswith(b"IMPD"):  # digits: H, W are single bytes after magic, version, latent and model id
        return [(14, "<B"), (15, "<B")]
    if data.startswith(b"IMP"):  # imgpress containers (IMPA, IMPL, IMPC ...): H, W at 14 and 18
        return [(14, "<I"), (18, "<I")]
    if data.startswith(b"\xff\x0a"):  # JPEG XL codestream: the SizeHeader's bits start at byte 2
        return [(2, "<I")]
    if data.startswith(b"\x00\x00\x00\x0cJXL "):  # JPEG XL container: the first codestream box
        for box, skip in ((b"jxlc", 4 + 2), (b"jxlp", 8 + 2)):
            i = data.find(box)
            if i >= 0:
                return [(i + skip, "<I")]
    return []


def mutate(template: bytes, pick: Any, ops: Sequence[str] = OPS) -> bytes:
    """1-4 mutations of ``template``; half of the edits land in the first 64 bytes (the headers)."""
    data = bytearray(template)
    for _ in range(pick.randint(1, 4)):
        if not data:
            break
        pos = pick.randint(0, min(63, len(data) - 1)) if pick.random() < 0.5 else pick.randint(0, len(data) - 1)
        op = pick.choice(ops)
        if op == "flip":
            data[pos] ^= 1 << pick.randint(0, 7)
        elif op == "byte":
            data[pos] = pick.randint(0, 255)
        elif op == "int":
            fmt = pick.choice((">H", "<H", ">I", "<I"))
            value = pick.choice(INTERESTING) & _mask(fmt)
            if pos + struct.calcsize(fmt) <= len(data):
                struct.pack_into(fmt, data, pos, value)
        elif op == "dims":  # a header claiming another (often huge) shape
            for offset, fmt in size_fields(bytes(data)):
                if pick.random() < 0.7 and offset + struct.calcsize(fmt) <= len(data):
                    struct.pack_into(fmt, data, offset, pick.choice(HUGE) & _mask(fmt))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = pick.randbytes(pick.randint(1, 32))
        elif op == "delete":
            del data[pos : pos + pick.randint(1, 64)]
        else:  # splice
            start = pick.randint(0, len(data) - 1)
            data[pos:pos] = data[start : start + pick.randint(1, 256)]
    if pick.random() < 0.5:
        data = fix_checksums(data, template)
    return bytes(data)


class DrawPick:
    """``pick`` over hypothesis's ``draw``, so hypothesis can shrink a failing case."""

    def __init__(self, draw):
        from hypothesis import strategies as st  # noqa: PLC0415  (a test dependency)

        self._draw, self._st = draw, st

    def randint(self, a: int, b: int) -> int:
        return self._draw(self._st.integers(a, b))

    def choice(self, seq):
        return self._draw(self._st.sampled_from(list(seq)))

    def random(self) -> float:
        return self._draw(self._st.floats(0, 1, exclude_max=True))

    def randbytes(self, n: int) -> bytes:
        return self._draw(self._st.binary(min_size=n, max_size=n))


def vm_data() -> int:
    """Bytes of data mappings of this process now (Linux ``VmData``)."""
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmData:\s+(\d+) kB", fh.read()).group(1)) * 1024


def max_rss() -> int:
    """Peak resident bytes of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def memory_headroom(nbytes: int):
    """Let the process map at most ``nbytes`` more data while the block runs (Linux RLIMIT_DATA)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (min(vm_data() + nbytes, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


class PeakRSS:
    """The largest resident set of this process while the block runs (sampled every ~0.2 ms).

    ``peak - base`` is what the block made the process hold at its worst; unlike
    ``ru_maxrss`` it is not hidden by an earlier peak (imports, encoding).
    """

    def __init__(self, interval_s: float = 0.0002):
        self.interval_s, self.base, self.peak = interval_s, 0, 0

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()

    def __enter__(self):
        import threading  # noqa: PLC0415

        self.base = self.peak = self.now()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.now())
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

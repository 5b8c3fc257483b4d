"""Untrusted artifacts: every registered decoder, fuzzed with hypothesis.

A decoder given any bytes must either return a codec-boundary image or raise
``ValueError`` with a message; never another exception, a crash, a hang, or an
allocation out of proportion to what it may legitimately decode. The cases are real
artifacts of each codec, mutated (bit flips, overwritten header fields with extreme
integers, truncation, insertion, deletion, splices), with checksums recomputed on half
of them so the mutation reaches the parser behind the checksum, plus random bytes.

Allocation is policed with ``RLIMIT_DATA``: while a case runs the process may not map
more than a fixed headroom of new memory, so a decoder that allocates for a hostile
header fails loudly (``MemoryError``) instead of quietly. The classical decoders'
pixel limit (and the autoencoder's) is lowered for the run so their legitimate maximum fits the headroom.
Hangs are bounded by ``faulthandler`` (the process dies with a traceback).

``bench/fuzz.py`` runs the same cases (:mod:`compressors.fuzzing`) by the ten thousand.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compressors.classical as classical
import compressors.jxl as jxl
from compressors.autoencoder import container as ae_container
from compressors import CODECS, get_codec
from compressors.fuzzing import DrawPick, codec_seeds, input_seeds, memory_headroom, mutate
from compressors.imageio import ImageError, decode_image
from compressors.registry import check_image

EXAMPLES = int(os.environ.get("IMGPRESS_FUZZ_EXAMPLES", "250"))
CASE_SECONDS = 10.0  # generous for a loaded 2-core CI machine; real cases take milliseconds
HEADROOM = {"classical": 384 << 20, "other": 3 << 30}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@contextlib.contextmanager
def hang_guard(seconds: float):
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def seed_artifacts(name: str) -> list[bytes]:
    """Real artifacts of codec ``name`` (gray and RGB, tiny and small, low and high quality)."""
    return codec_seeds(name, qualities=(10, 90), images=4)


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """The benchmark's mutations (compressors.fuzzing), drawn by hypothesis so failures shrink."""
    return mutate(draw(st.sampled_from(seeds)), DrawPick(draw))


def decode_case(name: str, data: bytes) -> str:
    """Decode one case; return "decoded" or "rejected", raise on anything else."""
    start = time.perf_counter()
    try:
        image = get_codec(name).decode(data)
    except ValueError as exc:
        assert str(exc), "a rejection must say why"
        outcome = "rejected"
    else:
        check_image(image)
        outcome = "decoded"
    elapsed = time.perf_counter() - start
    assert elapsed < CASE_SECONDS, f"{name} took {elapsed:.1f} s on a {len(data)}-byte case"
    return outcome


@pytest.fixture
def policed(name, monkeypatch):
    """Lower the classical pixel limit, bound memory and time for the cases of codec ``name``."""
    is_classical = get_codec(name).decode_fn.__module__ in (classical.__name__, jxl.__name__)
    for module in (classical, jxl):
        monkeypatch.setattr(module, "MAX_PIXELS", 2_000_000)  # 2 Mpx: at most ~30 MB to decode one
    monkeypatch.setattr(ae_container, "MAX_PIXELS", 2_000_000)  # the autoencoder's g_s: ~1 GB at 2 Mpx
    for seed in seed_artifacts(name)[:1]:
        get_codec(name).decode(seed)  # load the libraries before the headroom is measured
    with hang_guard(600), memory_headroom(HEADROOM["classical" if is_classical else "other"]):
        yield


@pytest.mark.parametrize("name", sorted(CODECS))
def test_mutated_artifacts_decode_or_raise_value_error(name, policed):
    seeds = seed_artifacts(name)
    if not seeds:
        pytest.skip(f"{name} cannot encode here (e.g. no model shipped yet): random bytes only")
    outcomes: list[str] = []

    @FUZZ_SETTINGS
    @given(data=mutated(seeds))
    def run(data):
        outcomes.append(decode_case(name, data))

    run()
    print(f"\n{name}: {len(outcomes)} mutated cases, {outcomes.count('decoded')} decoded, "
          f"{outcomes.count('rejected')} rejected with ValueError")
    assert len(outcomes) >= min(EXAMPLES, 100)
    assert "rejected" in outcomes  # the mutations did reach the validation


@pytest.mark.parametrize("name", sorted(n for n, c in CODECS.items() if c.restore_fn is not None))
def test_mutated_artifacts_restore_or_raise_value_error(name, policed):
    """``restore`` (original bytes back from an exact artifact) is a decoder of untrusted bytes too."""
    seeds = seed_artifacts(name)
    outcomes: list[str] = []

    @FUZZ_SETTINGS
    @given(data=mutated(seeds))
    def run(data):
        start = time.perf_counter()
        try:
            original = get_codec(name).restore(data)
        except ValueError as exc:
            assert str(exc), "a rejection must say why"
            outcomes.append("checksum" if "checksum" in str(exc) else "rejected")
        else:
            assert original is None or isinstance(original, bytes)
            outcomes.append("pixels" if original is None else "restored")
        assert time.perf_counter() - start < CASE_SECONDS

    run()
    print(f"\n{name}: {len(outcomes)} mutated cases restored: {outcomes.count('restored')}, pixel artifacts: "
          f"{outcomes.count('pixels')}, rejected: {outcomes.count('rejected')}, caught by the checksum: "
          f"{outcomes.count('checksum')}")
    assert "rejected" in outcomes  # the mutations did reach the validation


@pytest.mark.parametrize("name", sorted(CODECS))
def test_random_bytes_are_rejected_with_value_error(name, policed):
    template = (seed_artifacts(name) or [b""])[0]

    @FUZZ_SETTINGS
    @given(prefix_len=st.integers(0, 16), tail=st.binary(min_size=0, max_size=2048))
    def run(prefix_len, tail):
        decode_case(name, template[:prefix_len] + tail)  # with and without a correct signature

    run()


def _claiming(name: str, width: int, height: int) -> bytes | None:
    """A real artifact of ``name`` whose header now claims ``width`` x ``height`` (None: unknown format)."""
    try:
        data = bytearray(get_codec(name).encode(np.full((16, 16, 3), 90, np.uint8)))
    except Exception:  # noqa: BLE001  (cannot encode here, e.g. no model shipped)
        return None
    if data.startswith(b"\xff\xd8\xff"):  # JPEG: the SOF0 frame header
        if max(width, height) > 0xFFFF:
            pytest.skip("JPEG sizes are 16-bit")
        struct.pack_into(">HH", data, data.find(b"\xff\xc0") + 5, height, width)
    elif data[8:12] == b"WEBP":  # lossy VP8 key frame: 14-bit sizes
        if max(width, height) > 0x3FFF:
            pytest.skip("VP8 sizes are 14-bit")
        struct.pack_into("<HH", data, data.find(b"\x9d\x01\x2a") + 3, width, height)
    elif data[4:12] in (b"ftypavif", b"ftypavis"):  # AVIF: the image spatial extents property
        struct.pack_into(">II", data, data.find(b"ispe") + 8, width, height)
    elif data.startswith(b"\x00\x00\x00\x0cjP  "):  # JP2: the ihdr box and the codestream's SIZ
        struct.pack_into(">II", data, data.find(b"ihdr") + 4, height, width)
        struct.pack_into(">II", data, data.find(b"\xff\x51") + 6, width, height)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):  # PNG: IHDR, with its CRC made right again
        struct.pack_into(">II", data, 16, width, height)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    elif data.startswith(b"\xff\x0a"):  # JPEG XL codestream: its SizeHeader rewritten bit by bit
        bits = jxl._Bits(bytes(data[2:]))
        jxl._size(bits, (), jxl._SIZE, div8_is_u32=False)  # where the old SizeHeader ends
        rest = int.from_bytes(data[2:], "little") >> bits.pos
        # div8=0, U32 selector 3 (30 bits) for height-1, ratio 0, selector 3 for width-1: 68 bits
        head = (3 << 1) | ((height - 1) << 3) | (3 << 36) | ((width - 1) << 38)
        total = 68 + 8 * (len(data) - 2) - bits.pos
        data = bytearray(b"\xff\x0a" + (head | rest << 68).to_bytes((total + 7) // 8, "little"))
    elif data[:4] in (b"IMPA", b"IMPL", b"IMPC"):  # imgpress containers: H, W after magic, ids, model id; CRC32 last
        struct.pack_into("<II", data, 14, height, width)
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    else:
        return None
    return bytes(data)


KNOWN_BUGS: dict[str, str] = {}  # codec -> reason, for a decoder bug found and not yet fixed


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("size", [(12_000, 12_000), (16_383, 16_383), (65_535, 65_535), (100_000, 100_000)])
def test_a_header_claiming_a_huge_shape_is_refused_before_allocating(name, size, request):
    w, h = size
    data = _claiming(name, w, h)
    if data is None:
        pytest.skip(f"{name}: cannot make an artifact here, or its header layout is unknown to this test")
    if name in KNOWN_BUGS and w * h > 178_956_970:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=False))
    with memory_headroom(48 << 20):  # a 16x16 artifact: nothing near an image-sized allocation is allowed
        start = time.perf_counter()
        with pytest.raises(ValueError, match=r"(?i)claims|header|corrupt|model|limit"):
            get_codec(name).decode(data)
        assert time.perf_counter() - start < 2


@pytest.fixture
def image_seeds() -> list[bytes]:
    return input_seeds()


def test_decode_image_turns_any_bytes_into_an_image_or_a_clear_image_error(image_seeds):
    """The input side: whatever a source file holds, decode_image returns or raises ImageError."""
    outcomes = []

    @FUZZ_SETTINGS
    @given(data=st.one_of(mutated(image_seeds), st.binary(max_size=512)))
    def run(data):
        start = time.perf_counter()
        try:
            decoded = decode_image(data, max_pixels=2_000_000)
        except ImageError as exc:
            assert "not enough memory" not in str(exc)
            outcomes.append("rejected")
        else:
            check_image(decoded.image)
            outcomes.append("decoded")
        assert time.perf_counter() - start < CASE_SECONDS

    with hang_guard(600), memory_headroom(HEADROOM["classical"]):
        run()
    assert "rejected" in outcomes and "decoded" in outcomes


SOURCE_DIRS = ("compressors", "tasks", "flows", "imgpress", "deployments")
UNSAFE_LOADS = re.compile(
    r"\btorch\.load\s*\(|\bpickle\.loads?\s*\(|\bcloudpickle\.loads?\s*\(|\bdill\.loads?\s*\(|"
    r"\bjoblib\.load\s*\(|allow_pickle\s*=\s*True|\bmarshal\.loads?\s*\(|\bshelve\.open\s*\("
)


def test_no_pickle_based_loading_in_the_source_tree():
    """Models load from safetensors only: nothing in the product code unpickles data."""
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for folder in SOURCE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if UNSAFE_LOADS.search(line.split("#", 1)[0]):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "unpickling (arbitrary code on load) found:\n" + "\n".join(offenders)

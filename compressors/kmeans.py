"""The ``kmeans`` codec: a K-means colour palette, stored as a standard indexed PNG.

Encoding picks K palette colours by K-means (minimising the squared error, i.e.
maximising PSNR), maps every pixel to its nearest palette colour (no dithering) and
writes an ordinary palette PNG that any viewer opens. Decoding reads the PNG back.

How the palette is fitted (measured on Kodak; see ``bench/kmeans.py``):

1. The image is reduced to its exact colour histogram (unique colours and their pixel
   counts; a sort of 24-bit codes). K-means on the weighted histogram is K-means on all
   pixels, and photos have far fewer unique colours than pixels (Kodak: 13k-72k of 393k).
2. k-means++ seeding (Arthur & Vassilvitskii 2007) on a random sample of 4,096 pixels.
3. Mini-batch stage: Lloyd iterations on a random sample of 16,384 pixels (its
   histogram), until the centres move less than 0.05 levels or 40 iterations.
4. Full stage: Lloyd iterations on the whole histogram, as many as a fixed budget of
   colour-to-centre distances allows (2..30; e.g. ~4-6 for K=256 on a Kodak image),
   stopping early once converged. Each Lloyd step never increases the error.
5. The palette is rounded to 8 bits and every colour takes its nearest palette entry,
   exactly (integer distances are exact in float32).

All randomness comes from ``numpy.random.default_rng((seed, K))``: same image, K and
seed give the same bytes.

Choosing K:

- ``colors=K``: a palette of at most K colours (fewer when the image has fewer).
- ``target_psnr=T`` and/or ``target_ssim=S``: the smallest K reaching T dB (and SSIM S),
  searched with quick fits (stages 1-3) by the search every codec shares
  (:mod:`compressors.target`: interpolating in log K, safeguarded by bisection); the
  final fit continues the chosen quick fit, so it only gets better.
  With ``colors`` as well, ``colors`` bounds the search. When even the largest palette
  falls short, that palette is used (best effort; the report shows the PSNR reached).
- ``colors="elbow"``: K at the elbow of the squared-error curve (the classical choice,
  Kneedle after Satopaa et al. 2011): quick fits at ``ELBOW_KS`` (2..256, about evenly
  spaced in log K), both axes normalised to [0, 1] over K = 2..256, and the K whose error
  lies furthest below the chord from (2, error(2)) to (256, error(256)); the final fit
  continues that quick fit. With ``target_psnr`` as well, the elbow is the largest K allowed.
- neither: an image with at most 256 colours keeps them all (lossless, as a user of a
  palette format expects for graphics); any other gets ``target_psnr=AUTO_TARGET_PSNR``
  (40 dB, where palette artefacts stop being visible on photos), up to 256 colours.
  We measured the classical alternative, the elbow of the inertia curve (Kneedle over
  K=2..256): it picks K=16..24 on Kodak photos, 27-33 dB, with visible banding.

The artifact: PNG colour type 3, bit depth 1/2/4/8 by palette size, filter type 0 on
every row, deflated by libdeflate level 7 (through imagecodecs). Measured on Kodak palette indices: with filter 0,
deflate's size does not depend on the palette order (a permutation of symbols); the PNG
row filters (sub/up/Paeth, adaptive) make indices 5-10% larger, which is why the PNG
spec recommends filter 0 for palette images; zlib level 9 is 0.1-0.7% smaller than 7
for 2-3x the time; libdeflate level 7 gives the same size as zlib's level 7 (+0.7 % at
K = 64, -0.4 % at K = 256 on 8 Kodak images) in 0.37-0.40x its time (13 / 10 ms against
35 / 24 ms). The palette is ordered by luminance for readability only.

Grayscale input (C=1) gives a gray palette (R=G=B) and decodes to C=1. An RGB image
whose palette happens to be all gray carries a ``tEXt`` chunk ``imgpress.channels=3``
so it decodes to C=3. Alpha never reaches a codec: :mod:`compressors.imageio` composites
it over white before encoding.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from compressors.imageio import DEFAULT_MAX_PIXELS, decode_image
from compressors.metrics import ssim
from compressors.registry import Codec, Encoded, Param, register
from compressors.target import PSNR_RANGE, SSIM_RANGE, Target, smallest_passing

__all__ = ["AUTO_TARGET_PSNR", "ELBOW", "KMEANS", "Quantized", "decode", "elbow_k", "encode", "quantize"]

AUTO_TARGET_PSNR = 40.0
MAX_COLORS = 256
ELBOW = "elbow"
ELBOW_KS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256)

_INIT_SAMPLE = 4096  # pixels for k-means++ seeding
_BATCH = 16384  # pixels in the mini-batch stage
_BATCH_ITERATIONS = 40
_FULL_DISTANCE_BUDGET = 40_000_000  # colour-to-centre distances in the full stage
_FULL_ITERATIONS = (2, 30)
_DB_PER_DOUBLING = 2.5  # first guess of the target search (Kodak: 2.3-2.9)
_SSIM_DB_PER_DOUBLING = 1.5  # the same for -10 log10(1 - SSIM) (../shared/data/train: bench/target.py --priors)
_TOLERANCE = 0.05  # largest centre move (8-bit levels) that counts as converged

_DEFLATE_LEVEL = 7  # libdeflate's; see the module doc
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_KEY = "imgpress.channels"


@dataclass(frozen=True)
class Quantized:
    """A palette image: ``palette[indices]`` is the decoded image.

    ``indices`` is uint8 (H, W); ``palette`` uint8 (K, C), ordered by luminance, every
    entry used and distinct; ``psnr`` the exact PSNR (dB) against the input.
    """

    indices: np.ndarray
    palette: np.ndarray
    psnr: float

    @property
    def image(self) -> np.ndarray:
        return self.palette[self.indices]


# --------------------------------------------------------------------------- K-means


class _Histogram:
    """An image's exact colour histogram: unique colours, their counts, each pixel's code."""

    def __init__(self, image: np.ndarray) -> None:
        h, w, c = image.shape
        pixels = image.reshape(-1, c)
        if c == 1:
            codes = pixels[:, 0].astype(np.uint32)
        else:
            padded = np.zeros((h * w, 4), dtype=np.uint8)
            padded[:, :3] = pixels
            codes = padded.view("<u4").ravel()  # r | g << 8 | b << 16, on any byte order
        ordered = np.sort(codes)  # integer sort: ~1 ms for 0.4 Mpx
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        self.codes = codes
        self.unique_codes = ordered[starts]
        self.counts = np.diff(np.append(starts, ordered.size)).astype(np.int64)
        if c == 1:
            self.colors = self.unique_codes.astype(np.uint8)[:, None]
        else:
            self.colors = self.unique_codes.view(np.uint8).reshape(-1, 4)[:, :3]
        self.shape = image.shape
        self.image = image
        self.values = self.colors.astype(np.float32)
        self.weights = self.counts.astype(np.float64)
        self._inverse: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.unique_codes)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pixels drawn uniformly with replacement, as (colours, counts)."""
        if self.counts.sum() <= n:
            return self.values, self.weights
        cumulative = np.cumsum(self.counts)
        picks = np.searchsorted(cumulative, rng.integers(0, cumulative[-1], n), side="right")
        counts = np.bincount(picks, minlength=self.size)
        chosen = np.flatnonzero(counts)
        return self.values[chosen], counts[chosen].astype(np.float64)

    def reconstruct(self, fit: "_Fit") -> np.ndarray:
        """The image a fit gives: each pixel's colour mapped to its palette entry."""
        if self._inverse is None:
            self._inverse = np.searchsorted(self.unique_codes, self.codes)
        return fit.palette[fit.assignment][self._inverse].reshape(self.shape)

    def squared_error(self, assignment: np.ndarray, palette: np.ndarray) -> int:
        """Exact total squared error of mapping each colour to ``palette[assignment]``."""
        diff = self.colors.astype(np.int32) - palette[assignment].astype(np.int32)
        return int(np.dot(np.einsum("ij,ij->i", diff, diff).astype(np.int64), self.counts))

    def psnr(self, squared_error: int) -> float:
        if squared_error == 0:
            return math.inf
        mse = squared_error / (self.counts.sum() * self.shape[2])
        return 10.0 * math.log10(255.0**2 / mse)


def _nearest(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for every row (squared Euclidean distance)."""
    from compressors.kmeans_kernel import assign, planes  # noqa: PLC0415  (numba on first use)

    return assign(planes(values), np.ones(len(values)), centres)[0]


def _kmeans_plus_plus(
    values: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ seeding on weighted points (Arthur & Vassilvitskii 2007)."""
    centres = np.empty((k, values.shape[1]), dtype=np.float32)
    cumulative = np.cumsum(weights)
    centres[0] = values[min(np.searchsorted(cumulative, rng.random() * cumulative[-1]), len(values) - 1)]
    nearest = ((values - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        cumulative = np.cumsum(nearest * weights)
        if cumulative[-1] <= 0:  # every point already is a centre
            centres[i:] = centres[0]
            break
        j = min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), len(values) - 1)
        centres[i] = values[j]
        np.minimum(nearest, ((values - centres[i]) ** 2).sum(axis=1), out=nearest)
    return centres


def _lloyd(values: np.ndarray, weights: np.ndarray, centres: np.ndarray, iterations: int) -> np.ndarray:
    """Weighted Lloyd iterations; an emptied centre stays where it was."""
    from compressors.kmeans_kernel import assign, planes  # noqa: PLC0415  (numba on first use)

    colour_planes = planes(values)  # once, not per iteration
    for _ in range(iterations):
        _, mass, sums = assign(colour_planes, weights, centres)
        moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-12)[:, None], centres).astype(
            np.float32
        )
        shift = float(np.abs(moved - centres).max())
        centres = moved
        if shift < _TOLERANCE:
            break
    return centres


@dataclass
class _Fit:
    centres: np.ndarray  # float32 (K, C)
    assignment: np.ndarray  # (U,) index into palette
    palette: np.ndarray  # uint8 (K, C)
    squared_error: int


def _finish(hist: _Histogram, centres: np.ndarray) -> _Fit:
    palette = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
    assignment = _nearest(hist.values, palette)
    return _Fit(centres, assignment, palette, hist.squared_error(assignment, palette))


def _quick_fit(hist: _Histogram, k: int, seed: int) -> _Fit:
    """Stages 2-3 (seeding, mini-batch) and the exact final assignment."""
    if hist.size <= k:  # every colour gets its own entry: lossless
        return _Fit(hist.values.copy(), np.arange(hist.size), hist.colors.copy(), 0)
    rng = np.random.default_rng((seed, k))
    centres = _kmeans_plus_plus(*hist.sample(_INIT_SAMPLE, rng), k, rng)
    centres = _lloyd(*hist.sample(_BATCH, rng), centres, _BATCH_ITERATIONS)
    return _finish(hist, centres)


def _full_fit(hist: _Histogram, k: int, seed: int, quick: _Fit | None = None) -> _Fit:
    """Stage 4 on top of the quick fit: Lloyd on the whole histogram."""
    quick = quick or _quick_fit(hist, k, seed)
    if quick.squared_error == 0:
        return quick
    lo, hi = _FULL_ITERATIONS
    iterations = int(np.clip(_FULL_DISTANCE_BUDGET // (hist.size * k), lo, hi))
    centres = _lloyd(hist.values, hist.weights, quick.centres, iterations)
    full = _finish(hist, centres)
    return full if full.squared_error <= quick.squared_error else quick  # rounding can tie


def _fit_to_target(hist: _Histogram, target: Target, k_max: int, seed: int) -> _Fit:
    """The smallest K <= k_max whose fit reaches ``target``.

    The shared search (:func:`compressors.target.smallest_passing`) on quick fits: PSNR
    grows about linearly in log K (~2.5 dB per doubling on photos), so it starts at
    k_max, interpolates in log K and bisects when that did not halve the bracket: 4-6
    quick fits instead of 8. PSNR comes from the fit's exact squared error; SSIM (only
    when asked) from the fit's image.
    """
    k_max = min(k_max, hist.size)
    quick: dict[int, _Fit] = {}

    def margin(k: int) -> float:
        fit = quick[k] = _quick_fit(hist, k, seed)
        value = hist.psnr(fit.squared_error)
        structural = None
        if target.ssim is not None:
            structural = 1.0 if fit.squared_error == 0 else ssim(hist.image, hist.reconstruct(fit))
        return target.margin_from(value, structural)

    slope = _SSIM_DB_PER_DOUBLING if target.psnr is None else _DB_PER_DOUBLING
    k = smallest_passing(margin, 1, k_max, start=k_max, slope=slope, log=True)[0]
    return _full_fit(hist, k, seed, quick.get(k))


def _elbow(hist: _Histogram, seed: int) -> tuple[int, _Fit]:
    """Kneedle over quick fits at ``ELBOW_KS``: the K furthest below the normalised chord."""
    ks = [k for k in ELBOW_KS if k < hist.size] + ([hist.size] if hist.size <= MAX_COLORS else [])
    ks = sorted(set(ks)) or [min(hist.size, MAX_COLORS)]
    fits = {k: _quick_fit(hist, k, seed) for k in ks}
    if len(ks) < 3:
        return ks[-1], fits[ks[-1]]
    x = (np.array(ks, dtype=np.float64) - ks[0]) / (ks[-1] - ks[0])
    err = np.array([fits[k].squared_error for k in ks], dtype=np.float64)
    span = err[0] - err[-1]
    if span <= 0:
        return ks[0], fits[ks[0]]
    y = (err - err[-1]) / span  # 1 at the smallest K, 0 at the largest
    best = ks[int(np.argmax((1.0 - x) - y))]
    return best, fits[best]


def elbow_k(image: np.ndarray, seed: int = 0) -> int:
    """The K that ``colors="elbow"`` picks for ``image``."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _elbow(_Histogram(image), seed)[0]


def quantize(
    image: np.ndarray,
    *,
    colors: int | str | None = None,
    target_psnr: float | None = None,
    seed: int = 0,
    target_ssim: float | None = None,
) -> Quantized:
    """The palette image the ``kmeans`` codec stores (see the module doc for the rules)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, 1|3), got {image.dtype} {image.shape}")
    if isinstance(colors, str):
        if colors.strip().lower() != ELBOW:
            raise ValueError(f"kmeans: colors must be 2..{MAX_COLORS} or {ELBOW!r}, got {colors!r}")
        with threadpool_limits(limits=1, user_api="blas"):
            hist = _Histogram(image)
            k, quick = _elbow(hist, seed)
            wanted = Target(target_psnr, target_ssim)
            fit = (_fit_to_target(hist, wanted, k, seed) if target_psnr is not None or target_ssim is not None
                   else _full_fit(hist, k, seed, quick))
        return _compact(hist, fit)
    if colors is not None and not 2 <= colors <= MAX_COLORS:
        raise ValueError(f"kmeans: colors must be in 2..{MAX_COLORS}, got {colors}")
    if target_psnr is not None and not target_psnr > 0:
        raise ValueError(f"kmeans: target_psnr must be positive, got {target_psnr}")
    if target_ssim is not None and not 0 < target_ssim < 1:
        raise ValueError(f"kmeans: target_ssim must be in (0, 1), got {target_ssim}")
    target = Target(target_psnr, target_ssim)
    with threadpool_limits(limits=1, user_api="blas"):  # small products; see metrics.py
        hist = _Histogram(image)
        if not target and colors is not None:
            fit = _full_fit(hist, colors, seed)
        elif not target and hist.size <= MAX_COLORS:
            fit = _quick_fit(hist, MAX_COLORS, seed)  # every colour kept: lossless
        else:
            fit = _fit_to_target(hist, target or Target(AUTO_TARGET_PSNR), colors or MAX_COLORS, seed)
    return _compact(hist, fit)


def _compact(hist: _Histogram, fit: _Fit) -> Quantized:
    """Drop unused and duplicate entries, order the palette by luminance, index pixels."""
    used = np.unique(fit.palette[np.unique(fit.assignment)], axis=0)
    luma = np.array([0.299, 0.587, 0.114]) if used.shape[1] == 3 else np.ones(1)
    palette = used[np.argsort(used.astype(np.float64) @ luma, kind="stable")]
    # Each unique colour's entry in the final palette, then each pixel's, via a code table.
    palette_codes = _codes(palette)
    order = np.argsort(palette_codes)
    entry = order[np.searchsorted(palette_codes[order], _codes(fit.palette)[fit.assignment])]
    table = np.empty(1 << 24 if hist.shape[2] == 3 else 256, dtype=np.uint8)
    table[hist.unique_codes] = entry
    indices = table[hist.codes].reshape(hist.shape[:2])
    return Quantized(indices, palette, hist.psnr(fit.squared_error))


def _codes(colors: np.ndarray) -> np.ndarray:
    colors = colors.astype(np.uint32)
    if colors.shape[1] == 1:
        return colors[:, 0]
    return colors[:, 0] | (colors[:, 1] << 8) | (colors[:, 2] << 16)  # as the little-endian view


# --------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _pack_rows(indices: np.ndarray, bits: int) -> np.ndarray:
    """Rows of ``bits``-bit samples, most significant first, each row padded to a byte."""
    if bits == 8:
        return indices
    h, w = indices.shape
    per_byte = 8 // bits
    padded = np.zeros((h, -(-w // per_byte) * per_byte), dtype=np.uint8)
    padded[:, :w] = indices
    groups = padded.reshape(h, -1, per_byte)
    packed = np.zeros(groups.shape[:2], dtype=np.uint8)
    for j in range(per_byte):
        packed |= groups[:, :, j] << (8 - bits * (j + 1))
    return packed


def palette_png(indices: np.ndarray, palette: np.ndarray, *, mark_rgb: bool = False) -> bytes:
    """A minimal standard palette PNG: IHDR, PLTE, [tEXt], IDAT (filter 0, zlib), IEND."""
    h, w = indices.shape
    k = len(palette)
    bits = 1 if k <= 2 else 2 if k <= 4 else 4 if k <= 16 else 8
    rows = _pack_rows(indices, bits)
    raw = np.zeros((h, rows.shape[1] + 1), dtype=np.uint8)  # leading 0: filter type None
    raw[:, 1:] = rows
    idat = bytes(imagecodecs.deflate_encode(raw, level=_DEFLATE_LEVEL))  # a zlib stream, as PNG wants
    rgb = palette if palette.shape[1] == 3 else np.repeat(palette, 3, axis=1)
    parts = [
        _PNG_SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 3, 0, 0, 0)),
        _chunk(b"PLTE", np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()),
    ]
    if mark_rgb:
        parts.append(_chunk(b"tEXt", _CHANNELS_KEY.encode("latin-1") + b"\x003"))
    parts += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"".join(parts)


# --------------------------------------------------------------------------- codec


def encode(
    image: np.ndarray,
    *,
    colors: int | str | None = None,
    target_psnr: float | None = None,
    seed: int = 0,
    target_ssim: float | None = None,
) -> Encoded:
    """uint8 (H, W, 1|3) -> palette PNG bytes and the K used (see the module doc for how K is chosen)."""
    q = quantize(image, colors=colors, target_psnr=target_psnr, seed=seed, target_ssim=target_ssim)
    gray_palette = bool(np.all(q.palette == q.palette[:, :1]))
    data = palette_png(q.indices, q.palette, mark_rgb=image.shape[2] == 3 and gray_palette)
    decision = {"colors": int(len(q.palette))}
    target = Target(target_psnr, target_ssim)
    if target and target.margin_from(q.psnr, ssim(image, q.image) if target_ssim is not None else None) < 0:
        decision["target_met"] = False  # best effort: even the largest palette allowed fell short
    return Encoded(data, decision)


def decode(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, C): this codec's artifacts, and any other PNG.

    A palette PNG without transparency decodes to C=1 when its palette is all gray
    (unless marked RGB), else C=3. Other PNGs follow :mod:`compressors.imageio`'s rules.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG artifact (bad signature)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise ValueError(f"not a PNG artifact ({im.format})")
            w, h = im.size
            if w * h > DEFAULT_MAX_PIXELS:
                raise ValueError(
                    f"PNG header claims {w}x{h} pixels, over the limit of {DEFAULT_MAX_PIXELS:,}"
                )
            if im.mode != "P" or "transparency" in im.info:
                return decode_image(data).image  # any other PNG
            im.load()
            indices = np.asarray(im)
            palette = np.frombuffer(bytes(im.getpalette("RGB") or b""), dtype=np.uint8).reshape(-1, 3)
            mark = im.info.get(_CHANNELS_KEY)
    except Image.DecompressionBombError as exc:  # Pillow's own hard limit, before ours is reached
        raise ValueError(f"PNG header claims too many pixels, over the limit: {exc}") from None
    except (OSError, SyntaxError, struct.error, zlib.error) as exc:
        raise ValueError(f"corrupt PNG artifact: {exc}") from None
    if len(palette) == 0 or int(indices.max(initial=0)) >= len(palette):
        raise ValueError("corrupt PNG artifact: pixel index outside the palette")
    if mark != "3" and np.all(palette == palette[:, :1]):
        return np.ascontiguousarray(palette[:, 0][indices][:, :, None])
    return np.ascontiguousarray(palette[indices])


KMEANS = register(
    Codec(
        name="kmeans",
        extension=".png",
        encode_fn=encode,
        decode_fn=decode,
        params={
            "colors": Param(
                None, 2, MAX_COLORS,
                f"palette size 2..256, or {ELBOW!r}: K at the elbow of the error curve (with target_psnr: "
                "the largest allowed)",
                keywords=(ELBOW,),
            ),
            "target_psnr": Param(
                None,
                *PSNR_RANGE,
                "the smallest palette reaching this PSNR in dB (no target nor colors: lossless for "
                f"images of <= 256 colours, else {AUTO_TARGET_PSNR:g} dB with at most 256)",
                kind=float,
            ),
            "target_ssim": Param(
                None, *SSIM_RANGE, "the smallest palette reaching this SSIM (with target_psnr: both)", kind=float
            ),
            "seed": Param(0, 0, 2**32 - 1, "seed of the pixel sampling and k-means++ seeding"),
        },
        description="K-means colour palette (mini-batch then full Lloyd), no dithering, standard indexed PNG",
        signatures=((0, _PNG_SIGNATURE),),
    )
)

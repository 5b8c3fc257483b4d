"""Quality targets: per image, the lowest setting of a codec that still reaches a PSNR and/or SSIM.

One search serves every codec. :func:`smallest_passing` finds the smallest integer setting
(a JPEG quality, a palette size K, an autoencoder rate level) whose *margin* is >= 0, for a
margin that grows with the setting, in few evaluations: it starts from a prior guess,
extrapolates with a prior slope until the answer is bracketed, then narrows the bracket
by interpolation (regula falsi) with a bisection step whenever a step did not halve it
(the safeguard kmeans's palette search has always used).

The margin is measured in dB so that PSNR and SSIM share one scale: PSNR minus its
target, and SSIM mapped to ``-10 log10(1 - SSIM)`` minus the target mapped the same way
(an SSIM of 0.95 is 13.0 "dB", 0.99 is 20 "dB"; quality settings move both about
linearly). With both targets the margin is the smaller of the two: both must be met.

Codecs take part in two ways:

- a codec that names a ``target_search`` parameter in the registry (``quality`` for
  jpeg, webp, avif, jpeg2000 and the autoencoder) gets ``target_psnr`` and ``target_ssim``
  automatically; each search step is a real encode + decode + metric
  (:func:`encode_to_target`), and the chosen setting is the image's ``decision``;
- a codec with a cheaper inner loop declares the two parameters itself and calls
  :func:`smallest_passing` with its own measure (kmeans measures quick palette fits
  without writing a PNG).

When even the best setting misses the target, that setting is used (best effort) and the
decision says ``"target_met": false``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from compressors.metrics import psnr, ssim

__all__ = [
    "TARGET_PARAMS",
    "Target",
    "encode_to_target",
    "smallest_passing",
    "ssim_db",
]

# Bounds of the two target parameters (the registry turns them into Params).
PSNR_RANGE = (10.0, 80.0)
SSIM_RANGE = (0.1, 0.9999)
TARGET_PARAMS = ("target_psnr", "target_ssim")


def ssim_db(value: float) -> float:
    """SSIM on a dB-like scale, ``-10 log10(1 - SSIM)``: +inf for identical images."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


@dataclass(frozen=True)
class Target:
    """What an image must reach: a PSNR (dB), an SSIM, or both (``None``: no such target)."""

    psnr: float | None = None
    ssim: float | None = None

    def __bool__(self) -> bool:
        return self.psnr is not None or self.ssim is not None

    @classmethod
    def from_params(cls, params: Mapping) -> "Target":
        return cls(params.get("target_psnr"), params.get("target_ssim"))

    def margin(self, reference: np.ndarray, decoded: np.ndarray) -> float:
        """How far ``decoded`` is above the target, in dB (>= 0: met). Only the metrics asked are computed."""
        if decoded.shape != reference.shape and reference.shape[2] == 1:
            reference = np.repeat(reference, decoded.shape[2], axis=2)
        margins = []
        if self.psnr is not None:
            margins.append(psnr(reference, decoded) - self.psnr)
        if self.ssim is not None:
            margins.append(ssim_db(ssim(reference, decoded)) - ssim_db(self.ssim))
        return min(margins)

    def margin_from(self, psnr_db: float | None, ssim_value: float | None) -> float:
        """The margin from metrics already measured (``None`` for one not needed)."""
        margins = []
        if self.psnr is not None:
            margins.append(psnr_db - self.psnr)
        if self.ssim is not None:
            margins.append(ssim_db(ssim_value) - ssim_db(self.ssim))
        return min(margins)


@dataclass(frozen=True)
class Prior:
    """Where a search starts: the typical margin-free curve of a codec, metric (dB) per setting.

    ``points`` are (setting, median dB) pairs, increasing in the setting, measured on
    training images (never the test set). The first guess for a target T is where the
    curve crosses T; the slope there is the first step's slope.
    """

    points: Sequence[tuple[float, float]]

    def guess(self, target_db: float) -> tuple[float, float]:
        xs = [float(p[0]) for p in self.points]
        ys = [float(p[1]) for p in self.points]
        if target_db <= ys[0]:
            i = 0
        elif target_db >= ys[-1]:
            i = len(xs) - 2
        else:
            i = max(j for j in range(len(ys) - 1) if ys[j] <= target_db)
        slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
        if slope <= 0:
            return xs[i + 1], 0.0
        return xs[i] + (target_db - ys[i]) / slope, slope


def smallest_passing(
    measure: Callable[[int], float],
    lo: int,
    hi: int,
    *,
    start: float,
    slope: float | None = None,
    log: bool = False,
    tolerance: float = 0.0,
) -> tuple[int, float, int]:
    """The smallest integer ``q`` in ``[lo, hi]`` with ``measure(q) >= 0``.

    ``measure`` should grow with ``q`` (it need not strictly: the answer is then a passing
    ``q`` whose next smaller setting tried failed). ``start`` is the first setting tried,
    ``slope`` the expected margin gained per unit of ``q`` (per doubling of ``q`` when
    ``log``), used until two settings bracket the answer; ``log`` also makes the
    interpolation work in ``log q``. The search stops early once a passing setting is
    within ``tolerance`` of the target (0: only when the bracket is one step wide).

    Returns ``(q, measure(q), evaluations)``; when even ``hi`` fails, ``hi`` (best effort).
    """
    if lo > hi:
        raise ValueError(f"empty search range [{lo}, {hi}]")
    seen: dict[int, float] = {}

    def at(q: int) -> float:
        if q not in seen:
            seen[q] = float(measure(q))
        return seen[q]

    def x(q: float) -> float:
        return math.log2(q) if log else float(q)

    def from_x(v: float) -> float:
        return 2.0**v if log else v

    fail: int | None = None  # the largest setting known to fail
    ok: int | None = None  # the smallest setting known to pass
    q = int(min(max(round(start), lo), hi))
    last_width: int | None = None  # bracket width when the previous interpolation step was chosen
    bisected = False
    while True:
        m = at(q)
        if m >= 0:
            ok = q if ok is None or q < ok else ok
        else:
            fail = q if fail is None or q > fail else fail
        if ok is not None and (ok == lo or (fail is not None and ok - fail <= 1) or seen[ok] <= tolerance):
            return ok, seen[ok], len(seen)
        if ok is None and fail == hi:
            return hi, seen[hi], len(seen)
        if ok is None or fail is None:
            q = _extrapolate(seen, ok, fail, lo, hi, slope, x, from_x)
            continue
        m_fail, m_ok = seen[fail], seen[ok]
        width = ok - fail
        bisect = (last_width is not None and width * 2 > last_width and not bisected) \
            or not math.isfinite(m_ok) or m_ok <= m_fail
        if bisect:
            guess = (fail + ok) / 2
        else:
            guess = from_x(x(fail) + (x(ok) - x(fail)) * (-m_fail) / (m_ok - m_fail))
        q = int(min(max(round(guess), fail + 1), ok - 1))
        bisected, last_width = bisect, width


def _extrapolate(seen, ok, fail, lo, hi, slope, x, from_x) -> int:
    """Only one side seen: step toward the target from the nearest setting, with the slope of
    the two nearest settings on that side when they agree on a positive one, else the prior's."""
    side = [s for s in sorted(seen) if (seen[s] >= 0) == (ok is not None)]
    near = side[:2] if ok is not None else side[-2:]
    rate = slope
    if len(near) == 2 and seen[near[1]] > seen[near[0]] and all(math.isfinite(seen[s]) for s in near):
        rate = (seen[near[1]] - seen[near[0]]) / (x(near[1]) - x(near[0]))
    anchor = ok if ok is not None else fail
    if rate and rate > 0 and math.isfinite(seen[anchor]):
        guess = from_x(x(anchor) - seen[anchor] / rate)
    else:  # no usable slope: halve the distance to the end of the range
        guess = (anchor + (lo if ok is not None else hi)) / 2
    if ok is not None:
        return int(min(max(math.floor(guess), lo), ok - 1))
    return int(min(max(math.ceil(guess), fail + 1), hi))


def encode_to_target(codec, image: np.ndarray, target: Target, params: Mapping) -> tuple:
    """Search ``codec.target_search`` for the lowest setting that reaches ``target`` on ``image``.

    Every step is a real encode, decode and measurement. ``params`` are the codec's other
    (canonical) parameters; the searched one, when set, bounds the search from above.
    Returns ``(Encoded, margin dB, encodes)``.
    """
    from compressors.registry import Encoded  # noqa: PLC0415  (the registry imports this module)

    name = codec.target_search
    spec = codec.params[name]
    lo, hi = int(spec.lo), int(params.get(name) or spec.hi)
    artifacts: dict[int, object] = {}

    def measure(q: int) -> float:
        out = codec.encode_fn(image, **{**params, name: q})
        artifacts[q] = out if isinstance(out, Encoded) else Encoded(bytes(out))
        if codec.original_of(artifacts[q]) is not None:  # gives back the source file: exact
            return math.inf
        return target.margin(image, codec.decode(artifacts[q].data))

    start, slope = _first_guess(codec, target, lo, hi)
    q, margin, encodes = smallest_passing(measure, lo, hi, start=start, slope=slope,
                                          tolerance=codec.target_tolerance)
    chosen = artifacts[q]
    decision = {**dict(chosen.decision), name: q}
    if margin < 0:
        decision["target_met"] = False
    return Encoded(chosen.data, decision, route=chosen.route, extension=chosen.extension), margin, encodes


def _first_guess(codec, target: Target, lo: int, hi: int) -> tuple[float, float | None]:
    """The prior's guess for the harder of the targets; the middle of the range without a prior."""
    guesses = []
    for metric, value in (("psnr", target.psnr), ("ssim", target.ssim)):
        prior = codec.target_priors.get(metric)
        if value is None or prior is None:
            continue
        guesses.append(Prior(prior).guess(value if metric == "psnr" else ssim_db(value)))
    if not guesses:
        return (lo + hi) / 2, None
    start, slope = max(guesses)
    return start, (slope or None)

"""One image through one codec and back, measured: what every report row and the web page show.

``measure`` is the single code path behind a report row (:func:`tasks.shard.compress_one`)
and the browser page (:mod:`imgpress.web`): encode, decode, PSNR and SSIM on exactly
``decode(encode(x))``, wall times of each step, and sizes counted from the real bytes.

An artifact that gives back the source *file* byte for byte (a JPEG transcoded to JPEG
XL, or a file the codec kept as it is: :meth:`Codec.original_of`) is exact by its bytes:
the bytes are compared with the source, and its pixels are the source's by definition, so
PSNR is inf and SSIM 1 without decoding pixels; its decode time is the restore's. Bytes
that differ from the source raise (a row's error, never a silent wrong file).

With a ``postfilter`` the decoded image is filtered first and the metrics describe the
filtered image (what a viewer of the filtered output sees); with a ``classifier`` the
source and the (filtered) decoded image are both classified. Pure compute: no I/O
(models named by URL are loaded by the tasks layer first).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from compressors.metrics import psnr, ssim
from compressors.registry import Codec, Encoded

__all__ = ["Measured", "match_channels", "measure"]


@dataclass(frozen=True)
class Measured:
    """What one round trip gave. ``reference`` is the input with its channels matched to ``decoded``."""

    encoded: Encoded
    decoded: np.ndarray
    reference: np.ndarray
    psnr: float
    ssim: float
    encode_ms: float
    decode_ms: float
    metrics_ms: float
    file_exact: bool = False  # the artifact gives back the source file byte for byte
    postfilter: str | None = None  # name@id of the filter the metrics describe
    postfilter_ms: float | None = None
    classification: Mapping[str, Any] | None = None  # the classifier columns, when one ran

    @property
    def artifact_bytes(self) -> int:
        return len(self.encoded.data)

    def extension(self, codec: Codec) -> str:
        """The artifact's suffix: the codec's, or the one this image's artifact says ("" = kept as is)."""
        return codec.extension if self.encoded.extension is None else self.encoded.extension

    def exact(self, input_exact: bool = True) -> bool:
        """The artifact gives back the source: its file, or every pixel of an input the rules kept whole."""
        return self.file_exact or (self.psnr == math.inf and input_exact)

    def fields(self, source_bytes: int, *, input_exact: bool = True) -> dict[str, Any]:
        """The report row's measured columns (source file of ``source_bytes`` bytes).

        ``input_exact``: the decoded input holds every sample of the source
        (:attr:`compressors.imageio.Decoded.pixel_exact`); a pixel-exact artifact of it is exact.
        """
        h, w, c = self.reference.shape[0], self.reference.shape[1], self.decoded.shape[2]
        n = self.artifact_bytes
        out = {
            "psnr": self.psnr, "ssim": self.ssim,
            "encode_ms": self.encode_ms, "decode_ms": self.decode_ms, "metrics_ms": self.metrics_ms,
            "artifact_bytes": n, "bpp": n * 8 / (w * h),
            "compression_ratio": source_bytes / n, "raw_compression_ratio": w * h * c / n,
            "exact": self.exact(input_exact), "route": self.encoded.route, "bytes_saved": source_bytes - n,
        }
        if self.postfilter:
            out.update(postfilter=self.postfilter, postfilter_ms=self.postfilter_ms)
        if self.classification:
            out.update(self.classification)
        if self.encoded.decision:
            out["decision"] = json.dumps(dict(self.encoded.decision), sort_keys=True, separators=(",", ":"))
        return out


def measure(
    codec: Codec, image: np.ndarray, params: Mapping[str, Any], *, source: bytes | None = None,
    postfilter: str | None = None, classifier: str | None = None,
) -> Measured:
    """Encode ``image`` with ``codec`` and ``params``, decode the bytes, measure the result.

    ``source`` is the file the image came from (a ``takes_source`` codec may use it).
    ``postfilter``: a post-filter model (id or shipped name) applied to the decoded image
    before it is measured; ``classifier``: a classifier model (id or shipped name) run on
    ``image`` and on the measured decoded image.
    Raises whatever the codec raises; callers decide whether that is a row or a message.
    """
    t0 = time.perf_counter()
    encoded = codec.compress(image, source=source, **params)
    t1 = time.perf_counter()
    original = codec.original_of(encoded)
    if original is not None:  # the source file itself comes back: compare bytes, not pixels
        t2 = time.perf_counter()
        if original != source:
            raise ValueError(f"{codec.name}: the file this artifact gives back differs from the source")
        return Measured(
            encoded=encoded, decoded=image, reference=image, psnr=math.inf, ssim=1.0, encode_ms=(t1 - t0) * 1e3,
            decode_ms=(t2 - t1) * 1e3, metrics_ms=(time.perf_counter() - t2) * 1e3, file_exact=True,
        )
    decoded = codec.decode(encoded.data)
    t2 = time.perf_counter()
    filter_name = None
    if postfilter:
        from compressors import postfilter as pf  # noqa: PLC0415  (torch: only when asked)

        decoded, filter_name = pf.apply(decoded, postfilter), pf.describe(postfilter)
    t_f = time.perf_counter()
    reference = match_channels(image, decoded)
    quality = psnr(reference, decoded), ssim(reference, decoded)
    t3 = time.perf_counter()
    return Measured(
        encoded=encoded, decoded=decoded, reference=reference, psnr=quality[0], ssim=quality[1],
        encode_ms=(t1 - t0) * 1e3, decode_ms=(t2 - t1) * 1e3, metrics_ms=(t3 - t_f) * 1e3,
        postfilter=filter_name, postfilter_ms=(t_f - t2) * 1e3 if postfilter else None,
        classification=classify_pair(classifier, image, decoded) if classifier else None,
    )


def classify_pair(classifier: str, source: np.ndarray, decoded: np.ndarray) -> dict[str, Any]:
    """The report's classifier columns for one image: labels, agreement, top-1 confidences.

    An image the classifier does not take (another shape) gets only the ``classifier``
    column: its labels stay null and it does not count in the agreement rate.
    """
    from compressors import classifiers  # noqa: PLC0415  (torch: only when asked)

    out: dict[str, Any] = {"classifier": classifiers.describe(classifier)}
    if classifiers.takes(classifier, source) and classifiers.takes(classifier, decoded):
        (a, pa), (b, pb) = classifiers.classify(classifier, source), classifiers.classify(classifier, decoded)
        out.update(label_source=a, label_decoded=b, labels_agree=a == b, confidence_source=pa, confidence_decoded=pb)
    return out


def match_channels(reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """A gray reference against an RGB decode is compared as three equal channels."""
    if reference.shape == decoded.shape:
        return reference
    if reference.shape[:2] == decoded.shape[:2] and reference.shape[2] == 1:
        return np.repeat(reference, decoded.shape[2], axis=2)
    raise ValueError(f"codec returned shape {decoded.shape} for an image of shape {reference.shape}")

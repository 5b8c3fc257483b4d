"""The ``auto`` codec: per image, the smallest artifact among candidate codecs that meets a target.

Each candidate runs its own quality-target search (:mod:`compressors.target`: the lowest
JPEG/WebP/AVIF quality, the smallest palette, the lowest autoencoder level reaching the
target); the smallest artifact that meets the target wins. When no candidate meets it
(an autoencoder asked for 45 dB, say), the one that came closest wins, and the decision
says ``"target_met": false``.

The artifact is the chosen codec's own standard file, unchanged, with that codec's
extension (``photo.png.webp``, ``photo.png.jpg``, ``photo.png.png`` ...): any viewer opens
it, ``imgpress decompress`` picks the decoder by the extension as for every codec, and
:func:`decode` picks it by the file's signature. No wrapper container: it would cost
bytes and hide standard files behind a format only this tool reads. The report's
``decision`` column names the codec and its setting, e.g. ``{"codec":"webp","quality":62}``.
"""

from __future__ import annotations

import numpy as np

from compressors.registry import CODECS, Codec, Encoded, Param, get_codec, register, target_params
from compressors.target import Target

__all__ = ["AUTO", "DEFAULT_CANDIDATES", "DEFAULT_TARGET_PSNR", "decode", "encode"]

DEFAULT_CANDIDATES = "avif,jpeg,kmeans,webp"  # normalised (sorted), as candidate_list gives it
DEFAULT_TARGET_PSNR = 40.0  # without a target: kmeans's default, where artefacts stop being visible on photos


def candidate_list(value: str) -> str:
    """Normalise ``"webp, jpeg"`` to ``"jpeg,webp"``: known codecs that take quality targets, no repeats."""
    names = sorted({n.strip() for n in str(value).split(",") if n.strip()})
    if not names:
        raise ValueError("auto: candidates is empty (give codec names, e.g. jpeg,webp,avif)")
    for name in names:
        if not _can_be_candidate(get_codec(name)):
            raise ValueError(f"auto: {name!r} cannot be a candidate (it takes no quality target)")
    return ",".join(names)


def _can_be_candidate(codec: Codec) -> bool:
    return codec.name != "auto" and "target_psnr" in codec.params and "target_ssim" in codec.params


def encode(image: np.ndarray, *, candidates: str, target_psnr: float | None, target_ssim: float | None) -> Encoded:
    """The smallest candidate artifact that reaches the target (default: target_psnr=40)."""
    target = Target(target_psnr, target_ssim) or Target(DEFAULT_TARGET_PSNR)
    best = None
    for name in candidate_list(candidates).split(","):
        codec = get_codec(name)
        out = codec.compress(image, target_psnr=target.psnr, target_ssim=target.ssim)
        met = out.decision.get("target_met", True)
        # Met: fewer bytes win. Missed by all: the candidate closest to the target wins.
        rank = (0, len(out.data)) if met else (1, -target.margin(image, codec.decode(out.data)))
        if best is None or rank < best[0]:
            best = (rank, codec, out)
    _, codec, out = best
    extension = codec.extension if out.extension is None else out.extension
    return Encoded(out.data, {"codec": codec.name, **dict(out.decision)}, route=out.route, extension=extension)


def decode(data: bytes) -> np.ndarray:
    """Any candidate's artifact, recognised by its signature. Only codecs that can be candidates
    are asked: a kmeans palette PNG also starts like a ``png`` artifact, and kmeans's decoder
    gives back its gray images as one channel (and streams its palette)."""
    for codec in CODECS.values():
        if _can_be_candidate(codec) and codec.recognizes(data):
            return codec.decode(data)
    raise ValueError("not an artifact of any codec auto chooses from (unknown signature)")


AUTO = register(
    Codec(
        name="auto",
        extension="",
        encode_fn=encode,
        decode_fn=decode,
        params={
            "candidates": Param(DEFAULT_CANDIDATES, kind=str, check=candidate_list,
                                help="comma-separated codecs to choose from per image"),
            **target_params(),
        },
        description="per image, the smallest artifact among the candidate codecs that meets the quality "
        f"target (default {DEFAULT_TARGET_PSNR:g} dB)",
    )
)

"""The one registry of codecs.

Every codec is pure: ``encode(image, **params) -> bytes`` and ``decode(data) -> image``
where ``image`` is a ``uint8`` array of shape ``(H, W, C)`` with ``C`` in ``{1, 3}``
(see :mod:`compressors.imageio` for how any input file becomes such an array).
No file I/O, no Prefect, no Dask in here. The CLI, the flows, the UI form and the tests
all read :data:`CODECS`; there is no second list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from compressors.target import PSNR_RANGE, SSIM_RANGE, TARGET_PARAMS, Target, encode_to_target


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a codec, with its default and inclusive bounds."""

    default: Any
    lo: float | None = None
    hi: float | None = None
    help: str = ""
    kind: type = int
    choices: tuple = ()  # when not empty: the only values allowed
    # Further validation after coercion (e.g. a list of codec names): returns the value, or raises ValueError.
    check: Callable[[Any], Any] | None = None
    # Words allowed besides the numeric range (e.g. kmeans colors="elbow"); the value stays the word.
    keywords: tuple[str, ...] = ()

    def coerce(self, name: str, value: Any, *, owner: str) -> Any:
        """``value`` as this parameter's type, checked against its bounds and choices."""
        if isinstance(value, str) and value.strip().lower() in self.keywords:
            return value.strip().lower()
        if self.kind is bool and isinstance(value, str):
            word = value.strip().lower()
            if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")
            value = word in ("1", "true", "yes", "on")
        elif self.kind is bool and not (isinstance(value, (bool, int)) and value in (0, 1)):
            raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")
        try:
            value = self.kind(value)
        except (TypeError, ValueError):
            words = "".join(f" or {w!r}" for w in self.keywords)
            raise ValueError(f"{owner}: {name} must be {self.kind.__name__}{words}, got {value!r}") from None
        if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:
            raise ValueError(f"{owner}: {name}={value} is outside [{self.lo}, {self.hi}]")
        if self.choices and value not in self.choices:
            raise ValueError(f"{owner}: {name}={value!r} is not one of {', '.join(map(str, self.choices))}")
        return value if self.check is None else self.check(value)


@dataclass(frozen=True)
class Encoded:
    """What encoding one image gave: the artifact bytes and what the codec chose for it.

    ``decision`` holds per-image choices that the parameters left open (the K a target
    PSNR led to, the quality a target SSIM led to, the codec ``auto`` picked, the path an
    exact recompression took); the report stores it per image as canonical JSON.
    """

    data: bytes
    decision: Mapping[str, Any] = field(default_factory=dict)
    # Which way this image went, for a codec with several (``jxl --lossless``: "transcode",
    # "lossless" or "stored"); the report's ``route`` column. None: the codec has one way.
    route: str | None = None
    # The artifact's suffix when it is not the codec's usual format; "" means the artifact
    # *is* the source file, kept as it is under its own name (``data`` == the source bytes).
    # ``auto`` stores the chosen codec's standard file (``.webp``, ``.jpg`` ...) under that suffix.
    extension: str | None = None


@dataclass(frozen=True)
class Codec:
    """A named, pure codec.

    ``extension`` is the artifact's file suffix (standard formats keep the standard
    suffix so any viewer opens them; empty for ``auto``, whose artifacts take the chosen
    codec's). ``signatures`` say how its artifacts begin (``auto`` decodes by them). ``params`` lists every parameter ``encode`` takes.
    ``encode_fn`` returns ``bytes`` or an :class:`Encoded` (when it decides something per
    image). A codec with ``takes_source=True`` also receives the source file's bytes as
    ``source=`` (``None`` when there is no file, e.g. an array from a test): the contract
    stays pixels in, bytes out, and such a codec may use the original bytes too.

    ``restore_fn(data)``, when a codec has one, gives back the *original file's bytes* from
    an artifact that holds them exactly (a JPEG losslessly transcoded to JPEG XL), or
    ``None`` for an artifact that holds pixels only; like ``decode_fn`` it validates the
    untrusted artifact and raises ``ValueError`` (a checksum mismatch included).

    Quality targets (:mod:`compressors.target`): a codec that names an integer parameter
    in ``target_search`` (e.g. ``"quality"``) gets the ``target_psnr`` and ``target_ssim``
    parameters too; with either set, :meth:`compress` searches that parameter per image
    for the lowest value reaching the target (the parameter, when given, bounds the
    search from above). ``target_priors`` (metric -> (setting, median dB) points measured
    on training images) say where the search starts; ``target_tolerance`` (dB) lets it
    stop once a passing setting is that close to the target.
    """

    name: str
    extension: str
    encode_fn: Callable[..., bytes | Encoded]
    decode_fn: Callable[[bytes], np.ndarray]
    params: Mapping[str, Param] = field(default_factory=dict)
    description: str = ""
    takes_source: bool = False
    restore_fn: Callable[[bytes], bytes | None] | None = None
    signatures: tuple[tuple[int, bytes], ...] = ()  # (offset, bytes): how its artifacts begin
    target_search: str | None = None
    target_priors: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    target_tolerance: float = 0.0
    shape: tuple[int, int, int] | None = None  # the only (H, W, C) it codes (digits: 28x28 gray); None: any

    def __post_init__(self) -> None:
        if self.target_search is not None:
            if self.target_search not in self.params:
                raise ValueError(f"{self.name}: target_search names no parameter ({self.target_search!r})")
            object.__setattr__(self, "params", {**self.params, **target_params()})

    def canonical_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Fill defaults, coerce types, check bounds; ``None`` values count as unset.

        Raises ``ValueError`` naming the parameter on anything this codec does not take
        or that lies outside its bounds. The result is what gets recorded in reports and
        hashed into the run id, so two spellings of one configuration give one run.
        """
        given = {k: v for k, v in (params or {}).items() if v is not None}
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            takes = ", ".join(sorted(self.params)) or "no parameters"
            raise ValueError(f"codec {self.name!r} does not take {', '.join(unknown)} (it takes {takes})")
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            value = given.get(name, spec.default)
            out[name] = None if value is None else spec.coerce(name, value, owner=self.name)
        searched = self.target_search
        if searched:
            if any(out.get(t) is not None for t in TARGET_PARAMS) and searched not in given:
                out[searched] = None  # a target chooses it per image, over the whole range
            for t in TARGET_PARAMS:  # unset targets stay out: the run ids of untargeted runs do not change
                if out.get(t) is None:
                    out.pop(t, None)
        return out

    def compress(self, image: np.ndarray, *, source: bytes | None = None, **params: Any) -> Encoded:
        """Encode ``image`` (and, for a ``takes_source`` codec, its file's ``source`` bytes)."""
        check_image(image)
        kwargs = self.canonical_params(params)
        if self.takes_source:
            kwargs["source"] = source
        if self.target_search:
            target = Target(kwargs.pop("target_psnr", None), kwargs.pop("target_ssim", None))
            if target:
                return encode_to_target(self, image, target, kwargs)[0]
        out = self.encode_fn(image, **kwargs)
        return out if isinstance(out, Encoded) else Encoded(bytes(out))

    def encode(self, image: np.ndarray, **params: Any) -> bytes:
        return self.compress(image, **params).data

    def recognizes(self, data: bytes) -> bool:
        """Whether ``data`` starts like this codec's artifacts (its signature, not a full check)."""
        return any(data[o : o + len(sig)] == sig for o, sig in self.signatures)

    def decode(self, data: bytes) -> np.ndarray:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"decode takes bytes, got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"{self.name}: empty artifact")
        image = self.decode_fn(bytes(data))
        check_image(image)
        return image

    def original_of(self, encoded: Encoded) -> bytes | None:
        """The file ``encoded`` gives back byte for byte (kept as it is, or restored), else ``None``."""
        if encoded.extension == "":
            return encoded.data
        return self.restore(encoded.data)

    def restore(self, data: bytes) -> bytes | None:
        """The original file's bytes when this artifact holds them exactly, else ``None``."""
        if self.restore_fn is None:
            return None
        if len(data) == 0:
            raise ValueError(f"{self.name}: empty artifact")
        return self.restore_fn(bytes(data))


def target_params() -> dict[str, Param]:
    """The two target parameters every codec with a quality search takes (one definition)."""
    return {
        "target_psnr": Param(None, *PSNR_RANGE, "per image, the lowest setting reaching this PSNR (dB)", kind=float),
        "target_ssim": Param(None, *SSIM_RANGE, "per image, the lowest setting reaching this SSIM", kind=float),
    }


CODECS: dict[str, Codec] = {}


NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def register(codec: Codec) -> Codec:
    # Run ids start with the name; tasks.layout relies on them starting with a lowercase letter.
    if not NAME.match(codec.name):
        raise ValueError(f"codec name {codec.name!r} must match {NAME.pattern}")
    if codec.name in CODECS:
        raise ValueError(f"codec {codec.name!r} registered twice")
    CODECS[codec.name] = codec
    return codec


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}") from None


def check_image(image: np.ndarray) -> None:
    """The codec boundary: uint8, (H, W, C), C in {1, 3}, non-empty."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"image must be a uint8 numpy array, got {getattr(image, 'dtype', type(image))}")
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape (H, W, 1|3), got {image.shape}")

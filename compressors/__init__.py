"""Pure codecs behind one registry (:mod:`compressors.registry`).

Importing this package registers every codec.
"""

from compressors import classical  # noqa: F401  (registers jpeg, webp, avif, jpeg2000)
from compressors.registry import CODECS, Codec, Param, get_codec, register

__all__ = ["CODECS", "Codec", "Param", "get_codec", "register"]

"""Pure codecs behind one registry (:mod:`compressors.registry`).

Importing this package registers every codec.
"""

from compressors import autoencoder, classical, jxl, kmeans, lossless, pca  # noqa: F401  (importing registers the codecs)
from compressors import auto  # noqa: F401,E402  (after the codecs it chooses from)
from compressors.registry import CODECS, Codec, Encoded, Param, get_codec, register

__all__ = ["CODECS", "Codec", "Encoded", "Param", "get_codec", "register"]

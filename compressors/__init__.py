"""Pure codecs behind one registry (:mod:`compressors.registry`).

Importing this package registers every codec.
"""

# importing registers the codecs and the model kinds
from compressors import autoencoder, classical, classifiers, digits, jxl, kmeans, lossless, pca, postfilter  # noqa: F401
from compressors import auto  # noqa: F401,E402  (after the codecs it chooses from)
from compressors.registry import CODECS, Codec, Encoded, Param, get_codec, register

__all__ = ["CODECS", "Codec", "Encoded", "Param", "get_codec", "register"]

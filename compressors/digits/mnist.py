"""MNIST's IDX files (LeCun et al.) as arrays: pure parsing of bytes, gzip or not.

The project has the 10,000 test digits only (``../shared/data/mnist``): the learned digit
models train on the first 8,000 (:data:`TRAIN_COUNT`) and are measured on the last 2,000.
"""

from __future__ import annotations

import gzip
import struct
from typing import Mapping

import numpy as np

TRAIN_COUNT = 8000
MAX_ITEMS = 1_000_000


def parse_idx(data: bytes) -> np.ndarray:
    """An IDX file (``idx3-ubyte`` images or ``idx1-ubyte`` labels, optionally gzipped) as uint8."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    dims = data[3]
    if not 1 <= dims <= 3 or len(data) < 4 + 4 * dims:
        raise ValueError(f"IDX file with {dims} dimensions is not MNIST")
    shape = struct.unpack_from(f">{dims}I", data, 4)
    count = int(np.prod(shape, dtype=np.int64))
    if shape[0] > MAX_ITEMS or len(data) != 4 + 4 * dims + count:
        raise ValueError(f"IDX file claims shape {shape} but holds {len(data) - 4 - 4 * dims} bytes")
    return np.frombuffer(data, np.uint8, count, 4 + 4 * dims).reshape(shape)


def digits_and_labels(files: Mapping[str, bytes]) -> tuple[np.ndarray, np.ndarray | None]:
    """From a folder's files (relative path -> bytes): ``(images (N, 28, 28) uint8, labels (N,) or None)``.

    Takes the one ``*images-idx3-ubyte*`` file; labels from the ``*labels-idx1-ubyte*``
    file of the same set (``t10k`` or ``train``) when it is there.
    """
    images = [k for k in files if "images-idx3-ubyte" in k]
    if len(images) != 1:
        raise ValueError(f"need exactly one *images-idx3-ubyte* file, found {sorted(images) or 'none'}")
    x = parse_idx(files[images[0]])
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{images[0]} holds images of shape {x.shape[1:]}, not 28x28")
    prefix = images[0].split("images-idx3-ubyte")[0]
    label_files = [k for k in files if k.startswith(prefix) and "labels-idx1-ubyte" in k]
    y = parse_idx(files[label_files[0]]) if label_files else None
    if y is not None and y.shape != (len(x),):
        raise ValueError(f"{label_files[0]} has {y.shape} labels for {len(x)} images")
    return x, y


def read_folder(folder: str) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`digits_and_labels` of a local folder (benchmarks and the module commands)."""
    from pathlib import Path  # noqa: PLC0415

    root = Path(folder)
    return digits_and_labels({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})


def training_digits(data, train_count: int = TRAIN_COUNT, *, need_labels: bool = False):
    """The training digits a trainer gets: files (path -> bytes) or an (N, 28, 28[, 1]) array.

    Returns ``(images (n, 28, 28) uint8, labels or None)`` with the first ``train_count`` only.
    """
    if isinstance(data, Mapping):
        x, y = digits_and_labels(data)
    elif isinstance(data, tuple):
        x, y = data
    else:
        x, y = np.asarray(data), None
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise ValueError(f"digit training data must be uint8 (N, 28, 28), got {x.dtype} {x.shape}")
    if need_labels and y is None:
        raise ValueError("training a classifier needs labels (a *labels-idx1-ubyte* file beside the images)")
    n = min(int(train_count), len(x))
    return x[:n], (None if y is None else np.asarray(y)[:n])

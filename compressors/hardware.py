"""What machine this is, and the fastest training precision on it.

The project's machines differ: some Intel CPUs have AMX-BF16 / AVX512-BF16 units, where
bf16 autocast makes the autoencoder's training step ~2.4x faster than float32; AMD Zen 3
CPUs have AVX2 only, where the same bf16 autocast is ~24x *slower* (measured, see
``../shared/TRAINING.md``). So precision is chosen at run time, never fixed, and every
model's metadata and every benchmark table names the CPU and the path taken.

Pure: reads ``/proc/cpuinfo`` (Linux) and asks torch; imports torch lazily.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import re
import threading
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return frozenset(m.group(1).split()) if m else frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_bf16_units() -> bool:
    """True when the CPU has bf16 matrix/vector units (AMX-BF16 or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_description() -> str:
    """``"<model name> (<isa>, N cores)"``, e.g. ``Intel(R) Xeon(R) Processor (AMX-BF16, 2 cores)``."""
    import os

    flags = cpu_flags()
    isa = ("AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags
           else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine())
    return f"{cpu_model()} ({isa}, {os.cpu_count()} cores)"


def training_dtype(device: str, precision: str = "auto"):
    """The autocast dtype for training transforms on ``device``, or ``None`` for float32.

    ``precision``: ``"auto"`` (bf16 on CUDA and on CPUs with bf16 units, else float32),
    ``"bf16"`` or ``"fp32"`` to force one.
    """
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if has_bf16_units() else None


def device_description(device: str) -> str:
    """A line for metadata and tables: the GPU's name, or the CPU's with torch's thread count."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({cpu_description()}, {torch.get_num_threads()} threads)"


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread inside the block (for tiny networks: 28x28 digits).

    Splitting a network this small over threads costs more than it computes; on a busy
    machine the threads wait for each other (measured here: a 28x28 digit's encode+decode
    ~11 ms on one thread, ~700 ms on two while the other core was taken). The previous
    setting comes back afterwards; concurrent callers take turns.
    """
    import torch  # noqa: PLC0415

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        if before != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if before != 1:
                torch.set_num_threads(before)

"""How numbers and parameters are written for people: one spelling for the CLI and the HTML report."""

from __future__ import annotations

import json
import math


def number(v) -> str:
    """``-`` for missing or NaN, ``inf`` for lossless PSNR, 4 decimals below 10, else 2."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def signed(v) -> str:
    """A difference: always with its sign."""
    return "-" if v is None else f"{v:+.4f}" if abs(v) < 10 else f"{v:+.2f}"


def params_text(params_json) -> str:
    """``{"colors": 64, "seed": 0}`` -> ``colors=64 seed=0`` (unset values left out)."""
    try:
        params = json.loads(params_json or "{}")
    except (TypeError, ValueError):
        return str(params_json)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def percent(v) -> str:
    """A fraction as a percentage with one decimal (``0.1672`` -> ``16.7%``); ``-`` when missing."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"

"""Training of the post-filter for one codec over a quality range: a plain function plus a CLI.

Each step takes random patches of the training images (offsets on the 16-px JPEG MCU
grid, random flips and quarter turns), codes each one with the registered codec at a
random quality of the range (exactly the pipeline's encoder and decoder), and fits the
filter's output to the original patch in mean squared error (what PSNR measures).

Needs only torch, numpy, Pillow and safetensors. Reproduce the shipped ``jpeg`` filter::

    python -m compressors.postfilter.train --data ../shared/data/train --out compressors/postfilter/models \
        --for jpeg --quality-range 30-90 --minutes 40 --name jpeg
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from compressors.autoencoder.train import load_images
from compressors.hardware import training_dtype
from compressors.postfilter.model import PostFilter
from compressors.trainloop import TrainLoop, device_line, options_with_defaults, start_module, training_record

GRID = 16  # patch offsets on the JPEG MCU grid (4:2:0), so block edges fall where they do in whole images
DEFAULTS = {"for": "jpeg", "quality_range": "30-90", "patch": 96, "batch": 16, "lr": 3e-4,
            "channels": 64, "layers": 8, "precision": "auto", "name": None}


def parse_range(text: str) -> tuple[int, int]:
    """``"30-90"`` -> ``(30, 90)``; a single number is a range of one."""
    lo, _, hi = str(text).strip().partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"quality range must look like 30-90, got {text!r}") from None
    if lo_i > hi_i:
        raise ValueError(f"quality range {text!r} runs backwards")
    return lo_i, hi_i


def codec_parameter(codec) -> str:
    """The parameter a post-filter's quality range applies to: ``quality``, or ``colors`` (kmeans)."""
    for name in ("quality", "colors"):
        if name in codec.params:
            return name
    raise ValueError(f"codec {codec.name!r} has no quality-like parameter (quality or colors) to train over")


class DegradedPatches:
    """Batches of (coded, original) patches: random patches, coded at a random quality."""

    def __init__(self, images: Sequence[np.ndarray], codec_name: str, quality_range: tuple[int, int],
                 patch: int, rng: np.random.Generator):
        from compressors import get_codec  # noqa: PLC0415

        self.codec = get_codec(codec_name)
        self.param = codec_parameter(self.codec)
        spec = self.codec.params[self.param]
        lo, hi = quality_range
        if spec.lo is not None and lo < spec.lo or spec.hi is not None and hi > spec.hi:
            raise ValueError(f"{codec_name}: {self.param} range {lo}-{hi} is outside [{spec.lo}, {spec.hi}]")
        self.images = [im if im.shape[2] == 3 else np.repeat(im[..., :1], 3, axis=2) for im in images
                       if min(im.shape[:2]) >= patch]
        if not self.images:
            raise ValueError(f"no training image is at least {patch} px on its shorter side")
        self.range, self.patch, self.rng = (lo, hi), patch, rng

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        p, rng = self.patch, self.rng
        clean = np.empty((n, p, p, 3), np.uint8)
        coded = np.empty_like(clean)
        for i in range(n):
            im = self.images[rng.integers(len(self.images))]
            y = rng.integers((im.shape[0] - p) // GRID + 1) * GRID
            x = rng.integers((im.shape[1] - p) // GRID + 1) * GRID
            patch = np.rot90(im[y : y + p, x : x + p], k=int(rng.integers(4)))
            patch = np.ascontiguousarray(patch[:, ::-1] if rng.random() < 0.5 else patch)
            q = int(rng.integers(self.range[0], self.range[1] + 1))
            clean[i] = patch
            coded[i] = self.codec.decode(self.codec.encode(patch, **{self.param: q}))
        as_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
        return as_t(coded), as_t(clean)


def fit(
    data: Sequence[np.ndarray],
    *,
    options: dict[str, Any] | None = None,
    minutes: float = 0.0,
    max_steps: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    init: tuple[bytes, bytes] | None = None,
    log: Callable[[str], None] = print,
    checkpoint: str | Path | None = None,
    cpu_minutes: float = 0.0,
) -> tuple[PostFilter, dict]:
    """Train a post-filter on uint8 (H, W, 3) images or crops; return ``(model, metadata)``.

    ``options``: ``for`` (codec name), ``quality_range`` ("30-90"), ``patch``, ``batch``,
    ``lr``, ``channels``, ``layers``, ``precision`` (auto/bf16/fp32), ``name`` (the name a
    shipped model answers to). ``init``: ``(safetensors, json)`` of a post-filter to
    continue from (its architecture is kept).
    """
    opt = options_with_defaults(DEFAULTS, options)
    codec_name, (lo, hi) = str(opt["for"]), parse_range(opt["quality_range"])
    patch = int(opt["patch"])
    if patch % GRID:
        raise ValueError(f"patch must be a multiple of {GRID}, got {patch}")
    rng = np.random.default_rng(seed)
    model, base_id = start_module(init, "postfilter", lambda: PostFilter(int(opt["channels"]), int(opt["layers"])),
                                  seed)
    model.train().to(device, memory_format=torch.channels_last)
    patches = DegradedPatches(data, codec_name, (lo, hi), patch, rng)
    autocast = training_dtype(str(device), str(opt["precision"]))
    adam = torch.optim.Adam(model.parameters(), lr=float(opt["lr"]))
    loop = TrainLoop(modules={"model": model}, optimizers={"adam": adam}, rng=rng, minutes=minutes,
                     max_steps=max_steps, cpu_minutes=cpu_minutes, checkpoint=checkpoint, log=log)
    line = device_line(device, autocast)
    log(f"post-filter {model.config()} for {codec_name} {patches.param} {lo}-{hi}, patch {patch}, "
        f"batch {opt['batch']}, on {line}, {len(patches.images)} images")
    for _ in loop:
        coded, clean = patches.batch(int(opt["batch"]))
        coded = coded.to(device).contiguous(memory_format=torch.channels_last)
        clean = clean.to(device)
        with torch.autocast(torch.device(device).type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            res = model.residual(coded)
        mse = ((coded + res.float() - clean) ** 2).mean()
        adam.zero_grad(set_to_none=True)
        mse.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        adam.step()
        with torch.no_grad():
            before = ((coded - clean) ** 2).mean()
        loop.record(mse=mse, gain_db=10 * math.log10(float(before) / max(float(mse.detach()), 1e-12)))
    model.eval().to("cpu", memory_format=torch.contiguous_format)
    metadata = {
        "name": opt["name"],
        "postfilter": {"for": codec_name, "parameter": patches.param, "range": [lo, hi]},
        "training": training_record(loop, options=opt, line=line, seed=seed, base_id=base_id,
                                    num_images=len(patches.images)),
    }
    return model, metadata


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m compressors.postfilter.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="local folder of training images (recursive; never the test set)")
    p.add_argument("--out", required=True, help="folder for <id>.safetensors + <id>.json")
    p.add_argument("--for", dest="codec", default=DEFAULTS["for"], help="codec whose output the filter restores")
    p.add_argument("--quality-range", default=DEFAULTS["quality_range"], help="e.g. 30-90 (kmeans: colours)")
    p.add_argument("--minutes", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--cpu-minutes", type=float, default=0.0, help="CPU-time budget (the same training whatever the load)")
    for key in ("patch", "batch", "channels", "layers"):
        p.add_argument(f"--{key}", type=int, default=DEFAULTS[key])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--name", default=None, help="the name a shipped model answers to (e.g. jpeg)")
    p.add_argument("--exclude", action="append", default=[], help="skip image paths containing this text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (resumes when it exists)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    options = {"for": a.codec, "quality_range": a.quality_range, "patch": a.patch, "batch": a.batch, "lr": a.lr,
               "channels": a.channels, "layers": a.layers, "precision": a.precision, "name": a.name}
    images = load_images(a.data, min_side=a.patch, exclude=a.exclude)
    model, meta = fit(images, options=options, minutes=a.minutes, max_steps=a.steps or None,
                      cpu_minutes=a.cpu_minutes, device=a.device,
                      seed=a.seed, checkpoint=a.checkpoint, log=lambda s: print(s, flush=True))
    meta["training"]["data"] = f"{a.data} ({len(images)} images; excluded: {a.exclude or 'none'})"
    meta["training"]["command"] = "python -m compressors.postfilter.train " + " ".join(argv or sys.argv[1:])
    from compressors.models import save_model_dir  # noqa: PLC0415

    mid = save_model_dir(model, meta, a.out)
    print(json.dumps({"model_id": mid, "out": str(a.out), "steps": meta["training"]["steps"]}), flush=True)


if __name__ == "__main__":
    main()

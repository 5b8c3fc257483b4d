"""Training of the ``lossless`` pixel model: a plain function plus a module command.

Needs torch, numpy and Pillow only; never Prefect, fsspec or Dask. The train flow
(``imgpress train --kind lossless``) wraps :func:`fit`; the command reads a local folder:

    nice -n 10 python -m compressors.lossless.train --data ../shared/data/train \\
        --out compressors/lossless/models --minutes 25 --seed 0

Samples are single pixels with their integer context (:mod:`.features`), drawn from every
training image (a tenth of the images as gray, to train the G head for gray inputs; half
of them cut into stripes of 64-256 rows, as the encoder does, so the border flags are
seen). The loss is the bits of the true values under the model's discretized logistics;
at the end the model is frozen to integers (:meth:`.model.LosslessMLP.freeze`) and the
bits of the *integer* model on held-out images go into the metadata.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..hardware import cpu_description, device_description
from .features import all_features, to_planes
from .model import LosslessMLP

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
CROP = 256
from .. import models  # noqa: E402  (the package registered the lossless trainer on import)

DEFAULTS = {name: p.default for name, p in models.get_trainer("lossless").options.items()}


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, integer: (H, W, 3) -> (H, W, 1)."""
    rgb = image.astype(np.int32)
    return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)[..., None]


def pixel_samples(images: Sequence[np.ndarray], per_image: int, gray_fraction: float, rng: np.random.Generator):
    """(features, med, values, plane mask) tensors of random pixels of ``images``."""
    feats, bases, values, masks = [], [], [], []
    for image in images:
        gray = image.shape[2] == 1 or rng.random() < gray_fraction
        if gray and image.shape[2] == 3:
            image = to_gray(image)
        if min(image.shape[:2]) > CROP:  # a random crop: contexts cost memory, pixels are plenty
            y0 = int(rng.integers(0, image.shape[0] - CROP + 1))
            x0 = int(rng.integers(0, image.shape[1] - CROP + 1))
            image = image[y0 : y0 + CROP, x0 : x0 + CROP]
        planes = to_planes(image)
        h, w, _ = planes.shape
        stripe = h if rng.random() < 0.5 else int(rng.integers(64, 257))
        f, base = all_features(planes, stripe)
        pick = rng.choice(h * w, size=min(per_image, h * w), replace=False)
        feats.append(f[pick])
        bases.append(base[pick])
        values.append(planes.reshape(-1, 3)[pick])
        m = np.ones((len(pick), 3), dtype=np.float32)
        if gray:
            m[:, 1:] = 0
        masks.append(m)
    cat = lambda xs: torch.from_numpy(np.concatenate(xs).astype(np.float32))  # noqa: E731
    return cat(feats), cat(bases), cat(values), cat(masks)


def integer_bits(model: LosslessMLP, images: Sequence[np.ndarray]) -> float:
    """Bits per value of the frozen integer model on whole images (the ideal code length)."""
    from .codec import image_code_length

    bits = values = 0
    for image in images:
        bits += image_code_length(model, image)
        values += image.size
    return bits / max(values, 1)


def fit(data: Sequence[np.ndarray], *, options: dict, minutes: float, max_steps: int | None, device: str,
        seed: int, init: tuple[bytes, bytes] | None, log: Callable[[str], None] = print,
        validation: Sequence[np.ndarray] = ()) -> tuple[LosslessMLP, dict]:
    """Train on ``data`` (uint8 (H, W, 3|1) images or crops); return the frozen module and metadata."""
    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init is not None:
        module, _ = models.build_model(init[0], init[1], kind="lossless")
        module.train()
    else:
        module = LosslessMLP(int(opts["hidden"]), int(opts["trunk2"]), int(opts["head"]))
    t0 = time.monotonic()
    x, base, y, mask = pixel_samples(data, int(opts["samples_per_image"]), float(opts["gray_fraction"]), rng)
    log(f"lossless: {len(x):,} pixel samples from {len(data)} images in {time.monotonic() - t0:.0f} s")
    module.to(device)
    x, base, y, mask = (t.to(device) for t in (x, base, y, mask))
    params = [p for n, p in module.named_parameters()]
    opt = torch.optim.Adam(params, lr=float(opts["lr"]))
    budget_s = minutes * 60.0 if minutes else math.inf
    steps_cap = max_steps or (10**9 if budget_s < math.inf else 20000)
    batch = int(opts["batch"])
    cpu_budget_s = float(opts.get("cpu_minutes") or 0) * 60.0 or math.inf
    start, cpu_start, step, ema = time.monotonic(), time.process_time(), 0, None
    while step < steps_cap:
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu_start
        if elapsed >= budget_s or cpu >= cpu_budget_s:
            break
        progress = max(step / steps_cap, elapsed / budget_s, cpu / cpu_budget_s)
        lr = float(opts["lr"]) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(x), (batch,), device=device)
        bits = module(x[idx], base[idx], y[idx])
        loss = (bits * mask[idx]).sum() / mask[idx].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.99 * ema + 0.01 * value
        step += 1
        if step % 250 == 0:
            log(f"lossless: step {step} {ema:.4f} bits/value lr {lr:.2e} {time.monotonic() - start:.0f} s "
                f"({time.process_time() - cpu_start:.0f} s CPU)")
    module.to("cpu").eval()
    calib = torch.randperm(len(x))[:200_000]
    module.freeze(x[calib].cpu(), base[calib].cpu(), y[calib].cpu())
    meta: dict[str, Any] = {
        "kind": "lossless",
        "training": {"steps": step, "wall_s": round(time.monotonic() - start, 1),
                     "cpu_s": round(time.process_time() - cpu_start, 1), "seed": seed,
                     "samples": len(x), "images": len(data), "options": opts, "float_bits_per_value": ema,
                     "device": device_description(device), "cpu": cpu_description(), "precision": "float32"},
    }
    if validation:
        meta["training"]["validation_integer_bits_per_value"] = round(integer_bits(module, validation), 4)
        log(f"lossless: held-out images: {meta['training']['validation_integer_bits_per_value']} bits/value "
            "(frozen integer model)")
    return module, meta


def load_folder(folder: str | Path) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    if not out:
        raise SystemExit(f"no images under {folder}")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Train the lossless codec's pixel model on a folder of images")
    p.add_argument("--data", required=True, help="folder of training images (never the test set)")
    p.add_argument("--out", required=True, help="folder to write <id>.safetensors and <id>.json into")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a shared machine: 1 wastes least)")
    p.add_argument("--holdout", type=int, default=20, help="every N-th image is held out for validation (0: none)")
    p.add_argument("--name", default="", help="shipped name recorded in the metadata")
    for k, v in DEFAULTS.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    images = load_folder(a.data)
    held = images[:: a.holdout] if a.holdout else []
    train_set = [im for i, im in enumerate(images) if not a.holdout or i % a.holdout]
    opts = {k: getattr(a, k) for k in DEFAULTS}
    module, meta = fit(train_set, options=opts, minutes=a.minutes, max_steps=a.steps or None, device="cpu",
                       seed=a.seed, init=None, validation=held[:4])
    meta["training"]["data"] = str(a.data)
    if a.name:
        meta["name"] = a.name
    mid = models.save_model_dir(module, meta, a.out)
    print(f"lossless model {mid} written to {a.out}")


if __name__ == "__main__":
    main()

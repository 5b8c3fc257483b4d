"""Training of the digit autoencoder: a plain function plus a CLI.

Reproduce the shipped models (the first 8,000 of MNIST's test digits; the last 2,000 are
the benchmark's)::

    python -m compressors.digits.train --data ../shared/data/mnist --out compressors/digits/models --latent 28
    python -m compressors.digits.train --data ../shared/data/mnist --out compressors/digits/models --latent 128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from compressors.digits.mnist import TRAIN_COUNT, read_folder, training_digits
from compressors.digits.model import DigitsAutoencoder, rd_terms
from compressors.trainloop import TrainLoop, device_line, options_with_defaults, start_module, training_record

PRIOR_LR = 1e-2  # the 2 x latent prior values move with the code's spread, faster than the weights
DEFAULTS = {"latent": 28, "lam": 0.01, "train_count": TRAIN_COUNT, "batch": 64, "lr": 1e-3, "width": 32,
            "name": None}


def fit(
    data: Any,
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
) -> tuple[DigitsAutoencoder, dict]:
    """Train the digit autoencoder on MNIST-style files or an (N, 28, 28) uint8 array.

    ``options``: ``latent`` (28 or 128), ``lam`` (loss = bpp + lam * 255^2 * MSE),
    ``train_count`` (the first N digits), ``batch``, ``lr``, ``width``, ``name``.
    """
    opt = options_with_defaults(DEFAULTS, options)
    x, _ = training_digits(data, int(opt["train_count"]))
    rng = np.random.default_rng(seed)
    model, base_id = start_module(init, "digits", lambda: DigitsAutoencoder(int(opt["latent"]), int(opt["width"])),
                                  seed)
    model.train().to(device)
    images = torch.from_numpy(np.array(x, dtype=np.float32)).div_(255.0)[:, None].to(device)
    prior = {id(p) for p in model.prior_parameters()}
    adam = torch.optim.Adam([
        {"params": [p for p in model.parameters() if id(p) not in prior], "lr": float(opt["lr"])},
        {"params": model.prior_parameters(), "lr": PRIOR_LR},
    ])
    loop = TrainLoop(modules={"model": model}, optimizers={"adam": adam}, rng=rng, minutes=minutes,
                     max_steps=max_steps, cpu_minutes=cpu_minutes, checkpoint=checkpoint, log=log, log_every=500)
    line = device_line(device, None)
    log(f"digits autoencoder {model.config()} lam={opt['lam']} on {len(x)} digits, {line}")
    for _ in loop:
        batch = images[torch.from_numpy(rng.integers(0, len(images), int(opt["batch"]))).to(device)]
        terms = rd_terms(model(batch), batch, float(opt["lam"]))
        adam.zero_grad(set_to_none=True)
        terms["loss"].backward()
        adam.step()
        loop.record(**terms)
    model.eval().to("cpu")
    metadata = {"name": opt["name"], "training": training_record(loop, options=opt, line=line, seed=seed,
                                                                 base_id=base_id, num_images=len(x))}
    return model, metadata


def main(argv: Sequence[str] | None = None, *, fit_fn=None, kind: str = "digits autoencoder") -> None:
    """The module command (shared with the digit classifier's, which passes its own ``fit_fn``)."""
    p = argparse.ArgumentParser(description=f"Train the {kind} on MNIST IDX files (the first --train-count digits)")
    p.add_argument("--data", required=True, help="folder with *images-idx3-ubyte[.gz] (and labels)")
    p.add_argument("--out", required=True, help="folder for <id>.safetensors + <id>.json")
    p.add_argument("--minutes", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--cpu-minutes", type=float, default=0.0, help="CPU-time budget (the same training whatever the load)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a training option, e.g. latent=128, lam=0.01, batch=64, lr=1e-3, name=digits-28")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpoint", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    options = dict(o.split("=", 1) for o in a.option)
    x, y = read_folder(a.data)
    model, meta = (fit_fn or fit)((x, y), options=options, minutes=a.minutes, max_steps=a.steps or None,
                                  cpu_minutes=a.cpu_minutes, seed=a.seed, checkpoint=a.checkpoint, log=lambda s: print(s, flush=True))
    meta["training"]["data"] = a.data
    meta["training"]["command"] = f"python -m {sys.modules['__main__'].__spec__.name if sys.modules['__main__'].__spec__ else 'train'} " + " ".join(argv or sys.argv[1:])
    from compressors.models import save_model_dir  # noqa: PLC0415

    mid = save_model_dir(model, meta, a.out)
    print(json.dumps({"model_id": mid, "out": a.out, "steps": meta["training"]["steps"]}), flush=True)


if __name__ == "__main__":
    main()

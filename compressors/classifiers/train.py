"""Training of the digit classifier: a plain function plus a CLI.

Reproduce the shipped ``digits`` classifier (the first 8,000 of MNIST's test digits)::

    python -m compressors.classifiers.train --data ../shared/data/mnist --out compressors/classifiers/models \
        --steps 3000 --option name=digits
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from compressors.classifiers.model import DigitsClassifier
from compressors.digits.mnist import TRAIN_COUNT, training_digits
from compressors.trainloop import TrainLoop, device_line, options_with_defaults, start_module, training_record

DEFAULTS = {"train_count": TRAIN_COUNT, "batch": 64, "lr": 1e-3, "width": 32, "shift": 2, "name": None}


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
) -> tuple[DigitsClassifier, dict]:
    """Train the digit classifier on labelled MNIST-style files or an ``(images, labels)`` pair.

    ``options``: ``train_count`` (the first N digits), ``batch``, ``lr``, ``width``,
    ``shift`` (random translations up to this many pixels), ``name``.
    """
    opt = options_with_defaults(DEFAULTS, options)
    x, y = training_digits(data, int(opt["train_count"]), need_labels=True)
    rng = np.random.default_rng(seed)
    model, base_id = start_module(init, "classifier", lambda: DigitsClassifier(10, int(opt["width"])), seed)
    model.train().to(device)
    images = torch.from_numpy(np.array(x, dtype=np.float32)).div_(255.0)[:, None]
    labels = torch.from_numpy(np.array(y, dtype=np.int64))
    adam = torch.optim.Adam(model.parameters(), lr=float(opt["lr"]))
    loop = TrainLoop(modules={"model": model}, optimizers={"adam": adam}, rng=rng, minutes=minutes,
                     max_steps=max_steps, cpu_minutes=cpu_minutes, checkpoint=checkpoint, log=log, log_every=500)
    line = device_line(device, None)
    shift = int(opt["shift"])
    log(f"digit classifier {model.config()} on {len(x)} labelled digits, {line}")
    for _ in loop:
        idx = torch.from_numpy(rng.integers(0, len(images), int(opt["batch"])))
        batch = images[idx]
        if shift:  # one random translation per batch: cheap augmentation for 8,000 digits
            dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2))
            batch = torch.roll(batch, (dy, dx), dims=(2, 3))
        logits = model(batch.to(device))
        loss = torch.nn.functional.cross_entropy(logits, labels[idx].to(device))
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        loop.record(loss=loss, accuracy=(logits.argmax(1).cpu() == labels[idx]).float().mean())
    model.eval().to("cpu")
    metadata = {"name": opt["name"], "classes": [str(i) for i in range(10)],
                "training": training_record(loop, options=opt, line=line, seed=seed, base_id=base_id,
                                            num_images=len(x))}
    return model, metadata


if __name__ == "__main__":
    from compressors.digits.train import main

    main(fit_fn=fit, kind="digit classifier")

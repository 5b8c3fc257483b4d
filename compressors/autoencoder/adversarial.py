"""Adversarial fine-tuning of the autoencoder's synthesis transform (the source's GAN-AE).

The source fine-tuned its autoencoder with L2 plus a Wasserstein adversarial loss beside a
plain fine-tuned one. Here the base model's analysis transform, hyperprior and entropy
model stay frozen, so the bitstream is exactly the base model's (same bytes, same bpp):
only ``g_s`` learns, against a patch critic, to turn the same code into an image with
the texture the quantiser removed. The critic is a spectrally normalised PatchGAN
(Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR
2017; Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR
2018) trained with the hinge loss (a Wasserstein-style critic: Lim & Ye 2017; used by
SAGAN and BigGAN); the synthesis minimises ``lambda_q * 255^2 * MSE + w * adversarial``
where the adversarial term's gradient at the last layer is scaled to ``adv_weight`` times
that of the distortion term (the adaptive weight of Esser et al., "Taming Transformers
for High-Resolution Image Synthesis", CVPR 2021), so one setting works at every quality.
Expect lower PSNR and sharper texture (Blau & Michaeli, "The Perception-Distortion
Tradeoff", CVPR 2018).

The result is another ``autoencoder`` model (new id, usable as ``--codec autoencoder
--model ID|URL``). Plain function + CLI; torch, numpy, Pillow and safetensors only::

    python -m compressors.autoencoder.adversarial --data ../shared/data/train \
        --init ../shared/models/autoencoder/8a84f737c4a2870b.safetensors --out /tmp/adv --cpu-minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from compressors.hardware import training_dtype
from compressors.trainloop import TrainLoop, device_line

from .model import MeanScaleHyperprior

DEFAULTS = {"adv_weight": 0.1, "lr": 2e-5, "critic_lr": 1e-4, "batch": 4, "crop": 128, "warmup": 100,
            "precision": "auto"}


class PatchCritic(nn.Module):
    """Spectrally normalised PatchGAN critic: one unbounded score per ~46-px patch."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, c, 4, 2, 1)), act(),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1)), act(),
            spectral_norm(nn.Conv2d(2 * c, 4 * c, 4, 2, 1)), act(),
            spectral_norm(nn.Conv2d(4 * c, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


@torch.no_grad()
def synthesis_input(model: MeanScaleHyperprior, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """What ``g_s`` sees when the codec decodes ``x`` at 0-based qualities ``q``: hard-rounded latents."""
    gain, inv_gain = model.gains(q)
    y = model.g_a(x) * gain
    _, means = model.hyper_params(torch.round(model.h_a(y)))
    return (torch.round(y - means) + means) * inv_gain


def _last_weight(model: MeanScaleHyperprior) -> torch.Tensor:
    return [m for m in model.g_s.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1].weight


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
) -> tuple[MeanScaleHyperprior, dict]:
    """Fine-tune the synthesis of autoencoder ``init`` (default: the shipped default) adversarially.

    ``data``: uint8 (H, W, 3) images or crops of at least ``crop`` px. ``options``:
    ``adv_weight`` (adversarial gradient relative to the distortion gradient), ``lr``
    (synthesis), ``critic_lr``, ``batch``, ``crop``, ``warmup`` (critic-only steps first),
    ``precision``. Returns ``(model, metadata)``: the base model with a new ``g_s``.
    """
    from compressors import models  # noqa: PLC0415

    from .train import CropSampler  # noqa: PLC0415

    opt = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None and k in DEFAULTS}}
    if init is None:
        path = models.shipped("autoencoder").get(models.default_model_id("autoencoder"))
        if path is None:
            raise ValueError("adversarial fine-tuning needs a base autoencoder: pass init (--init-model)")
        init = (path.read_bytes(), path.with_suffix(".json").read_bytes())
    model, base = models.build_model(*init, kind="autoencoder")
    rng = np.random.default_rng(seed)
    sampler = CropSampler(data, int(opt["crop"]), rng)
    model.to(device).requires_grad_(False)
    model.g_s.requires_grad_(True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        critic = PatchCritic().to(device)
    lambdas = torch.tensor(base.get("lambdas") or [0.013] * model.qualities, device=device)[: model.qualities]
    opt_g = torch.optim.Adam(model.g_s.parameters(), lr=float(opt["lr"]), betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=float(opt["critic_lr"]), betas=(0.5, 0.9))
    loop = TrainLoop(modules={"g_s": model.g_s, "critic": critic}, optimizers={"g": opt_g, "d": opt_d}, rng=rng,
                     minutes=minutes, max_steps=max_steps, cpu_minutes=cpu_minutes, checkpoint=checkpoint, log=log,
                     log_every=50)
    autocast = training_dtype(str(device), str(opt["precision"]))
    kind = torch.device(device).type
    amp = lambda: torch.autocast(kind, dtype=autocast or torch.bfloat16, enabled=autocast is not None)  # noqa: E731
    line = device_line(device, autocast)
    log(f"adversarial fine-tuning of g_s of {base['model_id']} ({model.qualities} qualities), {opt}, on {line}, "
        f"{len(sampler.images)} images")
    last = _last_weight(model)
    batch = int(opt["batch"])
    for step in loop:
        x = sampler.batch(batch).to(device)
        q = torch.from_numpy(rng.integers(0, model.qualities, batch)).to(device)
        v = synthesis_input(model, x, q)
        with amp():
            x_hat = model.g_s(v).float()
        # critic: hinge loss on real crops against decoded ones
        with amp():
            loss_d = torch.relu(1 - critic(x).float()).mean() + torch.relu(1 + critic(x_hat.detach()).float()).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        mse = ((x_hat - x) ** 2).mean((1, 2, 3))
        distortion = (lambdas[q] * 255**2 * mse).mean()
        terms = {"loss_d": loss_d, "mse": mse.mean()}
        if step >= int(opt["warmup"]):
            with amp():
                adv = -critic(x_hat).float().mean()
            g_dist = torch.autograd.grad(distortion, last, retain_graph=True)[0].norm()
            g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0].norm()
            w = (float(opt["adv_weight"]) * g_dist / (g_adv + 1e-8)).clamp(max=1e4).detach()
            loss_g = distortion + w * adv
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            torch.nn.utils.clip_grad_norm_(model.g_s.parameters(), 1.0)
            opt_g.step()
            terms.update(adv=adv, adv_w=w)
        loop.record(**terms)
    model.eval().requires_grad_(False).to("cpu")
    record = loop.summary()
    lineage = list((base.get("training") or {}).get("lineage") or [])
    lineage.append({"model_id": None, "finetuned_from": base["model_id"], "steps": record["steps"],
                    "wall_s": record["wall_s"], "cpu_s": record["cpu_s"], "device": line,
                    "adversarial": {k: opt[k] for k in ("adv_weight", "lr", "critic_lr", "batch", "crop")}})
    metadata = {
        "lambdas": base.get("lambdas"),
        "training": {"adversarial": True, "options": opt, "device": line, "seed": seed,
                     "finetuned_from": base["model_id"], "trained": "g_s only (the bitstream is the base model's)",
                     "num_images": len(sampler.images), "torch": torch.__version__, **record, "lineage": lineage},
    }
    return model, metadata


def fit_from_options(data: Sequence[np.ndarray], *, options: dict, **kwargs) -> tuple[MeanScaleHyperprior, dict]:
    """:func:`fit` with the autoencoder trainer's options (``imgpress train --kind autoencoder --adversarial``)."""
    return fit(data, options={"adv_weight": options.get("adv_weight"), "lr": options.get("adv_lr"),
                              "precision": options.get("precision")}, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m compressors.autoencoder.adversarial",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="local folder of training images (never the test set)")
    p.add_argument("--init", required=True, help="base model .safetensors (its .json beside it)")
    p.add_argument("--out", required=True, help="folder for <id>.safetensors + <id>.json")
    p.add_argument("--minutes", type=float, default=0.0)
    p.add_argument("--cpu-minutes", type=float, default=0.0, help="CPU-time budget (the same training whatever the load)")
    p.add_argument("--steps", type=int, default=0)
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from compressors import models  # noqa: PLC0415

    from .train import load_images  # noqa: PLC0415

    init = Path(a.init)
    options = {k: getattr(a, k) for k in DEFAULTS}
    model, meta = fit(load_images(a.data, min_side=a.crop), options=options, minutes=a.minutes,
                      max_steps=a.steps or None, cpu_minutes=a.cpu_minutes, device=a.device, seed=a.seed,
                      init=(init.read_bytes(), init.with_suffix(".json").read_bytes()), checkpoint=a.checkpoint,
                      log=lambda s: print(s, flush=True))
    meta["training"]["data"] = a.data
    meta["training"]["command"] = "python -m compressors.autoencoder.adversarial " + " ".join(argv or sys.argv[1:])
    mid = models.save_model_dir(model, meta, a.out)
    print(json.dumps({"model_id": mid, "out": a.out, "steps": meta["training"]["steps"]}), flush=True)


if __name__ == "__main__":
    main()

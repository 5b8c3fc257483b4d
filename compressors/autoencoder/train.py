"""Training of the variable-rate mean-scale hyperprior: a plain function plus a CLI.

Needs only torch, numpy, Pillow and safetensors (what a bare GPU machine has). The Prefect
task wraps :func:`train`; this module never imports Prefect, fsspec or Dask.

Reproduce the shipped model::

    python -m compressors.autoencoder.train --data ../shared/data/train \
        --out compressors/autoencoder/models --minutes 95 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..hardware import device_description, training_dtype
from .model import MeanScaleHyperprior, rd_loss
from .store import build_model, save_model_dir

# The shipped models' levels: CompressAI's MSE lambdas 1..6, then two above for ~38 dB on photos.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932, 0.18)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the model metadata)."""

    N: int = 96
    M: int = 128
    # lambda per quality (loss = bpp + lambda * 255^2 * MSE), low to high quality;
    # CompressAI's MSE lambdas for its qualities 2..6.
    lambdas: list[float] = field(default_factory=lambda: [0.0035, 0.0067, 0.013, 0.025, 0.0483])
    crop: int = 128
    batch: int = 8
    lr: float = 3e-4
    lr_final: float = 1e-5
    decay_start: float = 0.7  # fraction of the budget after which lr decays (cosine) to lr_final
    minutes: float = 0.0  # wall-clock budget; 0 = use steps only
    steps: int = 0  # step budget; 0 = use minutes only
    grad_clip: float = 1.0
    checkpoint_every_s: float = 240.0
    log_every: int = 50
    # Speed: "auto" picks bf16 autocast for the transforms where the hardware has bf16 units
    # (AMX / AVX512-BF16 CPUs, GPUs) and float32 elsewhere (bf16 is ~24x slower on AVX2-only CPUs).
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    # Exponential moving average of the weights; the saved model is the average (0 = off).
    ema: float = 0.999


def load_images(folder: str | Path, *, min_side: int = 128, exclude: Sequence[str] = ()) -> list[np.ndarray]:
    """All images under ``folder`` (recursively) as uint8 (H, W, 3) arrays, sorted by path
    (but those whose path contains an ``exclude`` text: a held-out part)."""
    from PIL import Image

    images = []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES or any(e in str(p) for e in exclude):
            continue
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if min(arr.shape[:2]) >= min_side:
            images.append(arr)
    if not images:
        raise ValueError(f"no images of at least {min_side} px found under {folder}")
    return images


class CropSampler:
    """Random crops (with random horizontal flips) from in-memory uint8 images."""

    def __init__(self, images: Sequence[np.ndarray], crop: int, rng: np.random.Generator):
        self.images = [im if im.shape[2] == 3 else np.repeat(im[..., :1], 3, axis=2) for im in images]
        self.images = [im for im in self.images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop} px on its shorter side")
        self.crop, self.rng = crop, rng

    def batch(self, n: int) -> torch.Tensor:
        c = self.crop
        out = np.empty((n, c, c, 3), dtype=np.uint8)
        for i in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - c + 1)
            x = self.rng.integers(im.shape[1] - c + 1)
            patch = im[y : y + c, x : x + c]
            out[i] = patch[:, ::-1] if self.rng.random() < 0.5 else patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def _lr_at(cfg: TrainConfig, progress: float) -> float:
    if progress <= cfg.decay_start:
        return cfg.lr
    t = min(1.0, (progress - cfg.decay_start) / max(1e-9, 1 - cfg.decay_start))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


def _save_checkpoint(path: Path, model, opt, state: dict, ema: dict[str, torch.Tensor] | None = None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (ema or {}).items():
        tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    for i, group_state in enumerate(opt.state_dict()["state"].values()):
        for k, v in group_state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().reshape(v.shape).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(st_save(tensors, metadata={"state": json.dumps(state)}))
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model, opt, ema: dict[str, torch.Tensor] | None = None) -> dict:
    from safetensors import safe_open

    blob = path.read_bytes()
    tensors = st_load(blob)
    with safe_open(str(path), "pt") as f:
        state = json.loads(f.metadata()["state"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        for k, v in ema.items():
            v.copy_(tensors.get(f"ema.{k}", model.state_dict()[k]))
    opt_sd = opt.state_dict()
    params = opt_sd["param_groups"][0]["params"]
    new_state = {}
    for i, pid in enumerate(params):
        entry = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if entry:
            new_state[pid] = entry
    opt_sd["state"] = new_state
    opt.load_state_dict(opt_sd)
    return state


def train_step(forward, opt, x: torch.Tensor, q: torch.Tensor, lambdas: torch.Tensor, *,
               autocast: torch.dtype | None, channels_last: bool, grad_clip: float) -> dict | None:
    """One optimisation step on batch ``x`` at qualities ``q``; ``None`` when the loss is not finite.

    ``forward`` is the model or its ``torch.compile`` wrapper; the optimiser holds its parameters.
    """
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    terms = rd_loss(forward(x, q, autocast=autocast), x, lambdas[q])
    opt.zero_grad(set_to_none=True)
    if not torch.isfinite(terms["loss"]):
        return None
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)
    opt.step()
    return terms


def train(
    crops_source: str | Path | Sequence[np.ndarray],
    config: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    init_state: tuple[bytes, bytes] | None = None,
    checkpoint_path: str | Path | None = None,
    log: Callable[[str], None] = print,
    export_only: bool = False,
) -> tuple[MeanScaleHyperprior, dict[str, Any]]:
    """Train (or fine-tune) the variable-rate codec; return ``(model, metadata)``.

    ``crops_source``: a local folder of images or a sequence of uint8 (H, W, 3) arrays
    (the tasks layer reads remote collections and passes arrays). ``init_state``:
    ``(safetensors_bytes, metadata_json)`` of a model to fine-tune from (its N, M and
    qualities are kept). ``checkpoint_path``: a safetensors file written every
    ``config.checkpoint_every_s``; when it exists the run resumes from it (step, elapsed
    time, optimizer). Seeds are local (a torch Generator / numpy Generator), never global.
    """
    cfg = config or TrainConfig()
    if export_only and not (checkpoint_path and Path(checkpoint_path).exists()):
        raise ValueError("export_only needs an existing checkpoint")
    if cfg.minutes <= 0 and cfg.steps <= 0 and not export_only:
        raise ValueError("give a budget: config.minutes > 0 or config.steps > 0")
    device = torch.device(device)
    torch.manual_seed(seed)  # parameter init and uniform noise draw from torch's default generator
    rng = np.random.default_rng(seed)
    images = load_images(crops_source, min_side=cfg.crop) if isinstance(crops_source, (str, Path)) else list(crops_source)
    sampler = CropSampler(images, cfg.crop, rng)

    base_id, lineage = None, []
    if init_state is not None:
        model, base_meta = build_model(*init_state)
        base_id = base_meta["model_id"]
        lineage = list(base_meta.get("training", {}).get("lineage", []))
        cfg.N, cfg.M = model.N, model.M
        base_lambdas = list(base_meta.get("lambdas", cfg.lambdas))
        if len(cfg.lambdas) > model.qualities and np.allclose(cfg.lambdas[: model.qualities], base_lambdas):
            model.extend_qualities(len(cfg.lambdas))  # new, higher-rate levels above the trained ones
        elif len(cfg.lambdas) != model.qualities:
            cfg.lambdas = base_lambdas
        model.train()
    else:
        model = MeanScaleHyperprior(cfg.N, cfg.M, len(cfg.lambdas))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = training_dtype(str(device), cfg.precision)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lambdas = torch.tensor(cfg.lambdas, device=device)
    ema = {k: v.detach().clone() for k, v in model.named_parameters()} if cfg.ema > 0 else None
    live = [p for _, p in model.named_parameters()]
    forward = torch.compile(model) if cfg.compile else model

    step, elapsed = 0, 0.0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        st = _load_checkpoint(ckpt, model, opt, ema)
        step, elapsed = st["step"], st["elapsed_s"]
        rng.bit_generator.state = st["rng"]
        log(f"resumed from {ckpt} at step {step} ({elapsed:.0f} s)")

    budget_s = cfg.minutes * 60.0
    def progress() -> float:
        parts = []
        if budget_s > 0:
            parts.append(elapsed / budget_s)
        if cfg.steps > 0:
            parts.append(step / cfg.steps)
        return max(parts)

    precision = "bf16 autocast" if autocast is not None else "float32"
    device_line = f"{device_description(str(device))}, {precision}" + (", channels_last" if cfg.channels_last else "")
    log(f"training N={cfg.N} M={cfg.M} lambdas={cfg.lambdas} crop={cfg.crop} batch={cfg.batch} "
        f"on {device_line} with {len(sampler.images)} images")
    t_last, t_ckpt = time.perf_counter(), time.perf_counter()
    acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "n": 0}
    history: list[dict] = []
    skipped = 0
    while not export_only and progress() < 1.0:
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, progress())
        x = sampler.batch(cfg.batch).to(device)
        q = torch.from_numpy(rng.integers(0, len(cfg.lambdas), cfg.batch)).to(device)
        terms = train_step(forward, opt, x, q, lambdas, autocast=autocast, channels_last=cfg.channels_last,
                           grad_clip=cfg.grad_clip)
        if terms is None:
            skipped += 1  # a rare non-finite batch: skipped rather than poisoning Adam's moments
            continue
        if ema is not None:
            torch._foreach_lerp_(list(ema.values()), live, 1.0 - cfg.ema)
        step += 1
        now = time.perf_counter()
        elapsed += now - t_last
        t_last = now
        for k in ("loss", "bpp", "mse"):
            acc[k] += float(terms[k].detach())
        acc["n"] += 1
        if step % cfg.log_every == 0:
            n = acc["n"]
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "lr": opt.param_groups[0]["lr"],
                   "loss": acc["loss"] / n, "bpp": acc["bpp"] / n, "mse": acc["mse"] / n}
            history.append(rec)
            log(f"step {step} t={elapsed:.0f}s lr={rec['lr']:.2e} loss={rec['loss']:.4f} "
                f"bpp={rec['bpp']:.4f} psnr~{-10 * math.log10(max(rec['mse'], 1e-12)):.2f} "
                f"({step / max(elapsed, 1e-9):.2f} steps/s)")
            acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "n": 0}
        if ckpt is not None and now - t_ckpt >= cfg.checkpoint_every_s:
            _save_checkpoint(ckpt, model, opt, {"step": step, "elapsed_s": elapsed, "rng": rng.bit_generator.state}, ema)
            t_ckpt = now
    if ckpt is not None and not export_only:
        _save_checkpoint(ckpt, model, opt, {"step": step, "elapsed_s": elapsed, "rng": rng.bit_generator.state}, ema)

    if ema is not None:
        model.load_state_dict(ema, strict=False)  # ship the averaged weights
    model.eval().to("cpu", memory_format=torch.contiguous_format)
    lineage.append({"model_id": None, "finetuned_from": base_id, "steps": step, "wall_s": round(elapsed, 1),
                    "device": device_line, "lr": f"{cfg.lr:g} to {cfg.lr_final:g}", "crop": cfg.crop,
                    "batch": cfg.batch, "lambdas": len(cfg.lambdas), "ema": cfg.ema})
    metadata = {
        "lambdas": list(cfg.lambdas),
        "training": {
            "config": asdict(cfg),
            "steps": step,
            "wall_s": round(elapsed, 1),
            "device": device_line,
            "lineage": lineage,
            "torch": torch.__version__,
            "seed": seed,
            "data": str(crops_source) if isinstance(crops_source, (str, Path)) else f"{len(images)} arrays",
            "num_images": len(sampler.images),
            "finetuned_from": base_id,
            "skipped_nonfinite_batches": skipped,
            "final": history[-1] if history else None,
            "history": history[-200:],
        },
    }
    return model, metadata


def fit(data: Sequence[np.ndarray], *, options: dict, minutes: float, max_steps: int | None, device: str,
        seed: int, init: tuple[bytes, bytes] | None, log: Callable[[str], None] = print):
    """The train flow's entry (see :class:`compressors.models.Trainer`): crops in, ``(model, metadata)`` out."""
    if options.get("adversarial"):  # only g_s learns, against a critic: compressors/autoencoder/adversarial.py
        from .adversarial import fit_from_options  # noqa: PLC0415

        return fit_from_options(data, options=options, minutes=minutes, max_steps=max_steps, device=device,
                                seed=seed, init=init, log=log)
    cfg = TrainConfig(crop=min(min(c.shape[:2]) for c in data), minutes=minutes, steps=max_steps or 0,
                      lr=options.get("lr") or TrainConfig.lr, precision=options.get("precision") or "auto")
    if options.get("lambdas"):
        cfg.lambdas = [float(v) for v in str(options["lambdas"]).split(",")]
    elif init is None:
        cfg.lambdas = list(DEFAULT_LAMBDAS)
    return train(data, cfg, device=device, seed=seed, init_state=init, log=log)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m compressors.autoencoder.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="local folder of training images (recursive)")
    p.add_argument("--out", required=True, help="folder for <id>.safetensors + <id>.json")
    p.add_argument("--minutes", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--N", type=int, default=TrainConfig.N)
    p.add_argument("--M", type=int, default=TrainConfig.M)
    p.add_argument("--crop", type=int, default=TrainConfig.crop)
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--lambdas", type=str, default="", help="comma-separated, low to high quality")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--checkpoint", default="", help="checkpoint file (resumes when it exists)")
    p.add_argument("--init", default="", help="base model .safetensors to fine-tune from (its .json beside it)")
    p.add_argument("--lr-final", type=float, default=TrainConfig.lr_final)
    p.add_argument("--decay-start", type=float, default=TrainConfig.decay_start,
                   help="fraction of the budget after which lr decays (cosine) to --lr-final")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast where the hardware has bf16 units, float32 elsewhere")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (see bench/train_speed.py)")
    p.add_argument("--ema", type=float, default=TrainConfig.ema, help="weight-average decay (0 = off)")
    p.add_argument("--export", action="store_true",
                   help="write the model of --checkpoint (its weight average) now, without training further "
                        "(give the same --init and --lambdas as the run)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig(N=a.N, M=a.M, crop=a.crop, batch=a.batch, lr=a.lr, lr_final=a.lr_final,
                      decay_start=a.decay_start, minutes=a.minutes, steps=a.steps, precision=a.precision,
                      channels_last=a.channels_last, compile=a.compile, ema=a.ema)
    if a.lambdas:
        cfg.lambdas = [float(v) for v in a.lambdas.split(",")]
    init = None
    if a.init:
        w = Path(a.init)
        init = (w.read_bytes(), w.with_suffix(".json").read_bytes())
    model, meta = train(a.data, cfg, device=a.device, seed=a.seed, init_state=init,
                        checkpoint_path=a.checkpoint or None, log=lambda s: print(s, flush=True), export_only=a.export)
    meta["training"]["command"] = "python -m compressors.autoencoder.train " + " ".join(argv or __import__("sys").argv[1:])
    mid = save_model_dir(model, meta, a.out)
    print(json.dumps({"model_id": mid, "out": str(a.out), "steps": meta["training"]["steps"],
                      "wall_s": meta["training"]["wall_s"]}), flush=True)


if __name__ == "__main__":
    main()

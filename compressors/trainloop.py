"""The loop every small trained model here shares: budget, learning rate, checkpoints, logs.

A training function (postfilter, digit autoencoder, classifier, adversarial fine-tuning)
builds its modules and optimisers, then iterates ``for step in loop:`` and reports its
loss terms with ``loop.record(...)``. The loop stops at the wall-clock or step budget
or CPU-time budget
(whichever comes first: on a shared machine a CPU-time budget buys the same training
whatever the load), sets each optimiser's learning rate (constant, then cosine to
``lr_final`` over the last ``1 - decay_start`` of the budget), writes a safetensors
checkpoint every ``checkpoint_every_s`` (and at the end) and resumes from it when it
exists: step, elapsed time, modules, optimiser moments and the numpy generator's state.

Pure: torch, numpy and safetensors only (what a bare GPU machine has).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from compressors.hardware import device_description


def device_line(device: str | torch.device, autocast: torch.dtype | None) -> str:
    """The device and precision path, as model metadata and benchmark tables record it."""
    return f"{device_description(str(device))}, {'bf16 autocast' if autocast is not None else 'float32'}"


class TrainLoop:
    """Iterate training steps within a budget; see the module docstring."""

    def __init__(
        self,
        *,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        rng: np.random.Generator,
        minutes: float = 0.0,
        max_steps: int | None = None,
        cpu_minutes: float = 0.0,
        lr_final_fraction: float = 0.03,
        decay_start: float = 0.7,
        checkpoint: str | Path | None = None,
        checkpoint_every_s: float = 240.0,
        log: Callable[[str], None] = print,
        log_every: int = 100,
    ):
        if minutes <= 0 and not max_steps and cpu_minutes <= 0:
            raise ValueError("give a budget: minutes, cpu_minutes or max_steps > 0")
        self.modules, self.optimizers, self.rng = dict(modules), dict(optimizers), rng
        self.budget_s, self.max_steps, self.cpu_budget_s = minutes * 60.0, int(max_steps or 0), cpu_minutes * 60.0
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.lr_final_fraction, self.decay_start = lr_final_fraction, decay_start
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.checkpoint_every_s, self.log, self.log_every = checkpoint_every_s, log, log_every
        self.step, self.elapsed, self.cpu = 0, 0.0, 0.0
        self.history: list[dict] = []
        self._acc: dict[str, float] = {}
        self._n = 0
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load()
            log(f"resumed from {self.checkpoint} at step {self.step} ({self.elapsed:.0f} s)")

    def progress(self) -> float:
        parts = []
        if self.budget_s > 0:
            parts.append(self.elapsed / self.budget_s)
        if self.max_steps > 0:
            parts.append(self.step / self.max_steps)
        if self.cpu_budget_s > 0:
            parts.append(self.cpu / self.cpu_budget_s)
        return max(parts)

    def lr_factor(self) -> float:
        p = self.progress()
        if p <= self.decay_start:
            return 1.0
        t = min(1.0, (p - self.decay_start) / max(1e-9, 1.0 - self.decay_start))
        f = self.lr_final_fraction
        return f + 0.5 * (1.0 - f) * (1.0 + math.cos(math.pi * t))

    def __iter__(self):
        t_last = t_ckpt = time.perf_counter()
        c_last = time.process_time()
        while self.progress() < 1.0:
            factor = self.lr_factor()
            for name, opt in self.optimizers.items():
                for g, base in zip(opt.param_groups, self.base_lr[name]):
                    g["lr"] = base * factor
            yield self.step
            self.step += 1
            now = time.perf_counter()
            self.elapsed += now - t_last
            t_last = now
            c_now = time.process_time()
            self.cpu += c_now - c_last
            c_last = c_now
            if self.checkpoint is not None and now - t_ckpt >= self.checkpoint_every_s:
                self.save()
                t_ckpt = now
        if self.checkpoint is not None:
            self.save()

    def record(self, **terms: float | torch.Tensor) -> None:
        """Add this step's loss terms; every ``log_every`` steps their means are logged and kept."""
        for k, v in terms.items():
            self._acc[k] = self._acc.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        self._n += 1
        if (self.step + 1) % self.log_every == 0:
            rec = {"step": self.step + 1, "elapsed_s": round(self.elapsed, 1), "cpu_s": round(self.cpu, 1),
                   "lr_factor": round(self.lr_factor(), 4),
                   **{k: v / self._n for k, v in self._acc.items()}}
            self.history.append(rec)
            terms_text = " ".join(f"{k}={v:.5g}" for k, v in rec.items() if k not in ("step", "elapsed_s", "cpu_s"))
            self.log(f"step {rec['step']} t={self.elapsed:.0f}s cpu={self.cpu:.0f}s {terms_text} "
                     f"({(self.step + 1) / max(self.elapsed, 1e-9):.2f} steps/s)")
            self._acc, self._n = {}, 0

    def summary(self) -> dict:
        """What the metadata records about the run."""
        return {"steps": self.step, "wall_s": round(self.elapsed, 1), "cpu_s": round(self.cpu, 1),
                "final": self.history[-1] if self.history else None, "history": self.history[-100:]}

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> None:
        from safetensors.torch import save as st_save  # noqa: PLC0415

        tensors = {}
        for name, module in self.modules.items():
            for k, v in module.state_dict().items():
                tensors[f"module.{name}.{k}"] = v.detach().cpu().contiguous()
        for name, opt in self.optimizers.items():
            for i, state in opt.state_dict()["state"].items():
                for k, v in state.items():
                    if torch.is_tensor(v):
                        tensors[f"opt.{name}.{i}.{k}"] = v.detach().cpu().reshape(v.shape).contiguous()
        state = {"step": self.step, "elapsed_s": self.elapsed, "cpu_s": self.cpu, "rng": self.rng.bit_generator.state,
                 "history": self.history}
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        tmp.write_bytes(st_save(tensors, metadata={"state": json.dumps(state)}))
        os.replace(tmp, self.checkpoint)

    def _load(self) -> None:
        from safetensors import safe_open  # noqa: PLC0415
        from safetensors.torch import load as st_load  # noqa: PLC0415

        tensors = st_load(self.checkpoint.read_bytes())
        with safe_open(str(self.checkpoint), "pt") as f:
            state = json.loads(f.metadata()["state"])
        for name, module in self.modules.items():
            prefix = f"module.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in self.optimizers.items():
            sd = opt.state_dict()
            new_state = {}
            for i in (pid for g in sd["param_groups"] for pid in g["params"]):
                prefix = f"opt.{name}.{i}."
                entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                if entry:
                    new_state[i] = entry
            sd["state"] = new_state
            opt.load_state_dict(sd)
        self.step, self.elapsed, self.cpu = int(state["step"]), float(state["elapsed_s"]), float(state.get("cpu_s", 0))
        self.rng.bit_generator.state = state["rng"]
        self.history = list(state.get("history", []))


def options_with_defaults(defaults: Mapping[str, object], options: Mapping[str, object] | None) -> dict:
    """A fit's options: ``defaults`` overridden by every given value that is not None."""
    return {**defaults, **{k: v for k, v in (options or {}).items() if v is not None}}


def start_module(init: tuple[bytes, bytes] | None, kind: str, make: Callable[[], torch.nn.Module], seed: int):
    """``(module, base model id or None)``: the model ``init`` holds (fine-tuning), else ``make()``
    with torch's generator seeded by ``seed`` (the caller's global generator is left as it was)."""
    if init is not None:
        from compressors.models import build_model  # noqa: PLC0415

        module, base = build_model(*init, kind=kind)
        return module, base["model_id"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make(), None


def training_record(loop: TrainLoop, *, options: Mapping, line: str, seed: int, base_id: str | None,
                    num_images: int, **extra) -> dict:
    """The metadata's ``training`` entry: options, device, budget used, loss history and lineage."""
    record = loop.summary()
    return {"options": dict(options), "device": line, "seed": seed, "finetuned_from": base_id,
            "num_images": num_images, "torch": torch.__version__, **extra, **record,
            "lineage": [{"model_id": None, "finetuned_from": base_id, "steps": record["steps"],
                         "wall_s": record["wall_s"], "cpu_s": record["cpu_s"], "device": line}]}

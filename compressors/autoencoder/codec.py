"""The ``autoencoder`` codec: uint8 image in, ``.imp`` bytes out, and back.

Pure compute: models come from the in-process store (:mod:`.store`), never from files
the caller names. Any H and W (edge-replicated to a multiple of 64, cropped back);
1-channel images go through the network as 3 equal channels and come back with 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import container
from .entropy import Y_RANGE, ans_decoder
from .model import Z_TAIL
from .store import LoadedModel, default_model_id, get_model


def _resolve(model: str | None) -> LoadedModel:
    mid = (model or "").strip() or default_model_id()
    if not mid:
        raise ValueError("no autoencoder model: none is shipped and none was given (load one with load_model)")
    return get_model(mid)


def _to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    h, w = images[0].shape[:2]
    pb, pr = container.padding_for(h, w)
    batch = np.stack([np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images])
    batch = np.pad(batch, ((0, 0), (0, pb), (0, pr), (0, 0)), mode="edge")
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)


def encode_batch(images: Sequence[np.ndarray], *, quality: int, model: str | None = None) -> list[bytes]:
    """Encode images of one shape in one network pass; one artifact per image."""
    if not images:
        return []
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"encode_batch needs images of one shape, got {sorted(shapes)}")
    lm = _resolve(model)
    if not 1 <= int(quality) <= lm.qualities:
        raise ValueError(f"autoencoder: quality={quality} is outside [1, {lm.qualities}] for model {lm.model_id}")
    h, w, c = images[0].shape
    if h * w > container.MAX_PIXELS:
        raise ValueError(f"autoencoder: {h}x{w} pixels is above the limit of {container.MAX_PIXELS}")
    net, tables = lm.model, lm.tables
    q = torch.full((len(images),), int(quality) - 1, dtype=torch.long)
    with torch.inference_mode():
        gain, _ = net.gains(q)
        y = net.g_a(_to_tensor(images)) * gain
        z = net.h_a(y)
    z_sym = torch.clamp(torch.round(z), -Z_TAIL, Z_TAIL).numpy().astype(np.int32)
    y_idx, means = tables.y_params(z_sym)
    y_sym = np.clip(np.round(y.numpy().astype(np.float64) - means), -Y_RANGE, Y_RANGE).astype(np.int32)
    pb, pr = container.padding_for(h, w)
    header = container.Header(lm.model_id, h, w, c, int(quality), pb, pr)
    return [container.pack(header, tables.encode(z_sym[i], y_sym[i], y_idx[i])) for i in range(len(images))]


def encode(image: np.ndarray, *, quality: int, model: str | None = None) -> bytes:
    """Encode one uint8 (H, W, C) image at ``quality`` (1 = smallest) with model id ``model``."""
    return encode_batch([image], quality=quality, model=model)[0]


def decode_batch(datas: Sequence[bytes]) -> list[np.ndarray]:
    """Decode artifacts; those sharing model and shape go through ``g_s`` together."""
    parsed = [container.unpack(bytes(d)) for d in datas]
    out: list[np.ndarray | None] = [None] * len(parsed)
    groups: dict[tuple, list[int]] = {}
    for i, (hd, _) in enumerate(parsed):
        groups.setdefault((hd.model_id, hd.height, hd.width), []).append(i)
    for (mid, h, w), members in groups.items():
        lm = get_model(mid)  # raises ValueError on an unknown model id, before any allocation
        for i in members:
            if not 1 <= parsed[i][0].quality <= lm.qualities:
                raise ValueError(f"autoencoder artifact quality {parsed[i][0].quality} is not a level of model {mid}")
        hp, wp = h + (-h) % 64, w + (-w) % 64
        z_shape = (lm.model.N, hp // 64, wp // 64)
        y_hats = []
        for i in members:
            coder = ans_decoder(parsed[i][1])
            try:
                z_sym = lm.tables.decode_z(coder, z_shape)
                y_idx, means = lm.tables.y_params(z_sym[None])
                y_sym = lm.tables.decode_y(coder, y_idx[0])
            except (RuntimeError, ValueError) as exc:  # constriction raises on exhausted / invalid data
                raise ValueError(f"autoencoder payload does not decode: {exc}") from None
            y_hats.append(y_sym + means[0])
        q = torch.tensor([parsed[i][0].quality - 1 for i in members])
        with torch.inference_mode():
            _, inv_gain = lm.model.gains(q)
            y_hat = torch.from_numpy(np.stack(y_hats).astype(np.float32))
            x_hat = lm.model.g_s(y_hat * inv_gain).clamp_(0, 1)
            pix = x_hat.mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()[:, :h, :w]
        for k, i in enumerate(members):
            img = pix[k]
            out[i] = np.ascontiguousarray(img[..., :1] if parsed[i][0].channels == 1 else img)
    return out  # type: ignore[return-value]


def decode(data: bytes) -> np.ndarray:
    """Decode one ``.imp`` artifact to the uint8 (H, W, C) image the encoder described."""
    return decode_batch([data])[0]

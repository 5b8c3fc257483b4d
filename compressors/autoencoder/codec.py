"""The ``autoencoder`` codec: uint8 image in, ``.imp`` bytes out, and back.

Pure compute: models come from the in-process store (:mod:`.store`), never from files
the caller names. Any H and W (edge-replicated to a multiple of 64, cropped back);
1-channel images go through the network as 3 equal channels and come back with 1.

The float transforms (``g_a``, ``h_a``, ``g_s``) may run in any precision (``autocast``)
and thread count; everything that drives the entropy coder is integer
(:mod:`.entropy`), so any decoder reads exactly the latent the encoder wrote.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import numpy as np
import torch

from . import container
from .entropy import Y_RANGE, Latent, z_symbols
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
    # channels_last: the layout the model is kept in for inference (see LoadedModel)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def _precision(autocast: torch.dtype | None):
    """Run float transforms under CPU autocast to ``autocast`` (e.g. ``torch.bfloat16``), or as is."""
    return torch.autocast("cpu", dtype=autocast) if autocast is not None else nullcontext()


def analyse(images: Sequence[np.ndarray], *, quality: int, model: str | None = None,
            autocast: torch.dtype | None = None) -> tuple[LoadedModel, list[Latent]]:
    """The encoder's half: images of one shape -> their quantised latents (one network pass)."""
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"encode_batch needs images of one shape, got {sorted(shapes)}")
    lm = _resolve(model)
    if not 1 <= int(quality) <= lm.qualities:
        raise ValueError(f"autoencoder: quality={quality} is outside [1, {lm.qualities}] for model {lm.model_id}")
    h, w, _ = images[0].shape
    if h * w > container.MAX_PIXELS:
        raise ValueError(f"autoencoder: {h}x{w} pixels is above the limit of {container.MAX_PIXELS}")
    net = lm.model
    q = torch.full((len(images),), int(quality) - 1, dtype=torch.long)
    with torch.inference_mode():
        gain, _ = net.gains(q)
        with _precision(autocast):
            y = net.g_a(_to_tensor(images)).float() * gain
            z = net.h_a(y).float()
    return lm, lm.tables.latents(z_symbols(z.numpy()), y.numpy())


def encode_batch(images: Sequence[np.ndarray], *, quality: int, model: str | None = None,
                 autocast: torch.dtype | None = None) -> list[bytes]:
    """Encode images of one shape in one network pass; one artifact per image.

    ``autocast``: run ``g_a`` and ``h_a`` under CPU autocast to this dtype (e.g.
    ``torch.bfloat16``); the artifact decodes anywhere either way.
    """
    if not images:
        return []
    lm, latents = analyse(images, quality=quality, model=model, autocast=autocast)
    h, w, c = images[0].shape
    pb, pr = container.padding_for(h, w)
    return [container.pack(container.Header(lm.model_id, h, w, c, int(quality), pb, pr,
                                            latent_checksum=lat.checksum()), lm.tables.encode(lat))
            for lat in latents]


def encode_version1(image: np.ndarray, *, quality: int, model: str | None = None) -> bytes:
    """The artifact the version-1 encoder wrote (float64 ``h_s``, constriction's
    ``QuantizedGaussian``): for side-by-side benchmarks and tests; :func:`encode` writes version 2."""
    lm = _resolve(model)
    if not 1 <= int(quality) <= lm.qualities:
        raise ValueError(f"autoencoder: quality={quality} is outside [1, {lm.qualities}] for model {lm.model_id}")
    with torch.inference_mode():
        gain, _ = lm.model.gains(torch.tensor([int(quality) - 1]))
        y = lm.model.g_a(_to_tensor([image])) * gain
        z = lm.model.h_a(y)
    z_sym = torch.clamp(torch.round(z), -Z_TAIL, Z_TAIL).numpy().astype(np.int32)
    idx, means = lm.legacy_tables.y_params(z_sym)
    y_sym = np.clip(np.round(y.numpy().astype(np.float64) - means), -Y_RANGE, Y_RANGE).astype(np.int32)
    h, w, c = image.shape
    pb, pr = container.padding_for(h, w)
    return container.pack(container.Header(lm.model_id, h, w, c, int(quality), pb, pr, version=1),
                          lm.legacy_tables.encode(z_sym[0], y_sym[0], idx[0]))


def encoder_autocast() -> torch.dtype | None:
    """bfloat16 for the analysis transforms where the CPU has AMX-BF16, else None (float32).

    Measured on Kodak (8 image/quality pairs, Intel Xeon AMX-BF16, one thread): encode CPU
    348 -> 177 ms per image, artifacts +0.1 % bytes and +0.01 dB PSNR (the decoder reads
    the latent exactly either way, so the choice never affects decodability). Not on
    AVX2-only CPUs, where bf16 convolutions are emulated and many times slower.
    """
    from compressors.hardware import cpu_flags  # noqa: PLC0415

    return torch.bfloat16 if "amx_bf16" in cpu_flags() else None


def encode(image: np.ndarray, *, quality: int, model: str | None = None) -> bytes:
    """Encode one uint8 (H, W, C) image at ``quality`` (1 = smallest) with model id ``model``."""
    return encode_batch([image], quality=quality, model=model, autocast=encoder_autocast())[0]


def _model_for(header: container.Header) -> LoadedModel:
    lm = get_model(header.model_id)  # raises ValueError on an unknown model id, before any allocation
    if not 1 <= header.quality <= lm.qualities:
        raise ValueError(f"autoencoder artifact quality {header.quality} is not a level of model {header.model_id}")
    return lm


def _z_shape(lm: LoadedModel, header: container.Header) -> tuple[int, int, int]:
    hp, wp = header.height + header.pad_bottom, header.width + header.pad_right
    return lm.model.N, hp // 64, wp // 64


def _read_latent(lm: LoadedModel, header: container.Header, payload: bytes) -> Latent:
    latent = lm.tables.decode(payload, _z_shape(lm, header))
    if latent.checksum() != header.latent_checksum:
        raise ValueError(
            f"autoencoder artifact decodes to another latent than its encoder wrote (latent checksum "
            f"mismatch, model {header.model_id}): this decoder derived other entropy-coding tables, or the "
            "payload was altered; no image is returned")
    return latent


def decode_latent(data: bytes) -> tuple[container.Header, Latent]:
    """Parse a version-2 artifact to the latent its encoder wrote, checksum verified."""
    header, payload = container.unpack(bytes(data))
    if header.version < 2:
        raise ValueError(f"autoencoder artifact version {header.version} carries no integer latent")
    return header, _read_latent(_model_for(header), header, payload)


SCALE = 16  # pixels per latent element along each axis (four stride-2 transposed convolutions)
TILE = 64  # latent elements per tile side: 1024 x 1024 pixels
HALO = 3  # latent elements of context around a tile (g_s's reach is under 2: exact pixels)


def synthesize(g_s, y: torch.Tensor, h: int, w: int, tile: int = TILE, halo: int = HALO) -> np.ndarray:
    """``g_s(y)`` as uint8 pixels (N, h, w, 3), tile by tile.

    A latent larger than one tile is synthesised in tiles of ``tile`` elements, each with
    ``halo`` elements of context on every side; each output pixel depends only on latent
    elements within 2 of its own, so the tiles' pixels are the whole image's (up to float
    summation order). The float feature maps (96 channels at half resolution: ~90 bytes per
    pixel) then exist for one tile at a time, so decoding a huge artifact holds a bounded
    amount beyond the image and its latent, and the pixels go straight into the output.
    """
    n, _, yh, yw = y.shape
    out = np.empty((n, h, w, 3), np.uint8)
    for i0 in range(0, yh, tile):
        for j0 in range(0, yw, tile):
            i1, j1 = min(i0 + tile, yh), min(j0 + tile, yw)
            rows, cols = min(i1 * SCALE, h) - i0 * SCALE, min(j1 * SCALE, w) - j0 * SCALE
            if rows <= 0 or cols <= 0:  # a tile of padding only
                continue
            a0, b0 = max(i0 - halo, 0), max(j0 - halo, 0)
            a1, b1 = min(i1 + halo, yh), min(j1 + halo, yw)
            x = g_s(y[:, :, a0:a1, b0:b1].contiguous(memory_format=torch.channels_last)).float()
            r0, c0 = (i0 - a0) * SCALE, (j0 - b0) * SCALE
            x = x[:, :, r0:r0 + rows, c0:c0 + cols]
            out[:, i0 * SCALE:i0 * SCALE + rows, j0 * SCALE:j0 * SCALE + cols] = (
                x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return out


def decode_batch(datas: Sequence[bytes], *, autocast: torch.dtype | None = None) -> list[np.ndarray]:
    """Decode artifacts; those sharing model and shape go through ``g_s`` together.

    ``autocast``: run ``g_s`` under CPU autocast to this dtype (pixels may differ slightly).
    """
    parsed = [container.unpack(bytes(d)) for d in datas]
    out: list[np.ndarray | None] = [None] * len(parsed)
    groups: dict[tuple, list[int]] = {}
    for i, (hd, _) in enumerate(parsed):
        groups.setdefault((hd.model_id, hd.height, hd.width), []).append(i)
    for (mid, h, w), members in groups.items():
        lm = get_model(mid)
        y_hats = None  # float32 (B, M, h, w), filled one artifact at a time (its latent freed after)
        for k, i in enumerate(members):
            header, payload = parsed[i]
            _model_for(header)
            if header.version >= 2:
                latent = _read_latent(lm, header, payload)
                if y_hats is None:
                    y_hats = np.empty((len(members), *latent.y.shape), np.float32)
                latent.y_hat_into(y_hats[k])
                del latent
            else:
                y_hat = lm.legacy_tables.decode_y_hat(payload, _z_shape(lm, header))
                if y_hats is None:
                    y_hats = np.empty((len(members), *y_hat.shape), np.float32)
                y_hats[k] = y_hat
                del y_hat
        q = torch.tensor([parsed[i][0].quality - 1 for i in members])
        with torch.inference_mode():
            _, inv_gain = lm.model.gains(q)
            y_hat = torch.from_numpy(y_hats).mul_(inv_gain)
            del y_hats
            with _precision(autocast):
                pix = synthesize(lm.model.g_s, y_hat, h, w)
        for k, i in enumerate(members):
            img = pix[k]
            out[i] = np.ascontiguousarray(img[..., :1] if parsed[i][0].channels == 1 else img)
    return out  # type: ignore[return-value]


def decode(data: bytes) -> np.ndarray:
    """Decode one ``.imp`` artifact to the uint8 (H, W, C) image the encoder described."""
    return decode_batch([data])[0]

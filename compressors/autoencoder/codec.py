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

from ..hardware import one_thread
from ..rowstream import Geometry, Layer, Rows, column_strips
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
STRIP = 64  # latent columns per strip of the synthesis: 1024 pixels
BAND_BYTES = 1 << 19  # float bytes of a band of one layer (its output rows and the input rows they read)


def _layers(g_s) -> list[tuple[object, list]]:
    """``g_s`` as (convolution, the per-pixel modules after it) pairs (IGDN acts on each pixel alone)."""
    from torch import nn  # noqa: PLC0415

    layers: list[tuple[object, list]] = []
    for m in g_s:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            layers.append((m, []))
        elif layers and not any(isinstance(c, (nn.Conv2d, nn.ConvTranspose2d)) for c in m.modules()):
            layers[-1][1].append(m)
        else:
            raise ValueError(f"synthesize: cannot stream {type(m).__name__} in g_s")
    return layers


def _band_of(conv, post):
    """The layer run on a band of input rows, padded along the rows to give exactly the wanted rows."""
    import torch.nn.functional as F  # noqa: PLC0415

    def run(x: torch.Tensor, pad: int, out_pad: int) -> torch.Tensor:
        if isinstance(conv, torch.nn.ConvTranspose2d):
            x = F.conv_transpose2d(x, conv.weight, conv.bias, conv.stride, (pad, conv.padding[1]),
                                   (out_pad, conv.output_padding[1]))
        else:
            x = F.conv2d(x, conv.weight, conv.bias, conv.stride, (pad, conv.padding[1]))
        for m in post:
            x = m(x)
        return x
    return run


def _even(rows: int) -> int:
    """A band of at least 2 rows, even: bands then start on even rows, so every band of a
    stride-2 layer has the same padding and shapes."""
    return max(2, rows - rows % 2)


def synthesize(g_s, y: torch.Tensor, h: int, w: int, *, out: np.ndarray | None = None, strip: int = STRIP,
               band_bytes: int = BAND_BYTES) -> np.ndarray:
    """``g_s(y)`` as uint8 pixels (N, h, w, C) (C = 3, or ``out``'s channels: the first C of g_s's).

    Layer by layer over bands of rows (:mod:`compressors.rowstream`): each layer of ``g_s``
    holds a few of its output rows (about ``band_bytes``), computed from exactly the rows of
    the layer before that they read, and the last layer's rows go straight into ``out``. The
    columns go in strips of ``strip`` latent elements (1024 pixels), each with the latent
    columns its pixels read (1 left, 2 right), so the feature maps held are bounded however
    large the image: a few MB, not ~90 bytes a pixel. Each value is a sum of the same terms
    as in ``g_s`` on the whole latent; oneDNN may group a sum differently for another band
    shape, which moved 1 sample by 1 level in a 80 x 130 image (none in the 1024- and
    2048-pixel artifacts measured: tests/test_autoencoder.py, README). Rows and columns of
    padding (beyond ``h``, ``w``) are not synthesised. One torch thread: on a busy 2-core
    machine two threads made a 1024-px decode 61 s instead of 6 s (each small band's
    operations wait for the other thread); one thread is as fast as the whole-image ``g_s``.
    """
    with one_thread():  # thousands of small bands: a second intra-op thread only adds barriers
        return _synthesize(g_s, y, h, w, out, strip, band_bytes)


def _synthesize(g_s, y: torch.Tensor, h: int, w: int, out: np.ndarray | None, strip: int,
                band_bytes: int) -> np.ndarray:
    n, _, yh, yw = y.shape
    out = np.empty((n, h, w, 3), np.uint8) if out is None else out
    layers = _layers(g_s)
    rows_g = [Geometry.of(conv, 0) for conv, _ in layers]
    cols_g = [Geometry.of(conv, 1) for conv, _ in layers]
    if not all(g.transposed for g in cols_g):
        raise ValueError("synthesize: g_s must be transposed convolutions and per-pixel modules")
    channels = out.shape[3]
    for k in range(n):
        for st in column_strips(cols_g, yw, w, strip * SCALE):  # rows and columns of padding: never made
            src = Rows(y[k:k + 1, :, :, st.a:st.b], prepare=lambda v: v.contiguous(memory_format=torch.channels_last))
            height, width = yh, st.b - st.a
            for (conv, post), rg, cg in zip(layers, rows_g, cols_g):
                height, width = rg.out_size(height), cg.out_size(width)
                # a band's bytes: its output rows and the input rows they read (a stride-s layer)
                per_row = 4 * width * max(conv.out_channels, conv.in_channels // (rg.s * cg.s))
                src = Layer(src, rg, _band_of(conv, post), height, _even(band_bytes // per_row))
            for r0 in range(0, h, src.band_rows):  # the last layer's bands, as they come
                r1 = min(r0 + src.band_rows, h)
                x = src.rows(r0, r1)[:, :channels, :, st.c0 - st.origin:st.c1 - st.origin].float().clamp(0, 1)
                out[k, r0:r1, st.c0:st.c1] = x.mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()[0]
    return out


def decode_batch(datas: Sequence[bytes], *, autocast: torch.dtype | None = None) -> list[np.ndarray]:
    """Decode artifacts; each is synthesised into its own output array.

    ``autocast``: run ``g_s`` under CPU autocast to this dtype (pixels may differ slightly).
    """
    parsed = [container.unpack(bytes(d)) for d in datas]
    out: list[np.ndarray | None] = [None] * len(parsed)
    for i, (header, payload) in enumerate(parsed):
        lm = _model_for(header)
        if header.version >= 2:
            latent = _read_latent(lm, header, payload)
            y_hat = latent.y_hat_in_place()  # float32 in the symbols' own memory
            del latent
        else:
            y_hat = lm.legacy_tables.decode_y_hat(payload, _z_shape(lm, header)).astype(np.float32)
        image = np.empty((header.height, header.width, header.channels), np.uint8)
        with torch.inference_mode():
            _, inv_gain = lm.model.gains(torch.tensor([header.quality - 1]))
            y = torch.from_numpy(y_hat[None]).mul_(inv_gain)
            del y_hat
            with _precision(autocast):
                synthesize(lm.model.g_s, y, header.height, header.width, out=image[None])
        out[i] = image
    return out  # type: ignore[return-value]


def decode(data: bytes) -> np.ndarray:
    """Decode one ``.imp`` artifact to the uint8 (H, W, C) image the encoder described."""
    return decode_batch([data])[0]

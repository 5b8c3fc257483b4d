"""What platform-independent entropy parameters cost, and the hazard they remove (issue 14).

Side by side in one process on Kodak, per image and autoencoder quality:

* container version 1 (float64 ``h_s``, scales snapped in float, constriction's
  ``QuantizedGaussian``) against version 2 (integer ``h_s``, integer tables, latent
  checksum): bytes, PSNR, encode and decode ms; BD-rate of version 2 against version 1;
* the hazard version 1 carried: how many ``y`` elements pick another scale table when the
  float ``h_s`` runs in float32 or bf16 (what a GPU, another build or precision computes)
  instead of float64; version 2's integer ``h_s`` has one answer by construction;
* cross-configuration decoding of the version-2 artifacts at the lowest and highest
  quality: torch on 1 thread instead of 2, ``g_s`` under bf16 autocast: the latent
  (checksum verified) and the pixel differences.

    python bench/determinism.py --out bench/out            # all 24 images, ~10 min
    python bench/determinism.py --limit 4 --qualities 1,6  # a quick look

Prints a table; writes ``determinism.csv`` (per image and quality) and
``determinism_summary.csv`` into ``--out``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rd_kodak import SHARED, bd_rate, load_kodak  # noqa: E402

from compressors.metrics import psnr  # noqa: E402


CROSS = ("one_thread_max_levels", "bf16_gs_max_levels", "bf16_gs_psnr_vs_float32")  # lowest/highest quality only


def timed(fn, *args, **kwargs):
    """``(result, wall ms, CPU ms)``: CPU time (all threads) is less sensitive to a shared machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kodak", type=Path, default=SHARED / "data" / "kodak")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--model", default="", help="autoencoder model id (default: the shipped default)")
    p.add_argument("--qualities", default="", help="comma-separated (default: every level)")
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the reference configuration")
    a = p.parse_args(argv)

    import torch

    import compressors.autoencoder as ae
    from compressors.autoencoder import codec
    from compressors.hardware import cpu_description

    torch.set_num_threads(a.threads)
    mid = a.model or ae.default_model_id()
    lm = ae.get_model(mid)
    qualities = [int(q) for q in a.qualities.split(",")] if a.qualities else list(range(1, lm.qualities + 1))
    images = load_kodak(a.kodak, a.limit)
    print(f"{len(images)} Kodak images; model {mid}; qualities {qualities}; torch threads {a.threads}; "
          f"{cpu_description()}", flush=True)
    ae.decode(ae.encode(images[0][1][:64, :64], quality=1, model=mid))  # warm up both paths
    ae.decode(codec.encode_version1(images[0][1][:64, :64], quality=1, model=mid))

    rows = []
    for name, img in images:
        pixels = img.shape[0] * img.shape[1]
        for q in qualities:
            v1, enc1, cenc1 = timed(codec.encode_version1, img, quality=q, model=mid)
            v2, enc2, cenc2 = timed(ae.encode, img, quality=q, model=mid)
            rec1, dec1, cdec1 = timed(ae.decode, v1)
            rec2, dec2, cdec2 = timed(ae.decode, v2)
            _, lat = codec.decode_latent(v2)
            # The hazard of a float parameter path: indices from float32 / bf16 h_s vs float64.
            z = lat.z[None]
            idx64, _ = lm.legacy_tables.y_params(z)
            with torch.inference_mode():
                f32 = lm.model.h_s(torch.from_numpy(z.astype(np.float32))).numpy()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    bf = lm.model.h_s(torch.from_numpy(z.astype(np.float32))).float().numpy()
            table = lm.legacy_tables.scales[:-1]
            m = f32.shape[1] // 2
            flips32 = int(np.sum(np.searchsorted(table, f32[:, :m], side="left") != idx64))
            flips16 = int(np.sum(np.searchsorted(table, bf[:, :m], side="left") != idx64))
            agree = float(np.mean(idx64[0] == lat.index))
            # Cross-configuration decoding of the version-2 artifact (lowest and highest quality).
            cross = q in (qualities[0], qualities[-1])
            one = low = rec2
            if cross:
                torch.set_num_threads(1)
                one = ae.decode(v2)
                torch.set_num_threads(a.threads)
                low = ae.decode_batch([v2], autocast=torch.bfloat16)[0]
            rows.append({
                "image": name, "quality": q,
                "v1_bpp": len(v1) * 8 / pixels, "v2_bpp": len(v2) * 8 / pixels,
                "v1_psnr": psnr(img, rec1), "v2_psnr": psnr(img, rec2),
                "v1_encode_ms": enc1, "v2_encode_ms": enc2, "v1_decode_ms": dec1, "v2_decode_ms": dec2,
                "v1_encode_cpu_ms": cenc1, "v2_encode_cpu_ms": cenc2, "v1_decode_cpu_ms": cdec1,
                "v2_decode_cpu_ms": cdec2,
                "y_elements": int(lat.index.size), "float32_index_flips": flips32, "bf16_index_flips": flips16,
                "int_vs_float64_index_agreement": agree,
                "one_thread_max_levels": int(np.abs(one.astype(int) - rec2).max()) if cross else "",
                "bf16_gs_max_levels": int(np.abs(low.astype(int) - rec2).max()) if cross else "",
                "bf16_gs_psnr_vs_float32": psnr(rec2, low) if cross else "",
            })
            r = rows[-1]
            print(f"  {name} q{q}: bpp {r['v1_bpp']:.3f} -> {r['v2_bpp']:.3f}, PSNR {r['v1_psnr']:.2f} -> "
                  f"{r['v2_psnr']:.2f}, enc {enc1:.0f}/{enc2:.0f} ms, dec {dec1:.0f}/{dec2:.0f} ms, "
                  f"float32 flips {flips32}, bf16 flips {flips16}", flush=True)

    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "determinism.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in r.items()})

    def mean(key, q=None):
        return float(np.mean([r[key] for r in rows if q is None or r["quality"] == q]))

    print(f"\nmeans over {len(images)} images ({cpu_description()}; machine shared with other work):")
    print(f"{'q':>3}{'v1 bpp':>9}{'v2 bpp':>9}{'v1 PSNR':>9}{'v2 PSNR':>9}{'v1 enc':>8}{'v2 enc':>8}"
          f"{'v1 dec':>8}{'v2 dec':>8}{'f32 flips':>11}{'bf16 flips':>11}")
    summary = []
    for q in qualities:
        s = {k: mean(k, q) for k in rows[0] if k not in ("image", "quality", *CROSS)}
        summary.append({"quality": q, **s})
        print(f"{q:>3}{s['v1_bpp']:>9.4f}{s['v2_bpp']:>9.4f}{s['v1_psnr']:>9.3f}{s['v2_psnr']:>9.3f}"
              f"{s['v1_encode_ms']:>8.0f}{s['v2_encode_ms']:>8.0f}{s['v1_decode_ms']:>8.0f}{s['v2_decode_ms']:>8.0f}"
              f"{s['float32_index_flips']:>11.1f}{s['bf16_index_flips']:>11.1f}")
    bd = bd_rate([(s["v1_bpp"], s["v1_psnr"]) for s in summary], [(s["v2_bpp"], s["v2_psnr"]) for s in summary])
    n_flip32 = sum(r["float32_index_flips"] > 0 for r in rows)
    n_flip16 = sum(r["bf16_index_flips"] > 0 for r in rows)
    print(f"\nBD-rate of version 2 vs version 1: {bd:+.3f} %  (bpp {mean('v2_bpp') / mean('v1_bpp') * 100 - 100:+.3f} %, "
          f"PSNR {mean('v2_psnr') - mean('v1_psnr'):+.4f} dB)")
    for kind in ("", "_cpu"):
        print(f"encode + decode {'CPU' if kind else 'wall'} ms: version 1 "
              f"{mean(f'v1_encode{kind}_ms') + mean(f'v1_decode{kind}_ms'):.0f} (encode "
              f"{mean(f'v1_encode{kind}_ms'):.0f}, decode {mean(f'v1_decode{kind}_ms'):.0f}), version 2 "
              f"{mean(f'v2_encode{kind}_ms') + mean(f'v2_decode{kind}_ms'):.0f} (encode "
              f"{mean(f'v2_encode{kind}_ms'):.0f}, decode {mean(f'v2_decode{kind}_ms'):.0f})")
    print(f"float h_s hazard: {n_flip32}/{len(rows)} artifacts have a y element whose table differs between "
          f"float32 and float64 h_s, {n_flip16}/{len(rows)} between bf16 and float64; integer h_s: one answer")
    print(f"integer vs float64 h_s: {mean('int_vs_float64_index_agreement') * 100:.3f} % of the scale indices agree")
    crossed = [r for r in rows if r["one_thread_max_levels"] != ""]
    print(f"cross-decode of version 2: latents identical in all {len(rows)} (checksums verified); of {len(crossed)} "
          f"decoded again, 1 thread: max {max(r['one_thread_max_levels'] for r in crossed)} level(s); bf16 g_s: "
          f"max {max(r['bf16_gs_max_levels'] for r in crossed)} levels, PSNR vs float32 >= "
          f"{min(r['bf16_gs_psnr_vs_float32'] for r in crossed):.1f} dB")
    with open(a.out / "determinism_summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        for s in summary:
            w.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in s.items()})
        f.write(f"# bd_rate_v2_vs_v1_pct,{bd:.4f}\n")
    print(f"wrote {a.out / 'determinism.csv'}, {a.out / 'determinism_summary.csv'}")


if __name__ == "__main__":
    main()

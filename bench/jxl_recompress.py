"""Exact recompression of a mixed bucket: `--codec jxl --lossless` against libjxl's own transcoding.

The bucket (built in a temporary folder, nothing of it is kept):

- ``bsds``: the BSDS500 JPEGs of ../shared/data/train (481x321 camera-ish JPEGs, q95 4:2:0);
- ``camera``: 1-MP JPEGs made with Pillow at typical camera settings from the Sun-Hays80
  PNGs of ../shared/data/train (q92, 4:2:0, standard Huffman tables, an EXIF block);
  half of them again as web exports (q85, progressive, optimised);
- ``other``: Sun-Hays PNGs (lossless route), a grayscale JPEG, a CMYK JPEG, an
  arithmetic-coded JPEG (stored: libjxl cannot transcode them), a truncated JPEG (an error
  row: Pillow cannot decode it, so nothing is compressed, but it has its row).

Kodak is never used. Measured side by side in one run (the machine is shared, so compare
ratios): ``libjxl`` = ``imagecodecs.jpegxl_encode_jpeg`` on every JPEG in a bare loop (the
reference: what libjxl alone gives), then ``jpegxl_decode_jpeg`` (the restore);
``loop`` = ``prepare_run`` + ``compress_shard`` per class in this process (one core: read,
decode for the report's pixels, transcode, restore and compare, SHA-256, write artifact and
report); ``flow`` = ``compress_collection`` (Prefect + Dask LocalCluster, one worker process
per core) on the whole bucket; then ``decompress_collection`` gives every file back and
each one is compared with the bucket.

    python bench/jxl_recompress.py --out bench/out            # ~10 min on 2 shared cores

Writes ``jxl_recompress.csv`` (one row per file) and ``jxl_recompress.md`` (the tables).
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from compressors import get_codec  # noqa: E402
from compressors.hardware import cpu_description  # noqa: E402
from compressors.imageio import decode_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "train"
MP = 1_000_000


def _jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def _camera_exif(i: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "imgpress", f"Bench Camera {i % 3}"
    exif[0x0132] = f"2024:05:{1 + i % 28:02d} 10:{i % 60:02d}:00"
    exif[0x0112] = 1
    return exif.tobytes()


def build_bucket(root: Path, n_bsds: int, n_camera: int, n_png: int) -> list[tuple[str, str]]:
    """Write the bucket under ``root``; return ``(class, relative path)`` per file."""
    files: list[tuple[str, str]] = []

    def put(kind: str, rel: str, blob: bytes) -> None:
        (root / kind / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / kind / rel).write_bytes(blob)
        files.append((kind, f"{kind}/{rel}"))

    for path in sorted(glob.glob(str(SHARED / "BSDS500" / "*" / "*.jpg")))[:n_bsds]:
        p = Path(path)
        put("bsds", f"{p.parent.name}/{p.name}", p.read_bytes())
    pngs = sorted(glob.glob(str(SHARED / "Sun-Hays80" / "*.png")))
    for i, path in enumerate(pngs[:n_camera]):
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = (MP / (im.width * im.height)) ** 0.5
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        put("camera", f"DCIM/IMG_{i:04d}.JPG", _jpeg(im, quality=92, subsampling="4:2:0", exif=_camera_exif(i)))
        if i % 2 == 0:
            put("camera", f"web/img_{i:04d}.jpg", _jpeg(im, quality=85, progressive=True, optimize=True))
    from test_jxl import ARITHMETIC_JPEG  # 24x16, made once with jpegtran -arithmetic

    for i, path in enumerate(pngs[-n_png:]):
        put("other", f"png/{Path(path).name}", Path(path).read_bytes())
    with Image.open(pngs[0]) as im:
        im = im.convert("RGB")
        put("other", "odd/gray.jpg", _jpeg(im.convert("L"), quality=90))
        put("other", "odd/cmyk.jpg", _jpeg(im.convert("CMYK"), quality=90))
        good = _jpeg(im, quality=90)
        put("other", "odd/truncated.jpg", good[: len(good) // 2])
    put("other", "odd/arithmetic.jpg", ARITHMETIC_JPEG)
    return files


def libjxl_reference(root: Path, files: list[tuple[str, str]]) -> dict[str, dict]:
    """imagecodecs alone, in a bare loop: size and CPU time of transcode and restore per JPEG."""
    import imagecodecs

    out = {}
    for kind, rel in files:
        data = (root / rel).read_bytes()
        if not data.startswith(b"\xff\xd8\xff"):
            continue
        c0 = time.process_time()
        try:
            jxl = imagecodecs.jpegxl_encode_jpeg(data, usecontainer=True, numthreads=1)
        except Exception as exc:  # noqa: BLE001  (libjxl refuses it: a user would keep the JPEG)
            out[rel] = {"libjxl_bytes": len(data), "libjxl_ok": False, "libjxl_error": str(exc)}
            continue
        c1 = time.process_time()
        same = imagecodecs.jpegxl_decode_jpeg(jxl, numthreads=1) == data
        c2 = time.process_time()
        out[rel] = {"libjxl_bytes": len(jxl), "libjxl_ok": True, "libjxl_restored": same,
                    "libjxl_encode_cpu_ms": (c1 - c0) * 1e3, "libjxl_decode_cpu_ms": (c2 - c1) * 1e3}
    return out


def loop_runs(root: Path, dest: str, params: dict) -> dict[str, dict]:
    """``compress_shard`` over each class in this process: wall and CPU seconds."""
    from tasks.plan import prepare_run
    from tasks.shard import compress_shard

    out = {}
    for kind in ("bsds", "camera", "other"):
        w0, c0 = time.perf_counter(), time.process_time()
        plan = prepare_run(str(root / kind), dest, "jxl", params, shard_size=64)
        ok = sum(compress_shard(spec)["ok"] for spec in plan.specs)
        out[kind] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "ok": ok,
                     "images": plan.listed, "run_id": plan.run_id}
    return out


def flow_run(root: Path, dest: str, params: dict, workers: int) -> tuple[float, str, dict]:
    from distributed import LocalCluster

    from compressors import get_codec as codec_named
    from flows.compress import compress_collection
    from flows.params import CompressRequest
    from flows.runner import dask_runner
    from tasks.plan import make_run_id

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.WARNING) as cluster:
        request = CompressRequest(source=str(root), dest=dest, codec="jxl", shard_size=32, **params)
        flow = compress_collection.with_options(task_runner=dask_runner(cluster.scheduler_address))
        flow(CompressRequest(source=str(root / "other" / "odd"), dest=dest + "-warm", codec="jxl", **params))
        t0 = time.perf_counter()
        summary = flow(request)
        wall = time.perf_counter() - t0
    run_id = make_run_id(str(root), "jxl", codec_named("jxl").canonical_params(params))
    return wall, run_id, summary


def decompress_run(source: str, dest: str) -> tuple[float, dict]:
    from flows.decompress import decompress_collection
    from flows.params import DecompressRequest
    from flows.runner import dask_runner

    t0 = time.perf_counter()
    result = decompress_collection.with_options(task_runner=dask_runner(None, 2))(
        DecompressRequest(source=source, dest=dest)
    )
    return time.perf_counter() - t0, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bsds", type=int, default=500, help="BSDS500 JPEGs (all 500 by default)")
    p.add_argument("--camera", type=int, default=80, help="1-MP camera JPEGs made from Sun-Hays PNGs")
    p.add_argument("--png", type=int, default=8, help="Sun-Hays PNGs among them (lossless route)")
    p.add_argument("--effort", type=int, default=7, help="libjxl effort of the lossless route (PNGs)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--no-flow", action="store_true", help="skip the Prefect + Dask runs")
    a = p.parse_args(argv)
    params = get_codec("jxl").canonical_params({"lossless": True, "effort": a.effort})

    from imgpress.prefect_api import prefect_api
    from tasks.report import read_reports

    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, prefect_api(echo=print):
        root = Path(tmp) / "bucket"
        files = build_bucket(root, a.bsds, a.camera, a.png)
        kind_of = {rel: kind for kind, rel in files}
        print(f"bucket: {len(files)} files, {sum((root / r).stat().st_size for _, r in files) / 1e6:.1f} MB; "
              f"CPU: {cpu_description()}", flush=True)
        ref = libjxl_reference(root, files)
        print(f"libjxl reference: {len(ref)} JPEGs", flush=True)
        loops = loop_runs(root, f"{tmp}/loop", params)
        print(f"loop: {loops}", flush=True)
        flow_wall, summary = None, None
        if not a.no_flow:
            flow_wall, _, summary = flow_run(root, f"{tmp}/flow", params, a.workers)
            print(f"flow: {flow_wall:.1f} s, {summary}", flush=True)
        # What the loop wrote is given back by `imgpress decompress` (its flow) and compared with the bucket.
        rows, decompress_wall, decompressed = {}, 0.0, 0
        restored = Path(tmp) / "restored"
        for kind, lp in loops.items():
            rows.update({f"{kind}/{r['source']}": r for r in read_reports(f"{tmp}/loop", run_ids=[lp["run_id"]])
                         .to_pylist()})
            wall, result = decompress_run(f"{tmp}/loop/artifacts/{lp['run_id']}", str(restored / kind))
            decompress_wall += wall
            decompressed += result["ok"]
            print(f"decompress {kind}: {wall:.1f} s, {result['ok']} ok, {result['errors']} errors", flush=True)
        per_file = []
        for kind, rel in files:
            data = (root / rel).read_bytes()
            row = rows.get(rel)
            back = restored / rel
            record = {"class": kind, "file": rel, "source_bytes": len(data), "status": row["status"] if row else "MISSING",
                      "route": row and row["route"], "artifact_bytes": row and row["artifact_bytes"],
                      "exact_in_report": row and row["exact"], "error": row and row["error"], **ref.get(rel, {})}
            if row and row["status"] == "ok":
                if row["route"] == "lossless":
                    record["given_back"] = "pixels equal" if back.exists() and np.array_equal(
                        decode_image(back.read_bytes()).image, decode_image(data).image) else "WRONG"
                else:
                    record["given_back"] = "bytes equal" if back.exists() and back.read_bytes() == data else "WRONG"
            per_file.append(record)
    report = summarize(per_file, loops, flow_wall, decompress_wall, decompressed, a)
    print(report)
    with open(a.out / "jxl_recompress.csv", "w", newline="") as fh:
        keys = sorted({k for r in per_file for k in r})
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(per_file)
    (a.out / "jxl_recompress.md").write_text(report)
    print(f"wrote {a.out / 'jxl_recompress.csv'} and {a.out / 'jxl_recompress.md'}")
    bad = [r for r in per_file if r.get("given_back") == "WRONG" or r["status"] == "MISSING"]
    return 1 if bad else 0


def summarize(per_file, loops, flow_wall, decompress_wall, decompressed, a) -> str:
    jpegs = [r for r in per_file if "libjxl_bytes" in r and r["status"] == "ok"]
    transcoded = [r for r in jpegs if r["route"] == "transcode"]
    ours_all = sum(r["artifact_bytes"] for r in jpegs)
    theirs_all = sum(r["libjxl_bytes"] for r in jpegs)
    src_t = sum(r["source_bytes"] for r in transcoded)
    lines = [
        f"CPU: {cpu_description()}, {os.cpu_count()} cores, shared with a background training job",
        f"command: python bench/jxl_recompress.py --bsds {a.bsds} --camera {a.camera} --png {a.png} "
        f"--effort {a.effort}",
        "",
        "| files | ok | error rows | missing | given back byte-identical | pixel-identical | wrong |",
        "|---|---|---|---|---|---|---|",
        f"| {len(per_file)} | {sum(r['status'] == 'ok' for r in per_file)} | "
        f"{sum(r['status'] == 'error' for r in per_file)} | {sum(r['status'] == 'MISSING' for r in per_file)} | "
        f"{sum(r.get('given_back') == 'bytes equal' for r in per_file)} | "
        f"{sum(r.get('given_back') == 'pixels equal' for r in per_file)} | "
        f"{sum(r.get('given_back') == 'WRONG' for r in per_file)} |",
        "",
        "| JPEGs | count | source MB | imgpress MB | imgpress / source | libjxl MB | imgpress / libjxl |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, group in (("transcoded", transcoded), ("all JPEGs (stored ones at their size)", jpegs)):
        s = sum(r["source_bytes"] for r in group)
        o = sum(r["artifact_bytes"] for r in group)
        t = sum(r["libjxl_bytes"] for r in group)
        lines.append(f"| {label} | {len(group)} | {s / 1e6:.2f} | {o / 1e6:.2f} | {o / s:.4f} | {t / 1e6:.2f} | "
                     f"{o / t:.4f} |")
    for kind in ("bsds", "camera"):
        group = [r for r in transcoded if r["class"] == kind]
        if group:
            s, o = sum(r["source_bytes"] for r in group), sum(r["artifact_bytes"] for r in group)
            lines.append(f"| transcoded, {kind} | {len(group)} | {s / 1e6:.2f} | {o / 1e6:.2f} | {o / s:.4f} | | |")
    lines += ["", "| class | images | MB | how | wall s | CPU s | images/s per core (CPU) | MB/s per core (CPU) |",
              "|---|---|---|---|---|---|---|---|"]
    for kind in ("bsds", "camera", "other"):
        group = [r for r in per_file if r["class"] == kind]
        mb = sum(r["source_bytes"] for r in group) / 1e6
        ref = [r for r in group if r.get("libjxl_ok")]
        if ref:
            cpu = sum(r["libjxl_encode_cpu_ms"] for r in ref) / 1e3
            cpu2 = cpu + sum(r["libjxl_decode_cpu_ms"] for r in ref) / 1e3
            ref_mb = sum(r["source_bytes"] for r in ref) / 1e6
            lines.append(f"| {kind} | {len(ref)} | {ref_mb:.1f} | libjxl transcode only | | {cpu:.1f} | "
                         f"{len(ref) / cpu:.1f} | {ref_mb / cpu:.2f} |")
            lines.append(f"| {kind} | {len(ref)} | {ref_mb:.1f} | libjxl transcode + restore | | {cpu2:.1f} | "
                         f"{len(ref) / cpu2:.1f} | {ref_mb / cpu2:.2f} |")
        lp = loops[kind]
        lines.append(f"| {kind} | {lp['images']} | {mb:.1f} | imgpress loop (compress_shard) | {lp['wall_s']:.1f} | "
                     f"{lp['cpu_s']:.1f} | {lp['images'] / lp['cpu_s']:.1f} | {mb / lp['cpu_s']:.2f} |")
    mb = sum(r["source_bytes"] for r in per_file) / 1e6
    loop_wall = sum(v["wall_s"] for v in loops.values())
    lines += ["", "| how | images | MB | wall s | images/s | MB/s |", "|---|---|---|---|---|---|",
              f"| imgpress loop (compress_shard), one process | {len(per_file)} | {mb:.1f} | {loop_wall:.1f} | "
              f"{len(per_file) / loop_wall:.1f} | {mb / loop_wall:.2f} |"]
    if flow_wall:
        lines.append(f"| imgpress compress flow, {a.workers} Dask workers | {len(per_file)} | {mb:.1f} | "
                     f"{flow_wall:.1f} | {len(per_file) / flow_wall:.1f} | {mb / flow_wall:.2f} |")
    lines.append(f"| imgpress decompress flow (3 runs, 2 workers each) | {decompressed} | | {decompress_wall:.1f} | "
                 f"{decompressed / decompress_wall:.1f} | |")
    lines += ["", f"transcoded JPEGs: imgpress / source = {sum(r['artifact_bytes'] for r in transcoded) / src_t:.4f} "
              f"(criterion <= 0.86); all JPEGs: imgpress / libjxl = {ours_all / theirs_all:.4f} (criterion <= 1.02)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Exact recompression of a mixed bucket (`--codec jxl --lossless`), then `decompress`.

The bucket has the JPEG variety users have (baseline, progressive, optimised, 4:4:4 and
4:2:0, grayscale, CMYK, arithmetic-coded, 12-bit, EXIF and ICC segments, restart markers), PNGs
among them (RGB, gray, palette, transparent, 16-bit), a truncated JPEG, upper-case and
wrong extensions, nested folders. Every file must end up as exactly one row; every JPEG
comes back byte for byte, every other file pixel for pixel or byte for byte; nothing is
missing. The plain functions run here; the Prefect + Dask + S3 path runs in the flow
test at the bottom.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from skimage import data

from compressors import get_codec
from compressors.imageio import decode_image
from tasks.plan import finish_run, prepare_run
from tasks.query import open_reports
from tasks.report import read_reports
from tasks.shard import compress_shard, decompress_context, decompress_shard
from test_jxl import ARITHMETIC_JPEG, ICC, TRANSCODABLE, _exif

PARAMS = get_codec("jxl").canonical_params({"lossless": True, "effort": 2})


def _photo(i: int, h: int = 192, w: int = 256) -> np.ndarray:
    source = (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())[i % 4]
    y, x = (i * 37) % (source.shape[0] - h), (i * 53) % (source.shape[1] - w)
    return np.ascontiguousarray(source[y : y + h, x : x + w])


def _save(image, fmt="JPEG", **options) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def make_bucket(root: Path) -> dict[str, bytes]:
    """Write the mixed bucket under ``root``; return {relative path: bytes}."""
    files: dict[str, bytes] = {}
    for i, (kind, options) in enumerate(sorted(TRANSCODABLE.items())):
        files[f"camera/{i:02d}-{kind.replace(' ', '-')}.jpg"] = _save(_photo(i), **options)
    files["camera/gray.jpeg"] = _save(_photo(3)[:, :, 0], quality=90)
    files["camera/exif-and-icc.JPG"] = _save(_photo(5), quality=93, exif=_exif(), icc_profile=ICC)
    files["print/cmyk.jpg"] = _save(Image.fromarray(_photo(6)).convert("CMYK"), quality=90)
    files["print/arithmetic.jpg"] = ARITHMETIC_JPEG
    files["print/12-bit.jpg"] = bytes(imagecodecs.jpeg8_encode(_photo(14).astype(np.uint16) * 16, bitspersample=12,
                                                              level=90))
    good = _save(_photo(7), quality=85)
    files["broken/truncated.jpg"] = good[: len(good) // 2]
    files["broken/jpeg-named.png"] = _save(_photo(8), quality=88)  # a JPEG with a wrong extension
    files["graphics/rgb.png"] = _save(_photo(9), "PNG")
    files["graphics/gray.png"] = _save(_photo(10)[:, :, 0], "PNG")
    files["graphics/deep/palette.png"] = _save(
        Image.fromarray(_photo(11)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "PNG"
    )
    rgba = np.dstack([_photo(12), np.linspace(0, 255, 256 * 192).reshape(192, 256).astype(np.uint8)])
    files["graphics/transparent.png"] = _save(rgba, "PNG")
    files["graphics/16-bit.png"] = _save(Image.fromarray(_photo(13)[:, :, 0].astype(np.uint16) * 257), "PNG")
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    return files


def run_plain(source: str, dest: str) -> str:
    plan = prepare_run(source, dest, "jxl", PARAMS, shard_size=7)
    finish_run(plan, [compress_shard(spec) for spec in plan.specs])
    return plan.run_id


EXPECTED_ROUTE = {
    "print/cmyk.jpg": "stored",
    "print/arithmetic.jpg": "stored",
    "print/12-bit.jpg": "stored",
    "graphics/transparent.png": "stored",
    "graphics/16-bit.png": "stored",
    "graphics/rgb.png": "lossless",
    "graphics/gray.png": "lossless",
    "graphics/deep/palette.png": "lossless",
}


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    files = make_bucket(root / "bucket")
    run_id = run_plain(str(root / "bucket"), str(root / "out"))
    rows = {r["source"]: r for r in read_reports(str(root / "out"), run_ids=[run_id]).to_pylist()}
    return root, files, run_id, rows


def test_every_file_has_one_row_and_says_which_way_it_went(exact_run):
    _, files, _, rows = exact_run
    assert sorted(rows) == sorted(files)
    for rel, row in rows.items():
        if rel == "broken/truncated.jpg":
            assert row["status"] == "error" and "truncated" in row["error"]
            assert row["source_sha256"] == hashlib.sha256(files[rel]).hexdigest()
            continue
        assert row["status"] == "ok", (rel, row["error"])
        assert row["exact"] is True, rel
        assert row["route"] == EXPECTED_ROUTE.get(rel, "transcode"), (rel, row["decision"])
        assert row["bytes_saved"] == row["source_bytes"] - row["artifact_bytes"]
        assert row["psnr"] == float("inf") and row["ssim"] == pytest.approx(1.0)
        assert row["source_sha256"] == hashlib.sha256(files[rel]).hexdigest()
        if row["route"] == "stored":
            assert row["bytes_saved"] == 0 and row["artifact"].endswith(rel) and "stored_because" in row["decision"]
        else:
            assert row["bytes_saved"] > 0 and row["artifact"].endswith(rel + ".jxl")


def test_the_transcoded_jpegs_are_smaller_by_the_usual_margin(exact_run):
    _, _, _, rows = exact_run
    jpegs = [r for r in rows.values() if r["route"] == "transcode"]
    assert len(jpegs) == len(TRANSCODABLE) + 3
    ratio = sum(r["artifact_bytes"] for r in jpegs) / sum(r["source_bytes"] for r in jpegs)
    assert 0.7 < ratio < 0.95


def test_decompress_gives_back_every_file_byte_for_byte_or_pixel_for_pixel(exact_run):
    root, files, run_id, rows = exact_run
    source = str(root / "out" / "artifacts" / run_id)
    context = decompress_context(source)
    assert context.codec == "jxl" and set(context.checksums) == {r for r in files if r != "broken/truncated.jpg"}
    listed = sorted(p.relative_to(source).as_posix() for p in Path(source).rglob("*") if p.is_file())
    out = root / "restored"
    result = decompress_shard(source, str(out), tuple((rel, 0) for rel in listed), codec=context.codec,
                              checksums=context.for_files((rel, 0) for rel in listed))
    assert result["errors"] == 0 and result["ok"] == len(files) - 1
    for rel, blob in files.items():
        if rel == "broken/truncated.jpg":
            continue
        if rows[rel]["route"] == "lossless":  # pixels: a PNG of exactly the source's pixels
            back = decode_image((out / rel).read_bytes()).image
            assert np.array_equal(back, decode_image(blob).image), rel
        else:  # the file itself, under its own name
            assert (out / rel).read_bytes() == blob, rel
    assert not (out / "camera" / "gray.jpeg.png").exists()


def test_a_restored_file_that_differs_from_the_report_is_an_error_not_a_file(exact_run, tmp_path):
    root, files, run_id, _ = exact_run
    source = str(root / "out" / "artifacts" / run_id)
    context = decompress_context(source)
    wrong = dict(context.checksums, **{"print/cmyk.jpg": "0" * 64, "camera/gray.jpeg": "1" * 64})
    batch = (("print/cmyk.jpg", 0), ("camera/gray.jpeg.jxl", 0), ("graphics/rgb.png.jxl", 0))
    result = decompress_shard(source, str(tmp_path), batch, codec="jxl", checksums=wrong)
    assert result["ok"] == 1 and result["errors"] == 2
    assert all("does not match the SHA-256" in e["error"] for e in result["error_rows"])
    assert not (tmp_path / "print" / "cmyk.jpg").exists() and not (tmp_path / "camera" / "gray.jpeg").exists()


def test_without_the_run_the_extension_decides_and_transcodes_still_come_back(exact_run, tmp_path):
    root, files, run_id, _ = exact_run
    copy = tmp_path / "copied-artifacts"
    import shutil

    shutil.copytree(root / "out" / "artifacts" / run_id, copy)
    context = decompress_context(str(copy))
    assert context.codec is None
    result = decompress_shard(str(copy), str(tmp_path / "out"), (("camera/gray.jpeg.jxl", 0),))
    assert result["ok"] == 1 and (tmp_path / "out" / "camera" / "gray.jpeg").read_bytes() == files["camera/gray.jpeg"]


def test_the_report_summaries_keep_exact_rows_apart(exact_run):
    root, _, run_id, rows = exact_run
    with open_reports(str(root / "out")) as reports:
        (stats,) = [s for s in __import__("tasks.query", fromlist=["codec_stats"]).codec_stats(reports)]
    assert stats["exact"] == len(rows) - 1 and stats["mean_psnr"] is None


# ---------------------------------------------------------------- the commands users type, S3 in and out


def test_cli_compress_report_decompress_on_s3_in_and_out(prefect_server, dask_address, s3_endpoint, s3_bucket,
                                                         tmp_path):
    """`imgpress compress --codec jxl --lossless`, `report`, `decompress` on a real S3 endpoint, Dask, Prefect."""
    import json
    import subprocess
    import sys

    import s3fs

    local = tmp_path / "bucket"
    files = {rel: blob for rel, blob in make_bucket(local).items()
             if rel in ("camera/00-baseline-4:2:0.jpg", "camera/gray.jpeg", "camera/exif-and-icc.JPG",
                        "print/cmyk.jpg", "broken/truncated.jpg", "graphics/deep/palette.png")}
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    for rel, blob in files.items():
        fs.pipe_file(f"{s3_bucket}/in/{rel}", blob)

    def cli(*args):  # the real command in its own process, as a user runs it (PREFECT_API_URL: the test server)
        result = subprocess.run([sys.executable, "-m", "imgpress.cli", *args, "--endpoint-url", s3_endpoint],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        return result

    summary = json.loads(cli("compress", f"{s3_bucket}/in", f"{s3_bucket}/out", "--codec", "jxl", "--lossless",
                             "--effort", "2", "--shard-size", "3", "--dask-address", dask_address, "--json").stdout)
    assert summary["ok"] == 5 and summary["errors"] == 1 and summary["exact"] == 5
    (stats,) = json.loads(cli("report", f"{s3_bucket}/out", "--json").stdout)
    assert stats["exact"] == 5 and stats["mean_psnr"] is None and stats["bytes_saved"] > 0
    assert {r["route"]: r["images"] for r in stats["routes"]} == {"lossless": 1, "stored": 1, "transcode": 3}
    text = cli("report", f"{s3_bucket}/out", "--html", str(tmp_path / "report.html")).stdout
    assert "exact images" in text and "transcode" in text
    assert "Exact images and bytes saved" in (tmp_path / "report.html").read_text()

    artifacts = f"{s3_bucket}/out/artifacts/{summary['run_id']}"
    assert fs.exists(f"{artifacts}/print/cmyk.jpg") and fs.exists(f"{artifacts}/camera/gray.jpeg.jxl")
    result = json.loads(cli("decompress", artifacts, f"{s3_bucket}/restored", "--dask-address", dask_address,
                            "--json").stdout)
    assert result["ok"] == 5 and result["errors"] == 0
    for rel, blob in files.items():
        if rel == "broken/truncated.jpg":
            assert not fs.exists(f"{s3_bucket}/restored/{rel}")
        elif rel.endswith(".png"):
            back = decode_image(fs.cat_file(f"{s3_bucket}/restored/{rel}")).image
            assert np.array_equal(back, decode_image(blob).image)
        else:
            assert fs.cat_file(f"{s3_bucket}/restored/{rel}") == blob, rel

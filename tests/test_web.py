"""`imgpress web` for real: the CLI serves the page on a free port and Debian's chromium uses it.

The browser test uploads an image, changes the codec and quality, compares two settings,
reads the metrics the page shows, downloads the artifact and the decoded PNG, and checks
that the artifact decodes (with the registry's codec) to exactly the pixels the page
measured, with the PSNR/SSIM/bytes it showed. Bad files get a message on the page. The
server runs with its own HOME, TMPDIR and working directory, so the last test can check
that it wrote nothing outside its temporary folder and removed that folder on exit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from _browser import CHROMIUM, CHROMIUM_ARGS
from _subprocesses import tail, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from compressors import CODECS, Codec, Param, get_codec
from compressors.imageio import decode_image
from compressors.metrics import psnr, ssim
from imgpress.web import bind
from imgpress.web.app import (
    TEMP_PREFIX,
    Limits,
    WebError,
    Workspace,
    accept_upload,
    compress_upload,
    create_app,
    error_map,
)

MAX_UPLOAD_MB = 1  # small limits, so the test can cross them cheaply
MAX_MEGAPIXELS = 1


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 320x256 RGBA photo crop (alpha over white is one of the input rules the page applies)."""
    from skimage import data

    rgb = data.astronaut()[40:296, 100:420]
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :24] = np.linspace(0, 255, 24, dtype=np.uint8)[None, :]
    path = tmp_path_factory.mktemp("upload") / "astronaut crop.png"
    path.write_bytes(_png(np.dstack([rgb, alpha])))
    return path


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    """`imgpress web --port 0` in a subprocess with its own HOME, TMPDIR and working directory."""
    root = tmp_path_factory.mktemp("web")
    dirs = {name: root / name for name in ("home", "tmp", "cwd")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]), "PYTHONUNBUFFERED": "1"}
    log = root / "web.log"
    out = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgpress.cli", "web", "--port", "0", "--max-upload-mb", str(MAX_UPLOAD_MB),
         "--max-megapixels", str(MAX_MEGAPIXELS)],
        env=env, cwd=dirs["cwd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = wait_until(lambda: re.search(r"http://127\.0\.0\.1:\d+/", log.read_text()).group(0), 120,
                         "imgpress web to print its URL", log, proc)
        wait_until(lambda: httpx.get(url + "api/health", timeout=2).status_code == 200, 60,
                   "imgpress web to answer", log, proc)
        yield {"url": url, "proc": proc, "log": log, **dirs}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _wait_runs(page, n: int) -> None:
    page.wait_for_function(
        f"() => document.body.dataset.runs === '{n}' && document.body.dataset.busy === 'false'", timeout=60_000
    )


def _metric(page, setting: str, name: str) -> str:
    return page.locator(f"#metrics td[data-setting={setting}][data-metric={name}]").inner_text()


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.]", "", text))


def _download(page, selector: str):
    with page.expect_download() as info:
        page.locator(selector).click()
    d = info.value
    return d.suggested_filename, Path(d.path()).read_bytes()


@pytest.mark.browser
def test_upload_compare_download_in_chromium(web_server, browser, photo, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.goto(web_server["url"])
    page.wait_for_function("() => document.querySelector('#status').textContent === 'ready'")
    # The codec dropdown lists the registry as it is now.
    options = page.locator("#setting-A select[name=codec] option").all_inner_texts()
    assert options == sorted(CODECS)

    page.set_input_files("#files", str(photo))  # uploads, then compresses with the default setting
    _wait_runs(page, 1)
    assert page.locator("#images li").count() == 1
    assert "alpha composited over white" in page.locator("#images li").inner_text()

    page.select_option("#setting-A select[name=codec]", "webp")
    page.fill("#setting-A input[name=quality]", "40")
    page.check("#compare")  # B starts as a copy of A; make it JPEG at a target PSNR
    page.select_option("#setting-B select[name=codec]", "jpeg")
    page.fill("#setting-B input[name=target_psnr]", "36")
    page.click("#run")
    _wait_runs(page, 2)
    assert not page.locator("#message").is_visible(), page.locator("#message").inner_text()

    shown = {s: {m: _metric(page, s, m) for m in ("codec", "params", "decision", "psnr", "ssim", "bpp",
                                                  "artifact_bytes", "compression_ratio", "encode_ms", "decode_ms")}
             for s in ("A", "B")}
    assert shown["A"]["codec"] == "webp" and shown["A"]["params"] == "quality=40"
    # Only what the user set is sent (the form's quality 75 would cap the search): the codec chose the quality.
    assert shown["B"]["codec"] == "jpeg" and shown["B"]["params"] == "target_psnr=36"
    assert re.fullmatch(r"quality=\d+", shown["B"]["decision"]) and _number(shown["B"]["psnr"]) >= 36
    for s in ("A", "B"):
        assert _number(shown[s]["encode_ms"]) > 0 and _number(shown[s]["decode_ms"]) > 0

    # The view: original | A with the split dragged to 30 %, then 400 % zoom, then A's error map.
    page.wait_for_function("() => document.querySelector('#img-right').naturalWidth > 0")
    box = page.locator("#viewer").bounding_box()
    split = page.locator("#split .grip").bounding_box()
    page.mouse.move(split["x"] + split["width"] / 2, split["y"] + split["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.3 * box["width"], split["y"], steps=5)
    page.mouse.up()
    assert 25 <= int(page.locator("#split").get_attribute("aria-valuenow")) <= 35
    assert page.locator("#left").input_value() == "original" and page.locator("#right").input_value() == "A"
    clip = page.locator("#img-right").evaluate("e => e.style.clipPath")
    assert re.fullmatch(r"inset\(0px 0px 0px [1-9][0-9.]*px\)", clip), clip
    page.screenshot(path=str(tmp_path / "web-split.png"))
    page.select_option("#zoom", "4")
    assert page.locator("#stage").evaluate("e => e.style.width") == "1280px"
    page.screenshot(path=str(tmp_path / "web-zoom.png"))
    page.select_option("#zoom", "fit")
    page.select_option("#right", "errA")
    assert page.locator("#legend").is_visible()
    page.screenshot(path=str(tmp_path / "web-error-map.png"), full_page=True)

    # Downloads: the artifact decodes, with the registry's codec, to the decoded PNG's pixels,
    # and those pixels give the metrics the page showed against the pipeline's input pixels.
    reference = decode_image(photo.read_bytes()).image
    for s, codec_name, ext in (("A", "webp", ".webp"), ("B", "jpeg", ".jpg")):
        name, artifact = _download(page, f"#metrics td[data-setting={s}] a[data-download=artifact]")
        assert name == photo.name + ext
        decoded = get_codec(codec_name).decode(artifact)
        png_name, png = _download(page, f"#metrics td[data-setting={s}] a[data-download=decoded]")
        assert png_name == photo.name + ext + ".png"
        assert np.array_equal(decode_image(png).image.reshape(decoded.shape), decoded)
        h, w, _ = decoded.shape
        assert _number(shown[s]["artifact_bytes"]) == len(artifact)
        assert abs(_number(shown[s]["bpp"]) - len(artifact) * 8 / (w * h)) <= 0.0005
        assert abs(_number(shown[s]["compression_ratio"]) - len(photo.read_bytes()) / len(artifact)) <= 0.005
        assert abs(_number(shown[s]["psnr"]) - psnr(reference, decoded)) <= 0.005
        assert abs(_number(shown[s]["ssim"]) - ssim(reference, decoded)) <= 0.00005
    page.close()


@pytest.mark.browser
def test_a_post_filter_is_part_of_a_setting_and_its_output_is_what_is_measured(web_server, browser, photo):
    """Setting B = setting A plus the shipped JPEG post-filter: the page shows the filter, and
    B's decoded PNG is the filter's output on the artifact's pixels, with the metrics shown."""
    from compressors import postfilter

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.goto(web_server["url"])
    page.wait_for_function("() => document.querySelector('#status').textContent === 'ready'")
    filters = page.locator("#setting-A select[name=postfilter] option").all_inner_texts()
    assert filters[0] == "none" and any(f.startswith("jpeg (restores jpeg output") for f in filters[1:])
    page.select_option("#setting-A select[name=codec]", "jpeg")
    page.fill("#setting-A input[name=quality]", "30")
    page.check("#compare")
    page.select_option("#setting-B select[name=postfilter]", "jpeg")
    page.set_input_files("#files", str(photo))
    _wait_runs(page, 1)
    assert not page.locator("#message").is_visible(), page.locator("#message").inner_text()
    assert _metric(page, "A", "postfilter") == "none"
    assert re.fullmatch(r"jpeg@[0-9a-f]{16} \([0-9.,]+ ms\)", _metric(page, "B", "postfilter"))
    assert _metric(page, "A", "artifact_bytes") == _metric(page, "B", "artifact_bytes")  # the same artifact
    _, artifact = _download(page, "#metrics td[data-setting=B] a[data-download=artifact]")
    _, png = _download(page, "#metrics td[data-setting=B] a[data-download=decoded]")
    filtered = postfilter.apply(get_codec("jpeg").decode(artifact), "jpeg")
    assert np.array_equal(decode_image(png).image.reshape(filtered.shape), filtered)
    reference = decode_image(photo.read_bytes()).image
    assert abs(_number(_metric(page, "B", "psnr")) - psnr(reference, filtered)) <= 0.005
    page.close()


def test_an_unknown_post_filter_is_refused_with_the_shipped_names(tmp_path, photo):
    with _served(create_app(temp_root=str(tmp_path))) as client:
        assert [f["name"] for f in client.get("/api/codecs").json()["postfilters"]] == ["jpeg"]
        info = client.post("/api/images", content=photo.read_bytes(), headers={"X-Filename": "p.png"}).json()
        r = client.post(f"/api/images/{info['id']}/compress",
                        json={"codec": "jpeg", "params": {}, "postfilter": "webp"})
        assert r.status_code == 400 and r.json() == {"error": "unknown post-filter 'webp' (shipped: jpeg)"}
        r = client.post(f"/api/images/{info['id']}/compress", json={"codec": "jpeg", "params": {}, "postfilter": 3})
        assert r.status_code == 400


@pytest.mark.browser
def test_bad_files_get_a_message_on_the_page(web_server, browser, photo, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.png").write_text("hello, not an image")
    (bad / "cut.png").write_bytes(photo.read_bytes()[:2000])
    (bad / "huge.png").write_bytes(_png_claiming(4000, 3000))  # 12 Mpx claimed, the server takes 1
    (bad / "big.bin").write_bytes(os.urandom(MAX_UPLOAD_MB * 2**20 + 1))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(web_server["url"])
    page.wait_for_function("() => document.querySelector('#status').textContent === 'ready'")
    # Dropped on the drop zone (a real DataTransfer holding a File, as a desktop drag gives).
    page.locator("#drop").evaluate(
        """(zone) => {
            const data = new DataTransfer();
            data.items.add(new File(["not pixels"], "dropped.png", { type: "image/png" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }"""
    )
    page.get_by_text("dropped.png: not an image").wait_for()
    # Chosen with the file dialog, several at once.
    page.set_input_files("#files", [str(bad / n) for n in ("notes.png", "cut.png", "huge.png", "big.bin")])
    message = page.locator("#message")
    message.locator("p").nth(3).wait_for()
    text = message.inner_text()
    page.screenshot(path=str(tmp_path / "web-bad-files.png"))
    assert "notes.png: not an image" in text
    assert "cut.png: corrupt or truncated image" in text
    assert "huge.png: image header claims 4000x3000 = 12,000,000 pixels, over the limit of 1,000,000" in text
    assert "big.bin: 1,048,577 bytes is over this server's limit of 1,048,576" in text
    assert "Traceback" not in page.content() and page.locator("#images li").count() == 0
    page.close()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its data is a 1x1 image's)."""
    import struct
    import zlib

    small = _png(np.zeros((1, 1), np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return small[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[33:]


def test_the_api_refuses_oversized_bodies_and_unknown_ids_with_messages(web_server):
    url = web_server["url"]
    limit = MAX_UPLOAD_MB * 2**20
    r = httpx.post(url + "api/images", content=b"\0" * (limit + 1), headers={"X-Filename": "x.png"})
    assert r.status_code == 413 and "over this server's limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    r = httpx.post(url + "api/images", content=chunks(), headers={"X-Filename": "stream.png"})
    assert r.status_code == 413 and "upload limit" in r.json()["error"]
    for path in ("api/results/../../../etc/passwd/artifact", "api/results/0123456789abcdef/artifact",
                 "api/images/nope/original.png"):
        r = httpx.get(url + path)
        assert r.status_code == 404 and r.json()["error"], path
    r = httpx.post(url + "api/images/0123456789abcdef/compress", json={"codec": "jpeg"})
    assert r.status_code == 404 and "upload it again" in r.json()["error"]


def _small_files() -> list[bytes]:
    from skimage import data

    img = data.astronaut()[::16, ::16]
    out = []
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_small_files()), cut=st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=6))
def test_any_upload_gets_an_image_or_a_one_line_message(web_server, seed, cut, flips):
    """Truncated and bit-flipped images: 200 with the image, or a 4xx with a short message, never a 500."""
    data = bytearray(seed[: max(cut, 1)])
    for at, xor in flips:
        if at < len(data):
            data[at] ^= xor
    r = httpx.post(web_server["url"] + "api/images", content=bytes(data), headers={"X-Filename": "f.png"}, timeout=60)
    if r.status_code == 200:
        assert r.json()["width"] == 32 and r.json()["height"] == 32
    else:
        assert r.status_code in (400, 415, 422), r.text
        message = r.json()["error"]
        assert message.startswith("f.png: ") and "\n" not in message and "Traceback" not in message


@contextlib.contextmanager
def _served(app):
    """An in-process app on a free loopback port (uvicorn in a thread, lifespan included)."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the in-process server to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_the_form_is_the_registry_at_request_time(tmp_path):
    """A codec registered after the app started appears in the form with its parameters."""
    probe = Codec("zz-probe", ".zz", lambda image, **params: b"x", lambda data: np.zeros((1, 1, 1), np.uint8),
                  {"level": Param(3, 1, 9, "probe level"), "ratio": Param(None, 0.5, 2.0, "probe", kind=float),
                   "mode": Param("fast", help="probe mode", kind=str, choices=("fast", "slow"))})
    with _served(create_app(temp_root=str(tmp_path))) as client:
        before = {c["name"] for c in client.get("/api/codecs").json()["codecs"]}
        CODECS[probe.name] = probe
        try:
            after = {c["name"]: c for c in client.get("/api/codecs").json()["codecs"]}
        finally:
            del CODECS[probe.name]
    assert before == set(CODECS) and set(after) == set(CODECS) | {probe.name}
    assert after[probe.name]["params"] == [
        {"name": "level", "kind": "int", "default": 3, "min": 1, "max": 9, "help": "probe level", "choices": None,
         "keywords": None},
        {"name": "ratio", "kind": "float", "default": None, "min": 0.5, "max": 2.0, "help": "probe", "choices": None,
         "keywords": None},
        {"name": "mode", "kind": "str", "default": "fast", "min": None, "max": None, "help": "probe mode",
         "choices": ["fast", "slow"], "keywords": None},
    ]
    for codec in after.values():
        if codec["name"] in CODECS:
            assert [p["name"] for p in codec["params"]] == list(CODECS[codec["name"]].params)


def test_work_beyond_the_bound_is_refused_as_busy(tmp_path, photo):
    app = create_app(Limits(workers=1, queue=1), temp_root=str(tmp_path))
    with _served(app) as client:
        info = client.post("/api/images", content=photo.read_bytes(), headers={"X-Filename": "p.png"}).json()
        gate = app.state.gate
        with gate.admit(), gate.admit():  # two requests in progress: the server is full
            r = client.post(f"/api/images/{info['id']}/compress", json={"codec": "jpeg", "params": {}})
            assert r.status_code == 503 and "busy" in r.json()["error"]
            r = client.post("/api/images", content=photo.read_bytes(), headers={"X-Filename": "p.png"})
            assert r.status_code == 503
        with pytest.raises(WebError):
            with gate.admit(), gate.admit(), gate.admit():
                pass
        assert gate.admitted == 0
        r = client.post(f"/api/images/{info['id']}/compress", json={"codec": "jpeg", "params": {"quality": 5}})
        assert r.status_code == 200 and r.json()["params"] == {"quality": 5}
        r = client.post(f"/api/images/{info['id']}/compress", json={"codec": "jpeg", "params": {"quality": 0}})
        assert r.status_code == 400 and r.json() == {"error": "jpeg: quality=0 is outside [1, 100]"}
        assert len(list(tmp_path.glob(TEMP_PREFIX + "*"))) == 1
    assert list(tmp_path.iterdir()) == []  # the workspace went with the app


def test_the_workspace_keeps_the_newest_uploads_and_results_and_removes_the_rest(tmp_path, photo):
    ws = Workspace(Limits(keep_images=2, keep_results=3), str(tmp_path))
    try:
        ids = [accept_upload(ws, f"{i}.png", photo.read_bytes())["id"] for i in range(3)]
        with pytest.raises(WebError, match="no longer on the server"):
            ws.upload(ids[0])
        assert sorted(p.name for p in ws.root.iterdir()) == sorted([*ids[1:], "pid"])
        results = [compress_upload(ws, ws.upload(ids[2]), "jpeg", {"quality": q})["id"] for q in (10, 20, 30, 40)]
        with pytest.raises(WebError):
            ws.result(results[0])
        assert sorted(p.name for p in (ws.root / ids[2]).iterdir()) == sorted(
            ["source", "original.png", *results[1:]])
        accept_upload(ws, "3.png", photo.read_bytes())
        accept_upload(ws, "4.png", photo.read_bytes())  # pushes image 2 out, with its results
        with pytest.raises(WebError):
            ws.result(results[-1])
    finally:
        ws.close()
    assert list(tmp_path.iterdir()) == []


def test_a_workspace_left_by_a_killed_server_is_removed_at_the_next_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / (TEMP_PREFIX + "orphan")
    orphan.mkdir()
    (orphan / "pid").write_text(str(dead.pid))
    alive = tmp_path / (TEMP_PREFIX + "alive")
    alive.mkdir()
    (alive / "pid").write_text(str(os.getppid()))  # another live process: its server is running
    ws = Workspace(Limits(), str(tmp_path))
    ws.close()
    assert not orphan.exists() and alive.exists()


def test_error_map_is_black_where_exact_and_white_from_full_scale():
    ref = np.zeros((1, 3, 3), np.uint8)
    dec = np.array([[[0, 0, 0], [0, 16, 0], [0, 0, 200]]], np.uint8)
    out = error_map(ref, dec)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 2].tolist() == [255, 255, 255]
    assert out[0, 1, 0] == 255 and 0 < out[0, 1, 1] < 255


def test_stopping_the_server_removes_every_file_it_wrote(web_server):
    """Last in this module: Ctrl-C ends the server; HOME, TMPDIR and its working directory are left empty."""
    proc = web_server["proc"]
    assert len(list(web_server["tmp"].glob(TEMP_PREFIX + "*"))) == 1  # the uploads above live there
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 0, tail(web_server["log"])
    time.sleep(0.2)
    for name in ("tmp", "home", "cwd"):
        left = [str(p.relative_to(web_server[name])) for p in web_server[name].rglob("*")]
        assert left == [], f"{name}: {left}"

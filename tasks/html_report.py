"""Views of the reports for people: a self-contained HTML report and a run's markdown summary.

The HTML report holds everything inline (plots and thumbnails as base64 PNG), so it can
be mailed, attached to a ticket or opened from object storage without its folder:

- the per-run, per-codec statistics (mean, p50/p90/p99 of bpp, PSNR, SSIM, times);
- rate-distortion: bpp vs PSNR, one point per image and each run's mean, runs of the
  same codec joined into its curve;
- PSNR and SSIM histograms per run;
- the worst images by PSNR, side by side: original | decoded | error map. The original
  is read again from the run's source (manifest ``source`` + row ``source``) and
  normalised as the shard did; the decoded image comes from the artifact itself;
- exact images (PSNR inf, SSIM 1 by definition: the artifact gives back the source, its
  file or every pixel) in a section of their own, per route, with the bytes saved; they
  stay out of the rate-distortion plot, the histograms and the worst images;
- the errors with their messages.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from typing import Iterable

import numpy as np
from PIL import Image

from tasks.formatting import finite, number, params_text, percent
from tasks.layout import html_report_url
from tasks.query import METRICS, SUMMARY_COLUMNS, Reports, codec_stats, error_rows, open_reports, worst_images
from tasks.storage import Storage, join, read_bytes, write_bytes

THUMB_PX = 256
ERROR_GAIN = 4  # |error| x 4 on the error maps: small errors stay visible, large ones saturate


def write_html_report(
    dest: str,
    url: str | None = None,
    storage: Storage = Storage(),
    *,
    run_ids: Iterable[str] | None = None,
    worst: int = 6,
    data: dict | None = None,
) -> str:
    """Render the report of ``dest`` (optionally some runs) and write it to ``url``; return the URL.

    Without ``url`` a single run's report goes next to its manifest.
    """
    run_ids = sorted(set(run_ids)) if run_ids is not None else None
    if url is None:
        if not run_ids or len(run_ids) != 1:
            raise ValueError("give the report's URL, or exactly one run id")
        url = html_report_url(dest, run_ids[0])
    write_bytes(url, render_html(dest, storage, run_ids=run_ids, worst=worst, data=data).encode(), storage)
    return url


def gather(dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None, worst: int = 6) -> dict:
    """Everything a report shows, read from the reports in one pass (stats, points, worst, errors)."""
    with open_reports(dest, storage, run_ids=run_ids, materialize=True, columns=SUMMARY_COLUMNS) as reports:
        return {
            "stats": codec_stats(reports),
            "points": plot_points(reports),
            "worst": worst_images(reports, worst) if worst > 0 else [],
            "errors": error_rows(reports, limit=200),
        }


def plot_points(reports: Reports) -> dict:
    """What the plots draw: bpp, PSNR and SSIM of every ok image that is not exact, as float
    columns, and its run as an index (``run``) into ``runs``, the sorted (codec, params, run_id).

    Numbers only: a string per image (run id, params) cost a 100,000-image run's report ~30 MB
    of Python objects."""
    where = "status = 'ok' AND exact IS NOT TRUE"
    runs = sorted(reports.sql(f"SELECT DISTINCT codec, params, run_id FROM reports WHERE {where}").rows)
    keys = [chr(31).join(part for part in run if part is not None) for run in runs]
    points = _columns(reports.con.execute(
        "SELECT list_position(?::VARCHAR[], concat_ws(chr(31), codec, params, run_id)) - 1 AS run, "
        "bpp, psnr, ssim "
        f"FROM reports WHERE {where}", [keys],
    ).fetchnumpy())
    return {**points, "run": points["run"].astype(np.intp), "runs": runs}


def render_html(
    dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None, worst: int = 6,
    data: dict | None = None,
) -> str:
    """The whole report as one HTML document (``data``: what :func:`gather` read, if already read)."""
    data = data if data is not None else gather(dest, storage, run_ids=run_ids, worst=worst)
    stats, points, worst_rows, errors = data["stats"], data["points"], data["worst"][:worst], data["errors"]
    sections = [
        f"<h1>imgpress report</h1><p class=meta>{_e(dest)} &middot; {len(stats)} run(s) &middot; "
        f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}</p>",
    ]
    if not stats:
        sections.append("<p>No finished reports here yet.</p>")
        return _page(sections)
    sections.append("<h2>Summary</h2>" + _stats_table(stats))
    routes = [r for s in stats for r in s["routes"]]
    if routes:
        sections.append(
            "<h2>Exact images and bytes saved</h2><p class=meta>the artifact gives back the source: "
            "its file byte for byte (transcode, stored) or every pixel (lossless); PSNR inf and SSIM 1 by "
            "definition, so they are left out of the PSNR statistics, plots and worst images</p>"
            + _routes_table(routes)
        )
    if len(points["bpp"]):
        sections.append("<h2>Rate&ndash;distortion</h2>" + _rd_plot(points, stats))
        sections.append("<h2>Distributions</h2>" + _histograms(points))
    if worst_rows:
        sections.append(
            f"<h2>Worst {len(worst_rows)} images by PSNR</h2>"
            f"<p class=meta>original | decoded | error map (|error| &times; {ERROR_GAIN}, inferno)</p>"
            + "".join(_worst_blocks(dest, worst_rows, storage))
        )
    sections.append(
        f"<h2>Errors ({len(errors)})</h2>" + (_errors_table(errors) if errors else "<p>None.</p>")
    )
    return _page(sections)


def publish_run_views(
    dest: str, run_id: str, storage: Storage = Storage(), summary: dict | None = None
) -> tuple[str, str | None]:
    """Write a run's HTML report next to its manifest; return its markdown summary and the URL.

    Best-effort: a run whose images are all coded must not fail because a thumbnail could
    not be drawn or the store hiccuped while the reports were read back; the markdown
    then falls back to the run's ``summary`` counts and says what is missing and why.
    """
    problems, data = [], None
    try:
        data = gather(dest, storage, run_ids=[run_id])  # read once for both views
        html_url = write_html_report(dest, None, storage, run_ids=[run_id], data=data)
    except Exception as exc:  # noqa: BLE001  (reported in the summary instead)
        html_url = None
        problems.append(f"The HTML report could not be written: {type(exc).__name__}: {exc}")
    try:
        markdown = markdown_summary(dest, run_id, storage, html_url=html_url, data=data)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"The reports could not be read back: {type(exc).__name__}: {exc}")
        markdown = f"# imgpress run `{run_id}`\n\nDestination: `{dest}`\n\n" + "".join(
            f"- {k}: {number(v)}\n" for k, v in (summary or {}).items()
        )
    return markdown + "".join(f"\n{_md_cell(p)}\n" for p in problems), html_url


def markdown_summary(
    dest: str, run_id: str, storage: Storage = Storage(), *, html_url: str | None = None, worst: int = 5,
    data: dict | None = None,
) -> str:
    """A run's summary as markdown, for the Prefect run page (a markdown artifact)."""
    data = data if data is not None else gather(dest, storage, run_ids=[run_id], worst=worst)
    stats, worst_rows, errors = data["stats"], data["worst"][:worst], data["errors"][:10]
    lines = [f"# imgpress run `{run_id}`", "", f"Destination: `{dest}`", ""]
    if html_url:
        lines += [f"HTML report (plots, worst images): `{html_url}`", ""]
    for s in stats:
        lines += [
            f"**{s['codec']}** {params_text(s['params'])}: "
            f"{s['ok']} ok, {s['errors']} errors of {s['images']} images",
            "",
            "| metric | mean | p50 | p90 | p99 |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {m} | " + " | ".join(number(s[f"{k}_{m}"]) for k in ("mean", "p50", "p90", "p99")) + " |"
            for m in METRICS
        ]
        lines.append("")
        if s["routes"]:
            lines += [
                f"Exact (PSNR inf, SSIM 1; not in the PSNR statistics): {s['exact']} images, "
                f"{s['bytes_saved']:,} bytes saved",
                "",
                "| route | images | exact | source bytes | artifact bytes | saved |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {r['route'] or '-'} | {r['images']} | {r['exact']} | {r['source_bytes']:,} | "
                f"{r['artifact_bytes']:,} | {percent(r['saved'])} |"
                for r in s["routes"]
            ]
            lines.append("")
    if worst_rows:
        lines += ["## Worst images by PSNR", "", "| source | bpp | PSNR | SSIM |", "|---|---:|---:|---:|"]
        lines += [
            f"| `{r['source']}` | {number(r['bpp'])} | {number(r['psnr'])} | {number(r['ssim'])} |"
            for r in worst_rows
        ]
        lines.append("")
    if errors:
        lines += ["## Errors", "", "| source | error |", "|---|---|"]
        lines += [f"| `{r['source']}` | {_md_cell(r['error'])} |" for r in errors]
    return "\n".join(lines) + "\n"


# ---- plots -----------------------------------------------------------------------------


# Plots are inline SVG written here, not matplotlib figures: a run's report is written at
# the end of every run, and matplotlib's layout and rasterising cost seconds per run
# (measured: 65 % of the report's time), which a 1,000-image JPEG run cannot afford.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # matplotlib's tab10
MAX_DOTS = 4000  # per plot: a 100k-image run still makes a light page (an even sample is drawn)
DASHES = ("", "6,3", "2,2", "8,3,2,3")


def _colors(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


class _Axes:
    """A plot area mapping data to SVG pixels, with ticks, labels and a grid."""

    def __init__(self, x0, y0, w, h, xs, ys, xlabel, ylabel):
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xlim, self.ylim = _limits(xs), _limits(ys)
        self.parts = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
        for v in _ticks(*self.xlim):
            x = self.x(v)
            self.parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" stroke="#ddd"/>'
                              f'<text x="{x:.1f}" y="{y0 + h + 14}" text-anchor="middle">{_tick(v)}</text>')
        for v in _ticks(*self.ylim):
            y = self.y(v)
            self.parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>'
                              f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{_tick(v)}</text>')
        self.parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">{_e(xlabel)}</text>'
                          f'<text transform="translate({x0 - 42},{y0 + h / 2}) rotate(-90)" '
                          f'text-anchor="middle">{_e(ylabel)}</text>')

    def x(self, v):
        lo, hi = self.xlim
        return self.x0 + (v - lo) / (hi - lo) * self.w

    def y(self, v):
        lo, hi = self.ylim
        return self.y0 + self.h - (v - lo) / (hi - lo) * self.h


def _limits(values) -> tuple[float, float]:
    values = [v for v in values if finite(v)]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 0.5)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _tick(v: float) -> str:
    return f"{v:.4g}"


def _svg(width: int, height: int, parts: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img">'
            f"<title>{_e(title)}</title>{''.join(parts)}</svg>")


def _columns(fetched: dict) -> dict[str, np.ndarray]:
    """DuckDB's numpy columns as plain arrays: numbers as float64 (NULL -> NaN), text as objects.

    A run's points stay columns (not a dict per image): 100,000 dicts cost the flow's process
    ~250 MB and seconds to build and walk."""
    out = {}
    for name, col in fetched.items():
        if np.ma.isMaskedArray(col):
            col = col.astype(np.float64).filled(np.nan) if col.dtype.kind in "iuf" else col.filled(None)
        out[name] = col.astype(np.float64) if col.dtype.kind in "iuf" else col
    return out


def _sample(points: dict) -> list[dict]:
    """At most MAX_DOTS points, evenly spread over the rows, as one dict each (bpp, psnr, codec)."""
    n = len(points["bpp"])
    rows = range(n) if n <= MAX_DOTS else np.linspace(0, n - 1, MAX_DOTS).round().astype(int)
    return [{"bpp": points["bpp"][i], "psnr": points["psnr"][i], "codec": points["runs"][points["run"][i]][0]}
            for i in rows]


def _legend(entries: list[tuple[str, str, str]], x: float, y: float) -> list[str]:
    out = []
    for i, (label, color, dash) in enumerate(entries):
        yy = y + 14 * i
        out.append(f'<line x1="{x}" y1="{yy}" x2="{x + 18}" y2="{yy}" stroke="{color}" stroke-width="2" '
                   f'stroke-dasharray="{dash}"/><text x="{x + 22}" y="{yy + 4}">{_e(label)}</text>')
    return out


def _rd_plot(points: dict, stats: list[dict]) -> str:
    """bpp against PSNR: one dot per image (a sample past MAX_DOTS), diamonds for run means."""
    colors = _colors([codec for codec, _, _ in points["runs"]])
    dots = [p for p in _sample(points) if finite(p["psnr"]) and finite(p["bpp"])]
    means = [s for s in stats if s["mean_bpp"] is not None and s["mean_psnr"] is not None
             and finite(s["mean_psnr"]) and s["codec"] in colors]
    ax = _Axes(60, 30, 680, 380, [p["bpp"] for p in dots] + [s["mean_bpp"] for s in means],
               [p["psnr"] for p in dots] + [s["mean_psnr"] for s in means],
               "bits per pixel (artifact bytes x 8 / pixels)", "PSNR (dB, data_range 255)")
    parts = ax.parts
    parts += [f'<circle cx="{ax.x(p["bpp"]):.1f}" cy="{ax.y(p["psnr"]):.1f}" r="2.5" fill="{colors[p["codec"]]}" '
              f'fill-opacity="0.35"/>' for p in dots]
    for codec, color in colors.items():
        mine = sorted((s["mean_bpp"], s["mean_psnr"], s["params"]) for s in means if s["codec"] == codec)
        if len(mine) > 1:
            path = " ".join(f"{ax.x(b):.1f},{ax.y(q):.1f}" for b, q, _ in mine)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for b, q, params in mine:
            x, y = ax.x(b), ax.y(q)
            parts.append(f'<path d="M{x:.1f},{y - 6:.1f} l6,6 l-6,6 l-6,-6 z" fill="{color}" stroke="black"/>'
                         f'<text x="{x + 8:.1f}" y="{y - 6:.1f}" font-size="9">{_e(params_text(params))}</text>')
    parts.append('<text x="400" y="18" text-anchor="middle" font-size="13">'
                 "Rate-distortion: one dot per image, diamonds are run means</text>")
    parts += _legend([(f"{c} (mean of each run)", col, "") for c, col in colors.items()], 560, 340)
    return _svg(760, 460, parts, "bpp vs PSNR")


def _histograms(points: dict) -> str:
    """PSNR and SSIM histograms, one outline per run."""
    runs = points["runs"]
    colors = _colors([codec for codec, _, _ in runs])
    parts, legend = [], []
    for panel, metric in enumerate(("psnr", "ssim")):
        keep = np.isfinite(points[metric])
        values = points[metric][keep]
        if not len(values):
            continue
        bins = np.linspace(values.min(), values.max() + 1e-9, 30)
        counts = {}
        for run, (codec, params, run_id) in enumerate(runs):
            mine = points[metric][keep & (points["run"] == run)]
            counts[run_id] = np.histogram(mine, bins=bins)[0]
        top = max(int(c.max()) for c in counts.values()) if counts else 1
        unit = " dB" if metric == "psnr" else ""
        ax = _Axes(60 + panel * 470, 20, 400, 260, [bins[0], bins[-1]], [0, top * 1.05],
                   f"{metric.upper()}{unit}", "images")
        parts += ax.parts
        for i, (codec, params, run_id) in enumerate(runs):
            c = counts[run_id]
            path = [f"{ax.x(bins[0]):.1f},{ax.y(0):.1f}"]
            for j, n in enumerate(c):
                path += [f"{ax.x(bins[j]):.1f},{ax.y(n):.1f}", f"{ax.x(bins[j + 1]):.1f},{ax.y(n):.1f}"]
            path.append(f"{ax.x(bins[-1]):.1f},{ax.y(0):.1f}")
            dash = DASHES[i % len(DASHES)]
            parts.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="{colors[codec]}" '
                         f'stroke-width="1.5" stroke-dasharray="{dash}"/>')
            if panel == 0:
                legend.append((f"{codec} {params_text(params)}", colors[codec], dash))
    parts += _legend(legend, 70, 40)
    return _svg(960, 330, parts, "PSNR and SSIM histograms")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # thumbnails: size matters less than time
    return buf.getvalue()


# ---- worst images ----------------------------------------------------------------------


def _worst_blocks(dest: str, rows: list[dict], storage: Storage) -> list[str]:
    """The worst images' blocks, two at a time: reading, decoding and PNG-encoding them is
    most of a report's time, and they release the GIL (the run's workers are idle by now)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415
    from tasks.plan import read_manifest  # noqa: PLC0415

    manifests = {run_id: read_manifest(dest, run_id, storage) for run_id in {r["run_id"] for r in rows}}
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda row: _worst_block(dest, row, storage, manifests[row["run_id"]]), rows))


def _worst_block(dest: str, row: dict, storage: Storage, manifest: dict | None = None) -> str:
    caption = (
        f"<b>{_e(row['source'])}</b> &middot; {_e(row['codec'])} {_e(params_text(row['params']))} &middot; "
        f"{row['width']}&times;{row['height']} &middot; bpp {number(row['bpp'])} &middot; "
        f"PSNR {number(row['psnr'])} dB &middot; SSIM {number(row['ssim'])} &middot; run {_e(row['run_id'])}"
    )
    try:
        original, decoded = load_pair(dest, row, storage, manifest=manifest)
        tiles = [_thumb(original), _thumb(decoded), _thumb(error_map(original, decoded))]
        body = "".join(
            f"<figure>{_img(t, name)}<figcaption>{name}</figcaption></figure>"
            for t, name in zip(tiles, ("original", "decoded", "error map"))
        )
    except Exception as exc:  # one unreadable image must not cost the whole report
        body = f"<p class=err>cannot show this image: {_e(type(exc).__name__)}: {_e(str(exc))}</p>"
    return f"<div class=worst><p>{caption}</p><div class=tiles>{body}</div></div>"


def load_pair(
    dest: str, row: dict, storage: Storage = Storage(), *, manifest: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The image as the shard saw it (re-read from the run's source) and as its artifact decodes.

    ``manifest``: the row's run manifest when already read (read here otherwise).
    """
    from compressors import get_codec  # noqa: PLC0415
    from compressors.imageio import decode_image  # noqa: PLC0415
    from tasks.plan import read_manifest  # noqa: PLC0415

    manifest = manifest if manifest is not None else read_manifest(dest, row["run_id"], storage)
    if manifest is None:
        raise FileNotFoundError(f"no manifest for run {row['run_id']} under {dest}")
    src = read_bytes(join(manifest["source"], row["source"]), storage)
    original = decode_image(src, max_pixels=manifest.get("max_pixels", 100_000_000)).image
    decoded = get_codec(row["codec"]).decode(read_bytes(row["artifact"], storage))
    if original.shape[2] == 1 and decoded.ndim == 3 and decoded.shape[2] == 3:
        original = np.repeat(original, 3, axis=2)
    return original, decoded


def error_map(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """|original - decoded| averaged over channels, x ERROR_GAIN, as an RGB inferno image."""
    if original.shape != decoded.shape:
        raise ValueError(f"decoded shape {decoded.shape} differs from the original's {original.shape}")
    err = np.abs(original.astype(np.int16) - decoded.astype(np.int16)).mean(axis=2)
    scaled = np.clip(err * ERROR_GAIN / 255.0, 0.0, 1.0)
    # matplotlib's lookup for a float in [0, 1] into its 256 colours: floor(x * 256), 1.0 -> 255
    return _INFERNO[np.minimum((scaled * len(_INFERNO)).astype(np.intp), len(_INFERNO) - 1)]


# matplotlib's "inferno" colormap as 256 RGB bytes (its colours x 255, rounded): importing
# matplotlib for this one table cost ~0.5 s of every run's report (tests/test_report_query
# checks the table against matplotlib's own).
_INFERNO = np.frombuffer(bytes.fromhex(
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722"
    "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48"
    "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964"
    "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d"
    "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e"
    "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a"
    "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655"
    "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545"
    "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933"
    "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a"
    "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f"
    "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865"
    "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
), np.uint8).reshape(256, 3)


def _thumb(image: np.ndarray) -> bytes:
    im = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return _png(im)


# ---- HTML pieces -----------------------------------------------------------------------

STAT_COLUMNS = ("images", "ok", "errors")


def _stats_table(stats: list[dict]) -> str:
    head = (
        "<tr><th>codec</th><th>params</th><th>run</th><th>images</th><th>ok</th><th>errors</th>"
        + "".join(f"<th>{m}<br><small>mean / p50 / p90 / p99</small></th>" for m in METRICS)
        + "</tr>"
    )
    body = []
    for s in stats:
        cells = [_e(s["codec"]), _e(params_text(s["params"])), f"<code>{_e(s['run_id'])}</code>"]
        cells += [str(s[c]) for c in STAT_COLUMNS]
        cells += [" / ".join(number(s[f"{k}_{m}"]) for k in ("mean", "p50", "p90", "p99")) for m in METRICS]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


ROUTE_COLUMNS = ("images", "exact", "source_bytes", "artifact_bytes", "bytes_saved")


def _routes_table(routes: list[dict]) -> str:
    head = "<tr><th>run</th><th>codec</th><th>route</th>" + "".join(f"<th>{c}</th>" for c in ROUTE_COLUMNS)
    body = "".join(
        f"<tr><td><code>{_e(r['run_id'])}</code></td><td>{_e(r['codec'])}</td><td>{_e(r['route'] or '-')}</td>"
        + "".join(f"<td>{r[c]:,}</td>" for c in ROUTE_COLUMNS)
        + f"<td>{percent(r['saved'])}</td></tr>"
        for r in routes
    )
    return f"<table>{head}<th>saved</th></tr>{body}</table>"


def _errors_table(errors: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{_e(r['source'])}</td><td>{_e(r['codec'])}</td><td><code>{_e(r['run_id'])}</code></td>"
        f"<td class=err>{_e(r['error'] or '')}</td></tr>"
        for r in errors
    )
    return f"<table><tr><th>source</th><th>codec</th><th>run</th><th>error</th></tr>{rows}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}.meta{color:#666}.err{color:#a00;text-align:left}
.tiles{display:flex;gap:8px}figure{margin:0}figcaption{font-size:12px;color:#666;text-align:center}
.worst{margin-bottom:1.5em}img{max-width:100%}code{white-space:nowrap}
"""


def _page(sections: list[str]) -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>imgpress report</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _md_cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")

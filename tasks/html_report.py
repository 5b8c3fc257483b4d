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
from datetime import datetime, timezone
from typing import Iterable

import numpy as np
from PIL import Image

from tasks.formatting import finite, number, params_text, percent
from tasks.layout import html_report_url
from tasks.query import METRICS, codec_stats, error_rows, open_reports, worst_images
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
) -> str:
    """Render the report of ``dest`` (optionally some runs) and write it to ``url``; return the URL.

    Without ``url`` a single run's report goes next to its manifest.
    """
    run_ids = sorted(set(run_ids)) if run_ids is not None else None
    if url is None:
        if not run_ids or len(run_ids) != 1:
            raise ValueError("give the report's URL, or exactly one run id")
        url = html_report_url(dest, run_ids[0])
    write_bytes(url, render_html(dest, storage, run_ids=run_ids, worst=worst).encode(), storage)
    return url


def render_html(
    dest: str, storage: Storage = Storage(), *, run_ids: Iterable[str] | None = None, worst: int = 6
) -> str:
    """The whole report as one HTML document."""
    with open_reports(dest, storage, run_ids=run_ids, materialize=True) as reports:
        stats = codec_stats(reports)
        points = reports.sql(
            "SELECT run_id, codec, params, bpp, psnr, ssim FROM reports WHERE status = 'ok' AND exact IS NOT TRUE"
        ).records()
        worst_rows = worst_images(reports, worst) if worst > 0 else []
        errors = error_rows(reports, limit=200)
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
    if points:
        sections.append("<h2>Rate&ndash;distortion</h2>" + _img(_rd_plot(points, stats), "bpp vs PSNR"))
        sections.append("<h2>Distributions</h2>" + _img(_histograms(points), "PSNR and SSIM histograms"))
    if worst_rows:
        sections.append(
            f"<h2>Worst {len(worst_rows)} images by PSNR</h2>"
            f"<p class=meta>original | decoded | error map (|error| &times; {ERROR_GAIN}, inferno)</p>"
            + "".join(_worst_block(dest, row, storage) for row in worst_rows)
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
    problems = []
    try:
        html_url = write_html_report(dest, None, storage, run_ids=[run_id])
    except Exception as exc:  # noqa: BLE001  (reported in the summary instead)
        html_url = None
        problems.append(f"The HTML report could not be written: {type(exc).__name__}: {exc}")
    try:
        markdown = markdown_summary(dest, run_id, storage, html_url=html_url)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"The reports could not be read back: {type(exc).__name__}: {exc}")
        markdown = f"# imgpress run `{run_id}`\n\nDestination: `{dest}`\n\n" + "".join(
            f"- {k}: {number(v)}\n" for k, v in (summary or {}).items()
        )
    return markdown + "".join(f"\n{_md_cell(p)}\n" for p in problems), html_url


def markdown_summary(
    dest: str, run_id: str, storage: Storage = Storage(), *, html_url: str | None = None, worst: int = 5
) -> str:
    """A run's summary as markdown, for the Prefect run page (a markdown artifact)."""
    with open_reports(dest, storage, run_ids=[run_id], materialize=True) as reports:
        stats = codec_stats(reports)
        worst_rows = worst_images(reports, worst)
        errors = error_rows(reports, limit=10)
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


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # noqa: PLC0415  (no pyplot: no global state, no GUI)

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _colors(names: list[str]) -> dict[str, tuple]:
    import matplotlib  # noqa: PLC0415

    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(sorted(set(names)))}


def _rd_plot(points: list[dict], stats: list[dict]) -> bytes:
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    colors = _colors([p["codec"] for p in points])
    for codec, color in colors.items():
        mine = [p for p in points if p["codec"] == codec and finite(p["psnr"])]
        ax.scatter(
            [p["bpp"] for p in mine], [p["psnr"] for p in mine], s=12, alpha=0.35, color=color, linewidths=0
        )
        means = sorted(
            (s["mean_bpp"], s["mean_psnr"], s["params"])
            for s in stats
            if s["codec"] == codec and s["mean_bpp"] is not None and s["mean_psnr"] is not None
        )
        if means:
            ax.plot(
                [m[0] for m in means],
                [m[1] for m in means],
                "-D",
                color=color,
                markersize=7,
                markeredgecolor="black",
                label=f"{codec} (mean of each run)",
            )
            for bpp, psnr, params in means:
                ax.annotate(
                    params_text(params), (bpp, psnr), textcoords="offset points", xytext=(5, 5), fontsize=7
                )
    ax.set_xlabel("bits per pixel (artifact bytes x 8 / pixels)")
    ax.set_ylabel("PSNR (dB, data_range 255)")
    ax.set_title("Rate-distortion: one dot per image, diamonds are run means")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _histograms(points: list[dict]) -> bytes:
    fig = _figure(10, 3.8)
    runs = sorted({(p["codec"], p["params"], p["run_id"]) for p in points})
    colors = _colors([p["codec"] for p in points])
    styles = ["-", "--", ":", "-."]
    for ax, metric, unit in zip(fig.subplots(1, 2), ("psnr", "ssim"), ("dB", "")):
        values = [p[metric] for p in points if finite(p[metric])]
        if not values:
            continue
        bins = np.linspace(min(values), max(values) + 1e-9, 30)
        for i, (codec, params, run_id) in enumerate(runs):
            mine = [p[metric] for p in points if p["run_id"] == run_id and finite(p[metric])]
            ax.hist(
                mine,
                bins=bins,
                histtype="step",
                linewidth=1.5,
                color=colors[codec],
                linestyle=styles[i % len(styles)],
                label=f"{codec} {params_text(params)}",
            )
        ax.set_xlabel(f"{metric.upper()} {unit}".strip())
        ax.set_ylabel("images")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---- worst images ----------------------------------------------------------------------


def _worst_block(dest: str, row: dict, storage: Storage) -> str:
    caption = (
        f"<b>{_e(row['source'])}</b> &middot; {_e(row['codec'])} {_e(params_text(row['params']))} &middot; "
        f"{row['width']}&times;{row['height']} &middot; bpp {number(row['bpp'])} &middot; "
        f"PSNR {number(row['psnr'])} dB &middot; SSIM {number(row['ssim'])} &middot; run {_e(row['run_id'])}"
    )
    try:
        original, decoded = load_pair(dest, row, storage)
        tiles = [_thumb(original), _thumb(decoded), _thumb(error_map(original, decoded))]
        body = "".join(
            f"<figure>{_img(t, name)}<figcaption>{name}</figcaption></figure>"
            for t, name in zip(tiles, ("original", "decoded", "error map"))
        )
    except Exception as exc:  # one unreadable image must not cost the whole report
        body = f"<p class=err>cannot show this image: {_e(type(exc).__name__)}: {_e(str(exc))}</p>"
    return f"<div class=worst><p>{caption}</p><div class=tiles>{body}</div></div>"


def load_pair(dest: str, row: dict, storage: Storage = Storage()) -> tuple[np.ndarray, np.ndarray]:
    """The image as the shard saw it (re-read from the run's source) and as its artifact decodes."""
    from compressors import get_codec  # noqa: PLC0415
    from compressors.imageio import decode_image  # noqa: PLC0415
    from tasks.plan import read_manifest  # noqa: PLC0415

    manifest = read_manifest(dest, row["run_id"], storage)
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
    import matplotlib  # noqa: PLC0415

    if original.shape != decoded.shape:
        raise ValueError(f"decoded shape {decoded.shape} differs from the original's {original.shape}")
    err = np.abs(original.astype(np.int16) - decoded.astype(np.int16)).mean(axis=2)
    scaled = np.clip(err * ERROR_GAIN / 255.0, 0.0, 1.0)
    return (matplotlib.colormaps["inferno"](scaled)[..., :3] * 255).round().astype(np.uint8)


def _thumb(image: np.ndarray) -> bytes:
    im = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


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

"""A run: its id, its manifest, its shards and their markers (what resume looks for).

Where each of these lives under the destination is :mod:`tasks.layout`'s business.

The run id is a hash of what determines the artifacts (source, codec, canonical params):
re-running the same configuration resumes it; changing any of them starts a new run and
never overwrites another run's artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from tasks import layout
from tasks.layout import finished_shards, manifest_url, marker_url
from tasks.report import ensure_schema_file, read_report, report_writer, write_report
from tasks.storage import (
    DestinationError,
    Storage,
    age_s,
    exclusive,
    exists,
    list_files,
    read_bytes,
    remove_stale_partials,
    write_bytes,
    writer_gone,
)

# A shard writes its marker right after its report: a report without a marker that is younger
# than this, from a writer not known to be dead, may be another attempt's shard finishing now.
IN_FLIGHT_S = 120.0


@dataclass(frozen=True)
class ShardSpec:
    """One unit of distributed work: a picklable description of tens to hundreds of images."""

    run_id: str
    shard_id: str
    source: str
    dest: str
    codec: str
    params_json: str  # canonical codec params
    files: tuple[tuple[str, int], ...]  # (path relative to source, size in bytes)
    storage: Storage = field(default_factory=Storage)
    max_pixels: int = 100_000_000
    model_url: str | None = None  # a trained model each worker loads before encoding
    postfilter: str | None = None  # post-filter model id: the metrics describe the filtered image
    classifier: str | None = None  # classifier model id: labels on source and decoded image
    helper_urls: tuple[tuple[str, str], ...] = ()  # (kind, URL) of models each worker loads first

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)


def make_run_id(source: str, codec: str, params: dict, helpers: dict | None = None) -> str:
    """``<codec>-<hash>`` of what determines the run's rows; ``helpers`` (post-filter and
    classifier model ids) count only when set, so runs without them keep their ids."""
    body = {"source": source.rstrip("/"), "codec": codec, "params": params}
    if helpers and any(helpers.values()):
        body["helpers"] = {k: v for k, v in helpers.items() if v}
    key = json.dumps(body, sort_keys=True)
    return f"{codec}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def resolve_codec_params(codec: str, wanted: dict, storage: Storage = Storage()) -> tuple[dict, str | None]:
    """``(canonical params, model URL)`` of a run: the one place the flow and the CLI get them.

    A ``model`` given as a URL becomes the model's id (the content hash of its weights,
    read without loading them), which is what the run id hashes and the report records;
    the URL is returned for the workers to load the model from.
    """
    from compressors import get_codec  # noqa: PLC0415
    from compressors.models import model_id_of  # noqa: PLC0415
    from tasks.models import is_url, model_files  # noqa: PLC0415

    wanted, model_url = dict(wanted), None
    ref = wanted.get("model")
    if isinstance(ref, str) and is_url(ref):
        model_url, wanted["model"] = ref, model_id_of(model_files(ref, storage)[0])
    return get_codec(codec).canonical_params(wanted), model_url


def resolve_helpers(
    postfilter: str | None, classifier: str | None, storage: Storage = Storage()
) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """A run's post-filter and classifier as model ids, loaded (so validated) before any shard
    runs, and the ``(kind, URL)`` of those each worker must load too. Flow and CLI both ask here."""
    from tasks.models import ensure_model, is_url  # noqa: PLC0415

    helpers, urls = {}, []
    for kind, ref in (("postfilter", postfilter), ("classifier", classifier)):
        if ref:
            helpers[kind] = ensure_model(ref, storage, kind=kind)
            if is_url(ref):
                urls.append((kind, ref))
    return helpers, tuple(urls)


def shard_id_for(files: list[tuple[str, int]]) -> str:
    """Content-addressed: the same files always make the same shard id."""
    h = hashlib.sha256("\n".join(rel for rel, _ in files).encode())
    return f"shard-{h.hexdigest()[:16]}"


def read_marker(dest: str, run_id: str, shard_id: str, storage: Storage = Storage()) -> dict:
    return json.loads(read_bytes(marker_url(dest, run_id, shard_id), storage))


def write_marker(spec: ShardSpec, summary: dict) -> None:
    body = {"shard": spec.shard_id, "files": [rel for rel, _ in spec.files], **summary}
    write_bytes(marker_url(spec.dest, spec.run_id, spec.shard_id), json.dumps(body).encode(), spec.storage)


def plan_shards(
    files: list[tuple[str, int]], done: set[str], shard_size: int
) -> list[list[tuple[str, int]]]:
    """Chunk the files not yet covered by a finished shard, in sorted order."""
    todo = [f for f in files if f[0] not in done]
    return [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("imgpress", "numpy", "pillow", "scikit-learn", "torch", "prefect", "dask", "distributed", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(dest: str, run_id: str, body: dict, storage: Storage = Storage()) -> None:
    write_bytes(manifest_url(dest, run_id), json.dumps(body, indent=2, sort_keys=True, default=str).encode(), storage)


def read_manifest(dest: str, run_id: str, storage: Storage = Storage()) -> dict | None:
    try:
        return json.loads(read_bytes(manifest_url(dest, run_id), storage))
    except FileNotFoundError:
        return None


def storage_dict(storage: Storage) -> dict:
    return {k: v for k, v in asdict(storage).items() if v is not None}


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    specs: tuple[ShardSpec, ...]
    listed: int
    already_done: int  # images covered by shards finished in an earlier attempt
    manifest: dict


def prepare_run(
    source: str,
    dest: str,
    codec: str,
    params: dict,
    *,
    shard_size: int = 64,
    storage: Storage = Storage(),
    max_pixels: int = 100_000_000,
    model_url: str | None = None,
    postfilter: str | None = None,
    classifier: str | None = None,
    helper_urls: tuple[tuple[str, str], ...] = (),
) -> RunPlan:
    """List the source, resume what an earlier attempt finished, and cut the rest into shards.

    ``params`` must already be canonical (``Codec.canonical_params``). ``postfilter`` and
    ``classifier`` are model ids (``helper_urls`` the (kind, URL) of those a worker must load).
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    run_id = make_run_id(source, codec, params, {"postfilter": postfilter, "classifier": classifier})
    try:
        files = list_files(source, storage, exclude=(dest,))
        if not files and not exists(source, storage):  # object stores list a missing prefix as empty
            raise FileNotFoundError(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"source {source} does not exist") from None
    try:
        layout.migrate_legacy_reports(dest, storage)
        ensure_schema_file(dest, storage)
    except (DestinationError, OSError) as exc:  # the first writes of a run: say plainly that the destination is the problem
        raise DestinationError(f"destination {dest} cannot be written ({exc})") from exc
    for url in (layout.artifacts_url(dest, run_id), layout.report_folder(dest, run_id), layout.run_url(dest, run_id)):
        remove_stale_partials(url, storage)
    reports = layout.report_shards(dest, run_id, storage)
    done_shards, done = _finished_work(dest, run_id, set(reports), storage)
    params_json = json.dumps(params, sort_keys=True)
    specs = tuple(
        ShardSpec(
            run_id, shard_id_for(chunk), source, dest, codec, params_json, tuple(chunk), storage, max_pixels, model_url,
            postfilter, classifier, tuple(helper_urls),
        )
        for chunk in plan_shards(files, done, shard_size)
    )
    _drop_unfinished_reports(reports, set(done_shards) | {s.shard_id for s in specs}, storage)
    manifest = {
        "run_id": run_id, "source": source, "dest": dest, "codec": codec, "params": params,
        "shard_size": shard_size, "max_pixels": max_pixels, "storage": storage_dict(storage), "model_url": model_url,
        "postfilter": postfilter, "classifier": classifier, "versions": versions(), "started": now(), "status": "running",
        "images_listed": len(files), "images_already_done": sum(1 for f in files if f[0] in done),
        "shards_already_done": len(done_shards), "shards_planned": len(specs),
    }
    try:
        write_manifest(dest, run_id, manifest, storage)
    except DestinationError as exc:  # the first write of a run: say plainly that the destination is the problem
        raise DestinationError(f"destination {dest} cannot be written ({exc})") from exc
    return RunPlan(run_id, specs, len(files), manifest["images_already_done"], manifest)


def finish_run(plan: RunPlan, summaries: list[dict], storage: Storage = Storage()) -> dict:
    """Add this attempt's counts to the manifest and write it; return the run summary."""
    totals: dict[str, float] = {}
    for s in summaries:
        for k, v in s.items():
            if isinstance(v, (int, float)):
                totals[k] = totals.get(k, 0) + v
    ok = totals.get("ok", 0)
    summary = {
        "run_id": plan.run_id,
        "images_listed": plan.listed,
        "images_skipped_as_done": plan.already_done,
        "images": int(totals.get("images", 0)),
        "ok": int(ok),
        "errors": int(totals.get("errors", 0)),
        "shards": len(summaries),
        "mean_bpp": totals["artifact_bytes"] * 8 / totals["pixels"] if totals.get("pixels") else None,
        "mean_psnr": totals["sum_psnr"] / totals["finite_psnr"] if totals.get("finite_psnr") else None,
        "mean_ssim": totals["sum_ssim"] / ok if ok else None,
        "mean_encode_ms": totals["sum_encode_ms"] / ok if ok else None,
        "source_bytes": int(totals.get("source_bytes", 0)),
        "artifact_bytes": int(totals.get("artifact_bytes", 0)),
        "exact": int(totals.get("exact", 0)),
        "bytes_saved": int(totals.get("bytes_saved", 0)),
    }
    dest = plan.manifest["dest"]
    try:  # attempts running beside this one merge one at a time, each on what the last one left
        with exclusive(layout.merge_lock_url(dest, plan.run_id), storage):
            summary["shards_merged_away"] = len(merge_shards(dest, plan.run_id, storage))
    except Exception:  # noqa: BLE001  (storage trouble here must not fail a run whose images are all done;
        summary["shards_merged_away"] = None  # the next run of this configuration merges again)
    manifest = {**plan.manifest, "status": "completed", "finished": now(), "result": summary}
    write_manifest(plan.manifest["dest"], plan.run_id, manifest, storage)
    return summary


def merge_shards(dest: str, run_id: str, storage: Storage = Storage()) -> list[str]:
    """Make every image of a run count once: remove finished shards whose files other shards
    cover, and the unmarked reports no attempt will finish (:func:`_drop_unfinished_reports`).

    Two attempts of one run at the same time (a scheduled run and a manual one) may cut
    the files into shards differently (another ``--shard-size``), and then both finish
    shards holding the same images. Walking the finished shards in id order, a shard whose
    files the other kept shards all cover is removed (marker first, then report), so every
    attempt that ends here makes the same choice. Shards that still overlap (neither covers
    the other) lose the shared files from the later one's report and marker. Returns the
    removed shard ids.
    """
    files: dict[str, set[str]] = {}
    reports = layout.report_shards(dest, run_id, storage)
    finished = set(finished_shards(dest, run_id, storage))
    for shard in sorted(finished):
        if shard not in reports:
            continue  # no report: readers do not count it, and the next run redoes it
        try:
            files[shard] = set(read_marker(dest, run_id, shard, storage)["files"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: not counted as finished by readers either
    counts: dict[str, int] = {}
    for covered in files.values():
        for f in covered:
            counts[f] = counts.get(f, 0) + 1
    dropped = []
    for shard, covered in files.items():
        if covered and all(counts[f] > 1 for f in covered):
            for f in covered:
                counts[f] -= 1
            for url in (marker_url(dest, run_id, shard), reports[shard]):
                fs, path = storage.fs(url)
                with contextlib.suppress(FileNotFoundError):  # another attempt removed it first
                    fs.rm(path)
            dropped.append(shard)
    seen: set[str] = set()
    for shard, covered in files.items():  # shards that overlap without one covering another
        if shard in dropped:
            continue
        twice = covered & seen
        seen |= covered
        if twice:
            _trim_shard(dest, run_id, shard, reports[shard], twice, storage)
    gone = set(dropped)
    _drop_unfinished_reports({s: u for s, u in reports.items() if s not in gone}, finished - gone, storage)
    return dropped


def _trim_shard(dest: str, run_id: str, shard: str, report: str, remove: set[str], storage: Storage) -> None:
    """Take files another kept shard reports out of this shard's report and marker."""
    rows = [r for r in read_report(report, storage).to_pylist() if r["source"] not in remove]
    write_report(report, rows, storage)
    marker = read_marker(dest, run_id, shard, storage)
    marker["files"] = [f for f in marker["files"] if f not in remove]
    write_bytes(marker_url(dest, run_id, shard), json.dumps(marker).encode(), storage)


def _finished_work(dest: str, run_id: str, reports: set[str], storage: Storage) -> tuple[list[str], set[str]]:
    """The shards an earlier attempt finished, and the files they cover.

    A shard counts as finished when its marker is readable *and* its report exists: the
    marker is written after the report, but a report deleted later (by hand, or by an
    attempt racing a straggler from an older one) must not leave images without a row.
    """
    shards, files = [], set()
    for shard in finished_shards(dest, run_id, storage):
        if shard not in reports:
            continue
        try:
            covered = read_marker(dest, run_id, shard, storage)["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable marker: redo the shard (its files get a fresh report and marker)
        shards.append(shard)
        files.update(covered)
    return shards, files


def _drop_unfinished_reports(reports: dict[str, str], keep: set[str], storage: Storage) -> None:
    """Remove the reports of shards that are neither finished nor in ``keep`` (planned now).

    Such a report (no marker) is from an attempt that died with another cut of the files
    into shards; its images are in this attempt's shards, so left there it would show them
    twice to readers of the folder. A planned shard's report is left alone: this attempt
    overwrites it. So is one that may be in flight (:func:`_in_flight`): an attempt running
    beside this one with another shard size, whose marker is on its way; the merge at the
    end of the last attempt sees it finished (and merges it) or removes it.
    """
    for shard, url in reports.items():
        if shard in keep or _in_flight(url, storage):
            continue
        fs, path = storage.fs(url)
        with contextlib.suppress(FileNotFoundError):  # another attempt removed it first
            fs.rm(path)


def _in_flight(report: str, storage: Storage) -> bool:
    """Whether a report without a marker may still get one: young, and its writer not known dead."""
    try:
        if age_s(report, storage) > IN_FLIGHT_S:
            return False
        return not writer_gone(report_writer(report, storage))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # unreadable while young: perhaps being written; left for later
        return True

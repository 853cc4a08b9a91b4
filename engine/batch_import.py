"""Batch import: NDJSON (plain or gzipped) of ``{ref, schema: guest|order, mode: upsert|merge|insert, value}``.

Streamed: lines are read in fixed-size batches from a file, so memory stays flat however large the file.
Idempotent: every mode is a function of the stored state and the record (no counters bumped, no times
stamped), so running the same file again reports everything ``unchanged``. Records for the same ref keep
their file order; different refs run concurrently. Each bad line is reported with its number and a
pointer, and the rest of the file still loads.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from engine.errors import ArbiterError
from engine.guests import Guests
from engine.ids import new_id
from engine.types import JSONObject

SCHEMAS = ("guest", "order")
MODES = ("upsert", "merge", "insert")
BATCH_LINES = 1000
MAX_ERRORS_KEPT = 1000
MAX_LINE_BYTES = 1 << 20


@dataclass(slots=True)
class ImportJob:
    id: str = field(default_factory=new_id)
    state: str = "running"
    lines: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    bytes_read: int = 0
    total_bytes: int = 0
    errors: list[JSONObject] = field(default_factory=list)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    finished_ms: int | None = None

    def as_json(self) -> JSONObject:
        return {
            "id": self.id, "state": self.state, "lines": self.lines, "changed": self.changed,
            "unchanged": self.unchanged, "failed": self.failed,
            "bytes_read": self.bytes_read, "total_bytes": self.total_bytes,
            "errors": sorted(self.errors, key=lambda e: e["line"]),
            "errors_truncated": self.failed > len(self.errors), "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
        }  # fmt: skip

    def fail(self, line: int, pointer: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append({"line": line, "pointer": pointer, "message": message})


Progress = Callable[[ImportJob], Awaitable[None] | None]
"""Called after each batch: a CLI progress bar (sync) or publishing the job's status to the store (async)."""


def open_lines(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(lines, raw file): decompressed when it starts with the gzip magic number, whatever its name.

    The raw file's position is the progress (compressed bytes read of the file's size).
    """
    raw = path.open("rb")
    gzipped = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    return (gzip.GzipFile(fileobj=raw) if gzipped else raw), raw  # type: ignore[return-value]


def _batches(
    stream: IO[bytes], raw_size: Callable[[], int]
) -> Generator[tuple[list[tuple[int, bytes]], int], None, None]:
    number, batch = 0, []
    for line in stream:
        number += 1
        if line.strip():
            batch.append((number, line))
        if len(batch) >= BATCH_LINES:
            yield batch, raw_size()
            batch = []
    yield batch, raw_size()


def _wall_ms() -> int:
    return int(time.time() * 1000)


async def run_import(
    guests: Guests,
    path: Path,
    job: ImportJob,
    *,
    progress: Progress | None = None,
    concurrency: int = 32,
    clock: Callable[[], int] = _wall_ms,
) -> ImportJob:
    """Load ``path`` into the guests; fills ``job`` as it goes (``progress`` is called after each batch)."""
    job.total_bytes = (await asyncio.to_thread(path.stat)).st_size
    stream, raw = await asyncio.to_thread(open_lines, path)
    batches = _batches(stream, raw.tell)
    gate = asyncio.Semaphore(concurrency)
    try:
        while True:
            batch, job.bytes_read = await asyncio.to_thread(next, batches)
            by_ref: dict[str, list[tuple[int, JSONObject]]] = {}
            for number, line in batch:
                job.lines = max(job.lines, number)
                record = _parse(number, line, job)
                if record is not None:
                    # Keyed by the guest the line changes: its lines stay in file order and never race each other.
                    guest_ref = record["ref"] if record["schema"] == "guest" else record["value"].get("guest_ref")
                    by_ref.setdefault(str(guest_ref), []).append((number, record))

            async def one_ref(records: list[tuple[int, JSONObject]]) -> None:
                async with gate:
                    for number, record in records:
                        await _load(guests, number, record, job, clock())

            await asyncio.gather(*(one_ref(r) for r in by_ref.values()))
            if progress is not None:
                reported = progress(job)
                if inspect.isawaitable(reported):
                    await reported
            if len(batch) < BATCH_LINES:
                break
        job.state = "done"
    except Exception as exc:  # noqa: BLE001 — the job reports why it stopped instead of vanishing
        job.state = "failed"
        job.fail(job.lines, "", f"import stopped: {exc}")
    finally:
        batches.close()
        await asyncio.to_thread(stream.close)
        await asyncio.to_thread(raw.close)
        job.finished_ms = int(time.time() * 1000)
    return job


def _parse(number: int, line: bytes, job: ImportJob) -> JSONObject | None:
    if len(line) > MAX_LINE_BYTES:
        job.fail(number, "", f"line is longer than {MAX_LINE_BYTES} bytes")
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        job.fail(number, "", f"malformed JSON: {exc}")
        return None
    if not isinstance(record, dict):
        job.fail(number, "", "a record must be a JSON object")
        return None
    checks = (
        ("ref", isinstance(record.get("ref"), str) and 0 < len(record["ref"]) <= 128, "must be 1 to 128 characters"),
        ("schema", record.get("schema") in SCHEMAS, "must be 'guest' or 'order'"),
        ("mode", record.get("mode") in MODES, "must be 'upsert', 'merge' or 'insert'"),
        ("value", isinstance(record.get("value"), dict), "must be an object"),
    )
    for name, ok, message in checks:
        if not ok:
            job.fail(number, f"/{name}", f"'{name}' {message}")
            return None
    return record


async def _load(guests: Guests, number: int, record: JSONObject, job: ImportJob, now_ms: int) -> None:
    value, mode = record["value"], record["mode"]
    try:
        if record["schema"] == "guest":
            _, changed = await guests.create({"ref": record["ref"], **value}, mode=mode, now_ms=now_ms)
        else:
            guest_ref = value.get("guest_ref")
            if not isinstance(guest_ref, str) or not guest_ref:
                job.fail(number, "/value/guest_ref", "an order record needs 'guest_ref'")
                return
            _, changed = await guests.put_order(guest_ref, {"ref": record["ref"], **value}, mode=mode, now_ms=now_ms)
    except ArbiterError as exc:
        pointer = exc.pointer or ""
        job.fail(number, f"/value{pointer}" if pointer and not pointer.startswith("/value") else pointer, exc.detail)
        return
    if changed:
        job.changed += 1
    else:
        job.unchanged += 1

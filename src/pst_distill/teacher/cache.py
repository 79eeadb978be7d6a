"""The teacher's generations, kept as content-addressed segments that DVC can share.

A store folder holds segments, each written once and never changed::

    <sha256>.jsonl   entries, one per line: {"checksum", "format", "key", "payload"}
    <sha256>.idx     its index, one "key<TAB>offset<TAB>length" line per entry

A segment's name is the SHA-256 of its bytes, so two people's segments never collide, the
same generations written twice are one file, and DVC (which hashes files) moves a store of
N generations as about N / ``segment_size`` files instead of N. Every entry keeps its own
checksum over its payload: a damaged entry is found at lookup and regenerated alone, the
rest of its segment stays valid. An index that is missing (a crash between the two files)
is rebuilt from its segment.

:class:`GenerationCache` reads any number of store folders (the shared store first, then
the local one) and writes new segments to one folder: a generation is buffered and written
with the next segment, when ``segment_size`` generations are waiting or ``flush_s`` seconds
after the oldest of them, and when the cache closes (an interrupt included). A run killed
with SIGKILL loses at most that buffer.

The key of a generation (:func:`pst_distill.teacher.generate.build_requests`) is a content
hash of what makes it: the rendered prompt, the teacher model and revision, the sampling
settings with the seed, and the sample index; never the code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

from pst_distill.io import atomic_path, content_hash
from pst_distill.teacher.base import Completion

log = logging.getLogger(__name__)
FORMAT = 2
SEGMENT, INDEX = ".jsonl", ".idx"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    written: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def checksum(payload: dict) -> str:
    return content_hash(payload, length=64)


def entry_line(comp: Completion, meta: dict) -> str:
    payload = {"completion": asdict(replace(comp, meta=None)), "meta": meta}
    entry = {"checksum": checksum(payload), "format": FORMAT, "key": comp.key, "payload": payload}
    return json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"


def parse_entry(raw: bytes, key: str) -> Optional[Completion]:
    """The completion of one entry, or None when it is damaged or not ``key``'s."""
    try:
        entry = json.loads(raw)
        payload = entry["payload"]
        if (entry.get("format") != FORMAT or entry.get("key") != key
                or entry.get("checksum") != checksum(payload)
                or payload["completion"]["key"] != key):
            return None
        return Completion(**{**payload["completion"], "meta": payload["meta"]})
    except (ValueError, KeyError, TypeError):
        return None


def write_segment(folder: Path, lines: list[str]) -> Path:
    """Write ``lines`` as one segment named by its hash, then its index; both atomically."""
    data = "".join(lines).encode("utf-8")
    name = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SEGMENT}"
    _write_atomic(path, data)
    rows, offset = [], 0
    for line in lines:
        size = len(line.encode("utf-8"))
        rows.append((json.loads(line)["key"], offset, size))
        offset += size
    write_index(path, rows)
    return path


def write_index(segment: Path, rows: list[tuple[str, int, int]]) -> None:
    text = "".join(f"{key}\t{offset}\t{size}\n" for key, offset, size in rows)
    _write_atomic(segment.with_suffix(INDEX), text.encode("utf-8"))


def _write_atomic(path: Path, data: bytes) -> None:
    """Bytes, exactly (the segment's name and the index's offsets are of these bytes)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def read_index(segment: Path) -> list[tuple[str, int, int]]:
    """``(key, offset, length)`` per entry of ``segment``; rebuilt from the segment when its
    index file is missing or unreadable."""
    idx = segment.with_suffix(INDEX)
    try:
        rows = [ln.split("\t") for ln in idx.read_text(encoding="utf-8").splitlines()]
        return [(k, int(o), int(n)) for k, o, n in rows]
    except (OSError, ValueError):
        pass
    out, offset = [], 0
    with open(segment, "rb") as fh:
        for raw in fh:
            try:
                out.append((json.loads(raw)["key"], offset, len(raw)))
            except (ValueError, KeyError, TypeError):
                log.warning("%s: an unreadable line at byte %d is skipped", segment, offset)
            offset += len(raw)
    return out


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SEGMENT}")) if folder.is_dir() else []


class GenerationCache:
    """Lookups across the ``read`` store folders (in order), new segments into ``write``.
    With no folder at all, caching is off: every lookup misses and nothing is written."""

    def __init__(self, write: str | os.PathLike | None, read: Iterable = (),
                 segment_size: int = 256, flush_s: float = 10.0):
        self.root = Path(write) if write else None
        self.folders = [Path(f) for f in read if f] + ([self.root] if self.root else [])
        self.segment_size, self.flush_s = segment_size, flush_s
        self.stats = CacheStats()
        self._index: dict[str, list[tuple[Path, int, int]]] | None = None
        self._buffer: list[str] = []
        self._since: float | None = None
        self._open: tuple[Path, object] | None = None  # the segment read last, kept open

    # ------------------------------------------------------------------ reading
    @property
    def index(self) -> dict[str, list[tuple[Path, int, int]]]:
        if self._index is None:
            self._index = {}
            for folder in dict.fromkeys(self.folders):
                for seg in segments(folder):
                    self._add(seg)
        return self._index

    def _add(self, seg: Path) -> None:
        for key, offset, size in read_index(seg):
            self._index.setdefault(key, []).append((seg, offset, size))

    def get(self, key: str) -> Optional[Completion]:
        """The stored completion (``meta`` as at generation time), or None: a miss, or every
        copy of the entry damaged (then it is regenerated)."""
        places = self.index.get(key, [])
        for seg, offset, size in places:
            try:
                comp = parse_entry(self._read(seg, offset, size), key)
            except OSError:
                comp = None
            if comp is not None:
                self.stats.hits += 1
                return comp
            log.warning("teacher cache: the entry of %s in %s is damaged; it will be "
                        "regenerated", key, seg.name)
        if places:
            self.stats.corrupt += 1
        self.stats.misses += 1
        return None

    def _read(self, seg: Path, offset: int, size: int) -> bytes:
        """Requests come in the order they were generated, so mostly from the segment read
        last: it stays open (a run reads each segment once, not once per entry)."""
        if self._open is None or self._open[0] != seg:
            self._close_reader()
            self._open = (seg, open(seg, "rb"))
        fh = self._open[1]
        fh.seek(offset)
        return fh.read(size)

    def _close_reader(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def has(self, key: str) -> bool:
        return key in self.index

    def keys(self) -> set[str]:
        """Keys with an entry in any folder (not validated)."""
        return set(self.index)

    # ------------------------------------------------------------------ writing
    def put(self, comp: Completion, meta: dict) -> None:
        if self.root is None:
            return
        self._buffer.append(entry_line(comp, meta))
        self._since = self._since or time.monotonic()
        self.stats.written += 1
        if (len(self._buffer) >= self.segment_size
                or time.monotonic() - self._since >= self.flush_s):
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        seg = write_segment(self.root, self._buffer)
        self._buffer, self._since = [], None
        if self._index is not None:
            self._add(seg)

    def close(self) -> None:
        self.flush()
        self._close_reader()


def fold(source: Path, store: Path) -> list[str]:
    """Move every segment (and its index) of ``source`` into ``store``; a segment the store
    has already (the same bytes, so the same name) is dropped from ``source``. Returns the
    names of the segments moved."""
    moved = []
    store.mkdir(parents=True, exist_ok=True)
    for seg in segments(source):
        idx, target = seg.with_suffix(INDEX), store / seg.name
        if target.exists():
            seg.unlink()
            idx.unlink(missing_ok=True)
            continue
        if not idx.exists():  # a crash between the two files: the store gets both
            write_index(seg, read_index(seg))
        os.replace(idx, target.with_suffix(INDEX))
        os.replace(seg, target)
        moved.append(seg.name)
    return moved

"""Per-generation cache shared by every backend: one checksummed JSON file per request key.

``Request.key`` is a content hash of (prompt, teacher model and revision, sampling, sample
index), so an entry is valid for any run that would send the same request. Each entry is
written atomically (``name.tmp`` + ``os.replace``) the moment its completion arrives, so a
run killed at any point keeps every finished generation. An entry whose checksum or key
does not match (a truncated write from another tool, a bit flip, a hand edit) is reported,
removed and regenerated; leftover ``*.tmp`` files are never read.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

from pst_distill.io import content_hash, write_text
from pst_distill.teacher.base import Completion

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    written: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _checksum(payload: dict) -> str:
    return content_hash(payload, length=64)


class GenerationCache:
    """``root/<key[:2]>/<key>.json``; ``root=None`` turns caching off (every lookup misses)."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root else None
        self.stats = CacheStats()

    def path(self, key: str) -> Path:
        if self.root is None:
            raise RuntimeError("cache is disabled")
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a hex content hash, got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Optional[Completion]:
        """The stored completion (``meta`` as at generation time), or None: miss or bad entry."""
        if self.root is None:
            self.stats.misses += 1
            return None
        path = self.path(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        entry = self._validate(raw, key, path)
        if entry is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.stats.hits += 1
        return entry

    def _validate(self, raw: str, key: str, path: Path) -> Optional[Completion]:
        try:
            entry = json.loads(raw)
            payload = entry["payload"]
            ok = (entry.get("format") == FORMAT and entry.get("checksum") == _checksum(payload)
                  and payload["completion"]["key"] == key)
            comp = Completion(**{**payload["completion"], "meta": payload["meta"]}) if ok else None
        except (ValueError, KeyError, TypeError):
            comp = None
        if comp is None:
            log.warning("cache entry %s is corrupt or partial: removing it, will regenerate", path)
        return comp

    def has(self, key: str) -> bool:
        return self.root is not None and self.path(key).exists()

    def put(self, comp: Completion, meta: dict) -> None:
        if self.root is None:
            return
        payload = {"completion": asdict(replace(comp, meta=None)), "meta": meta}
        entry = {"format": FORMAT, "checksum": _checksum(payload), "payload": payload}
        write_text(self.path(comp.key), json.dumps(entry, sort_keys=True, ensure_ascii=False))
        self.stats.written += 1

    def keys(self) -> set[str]:
        """Keys with an entry on disk (not validated)."""
        if self.root is None or not self.root.exists():
            return set()
        return {p.stem for p in self.root.glob("??/*.json")}

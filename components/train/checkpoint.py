"""Checkpoints on S3 or a local directory, written so a half-written one is never resumed.

Layout: ``<base>/<run_id>/step-<NNNNNNNN>/state.pt`` then ``.../COMPLETE`` last; only steps
with the marker count. The tokenizer of the run lives once at ``<base>/<run_id>/tokenizer/``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from components.common.storage import S3Storage, is_s3_uri, parse_s3_uri

logger = logging.getLogger(__name__)

MARKER = "COMPLETE"
_STEP_RE = re.compile(r"step-(\d{8})/" + MARKER + "$")


class CheckpointStore:
    """Save, find and load the checkpoints of one run."""

    def __init__(self, base_uri: str, run_id: str, keep: int = 2) -> None:
        if not re.match(r"^[A-Za-z0-9._-]+$", run_id):
            raise ValueError(f"run_id {run_id!r} may only hold letters, digits, '.', '_', '-'")
        self.s3 = is_s3_uri(base_uri)
        self.root = base_uri.rstrip("/") + "/" + run_id
        self.keep = keep
        self._storage = S3Storage() if self.s3 else None

    def _uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _put(self, uri: str, data: bytes) -> None:
        if self.s3:
            self._storage.put_bytes(uri, data)
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)

    def _get(self, uri: str) -> bytes:
        return self._storage.get_bytes(uri) if self.s3 else Path(uri).read_bytes()

    def _keys(self) -> list[str]:
        if self.s3:
            root = parse_s3_uri(self.root + "/")
            return [o.key[len(root.key) :] for o in self._storage.list_objects(str(root))]
        base = Path(self.root)
        return [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()]

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(int(m.group(1)) for k in self._keys() if (m := _STEP_RE.search(k)))

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: dict[str, Any]) -> str:
        """Write ``state`` for ``step``; the marker goes last, then old checkpoints are pruned."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        folder = f"step-{step:08d}"
        self._put(self._uri(folder, "state.pt"), buffer.getvalue())
        self._put(self._uri(folder, MARKER), json.dumps({"step": step}).encode())
        self._prune()
        logger.info("checkpoint step %d saved to %s", step, self._uri(folder))
        return self._uri(folder)

    def load(self, step: int) -> dict[str, Any]:
        data = self._get(self._uri(f"step-{step:08d}", "state.pt"))
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep]:
            folder = self._uri(f"step-{step:08d}")
            if self.s3:
                # the marker first, so a half-deleted checkpoint is never seen as complete
                self._storage.delete_prefix(folder + f"/{MARKER}")
                self._storage.delete_prefix(folder + "/")
            else:
                Path(folder, MARKER).unlink(missing_ok=True)
                shutil.rmtree(folder, ignore_errors=True)

    # The run's tokenizer, shared by all ranks and by a resumed run.
    def save_tokenizer(self, tokenizer: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            for path in sorted(Path(tmp).iterdir()):
                self._put(self._uri("tokenizer", path.name), path.read_bytes())
        self._put(self._uri("tokenizer", MARKER), b"{}")

    def has_tokenizer(self) -> bool:
        return f"tokenizer/{MARKER}" in self._keys()

    def load_tokenizer(self, local_dir: Path) -> Any:
        from transformers import AutoTokenizer

        local_dir.mkdir(parents=True, exist_ok=True)
        for key in self._keys():
            if key.startswith("tokenizer/") and not key.endswith(MARKER):
                (local_dir / key.split("/", 1)[1]).write_bytes(self._get(self._uri(key)))
        return AutoTokenizer.from_pretrained(str(local_dir))

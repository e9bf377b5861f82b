"""Run folders, datasets and manifests: the only place records touch the disk.

Imports only the shared modules (records, errors).
"""

from __future__ import annotations

from rlaif.store.manifest import package_versions, write_manifest
from rlaif.store.runfolder import Resumed, RowError, RunFolder, read_rows, resume_in_batches

__all__ = ["RunFolder", "RowError", "Resumed", "read_rows", "resume_in_batches", "write_manifest", "package_versions"]

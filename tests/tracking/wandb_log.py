"""Read a W&B offline run file (``run-<id>.wandb``) back with W&B's own record schema.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, a magic number, a version), then 32 KiB blocks of
records, each ``crc32c (4) | length (2, little-endian) | type (1) | data``; a record that does not fit in a block is
split into FIRST / MIDDLE / LAST pieces. Each whole record is one ``wandb_internal_pb2.Record`` protobuf message.
(wandb no longer ships a Python reader for this file; its Go core reads it for ``wandb sync``.)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = 7
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """The protobuf records of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    offset, pieces = HEADER, b""
    while offset + 7 <= len(data):
        if BLOCK - offset % BLOCK < 7:  # a block's tail too short for a record header is padding
            offset += BLOCK - offset % BLOCK
            continue
        length, kind = struct.unpack_from("<HB", data, offset + 4)
        if kind == 0 and length == 0:  # zero padding at the end of the file
            break
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        pieces = chunk if kind in (FULL, FIRST) else pieces + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record


@dataclass
class OfflineRun:
    """What one offline run file holds: its id, project, config, history rows and final summary."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


def read_offline_run(path: Path) -> OfflineRun:
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project, run.group = record.run.run_id, record.run.project, record.run.run_group
            run.tags = list(record.run.tags)
            _merge_items(run.config, record.run.config.update)
        elif kind == "config":
            _merge_items(run.config, record.config.update)
        elif kind == "history":
            run.history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def _merge_items(target: dict[str, Any], items: Any) -> None:
    for item in items:
        value = json.loads(item.value_json)
        target[item.key or "/".join(item.nested_key)] = value.get("value", value) if isinstance(value, dict) else value

"""Reading an offline W&B run back: its protobuf records, the logged history and the config,
shared by the tests of the Callback's W&B output and of the Flower monitor."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

# The .wandb file is a LevelDB-style log: a 7-byte file header, then 32 KiB blocks of records,
# each with a 7-byte header (checksum, length, type); a record may span blocks (types 2-4).
FILE_HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every whole protobuf Record of a W&B run file (one still being written is left out)."""
    data = path.read_bytes()
    ident, magic, _version = FILE_HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), "not a W&B run file"
    records, pending, pos = [], b"", FILE_HEADER.size
    while pos + RECORD_HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER.size:  # the block's tail is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        pos += RECORD_HEADER.size
        if kind == 0 and length == 0:
            break
        if pos + length > len(data):  # wandb-core is still writing this record
            break
        pending += data[pos : pos + length]
        pos += length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_records(path: Path, timeout: float = 30.0) -> list[wandb_internal_pb2.Record]:
    """The records of a finished run: wandb-core may still be writing when ``finish`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(path)
        if (
            any(r.WhichOneof("record_type") == "exit" for r in records)
            or time.monotonic() > deadline
        ):
            return records
        time.sleep(0.2)


def history(records: list[wandb_internal_pb2.Record]) -> list[dict[str, object]]:
    """The logged history rows, nested keys joined with '/' and values decoded from JSON."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    return rows


def config(records: list[wandb_internal_pb2.Record]) -> dict[str, object]:
    """The run's config as last updated."""
    merged: dict[str, object] = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            merged.update(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.config.update
                }
            )
    return merged

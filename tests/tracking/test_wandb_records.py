"""The tests' reader of W&B run files (tests/wandb_records.py) while wandb-core still writes:
it polls a finished run's file, so a record whose bytes are not all there yet ends the read
instead of failing it (a `make test` here once failed so: DecodeError on a record being written)."""

from __future__ import annotations

from pathlib import Path

from wandb.proto import wandb_internal_pb2

from wandb_records import FILE_HEADER, FULL, RECORD_HEADER, history, read_wandb_records


def _record(key: str, value: str) -> bytes:
    record = wandb_internal_pb2.Record()
    item = record.history.item.add()
    item.key, item.value_json = key, value
    return record.SerializeToString()


def test_a_record_still_being_written_ends_the_read(tmp_path: Path) -> None:
    whole, torn = _record("barrier/epoch", "1"), _record("barrier/epoch", "2")
    data = FILE_HEADER.pack(b":W&B", 0xBEE1, 0)
    data += RECORD_HEADER.pack(0, len(whole), FULL) + whole
    data += RECORD_HEADER.pack(0, len(torn), FULL) + torn[:-2]  # its last bytes not yet written
    path = tmp_path / "run.wandb"
    path.write_bytes(data)
    assert history(read_wandb_records(path)) == [{"barrier/epoch": 1}]
    path.write_bytes(data + torn[-2:])  # written since
    assert history(read_wandb_records(path)) == [{"barrier/epoch": 1}, {"barrier/epoch": 2}]

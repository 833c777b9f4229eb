"""Atomic private writes and the write-out hint used by downloads."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from airflow_provider_canvas import files


def test_write_atomically_is_private_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    files.write_atomically(target, "new")

    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range(2) is Linux-only")
def test_start_writeback_hands_dirty_pages_to_the_disk(tmp_path):
    assert files._SYNC_FILE_RANGE is not None  # found in libc: the hint is really given on Linux
    path = tmp_path / "data"
    with open(path, "wb") as out:
        out.write(b"x" * 4 * 2**20)
        out.flush()
        files.start_writeback(out.fileno(), 0, 4 * 2**20)
        files.start_writeback(out.fileno(), 0, 0)  # nothing to do
        assert files._SYNC_FILE_RANGE(-1, 0, 1, files._SYNC_FILE_RANGE_WRITE) == -1  # real call: EBADF
    assert os.path.getsize(path) == 4 * 2**20

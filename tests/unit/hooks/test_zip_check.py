"""The ZIP check of extracts: inflated and CRC'd as bytes arrive, confirmed by the central directory."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_canvas.common.zip_check import ZipStreamCheck, quick_check
from airflow_provider_canvas.exceptions import ExtractFormatError
from airflow_provider_canvas.testing.bds_files import CorruptSource, GeneratedZip, build_zip

CSV = b"UserId,UserName\r\n" + b"".join(b"%d,user%d\r\n" % (i, i) for i in range(20_000))
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors after each member."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
        self.data += b
        return len(b)


def zip_bytes(method: int = zipfile.ZIP_DEFLATED, *, streamed: bool = False, zip64: bool = False) -> bytes:
    target: io.BytesIO | _Unseekable = _Unseekable() if streamed else io.BytesIO()
    info = zipfile.ZipInfo("Users.csv", (2026, 11, 1, 0, 0, 0))
    info.compress_type = method
    with (
        zipfile.ZipFile(target, "w") as archive,  # type: ignore[arg-type]
        archive.open(info, "w", force_zip64=zip64) as member,
    ):
        member.write(CSV)
    return bytes(target.data) if isinstance(target, _Unseekable) else target.getvalue()


def check(data: bytes, tmp_path: Path, chunk: int = 65_536, label: str = "users.zip"):
    path = tmp_path / label
    path.write_bytes(data)
    checker = ZipStreamCheck(label)
    for offset in range(0, len(data), chunk):
        checker.feed(data[offset : offset + chunk])
    return checker.verify(path)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 2**20])
def test_a_deflated_extract_is_checked_as_it_streams_in_any_chunking(tmp_path, chunk):
    data = zip_bytes()
    if chunk == 1:
        data = build_zip([("Users.csv", CSV[:3000])], NOW)  # byte by byte: a small one

    checked = check(data, tmp_path, chunk)

    assert checked.member == "Users.csv"
    assert checked.reread is False
    assert checked.size == (3000 if chunk == 1 else len(CSV))


@pytest.mark.parametrize(
    "layout",
    [
        {"method": zipfile.ZIP_DEFLATED, "streamed": True},  # data descriptor after the member
        {"method": zipfile.ZIP_STORED},
        {"method": zipfile.ZIP_STORED, "zip64": True},  # sizes in the ZIP64 extra field
        {"method": zipfile.ZIP_DEFLATED, "zip64": True},
    ],
)
def test_other_layouts_are_checked_without_reading_the_file_again(tmp_path, layout):
    checked = check(zip_bytes(**layout), tmp_path)

    assert (checked.size, checked.reread) == (len(CSV), False)


def test_a_stored_member_of_unknown_length_is_checked_by_reading_it_again(tmp_path):
    checked = check(zip_bytes(zipfile.ZIP_STORED, streamed=True), tmp_path)

    assert (checked.size, checked.reread) == (len(CSV), True)


def test_the_emulators_generated_extract_passes(tmp_path):
    source = GeneratedZip("Users.csv", ["UserId", "UserName"], 5000, 1, NOW)
    data = b"".join(source.iter_range(0, source.size))

    assert check(data, tmp_path).size > 5000 * 12


def test_a_body_of_the_right_length_that_is_no_zip_is_refused(tmp_path):
    size = len(zip_bytes())
    body = b"".join(CorruptSource(size).iter_range(0, size))

    with pytest.raises(ExtractFormatError, match=r"users\.zip: not a ZIP file"):
        check(body, tmp_path)


def test_a_flipped_byte_in_the_data_is_refused(tmp_path):
    data = bytearray(zip_bytes(zipfile.ZIP_STORED))
    data[5000] ^= 0xFF  # stored: the deflate layer cannot notice, only the CRC can

    with pytest.raises(ExtractFormatError, match=r"directory does not describe the data"):
        check(bytes(data), tmp_path)


def test_a_damaged_deflate_stream_is_refused(tmp_path):
    data = bytearray(zip_bytes())
    for offset in range(200, 260):
        data[offset] ^= 0x5A

    with pytest.raises(ExtractFormatError, match=r"corrupt|does not describe"):
        check(bytes(data), tmp_path)


def test_a_zip_of_two_files_is_refused(tmp_path):
    data = build_zip([("Users.csv", CSV[:100]), ("Other.csv", b"a\r\n")], NOW)

    with pytest.raises(ExtractFormatError, match=r"holds 2 files"):
        check(data, tmp_path)


def test_a_truncated_zip_is_refused(tmp_path):
    with pytest.raises(ExtractFormatError, match=r"ends inside member 'Users.csv'"):
        check(zip_bytes()[:4000], tmp_path)


def test_reset_starts_over_after_a_restarted_download(tmp_path):
    data = zip_bytes()
    path = tmp_path / "users.zip"
    path.write_bytes(data)
    checker = ZipStreamCheck("users.zip")
    checker.feed(data[:10_000])
    checker.reset()
    checker.feed(data)

    assert checker.verify(path).size == len(CSV)


def test_quick_check_passes_a_good_file_and_names_what_is_wrong_with_bad_ones(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(zip_bytes())
    quick_check(good, good.stat().st_size, "good.zip")

    with pytest.raises(ExtractFormatError, match=r"bytes on disk, but 5 were recorded"):
        quick_check(good, 5, "good.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"".join(CorruptSource(4000).iter_range(0, 4000)))
    with pytest.raises(ExtractFormatError, match=r"bad\.zip: not a readable ZIP"):
        quick_check(bad, 4000, "bad.zip")


@pytest.mark.parametrize("chunk", [4096, 2**20])
def test_a_member_that_inflates_past_many_steps_is_counted_exactly(tmp_path, chunk):
    # 15 MB of CSV in ~30 kB of deflate: one chunk inflates in many steps, and the stream's end comes
    # in a step that continues an unconsumed tail (where CPython reports the bytes after it twice).
    big = b"UserId,UserName\r\n" + b"1,user\r\n" * 1_900_000
    data = build_zip([("Users.csv", big)], NOW)

    checked = check(data, tmp_path, chunk)

    assert (checked.size, checked.reread) == (len(big), False)

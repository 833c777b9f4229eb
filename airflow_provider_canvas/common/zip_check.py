"""Is this file a Brightspace extract? One readable ZIP member whose CRC checks out, checked as it downloads.

A ZIP's central directory comes last, but its first member starts at byte 0 with a local header,
and a deflate stream ends by itself. So :class:`ZipStreamCheck` inflates and CRCs the member as
the bytes arrive (no second read from disk), and at the end reads only the central directory back
to confirm one member with that CRC and those sizes. Layouts it cannot follow as a stream (stored
members of unknown size, other compression methods) are checked by reading the file once more.
:func:`quick_check` is the cheap look at a file already on disk: its size and central directory.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from airflow_provider_canvas.exceptions import ExtractFormatError

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"
_ZIP64_EXTRA = 0x0001
_STORED, _DEFLATED = 0, 8
_FLAG_ENCRYPTED, _FLAG_DATA_DESCRIPTOR = 0x1, 0x8
#: Inflated bytes per step: a highly compressed chunk never expands in memory beyond this.
_INFLATE_STEP = 2**20
_READ_CHUNK = 2**20
#: A local header with a name and extra field longer than this is not one Brightspace wrote.
_MAX_HEADER_BYTES = 64 * 1024


def unsafe_member_name(name: str) -> bool:
    """Absolute, drive-letter or ``..`` names: never written under, but not what Brightspace makes."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    if len(name) > 1 and name[1] == ":":
        return True
    return ".." in PurePosixPath(name).parts


def single_member(archive: zipfile.ZipFile, label: str) -> zipfile.ZipInfo:
    """The one file of an extract's ZIP; :class:`ExtractFormatError` for any other shape."""
    entries = archive.infolist()
    unsafe = [info.filename for info in entries if unsafe_member_name(info.filename)]
    if unsafe:
        raise ExtractFormatError(f"{label}: ZIP member names are absolute or contain '..': {unsafe[:5]}")
    files = [info for info in entries if not info.is_dir()]
    if len(files) != 1:
        shown = [info.filename for info in files[:5]]
        raise ExtractFormatError(
            f"{label}: a Brightspace extract holds one CSV; this ZIP holds {len(files)} files {shown}"
        )
    if files[0].flag_bits & _FLAG_ENCRYPTED:
        raise ExtractFormatError(f"{label}: the ZIP member {files[0].filename!r} is encrypted")
    return files[0]


def open_archive(source: str | os.PathLike[str] | IO[bytes], label: str) -> zipfile.ZipFile:
    """``zipfile.ZipFile(source)``: reads the central directory only; refusals as ExtractFormatError."""
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ExtractFormatError(f"{label}: not a readable ZIP file, corrupt or truncated ({err})") from None


def quick_check(source: str | os.PathLike[str] | IO[bytes], size: int | None, label: str) -> None:
    """The cheap check of a file on disk: ``size`` bytes, a central directory, one member with its header.

    Reads the end of the file and one local header, never the data: a body that is not a ZIP is
    caught, a ZIP damaged inside its member's data is not (the download check is what catches that).
    """
    if isinstance(source, (str, os.PathLike)) and size is not None:
        actual = os.path.getsize(source)
        if actual != size:
            raise ExtractFormatError(f"{label}: {actual} bytes on disk, but {size} were recorded")
    with open_archive(source, label) as archive:
        member = single_member(archive, label)
        try:
            archive.open(member).close()  # reads and checks the member's local header
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, ValueError) as err:
            raise ExtractFormatError(f"{label}: cannot open ZIP member {member.filename!r} ({err})") from None


def _zip64_compressed_size(extra: bytes) -> int | None:
    """The compressed size a local header's ZIP64 field gives (it holds both sizes, uncompressed first)."""
    offset = 0
    while offset + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, offset)
        if kind == _ZIP64_EXTRA and length >= 16:
            return int(struct.unpack_from("<Q", extra, offset + 12)[0])
        offset += 4 + length
    return None


@dataclass(frozen=True)
class CheckedZip:
    """What a check found: the member, its CRC and sizes, and whether the file had to be read again."""

    member: str
    crc: int
    size: int
    compressed_size: int
    reread: bool


class ZipStreamCheck:
    """Checks a download as it arrives: :meth:`feed` every byte in order, then :meth:`verify` the file.

    ``reset()`` starts over (the download restarted from byte 0). Nothing is kept but the member's
    local header: memory stays flat whatever the size.

    :param label: names the file in errors.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.reset()

    def reset(self) -> None:
        self._stage = "header"  # header -> data -> tail; or undecided (check by reading again), bad
        self._problem = ""
        self._header = bytearray()
        self._member = ""
        self._method = _STORED
        self._left: int | None = None  # stored data still to come
        self._inflate: zlib._Decompress | None = None
        self._crc = 0
        self._size = 0
        self._compressed = 0

    def feed(self, data: bytes) -> None:
        if self._stage == "header":
            data = self._take_header(data)
        if self._stage == "data" and data:
            self._take_data(data)

    def _fail(self, problem: str) -> bytes:
        self._stage, self._problem = "bad", problem
        return b""

    def _take_header(self, data: bytes) -> bytes:
        self._header += data
        if len(self._header) >= 4 and bytes(self._header[:4]) != _LOCAL_MAGIC:
            return self._fail("not a ZIP file: it does not start with a ZIP member header")
        if len(self._header) < _LOCAL_HEADER.size:
            return b""
        fields = _LOCAL_HEADER.unpack_from(self._header)
        flags, method, csize, name_len, extra_len = fields[2], fields[3], fields[7], fields[9], fields[10]
        end = _LOCAL_HEADER.size + name_len + extra_len
        if end > _MAX_HEADER_BYTES:
            return self._fail("its first ZIP member header is implausibly long")
        if len(self._header) < end:
            return b""
        name_start = _LOCAL_HEADER.size
        self._member = bytes(self._header[name_start : name_start + name_len]).decode("utf-8", "replace")
        extra = bytes(self._header[name_start + name_len : end])
        rest = bytes(self._header[end:])
        self._header = bytearray()
        if flags & _FLAG_ENCRYPTED:
            return self._fail(f"the ZIP member {self._member!r} is encrypted")
        self._method = method
        if method == _DEFLATED:
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        elif method == _STORED and not flags & _FLAG_DATA_DESCRIPTOR:
            self._left = _zip64_compressed_size(extra) if csize == 0xFFFFFFFF else csize
            if self._left is None:
                return self._fail(f"the ZIP member {self._member!r} has no size in its header")
        else:
            self._stage = "undecided"  # a stored member of unknown length, or another method
            return b""
        self._stage = "data"
        return rest

    def _take_data(self, data: bytes) -> None:
        if self._inflate is None:
            assert self._left is not None
            take = data[: self._left]
            self._crc = zlib.crc32(take, self._crc)
            self._size += len(take)
            self._compressed += len(take)
            self._left -= len(take)
            if self._left == 0:
                self._stage = "tail"
            return
        inflate = self._inflate
        pending = data
        try:
            while pending and not inflate.eof:
                out = inflate.decompress(pending, _INFLATE_STEP)
                self._crc = zlib.crc32(out, self._crc)
                self._size += len(out)
                # At the stream's end CPython leaves the bytes after it in unused_data AND
                # unconsumed_tail: count them once.
                left = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
                self._compressed += len(pending) - len(left)
                pending = inflate.unconsumed_tail
        except zlib.error as err:
            self._fail(f"the deflate data of ZIP member {self._member!r} is corrupt ({err})")
            return
        if inflate.eof:
            self._stage = "tail"

    def verify(self, path: str | os.PathLike[str]) -> CheckedZip:
        """The verdict on the whole file at ``path``; :class:`ExtractFormatError` says what is wrong."""
        if self._stage == "bad":
            raise ExtractFormatError(f"{self.label}: {self._problem}")
        if self._stage in ("header", "data"):
            what = "its first ZIP member header" if self._stage == "header" else f"member {self._member!r}"
            raise ExtractFormatError(f"{self.label}: the file ends inside {what}: not a complete ZIP")
        with open_archive(path, self.label) as archive:
            member = single_member(archive, self.label)
            if self._stage == "undecided":
                return self._read_again(archive, member)
            found = (member.header_offset, member.CRC, member.file_size, member.compress_size)
            streamed = (0, self._crc, self._size, self._compressed)
            if found != streamed:
                raise ExtractFormatError(
                    f"{self.label}: the ZIP's directory does not describe the data it holds "
                    f"(offset, CRC, size, compressed size: directory {found}, data {streamed}): "
                    "corrupt or not one archive"
                )
        return CheckedZip(member.filename, self._crc, self._size, self._compressed, reread=False)

    def _read_again(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> CheckedZip:
        """Inflate the member from disk: zipfile raises on a bad CRC at its end."""
        size = 0
        try:
            with archive.open(member) as data:
                while chunk := data.read(_READ_CHUNK):
                    size += len(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, zlib.error) as err:
            raise ExtractFormatError(
                f"{self.label}: the ZIP member {member.filename!r} is corrupt or unreadable ({err})"
            ) from None
        return CheckedZip(member.filename, member.CRC, size, member.compress_size, reread=True)

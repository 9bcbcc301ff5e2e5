"""Reading a bag inside a ZIP in place, safely: nothing is extracted, nothing is trusted.

Threat model notes (the file is the attacker's):

* **Every byte is accounted for, once.** The ZIP's records are audited from the raw
  bytes (:func:`audit`), and :mod:`zipfile` must then read the same central directory
  (a second reader that has to agree): the end record (and its ZIP64
  form) agrees with the central directory (entry count, size, offset, one disk, no
  comment, nothing after it); each central entry agrees with its local header (version,
  flags, method, time, CRC, sizes, name) and, for streamed members, with its data
  descriptor; and the members, the central directory and the end record tile the file
  with no gap and no overlap. Overlapping members (the zip bomb that reuses one
  compressed stream for many entries), data hidden between members, a second ZIP
  prepended or appended, a local header that tells one tool another name or size than
  the central directory tells another: each is a problem naming the member, and the
  bag is not read at all (two readers could see two different bags).
* **Names:** one top folder, no absolute paths, ``..``, backslashes, drive letters,
  control characters, invalid UTF-8, non-ASCII without the UTF-8 flag, or two members of
  one name; names that differ only in case or Unicode form are a warning (they collide
  when unpacked on macOS or Windows). Symbolic links, devices and set-id bits refused.
* **Members it cannot read honestly** (encrypted, a method other than stored or
  deflate, a declared size deflate cannot produce from its compressed size, a stored
  member whose two sizes differ) are kept as named but unreadable: every read of one
  raises :class:`VerificationError` saying why, never the ``RuntimeError`` or
  ``NotImplementedError`` :mod:`zipfile` would raise. Members are read from where the
  audit found them and inflated here (:class:`_Member`), so damaged data (CRC, deflate,
  truncation, more bytes than declared) is likewise a :class:`VerificationError`
  naming the member, found as soon as it shows.
* **Bounds:** at most :data:`MAX_MEMBERS` members, names of at most
  :data:`MAX_NAME_BYTES`, extra fields of at most :data:`MAX_EXTRA_BYTES`; members are
  hashed as they stream; JSON, notes and keys are read whole only below
  :data:`MAX_SMALL_FILE`. Every quoted name or value is cut to :data:`QUOTE_LIMIT`
  characters and escaped (:func:`quote`), so no message can be long or hold raw
  control bytes.
"""

from __future__ import annotations

import io
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from chain_of_custody.digest import CHUNK_SIZE, Digest, Hasher
from chain_of_custody.errors import BundleError, VerificationError

MAX_SMALL_FILE = 16 * 1024 * 1024
MAX_MEMBERS = 200_000
MAX_NAME_BYTES = 1024
MAX_EXTRA_BYTES = 1024
QUOTE_LIMIT = 120
DEFLATE_MAX_RATIO = 1032
"""The most raw deflate can expand: a 258-byte match in as little as 2 bits."""

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sIQI")
_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_EOCD64_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4sBBHHHHHIIIHHHHHII")
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIG = b"PK\x03\x04"
_DESCRIPTOR_SIG = b"PK\x07\x08"
_ZIP64_EXTRA = 0x0001
_U16, _U32 = 0xFFFF, 0xFFFFFFFF

_ENCRYPTED, _DESCRIPTOR, _PATCHED, _STRONG, _UTF8 = 0x0001, 0x0008, 0x0020, 0x0040, 0x0800
_KNOWN_FLAGS = 0x0001 | 0x0002 | 0x0004 | _DESCRIPTOR | _PATCHED | _STRONG | _UTF8
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_OTHER_METHODS = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "LZMA",
                  93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES encryption"}
_MAX_VERSION = 63  # ZIP 6.3, the newest APPNOTE
_OPEN_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError,
                struct.error)


def quote(value: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """``value`` quoted for a message: escaped like ``repr`` (no raw control bytes, no
    bidirectional overrides) and cut to ``limit`` characters, saying how much was cut."""
    whole = len(value)
    part = value[:limit]
    text = part.decode("utf-8", "backslashreplace") if isinstance(part, bytes) else part
    shown = repr(text)
    if whole > limit:
        unit = "bytes" if isinstance(value, bytes) else "characters"
        shown += f"… ({whole - limit} more {unit})"
    return shown


# -- the audit of the raw records -----------------------------------------------------------


@dataclass
class Entry:
    """One member as its central directory entry describes it, and where its local
    header says its data lies (``data_start``, ``end``: 0 until the header is read)."""

    name: str
    raw_name: bytes
    needed: int
    flags: int
    method: int
    time: int
    date: int
    crc: int
    compress_size: int
    file_size: int
    offset: int
    data_start: int = 0
    end: int = 0


@dataclass
class Audit:
    """What :func:`audit` found: the members, the problems of the ZIP as a whole (any
    one makes the ZIP unreadable as a bag), why some members cannot be read, warnings."""

    entries: list[Entry]
    problems: list[str]
    unreadable: dict[str, str]
    warnings: list[str]


def _read_at(fp: IO[bytes], offset: int, size: int) -> bytes:
    fp.seek(offset)
    return fp.read(size)


class _Stop(Exception):
    """The audit cannot go on (the message says why)."""


def _extras(data: bytes) -> dict[int, bytes] | None:
    """The extra field's records by header id; None when it is not a chain of records."""
    fields: dict[int, bytes] = {}
    at = 0
    while at + 4 <= len(data):
        header, length = struct.unpack_from("<HH", data, at)
        if at + 4 + length > len(data) or header in fields:
            return None
        fields[header] = data[at + 4:at + 4 + length]
        at += 4 + length
    return fields if at == len(data) else None


def _zip64_values(extra: bytes, wanted: list[bool]) -> list[int] | None:
    """The 8-byte values of a ZIP64 extra record for the fields that are maxed out."""
    count = sum(wanted)
    if len(extra) < 8 * count:
        return None
    return list(struct.unpack_from(f"<{count}Q", extra, 0)) if count else []


def _method_name(method: int) -> str:
    return _METHODS.get(method) or _OTHER_METHODS.get(method, "unknown")


def audit(fp: IO[bytes], size: int, label: str) -> Audit:
    """Check the raw records of the ZIP in ``fp`` (``size`` bytes). Raises
    :class:`BundleError` when it has no end record at all (empty, truncated, not a ZIP);
    everything else is in the returned :class:`Audit`."""
    found = Audit([], [], {}, [])
    try:
        _audit(fp, size, label, found)
    except _Stop as stop:
        found.problems.append(str(stop))
    except (OSError, struct.error) as exc:  # a read that came up short
        found.problems.append(f"the ZIP's records cannot be read: {exc}")
    return found


def _end_record(fp: IO[bytes], size: int, label: str) -> tuple[int, tuple[int, ...], bytes]:
    tail_size = min(size, _EOCD.size + _U16)
    tail = _read_at(fp, size - tail_size, tail_size)
    at = tail.rfind(_EOCD_SIG)
    while at >= 0 and len(tail) - at < _EOCD.size:
        at = tail.rfind(_EOCD_SIG, 0, at)
    if at < 0:
        if size == 0:
            raise BundleError(f"{label} is an empty file, so not an evidence bundle")
        if _read_at(fp, 0, 4) == _LOCAL_SIG:
            raise BundleError(f"{label} is a truncated ZIP (it begins like one but has no "
                              "end-of-central-directory record), so not an evidence bundle")
        raise BundleError(f"{label} is not a ZIP file, so not an evidence bundle")
    fields = _EOCD.unpack_from(tail, at)
    return size - tail_size + at, fields, tail[at + _EOCD.size:]


def _audit(fp: IO[bytes], size: int, label: str, found: Audit) -> None:
    eocd_at, (_, disk, cd_disk, on_disk, total, cd_size, cd_offset, comment_size), after = \
        _end_record(fp, size, label)
    problems = found.problems
    if comment_size != len(after):
        problems.append(f"the end-of-central-directory record declares a {comment_size}-byte "
                        f"comment, but {len(after)} bytes follow it")
    elif after:
        problems.append(f"the ZIP carries a comment ({quote(after)}), which no signature "
                        "covers; a bundle has none")
    cd_end = eocd_at
    locator_at = eocd_at - _LOCATOR.size
    locator = _read_at(fp, locator_at, _LOCATOR.size) if locator_at >= 0 else b""
    if locator[:4] == _LOCATOR_SIG:
        _, z64_disk, z64_at, disks = _LOCATOR.unpack(locator)
        record = _read_at(fp, z64_at, _EOCD64.size) if z64_at < locator_at else b""
        if len(record) < _EOCD64.size or record[:4] != _EOCD64_SIG:
            raise _Stop(f"the ZIP64 end record locator points at offset {z64_at}, where there "
                        "is no ZIP64 end record")
        (_, record_size, _, _, disk64, cd_disk64, on_disk64, total64, cd_size64,
         cd_offset64) = _EOCD64.unpack(record)
        if z64_at + 12 + record_size != locator_at:
            problems.append(f"the ZIP64 end record at offset {z64_at} does not end where its "
                            "locator begins")
        if z64_disk or disks != 1:
            problems.append("the ZIP64 end record locator names several disks")
        for short, long, what in ((disk, disk64, "disk number"),
                                  (cd_disk, cd_disk64, "central directory disk"),
                                  (on_disk, on_disk64, "entry count on this disk"),
                                  (total, total64, "entry count"),
                                  (cd_size, cd_size64, "central directory size"),
                                  (cd_offset, cd_offset64, "central directory offset")):
            if short not in (long, _U16, _U32):
                problems.append(f"the end record and the ZIP64 end record disagree on the "
                                f"{what} ({short} and {long})")
        disk, cd_disk, on_disk, total = disk64, cd_disk64, on_disk64, total64
        cd_size, cd_offset, cd_end = cd_size64, cd_offset64, z64_at
    if disk or cd_disk:
        raise _Stop("the ZIP spans several disks; a bundle is one file")
    if on_disk != total:
        problems.append(f"the end record counts {on_disk} entries on this disk but {total} "
                        "in all")
    if total > MAX_MEMBERS:
        raise _Stop(f"the end record declares {total} members; a bundle holds at most "
                    f"{MAX_MEMBERS}")
    if cd_offset + cd_size != cd_end:
        raise _Stop(f"the central directory ({cd_size} bytes at offset {cd_offset}) does not "
                    f"end where the end record begins (offset {cd_end}): "
                    f"{abs(cd_end - cd_offset - cd_size)} bytes unaccounted for")
    entries = _central_directory(fp, cd_offset, cd_size, found)
    if len(entries) != total:
        problems.append(f"the end record counts {total} entries, the central directory "
                        f"holds {len(entries)}")
    if problems:
        return
    found.entries = [_local(fp, entry, cd_offset, found) for entry in entries]
    _tiling(found, cd_offset)


def _central_directory(fp: IO[bytes], offset: int, size: int, found: Audit) -> list[Entry]:
    fp.seek(offset)
    reader = io.BufferedReader(_Window(fp, offset, size), buffer_size=64 * 1024)
    entries: list[Entry] = []
    at = 0
    while at < size:
        if len(entries) >= MAX_MEMBERS:
            raise _Stop(f"the central directory holds more than {MAX_MEMBERS} members")
        fixed = reader.read(_CENTRAL.size)
        if len(fixed) < _CENTRAL.size or fixed[:4] != _CENTRAL_SIG:
            raise _Stop(f"the central directory is damaged at its entry {len(entries) + 1} "
                        f"(offset {offset + at})")
        (_, version, system, needed, flags, method, time, date, crc, csize, usize,
         name_size, extra_size, comment_size, disk_start, internal, external,
         local_at) = _CENTRAL.unpack(fixed)
        raw_name = reader.read(name_size)
        if name_size > MAX_NAME_BYTES:
            raise _Stop(f"member {quote(raw_name)} has a name of {name_size} bytes; a "
                        f"bundle's are at most {MAX_NAME_BYTES}")
        extra = reader.read(extra_size)
        comment = reader.read(comment_size)
        at += _CENTRAL.size + name_size + extra_size + comment_size
        if at > size or len(raw_name) + len(extra) + len(comment) \
                != name_size + extra_size + comment_size:
            raise _Stop(f"the central directory entry of {quote(raw_name)} runs past the "
                        "central directory")
        name = _name(raw_name, flags)
        shown = quote(name)
        problems = found.problems
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise _Stop(f"unsafe member name {shown}: it holds control characters")
        fields = _extras(extra) if extra_size <= MAX_EXTRA_BYTES else None
        if fields is None:
            problems.append(f"member {shown} has a malformed extra field ({extra_size} bytes)")
            fields = {}
        maxed = [usize == _U32, csize == _U32, local_at == _U32, disk_start == _U16]
        if any(maxed):
            values = _zip64_values(fields.get(_ZIP64_EXTRA, b""), maxed[:3])
            if values is None:
                problems.append(f"member {shown} has sizes marked ZIP64 but no ZIP64 extra "
                                "field holding them")
                values = [0, 0, 0]
            it = iter(values)
            usize = next(it) if maxed[0] else usize
            csize = next(it) if maxed[1] else csize
            local_at = next(it) if maxed[2] else local_at
        if comment:
            problems.append(f"member {shown} carries a comment ({quote(comment)}), which no "
                            "signature covers")
        if disk_start:
            problems.append(f"member {shown} is on disk {disk_start}; a bundle is one file")
        if needed > _MAX_VERSION:
            problems.append(f"member {shown} needs ZIP version {needed / 10:.1f} to be read, "
                            "newer than any")
        if version > _MAX_VERSION:
            problems.append(f"member {shown} claims to be made by ZIP version "
                            f"{version / 10:.1f}, newer than any")
        if flags & ~_KNOWN_FLAGS:
            problems.append(f"member {shown} sets general-purpose flags "
                            f"0x{flags & ~_KNOWN_FLAGS:04x} that no bundle writer sets")
        if internal & ~1:
            problems.append(f"member {shown} sets unknown internal attributes 0x{internal:04x}")
        mode = external >> 16 if system == 3 else 0
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            problems.append(f"member {shown} is a symbolic link")
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            problems.append(f"member {shown} is not a regular file (mode 0o{mode:o})")
        elif mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
            problems.append(f"member {shown} asks for set-user-ID, set-group-ID or sticky bits "
                            f"(mode 0o{mode:o})")
        if name.endswith("/") and (usize or csize):
            problems.append(f"directory entry {shown} holds {usize} bytes")
        reason = _unreadable(flags, method, csize, usize)
        if reason:
            found.unreadable[name] = reason
        entries.append(Entry(name, raw_name, needed, flags, method, time, date, crc, csize,
                             usize, local_at))
    return entries


def _unreadable(flags: int, method: int, csize: int, usize: int) -> str:
    if flags & (_ENCRYPTED | _STRONG):
        return "is encrypted (a bundle's members never are), so it cannot be checked"
    if method not in _METHODS:
        return (f"uses compression method {method} ({_method_name(method)}); a bundle's "
                "members are stored or deflated")
    if flags & _PATCHED:
        return "is compressed patched data, which no bundle writer makes"
    if method == zipfile.ZIP_STORED and csize != usize:
        return f"is stored (not compressed) but declares {usize} bytes in {csize}"
    if method == zipfile.ZIP_DEFLATED and usize > csize * DEFLATE_MAX_RATIO + 64:
        return (f"declares {usize} bytes from {csize} compressed bytes, more than deflate "
                f"can expand ({DEFLATE_MAX_RATIO}:1): its sizes are a lie")
    return ""


def _name(raw: bytes, flags: int) -> str:
    if flags & _UTF8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Stop(f"member name {quote(raw)} is not valid UTF-8 although its "
                        "UTF-8 flag is set") from exc
    if not raw.isascii():
        raise _Stop(f"member name {quote(raw)} is not ASCII but has no UTF-8 flag "
                    "(tools disagree on how to read it)")
    return raw.decode("ascii")


def _local(fp: IO[bytes], entry: Entry, cd_offset: int, found: Audit) -> Entry:
    """Compare ``entry`` with its local header (and data descriptor); fill in where its
    data starts and where the member ends."""
    needed, flags, method = entry.needed, entry.flags, entry.method
    time, date, raw_name = entry.time, entry.date, entry.raw_name
    shown = quote(entry.name)
    header = _read_at(fp, entry.offset, _LOCAL.size) if entry.offset < cd_offset else b""
    if len(header) < _LOCAL.size or header[:4] != _LOCAL_SIG:
        raise _Stop(f"member {shown}: no local header at offset {entry.offset}")
    (_, l_needed, l_flags, l_method, l_time, l_date, l_crc, l_csize, l_usize, name_size,
     extra_size) = _LOCAL.unpack(header)
    l_name = fp.read(name_size)
    l_extra = fp.read(extra_size) if extra_size <= MAX_EXTRA_BYTES else b""
    differ = [what for what, a, b in (("version needed", l_needed, needed),
                                      ("flags", l_flags, flags), ("method", l_method, method),
                                      ("time", l_time, time), ("date", l_date, date),
                                      ("name", l_name, raw_name)) if a != b]
    fields = _extras(l_extra) if extra_size <= MAX_EXTRA_BYTES else None
    if fields is None:
        found.problems.append(f"member {shown} has a malformed extra field in its local header")
        fields = {}
    zip64 = _ZIP64_EXTRA in fields
    if zip64 and (l_usize == _U32 or l_csize == _U32):
        values = _zip64_values(fields[_ZIP64_EXTRA], [l_usize == _U32, l_csize == _U32])
        it = iter(values or [0, 0])
        l_usize = next(it) if l_usize == _U32 else l_usize
        l_csize = next(it) if l_csize == _U32 else l_csize
    declared = (entry.crc, entry.compress_size, entry.file_size)
    local = (l_crc, l_csize, l_usize)
    streamed = bool(flags & _DESCRIPTOR)
    if local != declared and not (streamed and local == (0, 0, 0)):
        differ.append("CRC and sizes")
    entry.data_start = entry.offset + _LOCAL.size + name_size + extra_size
    end = entry.data_start + entry.compress_size
    if streamed and end + 12 <= cd_offset:
        signature = _read_at(fp, end, 4) == _DESCRIPTOR_SIG
        wide = zip64 or entry.compress_size >= _U32 or entry.file_size >= _U32
        layout = "<IQQ" if wide else "<III"
        start = end + 4 * signature
        raw = _read_at(fp, start, struct.calcsize(layout))
        end = start + struct.calcsize(layout)
        if len(raw) != struct.calcsize(layout) or struct.unpack(layout, raw) != declared:
            differ.append("data descriptor")
    if differ:
        found.problems.append(f"member {shown}: its local header and central directory entry "
                              f"disagree ({', '.join(differ)}): two tools could read two "
                              "different files")
    entry.end = end
    return entry


def _tiling(found: Audit, cd_offset: int) -> None:
    """The members and the central directory cover the file once, in order."""
    at, before = 0, "the start of the ZIP"
    for entry in sorted(found.entries, key=lambda e: (e.offset, e.end)):
        shown = quote(entry.name)
        if entry.offset > at:
            found.problems.append(f"{entry.offset - at} bytes between {before} and member "
                                  f"{shown} belong to no member")
        elif entry.offset < at:
            found.problems.append(f"member {shown} overlaps {before} (entries that share "
                                  "bytes: a zip bomb's trick, or a forgery)")
        at, before = max(at, entry.end), f"member {shown}"
    if at > cd_offset:
        found.problems.append(f"{before} runs into the central directory")
    elif at < cd_offset:
        found.problems.append(f"{cd_offset - at} bytes between {before} and the central "
                              "directory belong to no member")


# -- reading ----------------------------------------------------------------------------------


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of a seekable file, as a seekable file of its own."""

    def __init__(self, fp: IO[bytes], start: int, size: int) -> None:
        self._fp, self._start, self._size, self._at = fp, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._at = base + offset
        return self._at

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = max(0, min(len(buffer), self._size - self._at))
        if not want:
            return 0
        self._fp.seek(self._start + self._at)
        got = self._fp.readinto(memoryview(buffer)[:want])  # type: ignore[attr-defined]
        self._at += got
        return int(got)


class _Member(io.RawIOBase):
    """A member's bytes, read from where the audit found them and inflated here, in
    pieces of at most :data:`CHUNK_SIZE`: it must inflate to exactly its declared size
    and CRC, its deflate stream must end exactly at its compressed size. Anything else
    raises :class:`VerificationError` naming the member (``shown``), as soon as it shows:
    a member that inflates past its declared size stops there (a zip bomb's lie).
    ``on_bytes`` (if given) is told the size of every piece read, at most one call per
    piece."""

    def __init__(self, fp: IO[bytes], entry: Entry, shown: str,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self._raw = _Window(fp, entry.data_start, entry.compress_size)
        self._entry, self._shown = entry, shown
        self._on_bytes = on_bytes
        deflated = entry.method == zipfile.ZIP_DEFLATED
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        self._crc = self._size = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _damaged(self, why: str) -> VerificationError:
        return VerificationError(f"{self._shown} is damaged in the ZIP: {why}")

    def _next(self, want: int) -> bytes:
        assert self._inflate is not None
        data = b""
        while not data and not self._inflate.eof:
            source = self._inflate.unconsumed_tail or self._raw.read(64 * 1024)
            if not source:
                break
            try:
                data = self._inflate.decompress(source, want)
            except zlib.error as exc:
                raise self._damaged(f"its deflate data is invalid ({exc})") from exc
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._done:
            return 0
        want = min(len(buffer), CHUNK_SIZE)
        if self._inflate is None:  # stored: straight into the caller's buffer
            got = self._raw.readinto(memoryview(buffer)[:want])
            data = memoryview(buffer)[:got]
        else:
            data = memoryview(self._next(want))
            got = len(data)
            buffer[:got] = data
        declared = self._entry.file_size
        if self._size + got > declared:
            raise self._damaged(f"it holds more than its declared {declared} bytes (a zip "
                                "bomb's lie, or damage)")
        if not got:
            self._finish()
            return 0
        self._size += got
        self._crc = zlib.crc32(data, self._crc)
        if self._on_bytes is not None:
            self._on_bytes(got)
        return got

    def _finish(self) -> None:
        self._done = True
        inflate = self._inflate
        if inflate is not None and not inflate.eof:
            raise self._damaged("its deflate data is cut short")
        if inflate is not None and (inflate.unused_data or inflate.unconsumed_tail
                                    or self._raw.read(1)):
            raise self._damaged("its deflate data ends before its compressed size")
        if self._size != self._entry.file_size:
            raise self._damaged(f"it holds {self._size} bytes, not its declared "
                                f"{self._entry.file_size}")
        if self._crc != self._entry.crc:
            raise self._damaged("Bad CRC-32 (its bytes are not those it was written with)")


class ZipView:
    """An audited ZIP: its members by full name, readable only when the audit passed."""

    def __init__(self, fp: IO[bytes], size: int, label: str) -> None:
        """Raises :class:`BundleError` when ``fp`` has no ZIP end record at all."""
        self.fp = fp
        found = audit(fp, size, label)
        self.problems = found.problems
        self.warnings = found.warnings
        self.unreadable = found.unreadable
        self.entries = found.entries
        self.infos: dict[str, zipfile.ZipInfo] = {}
        self._entries = {e.name: e for e in self.entries}
        self.zip: zipfile.ZipFile | None = None
        if not self.problems:
            self._open()

    def _open(self) -> None:
        try:
            self.zip = zipfile.ZipFile(self.fp)
            infos = self.zip.infolist()
        except _OPEN_ERRORS as exc:
            self.problems.append(f"the ZIP cannot be read: {quote(str(exc))}")
            return
        ours = [(e.name, e.offset, e.compress_size, e.file_size, e.crc) for e in self.entries]
        theirs = [(i.filename, i.header_offset, i.compress_size, i.file_size, i.CRC)
                  for i in infos]
        if ours != theirs:
            self.problems.append("the ZIP reads differently to two readers (the central "
                                 "directory is ambiguous)")
            return
        seen: dict[str, str] = {}
        for entry, info in zip(self.entries, infos, strict=True):
            if entry.name in self.infos:
                self.problems.append(f"the ZIP holds two members named {quote(entry.name)}")
                continue
            self.infos[entry.name] = info
            folded = unicodedata.normalize("NFC", entry.name).casefold()
            if folded in seen:
                self.warnings.append(f"members {quote(seen[folded])} and {quote(entry.name)} "
                                     "differ only in letter case or Unicode form (one "
                                     "overwrites the other when unpacked on macOS or Windows)")
            seen.setdefault(folded, entry.name)

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def is_stored(self, name: str) -> bool:
        info = self.infos[name]
        return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & _ENCRYPTED

    def open(self, name: str, shown: str,
             on_bytes: Callable[[int], None] | None = None) -> BinaryIO:
        """Member ``name``'s bytes; ``shown`` names it in errors. Raises
        :class:`VerificationError` if it cannot be read, ``KeyError`` if absent.
        ``on_bytes`` is told the size of each piece read (see :class:`_Member`)."""
        return io.BufferedReader(self.member(name, shown, on_bytes), buffer_size=CHUNK_SIZE)

    def member(self, name: str, shown: str,
               on_bytes: Callable[[int], None] | None = None) -> _Member:
        """Like :meth:`open`, unbuffered (``readinto`` fills the caller's buffer)."""
        reason = self.unreadable.get(name)
        if reason:
            raise VerificationError(f"{shown} {reason}")
        return _Member(self.fp, self._entries[name], shown, on_bytes)

    def window(self, name: str) -> _Window:
        """A stored member's bytes as a seekable file (for a ZIP inside the ZIP)."""
        entry = self._entries[name]
        return _Window(self.fp, entry.data_start, entry.compress_size)


class BagReader:
    """The bag inside a ZIP: members by their path relative to the bag's folder."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` and audit and index its members. Raises :class:`BundleError` if
        it is missing, a directory, unreadable or not a ZIP at all."""
        try:
            self._file: BinaryIO = path.open("rb")
        except FileNotFoundError as exc:
            raise BundleError(f"{path}: no such file") from exc
        except IsADirectoryError as exc:
            raise BundleError(f"{path} is a directory, not a bundle (.zip)") from exc
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            size = path.stat().st_size
            self.view = ZipView(self._file, size, str(path))
        except BaseException:
            self._file.close()
            raise
        self.root = ""
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.problems: list[str] = self.view.problems
        self.warnings: list[str] = self.view.warnings
        if not self.problems:
            self._index()

    def close(self) -> None:
        self.view.close()
        self._file.close()

    def _index(self) -> None:
        for name in self.view.infos:
            parts = name.split("/")
            if (name.startswith("/") or "\\" in name
                    or (len(parts[0]) >= 2 and parts[0][1] == ":")
                    or any(p in ("", ".", "..") for p in parts[:-1])
                    or parts[-1] in (".", "..")):
                self.problems.append(f"unsafe member name {quote(name)}")
        infos = list(self.view.infos.values())
        tops = {info.filename.split("/", 1)[0] for info in infos}
        if self.problems:
            return
        if len(tops) != 1 or not infos:
            self.problems.append(
                f"the ZIP must hold exactly one folder (the bag), it holds {len(tops)} "
                "top-level entries"
            )
            return
        self.root = tops.pop()
        for name, info in self.view.infos.items():
            parts = name.split("/")
            if info.is_dir():
                continue
            if len(parts) < 2:
                self.problems.append(f"member {quote(name)} is outside the bag's folder")
                continue
            self.members[name[len(self.root) + 1:]] = info

    def has(self, name: str) -> bool:
        return name in self.members

    def _full(self, name: str) -> str:
        return self.members[name].filename

    def open(self, name: str, on_bytes: Callable[[int], None] | None = None) -> BinaryIO:
        """A member's bytes as a stream (``KeyError`` if there is no such member). Raises
        :class:`VerificationError` if it cannot be read; a read of damaged data raises
        it too, naming the member. ``on_bytes`` is told the size of each piece read."""
        return self.view.open(self._full(name), name, on_bytes)

    def window(self, name: str) -> BinaryIO:
        """A stored member as a seekable file. Raises :class:`VerificationError` if it is
        compressed, encrypted or unreadable."""
        full = self._full(name)
        reason = self.view.unreadable.get(full)
        if reason:
            raise VerificationError(f"{name} {reason}")
        if not self.view.is_stored(full):
            raise VerificationError(f"{name} is compressed; a bundle stores it as it is")
        return io.BufferedReader(self.view.window(full), buffer_size=CHUNK_SIZE)

    def read_small(self, name: str) -> bytes:
        """A whole (small) file. Raises VerificationError if absent, too big or damaged."""
        info = self.members.get(name)
        if info is None:
            raise VerificationError(f"{name} is missing from the bundle")
        if info.file_size > MAX_SMALL_FILE:
            raise VerificationError(f"{name} is {info.file_size} bytes, too large to be one "
                                    f"(at most {MAX_SMALL_FILE})")
        with self.open(name) as stream:
            data = stream.read(MAX_SMALL_FILE + 1)
        if len(data) > MAX_SMALL_FILE:
            raise VerificationError(f"{name} holds more than {MAX_SMALL_FILE} bytes")
        return data

    def digest(self, name: str, on_bytes: Callable[[int], None] | None = None) -> Digest:
        """Both digests of a member, streamed. Raises VerificationError when damaged.
        ``on_bytes`` is told the size of each piece hashed."""
        hasher = Hasher()
        buffer = memoryview(bytearray(CHUNK_SIZE))
        with self.view.member(self._full(name), name, on_bytes) as stream:
            while got := stream.readinto(buffer):
                hasher.update(buffer[:got])
        return hasher.digest()


__all__ = ["MAX_MEMBERS", "MAX_SMALL_FILE", "QUOTE_LIMIT", "BagReader", "ZipView", "audit",
           "quote"]

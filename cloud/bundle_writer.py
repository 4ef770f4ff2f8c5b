"""Writing an auditor bundle member by member, so that its minute records never sit in memory as a whole.

A contract of many machine-years carries millions of records. The writer
compresses each record file as its lines arrive and keeps only the ZIP
bytes, about 8 to 14 bytes a record, and each member's SHA-256 for the manifest,
which it writes last. The layout is that of :mod:`valuegate.cloud.bundle`.

A caller that streams the bundle takes the finished bytes with
:meth:`BundleWriter.take` after each member, so the writer then keeps only
the member being written. The ZIP bytes are the same either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from typing import Any

__all__ = ("BundleWriter", "RecordFile", "json_bytes")

# A fixed timestamp on every member keeps the ZIP bytes the same for the same contents.
_STAMP = (2000, 1, 1, 0, 0, 0)


def json_bytes(data: Any) -> bytes:
    """Return ``data`` as the indented, key-sorted UTF-8 JSON of a bundle's small files."""
    return (json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


class _TailBuffer:
    """A seekable byte sink that hands over its bytes up to the current end and then drops them.

    zipfile writes a member's local header, its data, then seeks back to fill
    the header's sizes and CRC. Once the member is closed it never seeks back
    again, so the bytes written so far are final and can be sent.
    """

    def __init__(self) -> None:
        self._base = 0  # offset of the first byte still held
        self._data = bytearray()
        self._position = 0

    def write(self, data: bytes) -> int:
        offset = self._position - self._base
        if offset < 0:
            raise io.UnsupportedOperation(f"cannot write at offset {self._position}: the bytes before {self._base} were already taken")
        self._data[offset:offset + len(data)] = data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._position = offset
        elif whence == io.SEEK_CUR:
            self._position += offset
        else:
            self._position = self._base + len(self._data) + offset
        return self._position

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        """Return the bytes held and drop them. A later write must not go before them."""
        chunk = bytes(self._data)
        self._base += len(chunk)
        self._data.clear()
        return chunk


class BundleWriter:
    """Writer of one bundle ZIP: members go in the order they are added, and :meth:`finish` returns the bytes not taken yet."""

    def __init__(self) -> None:
        self._buffer = _TailBuffer()
        self._archive = zipfile.ZipFile(self._buffer, "w", compression=zipfile.ZIP_DEFLATED)  # type: ignore[arg-type]
        self._open: str | None = None
        self.digests: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_STAMP)
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    def add(self, name: str, data: bytes) -> None:
        """Add one member and note its SHA-256 for the manifest."""
        self._archive.writestr(self._info(name), data)
        self.digests[name] = "sha256:" + hashlib.sha256(data).hexdigest()

    def record_file(self, machine: str, name: str) -> RecordFile:
        """Open one machine's record file; write its canonical record lines in minute order, then close it."""
        # force_zip64 lets a member grow past 4 GiB, which the writer cannot know in advance.
        member = self._archive.open(self._info(name), "w", force_zip64=True)
        self._open = name
        return RecordFile(self, machine, name, member)

    def take(self) -> bytes:
        """Return the ZIP bytes written since the last call, all final; call it only between members.

        The ZIP file is complete only with the bytes :meth:`finish` returns, because its central directory comes last.
        """
        if self._open is not None:
            raise RuntimeError(f"record file {self._open} is still open; take the bytes after it is closed")
        return self._buffer.take()

    def finish(self, manifest: dict[str, Any]) -> bytes:
        """Write ``manifest.json`` with the record list and every member's digest, close the ZIP file and return the bytes not taken yet."""
        manifest = {**manifest, "records": self.records, "files": dict(sorted(self.digests.items()))}
        self._archive.writestr(self._info("manifest.json"), json_bytes(manifest))
        self._archive.close()
        return self._buffer.take()


class RecordFile:
    """One machine's record file being written; a context manager that closes it and lists it for the manifest."""

    def __init__(self, writer: BundleWriter, machine: str, name: str, member: Any) -> None:
        self._writer = writer
        self._member = member
        self.machine = machine
        self.name = name
        self.count = 0
        self._digest = hashlib.sha256()

    def write(self, lines: Sequence[bytes]) -> None:
        """Append canonical record lines, each without its newline."""
        data = b"".join(line + b"\n" for line in lines)
        self.count += len(lines)
        self._digest.update(data)
        self._member.write(data)

    def close(self) -> None:
        self._member.close()
        self._writer._open = None
        self._writer.digests[self.name] = "sha256:" + self._digest.hexdigest()
        self._writer.records.append({"machine": self.machine, "file": self.name, "records": self.count})

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

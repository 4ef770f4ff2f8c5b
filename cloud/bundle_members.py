"""Members of an auditor bundle, read from its ZIP file or unpacked folder, the members that would leave the bundle, and the manifest's shape."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import posixpath
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = (
    "BundleError", "Members", "read_members", "read_bundle_members", "open_member", "load_json", "check_manifest", "check_record_list", "climbs",
    "unpacked_name", "STREAMED",
)  # fmt: skip

STREAMED = "records/"
"""Members under this folder (the minute records) are hashed and read as streams, never held in memory whole."""
MAX_HELD = 512 * 1024 * 1024
"""Largest member the checks hold in memory to parse (vouchers.jsonl of a large contract is tens of MB)."""
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A bundle cannot be read or built; the message names the file and what to do."""


@dataclass(slots=True)
class Members:
    """The bytes of each member by the name it unpacks to, the members not read with the reason, and the names a ZIP file repeats.

    ``outside`` contains every member that would land outside the bundle when
    unpacked: an absolute or ``..`` name, or a symbolic link leaving the
    folder. Such a member is never read, so nothing outside the bundle is checked in its place.
    ``repeated`` maps each path that more than one ZIP member unpacks to
    (see :func:`unpacked_name`) to the members' names as the ZIP file gives them.
    """

    data: dict[str, bytes] = field(default_factory=dict)
    outside: dict[str, str] = field(default_factory=dict)
    repeated: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    """Members under :data:`STREAMED` by name: the file itself in a folder, or its copy in ``spool`` from a ZIP file."""
    digests: dict[str, str] = field(default_factory=dict)
    """``sha256:<hex>`` of each member in ``files``, taken while it was read."""
    spool: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        """Remove the copies of streamed ZIP members."""
        if self.spool is not None:
            self.spool.cleanup()
            self.spool = None


def open_member(source: bytes | Path) -> IO[bytes]:
    """Open a member held in memory or on disk (see :attr:`Members.files`) for reading."""
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _copy(source: IO[bytes], target: IO[bytes] | None) -> str:
    """Read ``source`` to its end in chunks, writing them to ``target`` when given; return its ``sha256:<hex>``."""
    digest = hashlib.sha256()
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
    return "sha256:" + digest.hexdigest()


def climbs(name: str) -> bool:
    """Return whether an unpacked member would land outside the target folder: an absolute name, a drive letter or a ``..`` part."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts


def unpacked_name(name: str) -> str:
    """Return the path an unpacking tool writes the ZIP member ``name`` to: backslashes as slashes, ``.`` parts and extra slashes dropped.

    ``./contract.json``, ``contract.json/`` and ``contracts\\C-1\\revision-1.json``
    unpack to ``contract.json`` and ``contracts/C-1/revision-1.json``. Only
    names that do not climb (see :func:`climbs`) are given.
    """
    return posixpath.normpath(name.replace("\\", "/"))


def _collisions(names: list[tuple[str, bool]]) -> dict[str, list[str]]:
    """Return each file path that more than one member unpacks to, or that another member needs as a folder, with those members' names.

    ``names`` contains each member's name and whether it is a folder entry. Paths
    are compared ignoring case, because Windows and macOS unpack ``CONTRACT.JSON``
    over ``contract.json``; the key is the path of the first such member.
    """
    files: dict[str, list[str]] = {}
    folders: dict[str, list[str]] = {}
    first_path: dict[str, str] = {}
    for name, is_folder in names:
        path = unpacked_name(name)
        if path == ".":
            continue
        first_path.setdefault(path.casefold(), path)
        (folders if is_folder else files).setdefault(path.casefold(), []).append(name)
        # Every folder above a member must be a folder, not a file, once unpacked.
        parent = posixpath.dirname(path)
        while parent:
            folders.setdefault(parent.casefold(), []).append(name)
            parent = posixpath.dirname(parent)
    return {first_path[key]: [*found, *folders.get(key, [])] for key, found in files.items() if len(found) > 1 or key in folders}


class _Plan:
    """The members the checks parse (held in memory, up to :data:`MAX_HELD` bytes each) and the record files (read as streams).

    Every other member is only hashed, as a stream, so that an unlisted file of any size costs no memory.
    """

    def __init__(self, parsed: frozenset[str], manifest: bytes | None) -> None:
        self.parsed = set(parsed) | {"manifest.json"}
        self.records: set[str] = set()
        try:
            document = json.loads(manifest) if manifest is not None else None
        except (ValueError, RecursionError):
            document = None  # reported when the manifest is parsed
        if isinstance(document, dict):
            for key, names in (("revisions", self.parsed), ("records", self.records)):
                entries = document.get(key)
                if isinstance(entries, list):
                    names.update(str(entry["file"]) for entry in entries if isinstance(entry, dict) and isinstance(entry.get("file"), str))

    def streamed(self, name: str) -> bool:
        # A member the checks parse stays in memory even when a manifest lists it as a record file; its record check then fails.
        return name not in self.parsed and (name.startswith(STREAMED) or name in self.records)

    def check_size(self, name: str, size: int) -> None:
        if size > MAX_HELD:
            raise BundleError(f"{name} is too large: it unpacks to {size:,} bytes, more than the {MAX_HELD:,}-byte limit for a file the checks parse, "
                              "so it was not read; ask the vendor for a bundle as the cloud built it")


def _read_folder(root: Path, plan_for: Callable[[bytes | None], _Plan], progress: Callable[[str], None]) -> Members:
    members = Members()
    manifest = root / "manifest.json"
    plan = plan_for(manifest.read_bytes() if manifest.is_file() and manifest.stat().st_size <= MAX_HELD else None)
    # os.walk does not descend into linked folders, so only the links themselves need a look.
    for folder, folders, files in os.walk(root):
        for entry in sorted([*folders, *files]):
            child = Path(folder, entry)
            name = child.relative_to(root).as_posix()
            if child.is_symlink():
                try:
                    target = child.resolve(strict=True)
                except (OSError, RuntimeError):
                    members.outside[name] = f"a symbolic link to {os.readlink(child)}, which cannot be followed"
                    continue
                if not target.is_relative_to(root):
                    members.outside[name] = f"a symbolic link to {os.readlink(child)}, outside the bundle folder"
                    continue
            if entry not in files or not child.is_file():
                continue
            if name in plan.parsed:
                plan.check_size(name, child.stat().st_size)
                members.data[name] = child.read_bytes()
                continue
            progress(f"hashing {name}")
            with open(child, "rb") as source:
                members.digests[name] = _copy(source, None)
            if plan.streamed(name):
                members.files[name] = child
    return members


def _read_zip(path: Path, plan_for: Callable[[bytes | None], _Plan], progress: Callable[[str], None]) -> Members:
    members = Members()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if climbs(info.filename):
                members.outside[info.filename] = "a name that is absolute or climbs with '..', so unpacking it writes outside the bundle folder"
            elif stat.S_ISLNK(info.external_attr >> 16):
                # Info-ZIP unzip restores such members as links on Unix. The cloud never writes one.
                target = archive.read(info).decode("utf-8", errors="replace")
                members.outside[unpacked_name(info.filename)] = f"a symbolic link to {target}, which unpacking tools may follow outside the bundle folder"
        inside = [info for info in archive.infolist() if not climbs(info.filename)]
        # Unpacking writes a member over another that unpacks to the same path, so such members fail like a repeated name.
        members.repeated = _collisions([(info.filename, info.is_dir()) for info in inside])
        if members.repeated:
            return members
        files = [info for info in inside if not info.is_dir() and unpacked_name(info.filename) not in members.outside]
        manifest = next((info for info in files if unpacked_name(info.filename) == "manifest.json"), None)
        plan = plan_for(_read_member(archive, manifest) if manifest is not None and manifest.file_size <= MAX_HELD else None)
        try:
            for info in files:
                name = unpacked_name(info.filename)
                if plan.streamed(name):
                    progress(f"unpacking {name}")
                    _spool(archive, info, name, members)
                elif name in plan.parsed:
                    plan.check_size(name, info.file_size)
                    members.data[name] = _read_member(archive, info)
                else:
                    progress(f"hashing {name}")
                    with _open_member(archive, info) as source:
                        members.digests[name] = _member_digest(source, info)
        except BaseException:
            members.close()
            raise
    return members


def _member_problem(info: zipfile.ZipInfo, exc: BaseException) -> BundleError:
    """Return the error for a ZIP member that cannot be unpacked: encrypted, an unknown compression method, or damaged data."""
    name = unpacked_name(info.filename)
    if isinstance(exc, RuntimeError) and "encrypted" in str(exc):
        reason = "it is encrypted, and a bundle as the cloud builds it never is"
    elif isinstance(exc, NotImplementedError):
        reason = f"it uses compression method {info.compress_type}, which this verifier cannot unpack; the cloud uses Deflate (8)"
    else:
        reason = f"its compressed data is damaged ({exc})"
    return BundleError(f"cannot read {name}: {reason}; ask the vendor for the bundle again")


_UNPACK_ERRORS = (RuntimeError, NotImplementedError, zlib.error, EOFError, zipfile.BadZipFile)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except _UNPACK_ERRORS as exc:
        raise _member_problem(info, exc) from exc


@contextlib.contextmanager
def _open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[IO[bytes]]:
    try:
        with archive.open(info) as source:
            yield source
    except _UNPACK_ERRORS as exc:
        raise _member_problem(info, exc) from exc


def _member_digest(source: IO[bytes], info: zipfile.ZipInfo, target: IO[bytes] | None = None) -> str:
    try:
        return _copy(source, target)
    except _UNPACK_ERRORS as exc:
        raise _member_problem(info, exc) from exc


def _temp_parent() -> str:
    """Return the folder for unpacked record files: TMPDIR when set, which must then be a writable folder, else the system's."""
    chosen = os.environ.get("TMPDIR")
    usable = bool(chosen) and os.path.isdir(chosen) and os.access(chosen, os.W_OK | os.X_OK)
    if chosen and not usable and os.path.realpath(tempfile.gettempdir()) != os.path.realpath(chosen):
        # tempfile would quietly fall back to /tmp, the folder an auditor set TMPDIR to avoid.
        raise BundleError(f"invalid TMPDIR {chosen}: it is not a writable folder, and the record files are unpacked there while they are checked. "
                          "Set TMPDIR to a writable folder with free space, or unset it")
    return tempfile.gettempdir()


def _spool(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, members: Members) -> None:
    """Copy one streamed member into the spool folder, hashing it on the way, so that its records are read from disk, not memory."""
    parent = _temp_parent()
    try:
        if members.spool is None:
            members.spool = tempfile.TemporaryDirectory(prefix="valuegate-bundle-", dir=parent)
        copy = Path(members.spool.name, f"{len(members.files)}.jsonl")
        with _open_member(archive, info) as source, open(copy, "wb") as target:
            members.digests[name] = _member_digest(source, info, target)
    except OSError as exc:
        reason = "there is no room left" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"it cannot be written ({exc.strerror or exc})"
        raise BundleError(f"cannot unpack {name} ({info.file_size:,} bytes unpacked) into the temporary folder {parent}: {reason}. The record files are "
                          "unpacked there while they are checked, so set TMPDIR to a writable folder with more free space") from exc
    members.files[name] = copy


def read_members(path: Path, parsed: frozenset[str] = frozenset(), progress: Callable[[str], None] = lambda step: None) -> Members:
    """Read the members of the bundle ZIP file or folder at ``path``; raises OSError or :class:`zipfile.BadZipFile` when it cannot be read.

    ``parsed`` names the members the checks parse, which are held in memory. Record files (under ``records/`` or listed in the
    manifest's ``records``) are unpacked into the temporary folder or read in place. Every other member is only hashed.
    """
    def plan_for(manifest: bytes | None) -> _Plan:
        return _Plan(parsed, manifest)

    if path.is_dir():
        # Revision files sit in subfolders (contracts/<id>/), so members are named by their path relative to the bundle.
        return _read_folder(path.resolve(), plan_for, progress)
    return _read_zip(path, plan_for, progress)


def read_bundle_members(path: Path, parsed: frozenset[str] = frozenset(), progress: Callable[[str], None] = lambda step: None) -> Members:
    """Read the members of the bundle at ``path`` (see :func:`read_members`); raises :class:`BundleError` when it cannot be read or repeats a member."""
    try:
        members = read_members(path, parsed, progress)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: cannot read the bundle ({exc}); give a bundle ZIP file or its unpacked folder") from exc
    if members.repeated:
        members.close()
        # A reader would see only one of the copies, so which one is checked cannot be left to chance.
        found = "; ".join(f"{target} (members {', '.join(names)})" for target, names in sorted(members.repeated.items()))
        raise BundleError(f"{path}: the ZIP file has more than one member that unpacks to {found}; unpacking writes one over the other, "
                          "so do not use the unpacked files; ask the vendor for a bundle as the cloud built it")
    return members


def load_json(path: Path, name: str, data: bytes) -> Any:
    """Parse the member ``name`` of the bundle at ``path`` as UTF-8 JSON; raises :class:`BundleError` naming it when that fails."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: {name} is not valid UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise BundleError(f"{path}: {name} nests JSON too deeply to read; a bundle built by the cloud never does, so ask the vendor for it again") from exc


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(path: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the shapes the checks rely on (``files``, ``contract_revision``, ``revisions``) and return the revisions list."""
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(value, str) for value in files.values()):
        raise BundleError(f"{path}: manifest.json has an invalid files map ({files!r}); it needs the SHA-256 of each file by name")
    in_force = manifest.get("contract_revision")
    if in_force is not None and not _whole(in_force):
        raise BundleError(f"{path}: manifest.json has an invalid contract_revision {in_force!r}; it needs a whole number or null")

    count = manifest.get("vouchers")
    if count is not None and not _whole(count):
        raise BundleError(f"{path}: manifest.json has an invalid vouchers count {count!r}; it needs a whole number or null")
    # Only an absent or null list means no earlier revisions; {} or "" is as malformed as any other shape.
    revisions = manifest.get("revisions")
    revisions = [] if revisions is None else revisions
    shaped = isinstance(revisions, list) and all(
        isinstance(item, dict) and isinstance(item.get("file"), str) and _whole(item.get("revision")) and isinstance(item.get("contract_digest"), str)
        for item in revisions
    )
    if not shaped:
        raise BundleError(f"{path}: manifest.json has an invalid revisions list ({revisions!r}); each entry needs a file, a revision and a contract_digest")
    numbers = [item["revision"] for item in revisions]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1 or n == in_force})
    if repeated:
        raise BundleError(f"{path}: manifest.json gives contract revision {', '.join(map(str, repeated))} to more than one file; "
                          "ask the vendor for a bundle as the cloud built it")
    names = [item["file"] for item in revisions]
    leaving = [name for name in names if climbs(name)]
    if leaving:
        raise BundleError(f"{path}: manifest.json lists revision file {', '.join(map(repr, leaving))}, a name that is absolute or climbs with '..', "
                          "outside the bundle; ask the vendor for a bundle as the cloud built it")
    if len(set(names)) != len(names):
        raise BundleError(f"{path}: manifest.json lists a revision file under more than one revision ({names!r}); ask the vendor for a bundle as the cloud built it")
    return revisions


def check_record_list(path: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the manifest's ``records`` list (one entry per machine: ``machine``, ``file``, ``records``) and return it. An absent list means none."""
    entries = manifest.get("records")
    entries = [] if entries is None else entries
    shaped = isinstance(entries, list) and all(
        isinstance(item, dict) and isinstance(item.get("machine"), str) and isinstance(item.get("file"), str) and _whole(item.get("records"))
        and item["records"] >= 0
        for item in entries
    )
    if not shaped:
        raise BundleError(f"{path}: manifest.json has an invalid records list ({entries!r}); each entry needs a machine, a file and a records count")
    names = [item["file"] for item in entries]
    leaving = [name for name in names if climbs(name)]
    if leaving:
        raise BundleError(f"{path}: manifest.json lists record file {', '.join(map(repr, leaving))}, a name that is absolute or climbs with '..', "
                          "outside the bundle; ask the vendor for a bundle as the cloud built it")
    machines = [item["machine"] for item in entries]
    if len(set(names)) != len(names) or len(set(machines)) != len(machines):
        raise BundleError(f"{path}: manifest.json lists a machine or a record file twice in its records list; ask the vendor for a bundle as the cloud built it")
    return entries

"""Members of an auditor bundle, read from its ZIP file or unpacked folder, and the members that would leave the bundle."""

from __future__ import annotations

import collections
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ("Members", "read_members")


@dataclass(slots=True)
class Members:
    """The bytes of each member by name, the members not read with the reason, and the names a ZIP file repeats.

    ``outside`` contains every member that would land outside the bundle when
    unpacked (an absolute or ``..`` name, or a symbolic link leaving the
    folder); such a member is never read, so nothing outside the bundle is checked in its place.
    """

    data: dict[str, bytes] = field(default_factory=dict)
    outside: dict[str, str] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)


def _climbs(name: str) -> bool:
    """Return whether an unpacked member would land outside the target folder: an absolute name, a drive letter or a ``..`` part."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts


def _read_folder(root: Path) -> Members:
    members = Members()
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
            if entry in files and child.is_file():
                members.data[name] = child.read_bytes()
    return members


def _read_zip(path: Path) -> Members:
    members = Members()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if _climbs(info.filename):
                members.outside[info.filename] = "a name that is absolute or climbs with '..', so unpacking it writes outside the bundle folder"
            elif stat.S_ISLNK(info.external_attr >> 16):
                # Info-ZIP unzip restores such members as links on Unix. The cloud never writes one.
                target = archive.read(info).decode("utf-8", errors="replace")
                members.outside[info.filename] = f"a symbolic link to {target}, which unpacking tools may follow outside the bundle folder"
        names = [name for name in archive.namelist() if not name.endswith("/") and name not in members.outside]
        members.repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
        if not members.repeated:
            members.data = {name: archive.read(name) for name in names}
    return members


def read_members(path: Path) -> Members:
    """Read the members of the bundle ZIP file or folder at ``path``; raises OSError or :class:`zipfile.BadZipFile` when it cannot be read."""
    if path.is_dir():
        # Revision files sit in subfolders (contracts/<id>/), so members are named by their path relative to the bundle.
        return _read_folder(path.resolve())
    return _read_zip(path)

"""Catalogs uploaded from a browser: the size limit, the file-name check and writing them to disk.

An upload is a mapping of file name to bytes. It is refused as a whole, before anything is
written, when its total size exceeds the limit (``MAX_UPLOAD_MB``, or ``$JOINTCAL_MAX_UPLOAD_MB``)
or when any name is not a plain catalog basename (no ``/`` or ``\\``, no ``..``, not starting with
``.``, a known catalog suffix). Accepted files go into a fresh folder inside the session's
temporary directory, which the app removes when the browser session ends; that folder is then
loaded like a field directory (``reference.*`` / ``refcat.*`` become the reference catalog, see
:func:`app.files.field_inputs`). No panel import: the field picker and the tests use it directly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from jointcal_core.exceptions import InputError

__all__ = [
    "MAX_UPLOAD_ENV",
    "MAX_UPLOAD_MB",
    "UPLOAD_SUFFIXES",
    "check_upload",
    "check_upload_name",
    "load_upload",
    "make_upload_dir",
    "max_upload_bytes",
    "remove_upload_dir",
    "write_upload",
]

log = logging.getLogger(__name__)

#: default limit on the total size of one upload (MB = 10^6 bytes)
MAX_UPLOAD_MB = 200
#: environment variable overriding :data:`MAX_UPLOAD_MB`
MAX_UPLOAD_ENV = "JOINTCAL_MAX_UPLOAD_MB"
#: catalog suffixes an upload may hold (lower case)
UPLOAD_SUFFIXES = (".cat", ".fits", ".ecsv", ".csv", ".parq", ".parquet", ".psx")
_MAX_NAME_CHARS = 255


def max_upload_bytes() -> int:
    """The upload limit in bytes: ``$JOINTCAL_MAX_UPLOAD_MB`` (a positive number) or :data:`MAX_UPLOAD_MB`."""
    text = os.environ.get(MAX_UPLOAD_ENV, "").strip()
    mb = float(MAX_UPLOAD_MB)
    if text:
        try:
            mb = float(text)
            if not mb > 0:
                raise ValueError(text)
        except ValueError:
            log.warning("%s=%r is not a positive number of MB; using %d MB", MAX_UPLOAD_ENV, text, MAX_UPLOAD_MB)
            mb = float(MAX_UPLOAD_MB)
    return int(mb * 1e6)


def check_upload_name(name: str) -> str:
    """Return ``name`` when it is a plain catalog basename, else raise :class:`InputError`.

    Refused: empty names, names holding ``/``, ``\\``, ``..`` or a NUL, names starting with
    ``.``, names longer than 255 characters and suffixes not in :data:`UPLOAD_SUFFIXES`.
    """
    shown = repr(name)[:80]
    if not isinstance(name, str) or not name.strip():
        raise InputError("an uploaded file has no name")
    if "/" in name or "\\" in name or "\x00" in name or ".." in name:
        raise InputError(f"uploaded file name {shown} is not a plain file name (no '/', '\\' or '..')")
    if name.startswith("."):
        raise InputError(f"uploaded file name {shown} starts with '.': rename the file")
    if len(name) > _MAX_NAME_CHARS:
        raise InputError(f"uploaded file name {shown}... is longer than {_MAX_NAME_CHARS} characters")
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise InputError(f"uploaded file {shown} is not a catalog: upload {', '.join(UPLOAD_SUFFIXES)} files")
    return name


def check_upload(files: Mapping[str, bytes], limit_bytes: int | None = None) -> int:
    """Check a whole upload (names and total size); return its size in bytes.

    Parameters
    ----------
    files : mapping of str to bytes
        File name -> content.
    limit_bytes : int, optional
        Largest total size accepted (default :func:`max_upload_bytes`).

    Raises
    ------
    InputError
        No files, a bad name (:func:`check_upload_name`), two names differing only in case, or a
        total size above the limit.
    """
    if not files:
        raise InputError("no file was uploaded: choose one or more catalogs")
    limit = max_upload_bytes() if limit_bytes is None else int(limit_bytes)
    seen: set[str] = set()
    for name in files:
        check_upload_name(name)
        if name.lower() in seen:
            raise InputError(f"two uploaded files are named {name!r} (ignoring case): rename one")
        seen.add(name.lower())
    total = sum(len(content) for content in files.values())
    if total > limit:
        raise InputError(f"upload of {total / 1e6:.1f} MB exceeds the limit of {limit / 1e6:g} MB "
                         f"(set {MAX_UPLOAD_ENV} to change it)")
    return total


def write_upload(files: Mapping[str, bytes], directory: str | Path, limit_bytes: int | None = None) -> Path:
    """Check ``files`` and write them into a new folder inside ``directory``; return that folder.

    Nothing is written when the check fails (:class:`InputError` from :func:`check_upload`).
    """
    check_upload(files, limit_bytes)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=directory))
    try:
        for name, content in files.items():
            target = folder / name
            if target.parent != folder:  # belt and braces: check_upload_name refused any path
                raise InputError(f"uploaded file name {name!r} is not a plain file name")
            with open(target, "xb") as f:
                f.write(bytes(content))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def make_upload_dir() -> Path:
    """A new private temporary directory for one browser session's uploads."""
    return Path(tempfile.mkdtemp(prefix="jointcal-uploads-"))


def remove_upload_dir(directory: str | Path | None) -> None:
    """Remove a session's upload directory and everything in it (missing: nothing to do)."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def load_upload(session, files: Mapping[str, bytes], directory: str | Path,
                limit_bytes: int | None = None) -> bool:
    """Write an upload into ``directory`` and load it as the field of ``session`` (a FitSession).

    A refused upload or a folder that does not load sets ``session.error`` (one line), leaves the
    previous field loaded, keeps nothing on disk and returns False.
    """
    try:
        folder = write_upload(files, directory, limit_bytes)
    except InputError as exc:
        session.error = str(exc)
        return False
    except OSError as exc:
        session.error = f"could not store the upload: {' '.join(str(exc).split())}"
        return False
    if not session.load(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return False
    return True

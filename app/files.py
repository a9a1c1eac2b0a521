"""Files of the app: a field directory split into exposures and reference, checksums, zipping.

No panel import: the session uses these helpers.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

__all__ = ["field_inputs", "sha256_file", "zip_folder"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip ``folder`` so that the archive unpacks into one folder of the same name."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return zip_path


#: catalog suffixes a field directory may hold (sidecars such as .ahead are not inputs)
_CATALOG_SUFFIXES = {".cat", ".fits", ".fit", ".ldac", ".ecsv", ".csv", ".parq", ".parquet", ".psx"}
#: file stems taken as the field's reference catalog
_REFERENCE_STEMS = ("reference", "refcat")


def field_inputs(path: Path) -> tuple[Path | list[Path], Path | None]:
    """Split a field directory into its exposure catalogs and its reference catalog.

    A directory holding ``reference.*`` or ``refcat.*`` (the demo's layout, as for
    ``jointcal run DIR/*.cat --refcat DIR/reference.cat``) gives (other catalogs, that file);
    anything else (a file, an LSST repository, a directory without reference) is passed as is.
    """
    if not path.is_dir():
        return path, None
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _CATALOG_SUFFIXES)
    refs = [p for p in files if p.stem.lower() in _REFERENCE_STEMS]
    if not refs:
        return path, None
    # one reference file (the demo ships reference.cat and reference.parquet: take the first)
    return [p for p in files if p not in refs], refs[0]

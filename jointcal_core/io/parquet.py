"""Parquet tables read and written by pyarrow alone, without pandas.

astropy's parquet reader and writer go through ``pyarrow.dataset`` and ``pyarrow.array``, which
import pandas: 0.2-0.3 s, more than reading a reference catalog or writing the residual tables
of a small field. Numbers and booleans go straight between numpy and arrow buffers here; other
types fall back to pyarrow's own conversion.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

__all__ = ["read_parquet", "write_parquet"]


def _to_numpy(arr) -> np.ndarray:
    """A pyarrow array as numpy: numbers and booleans without nulls from the data buffer, else
    ``to_numpy``."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_boolean(t) and not arr.null_count:
        bits = np.unpackbits(np.frombuffer(arr.buffers()[1], np.uint8), count=arr.offset + len(arr), bitorder="little")
        return bits[arr.offset:].astype(bool)
    kind = "i" if pa.types.is_signed_integer(t) else "u" if pa.types.is_unsigned_integer(t) else \
        "f" if pa.types.is_floating(t) else None
    if kind is None or arr.null_count:
        return arr.to_numpy(zero_copy_only=False)
    dtype = np.dtype(f"{kind}{t.bit_width // 8}")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize).copy()


def read_parquet(path: str | Path) -> Table:
    """A parquet file as an astropy Table, with the column units astropy wrote (its
    ``table_meta_yaml``) and astropy's masked columns (``<name>`` + ``<name>.mask``) restored."""
    import pyarrow.parquet as pq

    data = pq.ParquetFile(path).read()
    units = {}
    meta_yaml = (data.schema.metadata or {}).get(b"table_meta_yaml")
    if meta_yaml:
        from astropy.table.meta import get_header_from_yaml
        header = get_header_from_yaml(meta_yaml.decode("utf-8").splitlines())
        units = {c["name"]: c.get("unit") for c in header.get("datatype", [])}
    table = Table()
    names = data.column_names
    for name in names:
        if name.endswith(".mask") and name[:-5] in names:
            continue
        values = _to_numpy(data.column(name).combine_chunks())
        if f"{name}.mask" in names:
            values = np.ma.masked_array(values, mask=_to_numpy(data.column(f"{name}.mask").combine_chunks()))
        table[name] = values
        if units.get(name):
            table[name].unit = u.Unit(units[name], parse_strict="silent")
    return table


def write_parquet(path: str | Path, columns: dict[str, np.ndarray]) -> None:
    """Write numeric and boolean columns (1-D, equal lengths) as a parquet table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for name, values in columns.items():
        v = np.ascontiguousarray(values)
        if v.ndim != 1 or v.dtype.kind not in "biuf":
            raise TypeError(f"column {name!r}: only 1-D numbers and booleans are written, not {v.dtype} {v.shape}")
        if v.dtype == bool:
            arrays.append(pa.Array.from_buffers(pa.bool_(), v.size, [None, pa.py_buffer(np.packbits(v, bitorder="little"))]))
        else:
            arrays.append(pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), v.size, [None, pa.py_buffer(v)]))
    pq.write_table(pa.Table.from_arrays(arrays, names=list(columns)), str(path))

"""jointcal_core/io/parquet.py: parquet read and written without pandas, as astropy does it."""

import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from jointcal_core.io.parquet import read_parquet, write_parquet


def _table(n=50):
    rng = np.random.default_rng(2)
    t = Table()
    t["source_id"] = np.arange(n, dtype=np.int64)
    t["ra"] = rng.uniform(149, 151, n)
    t["ra"].unit = "deg"
    t["pmra"] = rng.normal(0, 5, n).astype(np.float32)
    t["pmra"].unit = "mas / yr"
    t["parallax"] = np.ma.masked_array(np.full(n, 1.2), mask=np.arange(n) % 3 == 0)
    t["flag"] = np.arange(n, dtype=np.uint8)
    return t


def test_reader_equals_astropys_units_nulls_and_dtypes(tmp_path):
    t = _table()
    path = tmp_path / "ref.parquet"
    t.write(path)
    ours, theirs = read_parquet(path), Table.read(path)
    assert ours.colnames == theirs.colnames
    for name in theirs.colnames:
        assert ours[name].unit == theirs[name].unit, name
        assert ours[name].dtype == theirs[name].dtype, name
        np.testing.assert_array_equal(np.ma.filled(ours[name], np.nan), np.ma.filled(theirs[name], np.nan))
    assert np.ma.is_masked(ours["parallax"][0]) and not np.ma.is_masked(ours["parallax"][1])


def test_written_tables_read_back_through_astropy(tmp_path):
    rng = np.random.default_rng(3)
    columns = {"visit": np.repeat([1000, 1001], 5), "x": rng.uniform(0, 2048, 10),
               "dx_mas": np.r_[np.nan, rng.normal(size=9)], "outlier": np.arange(10) % 4 == 1,
               "star": np.arange(10, dtype=np.int32) - 1}
    path = tmp_path / "residuals.parquet"
    write_parquet(path, columns)
    back = Table.read(path)
    assert back.colnames == list(columns)
    for name, values in columns.items():
        assert back[name].dtype == values.dtype, name
        np.testing.assert_array_equal(np.asarray(back[name]), values)
    with pytest.raises(TypeError, match="'name'"):
        write_parquet(tmp_path / "bad.parquet", {"name": np.array(["a", "b"])})


def test_neither_way_imports_pandas(tmp_path):
    """The point of the module: pandas costs 0.2-0.3 s to import."""
    path = tmp_path / "t.parquet"
    _table().write(path)
    code = ("import sys, numpy as np\nfrom jointcal_core.io.parquet import read_parquet, write_parquet\n"
            f"read_parquet({str(path)!r})\n"
            f"write_parquet({str(tmp_path / 'w.parquet')!r}, {{'a': np.arange(3.0), 'b': np.ones(3, bool)}})\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""A fast reader for the plain FITS files of binary tables that FITS_LDAC catalogs are.

``astropy.io.fits`` builds Column and Header objects card by card and verifies them: ~4 ms per
table HDU (measured), i.e. ~40 s for the 10^4 tables of a tract's LDAC catalogs. An LDAC file is simple (a primary HDU
without data, then binary tables with fixed-width columns), so :func:`read_fits_tables` parses
the 2880-byte header blocks itself and maps every table onto a numpy structured array (big
endian, as stored; no copy). It returns None for anything it does not handle exactly the way
astropy would (scaled or variable-length columns, random groups, a truncated or malformed
file, an image with data...), and callers then use astropy, which also produces their error
messages. Table cells are exactly the stored bytes: ``nA`` columns as bytes, integers and
floats as stored; NUL bytes in text columns read as blanks.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["FastTableHDU", "read_fits_tables"]

_BLOCK = 2880
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCM])\s*$")
_DTYPES = {"L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
_REFUSE = re.compile(r"^(TSCAL|TZERO|THEAP|GROUPS|ZIMAGE)")


class _Columns:
    def __init__(self, names):
        self.names = list(names)


class FastTableHDU:
    """What the LDAC reader uses of an astropy table HDU: ``name``, ``columns.names``, ``data``."""

    def __init__(self, name: str, names: list[str], data: np.ndarray | None):
        self.name = name
        self.columns = _Columns(names)
        self.data = data


class _HduList(list):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _parse_header(raw: bytes, start: int):
    """Cards of the header starting at ``start``: ({key: value text}, offset of the data)."""
    cards = {}
    pos = start
    while pos + _BLOCK <= len(raw):
        block = raw[pos:pos + _BLOCK].decode("ascii")
        pos += _BLOCK
        for i in range(0, _BLOCK, 80):
            card = block[i:i + 80]
            key = card[:8].rstrip()
            if key == "END":
                return cards, pos
            if card[8:10] == "= ":
                cards[key] = card[10:]
    return None, None


def _value(text: str):
    """Value of a card's text after '= ' (strings unquoted, numbers as int/float)."""
    text = text.strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1:end + 2] == "'":
            end = text.find("'", end + 2)
        return text[1:end].replace("''", "'").rstrip()
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        return float(text.replace("D", "E"))


def _table_dtype(cards: dict):
    names, formats = [], []
    for k in range(1, int(_value(cards["TFIELDS"])) + 1):
        m = _TFORM.match(_value(cards[f"TFORM{k}"]))
        if m is None or m.group(2) in ("X", "C", "M"):
            return None
        repeat = int(m.group(1) or 1)
        code = m.group(2)
        names.append(str(_value(cards.get(f"TTYPE{k}", f"'col{k}'"))))
        if code == "A":
            formats.append(f"S{repeat}")
        elif repeat == 1:
            formats.append(_DTYPES[code])
        else:
            formats.append((_DTYPES[code], (repeat,)))
    if len(set(names)) != len(names):
        return None
    return np.dtype({"names": names, "formats": formats})


def read_fits_tables(path: str | Path) -> list | None:
    """Every HDU of a FITS file of binary tables as :class:`FastTableHDU` (primary: no data).

    Returns None when the file is not such a plain FITS file (see the module docstring).
    The result supports ``with`` like an astropy HDUList.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    if not raw.startswith(b"SIMPLE  =") or len(raw) % _BLOCK:
        return None
    out, pos = _HduList(), 0
    try:
        while pos < len(raw):
            cards, data_start = _parse_header(raw, pos)
            if cards is None or any(_REFUSE.match(k) for k in cards):
                return None
            naxis = int(_value(cards.get("NAXIS", "0")))
            name = str(_value(cards.get("EXTNAME", "''"))).upper() if "EXTNAME" in cards else ("PRIMARY" if pos == 0 else "")
            if pos == 0:
                if naxis != 0 and any(int(_value(cards.get(f"NAXIS{i}", "0"))) for i in range(1, naxis + 1)):
                    return None
                out.append(FastTableHDU(name, [], None))
                pos = data_start
                continue
            if str(_value(cards.get("XTENSION", "''"))) != "BINTABLE" or naxis != 2 \
                    or int(_value(cards.get("PCOUNT", "0"))) != 0 or int(_value(cards.get("GCOUNT", "1"))) != 1:
                return None
            width, rows = int(_value(cards["NAXIS1"])), int(_value(cards["NAXIS2"]))
            dtype = _table_dtype(cards)
            if dtype is None or dtype.itemsize != width:
                return None
            size = width * rows
            if data_start + size > len(raw):
                return None
            data = np.frombuffer(raw, dtype=dtype, count=rows, offset=data_start)
            text = [n for n in dtype.names if dtype[n].kind == "S" and dtype[n].itemsize > 1]
            if text:    # as astropy reads text cells: NUL padding (per TDIM sub-string too) -> blanks
                data = data.copy()
                for n in text:
                    cells = np.ascontiguousarray(data[n])
                    raw_bytes = cells.view(np.uint8).copy()
                    raw_bytes[raw_bytes == 0] = 32
                    data[n] = raw_bytes.view(cells.dtype).reshape(cells.shape)
            out.append(FastTableHDU(name, dtype.names, data))
            pos = data_start + size + (-size % _BLOCK)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None
    return out


def first_extension_name(path: str | Path, max_bytes: int = 2880 * 64) -> str | None:
    """EXTNAME (upper case) of the HDU after a data-less primary HDU, read from the first
    ``max_bytes`` of the file; None when the file does not start that way (callers then ask
    astropy). A cheap test of a file's kind: no astropy HDU objects are built."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes)
    except OSError:
        return None
    if not raw.startswith(b"SIMPLE  ="):
        return None
    try:
        cards, pos = _parse_header(raw, 0)
        if cards is None or int(_value(cards.get("NAXIS", "0"))) != 0:
            return None
        cards, _ = _parse_header(raw, pos)
        if cards is None or "EXTNAME" not in cards:
            return None
        return str(_value(cards["EXTNAME"])).upper()
    except (ValueError, UnicodeDecodeError):
        return None


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\.\d+|\d+(\.\d*)?)([DE][+-]?\d+)?$")


class CardHeader:
    """A read-only header parsed from 80-character cards: what the LDAC reader asks of a header
    (``get``, ``in``, ``[]``, ``keys``), ~20x faster than building an ``astropy.io.fits.Header``.

    Values are parsed as astropy parses them (strings unquoted with trailing blanks removed,
    ``T``/``F`` as bool, integers as int, other numbers as float). :meth:`parse` returns None for
    a header it does not handle exactly like astropy (HIERARCH or CONTINUE cards, a keyword given
    twice, a value that is not a plain string, logical or real number...); callers then use
    ``fits.Header.fromstring``. :meth:`to_astropy` gives the full astropy header.
    """

    def __init__(self, text: str, values: dict, numbers: dict):
        self._text = text
        self._values = values
        self.numbers = numbers    #: {keyword: float} of every numeric card

    @classmethod
    def parse(cls, text: str) -> CardHeader | None:
        values, numbers = {}, {}
        for i in range(0, len(text), 80):
            card = text[i:i + 80]
            key = card[:8].rstrip()
            if key == "END":
                break
            if card[8:10] != "= ":
                if key in ("HIERARCH", "CONTINUE") or not key.replace("-", "").replace("_", "").isalnum() \
                        and key not in ("", "COMMENT", "HISTORY"):
                    return None
                continue
            if key in values or key != key.upper():
                return None
            value = cls._parse_value(card[10:])
            if value is None:
                return None
            values[key] = value
            if type(value) in (int, float):
                numbers[key] = float(value)
        return cls(text, values, numbers)

    @staticmethod
    def _parse_value(text: str):
        text = text.strip()
        if text.startswith("'"):
            end = text.find("'", 1)
            while end != -1 and text[end + 1:end + 2] == "'":
                end = text.find("'", end + 2)
            if end == -1:
                return None
            rest = text[end + 1:].strip()
            if rest and not rest.startswith("/"):
                return None
            return text[1:end].replace("''", "'").rstrip()
        text = text.split("/", 1)[0].strip()
        if text in ("T", "F"):
            return text == "T"
        if _INT.match(text):
            return int(text)
        if _FLOAT.match(text):
            return float(text.replace("D", "E"))
        return None

    def get(self, key: str, default=None):
        return self._values.get(key.upper(), default)

    def __contains__(self, key: str) -> bool:
        return key.upper() in self._values

    def __getitem__(self, key: str):
        return self._values[key.upper()]

    def keys(self):
        """The keywords of the valued cards (commentary cards are not listed)."""
        return self._values.keys()

    def to_astropy(self):
        from astropy.io import fits

        return fits.Header.fromstring(self._text)

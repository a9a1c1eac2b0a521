"""Card text of many headers at once, exactly as astropy writes it (see ``wcs_cards.card``).

A float card's value is Python's shortest ``repr`` with ``E`` for ``e``, cut to 20 characters as
``astropy.io.fits.card._format_float`` does; the reprs of a whole array come from one ``repr`` of
its list. Each header layout (keys, comments, which coefficients are written) becomes one
``str.format`` template with a 20-character field per float card, so a header is one call.
"""

from __future__ import annotations

import numpy as np

from .wcs_cards import _format, card
from .wcs_fits import _terms

__all__ = ["float_texts", "rounded_floats", "sip_texts", "tpv_texts"]


def _cut(text: str) -> str:
    at = text.find("E")
    return text[:20] if at < 0 else text[:20 - (len(text) - at)] + text[at:]


def float_texts(values) -> list[str]:
    """The card value text of every entry of ``values`` (flattened), unpadded (<= 20 characters)."""
    values = np.asarray(values, dtype=float)
    flat = values.ravel().tolist()
    if not flat:
        return []
    if not np.all(np.isfinite(values)):
        return [_format(v).strip() for v in flat]
    texts = repr(flat)[1:-1].replace("e", "E").split(", ")
    return [t if len(t) <= 20 else _cut(t) for t in texts]


def rounded_floats(values) -> np.ndarray:
    """Every entry as a reader gets it back from its card (``wcs_cards._round_array``)."""
    values = np.array(values, dtype=float)
    flat = values.ravel().tolist()
    if not flat or not np.all(np.isfinite(values)):
        return values
    texts = repr(flat)[1:-1].split(", ")
    long = [k for k, t in enumerate(texts) if len(t) > 20]
    if long:
        out = values.reshape(-1)
        out[long] = [float(_cut(texts[k].replace("e", "E"))) for k in long]
    return values


def _template(items: list) -> str:
    """A ``str.format`` template of card images: ``(key, comment)`` is a float field, a card image
    (str) is written as is."""
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(item.replace("{", "{{").replace("}", "}}"))
        else:
            key, comment = item
            suffix = (f" / {comment}" if comment else "")[:50].ljust(50)
            parts.append(f"{key:<8}= " + "{:>20}" + suffix.replace("{", "{{").replace("}", "}}"))
    return "".join(parts)


def _fill(template: str, texts: list[str], n_rows: int) -> list[str]:
    width = len(texts) // n_rows if n_rows else 0
    return [template.format(*texts[r * width:(r + 1) * width]) for r in range(n_rows)]


def _sip_layout(order: int, inv_order: int, masks) -> str:
    """Template of a ``wcs_fits.tan_sip_header`` header (order >= 2 writes SIP matrices)."""
    sip = order >= 2
    suffix, note = ("-SIP", "gnomonic projection + SIP distortion") if sip else ("", "gnomonic projection")
    items = [card("WCSAXES", 2), card("CTYPE1", "RA---TAN" + suffix, note), card("CTYPE2", "DEC--TAN" + suffix, note),
             card("CUNIT1", "deg"), card("CUNIT2", "deg"),
             ("CRVAL1", "[deg] tangent point RA"), ("CRVAL2", "[deg] tangent point Dec"),
             ("CRPIX1", "[pix] reference pixel (1-based)"), ("CRPIX2", "[pix] reference pixel (1-based)")]
    items += [(f"CD{i}_{j}", "[deg/pix] linear transformation") for i in (1, 2) for j in (1, 2)]
    items.append(card("RADESYS", "ICRS"))
    if sip:
        for name, size, (terms, mask) in zip(("A", "B", "AP", "BP"), (order, order, inv_order, inv_order), masks):
            items.append(card(f"{name}_ORDER", size))
            items += [(f"{name}_{p}_{q}", "") for (p, q), keep in zip(terms, mask) if keep]
    return _template(items)


def sip_texts(rows: list[dict], crpix) -> list[str]:
    """Header text (card images joined) of each row of ``wcs_batch.tan_sip_batch``: ``crval``, ``cd``
    (4,), ``order`` and, for order >= 2, ``a``, ``b`` (non-linear terms of the order),
    ``inv_order``, ``ap``, ``bp`` (terms up to order + 3); all as rounded for the cards."""
    groups: dict = {}
    for k, row in enumerate(rows):
        order = int(row["order"])
        if order < 2:
            key = (order, 0, b"")
            values = np.r_[row["crval"], crpix, row["cd"]]
        else:
            nl = _sorted_terms([t for t in _terms(order) if sum(t) != 1])
            inv = _sorted_terms(_terms(order + 3))
            coef = (row["a"][nl[1]], row["b"][nl[1]], row["ap"][inv[1]], row["bp"][inv[1]])
            mask = np.concatenate(coef) != 0
            key = (order, int(row["inv_order"]), mask.tobytes())
            values = np.r_[row["crval"], crpix, row["cd"], np.concatenate(coef)[mask]]
        groups.setdefault(key, []).append((k, values))
    out = [""] * len(rows)
    for (order, inv_order, mask), members in groups.items():
        if order < 2:
            masks = ()
        else:
            nl = _sorted_terms([t for t in _terms(order) if sum(t) != 1])[0]
            inv = _sorted_terms(_terms(order + 3))[0]
            flags = np.frombuffer(mask, dtype=bool)
            sizes = np.cumsum([0, len(nl), len(nl), len(inv), len(inv)])
            masks = [(terms, flags[sizes[i]:sizes[i + 1]]) for i, terms in enumerate((nl, nl, inv, inv))]
        template = _sip_layout(order, inv_order, masks)
        texts = float_texts(np.stack([v for _, v in members]))
        for (k, _), text in zip(members, _fill(template, texts, len(members))):
            out[k] = text
    return out


def _sorted_terms(terms):
    """(terms sorted by (p, q) as ``np.nonzero`` of a SIP matrix lists them, their positions)."""
    order = sorted(range(len(terms)), key=lambda k: terms[k])
    return [terms[k] for k in order], order


def _tpv_layout(order: int) -> tuple[str, list]:
    """Template of a ``scamp_head.tpv_header`` header of ``order`` and, per PV card in writing
    order, (axis, position of its coefficient in ``_terms(order)``)."""
    from .scamp_head import TPV_TERM_START

    items = [card("EQUINOX", 2000.0, "Mean equinox"), card("RADESYS", "ICRS", "Astrometric system"),
             card("CTYPE1", "RA---TPV", "WCS projection type for this axis"),
             card("CTYPE2", "DEC--TPV", "WCS projection type for this axis"),
             card("CUNIT1", "deg", "Axis unit"), card("CUNIT2", "deg", "Axis unit"),
             ("CRVAL1", "World coordinate on this axis"), ("CRVAL2", "World coordinate on this axis"),
             ("CRPIX1", "Reference pixel on this axis"), ("CRPIX2", "Reference pixel on this axis")]
    items += [(f"CD{i}_{j}", "Linear projection matrix") for i in (1, 2) for j in (1, 2)]
    terms = _terms(order)
    picks = []
    for axis in (1, 2):
        index = {TPV_TERM_START[i + j] + (j if axis == 1 else i): col for col, (i, j) in enumerate(terms)}
        for pv in sorted(index):
            items.append((f"PV{axis}_{pv}", "Projection distortion parameter"))
            picks.append((axis, index[pv]))
    return _template(items), picks


def tpv_texts(crval: np.ndarray, crpix, orders: list[int], coefs: list[tuple]) -> list[str]:
    """Header text of each CCD of ``wcs_batch.tpv_batch``: ``crval`` (K, 2) and ``crpix`` (2,) as
    given, ``coefs[k] = (cd (2, 2), d_xi, d_eta)`` in the terms of ``orders[k]``."""
    groups: dict = {}
    for k, order in enumerate(orders):
        groups.setdefault(int(order), []).append(k)
    out = [""] * len(orders)
    for order, members in groups.items():
        template, picks = _tpv_layout(order)
        axis = np.array([a for a, _ in picks])
        col = np.array([c for _, c in picks])
        values = np.empty((len(members), 8 + len(picks)))
        for r, k in enumerate(members):
            cd, d_xi, d_eta = coefs[k]
            values[r, :8] = np.r_[crval[k], crpix, np.ravel(cd)]
            values[r, 8:] = np.where(axis == 1, d_xi[col], d_eta[col])
        for k, text in zip(members, _fill(template, float_texts(values), len(members))):
            out[k] = text
    return out

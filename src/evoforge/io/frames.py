"""pandas DataFrames as seeds and records: each row a dict, as a JSONL line would give it.

Every Python API function that takes seeds or records (``answer``, ``evolve``, ``rag``
with documents, ``in2``, ``validate``, ``dedup``, ``select``, ``export``) takes a
``pandas.DataFrame`` as it takes a ``datasets.Dataset`` or a list of dicts. A row
becomes the dict the same row read from a JSONL file would be:

- a missing value (``NaN``, ``None`` in a float column, ``pd.NA``, ``NaT``) leaves the
  field out, as a JSONL line without the key does (so a required field is reported
  missing, and an optional one takes its default);
- numpy scalars become Python values (``np.int64(3)`` -> ``3``), arrays become lists
  (inside lists and dicts too; a missing value inside a list becomes ``None``);
  timestamps become text, as the JSONL copy writes them;
- the index is ignored: row ``i`` (``df.iloc[i]``) is line ``i + 1`` of the
  ``OUT.input.jsonl`` copy a run reads, so a bad row is rejected naming that line, and
  a row without an ``id`` column gets the id the same line of a JSONL file gets.

pandas is imported only here, and only for a DataFrame: ``import evoforge`` does not
load it, and :func:`is_frame` asks only whether pandas is already loaded.
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Iterator
from typing import Any

from evoforge.errors import InputError

_MISSING = object()


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a ``pandas.DataFrame`` (never imports pandas: an object can
    only be a DataFrame once pandas is loaded)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def frame_rows(frame: Any) -> Iterator[dict[str, Any]]:
    """The rows of ``frame`` as plain dicts (see the module docstring), in row order."""
    columns = [str(name) for name in frame.columns]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise InputError(
            f"the DataFrame has more than one column named {', '.join(map(repr, repeated))}; "
            "rename them (df.columns) so each field has one column"
        )
    for values in frame.itertuples(index=False, name=None):
        row: dict[str, Any] = {}
        for name, value in zip(columns, values, strict=True):
            plain = plain_value(value)
            if plain is not _MISSING:
                row[name] = plain
        yield row


def plain_value(value: Any) -> Any:
    """``value`` as JSON-like Python: missing values give :data:`_MISSING` at the top
    level (the caller leaves the field out)."""
    if _is_missing(value):
        return _MISSING
    return _plain(value)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if _is_missing(value):  # pd.NA, NaT inside a list
        return None
    if isinstance(value, datetime.date | datetime.time):  # pd.Timestamp too
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays (and pandas arrays)
        return _plain(value.tolist())
    if hasattr(value, "keys"):  # other mappings
        return {str(key): _plain(value[key]) for key in value.keys()}  # noqa: SIM118
    return value


def _is_missing(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | list | tuple | dict):
        return False
    if isinstance(value, float):
        return math.isnan(value)
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return False
    if value is pandas.NA or value is pandas.NaT:
        return True
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.floating | numpy.datetime64):
        return bool(numpy.isnan(value) if isinstance(value, numpy.floating) else numpy.isnat(value))
    return False

"""Reading the CSV tables of public datasets (EchoNet-Dynamic's ``FileList.csv`` and
``VolumeTracings.csv``) row by row, so that a bad row is a problem of that row, not of the table.

The whole table is refused (:class:`InputError` naming it) only when it cannot be read at all:
missing, not a regular file, larger than the limit, not UTF-8 text, no header, or a required
column absent. Everything else is left to the caller, row by row, with the row's line number.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from echo_batch.errors import InputError

MAX_TABLE_BYTES = 64 << 20
"""Largest accepted table, bytes. EchoNet-Dynamic's ``VolumeTracings.csv`` (10,030 videos, about
42 rows each) is about 20 MB, its ``FileList.csv`` under 1 MB."""


@dataclass(frozen=True)
class CsvRow:
    """One data row of a table.

    Attributes:
        line: 1-based line number in the file (the header is line 1).
        values: cell text per canonical column name (stripped; None when the row is too short
            or the column is absent from the header).
        n_fields: number of cells the row had.
    """

    line: int
    values: dict[str, str | None]
    n_fields: int


@dataclass(frozen=True)
class CsvTable:
    """A table's header and rows.

    Attributes:
        path: the file.
        columns: canonical names of the columns found, in the caller's order.
        missing: canonical names of optional columns the header lacks.
        n_header: number of header cells.
        rows: data rows (blank lines skipped).
    """

    path: Path
    columns: tuple[str, ...]
    missing: tuple[str, ...]
    n_header: int
    rows: tuple[CsvRow, ...]


def _text(path: Path, max_bytes: int) -> str:
    try:
        if not path.is_file():
            what = "file is missing" if not path.exists() else "not a regular file"
            raise InputError(path, what)
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise InputError(path, f"table is larger than the limit of {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "not a UTF-8 text table") from None


def read_table(
    path: Path | str,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    *,
    max_bytes: int = MAX_TABLE_BYTES,
) -> CsvTable:
    """Read a comma-separated table whose first line names the columns.

    Column names are matched case-insensitively after stripping spaces; the caller's spelling
    becomes the key of :attr:`CsvRow.values`. Columns the caller did not ask for are ignored.

    Args:
        path: the table.
        required: columns without which the table is useless.
        optional: columns whose absence the caller reports row by row (listed in ``missing``).
        max_bytes: largest accepted file size.

    Returns:
        CsvTable.

    Raises:
        InputError: missing, not a regular file, too large, not UTF-8, empty, a required column
            absent, a column named twice, or not parseable as CSV.
    """
    path = Path(path)
    text = _text(path, max_bytes)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(path, "table is empty (no header line)")
        position: dict[str, int] = {}
        for index, name in enumerate(header):
            key = name.strip().lower()
            if key and key in position:
                raise InputError(path, f"column {name.strip()!r} is named twice in the header")
            position[key] = index
        absent = [name for name in required if name.lower() not in position]
        if absent:
            raise InputError(
                path, f"required column(s) {', '.join(absent)} missing from the header"
            )
        columns = tuple(n for n in (*required, *optional) if n.lower() in position)
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            values = {
                name: cells[i].strip() if (i := position[name.lower()]) < len(cells) else None
                for name in columns
            }
            rows.append(CsvRow(line=reader.line_num, values=values, n_fields=len(cells)))
    except csv.Error as exc:
        where = f"line {reader.line_num}"
        raise InputError(path, f"not a readable CSV table ({where}: {exc})") from None
    missing = tuple(n for n in optional if n.lower() not in position)
    return CsvTable(
        path=path, columns=columns, missing=missing, n_header=len(header), rows=tuple(rows)
    )


def safe_name(name: str) -> bool:
    """True when ``name`` is a single plain file name (no folder part, no ``..``, no control)."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and not (os.altsep and os.altsep in name)
        and "\\" not in name
        and all(ch.isprintable() for ch in name)
    )

"""Text the way people keep it: records in JSONL, CSV or Parquet files, an HF `datasets` folder saved with
`save_to_disk`, and gzip/zstd-compressed files. Each record's text field becomes one document.

The field is `data.text_field` ("text" by default) or the part after a colon in the source
(`notes.csv:body`). When the default "text" is absent and exactly one field holds strings, that one is used.

A record is one example in lines mode, one document in stream mode. Lines mode cuts examples at newlines,
so a record holding newlines would become several examples: the source's default mode is therefore lines
only when every record is one short line (at most MAX_LINE_RECORD characters), and stream otherwise.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from lmlab.errors import DataError
from lmlab.files import parse_json

log = logging.getLogger(__name__)

RECORD_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
COMPRESSED_SUFFIXES = (".gz", ".zst")
HF_MARKERS = ("dataset_info.json", "dataset_dict.json")  # written by Dataset/DatasetDict.save_to_disk
MAX_LINE_RECORD = 1000  # DataConfig.max_line_chars' default: longer records default to stream mode
DEFAULT_FIELD = "text"


def read_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when it ends in .gz or .zst."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".gz":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip file ({err})") from None
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst files needs zstandard: pip install 'lmlab[zstd]'") from None
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
                return reader.read()
        except zstandard.ZstdError as err:
            raise DataError(f"{path}: corrupt or truncated zstd file ({err})") from None
    return data


def open_bytes(path: Path) -> BinaryIO:
    """A file opened for reading its bytes a block at a time, decompressed when it ends in .gz or .zst."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst files needs zstandard: pip install 'lmlab[zstd]'") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def read_block(path: Path, fh: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes from a file open_bytes opened (b"" at its end); a damaged archive is one DataError."""
    try:
        return fh.read(size)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: corrupt or truncated compressed file ({err})") from None
    except Exception as err:  # noqa: BLE001 (zstandard.ZstdError, without importing zstandard here)
        if type(err).__name__ == "ZstdError":
            raise DataError(f"{path}: corrupt or truncated zstd file ({err})") from None
        raise


def format_suffix(path: Path) -> str:
    """The suffix that names the format, under any compression suffix: data.jsonl.gz -> .jsonl."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in HF_MARKERS)


def is_record_source(path: Path) -> bool:
    return is_hf_folder(path) or (path.is_file() and format_suffix(path) in RECORD_SUFFIXES)


def split_field(source: str) -> tuple[str, str | None]:
    """'notes.csv:body' -> ('notes.csv', 'body') when notes.csv is a record source; else (source, None)."""
    head, sep, field = source.rpartition(":")
    if not sep or not head or not field or "/" in field or Path(source).expanduser().exists():
        return source, None
    return (head, field) if is_record_source(Path(head).expanduser()) else (source, None)


def _pick(path: Path, fields: list[str], string_fields: list[str], field: str, what: str) -> str:
    if field in fields:
        return field
    if field == DEFAULT_FIELD and len(string_fields) == 1:
        log.info("%s: no %s %r; using the only text %s, %r", path, what, field, what, string_fields[0])
        return string_fields[0]
    listed = ", ".join(repr(f) for f in fields) or "none"
    raise DataError(f"{path}: no {what} {field!r}; the {what}s are {listed}; choose one with "
                    f"data.text_field=NAME or {path.name}:NAME", plain=f"{path}: no {what} {field!r}")


def _check_text(path: Path, where: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise DataError(f"{path}: {where}: field {field!r} holds {kind}, not a string")
    return value


def _jsonl(path: Path, field: str, encoding: str) -> list[str]:
    try:
        text = read_bytes(path).decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid {encoding} at byte {err.start}") from None
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_json(line, path, DataError, f"line {number} is not valid JSON")
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object with a "
                            "text field")
        records.append(record)
    if not records:
        raise DataError(f"{path}: the file is empty")
    first = records[0]
    chosen = _pick(path, list(first), [k for k, v in first.items() if isinstance(v, str)], field, "field")
    texts = []
    for number, record in enumerate(records, start=1):
        if chosen not in record:
            fields = ", ".join(repr(f) for f in record) or "none"
            raise DataError(f"{path}: record {number} has no field {chosen!r}; its fields are {fields}",
                            plain=f"{path}: record {number} has no field {chosen!r}")
        texts.append(_check_text(path, f"record {number}", chosen, record[chosen]))
    return texts


def _csv(path: Path, field: str, encoding: str) -> list[str]:
    try:
        text = read_bytes(path).decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid {encoding} at byte {err.start}") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    header, rows = rows[0], [r for r in rows[1:] if r]
    chosen = _pick(path, header, header if len(header) == 1 else [], field, "column")
    column = header.index(chosen)
    texts = []
    for number, row in enumerate(rows, start=2):
        if column >= len(row):
            raise DataError(f"{path}: row {number} has {len(row)} value(s), no {chosen!r}")
        texts.append(row[column])
    return texts


def _arrow_strings(path: Path, table, field: str, what: str = "column") -> list[str]:
    import pyarrow as pa

    schema = table.schema
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    chosen = _pick(path, schema.names, strings, field, what)
    kind = schema.field(chosen).type
    if chosen not in strings:
        raise DataError(f"{path}: {what} {chosen!r} holds {kind}, not strings")
    values = table.column(chosen).to_pylist()
    for number, value in enumerate(values, start=1):
        _check_text(path, f"row {number}", chosen, value)
    return values


def _parquet(path: Path, field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'lmlab[parquet]'") from None
    try:
        table = pq.read_table(io.BytesIO(read_bytes(path)))
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    return _arrow_strings(path, table, field)


def _hf_folder(path: Path, field: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: reading a `datasets` folder needs datasets: pip install 'lmlab[datasets]'") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # FileNotFoundError, ArrowInvalid, ... for a damaged folder
        raise DataError(f"{path}: not a readable `datasets` folder ({type(err).__name__}: {err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if "train" not in loaded and len(names) != 1:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (it has {', '.join(names)}); save the "
                            "split you want with save_to_disk")
        loaded = loaded["train"] if "train" in loaded else loaded[names[0]]
    return _arrow_strings(path, loaded.data.table, field)


def read_records(path: Path, field: str | None = None, encoding: str = "utf-8") -> list[str]:
    """The text field of every record in a JSONL/CSV/Parquet file or a `datasets` folder."""
    field = field or DEFAULT_FIELD
    if is_hf_folder(path):
        texts = _hf_folder(path, field)
    else:
        if not path.read_bytes():
            raise DataError(f"{path}: the file is empty")
        suffix = format_suffix(path)
        if suffix == ".parquet":
            texts = _parquet(path, field)
        elif suffix == ".csv":
            texts = _csv(path, field, encoding)
        else:
            texts = _jsonl(path, field, encoding)
    if not any(t.strip() for t in texts):
        raise DataError(f"{path}: the text field is empty in every record ({len(texts)} record(s))")
    return texts


def default_mode(texts: list[str]) -> str:
    """Lines mode when every record is one short line, so each record stays one example; else stream."""
    one_line = all("\n" not in t and "\r" not in t and len(t) <= MAX_LINE_RECORD for t in texts)
    return "lines" if one_line else "stream"

"""Where text comes from: embedded sets that ship with the install, a text file (.gz/.zst too), a folder of
them, or records in a JSONL/CSV/Parquet file or an HF `datasets` folder (see records.py).

A source yields documents (strings). Lines mode later cuts them into one example per line; stream mode
joins their ids with the boundary token into one sequence whose windows stay inside one document
(documents.py), unless data.cross_documents.
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmlab.data import records
from lmlab.errors import DataError
from lmlab.files import not_a_file

log = logging.getLogger(__name__)

Mode = Literal["lines", "stream"]


@dataclass(frozen=True, slots=True)
class Corpus:
    name: str
    documents: list[str]
    default_mode: Mode


def _census_file(filename: str) -> Path:
    spec = importlib.util.find_spec("names")
    if spec is None or spec.origin is None:
        raise DataError("the embedded name sets need the `names` package: pip install names==0.3.0")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise DataError(f"the `names` package is installed but lacks {filename}")
    return path


def _census_names(*filenames: str) -> list[str]:
    """First column of the census files, lowercased, deduplicated in file (frequency) order."""
    seen: dict[str, None] = {}
    for filename in filenames:
        for line in _census_file(filename).read_text(encoding="ascii").splitlines():
            if line.strip():
                seen.setdefault(line.split()[0].lower(), None)
    return list(seen)


def _pystdlib() -> list[str]:
    """The running Python's standard library sources: a real code corpus wherever Python runs."""
    root = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}:
            continue
        try:
            documents.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    if not documents:
        raise DataError(f"no readable standard-library sources under {root}")
    return documents


EMBEDDED: dict[str, tuple[str, Mode]] = {
    "names": ("US census first names (male and female), lowercase, deduplicated", "lines"),
    "surnames": ("US census surnames, lowercase", "lines"),
    "pystdlib": ("the text of this Python's standard-library .py files", "stream"),
}


def _load_embedded(name: str) -> list[str]:
    if name == "names":
        return ["\n".join(_census_names("dist.male.first", "dist.female.first"))]
    if name == "surnames":
        return ["\n".join(_census_names("dist.all.last"))]
    return _pystdlib()


def _open_text_source(path: Path, encoding: str) -> bool:
    """Check that `path` is a regular file and `encoding` a text encoding; True for a wide one (UTF-16/32),
    where NUL bytes are normal."""
    problem = not_a_file(path)
    if problem == "missing":
        raise DataError(f"{path}: no such file or folder")
    if problem:
        raise DataError(f"{path}: not a regular file ({problem})")
    try:
        return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}") from None


def _refuse_binary(path: Path, data: bytes, head: bytes, offset: int) -> None:
    """DataError when `data` (bytes from `offset` on; `head`: the file's first bytes) holds a NUL byte: the
    file is binary, or wide text read with a narrow encoding."""
    nul = data.find(b"\x00")
    if nul < 0:
        return
    wide_guess = _wide_encoding_guess(head)
    if wide_guess:
        raise DataError(f"{path}: looks like {wide_guess} text (NUL bytes between the characters); pass "
                        f"--encoding {wide_guess.lower()}")
    raise DataError(f"{path}: looks like a binary file (it contains NUL bytes, the first at byte "
                    f"{offset + nul:,}), not text")


def _not_valid(path: Path, encoding: str, byte: int) -> DataError:
    return DataError(f"{path}: not valid {encoding} at byte {byte}; pass --encoding (e.g. latin-1) if the file "
                     "uses another encoding")


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """Read one text file or raise DataError saying plainly what is wrong with it."""
    wide = _open_text_source(path, encoding)
    data = records.read_bytes(path)
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    if not wide:  # the whole file: a NUL past the first KB is as binary
        _refuse_binary(path, data, data[:4096], 0)
    try:
        text = data.decode(encoding)
    except LookupError:  # a codec that is not a text encoding (base64, rot13)
        raise DataError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as err:
        raise _not_valid(path, encoding, err.start) from None
    if "\x00" in text:  # a wide encoding's NUL character
        raise DataError(f"{path}: looks like a binary file (it contains NUL characters), not text")
    return text.removeprefix("\ufeff")


def iter_text_file(path: Path, encoding: str = "utf-8", block_bytes: int = 1 << 22) -> Iterator[str]:
    """The text of one file (.gz/.zst decompressed as it is read) in blocks decoded from `block_bytes` bytes
    at a time, checked as read_text_file checks the whole file: memory stays at one block whatever the
    file's size. A block ends anywhere, mid-word included; joined, the blocks are read_text_file's text.
    The checks are made as the reading reaches them, so a NUL byte or a bad byte near the end raises only
    after the blocks before it were yielded."""
    wide = _open_text_source(path, encoding)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except (LookupError, TypeError):
        raise DataError(f"unknown encoding {encoding!r}") from None
    offset, head, visible, first = 0, b"", False, True
    with records.open_bytes(path) as fh:
        while True:
            data = records.read_block(path, fh, block_bytes)
            head = head or data[:4096]
            if not wide:
                _refuse_binary(path, data, head, offset)
            try:
                pending = len(decoder.getstate()[0])  # bytes of a character begun in the block before
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                raise _not_valid(path, encoding, offset - pending + err.start) from None
            except LookupError:
                raise DataError(f"unknown encoding {encoding!r}") from None
            offset += len(data)
            if "\x00" in text:
                raise DataError(f"{path}: looks like a binary file (it contains NUL characters), not text")
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            visible = visible or not text.isspace() and bool(text)
            if text:
                yield text
            if not data:
                break
    if not visible:
        raise DataError(f"{path}: the file is empty")


def _wide_encoding_guess(data: bytes) -> str | None:
    """'UTF-16' or 'UTF-32' when `data` starts with that encoding's byte-order mark, or when it decodes as
    UTF-16 with every other byte NUL (ASCII text saved as UTF-16 without one); else None."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    head = data[:4096]
    for zeros in (head[1::2], head[0::2]):
        if len(head) >= 4 and zeros.count(0) >= 0.9 * len(zeros):
            return "UTF-16"
    return None


def load_corpus(source: str, encoding: str = "utf-8", text_field: str = "text") -> Corpus:
    """An embedded set by name, or a path to a text file, a folder of text files, a JSONL/CSV/Parquet file or
    an HF `datasets` folder (whose records' `text_field`, or the field after a colon: `notes.csv:body`)."""
    if source in EMBEDDED:
        return Corpus(source, _load_embedded(source), EMBEDDED[source][1])
    source, field = records.split_field(source)
    path = Path(source).expanduser()
    if records.is_record_source(path):
        texts = records.read_records(path, field or text_field, encoding)
        return Corpus(_name(path), texts, records.default_mode(texts))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        documents = []
        for file in files:
            try:
                documents.append(read_text_file(file, encoding))
            except DataError as err:
                log.warning("skipping %s", err)
        if not documents:
            raise DataError(f"{path}: the folder holds no readable text files")
        return Corpus(path.name, documents, "stream")
    if not path.exists():
        known = ", ".join(EMBEDDED)
        raise DataError(f"{source}: no such file or folder, and not an embedded data set ({known})")
    text = read_text_file(path, encoding)
    return Corpus(_name(path), [text], guess_mode(text))


def single_text_file(source: str) -> Path | None:
    """The file, when load_corpus reads `source` as one text file (neither an embedded set, nor records, nor
    a folder); else None. Such a file can be read a block at a time (iter_text_file)."""
    if source in EMBEDDED:
        return None
    source, field = records.split_field(source)
    path = Path(source).expanduser()
    if field or not path.exists() or path.is_dir() or records.is_record_source(path):
        return None
    return path


def _name(path: Path) -> str:
    """notes.jsonl.gz -> notes; a folder keeps its name."""
    if path.is_dir():
        return path.name
    return (path.with_suffix("") if path.suffix.lower() in records.COMPRESSED_SUFFIXES else path).stem


def guess_mode(text: str) -> Mode:
    """Lines mode for lists of short items (names, words, ids); stream mode for prose and code."""
    lines = [line for line in text.splitlines() if line.strip()]
    short = max(len(line) for line in lines) <= 64
    spaced = sum(" " in line for line in lines) / len(lines)
    return "lines" if short and spaced < 0.1 else "stream"

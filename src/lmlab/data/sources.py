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


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """Read one text file or raise DataError saying plainly what is wrong with it."""
    problem = not_a_file(path)
    if problem == "missing":
        raise DataError(f"{path}: no such file or folder")
    if problem:
        raise DataError(f"{path}: not a regular file ({problem})")
    data = records.read_bytes(path)
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))  # NUL bytes are normal there
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}") from None
    nul = -1 if wide else data.find(b"\x00")  # the whole file: a NUL past the first KB is as binary
    if nul >= 0:
        wide_guess = _wide_encoding_guess(data)
        if wide_guess:
            raise DataError(f"{path}: looks like {wide_guess} text (NUL bytes between the characters); pass "
                            f"--encoding {wide_guess.lower()}")
        raise DataError(f"{path}: looks like a binary file (it contains NUL bytes, the first at byte {nul:,}), "
                        "not text")
    try:
        text = data.decode(encoding)
    except LookupError:  # a codec that is not a text encoding (base64, rot13)
        raise DataError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not valid {encoding} at byte {err.start}; pass --encoding (e.g. latin-1) if the file "
            "uses another encoding"
        ) from None
    if "\x00" in text:  # a wide encoding's NUL character
        raise DataError(f"{path}: looks like a binary file (it contains NUL characters), not text")
    return text.removeprefix("\ufeff")


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

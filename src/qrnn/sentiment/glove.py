"""Reading GloVe word vectors (Pennington et al., 2014) in one streaming pass.

Accepted files: ``.txt``, ``.txt.gz`` and ``.zip`` (as distributed by Stanford: a zip holding one
``.txt``), any dimension. Only the vectors of wanted tokens are kept, so memory is bounded by the
kept vocabulary, never by the file (glove.840B.300d.txt is 5.6 GB).

Line format: ``token v1 ... vD``, fields separated by single spaces. The vector is the LAST D
fields and the token is everything before them joined by single spaces, because 840B tokens may
contain spaces (". . .", "at name@domain.com") and non-breaking spaces (kept as they are: only
U+0020 separates fields). D is the ``dim`` argument, or else the number of trailing numeric
fields of the first line (at most its field count - 1). A first line of exactly two integers is
a word2vec-style header ("400000 100") and is skipped.

Malformed lines, decided per kind (``GloveStats`` reports every skip):

- empty or blank line: skipped and counted (harmless, e.g. a final blank line).
- token that is not valid UTF-8: skipped and counted, with the first line numbers kept (840B has a
  few such tokens; the text side is valid UTF-8, so such a token could never match anyway).
- fewer than D+1 fields (truncated file, wrong ``dim``): ``GloveFormatError`` naming file and line.
- more than D+1 fields where the token part ends in a number: either a token with a space that
  ends in a number (840B has odd tokens) or a vector longer than D, which would otherwise shift a
  value into the token. Skipped and counted with its line number, never kept; past
  ``MAX_AMBIGUOUS`` such lines the dimension must be wrong, so ``GloveFormatError``.
- non-numeric or non-finite value in a kept vector: ``GloveFormatError`` naming file, line and
  field. Values of lines that are not kept are not parsed (that is what makes one pass over 840B
  affordable); they never reach the output.
- duplicate token (840B has some): the first occurrence wins; duplicates of wanted tokens are
  counted (counting duplicates among all tokens would need memory proportional to the file).
"""

from __future__ import annotations

import gzip
import io
import math
import sys
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GLOVE_PATTERNS = ("glove*.txt", "glove*.txt.gz", "glove*.zip")
GLOVE_URL = "https://nlp.stanford.edu/projects/glove/"
MAX_AMBIGUOUS = 100  # skipped lines whose token part ends in a number, before it is an error


class GloveError(Exception):
    """Base class for GloVe file problems."""


class GloveNotFoundError(GloveError, FileNotFoundError):
    """No (or more than one) GloVe file where one was looked for."""


class GloveFormatError(GloveError, ValueError):
    """A line of a GloVe file cannot be parsed; the message names the file and line."""


@dataclass
class GloveStats:
    """What one pass over a GloVe file saw."""

    path: str
    dim: int = 0
    lines: int = 0                 # lines read, including skipped ones and a header
    kept: int = 0                  # distinct tokens returned
    duplicates: int = 0            # later occurrences of a wanted token (ignored: first wins)
    skipped_empty: int = 0
    skipped_bad_utf8: int = 0
    bad_utf8_lines: list[int] = field(default_factory=list)  # first 20 line numbers
    skipped_ambiguous: int = 0     # token part ends in a number: a spaced token or a longer vector
    ambiguous_lines: list[int] = field(default_factory=list)  # first 20 line numbers
    header: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def find_glove(data_dir: Path) -> Path:
    """The single ``glove*.txt``, ``glove*.txt.gz`` or ``glove*.zip`` in ``data_dir``.

    ``data_dir`` may also be the file itself. Raises GloveNotFoundError if there is none or more
    than one (the message lists them and says to pass the file explicitly).
    """
    data_dir = Path(data_dir).expanduser()
    if data_dir.is_file():
        return data_dir
    found = sorted({p for pattern in GLOVE_PATTERNS for p in data_dir.glob(pattern) if p.is_file()})
    if not found:
        raise GloveNotFoundError(
            f"No GloVe file in {data_dir} (looked for {', '.join(GLOVE_PATTERNS)}). Download one from "
            f"{GLOVE_URL} (e.g. glove.6B.zip or glove.840B.300d.zip) into that folder, or pass the "
            f"file with --glove PATH.")
    if len(found) > 1:
        raise GloveNotFoundError(
            f"More than one GloVe file in {data_dir}: {', '.join(p.name for p in found)}. Pass the one "
            f"to use with --glove PATH.")
    return found[0]


class _CountingReader(io.RawIOBase):
    """Raw reader that counts the bytes read from the underlying (compressed) file."""

    def __init__(self, f):
        self._f, self.count = f, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = self._f.readinto(b)
        self.count += n or 0
        return n


@contextmanager
def _open_lines(path: Path) -> Iterator[tuple[io.BufferedIOBase, _CountingReader, int]]:
    """Binary line stream of the text inside ``path`` + a byte counter for progress + total bytes."""
    name = path.name.lower()
    with open(path, "rb") as raw:
        counter = _CountingReader(raw)
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                members = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".txt")]
                if len(members) != 1:
                    raise GloveNotFoundError(
                        f"{path}: a GloVe zip must hold exactly one .txt file, found "
                        f"{[i.filename for i in members]}. Extract the one you want and pass it with --glove.")
                info = members[0]
                with zf.open(info) as inner:
                    counter = _CountingReader(inner)
                    yield io.BufferedReader(counter, 1 << 20), counter, info.file_size
        elif name.endswith(".gz"):
            with gzip.GzipFile(fileobj=io.BufferedReader(counter, 1 << 20)) as gz:
                yield io.BufferedReader(gz, 1 << 20), counter, path.stat().st_size
        else:
            yield io.BufferedReader(counter, 1 << 20), counter, path.stat().st_size


def _is_number(b: bytes) -> bool:
    try:
        float(b)
        return True
    except ValueError:
        return False


def _parse_vector(fields: list[bytes], path: Path, lineno: int) -> np.ndarray:
    values = []
    for i, f in enumerate(fields):
        try:
            v = float(f)
        except ValueError:
            raise GloveFormatError(
                f"{path}:{lineno}: value {i + 1} of the vector is {f[:40]!r}, not a number. The file is "
                f"damaged or not a GloVe text file.") from None
        if not math.isfinite(v):
            raise GloveFormatError(f"{path}:{lineno}: value {i + 1} of the vector is {v}: GloVe values "
                                   f"must be finite; the file is damaged.")
        values.append(v)
    return np.asarray(values, dtype=np.float32)


def read_glove(path: Path, wanted: Callable[[str], bool] | Collection[str] | None, *,
               dim: int | None = None, progress: bool = False) -> tuple[dict[str, np.ndarray], GloveStats]:
    """Vectors of the wanted tokens, read in one streaming pass.

    Args:
        path: ``.txt``, ``.txt.gz`` or ``.zip`` GloVe file.
        wanted: predicate or collection of tokens to keep; None keeps every token (small files only).
        dim: vector dimension D; None infers it from the first line.
        progress: tqdm progress bar in bytes (compressed bytes for .gz, uncompressed for .zip).
    Returns:
        ({token: float32 (D,) vector}, GloveStats). See the module docstring for the line policy.
    Raises:
        GloveFormatError: a malformed line of a kind that is an error (names file:line).
    """
    path = Path(path)
    if wanted is None:
        keep: Callable[[str], bool] = lambda t: True  # noqa: E731
    elif callable(wanted):
        keep = wanted
    else:
        keep = wanted.__contains__
    stats = GloveStats(path=str(path))
    vectors: dict[str, np.ndarray] = {}
    D = dim
    from tqdm.auto import tqdm

    lineno = 0
    try:
        with _open_lines(path) as (lines, counter, total), \
                tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"read {path.name}",
                     disable=not progress, file=sys.stderr) as bar:
            reported = 0
            for lineno, line in enumerate(lines, start=1):
                stats.lines = lineno
                if lineno % 65536 == 0:
                    bar.update(counter.count - reported)
                    reported = counter.count
                line = line.rstrip(b"\r\n")
                if line.endswith(b" "):  # some files end lines with a space after the last value
                    line = line.rstrip(b" ")
                if not line.strip():
                    stats.skipped_empty += 1
                    continue
                if D is None:
                    fields = line.split(b" ")
                    if lineno == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                        stats.header = True
                        continue
                    trailing = 0
                    for f in reversed(fields):
                        if not _is_number(f):
                            break
                        trailing += 1
                    D = min(trailing, len(fields) - 1)
                    if D < 1:
                        raise GloveFormatError(f"{path}:{lineno}: no numeric values on the first line: not a "
                                               f"GloVe text file (format: 'token v1 ... vD').")
                n_spaces = line.count(b" ")
                if n_spaces == D:
                    cut = line.index(b" ")
                    token_b, rest = line[:cut], None
                elif n_spaces > D:
                    fields = line.split(b" ")
                    token_fields, rest = fields[:-D], fields[-D:]
                    if _is_number(token_fields[-1]):
                        stats.skipped_ambiguous += 1
                        if len(stats.ambiguous_lines) < 20:
                            stats.ambiguous_lines.append(lineno)
                        if stats.skipped_ambiguous > MAX_AMBIGUOUS:
                            raise GloveFormatError(
                                f"{path}:{lineno}: {len(fields)} fields where {D + 1} were expected and "
                                f"the part before the last {D} values ends in a number "
                                f"({token_fields[-1][:40]!r}), on more than {MAX_AMBIGUOUS} lines "
                                f"(first: {stats.ambiguous_lines[:5]}): the vectors are longer than {D}? "
                                f"Pass the right dimension (dim=) or fix the file.")
                        continue
                    token_b = b" ".join(token_fields)
                else:
                    raise GloveFormatError(
                        f"{path}:{lineno}: {n_spaces + 1} fields, expected a token and {D} values. The file is "
                        f"truncated or damaged, or its dimension is not {D} (it is read from the first line, "
                        f"unusual).")
                try:
                    token = token_b.decode("utf-8")
                except UnicodeDecodeError:
                    stats.skipped_bad_utf8 += 1
                    if len(stats.bad_utf8_lines) < 20:
                        stats.bad_utf8_lines.append(lineno)
                    continue
                if not keep(token):
                    continue
                if token in vectors:
                    stats.duplicates += 1
                    continue
                if rest is None:
                    rest = line[cut + 1:].split(b" ")
                vectors[token] = _parse_vector(rest, path, lineno)
            bar.update(counter.count - reported)
    except (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile) as err:
        raise GloveFormatError(
            f"{path}: the file is truncated or damaged after line {lineno:,} "
            f"({type(err).__name__}: {err}). Download it again ({GLOVE_URL}).") from err
    if D is None:
        raise GloveFormatError(f"{path}: no vectors in the file (it is empty or blank). Pass a GloVe "
                               f"file ({GLOVE_URL}) with --glove.")
    stats.dim = D or 0
    stats.kept = len(vectors)
    return vectors, stats


def detect_case(path: Path, lines: int = 10000) -> bool:
    """True if the vectors are cased: some token among the first ``lines`` has an uppercase letter.

    6B vectors are lower-case (False); 840B Common Crawl vectors are cased (True).
    """
    path = Path(path)
    with _open_lines(path) as (stream, _, _):
        for i, line in enumerate(stream):
            if i >= lines:
                break
            token = line.split(b" ", 1)[0].decode("utf-8", errors="replace")
            if any(c.isupper() for c in token):
                return True
    return False

"""Vocabulary: token <-> index mapping, stored as plain JSON (no pickle).

Index 0 (``UNK``) is reserved for every word the vocabulary does not know; its embedding row is
zeros. ``lowercase`` records whether text is lower-cased before lookup (True for uncased vectors
such as GloVe 6B). For a cased vocabulary (840B), ``encode`` looks up the exact token first and
falls back to its lower-cased form, mirroring how the embedding matrix was filled.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from qrnn.sentiment.text import tokenize

UNK = 0
UNK_TOKEN = "<unk>"
VOCAB_FORMAT = "qrnn-vocab-1"


@dataclass
class Vocabulary:
    """``tokens[i]`` is the token of index i; ``tokens[0]`` is ``"<unk>"``."""

    tokens: list[str]
    lowercase: bool
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] != UNK_TOKEN:
            raise ValueError(f"Vocabulary.tokens[0] must be {UNK_TOKEN!r} (index 0 is reserved for unknown "
                             f"words), got {self.tokens[:1]!r}")
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            seen, dup = set(), None
            for t in self.tokens:
                if t in seen:
                    dup = t
                    break
                seen.add(t)
            raise ValueError(f"Vocabulary.tokens has a duplicate token {dup!r}")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def index(self, token: str) -> int:
        """Index of an already tokenised token (lower-cased here if ``lowercase``); UNK if unknown."""
        if self.lowercase:
            return self._index.get(token.lower(), UNK)
        i = self._index.get(token)
        return i if i is not None else self._index.get(token.lower(), UNK)

    def encode_tokens(self, tokens: list[str]) -> list[int]:
        """Token list -> index list (same length)."""
        return [self.index(t) for t in tokens]

    def encode(self, text: str) -> list[int]:
        """Raw text -> indices: clean + tokenize + (lowercase) + lookup, unknown -> 0."""
        return self.encode_tokens(tokenize(text))

    def to_json(self, path: Path) -> None:
        """Write ``{"format", "lowercase", "tokens"}`` atomically (temp file + rename)."""
        path = Path(path)
        payload = {"format": VOCAB_FORMAT, "lowercase": self.lowercase, "tokens": self.tokens}
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))

    @classmethod
    def from_json(cls, path: Path) -> "Vocabulary":
        """Read a file written by ``to_json``; a clear error if it is not one."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete it and run prepare again.") from err
        if not isinstance(payload, dict) or payload.get("format") != VOCAB_FORMAT:
            raise ValueError(f"{path}: not a qrnn vocabulary (expected \"format\": \"{VOCAB_FORMAT}\"); "
                             f"delete it and run prepare again.")
        return cls(tokens=list(payload["tokens"]), lowercase=bool(payload["lowercase"]))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

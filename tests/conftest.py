"""Shared fixtures: the real data folder (skipped if absent) and tiny synthetic IMDB/GloVe files.

The synthetic IMDB copies have the real layout (``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``,
``aclImdb/train/unsup/<id>_0.txt``) with a few reviews per folder, built in ``tmp_path``.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_IMDB = SHARED_DATA / "aclImdb_v1.tar.gz"
REAL_GLOVE = SHARED_DATA / "glove.6B.100d.txt.gz"

# Per split and label: texts of the synthetic reviews. Words chosen so tests can predict the
# vocabulary: "great"/"bad" have GloVe vectors in the fixture file, "zorblax" (train, 2 times) has
# none, "qwerty" (train, once) has none, "testonly" appears only in test (and has a GloVe vector).
N_PER_LABEL = 3
SYNTH = {
    ("train", "pos"): ["A great movie.<br /><br />Great!", "Great acting, zorblax.", "The film was great."],
    ("train", "neg"): ["A bad movie. Bad!", "Bad acting, zorblax.", "The film was bad & qwerty."],
    ("test", "pos"): ["Great testonly film.", "Great!", "A great one."],
    ("test", "neg"): ["Bad testonly film.", "Bad!", "A bad one."],
    ("train", "unsup"): ["unlabelled words here.", "more unsupword text.", "café naïve"],
}
RATINGS = {"pos": 9, "neg": 2, "unsup": 0}

GLOVE_LINES = [
    "the 0.1 0.2 0.3",
    ". 0.0 0.1 0.0",
    "great 1.0 0.5 -0.5",
    "bad -1.0 -0.5 0.5",
    "movie 0.3 0.3 0.3",
    "film 0.3 0.2 0.3",
    "testonly 9.0 9.0 9.0",
    "acting 0.4 0.1 -0.2",
    ", 0.0 0.0 0.1",
    "! 0.2 0.0 0.0",
    "was 0.1 0.1 0.1",
    "& 0.0 0.2 0.2",
]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (REAL_IMDB.is_file() and REAL_GLOVE.is_file()):
        pytest.skip(f"real data not found in {SHARED_DATA}")
    return SHARED_DATA


def write_imdb_tree(root: Path, texts: dict | None = None, n: int | None = None) -> Path:
    """Write a synthetic ``root/aclImdb`` folder; ``n`` keeps the first n texts per folder."""
    texts = SYNTH if texts is None else texts
    base = root / "aclImdb"
    for (top, lab), items in texts.items():
        folder = base / top / lab
        folder.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(items[:n]):
            (folder / f"{i}_{RATINGS[lab]}.txt").write_text(text, encoding="utf-8")
    (base / "README").write_text("synthetic", encoding="utf-8")
    (base / "imdb.vocab").write_text("great\nbad", encoding="utf-8")
    return base


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
               linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mtime = 1_300_000_000
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_imdb_tar(path: Path, texts: dict | None = None, n: int | None = None,
                   extra: list[tuple] = ()) -> Path:
    """Write a synthetic ``aclImdb_v1.tar.gz``; ``extra`` = add_member argument tuples appended."""
    texts = SYNTH if texts is None else texts
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "aclImdb/README", b"synthetic")
        for (top, lab), items in texts.items():
            for i, text in enumerate(items[:n]):
                add_member(tar, f"aclImdb/{top}/{lab}/{i}_{RATINGS[lab]}.txt", text.encode("utf-8"))
        for args in extra:
            add_member(tar, *args[:2], **(args[2] if len(args) > 2 else {}))
    return path


def write_glove(path: Path, lines: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(GLOVE_LINES if lines is None else lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def imdb_dir(tmp_path) -> Path:
    """A data folder holding a synthetic extracted aclImdb/ and a 3-d glove.test.txt."""
    data = tmp_path / "data"
    write_imdb_tree(data)
    write_glove(data / "glove.test.3d.txt")
    return data


@pytest.fixture
def imdb_tar_dir(tmp_path) -> Path:
    """A data folder holding a synthetic aclImdb_v1.tar.gz and a 3-d glove.test.txt."""
    data = tmp_path / "tardata"
    write_imdb_tar(data / "aclImdb_v1.tar.gz")
    write_glove(data / "glove.test.3d.txt")
    return data

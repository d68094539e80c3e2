"""Finding, downloading and reading the Large Movie Review Dataset (Maas et al., ACL 2011).

Layout (archive members carry an ``aclImdb/`` prefix; paths below are relative to it):
``{train,test}/{pos,neg}/<id>_<rating>.txt`` (12,500 per folder; ratings 7-10 pos, 1-4 neg) and
``train/unsup/<id>_0.txt`` (50,000 unlabelled). Each file is one UTF-8 review.

- ``find_imdb`` locates ``aclImdb_v1.tar.gz`` or an extracted ``aclImdb/`` folder in a data
  folder, downloading the published archive (sha256-checked, atomic rename) only if neither is
  there.
- ``read_splits`` reads any of "train", "test", "unsup" in ONE streaming pass over the archive
  (no extraction: gzip streaming of the 56-84 MB archive is the expensive part) or from the folder.
  The published counts are checked by default, since a local copy is checked for structure, not
  for a checksum (repacked copies are legitimate). Ratings must agree with the folder label.
- Reading never writes; archive members that could escape a destination (absolute paths, "..",
  links) are rejected both when reading and by ``extract_safely``.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Union

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"  # published archive
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
FOLDER_NAME = "aclImdb"

SPLITS = ("train", "test", "unsup")
# split -> (top folder, label folder, label) as stored in the dataset.
_FOLDERS = {
    "train": (("train", "pos", 1), ("train", "neg", 0)),
    "test": (("test", "pos", 1), ("test", "neg", 0)),
    "unsup": (("train", "unsup", -1),),
}
# Published number of files in each label folder.
PUBLISHED_COUNTS = {"pos": 12_500, "neg": 12_500, "unsup": 50_000}
_REVIEW_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")

Expected = Union[int, None, Literal["default"]]


class ImdbError(Exception):
    """Base class for IMDB data problems."""


class ImdbNotFoundError(ImdbError, FileNotFoundError):
    """No IMDB archive or folder where it was looked for, and it could not be downloaded."""


class ImdbChecksumError(ImdbError):
    """A downloaded archive does not have the published sha256 (it is not kept)."""


class ImdbFormatError(ImdbError, ValueError):
    """An archive or folder does not have the dataset's structure (counts, names, labels, UTF-8)."""


class UnsafeArchiveError(ImdbError, ValueError):
    """An archive member could write outside the destination (absolute path, "..", link)."""


@dataclass(frozen=True)
class Review:
    """One review: ``text`` as stored (not cleaned), ``label`` 1 pos / 0 neg / -1 unsup,
    ``path`` relative to ``aclImdb/`` (e.g. "train/pos/0_9.txt"), ``rating`` 1-10 (0 for unsup)."""

    text: str
    label: int
    path: str
    rating: int


# ----------------------------------------------------------------------------------- finding


def _is_imdb_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _not_found_message(data_dir: Path, reason: str) -> str:
    return (
        f"IMDB data not found in {data_dir} ({reason}).\n"
        f"Expected there either the archive '{ARCHIVE_NAME}' or its extracted folder "
        f"'{FOLDER_NAME}/' (containing train/ and test/).\n"
        f"To use a local copy, put it in a folder DIR and pass --data DIR (or set QRNN_DATA=DIR). "
        f"To download it yourself: {IMDB_URL}"
    )


def find_imdb(data_dir: Path, *, download: bool = True, url: str = IMDB_URL,
              sha256: str = IMDB_SHA256, progress: bool = True) -> Path:
    """Locate the IMDB data in ``data_dir``, downloading the archive there if absent.

    Args:
        data_dir: folder holding ``aclImdb/`` or ``aclImdb_v1.tar.gz``; may also be the
            ``aclImdb/`` folder itself or the archive file itself.
        download: if nothing is found, download ``url`` into ``data_dir`` (else raise).
        url, sha256: what to download and the digest it must have.
        progress: show a tqdm byte progress bar while downloading.
    Returns:
        the extracted folder (preferred: faster to read) or the archive.
    Raises:
        ImdbNotFoundError: nothing found and download disabled or impossible (offline); the
            message says how to point at a local copy.
        ImdbChecksumError: the download did not match ``sha256`` (the file is deleted).
    """
    data_dir = Path(data_dir).expanduser()
    if data_dir.is_file():
        return data_dir
    if data_dir.is_dir() and _is_imdb_folder(data_dir):
        return data_dir
    folder, archive = data_dir / FOLDER_NAME, data_dir / ARCHIVE_NAME
    if folder.is_dir() and _is_imdb_folder(folder):
        return folder
    if archive.is_file():
        return archive
    if not download:
        raise ImdbNotFoundError(_not_found_message(data_dir, "download disabled"))
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImdbNotFoundError(_not_found_message(data_dir, f"cannot create the folder: {err}")) from err
    try:
        download_file(url, archive, sha256=sha256, progress=progress)
    except (urllib.error.URLError, OSError) as err:
        if created:  # a mistyped --data leaves no stray folder behind
            shutil.rmtree(data_dir, ignore_errors=True)
        raise ImdbNotFoundError(
            _not_found_message(data_dir, f"download from {url} failed: {err}")) from err
    return archive


def download_file(url: str, dest: Path, *, sha256: str | None, progress: bool = True,
                  timeout: float = 30.0) -> Path:
    """Stream ``url`` to ``dest`` through a temp file in the same folder, check sha256, rename.

    An interrupted or corrupted download never leaves a file at ``dest``.
    """
    dest = Path(dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            bar = _tqdm(total=int(total) if total else None, desc=f"download {dest.name}",
                        disable=not progress)
            with bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ImdbChecksumError(
                f"{url}: downloaded file has sha256 {digest.hexdigest()}, expected {sha256}. "
                f"The file was deleted; retry the download, or download it by hand into "
                f"{dest.parent} and check it.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _tqdm(**kwargs):
    from tqdm.auto import tqdm

    return tqdm(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, **kwargs)


# ----------------------------------------------------------------------------------- reading


def _check_member_safe(name: str, archive: Path) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(
            f"{archive}: member '{name}' has an absolute path or '..': refusing to read this "
            f"archive (it is not the IMDB archive or it was tampered with).")


def _relative(name: str) -> tuple[str, ...] | None:
    """Member name -> parts relative to aclImdb/, or None if outside it."""
    parts = tuple(p for p in PurePosixPath(name).parts if p not in (".", ""))
    if parts and parts[0] == FOLDER_NAME:
        return parts[1:]
    return None


def _classify(parts: tuple[str, ...], wanted: dict[tuple[str, str], tuple[str, int]]):
    """-> (split, label, id, rating) for a review file that belongs to a wanted split, else None."""
    if len(parts) != 3:
        return None
    hit = wanted.get((parts[0], parts[1]))
    if hit is None:
        return None
    m = _REVIEW_NAME.match(parts[2])
    if m is None:
        return None
    return hit[0], hit[1], int(m.group(1)), int(m.group(2))


def _iter_archive(archive: Path, progress: bool) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    size = archive.stat().st_size
    with open(archive, "rb") as raw, _tqdm(total=size, desc=f"read {archive.name}",
                                           disable=not progress) as bar:
        done = 0
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                _check_member_safe(member.name, archive)
                yield member.name, tar, member
                pos = raw.tell()
                if pos - done > (1 << 20):
                    bar.update(pos - done)
                    done = pos
            bar.update(size - done)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ImdbFormatError(f"{where}: not valid UTF-8 at byte {err.start}: the file is damaged; "
                              f"re-download the dataset ({IMDB_URL}).") from err


def read_splits(source: Path, splits: Iterable[str] = ("train", "test"), *,
                expected: Expected = "default", progress: bool = False) -> dict[str, list[Review]]:
    """Read several splits of the dataset in one pass over ``source``.

    Args:
        source: ``aclImdb_v1.tar.gz`` (any tar compression, streamed, not extracted) or the
            extracted ``aclImdb/`` folder (as returned by ``find_imdb``).
        splits: any of "train", "test" (pos+neg only) and "unsup" (train/unsup only).
        expected: files per label folder: "default" = published counts (12,500 pos, 12,500 neg,
            50,000 unsup); an int = that many in every folder read (small test archives);
            None = no count check (a split must still not be empty).
        progress: tqdm progress bar (bytes of the archive) while reading an archive.
    Returns:
        {split: reviews}, each list sorted by (folder, numeric id), i.e. neg before pos; labels 1/0/-1.
    Raises:
        ImdbFormatError: counts differ from ``expected`` (message lists the counts found),
            a rating disagrees with its label, a review is empty or not UTF-8.
        UnsafeArchiveError: a member name is absolute or contains "..", or a review is a link.
    """
    splits = tuple(dict.fromkeys(splits))
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    wanted = {(top, lab): (split, label) for split in splits for top, lab, label in _FOLDERS[split]}
    found: dict[str, list[tuple[tuple[str, int], Review]]] = {s: [] for s in splits}
    source = Path(source)

    def add(parts, where, read_bytes):
        info = _classify(parts, wanted)
        if info is None:
            return
        split, label, rid, rating = info
        if label == 1 and not 7 <= rating <= 10 or label == 0 and not 1 <= rating <= 4 \
                or label == -1 and rating != 0:
            raise ImdbFormatError(f"{where}: rating {rating} does not fit folder '{parts[1]}' "
                                  f"(pos 7-10, neg 1-4, unsup 0): not the IMDB dataset layout.")
        text = _decode(read_bytes(), where)
        if not text.strip():
            raise ImdbFormatError(f"{where}: empty review (the dataset has none): the copy is damaged.")
        found[split].append(((parts[1], rid), Review(text, label, "/".join(parts), rating)))

    if source.is_dir():
        root = source / FOLDER_NAME if not _is_imdb_folder(source) and (source / FOLDER_NAME).is_dir() else source
        for top, lab in wanted:
            folder = root / top / lab
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                where = f"{folder / entry.name}"
                if entry.is_symlink():
                    raise UnsafeArchiveError(f"{where}: is a symbolic link; reviews must be plain files.")
                if entry.is_file():
                    add((top, lab, entry.name), where, lambda p=entry.path: Path(p).read_bytes())
    elif source.is_file():
        try:
            for name, tar, member in _iter_archive(source, progress):
                parts = _relative(name)
                if parts is None or len(parts) != 3:
                    continue
                where = f"{source}: member {name}"
                if _classify(parts, wanted) is None:
                    continue
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"{where}: is a link (to '{member.linkname}'); reviews "
                                             f"must be regular files: refusing this archive.")
                if not member.isfile():
                    continue
                add(parts, where, lambda m=member, t=tar: t.extractfile(m).read())
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as err:
            counts = ", ".join(f"{s}: {len(found[s]):,}" for s in splits)
            raise ImdbFormatError(
                f"{source}: the archive is truncated or damaged ({type(err).__name__}: {err}); "
                f"reviews read before the damage: {counts}. Download it again ({IMDB_URL}) or "
                f"pass a complete copy with --data DIR.") from err
    else:
        raise ImdbNotFoundError(f"{source}: no such file or folder. Pass the aclImdb_v1.tar.gz archive or "
                                f"the extracted aclImdb/ folder (see find_imdb).")

    _check_counts(source, splits, found, expected)
    return {s: [r for _, r in sorted(found[s], key=lambda kr: kr[0])] for s in splits}


def _check_counts(source: Path, splits, found, expected: Expected) -> None:
    counts = {}
    for split in splits:
        for top, lab, label in _FOLDERS[split]:
            counts[f"{top}/{lab}"] = sum(1 for _, r in found[split] if r.label == label)
    problems = []
    for split in splits:
        if not found[split]:
            problems.append(f"split '{split}' is empty")
    if expected is not None:
        for key, n in counts.items():
            want = PUBLISHED_COUNTS[key.split("/")[1]] if expected == "default" else int(expected)
            if n != want:
                problems.append(f"{key} has {n:,} reviews, expected {want:,}")
    if problems:
        found_txt = ", ".join(f"{k}: {v:,}" for k, v in counts.items())
        raise ImdbFormatError(
            f"{source}: {'; '.join(problems)} (found {found_txt}). The archive or folder is incomplete "
            f"or damaged: re-download it from {IMDB_URL} (sha256 {IMDB_SHA256}), or delete it so it is "
            f"downloaded again.")


def read_split(source: Path, split: str, *, expected: Expected = "default",
               progress: bool = False) -> list[Review]:
    """Read one split ("train", "test" or "unsup"); see ``read_splits`` (prefer it for several)."""
    return read_splits(source, (split,), expected=expected, progress=progress)[split]


# -------------------------------------------------------------------------------- extraction


def extract_safely(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest``, refusing any member that could write outside it.

    Rejected (UnsafeArchiveError, before anything is written): absolute names, names with "..",
    symbolic/hard links, devices and FIFOs. Extraction happens in a temp folder inside ``dest``
    that is renamed into place, so an interrupted extraction leaves no partial ``aclImdb/``.

    Returns:
        ``dest / "aclImdb"`` when the archive has that top folder, else ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            _check_member_safe(m.name, archive)
            if m.issym() or m.islnk():
                raise UnsafeArchiveError(f"{archive}: member '{m.name}' is a link to '{m.linkname}': "
                                         f"refusing to extract (links could point outside {dest}).")
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: member '{m.name}' is not a regular file or folder: "
                                         f"refusing to extract.")
        tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
        try:
            # filter="data" is the stdlib's own guard (3.11.4+); the checks above already hold.
            tar.extractall(tmp, members=members, filter="data")
            for top in tops:
                target = dest / top
                if target.exists():
                    raise FileExistsError(f"{target} already exists: delete it or extract elsewhere.")
                os.replace(tmp / top, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / FOLDER_NAME if FOLDER_NAME in tops else dest

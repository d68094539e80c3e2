"""Run-once preparation of IMDB for training: token ids, vocabulary and embedding matrix.

``prepare`` reads the IMDB train and test splits (one pass over the archive) and a GloVe file
(one streaming pass), and writes to ``<cache_dir>/prepared/<key>/``::

    embeddings.npy                  float32 (V, D); row 0 (unknown words) is zeros
    vocab.json                      Vocabulary (index 0 = "<unk>")
    {train,test}.ids.npy            int32 (total tokens,)  all reviews' token ids, concatenated
    {train,test}.offsets.npy        int64 (N + 1,)         review i is ids[offsets[i]:offsets[i+1]]
    {train,test}.labels.npy         int8  (N,)             1 positive, 0 negative
    meta.json                       options, inputs, statistics (coverage, OOV counts, GloVe skips)

Reviews are full length (truncation is the model's business), in ``read_splits`` order
(neg then pos, by numeric id): the training loader shuffles.

Decisions:

- The vocabulary comes from the TRAINING split only: a word seen only in test is unknown (0),
  even if GloVe has it, so no test information reaches the model's parameters.
- Every training word with a GloVe vector is kept (any count: its vector is informative).
- Words without one (``oov="random"``) are kept if seen at least ``min_count`` times (default 2:
  a word seen once in 25,000 reviews - mostly typos and names - gets no useful training signal
  for its random vector and would only grow the matrix; ~half of the OOV types are such
  hapaxes), with a vector drawn from N(0, sigma^2), sigma = the standard deviation of all values of
  the GloVe vectors found, from a fixed seed, so random rows have the scale of pretrained rows.
  ``oov="unk"`` maps them all to index 0.
- Casing (``case="auto"``): uncased vectors (GloVe 6B) -> text is lower-cased; cased vectors
  (840B) -> case is kept, the exact token's vector is used, else the lower-cased token's vector.
  ``case="lower"``/``"cased"`` force either.
- ``<key>`` hashes every input: the IMDB source (path, and size/mtime of the archive or of every
  review file of an extracted folder), the GloVe file (path, size, mtime), all options and
  ``PREPARE_VERSION``. Same inputs -> the folder is reused; anything changed -> a new key.
  The folder is written under a temp name and renamed at the end, so an interrupted run never
  leaves a folder that a later run would reuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qrnn.sentiment.glove import detect_case, find_glove, read_glove
from qrnn.sentiment.imdb import FOLDER_NAME, Expected, Review, find_imdb, read_splits
from qrnn.sentiment.paths import default_cache_dir
from qrnn.sentiment.text import tokenize
from qrnn.sentiment.vocab import UNK, UNK_TOKEN, Vocabulary, atomic_write_text, current_umask

# Bump whenever the output of prepare changes for the same inputs (tokenizer, vocab rules, format).
PREPARE_VERSION = 2  # 2: GloVe lines whose token part ends in a number are skipped, not an error
DEFAULT_MIN_COUNT = 2
DEFAULT_SEED = 0
SPLIT_NAMES = ("train", "test")
CASES = ("auto", "lower", "cased", "keep")  # "keep" is an alias of "cased"
OOVS = ("random", "unk")


@dataclass
class TokenizedSplit:
    """A tokenised split: review i is ``ids[offsets[i]:offsets[i + 1]]`` with label ``labels[i]``.

    ids: int32 (total tokens,); offsets: int64 (N + 1,), offsets[0] == 0; labels: int8 (N,).
    """

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.offsets.shape != (n + 1,) or self.offsets[0] != 0 or self.offsets[-1] != len(self.ids):
            raise ValueError(f"TokenizedSplit: offsets must have shape ({n + 1},) from 0 to len(ids)="
                             f"{len(self.ids)}, got shape {self.offsets.shape} "
                             f"[{self.offsets[:1]}..{self.offsets[-1:]}]")

    def __len__(self) -> int:
        return len(self.labels)

    def review(self, i: int) -> np.ndarray:
        """int32 (T_i,) token ids of review i."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"review index {i} out of range for {len(self)} reviews")
        i %= len(self)
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """int64 (N,) number of tokens of each review."""
        return np.diff(self.offsets)


@dataclass
class PreparedData:
    """The output of ``prepare``: embeddings float32 (V, D) memory-mapped, V == len(vocab)."""

    dir: Path
    vocab: Vocabulary
    embeddings: np.ndarray
    meta: dict
    reused: bool = False
    _splits: dict = field(default_factory=dict, repr=False)

    def split(self, name: str) -> TokenizedSplit:
        """"train" or "test", memory-mapped from ``dir``."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {name!r}")
        if name not in self._splits:
            load = lambda kind: np.load(self.dir / f"{name}.{kind}.npy", mmap_mode="r",  # noqa: E731
                                        allow_pickle=False)
            self._splits[name] = TokenizedSplit(load("ids"), load("offsets"), load("labels"))
        return self._splits[name]


def load_prepared(path: Path) -> PreparedData:
    """Open a folder written by ``prepare`` (checks the format version and shapes)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no meta.json, so not a prepared-data folder. Run `prepare` "
                                f"(qrnn prepare) to create one.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("prepare_version") != PREPARE_VERSION:
        raise ValueError(f"{meta_path}: prepared with version {meta.get('prepare_version')}, this code "
                         f"reads version {PREPARE_VERSION}: run prepare again.")
    vocab = Vocabulary.from_json(path / "vocab.json")
    emb = np.load(path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    if emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[0] != len(vocab):
        raise ValueError(f"{path / 'embeddings.npy'}: expected float32 ({len(vocab)}, D), got "
                         f"{emb.dtype} {emb.shape}; delete {path} and run prepare again.")
    missing = [f"{name}.{kind}.npy" for name in SPLIT_NAMES for kind in ("ids", "offsets", "labels")
               if not (path / f"{name}.{kind}.npy").is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: incomplete, missing {', '.join(missing)}; delete it and "
                                f"run prepare again.")
    return PreparedData(dir=path, vocab=vocab, embeddings=emb, meta=meta)


# --------------------------------------------------------------------------------- cache key


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _imdb_fingerprint(source: Path) -> list:
    if source.is_file():
        return _stat(source)
    root = source / FOLDER_NAME if (source / FOLDER_NAME).is_dir() else source
    h = hashlib.sha256()
    for sub in ("train/pos", "train/neg", "test/pos", "test/neg"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            st = entry.stat()
            h.update(f"{sub}/{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [str(root.resolve()), h.hexdigest()]


def cache_key(inputs: dict) -> str:
    """16 hex digits of the sha256 of the canonical JSON of ``inputs``."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- prepare


def _log(msg: str) -> None:
    print(f"[qrnn.prepare] {msg}", file=sys.stderr, flush=True)


def _stratified(reviews: list[Review], limit: int | None) -> list[Review]:
    """First ``limit`` reviews of each label, in the given (deterministic) order."""
    if limit is None:
        return reviews
    taken: dict[int, int] = {}
    out = []
    for r in reviews:
        if taken.get(r.label, 0) < limit:
            taken[r.label] = taken.get(r.label, 0) + 1
            out.append(r)
    return out


def _tokenize_split(reviews: list[Review], lowercase: bool, desc: str, progress: bool):
    """-> (type table {token: provisional id}, list of int32 arrays of provisional ids)."""
    from tqdm.auto import tqdm

    table: dict[str, int] = {}
    setdefault = table.setdefault
    arrays = []
    for r in tqdm(reviews, desc=desc, unit="review", disable=not progress, file=sys.stderr):
        text = r.text.lower() if lowercase else r.text
        arrays.append(np.fromiter((setdefault(t, len(table)) for t in tokenize(text)), dtype=np.int32))
    return table, arrays


def _concat(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    ids = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    return ids, offsets


def prepare(data_dir: Path, glove: Path | None = None, cache_dir: Path | None = None, *,
            case: str = "auto", oov: str = "random", min_count: int = DEFAULT_MIN_COUNT,
            limit: int | None = None, progress: bool = True, download: bool = True,
            seed: int = DEFAULT_SEED, expected: Expected = "default") -> PreparedData:
    """Tokenise IMDB train/test, build the vocabulary and embedding matrix, cache them (see module doc).

    Args:
        data_dir: folder with the IMDB archive or aclImdb/ (and GloVe, unless ``glove`` is given);
            the IMDB archive is downloaded there if absent and ``download``.
        glove: GloVe file (.txt/.txt.gz/.zip) or a folder holding exactly one; None = ``data_dir``.
        cache_dir: where ``prepared/<key>/`` goes; None = ``default_cache_dir()``.
        case: "auto" (from ``detect_case``), "lower" or "cased" (alias "keep").
        oov: "random" (vectors for training words without GloVe vector seen >= min_count times)
            or "unk" (all such words -> index 0).
        min_count: threshold for ``oov="random"`` (>= 1).
        limit: keep only the first ``limit`` reviews of each label of each split (smoke runs).
        progress: tqdm bars and log lines on stderr.
        download: allow downloading the IMDB archive.
        seed: seed of the random OOV vectors.
        expected: files per label folder, passed to ``read_splits`` ("default" = published counts).
    Returns:
        PreparedData (``.reused`` says whether an existing folder was reused).
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    case = "cased" if case == "keep" else case
    if oov not in OOVS:
        raise ValueError(f"oov must be one of {OOVS}, got {oov!r}")
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    t0 = time.perf_counter()
    source = find_imdb(Path(data_dir), download=download, progress=progress)
    glove_path = find_glove(Path(glove) if glove is not None else Path(data_dir))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cased = detect_case(glove_path) if case == "auto" else case == "cased"

    inputs = {
        "prepare_version": PREPARE_VERSION,
        "imdb": _imdb_fingerprint(source),
        "glove": _stat(glove_path),
        # the resolved casing, not the option: "auto" on 6B and "lower" give the same folder
        "options": {"lowercase": not cased, "oov": oov, "min_count": min_count, "limit": limit,
                    "seed": seed, "expected": expected},
    }
    key = cache_key(inputs)
    root = cache_dir / "prepared"
    out = root / key
    if (out / "meta.json").is_file():
        try:
            data = load_prepared(out)
        except (ValueError, OSError) as err:  # damaged by hand: rebuild rather than fail
            _log(f"{out} is unreadable ({err}); preparing again")
            shutil.rmtree(out, ignore_errors=True)
        else:
            data.reused = True
            if progress:
                _log(f"reusing prepared data in {out} (same inputs, key {key})")
            return data

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-"))
    try:
        meta = _build(source, glove_path, tmp, cased=cased, case=case, oov=oov, min_count=min_count,
                      limit=limit, seed=seed, expected=expected, progress=progress)
        meta.update(key=key, inputs=inputs, seconds=round(time.perf_counter() - t0, 2))
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: a shared cache stays readable
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "meta.json").is_file():  # not a concurrent prepare that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        _log(f"prepared {out} in {meta['seconds']:.1f} s: vocab {meta['vocab_size']:,}, GloVe coverage "
             f"{meta['train_glove_token_coverage']:.2%} of train tokens, "
             f"{meta['train_glove_type_coverage']:.2%} of types")
    return load_prepared(out)


def _build(source: Path, glove_path: Path, tmp: Path, *, cased: bool, case: str, oov: str, min_count: int,
           limit: int | None, seed: int, expected: Expected, progress: bool) -> dict:
    """Do the work of ``prepare`` into the folder ``tmp`` (all but meta.json); return the stats."""
    lowercase = not cased
    if progress:
        _log(f"IMDB from {source}; GloVe from {glove_path} ({'cased' if cased else 'uncased'}: "
             f"{'case kept' if cased else 'text lower-cased'})")
    reviews = read_splits(source, SPLIT_NAMES, expected=expected, progress=progress)
    reviews = {s: _stratified(reviews[s], limit) for s in SPLIT_NAMES}

    # Training vocabulary: provisional ids in order of first appearance, counted afterwards.
    train_table, train_arrays = _tokenize_split(reviews["train"], lowercase, "tokenize train", progress)
    train_types = list(train_table)                                  # provisional id -> token
    train_counts = np.bincount(np.concatenate(train_arrays), minlength=len(train_types)) \
        if train_arrays else np.zeros(0, np.int64)

    wanted = set(train_types)
    if cased:
        wanted |= {t.lower() for t in train_types}
    vectors, gstats = read_glove(glove_path, wanted, progress=progress)
    D = gstats.dim

    # Vocabulary order: by training count (descending), ties by token, for a readable vocab.json.
    order = sorted(range(len(train_types)), key=lambda i: (-train_counts[i], train_types[i]))
    tokens, rows, n_random = [UNK_TOKEN], [None], 0
    found_types = found_tokens = unk_types = unk_tokens = 0
    for i in order:
        tok, n = train_types[i], int(train_counts[i])
        vec = vectors.get(tok)
        if vec is None and cased:
            vec = vectors.get(tok.lower())
        if vec is not None:
            found_types += 1
            found_tokens += n
            tokens.append(tok)
            rows.append(vec)
        elif oov == "random" and n >= min_count:
            tokens.append(tok)
            rows.append("random")
            n_random += 1
        else:
            unk_types += 1
            unk_tokens += n
    vocab = Vocabulary(tokens=tokens, lowercase=lowercase)

    emb = np.zeros((len(tokens), D), dtype=np.float32)                # (V, D), row UNK = 0
    found_idx = [j for j, r in enumerate(rows) if isinstance(r, np.ndarray)]
    if found_idx:
        emb[found_idx] = np.stack([rows[j] for j in found_idx])
    sigma = float(emb[found_idx].std()) if found_idx else 1.0
    random_idx = [j for j, r in enumerate(rows) if isinstance(r, str)]
    rng = np.random.default_rng(seed)
    emb[random_idx] = rng.normal(0.0, sigma, size=(len(random_idx), D)).astype(np.float32)
    np.save(tmp / "embeddings.npy", emb, allow_pickle=False)
    vocab.to_json(tmp / "vocab.json")

    # Provisional -> final ids. Train: every type gets its vocab index (or UNK).
    train_map = np.fromiter((vocab.index(t) for t in train_types), dtype=np.int32, count=len(train_types))
    is_glove_row = np.zeros(len(tokens), dtype=bool)
    is_glove_row[found_idx] = True
    stats = {"train": {}, "test": {}}
    for split in SPLIT_NAMES:
        if split == "train":
            arrays, idmap = train_arrays, train_map
        else:
            table, arrays = _tokenize_split(reviews["test"], lowercase, "tokenize test", progress)
            idmap = np.fromiter((vocab.index(t) for t in table), dtype=np.int32, count=len(table))
        ids, offsets = _concat(arrays)
        ids = idmap[ids] if len(ids) else ids
        labels = np.array([r.label for r in reviews[split]], dtype=np.int8)
        np.save(tmp / f"{split}.ids.npy", ids, allow_pickle=False)
        np.save(tmp / f"{split}.offsets.npy", offsets, allow_pickle=False)
        np.save(tmp / f"{split}.labels.npy", labels, allow_pickle=False)
        lengths = np.diff(offsets)
        stats[split] = {
            "reviews": len(labels), "positive": int(labels.sum()), "tokens": int(len(ids)),
            "unk_tokens": int((ids == UNK).sum()),
            "glove_tokens": int(is_glove_row[ids].sum()),
            "length_mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
            "length_max": int(lengths.max()) if len(lengths) else 0,
        }
    n_train_tokens = max(stats["train"]["tokens"], 1)
    return {
        "prepare_version": PREPARE_VERSION,
        "imdb_source": str(source),
        "glove_path": str(glove_path),
        "lowercase": lowercase,
        "case": case, "oov": oov, "min_count": min_count, "limit": limit, "seed": seed,
        "vocab_size": len(tokens),
        "dim": D,
        "train_types": len(train_types),
        "glove_types": found_types,
        "random_types": n_random,
        "unk_types": unk_types,
        "train_glove_type_coverage": found_types / max(len(train_types), 1),
        "train_glove_token_coverage": found_tokens / n_train_tokens,
        "train_unk_token_rate": stats["train"]["unk_tokens"] / n_train_tokens,
        "test_glove_token_coverage": stats["test"]["glove_tokens"] / max(stats["test"]["tokens"], 1),
        "test_unk_token_rate": stats["test"]["unk_tokens"] / max(stats["test"]["tokens"], 1),
        "random_std": sigma,
        "splits": stats,
        "glove_stats": gstats.as_dict(),
    }

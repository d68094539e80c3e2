"""prepare end to end on tiny synthetic IMDB copies (folder and .tar.gz), cache behaviour, Vocabulary."""

import json
import os

import numpy as np
import pytest
from conftest import GLOVE_LINES, write_glove, write_imdb_tar

from qrnn.sentiment import prepare as prepare_mod
from qrnn.sentiment.prepare import PreparedData, TokenizedSplit, load_prepared, prepare
from qrnn.sentiment.text import tokenize
from qrnn.sentiment.vocab import UNK, Vocabulary

GLOVE = {line.split(" ")[0]: np.array(line.split(" ")[1:], dtype=np.float32) for line in GLOVE_LINES}


def run(data, cache, **kw):
    kw.setdefault("expected", 3)
    return prepare(data, cache_dir=cache, progress=False, download=False, **kw)


def decode(p: PreparedData, split: str, i: int) -> list[str]:
    return [p.vocab.tokens[j] for j in p.split(split).review(i)]


def test_prepare_folder_end_to_end(imdb_dir, tmp_path):
    p = run(imdb_dir, tmp_path / "cache")
    assert not p.reused
    assert p.dir.parent == tmp_path / "cache" / "prepared" and p.dir.name == p.meta["key"]
    assert sorted(f.name for f in p.dir.iterdir()) == sorted(
        ["embeddings.npy", "vocab.json", "meta.json"]
        + [f"{s}.{k}.npy" for s in ("train", "test") for k in ("ids", "offsets", "labels")])
    assert p.vocab.lowercase  # the fixture GloVe is lower-case
    # Train counts: "zorblax" 2 (no vector -> random), "qwerty" 1 (no vector -> unknown),
    # "testonly" only in test -> unknown although GloVe has it.
    assert "zorblax" in p.vocab and "qwerty" not in p.vocab and "testonly" not in p.vocab
    assert "a" in p.vocab  # no GloVe vector but seen twice in train
    emb = np.load(p.dir / "embeddings.npy", allow_pickle=False)
    assert emb.dtype == np.float32 and emb.shape == (len(p.vocab), 3)
    assert isinstance(p.embeddings, np.memmap)
    np.testing.assert_array_equal(emb[UNK], 0)
    for word in ("great", "bad", "the", "film", "."):
        np.testing.assert_array_equal(emb[p.vocab.index(word)], GLOVE[word])
    random_rows = emb[[p.vocab.index("zorblax"), p.vocab.index("a")]]
    assert np.all(random_rows != 0) and not np.allclose(random_rows[0], random_rows[1])
    glove_rows = np.stack([GLOVE[t] for t in p.vocab.tokens if t in GLOVE])
    assert p.meta["random_std"] == pytest.approx(float(glove_rows.std()), rel=1e-6)

    train, test = p.split("train"), p.split("test")
    assert isinstance(train, TokenizedSplit) and len(train) == 6 and len(test) == 6
    assert train.labels.dtype == np.int8 and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.ids.dtype == np.int32 and train.offsets.dtype == np.int64
    # review 3 is train/pos/0_9.txt: full length, lower-cased, <br /> gone
    assert decode(p, "train", 3) == ["a", "great", "movie", ".", "great", "!"]
    assert decode(p, "train", 5) == tokenize("the film was great.".lower())
    # test/neg/0_2.txt "Bad testonly film." -> testonly unknown
    assert test.review(0).tolist() == [p.vocab.index("bad"), UNK, p.vocab.index("film"), p.vocab.index(".")]
    assert p.vocab.encode("Bad testonly film.") == test.review(0).tolist()
    # Stats: exact values for this fixture.
    m = p.meta
    assert m["vocab_size"] == len(p.vocab) == len(p.vocab.tokens)
    assert m["unk_types"] == 1 and m["splits"]["train"]["unk_tokens"] == 1     # qwerty
    assert m["splits"]["test"]["unk_tokens"] == 4                             # testonly, one: x2
    assert m["splits"]["train"]["tokens"] == int(train.offsets[-1]) == len(train.ids)
    assert m["glove_types"] + m["random_types"] + m["unk_types"] == m["train_types"]
    assert json.loads((p.dir / "meta.json").read_text())["vocab_size"] == len(p.vocab)
    assert m["glove_stats"]["dim"] == 3 and m["glove_stats"]["kept"] == m["glove_types"]


def test_oov_unk_and_min_count(imdb_dir, tmp_path):
    p = run(imdb_dir, tmp_path / "cache", oov="unk")
    assert set(p.vocab.tokens[1:]) <= set(GLOVE)
    assert p.meta["random_types"] == 0 and "zorblax" not in p.vocab
    assert p.split("train").review(4).tolist()[-2:] == [UNK, p.vocab.index(".")]  # "... acting , zorblax ."
    p3 = run(imdb_dir, tmp_path / "cache", min_count=3, oov="random")
    assert "acting" in p3.vocab                              # GloVe words are kept at any count
    assert "a" not in p3.vocab and "zorblax" not in p3.vocab  # no vector, seen twice each


def test_archive_gives_same_result_as_folder(imdb_dir, imdb_tar_dir, tmp_path):
    a = run(imdb_dir, tmp_path / "c1")
    b = run(imdb_tar_dir, tmp_path / "c2")
    assert a.vocab == b.vocab
    np.testing.assert_array_equal(a.embeddings, b.embeddings)  # same seed -> same random rows
    for s in ("train", "test"):
        np.testing.assert_array_equal(a.split(s).ids, b.split(s).ids)
        np.testing.assert_array_equal(a.split(s).offsets, b.split(s).offsets)


def test_cache_reuse_and_invalidation(imdb_tar_dir, tmp_path):
    cache = tmp_path / "cache"
    first = run(imdb_tar_dir, cache)
    again = run(imdb_tar_dir, cache)
    assert again.reused and again.dir == first.dir
    # a changed option -> another folder
    assert run(imdb_tar_dir, cache, min_count=1).dir != first.dir
    # a changed GloVe file -> another folder, with the new vector
    glove = imdb_tar_dir / "glove.test.3d.txt"
    write_glove(glove, [line.replace("great 1.0", "great 2.0") for line in GLOVE_LINES])
    os.utime(glove, ns=(1, 1))
    changed = run(imdb_tar_dir, cache)
    assert not changed.reused and changed.dir != first.dir
    assert changed.embeddings[changed.vocab.index("great")][0] == 2.0
    # a changed archive -> another folder with the new data
    write_imdb_tar(imdb_tar_dir / "aclImdb_v1.tar.gz", n=2)
    small = run(imdb_tar_dir, cache, expected=2)
    assert small.dir not in (first.dir, changed.dir) and len(small.split("train")) == 4
    assert len({p.name for p in (cache / "prepared").iterdir()}) == 4


def test_folder_change_invalidates(imdb_dir, tmp_path):
    cache = tmp_path / "cache"
    first = run(imdb_dir, cache)
    review = imdb_dir / "aclImdb" / "train" / "pos" / "1_9.txt"
    review.write_text("Great acting, zorblax, truly truly.", encoding="utf-8")
    second = run(imdb_dir, cache)
    assert second.dir != first.dir and "truly" not in first.vocab
    assert decode(second, "train", 4)[-4:] == [",", "truly", "truly", "."]


def test_limit_is_stratified_and_keyed(imdb_dir, tmp_path):
    p = run(imdb_dir, tmp_path / "cache", limit=2)
    assert p.split("train").labels.tolist() == [0, 0, 1, 1]
    assert p.split("test").labels.tolist() == [0, 0, 1, 1]
    assert decode(p, "train", 2) == ["a", "great", "movie", ".", "great", "!"]   # first pos review
    assert p.dir != run(imdb_dir, tmp_path / "cache").dir


def test_interrupted_prepare_leaves_nothing_reusable(imdb_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_build = prepare_mod._build

    def crash(source, glove_path, tmp, **kw):
        real_build(source, glove_path, tmp, **kw)      # all arrays written ...
        raise KeyboardInterrupt                        # ... then interrupted before meta.json

    monkeypatch.setattr(prepare_mod, "_build", crash)
    with pytest.raises(KeyboardInterrupt):
        run(imdb_dir, cache)
    assert list((cache / "prepared").iterdir()) == []
    monkeypatch.setattr(prepare_mod, "_build", real_build)
    p = run(imdb_dir, cache)
    assert not p.reused and len(p.split("train")) == 6


def test_cased_vectors_keep_case_with_lowercase_fallback(tmp_path):
    data = tmp_path / "data"
    write_imdb_tar(data / "aclImdb_v1.tar.gz")
    write_glove(data / "glove.cased.txt", ["Great 5 5 5", "great 1 1 1", "bad -1 -1 -1", ". 0 0 1"])
    p = run(data, tmp_path / "cache", oov="unk")
    assert p.vocab.lowercase is False and p.meta["lowercase"] is False
    emb = p.embeddings
    np.testing.assert_array_equal(emb[p.vocab.index("Great")], [5, 5, 5])  # exact token first
    np.testing.assert_array_equal(emb[p.vocab.index("great")], [1, 1, 1])
    np.testing.assert_array_equal(emb[p.vocab.index("Bad")], [-1, -1, -1])  # "Bad" -> "bad" vector
    assert "Bad" in p.vocab and p.vocab.encode("BAD") == [p.vocab.index("bad")]
    # forcing lower-case on the same file
    q = run(data, tmp_path / "cache", case="lower", oov="unk")
    assert q.vocab.lowercase and "Great" not in q.vocab and q.dir != p.dir
    # the key holds the resolved casing: "keep" (alias of "cased") and "auto" share the folder
    assert run(data, tmp_path / "cache", case="keep", oov="unk").dir == p.dir


def test_bad_options_are_rejected(imdb_dir, tmp_path):
    for kw, msg in [({"case": "upper"}, "case must be one of"), ({"oov": "zero"}, "oov must be one of"),
                    ({"min_count": 0}, "min_count must be"), ({"limit": 0}, "limit must be")]:
        with pytest.raises(ValueError, match=msg):
            run(imdb_dir, tmp_path / "cache", **kw)


def test_load_prepared(imdb_dir, tmp_path):
    p = run(imdb_dir, tmp_path / "cache")
    q = load_prepared(p.dir)
    assert q.vocab == p.vocab and q.meta == p.meta
    np.testing.assert_array_equal(q.split("test").ids, p.split("test").ids)
    with pytest.raises(ValueError, match="split must be one of"):
        q.split("unsup")
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        load_prepared(tmp_path)


# ----------------------------------------------------------------------------------- Vocabulary


def test_vocabulary_encode_and_json_roundtrip(tmp_path):
    vocab = Vocabulary(["<unk>", "the", "movie", ".", "n't", "do", "café"], lowercase=True)
    assert len(vocab) == 7
    assert vocab.encode("The MOVIE.<br />Don't café? zzz") == [1, 2, 3, 5, 4, 6, UNK, UNK]
    vocab.to_json(tmp_path / "vocab.json")
    raw = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert raw == {"format": "qrnn-vocab-1", "lowercase": True, "tokens": vocab.tokens}
    back = Vocabulary.from_json(tmp_path / "vocab.json")
    assert back == vocab and back.encode("the café") == [1, 6]
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temp file left


def test_vocabulary_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="tokens\\[0\\] must be '<unk>'"):
        Vocabulary(["the"], lowercase=True)
    with pytest.raises(ValueError, match="duplicate token 'a'"):
        Vocabulary(["<unk>", "a", "a"], lowercase=True)
    (tmp_path / "v.json").write_text('{"tokens": []}')
    with pytest.raises(ValueError, match="not a qrnn vocabulary"):
        Vocabulary.from_json(tmp_path / "v.json")
    (tmp_path / "w.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        Vocabulary.from_json(tmp_path / "w.json")


def test_cased_vocabulary_falls_back_to_lowercase():
    vocab = Vocabulary(["<unk>", "Apple", "apple", "the"], lowercase=False)
    assert vocab.encode("Apple apple APPLE The") == [1, 2, 2, 3]


def test_default_dirs_follow_environment(monkeypatch, tmp_path):
    from qrnn.sentiment.paths import default_cache_dir, default_data_dir

    monkeypatch.setenv("QRNN_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("QRNN_CACHE", str(tmp_path / "c"))
    assert default_data_dir() == tmp_path / "d" and default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QRNN_DATA")
    monkeypatch.delenv("QRNN_CACHE")
    assert default_data_dir().name == "data" and default_data_dir().parent == default_cache_dir()
    assert "qrnn" in str(default_cache_dir())


def test_real_data_smoke(shared_data, tmp_path):
    # limit keeps the tokenising small; the archive and GloVe file are still read in full.
    p = prepare(shared_data, cache_dir=tmp_path / "cache", limit=20, progress=False, download=False)
    assert p.vocab.lowercase and p.embeddings.shape[1] == 100
    train = p.split("train")
    assert train.labels.tolist() == [0] * 20 + [1] * 20
    assert decode(p, "train", 20)[:7] == ["bromwell", "high", "is", "a", "cartoon", "comedy", "."]
    assert "br" not in p.vocab and "<" not in p.vocab
    # the shared GloVe lacks "a", "i", "n't": seen often, they get random rows, not the unknown row
    for word in ("a", "i", "n't"):
        assert p.vocab.index(word) != UNK and np.any(p.embeddings[p.vocab.index(word)] != 0)
    assert 0.85 < p.meta["train_glove_token_coverage"] < 1.0


def test_damaged_cache_folder_is_rebuilt(imdb_tar_dir, tmp_path):
    cache = tmp_path / "cache"
    first = run(imdb_tar_dir, cache)
    (first.dir / "train.ids.npy").unlink()
    again = run(imdb_tar_dir, cache)
    assert not again.reused and again.dir == first.dir
    assert len(again.split("train")) == len(first.split("train"))

"""IMDB reading (archive and folder), structure checks, unsafe archives, finding and downloading."""

import functools
import hashlib
import http.server
import socket
import tarfile
import threading

import pytest
from conftest import N_PER_LABEL, SYNTH, write_imdb_tar, write_imdb_tree

from qrnn.sentiment.imdb import (ImdbChecksumError, ImdbFormatError, ImdbNotFoundError, Review,
                                 UnsafeArchiveError, extract_safely, find_imdb, read_split,
                                 read_splits)


def test_read_folder_and_archive_agree(tmp_path):
    folder = write_imdb_tree(tmp_path / "f")
    archive = write_imdb_tar(tmp_path / "t" / "aclImdb_v1.tar.gz")
    from_folder = read_splits(folder, ("train", "test", "unsup"), expected=N_PER_LABEL)
    from_archive = read_splits(archive, ("train", "test", "unsup"), expected=N_PER_LABEL)
    assert from_folder == from_archive
    train = from_archive["train"]
    # sorted by folder then numeric id: neg before pos; unsup never mixed into train
    assert [r.path for r in train] == [f"train/{lab}/{i}_{9 if lab == 'pos' else 2}.txt"
                                       for lab in ("neg", "pos") for i in range(3)]
    assert [r.label for r in train] == [0, 0, 0, 1, 1, 1]
    assert train[3] == Review(text="A great movie.<br /><br />Great!", label=1,
                              path="train/pos/0_9.txt", rating=9)
    assert [r.label for r in from_archive["unsup"]] == [-1] * 3
    assert from_archive["unsup"][2].text == "café naïve"
    assert read_split(archive, "test", expected=3) == from_archive["test"]


def test_numeric_order_not_lexicographic(tmp_path):
    texts = {("train", "pos"): [f"review {i}" for i in range(12)], ("train", "neg"): ["x"] * 12}
    got = read_split(write_imdb_tar(tmp_path / "a.tar.gz", texts), "train", expected=12)
    assert [r.text for r in got if r.label == 1] == [f"review {i}" for i in range(12)]


def test_partial_archive_fails_with_counts(tmp_path):
    texts = dict(SYNTH)
    texts[("test", "neg")] = SYNTH[("test", "neg")][:2]
    archive = write_imdb_tar(tmp_path / "aclImdb_v1.tar.gz", texts)
    with pytest.raises(ImdbFormatError, match=r"test/neg has 2 reviews, expected 3 .*found train/pos: 3, "
                                              r"train/neg: 3, test/pos: 3, test/neg: 2"):
        read_splits(archive, ("train", "test"), expected=3)
    # the default expects the published counts
    with pytest.raises(ImdbFormatError, match=r"train/pos has 3 reviews, expected 12,500"):
        read_split(archive, "train")
    assert len(read_split(archive, "test", expected=None)) == 5


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_archive_fails_with_counts(tmp_path, keep):
    import random

    rng = random.Random(0)  # varied texts, so that a cut falls inside the reviews' data
    texts = {k: [" ".join(f"w{rng.randrange(10**6)}" for _ in range(300)) for _ in range(30)]
             for k in SYNTH}
    whole = write_imdb_tar(tmp_path / "whole.tar.gz", texts).read_bytes()
    cut = tmp_path / "aclImdb_v1.tar.gz"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(ImdbFormatError, match=r"aclImdb_v1\.tar\.gz: the archive is truncated or damaged "
                                              r".*reviews read before the damage: train: \d+, test: \d+"):
        read_splits(cut, ("train", "test"), expected=None)


def test_empty_split_fails_even_without_count_check(tmp_path):
    archive = write_imdb_tar(tmp_path / "a.tar.gz", {("train", "pos"): ["x"], ("train", "neg"): ["y"]})
    with pytest.raises(ImdbFormatError, match="split 'test' is empty"):
        read_split(archive, "test", expected=None)


def test_rating_must_match_label(tmp_path):
    archive = tmp_path / "a.tar.gz"
    write_imdb_tar(archive, {("train", "neg"): ["ok"]}, extra=[("aclImdb/train/pos/7_3.txt", b"wrong")])
    with pytest.raises(ImdbFormatError, match=r"train/pos/7_3.txt: rating 3 does not fit folder 'pos'"):
        read_split(archive, "train", expected=None)


def test_bad_utf8_and_empty_review_fail_with_path(tmp_path):
    archive = write_imdb_tar(tmp_path / "a.tar.gz", {("train", "neg"): ["ok"]},
                             extra=[("aclImdb/train/pos/5_8.txt", b"caf\xe9")])
    with pytest.raises(ImdbFormatError, match=r"train/pos/5_8.txt: not valid UTF-8 at byte 3"):
        read_split(archive, "train", expected=None)
    archive = write_imdb_tar(tmp_path / "b.tar.gz", {("train", "neg"): ["ok"]},
                             extra=[("aclImdb/train/pos/5_8.txt", b"  \n")])
    with pytest.raises(ImdbFormatError, match=r"train/pos/5_8.txt: empty review"):
        read_split(archive, "train", expected=None)


@pytest.mark.parametrize("extra", [
    ("aclImdb/../evil.txt", b"x"),
    ("/tmp/evil.txt", b"x"),
    ("aclImdb/train/pos/9_9.txt", b"", {"kind": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
    ("aclImdb/train/pos/9_9.txt", b"", {"kind": tarfile.LNKTYPE, "linkname": "../../../etc/passwd"}),
])
def test_unsafe_member_rejected_by_reader(tmp_path, extra):
    archive = write_imdb_tar(tmp_path / "a.tar.gz", extra=[extra])
    with pytest.raises(UnsafeArchiveError, match="refusing|absolute"):
        read_splits(archive, ("train", "test"), expected=None)


@pytest.mark.parametrize("extra", [
    ("aclImdb/../evil.txt", b"x"),
    ("/tmp/qrnn-evil-abs.txt", b"x"),
    ("aclImdb/link", b"", {"kind": tarfile.SYMTYPE, "linkname": "/etc"}),
    ("aclImdb/hard", b"", {"kind": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
    ("aclImdb/fifo", b"", {"kind": tarfile.FIFOTYPE}),
])
def test_unsafe_member_rejected_by_extract_and_nothing_written(tmp_path, extra):
    archive = write_imdb_tar(tmp_path / "a.tar.gz", extra=[extra])
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        extract_safely(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_extract_safely_roundtrip(tmp_path):
    archive = write_imdb_tar(tmp_path / "a.tar.gz")
    folder = extract_safely(archive, tmp_path / "out")
    assert folder == tmp_path / "out" / "aclImdb"
    assert read_splits(folder, expected=3) == read_splits(archive, expected=3)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["aclImdb"]  # no temp folder left


# ------------------------------------------------------------------------- finding / download


def test_find_prefers_folder_then_archive(tmp_path):
    data = tmp_path / "data"
    archive = write_imdb_tar(data / "aclImdb_v1.tar.gz")
    assert find_imdb(data, download=False) == archive
    assert find_imdb(archive, download=False) == archive
    folder = write_imdb_tree(data)
    assert find_imdb(data, download=False) == folder
    assert find_imdb(folder, download=False) == folder


def test_not_found_without_download_says_what_to_do(tmp_path):
    with pytest.raises(ImdbNotFoundError) as err:
        find_imdb(tmp_path, download=False)
    msg = str(err.value)
    for needle in (str(tmp_path), "aclImdb_v1.tar.gz", "aclImdb/", "--data DIR", "QRNN_DATA"):
        assert needle in msg


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/served on 127.0.0.1; yields (base_url, served folder)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_download_checks_sha256(tmp_path, http_server):
    base, served = http_server
    archive = write_imdb_tar(served / "aclImdb_v1.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    data = tmp_path / "data"
    got = find_imdb(data, url=f"{base}/aclImdb_v1.tar.gz", sha256=digest, progress=False)
    assert got == data / "aclImdb_v1.tar.gz"
    assert got.read_bytes() == archive.read_bytes()
    assert len(read_split(got, "train", expected=3)) == 6
    assert sorted(p.name for p in data.iterdir()) == ["aclImdb_v1.tar.gz"]  # no .part left


def test_download_sha256_mismatch_keeps_nothing(tmp_path, http_server):
    base, served = http_server
    write_imdb_tar(served / "aclImdb_v1.tar.gz")
    data = tmp_path / "data"
    with pytest.raises(ImdbChecksumError, match="expected 0000"):
        find_imdb(data, url=f"{base}/aclImdb_v1.tar.gz", sha256="0" * 64, progress=False)
    assert list(data.iterdir()) == []


def test_download_offline_message(tmp_path):
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    with pytest.raises(ImdbNotFoundError) as err:
        find_imdb(data, url=f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz", progress=False)
    msg = str(err.value)
    assert f"download from http://127.0.0.1:{port}/aclImdb_v1.tar.gz failed" in msg
    assert "--data DIR" in msg and "QRNN_DATA" in msg and "aclImdb_v1.tar.gz" in msg
    assert not data.exists()  # the folder it made for the download is gone again


# ---------------------------------------------------------------------------------- real data


def test_real_archive(shared_data):
    splits = read_splits(shared_data / "aclImdb_v1.tar.gz", ("train", "test", "unsup"))
    # published counts (checked inside read_splits too; asserted here explicitly)
    for split in ("train", "test"):
        labels = [r.label for r in splits[split]]
        assert labels.count(1) == 12_500 and labels.count(0) == 12_500
    assert len(splits["unsup"]) == 50_000 and {r.label for r in splits["unsup"]} == {-1}
    bromwell = next(r for r in splits["train"] if r.path == "train/pos/0_9.txt")
    assert bromwell.text.startswith("Bromwell High is a cartoon comedy.")
    assert (bromwell.label, bromwell.rating) == (1, 9)
    everything = [r for s in splits.values() for r in s]
    assert sum(not r.text.isascii() for r in everything) == 9_526
    assert all(r.text.strip() for r in everything)
    assert all(7 <= r.rating <= 10 for r in splits["test"] if r.label == 1)
    assert sum("<br />" in r.text for r in splits["train"]) == 14_665

"""GloVe reading: 840B quirks (spaces, non-breaking spaces, duplicates), .gz/.zip, every malformed-line kind."""

import gzip
import zipfile

import numpy as np
import pytest

from qrnn.sentiment.glove import (MAX_AMBIGUOUS, GloveFormatError, GloveNotFoundError, detect_case, find_glove,
                                  read_glove)

NBSP = "\u00a0"
# 4-dimensional, 840B-like: a token with spaces, one with a non-breaking space, a duplicate.
LINES_840B = [
    ", 0.1 0.2 0.3 0.4",
    "The 1 2 3 4",
    ". . . 5 6 7 8",
    f"at{NBSP}home -1 -2 -3 -4",
    "at name@domain.com 0.5 0.5 0.5 0.5",
    "the 9 9 9 9",
    "The 7 7 7 7",
]


def write(path, lines, *, encoding="utf-8"):
    data = ("\n".join(lines) + "\n").encode(encoding)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.stem + ".txt", data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["glove.t.4d.txt", "glove.t.4d.txt.gz", "glove.t.4d.zip"])
def test_read_840b_quirks_all_formats(tmp_path, name):
    vectors, stats = read_glove(write(tmp_path / name, LINES_840B), None)
    assert stats.dim == 4
    assert set(vectors) == {",", "The", ". . .", f"at{NBSP}home", "at name@domain.com", "the"}
    np.testing.assert_array_equal(vectors[". . ."], np.array([5, 6, 7, 8], np.float32))
    np.testing.assert_array_equal(vectors[f"at{NBSP}home"], [-1, -2, -3, -4])
    np.testing.assert_array_equal(vectors["at name@domain.com"], [0.5] * 4)
    # duplicate "The": the first occurrence wins and is counted
    np.testing.assert_array_equal(vectors["The"], [1, 2, 3, 4])
    assert stats.duplicates == 1
    assert vectors["the"].dtype == np.float32 and vectors["the"].shape == (4,)
    assert stats.lines == 7 and stats.kept == 6


def test_wanted_set_and_callable(tmp_path):
    path = write(tmp_path / "g.txt", LINES_840B)
    vectors, stats = read_glove(path, {"the", "missing"})
    assert list(vectors) == ["the"] and stats.kept == 1 and stats.duplicates == 0
    vectors, _ = read_glove(path, lambda t: t.startswith("at"))
    assert set(vectors) == {f"at{NBSP}home", "at name@domain.com"}


@pytest.mark.parametrize("dim", [1, 2, 7])
def test_any_dimension(tmp_path, dim):
    lines = [f"tok{i} " + " ".join(str(i + j / 10) for j in range(dim)) for i in range(5)]
    vectors, stats = read_glove(write(tmp_path / "g.txt", lines), None)
    assert stats.dim == dim
    np.testing.assert_allclose(vectors["tok3"], [3 + j / 10 for j in range(dim)])


def test_numeric_first_token_and_explicit_dim(tmp_path):
    # first token is itself a number: inference must not take it as a value
    path = write(tmp_path / "g.txt", ["1 0.5 0.5", "2 0.25 0.75"])
    vectors, stats = read_glove(path, None)
    assert stats.dim == 2 and vectors["2"].tolist() == [0.25, 0.75]
    # a first token with a space is ambiguous for inference: an explicit dim resolves it
    path = write(tmp_path / "h.txt", [". . 1 2", "x 3 4"])
    vectors, _ = read_glove(path, None, dim=2)
    assert vectors[". ."].tolist() == [1, 2]


def test_word2vec_header_skipped(tmp_path):
    vectors, stats = read_glove(write(tmp_path / "g.txt", ["2 3", "a 1 2 3", "b 4 5 6"]), None)
    assert stats.header and stats.dim == 3 and set(vectors) == {"a", "b"}


def test_trailing_space_and_crlf(tmp_path):
    (tmp_path / "g.txt").write_bytes(b"a 1 2 \r\nb 3 4\r\n")
    vectors, stats = read_glove(tmp_path / "g.txt", None)
    assert stats.dim == 2 and vectors["a"].tolist() == [1, 2] and vectors["b"].tolist() == [3, 4]


# ------------------------------------------------------------------- malformed lines, per kind


def test_empty_lines_are_counted_skips(tmp_path):
    vectors, stats = read_glove(write(tmp_path / "g.txt", ["a 1 2", "", "   ", "b 3 4", ""]), None)
    assert set(vectors) == {"a", "b"} and stats.skipped_empty == 3


def test_bad_utf8_token_is_counted_skip(tmp_path):
    (tmp_path / "g.txt").write_bytes(b"a 1 2\nbad\xff\xfe 3 4\nb 5 6\n")
    vectors, stats = read_glove(tmp_path / "g.txt", None)
    assert set(vectors) == {"a", "b"}
    assert stats.skipped_bad_utf8 == 1 and stats.bad_utf8_lines == [2]


def test_too_few_fields_is_error_with_line(tmp_path):
    path = write(tmp_path / "g.txt", ["a 1 2 3", "b 4 5 6", "c 7 8"])
    with pytest.raises(GloveFormatError, match=r"g\.txt:3: 3 fields, expected a token and 3 values"):
        read_glove(path, None)


def test_too_few_fields_is_error_even_for_unwanted_token(tmp_path):
    path = write(tmp_path / "g.txt", ["a 1 2 3", "b 4"])
    with pytest.raises(GloveFormatError, match=r"g\.txt:2:"):
        read_glove(path, {"a"})


def test_non_numeric_value_is_error_with_line_and_field(tmp_path):
    path = write(tmp_path / "g.txt", ["a 1 2 3", "b 4 x5 6"])
    with pytest.raises(GloveFormatError, match=r"g\.txt:2: value 2 of the vector is b'x5'"):
        read_glove(path, None)


def test_non_finite_value_is_error(tmp_path):
    path = write(tmp_path / "g.txt", ["a 1 2 3", "b 4 nan 6"])
    with pytest.raises(GloveFormatError, match=r"g\.txt:2: value 2 .* must be finite"):
        read_glove(path, None)


def test_values_of_unwanted_lines_are_not_parsed(tmp_path):
    # Documented trade-off: one pass over 840B cannot afford to parse 660M unused floats.
    vectors, _ = read_glove(write(tmp_path / "g.txt", ["a 1 2", "b x y", "c 5 6"]), {"a", "c"})
    assert set(vectors) == {"a", "c"}


def test_token_ending_in_a_number_is_a_counted_skip_never_shifted(tmp_path):
    # "b 4" + 3 values: a spaced token ending in a number, or a 4-value vector: never kept
    path = write(tmp_path / "g.txt", ["a 1 2 3", "b 4 5 6 7", "c d 8 9 10", "e 1 1 1"])
    vectors, stats = read_glove(path, None)
    assert set(vectors) == {"a", "c d", "e"}
    assert stats.skipped_ambiguous == 1 and stats.ambiguous_lines == [2]


def test_many_longer_vectors_mean_a_wrong_dimension(tmp_path):
    lines = ["a 1 2 3"] + [f"w{i} 4 5 6 7" for i in range(MAX_AMBIGUOUS + 1)]
    path = write(tmp_path / "g.txt", lines)
    with pytest.raises(GloveFormatError, match=r"g\.txt:\d+: 5 fields where 4 were expected"):
        read_glove(path, None)


def test_first_line_without_numbers_is_error(tmp_path):
    with pytest.raises(GloveFormatError, match="no numeric values on the first line"):
        read_glove(write(tmp_path / "g.txt", ["hello world", "a 1 2"]), None)


# ------------------------------------------------------------------------- finding and casing


def test_find_glove(tmp_path):
    with pytest.raises(GloveNotFoundError, match="No GloVe file in .*--glove"):
        find_glove(tmp_path)
    one = write(tmp_path / "glove.6B.50d.txt", ["a 1"])
    (tmp_path / "notes.txt").write_text("x")
    assert find_glove(tmp_path) == one
    assert find_glove(one) == one
    write(tmp_path / "glove.840B.300d.zip", ["a 1"])
    with pytest.raises(GloveNotFoundError, match="glove.6B.50d.txt, glove.840B.300d.zip.*--glove"):
        find_glove(tmp_path)


def test_zip_with_two_txt_members_is_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "glove.zip", "w") as zf:
        zf.writestr("a.txt", "a 1\n")
        zf.writestr("b.txt", "b 1\n")
    with pytest.raises(GloveNotFoundError, match="exactly one .txt"):
        read_glove(tmp_path / "glove.zip", None)


def test_detect_case(tmp_path):
    assert detect_case(write(tmp_path / "cased.txt.gz", LINES_840B)) is True
    assert detect_case(write(tmp_path / "lower.zip", ["the 1", "movie 2", "café 3"])) is False
    # only the head is looked at
    assert detect_case(write(tmp_path / "late.txt", ["a 1", "b 2", "C 3"]), lines=2) is False


def test_real_glove_head(shared_data):
    path = shared_data / "glove.6B.100d.txt.gz"
    assert detect_case(path) is False
    vectors, stats = read_glove(path, {"the", "movie", "a", "n't"})
    # the shared file lacks single-character tokens and most apostrophe tokens (data README)
    assert set(vectors) == {"the", "movie"}
    assert stats.dim == 100 and stats.lines == 341_479 and stats.skipped_empty == 0
    assert vectors["the"][:3].tolist() == pytest.approx([-0.038194, -0.24487, 0.72812])


def test_empty_file_is_error(tmp_path):
    with pytest.raises(GloveFormatError, match=r"g\.txt: no vectors in the file"):
        read_glove(write(tmp_path / "g.txt", []), None)


def test_truncated_gzip_is_error_naming_file_and_line(tmp_path):
    import gzip

    lines = "".join(f"w{i} {i}.5 1.0 2.0\n" for i in range(20000)).encode()
    whole = gzip.compress(lines)
    path = tmp_path / "glove.t.txt.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(GloveFormatError, match=r"glove\.t\.txt\.gz: the file is truncated or damaged after line"):
        read_glove(path, None)

"""Cleaning and tokenisation: HTML line breaks, entities, PTB clitics, punctuation, non-ASCII."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrnn.sentiment.text import clean, tokenize


@pytest.mark.parametrize("raw, expected", [
    ("one<br />two", "one two"),
    ("one<br/>two", "one two"),
    ("one<br>two<BR />three", "one two three"),
    ("one<br /><br />two", "one two"),
    ("Tom &amp; Jerry &quot;cartoon&quot; &#39;x&#39;", "Tom & Jerry \"cartoon\" 'x'"),
    ("<i>italic</i> text", "italic text"),
    ("a < b and c > d", "a < b and c > d"),
    ("  many \t spaces\n\n here ", "many spaces here"),
    ("Godzilla\u2019s \u201cbest\u201d", "Godzilla's \"best\""),
])
def test_clean(raw, expected):
    assert clean(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("I don't like it.", ["I", "do", "n't", "like", "it", "."]),
    ("Can't, won't, isn't", ["Ca", "n't", ",", "wo", "n't", ",", "is", "n't"]),
    ("it's we'll I'm they'd you're we've", ["it", "'s", "we", "'ll", "I", "'m", "they", "'d",
                                            "you", "'re", "we", "'ve"]),
    ("movie.", ["movie", "."]),
    ("Bromwell High is a cartoon comedy.", ["Bromwell", "High", "is", "a", "cartoon", "comedy", "."]),
    ("Great!!! Really?!", ["Great", "!", "!", "!", "Really", "?", "!"]),
    ("well-known O'Neill -- wait...", ["well-known", "O'Neill", "--", "wait", "..."]),
    ("$3.50 for 1,000 seats in the U.S.", ["$", "3.50", "for", "1,000", "seats", "in", "the", "U.S."]),
    ("(great) \"quoted\" 'single'", ["(", "great", ")", '"', "quoted", '"', "'", "single", "'"]),
    ("café naïve Ōkami 日本", ["café", "naïve", "Ōkami", "日本"]),
    ("James' dog", ["James", "'", "dog"]),
    ("end.<br /><br />Start", ["end", ".", "Start"]),
    ("", []),
])
def test_tokenize(raw, expected):
    assert tokenize(raw) == expected


def test_br_never_a_token():
    tokens = tokenize("Good.<br /><br />Bad<br/>ugly<br>fine &lt;br /&gt;")
    assert tokens == ["Good", ".", "Bad", "ugly", "fine"]
    assert not any("br" in t or "<" in t or ">" in t for t in tokens)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_tokenize_loses_no_character(text):
    # Tokenisation only inserts splits: the tokens concatenated are the cleaned text without spaces,
    # and no token is empty or contains whitespace.
    tokens = tokenize(text)
    assert "".join(tokens) == "".join(clean(text).split())
    assert all(t and not any(c.isspace() for c in t) for t in tokens)

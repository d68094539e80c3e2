"""Text cleaning and tokenisation for IMDB reviews, aimed at GloVe's vocabulary.

GloVe 6B and 840B were trained on text tokenised by the Stanford (PTB-style) tokenizer, so words
and punctuation are split apart the same way here, to maximise the share of tokens that find a
pretrained vector:

- ``clean``: HTML entities are unescaped, HTML tags (IMDB has ``<br />`` line breaks, a few
  ``<i>``/``<p>``) become a space, typographic quotes/apostrophes become ASCII ones, whitespace
  runs collapse to one space. Non-ASCII letters are kept as they are (``café``, ``Godzilla’s``
  -> ``Godzilla's``).
- ``tokenize``: PTB clitics are split off (``don't`` -> ``do n't``, ``can't`` -> ``ca n't``,
  ``it's`` -> ``it 's``, ``we'll`` -> ``we 'll``); words keep internal hyphens and apostrophes
  (``well-known``, ``o'neill``); numbers keep their decimal point and thousands separators
  (``3.5``, ``1,000``); acronyms with periods stay whole (``u.s.``); ``...`` and ``--`` are one
  token; every other punctuation character is its own token (``!!!`` -> ``!``, ``!``, ``!``,
  which GloVe knows, rather than one ``!!!`` which it does not).

Case is left alone: lower-casing is the vocabulary's decision (uncased vs cased vectors).
"""

from __future__ import annotations

import html
import re

# Any HTML tag, e.g. <br />, <br/>, <BR>, <i>, </i>. Only tag-shaped text (a letter right after
# "<" and no "<"/">" inside), so "a < b and c > d" is left alone.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "--", "\u2026": "...", "\u00a0": " ",
})
_SPACE = re.compile(r"\s+")

# PTB clitics: n't is split before the word ("don't" -> "do n't", "can't" -> "ca n't").
_NT = re.compile(r"(?i)(?<=[^\W_])(n't)\b")
_CLITIC = re.compile(r"(?i)(?<=[^\W_])('s|'re|'ve|'ll|'d|'m)\b")

_TOKEN = re.compile(
    r"""
      (?i:n't|'s|'re|'ve|'ll|'d|'m)(?![^\W_])    # clitics split off above
    | \d+(?:[.,]\d+)+                             # 3.5  1,000  10.000,5
    | (?:[^\W\d_]\.){2,}                          # acronyms: u.s.  a.k.a.
    | [^\W_]+(?:[-'][^\W_]+)*                     # words, with internal hyphens / apostrophes
    | \.{2,} | -{2,}                              # ... --
    | \S                                          # any other single character
    """,
    re.VERBOSE,
)


def clean(text: str) -> str:
    """Normalise a raw review: entities unescaped, HTML tags -> space, ASCII quotes, single spaces.

    Args:
        text: raw review text, e.g. ``"Great film!<br /><br />Loved it &amp; more"``.
    Returns:
        ``"Great film! Loved it & more"`` (stripped; no tags, no entity left).
    """
    text = html.unescape(text)
    text = _TAG.sub(" ", text)
    text = text.translate(_QUOTES)
    return _SPACE.sub(" ", text).strip()


def tokenize(text: str) -> list[str]:
    """Clean then split into PTB/GloVe-like tokens; case is preserved.

    Args:
        text: raw review text (``clean`` is applied first, so ``<br />`` never becomes a token).
    Returns:
        tokens, e.g. ``tokenize("I don't like it.")`` -> ``["I", "do", "n't", "like", "it", "."]``.
    """
    text = clean(text)
    text = _NT.sub(r" \1", text)
    text = _CLITIC.sub(r" \1", text)
    return _TOKEN.findall(text)

"""IMDB sentiment application built on the QRNN library.

Pipeline, one module per step: `text` (cleaning, tokenisation) -> `imdb` (reading the Large Movie
Review Dataset) and `glove` (pretrained word vectors) -> `vocab` -> `prepare` (run-once step that
writes token ids, vocabulary and embedding matrix to a cache folder) -> model / training / CLI.

This file stays import-light on purpose: importing `qrnn.sentiment` loads nothing else.
"""

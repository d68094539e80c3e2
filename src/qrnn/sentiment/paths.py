"""Default locations of the data folder and of the cache folder.

Both can be overridden by environment variables so that a user (or CI) can point the whole
application at a local copy without flags: ``QRNN_DATA`` for the raw data (IMDB archive, GloVe
file), ``QRNN_CACHE`` for derived artefacts (prepared token ids, embeddings).
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

DATA_ENV = "QRNN_DATA"
CACHE_ENV = "QRNN_CACHE"


def default_cache_dir() -> Path:
    """``$QRNN_CACHE`` if set, else the per-user cache folder for "qrnn" (e.g. ~/.cache/qrnn)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("qrnn", appauthor=False))


def default_data_dir() -> Path:
    """``$QRNN_DATA`` if set, else ``<user cache dir>/data``: where raw data is looked for and downloaded."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("qrnn", appauthor=False)) / "data"

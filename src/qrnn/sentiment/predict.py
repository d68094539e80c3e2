"""Sentiment of raw texts with a trained checkpoint."""

from __future__ import annotations

import numpy as np
import torch

from qrnn.sentiment.model import SentimentClassifier
from qrnn.sentiment.train import collate
from qrnn.sentiment.vocab import Vocabulary


@torch.no_grad()
def predict(model: SentimentClassifier, vocab: Vocabulary, texts: list[str], max_len: int,
            batch_size: int = 64) -> list[float]:
    """-> P(positive) for each text, in order."""
    model.eval()
    ids = [np.asarray(vocab.encode(t), dtype=np.int64) for t in texts]
    out: list[float] = []
    for i in range(0, len(ids), batch_size):
        batch, lengths = collate(ids[i:i + batch_size], max_len)
        out += torch.sigmoid(model(batch, lengths)).tolist()
    return out

"""Re-evaluate a run's validation split with the current code and compare it with the numbers the
run logged while training (issue: "the IMDB classifier is rebuilt on this layer, with unchanged
results"). Usage: python experiments/check_unchanged.py RUN_DIR PREPARED_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np

from qrnn.sentiment.checkpoint import load_checkpoint
from qrnn.sentiment.prepare import load_prepared
from qrnn.sentiment.train import evaluate_reviews, split_train_valid

run, prepared_dir = Path(sys.argv[1]), Path(sys.argv[2])
model, vocab, config = load_checkpoint(run / "best")
prepared = load_prepared(prepared_dir)
assert vocab.tokens == prepared.vocab.tokens, "the checkpoint's vocabulary differs from the prepared data"
split = prepared.split("train")
labels = np.asarray(split.labels)
cfg = config["train"]
_, valid_idx = split_train_valid(labels, cfg["valid_size"], cfg["seed"])
now = evaluate_reviews(model, [split.review(i) for i in valid_idx], labels[valid_idx], cfg["max_len"])
logged = config["valid"]
print(json.dumps({"epoch": config["epoch"],
                  "logged": {k: logged[k] for k in ("accuracy", "loss", "correct")},
                  "now": {k: now[k] for k in ("accuracy", "loss", "correct")},
                  "loss_difference": abs(now["loss"] - logged["loss"])}, indent=1))

"""Training pieces: validation split, batching, truncation, checkpoints, exact resume."""

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qrnn.sentiment import train as train_mod
from qrnn.sentiment.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from qrnn.sentiment.model import ModelConfig, SentimentClassifier
from qrnn.sentiment.train import (
    Interrupted, TrainConfig, collate, epoch_batches, split_train_valid, train, truncate,
)
from qrnn.sentiment.vocab import Vocabulary


def test_truncation_keeps_the_end_and_never_empties():
    ids = np.arange(10)
    assert truncate(ids, 4).tolist() == [6, 7, 8, 9]
    assert truncate(ids, 20).tolist() == list(range(10))
    assert truncate(np.array([], dtype=np.int32), 5).tolist() == [0]


def test_collate_pads_right_with_lengths():
    ids, lengths = collate([np.array([5, 6, 7]), np.array([8]), np.arange(1, 10)], max_len=4)
    assert lengths.tolist() == [3, 1, 4]
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [6, 7, 8, 9]]


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.array([0] * 70 + [1] * 30)
    tr, va = split_train_valid(labels, 20, seed=3)
    assert len(va) == 20 and len(tr) == 80
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(100))
    assert (labels[va] == 0).sum() == 10 and (labels[va] == 1).sum() == 10
    assert np.array_equal(va, split_train_valid(labels, 20, seed=3)[1])
    assert not np.array_equal(va, split_train_valid(labels, 20, seed=4)[1])
    with pytest.raises(ValueError, match="valid-size"):
        split_train_valid(labels, 60, seed=0)


def test_epoch_batches_cover_each_review_once_and_depend_on_seed_and_epoch():
    idx = np.arange(3, 250)
    lengths = np.random.default_rng(0).integers(1, 500, size=250)
    batches = epoch_batches(idx, lengths, 24, seed=1, epoch=0, bucket=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == idx.tolist()
    assert all(len(b) <= 24 for b in batches)
    again = epoch_batches(idx, lengths, 24, seed=1, epoch=0, bucket=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = np.concatenate(epoch_batches(idx, lengths, 24, seed=1, epoch=1, bucket=3))
    assert not np.array_equal(flat, other)
    # bucketing: within a batch, lengths are sorted (spread far smaller than random batches)
    spread = np.mean([np.ptp(lengths[b]) for b in batches if len(b) > 1])
    assert spread < 0.5 * np.ptp(lengths)


# ---------------------------------------------------------------- tiny prepared data set


@dataclass
class _Split:
    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def review(self, i):
        return self.ids[self.offsets[i]:self.offsets[i + 1]]


@dataclass
class _Prepared:
    dir: Path
    vocab: Vocabulary
    embeddings: np.ndarray
    splits: dict

    def split(self, name):
        return self.splits[name]


def _tiny_prepared(tmp_path, n=96):
    """Reviews whose label is learnable: positives use words 1-9, negatives 10-19."""
    rng = np.random.default_rng(0)
    tokens = ["<unk>"] + [f"w{i}" for i in range(1, 20)]
    vocab = Vocabulary(tokens, lowercase=True)
    reviews, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.integers(1, 10, size=rng.integers(3, 30)) + (0 if label else 9)
        reviews.append(words.astype(np.int32))
        labels.append(label)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in reviews])]).astype(np.int64)
    split = _Split(np.concatenate(reviews), offsets, np.array(labels, dtype=np.int8))
    emb = rng.normal(size=(20, 8)).astype(np.float32)
    d = tmp_path / "prepared"
    d.mkdir()
    return _Prepared(d, vocab, emb, {"train": split})


_TINY_MODEL = dict(vocab_size=20, embed_dim=8, hidden_size=6, num_layers=2)
_TINY_TRAIN = dict(epochs=2, batch_size=8, valid_size=16, checkpoint_every=3, bucket=2, max_len=12)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_training_learns_and_writes_its_outputs(tmp_path):
    prepared = _tiny_prepared(tmp_path)
    out = tmp_path / "run"
    best = train(prepared, out, ModelConfig(**_TINY_MODEL),
                 TrainConfig(**{**_TINY_TRAIN, "epochs": 4, "lr": 1e-2}), progress=False,
                 log=lambda *_: None)
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3]
    assert metrics[-1]["valid_accuracy"] >= 0.9  # separable toy data
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, vocab, config = load_checkpoint(best)
    assert vocab.tokens == prepared.vocab.tokens
    assert config["train"]["max_len"] == 12 and config["model"]["num_layers"] == 2
    assert not model.training


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    prepared = _tiny_prepared(tmp_path)
    cfg, mcfg = TrainConfig(**_TINY_TRAIN), ModelConfig(**_TINY_MODEL)
    quiet = dict(progress=False, log=lambda *_: None)
    train(prepared, tmp_path / "straight", mcfg, cfg, **quiet)

    # Interrupt in the middle of epoch 1 (batch 5 of 10): SIGINT as a user's Ctrl-C would.
    calls = {"n": 0}
    real_collate = train_mod.collate

    def collate_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "collate", collate_then_interrupt)
    with pytest.raises(Interrupted, match="batch 5/10"):
        train(prepared, tmp_path / "resumed", mcfg, cfg, **quiet)
    state = json.loads((tmp_path / "resumed" / "last" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (0, 5)
    monkeypatch.setattr(train_mod, "collate", real_collate)
    train(prepared, tmp_path / "resumed", mcfg, cfg, **quiet)

    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "resumed" / "last")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ma = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    mb = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert len(ma) == len(mb) == 2
    for x, y in zip(ma, mb):
        x, y = json.loads(x), json.loads(y)
        assert x["valid_accuracy"] == y["valid_accuracy"]
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-12)


def test_resume_refuses_a_different_configuration(tmp_path):
    prepared = _tiny_prepared(tmp_path)
    quiet = dict(progress=False, log=lambda *_: None)
    cfg = TrainConfig(**{**_TINY_TRAIN, "epochs": 1})
    train(prepared, tmp_path / "run", ModelConfig(**_TINY_MODEL), cfg, **quiet)
    other = TrainConfig(**{**_TINY_TRAIN, "epochs": 1, "lr": 0.5})
    with pytest.raises(ValueError, match="--restart"):
        train(prepared, tmp_path / "run", ModelConfig(**_TINY_MODEL), other, **quiet)
    train(prepared, tmp_path / "run", ModelConfig(**_TINY_MODEL), other, restart=True, **quiet)


def test_checkpoint_round_trip_and_atomic_swap(tmp_path):
    torch.manual_seed(0)
    model = SentimentClassifier(ModelConfig(**_TINY_MODEL)).eval()
    vocab = Vocabulary(["<unk>"] + [f"w{i}" for i in range(1, 20)], lowercase=True)
    path = save_checkpoint(tmp_path / "ckpt", model, vocab, {"train": {"max_len": 12}})
    # a second save replaces the first; no temporary or old folder is left behind
    save_checkpoint(tmp_path / "ckpt", model, vocab, {"train": {"max_len": 12}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded, vocab2, config = load_checkpoint(path)
    ids, lengths = torch.randint(0, 20, (3, 7)), torch.tensor([7, 2, 5])
    torch.testing.assert_close(loaded(ids, lengths), model(ids, lengths), rtol=0, atol=0)
    assert vocab2.tokens == vocab.tokens and vocab2.lowercase
    # a swap interrupted after the old folder was moved aside is still found
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")
    load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "nothing")
    assert not any(p.suffix == ".pt" or p.suffix == ".pkl" for p in (tmp_path / "ckpt.old").iterdir())


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_l2_applies_to_every_weight_matrix_and_nothing_else(rnn):
    from qrnn.sentiment.train import make_optimizer

    model = SentimentClassifier(ModelConfig(vocab_size=20, embed_dim=8, hidden_size=6,
                                            num_layers=2, rnn=rnn))
    decay, plain = make_optimizer(model, TrainConfig()).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 4e-6 and plain["weight_decay"] == 0.0
    assert "head.weight" in decayed and not any("bias" in n or "embedding" in n for n in decayed)
    # every recurrent weight matrix (QRNN layers.*.weight, LSTM weight_ih/hh_l0) is decayed
    expected = 2 if rnn == "qrnn" else 4
    assert len([n for n in decayed if n.startswith("rnn.")]) == expected


def test_checkpoint_files_are_readable_like_any_new_file(tmp_path):
    import stat

    from qrnn.sentiment.vocab import current_umask

    model = SentimentClassifier(ModelConfig(**_TINY_MODEL))
    vocab = Vocabulary(["<unk>"] + [f"w{i}" for i in range(1, 20)], lowercase=True)
    path = save_checkpoint(tmp_path / "ckpt", model, vocab, {"train": {"max_len": 12}})
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~current_umask(), f.name

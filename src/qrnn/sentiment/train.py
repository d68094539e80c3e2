"""Training loop for the IMDB classifier: validation split, bucketed batches, exact resume.

Choices the paper leaves open (documented in the README too):
- Truncation: reviews longer than `max_len` (400) tokens keep their LAST 400 tokens (the
  verdict of a review tends to be at its end, and the classifier reads the last token).
- Padding: on the right, with id 0; the classifier reads each review's state at its last real
  token, and the convolution and recurrence are causal, so padding never reaches a prediction.
- Batches: each epoch shuffles the training reviews (seeded by seed and epoch), sorts pools of
  50 batches by length and shuffles the batches, so little time is spent on padding.
- L2 4e-6 is RMSprop's weight decay on weight matrices (recurrent-layer and output weights);
  not on biases and not on the GloVe-initialised embeddings, which are fine-tuned.
- Validation: 2,500 training reviews (1,250 per label, seeded) choose the best epoch; the test
  set is never read here.
Resume: the batches of an epoch are a function of (seed, epoch), and dropout is re-seeded from
(seed, epoch, batch) before every batch, so a resumed run replays exactly what an uninterrupted
one does. SIGINT/SIGTERM finish the batch in flight, save, and exit; a checkpoint is also saved
every `checkpoint_every` batches, which bounds what a hard kill (SIGKILL, power loss) repeats.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from qrnn.sentiment.checkpoint import (
    load_training_state, read_config, resolve, save_checkpoint,
)
from qrnn.sentiment.model import ModelConfig, SentimentClassifier


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 24
    lr: float = 1e-3
    alpha: float = 0.9
    eps: float = 1e-8
    weight_decay: float = 4e-6
    max_len: int = 400
    valid_size: int = 2500
    seed: int = 0
    freeze_embeddings: bool = False
    checkpoint_every: int = 200
    bucket: int = 50

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_len", "checkpoint_every", "bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.valid_size < 2:
            raise ValueError(f"valid_size must be >= 2 (one review per label), got {self.valid_size}")


# ---------------------------------------------------------------- data -> batches


def truncate(ids: np.ndarray, max_len: int) -> np.ndarray:
    """Keep the last `max_len` ids; an empty review becomes one unknown token (id 0)."""
    ids = ids[-max_len:]
    return ids if len(ids) else np.zeros(1, dtype=ids.dtype)


def collate(reviews: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """list of id arrays -> ids (B, T) right-padded with 0, lengths (B,)."""
    reviews = [truncate(r, max_len) for r in reviews]
    lengths = torch.tensor([len(r) for r in reviews], dtype=torch.long)
    ids = torch.zeros(len(reviews), int(lengths.max()), dtype=torch.long)
    for b, r in enumerate(reviews):
        ids[b, : len(r)] = torch.from_numpy(r.astype(np.int64))
    return ids, lengths


def split_train_valid(labels: np.ndarray, valid_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded hold-out: -> (train indices, valid indices), both sorted."""
    rng = np.random.default_rng([seed, 0x5EED])
    valid = []
    classes = np.unique(labels)
    for k, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        share = valid_size // len(classes) + (1 if k < valid_size % len(classes) else 0)
        if share >= len(members):
            raise ValueError(
                f"valid_size={valid_size} leaves no training reviews of label {label} "
                f"({len(members)} available); lower --valid-size"
            )
        valid.append(rng.choice(members, size=share, replace=False))
    valid_idx = np.sort(np.concatenate(valid))
    train_idx = np.setdiff1d(np.arange(len(labels)), valid_idx)
    return train_idx, valid_idx


def epoch_batches(indices: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int,
                  epoch: int, bucket: int) -> list[np.ndarray]:
    """The batches of one epoch, a pure function of its arguments (what resume relies on)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(indices)
    pool = batch_size * bucket
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The dropout seed of one batch: resumed and uninterrupted runs draw the same masks."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + batch) % (2**63)


def review_lengths(split) -> np.ndarray:
    return np.diff(split.offsets)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_reviews(model: SentimentClassifier, reviews: list[np.ndarray], labels: np.ndarray,
                     max_len: int, batch_size: int = 64, progress: bool = False,
                     desc: str = "evaluate") -> dict:
    """Accuracy, mean loss and confusion matrix [[TN, FP], [FN, TP]] over labelled reviews."""
    model.eval()
    order = np.argsort([min(len(r), max_len) for r in reviews], kind="stable")
    probs = np.empty(len(reviews), dtype=np.float64)
    loss_sum = 0.0
    start = time.perf_counter()
    bar = tqdm(total=len(reviews), unit="review", desc=desc, disable=not progress, leave=False)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        ids, lengths = collate([reviews[j] for j in idx], max_len)
        logits = model(ids, lengths).double()
        target = torch.from_numpy(labels[idx].astype(np.float64))
        loss_sum += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
        probs[idx] = torch.sigmoid(logits).numpy()
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - start
    pred = (probs >= 0.5).astype(np.int64)
    truth = labels.astype(np.int64)
    confusion = [[int(((truth == t) & (pred == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    n = len(reviews)
    return {
        "n": n,
        "correct": int((pred == truth).sum()),
        "accuracy": float((pred == truth).mean()) if n else math.nan,
        "loss": loss_sum / n if n else math.nan,
        "confusion": confusion,
        "seconds": seconds,
        "reviews_per_s": n / seconds if seconds > 0 else math.nan,
    }


# ---------------------------------------------------------------- training


def make_optimizer(model: SentimentClassifier, cfg: TrainConfig) -> torch.optim.RMSprop:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # weight matrices (QRNN `layers.*.weight`, LSTM `weight_ih/hh_l0`, head): not biases,
        # not the GloVe-initialised embeddings
        (decay if p.dim() >= 2 and not name.startswith("embedding") else plain).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves and exits at the next batch boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signum, self._previous[signum])  # a second signal acts at once

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Interrupted(Exception):
    """Training stopped by a signal after saving a resumable checkpoint."""


def _plot_curves(out_dir: Path, history: list[dict], steps: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if steps:
        x = [s["epoch"] + s["fraction"] for s in steps]
        ax_loss.plot(x, [s["loss"] for s in steps], lw=0.8, alpha=0.6, label="train (running)")
    epochs = [h["epoch"] + 1 for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (epoch)")
    ax_loss.plot(epochs, [h["valid_loss"] for h in history], "s-", label="validation")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["valid_accuracy"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="binary cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = out_dir / "curves.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_dir / "curves.png")


def _rewrite_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def train(prepared, out_dir: Path, model_cfg: ModelConfig | None = None,
          cfg: TrainConfig = TrainConfig(), *, restart: bool = False,
          progress: bool = True, log=print) -> Path:
    """Train (or resume) into `out_dir`; returns the path of the best checkpoint.

    out_dir/last  resumable checkpoint (weights, optimizer, position)
    out_dir/best  weights of the epoch with the best validation accuracy
    out_dir/metrics.jsonl  one record per epoch;  out_dir/curves.png  learning curves
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embeddings = torch.from_numpy(np.array(prepared.embeddings, dtype=np.float32))
    if model_cfg is None:
        model_cfg = ModelConfig(vocab_size=embeddings.shape[0], embed_dim=embeddings.shape[1])
    extra = {"train": asdict(cfg), "prepared": {"dir": str(prepared.dir),
                                                "key": Path(prepared.dir).name}}

    train_split = prepared.split("train")
    labels = np.asarray(train_split.labels)
    lengths = review_lengths(train_split)
    train_idx, valid_idx = split_train_valid(labels, cfg.valid_size, cfg.seed)
    valid_reviews = [train_split.review(i) for i in valid_idx]

    torch.manual_seed(cfg.seed)
    model = SentimentClassifier(model_cfg, embeddings)
    model.embedding.weight.requires_grad_(not cfg.freeze_embeddings)
    optimizer = make_optimizer(model, cfg)
    epoch, batch_pos, history, best_acc = 0, 0, [], -1.0
    last = out_dir / "last"
    if not restart and (last.exists() or last.with_name("last.old").exists()):
        saved = read_config(last)
        # Everything but the number of epochs must match (a finished run may be extended).
        differ = [f"{k} (run: {old!r}, now: {new!r})" for section, now_cfg in
                  (("model", model_cfg.to_dict()), ("train", _without_epochs(asdict(cfg))))
                  for k, new in now_cfg.items()
                  if (old := saved[section].get(k, "missing")) != new and k != "epochs"]
        if differ:
            raise ValueError(
                f"{out_dir} holds a run with a different configuration: {', '.join(differ)}. "
                f"Resume it with the same options, or pass --restart to start over, or choose "
                f"another --out"
            )
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resolve(last) / "model.safetensors")))
        state = load_training_state(last, optimizer)
        epoch, batch_pos, resumed_running = state["epoch"], state["batch"], state["running"]
        history, best_acc = state["history"], state["best_valid_accuracy"]
        if epoch >= cfg.epochs:
            log(f"{out_dir} has already trained {epoch} epochs (--epochs {cfg.epochs}); "
                f"raise --epochs to train more")
        else:
            log(f"resuming {out_dir} at epoch {epoch + 1}, batch {batch_pos}")

    # The logs are rewritten from the checkpoint's position, so replayed batches are not doubled.
    steps_path = out_dir / "steps.jsonl"
    steps = [json.loads(l) for l in steps_path.read_text().splitlines()] if steps_path.exists() else []
    steps = [s for s in steps if (s["epoch"], s["batch"]) <= (epoch, batch_pos)]
    _rewrite_jsonl(steps_path, steps)
    _rewrite_jsonl(out_dir / "metrics.jsonl", history)

    def save_last(epoch_: int, batch_: int, running: dict) -> None:
        state = {"epoch": epoch_, "batch": batch_, "history": history,
                 "best_valid_accuracy": best_acc, "running": running}
        save_checkpoint(last, model, prepared.vocab, extra, optimizer, state)

    with _StopFlag() as stop:
        while epoch < cfg.epochs:
            batches = epoch_batches(train_idx, lengths, cfg.batch_size, cfg.seed, epoch, cfg.bucket)
            running = {"loss_sum": 0.0, "correct": 0, "n": 0, "seconds": 0.0}
            if batch_pos:  # the interrupted epoch's running sums, from the checkpoint
                running = resumed_running
            bar = tqdm(total=len(train_idx), unit="review", desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       initial=sum(len(b) for b in batches[:batch_pos]), disable=not progress,
                       dynamic_ncols=True)
            model.train()
            for b in range(batch_pos, len(batches)):
                t0 = time.perf_counter()
                idx = batches[b]
                ids, lens = collate([train_split.review(i) for i in idx], cfg.max_len)
                target = torch.from_numpy(labels[idx].astype(np.float32))
                torch.manual_seed(batch_seed(cfg.seed, epoch, b))
                logits = model(ids, lens)
                loss = F.binary_cross_entropy_with_logits(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running["loss_sum"] += float(loss.detach()) * len(idx)
                running["correct"] += int(((logits > 0).float() == target).sum())
                running["n"] += len(idx)
                running["seconds"] += time.perf_counter() - t0
                bar.update(len(idx))
                bar.set_postfix(loss=f"{running['loss_sum'] / running['n']:.4f}",
                                acc=f"{running['correct'] / running['n']:.3f}")
                if (b + 1) % 50 == 0:
                    rec = {"epoch": epoch, "batch": b + 1, "fraction": (b + 1) / len(batches),
                           "loss": running["loss_sum"] / running["n"]}
                    steps.append(rec)
                    _append_jsonl(steps_path, rec)
                done = b + 1
                if stop.requested:
                    bar.close()
                    save_last(epoch, done, running)
                    raise Interrupted(
                        f"interrupted at epoch {epoch + 1}, batch {done}/{len(batches)}; "
                        f"saved {last}. Run the same command again to resume."
                    )
                if done % cfg.checkpoint_every == 0 and done < len(batches):
                    save_last(epoch, done, running)
            bar.close()

            valid = evaluate_reviews(model, valid_reviews, labels[valid_idx], cfg.max_len,
                                     progress=progress, desc="validation")
            record = {
                "epoch": epoch,
                "train_loss": running["loss_sum"] / running["n"],
                "train_accuracy": running["correct"] / running["n"],
                "valid_loss": valid["loss"],
                "valid_accuracy": valid["accuracy"],
                "train_seconds": running["seconds"],
                "train_reviews_per_s": running["n"] / running["seconds"],
            }
            history.append(record)
            _append_jsonl(out_dir / "metrics.jsonl", record)
            log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc "
                f"{record['train_accuracy']:.4f} | valid loss {valid['loss']:.4f} acc "
                f"{valid['accuracy']:.4f} | {running['seconds']:.0f} s "
                f"({record['train_reviews_per_s']:.1f} reviews/s)")
            if valid["accuracy"] > best_acc:
                best_acc = valid["accuracy"]
                save_checkpoint(out_dir / "best", model, prepared.vocab,
                                {**extra, "epoch": epoch, "valid": valid})
            epoch, batch_pos = epoch + 1, 0
            save_last(epoch, 0, {"loss_sum": 0.0, "correct": 0, "n": 0, "seconds": 0.0})
            _plot_curves(out_dir, history, steps)
    return out_dir / "best"


def _without_epochs(train_config: dict) -> dict:
    return {k: v for k, v in train_config.items() if k != "epochs"}

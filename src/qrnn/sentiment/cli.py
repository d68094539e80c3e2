"""The `qrnn` command: prepare, train, evaluate, predict (IMDB sentiment with a QRNN)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

PAPER = "Bradbury et al., Quasi-Recurrent Neural Networks, ICLR 2017"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already says it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from qrnn.sentiment.paths import default_cache_dir, default_data_dir

    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="folder with aclImdb_v1.tar.gz or aclImdb/ and a GloVe file "
                        f"(default: $QRNN_DATA, else {default_data_dir()})")
    g.add_argument("--glove", type=Path, default=None, metavar="FILE",
                   help="GloVe vectors: .txt, .txt.gz or .zip, any dimension "
                        "(default: the glove* file found in --data)")
    g.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help=f"where prepared artifacts go (default: $QRNN_CACHE, else {default_cache_dir()})")
    g.add_argument("--no-download", action="store_true",
                   help="never download the IMDB archive; fail if it is not in --data")


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    _data_arguments(p)
    g = p.add_argument_group("preparation")
    g.add_argument("--case", choices=["auto", "lower", "keep"], default="auto",
                   help="match casing to the vectors: auto detects uncased (6B) vs cased (840B)")
    g.add_argument("--oov", choices=["random", "unk"], default="random",
                   help="words without a GloVe vector: their own random vector (random) or the "
                        "unknown index 0 (unk)")
    g.add_argument("--min-count", type=_positive_int, default=None,
                   help="keep a word without a GloVe vector if seen this often in training "
                        "(default: 2)")
    g.add_argument("--limit", type=_positive_int, default=None,
                   help="use only the first N reviews per label of each split (quick runs)")


def _run_prepare(args) -> "object":
    from qrnn.sentiment.paths import default_cache_dir, default_data_dir
    from qrnn.sentiment.prepare import prepare

    kwargs = {"case": args.case, "oov": args.oov, "limit": args.limit,
              "download": not args.no_download}
    if args.min_count is not None:
        kwargs["min_count"] = args.min_count
    return prepare(args.data or default_data_dir(), args.glove,
                   args.cache_dir or default_cache_dir(), **kwargs)


def cmd_prepare(args) -> int:
    prepared = _run_prepare(args)
    m = prepared.meta
    print(f"prepared: {prepared.dir}")
    print(f"vocabulary: {m['vocab_size']:,} words x {m['dim']} dims ({m['glove_types']:,} from "
          f"GloVe, {m['random_types']:,} random, lowercase={m['lowercase']}); GloVe covers "
          f"{m['train_glove_token_coverage']:.2%} of training tokens")
    for name, split in m["splits"].items():
        print(f"{name}: {split['reviews']:,} reviews, {split['tokens']:,} tokens "
              f"(mean length {split['length_mean']})")
    print(f"details: {prepared.dir / 'meta.json'}")
    return 0


def cmd_train(args) -> int:
    from qrnn.sentiment.model import ModelConfig
    from qrnn.sentiment.train import Interrupted, TrainConfig, train

    prepared = _run_prepare(args)
    print(f"data: {prepared.dir}")
    V, E = prepared.embeddings.shape
    model_cfg = ModelConfig(vocab_size=V, embed_dim=E, hidden_size=args.hidden_size,
                            num_layers=args.layers, dropout=args.dropout, window=args.window,
                            rnn=args.rnn)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, max_len=args.max_len,
                      valid_size=args.valid_size, seed=args.seed,
                      freeze_embeddings=args.freeze_embeddings,
                      checkpoint_every=args.checkpoint_every)
    try:
        best = train(prepared, args.out, model_cfg, cfg, restart=args.restart)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    print(f"best checkpoint: {best}")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from qrnn.sentiment.checkpoint import load_checkpoint
    from qrnn.sentiment.imdb import find_imdb, read_split
    from qrnn.sentiment.paths import default_data_dir
    from qrnn.sentiment.train import evaluate_reviews

    model, vocab, config = load_checkpoint(args.checkpoint)
    source = find_imdb(args.data or default_data_dir(), download=not args.no_download)
    reviews = read_split(source, args.split)
    if args.limit:
        reviews = [r for label in (0, 1) for r in [r for r in reviews if r.label == label][: args.limit]]
    ids = [np.asarray(vocab.encode(r.text), dtype=np.int64) for r in reviews]
    labels = np.array([r.label for r in reviews])
    result = evaluate_reviews(model, ids, labels, config["train"]["max_len"],
                              batch_size=args.batch_size, progress=not args.json,
                              desc=f"evaluate {args.split}")
    result = {"checkpoint": str(args.checkpoint), "split": args.split, **result}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        (tn, fp), (fn, tp) = result["confusion"]
        print(f"{args.split}: accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}), "
              f"loss {result['loss']:.4f}, {result['reviews_per_s']:.0f} reviews/s")
        print(f"confusion (rows true, cols predicted):  neg: {tn} {fp}   pos: {fn} {tp}")
    return 0


def _read_texts(args) -> list[str]:
    """The texts to classify: arguments (each must be non-blank), else the non-blank lines of
    --file or of standard input."""
    if args.texts:
        for i, text in enumerate(args.texts, start=1):
            if not text.strip():
                raise ValueError(f"TEXT argument {i} is blank: nothing to classify")
        return list(args.texts)
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as stream:
                return [line.rstrip("\n") for line in stream if line.strip()]
        except UnicodeDecodeError as err:
            raise ValueError(f"--file {args.file}: not UTF-8 text ({err})") from err
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def cmd_predict(args) -> int:
    from qrnn.sentiment.checkpoint import load_checkpoint
    from qrnn.sentiment.predict import predict

    if args.texts and args.file:
        raise SystemExit("qrnn predict: give texts as arguments or --file, not both")
    model, vocab, config = load_checkpoint(args.checkpoint)
    texts = _read_texts(args)
    for text, p_pos in zip(texts, predict(model, vocab, texts, config["train"]["max_len"])):
        label = "pos" if p_pos >= 0.5 else "neg"
        prob = p_pos if label == "pos" else 1 - p_pos
        if args.json:
            print(json.dumps({"text": text, "label": label, "probability": prob,
                              "p_positive": p_pos}, ensure_ascii=False))
        else:
            shown = " ".join(text.split())  # one line, no tabs: the output stays tab-separated
            shown = shown if len(shown) <= 70 else shown[:67] + "..."
            print(f"{label}\t{prob:.3f}\t{shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qrnn", description=f"IMDB sentiment analysis with a QRNN ({PAPER}).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = {"formatter_class": _Help}

    p = sub.add_parser("prepare", **fmt, help="GloVe + IMDB -> vocabulary, embeddings, tokenised splits",
                       description="Build the vocabulary (training split only), the embedding "
                                   "matrix and the tokenised splits; reused when inputs are unchanged.")
    _prepare_arguments(p)
    p.set_defaults(func=cmd_prepare)

    from qrnn.sentiment.train import TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)}
    p = sub.add_parser("train", **fmt, help="train the paper's classifier (runs prepare if needed)",
                       description="Train the densely connected 4-layer QRNN classifier; resumes "
                                   "from OUT/last when interrupted (Ctrl-C saves and exits).")
    _prepare_arguments(p)
    g = p.add_argument_group("training")
    g.add_argument("--out", type=Path, default=Path("runs/imdb"), help="run folder (default: runs/imdb)")
    g.add_argument("--epochs", type=_positive_int, default=d["epochs"], help="epochs in all")
    g.add_argument("--batch-size", type=_positive_int, default=d["batch_size"], help="reviews per batch")
    g.add_argument("--lr", type=float, default=d["lr"], help="RMSprop learning rate")
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="L2 on weight matrices")
    g.add_argument("--max-len", type=_positive_int, default=d["max_len"],
                   help="keep the last N tokens of longer reviews")
    g.add_argument("--valid-size", type=_positive_int, default=d["valid_size"],
                   help="training reviews held out for validation (stratified)")
    g.add_argument("--seed", type=int, default=d["seed"],
                   help="validation split, batch order, dropout and initialisation")
    g.add_argument("--freeze-embeddings", action="store_true", help="do not fine-tune GloVe")
    g.add_argument("--checkpoint-every", type=_positive_int, default=d["checkpoint_every"],
                   help="save a resumable checkpoint every N batches")
    g.add_argument("--restart", action="store_true", help="ignore OUT/last and start over")
    m = p.add_argument_group("model")
    m.add_argument("--rnn", choices=["qrnn", "lstm"], default="qrnn",
                   help="recurrent layers: QRNN, or nn.LSTM (the paper's baseline)")
    m.add_argument("--layers", type=_positive_int, default=4, help="densely connected layers")
    m.add_argument("--hidden-size", type=_positive_int, default=256, help="units per layer")
    m.add_argument("--window", type=_positive_int, default=2, help="QRNN convolution width")
    m.add_argument("--dropout", type=float, default=0.3, help="between layers and before the output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", **fmt, help="accuracy of a checkpoint on a split (default: test)",
                       description="Accuracy, confusion matrix and speed on all reviews of a split.")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. runs/imdb/best")
    p.add_argument("--data", type=Path, default=None, metavar="DIR", help="as for prepare")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="only the first N reviews per label")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", **fmt, help="sentiment of texts (arguments, --file, or stdin)",
                       description="Label and probability for each text: the arguments, else "
                                   "each line of --file, else each line of standard input.")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. runs/imdb/best")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", type=Path, default=None, help="one review per line (UTF-8)")
    p.add_argument("--json", action="store_true", help="JSON lines: text, label, probability")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threads = os.environ.get("QRNN_THREADS")
        if threads:
            if not threads.isdigit() or int(threads) < 1:
                raise ValueError(f"QRNN_THREADS={threads!r}: must be a positive integer")
            import torch

            torch.set_num_threads(int(threads))
        if getattr(args, "data", None) is not None and not args.data.exists():
            raise FileNotFoundError(f"--data {args.data}: no such folder")
        return args.func(args)
    except KeyboardInterrupt:
        print(f"qrnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        # user-facing failures (missing or damaged files, bad options) as one line, no traceback
        print(f"qrnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `qrnn` console script: `main` in a process of its own, whose glibc malloc keeps freed
    memory for reuse between training steps (`qrnn.memory`; a process-wide setting, so `main`,
    which tests call in-process, leaves it alone)."""
    from qrnn.memory import keep_freed_memory

    keep_freed_memory()
    sys.exit(main())


if __name__ == "__main__":
    entry()

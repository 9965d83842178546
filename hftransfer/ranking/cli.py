"""``hftransfer rank DATA --candidates a,b,c``: the command's arguments and what it prints."""

from __future__ import annotations

import argparse

from hftransfer.ranking.rank import rank


def add_rank_parser(sub) -> None:
    p = sub.add_parser("rank", help="score candidate backbones on your data before training (LogME, H-score, "
                       "NLEEP, LEEP, NCE)")
    p.add_argument("data", help="image folder, CSV/JSONL/Parquet file, folder of splits, .npz, hub id or "
                   "sklearn_digits (its training split is sampled)")
    p.add_argument("--candidates", required=True, help="comma-separated model names; 'random:<name>' is a random "
                   "init, e.g. packaged:efficientnet_lite0,packaged:efficientnet_lite1,random:timm:efficientnet_lite0")
    p.add_argument("--sample", type=int, default=2000, help="rows of the stratified sample (default 2000)")
    p.add_argument("--output-dir", default="rank", help="where rank.json, rank.md, rank.png go (default ./rank)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default OUTPUT_DIR/features); point a "
                   "linear_probe's method.cache_dir here to reuse them")
    p.add_argument("--kfold", action="store_true", help="also measure 5-fold linear-probe accuracy on the features")
    p.add_argument("--format", default="auto", help="data format when it cannot be inferred (csv, json, ...)")
    p.add_argument("--text-column", default="text", help="text column (two comma-separated for pairs)")
    p.add_argument("--label-column", default="label", help="label column (default label)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed of the sample, the mixture and the folds")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="feature precision; auto: bf16 where it is fast")
    p.add_argument("--image-size", type=int, default=None, help="score image candidates at this size, as training's "
                   "model.image_size (default: each candidate's pretrained resolution)")
    p.add_argument("--max-length", type=int, default=None, help="truncate text at this many tokens, as training's "
                   "model.max_length (default 128)")
    p.add_argument("--card", default=None, metavar="MODEL_DIR", help="add the ranking table to this saved model's "
                   "card (MODEL_DIR/README.md, section 'ranking'; replaces an earlier one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rank)


def cmd_rank(args: argparse.Namespace) -> int:
    text_column = args.text_column.split(",") if "," in args.text_column else args.text_column
    data = {"source": args.data, "format": args.format, "text_column": text_column, "label_column": args.label_column}
    result = rank(data, [c for c in args.candidates.split(",") if c.strip()], sample=args.sample,
                  output_dir=args.output_dir, cache_dir=args.cache_dir, kfold=args.kfold, batch_size=args.batch_size,
                  seed=args.seed, precision=args.precision, image_size=args.image_size,
                  max_length=args.max_length, card=args.card, progress=not args.no_progress)
    print(result.table())
    print(f"\nrecommended: {result.recommendation} (confidence {result.confidence}: {result.confidence_reason})")
    print(f"rank.json, rank.md, rank.png in {result.output_dir} ({result.seconds:.1f}s)")
    if args.card:
        print(f"ranking section added to {args.card}/README.md")
    return 0

"""The ``hftransfer interpolate`` and ``hftransfer soup`` commands (registered by ``hftransfer.cli``)."""

from __future__ import annotations

import argparse
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.robust.interpolate import interpolate
from hftransfer.robust.soup import soup


def add_commands(sub: Any) -> None:
    """Add ``interpolate`` and ``soup`` to the ``hftransfer`` sub-command parser."""
    p = sub.add_parser("interpolate", help="WiSE-FT: interpolate the weights of two saved models "
                       "((1-alpha)*A + alpha*B), optionally choosing alpha on a validation split")
    p.add_argument("model_a", help="folder saved by hftransfer: the start (alpha 0), e.g. a linear probe")
    p.add_argument("model_b", help="folder saved by hftransfer: the fine-tuned model (alpha 1)")
    p.add_argument("output_dir", help="the model folder to write (with wise_ft.json, and wise_ft.png for a curve)")
    p.add_argument("--alpha", type=float, default=None, help="one alpha in [0, 1] (default 0.5)")
    p.add_argument("--alphas", default=None, help="comma-separated alphas to score on --data, e.g. 0,0.25,0.5,0.75,1")
    _data_arguments(p)
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser("soup", help="model soup: average saved models fine-tuned from one start (uniform, or greedy "
                       "on a validation split)")
    p.add_argument("models", nargs="+", help="two or more folders saved by hftransfer")
    p.add_argument("--output", required=True, help="the soup's model folder (with soup.json)")
    p.add_argument("--greedy", action="store_true", help="greedy soup (Wortsman et al. 2022); needs --data")
    _data_arguments(p)
    p.set_defaults(func=_cmd_soup)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="labelled data to score on (as for `hftransfer evaluate`)")
    p.add_argument("--split", default=None, help="the split of --data to choose on, e.g. validation (never target "
                   "labels unless you name them)")
    p.add_argument("--text-column", default=None, help="text column of --data")
    p.add_argument("--label-column", default=None, help="label column of --data")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"data": args.data, "split": args.split, "batch_size": args.batch_size, "overwrite": args.overwrite,
            "text_column": args.text_column, "label_column": args.label_column}


def _cmd_interpolate(args: argparse.Namespace) -> int:
    if args.alpha is not None and args.alphas is not None:
        raise ConfigurationError(f"--alpha {args.alpha} and --alphas {args.alphas!r} were both given; pass one.")
    alphas = args.alphas if args.alphas is not None else (0.5 if args.alpha is None else args.alpha)
    result = interpolate(args.model_a, args.model_b, output_dir=args.output_dir, alphas=alphas, **_data_options(args))
    for row in result.curve:
        print(f"alpha {row['alpha']:.3f}: accuracy {row['accuracy']:.4f}")
    print(f"alpha {result.alpha:g} saved to {result.output_dir}")
    return 0


def _cmd_soup(args: argparse.Namespace) -> int:
    result = soup(args.models, output_dir=args.output, method="greedy" if args.greedy else "uniform",
                  **_data_options(args))
    for row in result.ingredients:
        shown = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        print(f"{'in ' if row['in_soup'] else 'out'} {row['model']}: accuracy {shown}")
    shown = "" if result.accuracy is None else f" (accuracy {result.accuracy:.4f})"
    print(f"{result.method} soup of {len(result.used)} models saved to {result.output_dir}{shown}")
    return 0

"""``hftransfer`` command line: train, list recipes, evaluate, predict, push, pull.

    hftransfer train recipes/configs/demo_digits.yaml optim.lr=3e-4 epochs=5
    hftransfer recipes
    hftransfer evaluate outputs/demo/model data/new_labelled/ --output-dir eval/new --update-card
    hftransfer predict outputs/demo/model image1.jpg image2.jpg
    hftransfer predict outputs/demo/model photos/ --top-k 3 --output predictions.csv
    hftransfer push outputs/demo --repo-id me/digits-lite0
    hftransfer pull me/digits-lite0 ./digits-lite0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hftransfer._version import __version__
from hftransfer.compare import add_compare_parser  # compare (recipes / backbones side by side)
from hftransfer.demo.cli import add_demo_parser  # demo (Gradio app, --write-space)
from hftransfer.errors import HFTransferError
from hftransfer.export.cli import add_export_parser  # export (ONNX, parity check, int8)
from hftransfer.export.defaults import BACKENDS
from hftransfer.hub.pull import pull
from hftransfer.hub.push import push_folder
from hftransfer.objectives import OBJECTIVES
from hftransfer.ranking.cli import add_rank_parser  # rank (transferability metrics before training)
from hftransfer.recipes import list_recipes
from hftransfer.recipes.examples import EXAMPLES_PREFIX, example_configs
from hftransfer.recipes.listing import launch_lines, recipe_lines
from hftransfer.recipes.registry import LAUNCH
from hftransfer.robust.cli import add_commands as add_robust_commands  # interpolate (WiSE-FT), soup
from hftransfer.saved_format import HFTRANSFER_CONFIG


COMPILE_HELP = ("torch.compile the model first (in place, dynamic shapes); pays off on large inputs, and where it "
                "cannot apply the reason is printed and it runs eagerly")


def _cmd_train(args: argparse.Namespace) -> int:
    from hftransfer.training import train  # heavy: the training stack (accelerate, datasets, timm)

    if args.help_config:
        from hftransfer.training.config import config_help  # heavy: the training stack

        print(config_help())
        return 0
    if args.config is None:
        raise SystemExit("hftransfer train: error: the config argument is required (or pass --help-config)")

    result = train(args.config, overrides=args.overrides)
    best = f"{result.best_metric:.4f}" if result.best_metric is not None else "n/a"
    print(f"best validation {Path(args.config).name}: {best} (epoch {result.best_epoch}); model saved to "
          f"{result.model_dir}")
    if result.test_metrics is not None:
        shown = " | ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items() if isinstance(v, float))
        print(f"test (held out, best epoch): {shown}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    configs = list(example_configs().values())
    print("\n".join(launch_lines()))
    for name in list_recipes():
        print("\n".join(recipe_lines(name)))
        for path in configs:
            if f"recipe: {name}\n" in path.read_text(encoding="utf-8"):
                print(f"{'':14s}   config: {EXAMPLES_PREFIX}{path.name}")
    _print_objectives(configs)
    return 0


def _print_objectives(configs: list[Path]) -> None:
    """The registered training objectives (domain adaptation), what they combine with and their example configs."""
    print(f"\nobjectives (objective.name=..., with any recipe; run with `hftransfer train` or `{LAUNCH} --config "
          "...`):")
    for name in sorted(OBJECTIVES):
        entry = OBJECTIVES[name]
        target = "needs target" if entry.objective_cls.needs_target else "no target data"
        print(f"{name:14s} {target:14s} {entry.description}")
        print(f"{'':14s}   combines with: {entry.combines_with}")
        if entry.modality_defaults:
            print(f"{'':14s}   per-modality defaults: {entry.modality_defaults_line()}")
        for path in configs:
            text = path.read_text(encoding="utf-8")
            if f"name: {name}\n" in text and "objective:" in text:
                print(f"{'':14s}   config: {path.relative_to(path.parents[2])}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from hftransfer.inference import predict_file  # heavy: datasets, PIL (the data loaders)

    rows = predict_file(args.model, args.inputs, args.output, top_k=args.top_k, batch_size=args.batch_size,
                        text_column=args.text_column, image_column=args.image_column,
                        precision="fp32" if args.no_bf16 else args.precision, progress_bar=not args.no_progress,
                        revision=args.revision, compile=args.compile, backend=args.backend)
    failed = [row for row in rows if row["error"]]
    if args.output is None:
        for row in rows:
            shown = ", ".join(f"{p['label']} {p['score']:.3f}" for p in row["predictions"])
            print(f"{row['input']}\t{shown or 'ERROR: ' + str(row['error'])}")
    else:
        print(f"{len(rows) - len(failed)} of {len(rows)} inputs predicted into {args.output}", file=sys.stderr)
    for row in failed[:20]:
        print(f"hftransfer predict: row {row['row']} ({row['input']}): {row['error']}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hftransfer.inference import evaluate  # heavy: datasets, PIL (the data loaders)

    label_names = [n.strip() for n in args.label_names.split(",")] if args.label_names else None
    text_column = args.text_column.split(",") if args.text_column and "," in args.text_column else args.text_column
    output_dir = args.output_dir or str(Path("evaluation") / f"{_slug(args.model)}--{_slug(args.data)}"
                                        f"{'--' + args.split if args.split else ''}")
    result = evaluate(args.model, args.data, split=args.split, output_dir=output_dir, update_card=args.update_card,
                      batch_size=args.batch_size, revision=args.revision, progress_bar=not args.no_progress,
                      compile=args.compile, format=args.format, text_column=text_column,
                      label_column=args.label_column, image_column=args.image_column, label_names=label_names,
                      hub_subset=args.hub_subset, backend=args.backend)
    from accelerate import PartialState  # heavy: accelerate, kept off `hftransfer --help`

    if PartialState().is_main_process:
        shown = " | ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        name = result.dataset if result.split == result.dataset else f"{result.dataset} {result.split}"
        print(f"{name} ({result.num_samples} rows): {shown}")
        print(f"metrics, predictions, per-class report and confusion matrix in {result.output_dir}")
        if result.card_path:
            print(f"model card updated: {result.card_path}")
    return 0


def _slug(text: str) -> str:
    name = Path(str(text).rstrip("/")).name or str(text)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _cmd_push(args: argparse.Namespace) -> int:
    folder = Path(args.output_dir)
    if (folder / "model" / HFTRANSFER_CONFIG).is_file():
        folder = folder / "model"
    url = push_folder(folder, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message, token=args.token)
    print(f"pushed {folder} to {args.repo_id}: {url}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    result = pull(args.repo_id, args.local_dir, revision=args.revision, token=args.token, overwrite=args.overwrite)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hftransfer", description="Transfer learning on timm and transformers "
                                     "models: recipes, accelerate, hub, model cards.")
    parser.add_argument("--version", action="version", version=f"hftransfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run a recipe from a YAML config (+ key=value overrides)")
    p.add_argument("config", nargs="?", help="YAML config, e.g. recipes/configs/demo_digits.yaml (or a shipped "
                   "example's name: demo_digits)")
    p.add_argument("--help-config", action="store_true", help="list every config option with its default and help")
    p.add_argument("overrides", nargs="*", help="dotted overrides: optim.lr=3e-4 epochs=5 recipe=lora")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("recipes", help="list the registered recipes, training objectives and their example configs")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("evaluate", help="score a saved or hub model on labelled data (metrics, report, predictions)")
    p.add_argument("model", help="folder saved by hftransfer or hub repo id")
    p.add_argument("data", help="image folder, CSV/JSONL/Parquet file, folder of splits, .npz or hub dataset id")
    p.add_argument("--split", default=None, help="hub split (default test) or split folder/file inside DATA")
    p.add_argument("--output-dir", default=None, help="where results go (default evaluation/<model>--<data>)")
    p.add_argument("--update-card", action="store_true",
                   help="add the results to the model card's model-index (a hub model's card goes to --output-dir)")
    p.add_argument("--format", default=None, help="data format when it cannot be inferred (csv, json, hub, ...)")
    p.add_argument("--text-column", default=None, help="text column (two comma-separated for pairs)")
    p.add_argument("--label-column", default=None, help="label column (default label)")
    p.add_argument("--image-column", default=None, help="image column of hub data (default image)")
    p.add_argument("--label-names", default=None, help="comma-separated names of integer labels 0..K-1")
    p.add_argument("--hub-subset", default=None, help="hub dataset configuration, e.g. sst2 of glue")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--revision", default=None, help="model revision on the hub")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="onnx / onnx-int8: score a folder written by `hftransfer export` with onnxruntime; auto: "
                   "onnx for an export folder, else torch")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="top-k labels of images or texts with a saved or hub model")
    p.add_argument("model", help="folder saved by hftransfer or hub repo id")
    p.add_argument("inputs", nargs="+", help="image files or folders, CSV/JSONL/Parquet/.txt files, '-' for stdin "
                   "lines, or sentences (text models)")
    p.add_argument("--output", default=None, help="write a .csv or .jsonl file instead of printing")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--text-column", default="text", help="text column of a table INPUT (text models)")
    p.add_argument("--image-column", default="image", help="column of image paths in a table INPUT (image models)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 on CPUs with AMX/AVX512-BF16 and on bf16 GPUs, else fp32")
    p.add_argument("--no-bf16", action="store_true", help="same as --precision fp32")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--revision", default=None)
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="onnx / onnx-int8: run a folder written by `hftransfer export` with onnxruntime (same "
                   "preprocessing); auto: onnx for an export folder, else torch")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("push", help="upload a trained model folder (or a run's output_dir) to the hub")
    p.add_argument("output_dir", help="a run's output_dir or a model folder saved by hftransfer")
    p.add_argument("--repo-id", required=True, help="namespace/name on the hub")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the cached login); never stored")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("pull", help="download a model repo (and the base model an adapter needs) for offline use",
                       description="Download a model repo (safetensors only, no code) into DIR, and the base "
                       "backbone an adapter-only repo needs into the hub cache, so that `HF_HUB_OFFLINE=1 hftransfer "
                       "predict DIR ...` works without a network.")
    p.add_argument("repo_id", metavar="REPO", help="hub repo of an hftransfer, transformers or timm model")
    p.add_argument("local_dir", metavar="DIR", nargs="?", default=None,
                   help="folder to write (default: a folder named after the repo in the current directory, e.g. "
                   "./digits-lora for me/digits-lora); must be missing or empty unless --overwrite")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the cached login); never stored")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR once the new copy is complete")
    p.set_defaults(func=_cmd_pull)

    add_robust_commands(sub)

    add_export_parser(sub)

    add_demo_parser(sub)

    add_rank_parser(sub)

    add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HFTransferError as err:  # errors raised on purpose carry the fix; anything else is a bug: traceback
        print(f"hftransfer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``hftransfer`` command line: train, list recipes, predict, push.

    hftransfer train recipes/configs/demo_digits.yaml optim.lr=3e-4 epochs=5
    hftransfer recipes
    hftransfer predict outputs/demo/model image1.jpg image2.jpg
    hftransfer push outputs/demo --repo-id me/digits-lite0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from hftransfer.training import train

    result = train(args.config, overrides=args.overrides)
    best = f"{result.best_metric:.4f}" if result.best_metric is not None else "n/a"
    print(f"best validation {Path(args.config).name}: {best} (epoch {result.best_epoch}); model saved to "
          f"{result.model_dir}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from hftransfer.recipes import RECIPES

    configs = sorted(Path(__file__).resolve().parents[1].glob("recipes/configs/*.yaml"))
    for name in sorted(RECIPES):
        recipe = RECIPES[name]
        print(f"{name:14s} method={recipe.method:13s} {recipe.description}")
        for path in configs:
            if f"recipe: {name}\n" in path.read_text(encoding="utf-8"):
                print(f"{'':14s}   config: {path.relative_to(path.parents[2])}")
    _print_objectives(configs)
    return 0


def _print_objectives(configs: list[Path]) -> None:
    """The registered training objectives (domain adaptation), what they combine with and their example configs."""
    from hftransfer.objectives import OBJECTIVES

    print("\nobjectives (objective.name=..., with any recipe; run with `hftransfer train` or "
          "`accelerate launch recipes/domain_adapt.py --config ...`):")
    for name in sorted(OBJECTIVES):
        entry = OBJECTIVES[name]
        target = "needs target" if entry.objective_cls.needs_target else "no target data"
        print(f"{name:14s} {target:14s} {entry.description}")
        print(f"{'':14s}   combines with: {entry.combines_with}")
        for path in configs:
            text = path.read_text(encoding="utf-8")
            if f"name: {name}\n" in text and "objective:" in text:
                print(f"{'':14s}   config: {path.relative_to(path.parents[2])}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from hftransfer import AutoTransfer

    model = AutoTransfer.from_pretrained(args.model, revision=args.revision)
    if model.modality == "image":
        from PIL import Image

        inputs = [Image.open(p).convert("RGB") for p in args.inputs]
    else:
        inputs = list(args.inputs)
    for item, preds in zip(args.inputs, model.predict(inputs, top_k=args.top_k)):
        shown = ", ".join(f"{p['label']} {p['score']:.3f}" for p in preds)
        print(f"{item}\t{shown}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from hftransfer.hub.push import push_folder

    folder = Path(args.output_dir)
    if (folder / "model" / "hftransfer_config.json").is_file():
        folder = folder / "model"
    url = push_folder(folder, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message, token=args.token)
    print(f"pushed {folder} to {args.repo_id}: {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hftransfer", description="Transfer learning on timm and transformers "
                                     "models: recipes, accelerate, hub, model cards.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run a recipe from a YAML config (+ key=value overrides)")
    p.add_argument("config", help="YAML config, e.g. recipes/configs/demo_digits.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides: optim.lr=3e-4 epochs=5 recipe=lora")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("recipes", help="list the registered recipes, training objectives and their example configs")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("predict", help="top-k labels of images or texts with a saved or hub model")
    p.add_argument("model", help="folder saved by hftransfer or hub repo id")
    p.add_argument("inputs", nargs="+", help="image files (image models) or sentences (text models)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--revision", default=None)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("push", help="upload a trained model folder (or a run's output_dir) to the hub")
    p.add_argument("output_dir", help="a run's output_dir or a model folder saved by hftransfer")
    p.add_argument("--repo-id", required=True, help="namespace/name on the hub")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the cached login); never stored")
    p.set_defaults(func=_cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hftransfer.errors import HFTransferError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (HFTransferError, ValueError, OSError) as err:
        print(f"hftransfer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

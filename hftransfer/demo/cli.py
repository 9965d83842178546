"""The `hftransfer demo` sub-command (registered by `hftransfer.cli`)."""

from __future__ import annotations

import argparse

from .app import demo
from .space import write_space


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a Gradio app for a saved folder, hub model or ONNX export (needs the demo "
                       "extra)")
    p.add_argument("model", help="folder saved by hftransfer, an export folder, or a hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default localhost only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--write-space", default=None, metavar="DIR",
                   help="write a Space folder (app.py, requirements.txt, README metadata) instead of serving")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.write_space:
        print(f"Space written to {write_space(args.model, args.write_space, top_k=args.top_k)}")
        return 0

    demo(args.model, host=args.host, port=args.port, share=args.share, top_k=args.top_k)
    return 0

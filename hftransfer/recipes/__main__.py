"""``python -m hftransfer.recipes --config FILE [key=value ...]`` (see :mod:`hftransfer.recipes.launch`)."""

import sys

from hftransfer.recipes.launch import main


if __name__ == "__main__":
    sys.exit(main())

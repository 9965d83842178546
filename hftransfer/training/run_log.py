"""A run's log: ``output_dir/train.log`` (and the console with ``progress_bar``), written by the main process."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger("hftransfer")


class RunLog:
    """Call it with a message; :meth:`open` starts the file (and writes ``config.yaml``), :meth:`close` ends it."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, progress_bar: bool):
        self.accelerator, self.output_dir, self.progress_bar = accelerator, Path(output_dir), progress_bar
        self._handler: logging.Handler | None = None

    def open(self, config_yaml: str) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.output_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        self._handler = handler
        (self.output_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")

    def __call__(self, message: str) -> None:
        if self.accelerator.is_main_process:
            logger.info(message)
            if self.progress_bar:
                self.accelerator.print(message)

    def close(self) -> None:
        if self._handler is not None:
            logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

"""The exception and warning the data layer raises."""

from __future__ import annotations

from hftransfer.errors import HFTransferError, HFTransferWarning


class DataError(HFTransferError, ValueError):
    """User data or a `DataConfig` value that cannot be turned into labelled splits; the message says how to fix it."""


class DataWarning(HFTransferWarning):
    """Data was dropped or is thin (skipped files/rows, single-sample classes); training still works."""

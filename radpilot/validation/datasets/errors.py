"""The one error every part of the dataset package raises."""

from __future__ import annotations


class DatasetError(ValueError):
    """A manifest or a dataset folder is wrong; the message says what and where."""

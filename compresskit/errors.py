"""Typed errors: every failure a user can cause is a CompressKitError that says what is wrong
and how to fix it, in one line. The CLI prints that line; the traceback only appears with
COMPRESSKIT_DEBUG=1."""

from __future__ import annotations


class CompressKitError(Exception):
    """Base of every error compresskit raises on purpose."""


class UnsupportedModelError(CompressKitError):
    """The model's type has no architecture adapter."""


class PlanError(CompressKitError):
    """A pruning plan is malformed or does not match the model."""


class ModelFileError(CompressKitError):
    """A saved model folder is missing a file, or a file is corrupt or inconsistent."""


class ConfigError(CompressKitError):
    """A strategy or command option has a bad value."""


class UnknownStrategyError(CompressKitError):
    """No strategy is registered under the requested name."""


class OutputExistsError(CompressKitError):
    """The output folder exists and overwriting was not asked for."""


class ExportError(CompressKitError):
    """A model could not be exported (the exporter or a graph transformation failed)."""


class ExportParityError(ExportError):
    """An exported graph does not compute what the PyTorch model computes."""

"""Typed errors: every failure a user can cause is a CompressKitError that says what is wrong
and how to fix it, in one line. The CLI prints that line; the traceback only appears with
COMPRESSKIT_DEBUG=1."""

from __future__ import annotations


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut at `limit` characters (third-party errors
    often run to pages)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


class OutputError(CompressKitError):
    """The output cannot be written where it was asked for."""


class OutputExistsError(OutputError):
    """The output folder exists and overwriting was not asked for."""


class OutputPathError(OutputError):
    """The output is not compresskit's to replace (a user's file, an input, the current
    folder), or its place cannot be written (a file in the way, read-only, a name too long)."""


class OutputBusyError(OutputError):
    """Another live compresskit process holds the output's lock."""


class ExportError(CompressKitError):
    """A model could not be exported (the exporter or a graph transformation failed)."""


class ExportParityError(ExportError):
    """An exported graph does not compute what the PyTorch model computes."""


class MissingDependencyError(CompressKitError, ImportError):
    """An optional package a command needs (an extra such as `compresskit[onnx]`) is not
    installed, or is installed but cannot be imported. Also an ImportError, so that code
    which guards an optional import with `except ImportError` keeps working."""

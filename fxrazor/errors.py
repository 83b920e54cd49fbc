"""Errors raised by fxrazor.

Every error a user can cause is a :class:`FxRazorError`; each subclass names one kind of
mistake so callers can catch exactly what they expect.

Example:
    >>> from fxrazor.errors import FxRazorError, InvalidChoiceError
    >>> issubclass(InvalidChoiceError, FxRazorError)
    True
"""

from __future__ import annotations

__all__ = [
    "FxRazorError",
    "InvalidChoiceError",
    "FixedMutableError",
    "IndexOverlapError",
    "SubnetConfigError",
    "TraceFailedError",
    "CaptureFailedError",
    "ExampleInputError",
    "UnknownUnitError",
    "UnsupportedModelError",
    "ChoiceTypeError",
    "DerivedMutableError",
    "MutableArgumentError",
    "InvalidArgumentError",
    "IndexOutOfRangeError",
    "AliasConflictError",
    "PretrainedExportError",
    "ExportFailedError",
]


class FxRazorError(Exception):
    """Base class of every error fxrazor raises for bad input."""


class InvalidChoiceError(FxRazorError, ValueError):
    """A choice is not one of the mutable's (or unit's) valid choices."""


class FixedMutableError(FxRazorError, RuntimeError):
    """A fixed mutable was asked to change its choice."""


class IndexOverlapError(FxRazorError, ValueError):
    """Two index ranges overlap, or a range lies outside its container."""


class SubnetConfigError(FxRazorError, ValueError):
    """A subnet config does not match the model it is loaded into."""


class TraceFailedError(FxRazorError, RuntimeError):
    """The model could not be traced into a graph, even with opaque leaves."""


class CaptureFailedError(TraceFailedError):
    """Neither capture front-end (torch.fx, torch.export) could capture the model; the
    message names both failures."""


class ExampleInputError(FxRazorError, RuntimeError):
    """The model raised an exception when run on the example inputs."""


class UnknownUnitError(FxRazorError, KeyError):
    """A unit name is not one of the supernet's units."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class UnsupportedModelError(FxRazorError, TypeError):
    """The object handed to fxrazor is not something it can work on."""


class ChoiceTypeError(InvalidChoiceError, TypeError):
    """A choice, or a list of choices, has the wrong type (e.g. a float where an int is due)."""


class DerivedMutableError(FxRazorError, RuntimeError):
    """A derived mutable was asked to change directly; change its source mutables instead."""


class MutableArgumentError(FxRazorError, ValueError):
    """A mutable got a bad argument: invalid candidates or options, or wrong forward inputs."""


class InvalidArgumentError(FxRazorError, ValueError):
    """An argument has the wrong type or lies outside the values the function accepts."""


class IndexOutOfRangeError(FxRazorError, IndexError):
    """An index does not refer to an existing item of a container."""


class AliasConflictError(FxRazorError, ValueError):
    """Mutables that share an alias disagree on their chosen value."""


class PretrainedExportError(FxRazorError, ValueError):
    """A subnet's widths cannot be written as its model's own (Hugging Face) config: they
    differ across layers where the config has one size, or no config size gives them."""


class ExportFailedError(FxRazorError, RuntimeError):
    """An exporter (``torch.export``, the ONNX exporter, TorchScript) refused a model, or
    its package is missing; the message names the format, the exporter's reason and what
    to try. Nothing is left at the destination path."""

"""Stand-ins for optional dependencies that fail loudly only when used.

A module can bind a name to a placeholder when an optional package is missing; importing
the module still works, and the first real use raises an ImportError that says what to
install.

Example:
    >>> Missing = get_placeholder("some_missing_pkg")
    >>> Missing()
    Traceback (most recent call last):
    ...
    ImportError: `some_missing_pkg` is not installed; install it with `pip install some_missing_pkg` to use this feature.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["get_placeholder", "get_package_placeholder"]


def _missing_message(package: str) -> str:
    return (
        f"`{package}` is not installed; install it with `pip install {package}` "
        "to use this feature."
    )


class _PlaceholderMeta(type):
    """Makes reading an attribute of the placeholder class raise ImportError."""

    _fxr_package: str

    def __getattr__(cls, name: str) -> Any:
        # Dunder probes (``__wrapped__``, ``__signature__`` ...) come from tools such as
        # inspect and doctest; they must get the usual AttributeError, not an ImportError.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise ImportError(_missing_message(type.__getattribute__(cls, "_fxr_package")))


def _make_placeholder(package: str) -> type:
    def _fail(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise ImportError(_missing_message(package))

    namespace = {"_fxr_package": package, "__init__": _fail, "__call__": _fail}
    # A class (not an instance) so that code subclassing the missing name still imports.
    return _PlaceholderMeta(f"{package}Placeholder", (), namespace)


def get_placeholder(string: str) -> Any:
    """Return a stand-in for a name from the missing package ``string``.

    Calling or instantiating the stand-in, or reading any of its attributes, raises an
    ImportError that names the package and the ``pip install`` command.

    Args:
        string: the name of the missing package.

    Returns:
        The placeholder (a class).

    Example:
        >>> Placeholder = get_placeholder("fancy_pkg")
        >>> Placeholder.build
        Traceback (most recent call last):
        ...
        ImportError: `fancy_pkg` is not installed; install it with `pip install fancy_pkg` to use this feature.
    """
    return _make_placeholder(string)


def get_package_placeholder(string: str) -> Any:
    """Return a stand-in for the whole missing package ``string``.

    It behaves like :func:`get_placeholder`: any use raises an ImportError naming the
    package.

    Args:
        string: the name of the missing package.

    Returns:
        The placeholder (a class).

    Example:
        >>> pkg = get_package_placeholder("fancy_pkg")
        >>> pkg.models
        Traceback (most recent call last):
        ...
        ImportError: `fancy_pkg` is not installed; install it with `pip install fancy_pkg` to use this feature.
    """
    return _make_placeholder(string)

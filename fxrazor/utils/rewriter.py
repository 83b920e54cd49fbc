"""Take entries out of a table of function rules, keeping them to put back.

MMRazor's ``pop_rewriter_function_record`` removes functions from mmdeploy's rewriter
table (``RewriterContext._rewriter_manager``) so that quantization does not see
deployment rewrites. fxrazor has no mmdeploy; its equivalent tables are its channel rules
(``fxrazor.rules.functions.FUNCTION_RULES``, ``METHOD_RULES``, ``NAMED_FUNCTION_RULES``,
or the ``function_rules=`` dict given to ``convert``): this pops entries from such a
table, so that the analysis treats those functions as it treats unknown ones.

Example:
    >>> rules = {"relu": "pointwise", "cat": "cat"}
    >>> backup = pop_rewriter_function_record(rules, ["cat", "missing"])
    >>> rules, backup
    ({'relu': 'pointwise'}, {'cat': 'cat'})
    >>> rules.update(backup)  # put them back
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from fxrazor.errors import InvalidArgumentError

__all__ = ["pop_rewriter_function_record"]


def pop_rewriter_function_record(rewriter_context: MutableMapping[Any, Any] | Any,
                                 function_record_to_pop: Iterable[Any]) -> dict[Any, Any]:
    """Remove the records ``function_record_to_pop`` from a rule table; return them.

    Args:
        rewriter_context: the table (a dict of function or name -> rule), or an object
            with a ``function_rules`` table, such as a ``ConvertOptions``-like holder.
        function_record_to_pop: the keys to remove; keys not in the table are skipped,
            as in MMRazor.

    Returns:
        ``{key: rule}`` of the removed records; ``table.update(returned)`` restores them.

    Raises:
        InvalidArgumentError: if ``rewriter_context`` holds no mutable table.
    """
    table = rewriter_context
    if not isinstance(table, MutableMapping):
        table = getattr(rewriter_context, "function_rules", None)
    if not isinstance(table, MutableMapping):
        raise InvalidArgumentError(
            "pop_rewriter_function_record needs a mutable table of rules (e.g. a copy of "
            "fxrazor.rules.functions.FUNCTION_RULES, or the function_rules dict given to "
            f"convert), got {type(rewriter_context).__name__}")
    backup: dict[Any, Any] = {}
    for record in function_record_to_pop:
        if record in table:
            backup[record] = table.pop(record)
    return backup

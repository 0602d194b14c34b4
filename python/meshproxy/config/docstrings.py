"""The docstrings under the config's fields, read from the schema's source only when a JSON
Schema is asked for.

They are the field descriptions editors show. pydantic can collect them itself
(``use_attribute_docstrings``), but it does so for every model as it is built: it reads and
parses the source of each class, which took a fifth of the start-up of the ``meshproxy
validate`` child that checks every config the sidecar loads, and validation never reads them.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from pydantic import BaseModel


def attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the string literal written right under the field in ``model``'s class
    body, cleaned as pydantic's ``use_attribute_docstrings`` cleans it."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}  # no source to read (a frozen app, a class made at run time): no descriptions
    [definition] = ast.parse(source).body
    if not isinstance(definition, ast.ClassDef):
        return {}
    found: dict[str, str] = {}
    body = definition.body
    for statement, following in zip(body, body[1:]):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[statement.target.id] = inspect.cleandoc(following.value.value)
    return found

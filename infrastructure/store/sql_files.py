"""PL/pgSQL and DDL kept in `.sql` files beside the code that runs them, read as package
resources, with a few named fields filled in (table and channel names, a lock timeout)."""

from __future__ import annotations

from importlib.resources import files
from string import Template

_FIELD = r"""
\$(?:
    \{(?P<braced>[a-z_][a-z0-9_]*)\}
  | (?P<escaped>(?!))
  | (?P<named>(?!))
  | (?P<invalid>(?!))
)
"""
"""Only `${name}` (the other groups never match): Template compiles it, verbose."""


class SqlTemplate(Template):
    """`${name}` is a field; every other `$` is the SQL's own (PL/pgSQL's `$$` quotes)."""

    pattern = _FIELD  # type: ignore[assignment]


def sql_file(package: str | None, name: str, **fields: object) -> str:
    """The text of `name` in `package` (a module's `__package__`) with its `${fields}`
    filled in; every field it has must be given, and nothing else."""
    if not package:
        raise ValueError(f"no package to read {name} from")
    template = SqlTemplate(files(package).joinpath(name).read_text(encoding="utf-8"))
    wanted = set(template.get_identifiers())
    if wanted != fields.keys():
        raise ValueError(f"{name} has the fields {sorted(wanted)}, not {sorted(fields)}")
    return template.substitute(fields)

"""The rows a policy statement names for key-value tables (``system_controls`` by ``name``).

An agent reads every kernel parameter under /proc/sys (about 1,300 files) while the checks
read about forty, so a collection plan may name the rows of a keyed table
(``KEYED_TABLES``) as it names the paths of ``file``. The names come from each statement's
text, from the tests that keep a read of the table to named rows:

- ``name = 'x'`` (``==``, either side), ``name IN ('x', 'y')`` and ``name LIKE 'p%'``, in
  the WHERE clause of the query reading the table or the ON clause of its join;
- ``s.name = w.name`` where ``w`` is a ``WITH w(name, ...) AS (VALUES ...)`` table of
  literals: CIS's "wanted values" form.

Getting this wrong would silently drop rows a check reads (and could pass it), so the
analysis is conservative: every read of the table must be constrained by such a test in a
clause joined only by AND (no OR, NOT, CASE around it), or the statement asks for every row
(``ALL_ROWS``). Over-asking costs a few reads; under-asking would cost a wrong verdict.
LIKE's ``_`` (one character) is widened to ``%``, since plan patterns read ``_`` literally.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from protos.posture.v1.tables import KEYED_TABLES

__all__ = ["ALL_ROWS", "find_keys"]

#: The name pattern that asks for every row of a keyed table.
ALL_ROWS = "%"

_TOKEN = re.compile(
    r"""(?P<string>'(?:[^']|'')*')
    |(?P<ident>"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_$]*)
    |(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
    |(?P<op>==|!=|<>|<=|>=|\|\||[-+*/%<>=(),.;~&|])
    |(?P<space>\s+)
    |(?P<other>.)""",
    re.VERBOSE,
)
_CLAUSES = frozenset(
    {"select", "from", "where", "group", "having", "order", "limit", "window", "on", "using",
     "join", "values"}
)  # fmt: skip
_COMPOUND = frozenset({"union", "intersect", "except"})
_JOIN_WORDS = frozenset({"join", "left", "right", "full", "inner", "outer", "cross", "natural"})
_OPENERS = frozenset({"and", "where", "on", "("})
_ENDERS = frozenset({"and", ")", ";", "collate"}) | _CLAUSES | _COMPOUND | _JOIN_WORDS
_NOT_ALIAS = _CLAUSES | _COMPOUND | _JOIN_WORDS | {"as", "natural"}


@dataclass(frozen=True)
class _Token:
    kind: str
    value: str  # identifiers lower-cased and unquoted, strings unquoted


def _tokens(text: str) -> list[_Token]:
    found = []
    for match in _TOKEN.finditer(text):
        kind, raw = match.lastgroup or "other", match[0]
        if kind == "space":
            continue
        if kind == "string":
            found.append(_Token(kind, raw[1:-1].replace("''", "'")))
        elif kind == "ident":
            quoted = raw[0] in '"`['
            found.append(_Token(kind, (raw[1:-1] if quoted else raw).lower()))
        else:
            found.append(_Token(kind, raw))
    return found


class _Statement:
    """One statement's tokens with, for each, the subquery it belongs to."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.query: list[int] = []  # index of the subquery's "(" or -1 for the top level
        self.groups: list[tuple[int, ...]] = []  # enclosing "(" indexes, innermost last
        stack: list[int] = []
        queries = [-1]
        for index, token in enumerate(self.tokens):
            paren = token.value if token.kind == "op" else ""
            if paren == ")" and stack and queries[-1] == stack.pop():
                queries.pop()
            self.query.append(queries[-1])
            self.groups.append(tuple(stack))
            if paren == "(":
                stack.append(index)
                if self.word(index + 1) in ("select", "with", "values"):
                    queries.append(index)

    def word(self, index: int) -> str:
        """The token's value when it is a word or operator ("" out of range or a string)."""
        if 0 <= index < len(self.tokens) and self.tokens[index].kind != "string":
            return self.tokens[index].value
        return ""

    def core(self, index: int) -> range:
        """The SELECT core holding ``index``: its query, cut at UNION/INTERSECT/EXCEPT."""
        query = self.query[index]
        start, end = index, index
        while start > 0 and self._same_core(start - 1, query):
            start -= 1
        while end + 1 < len(self.tokens) and self._same_core(end + 1, query):
            end += 1
        return range(start, end + 1)

    def _same_core(self, index: int, query: int) -> bool:
        inside = query < 0 or query in self.groups[index]
        return inside and not (self.query[index] == query and self.word(index) in _COMPOUND)

    def own(self, core: range) -> list[int]:
        """Indexes of ``core`` that belong to its own query (not to a nested subquery)."""
        query = self.query[core.start]
        return [index for index in core if self.query[index] == query]


def find_keys(text: str, tables: Iterable[str]) -> dict[str, set[str]]:
    """Row names per keyed table among ``tables`` that ``text`` (SQL without comments)
    reads: the names its tests constrain every read to, or ``{ALL_ROWS}``."""
    keyed = sorted(set(tables) & KEYED_TABLES.keys())
    if not keyed:
        return {}
    statement = _Statement(text)
    return {table: _names(statement, table, KEYED_TABLES[table]) for table in keyed}


def _names(statement: _Statement, table: str, column: str) -> set[str]:
    reads = [
        index
        for index, token in enumerate(statement.tokens)
        if token.kind == "ident" and token.value == table and statement.word(index + 1) != "."
    ]
    names: set[str] = set()
    for index in reads or [-1]:
        found = _constraint(statement, index, column) if index >= 0 else None
        if not found:
            return {ALL_ROWS}
        names |= found
    return names


def _alias(statement: _Statement, index: int) -> str:
    after = index + 1
    if statement.word(after) == "as":
        after += 1
    token = statement.tokens[after] if after < len(statement.tokens) else None
    if token is not None and token.kind == "ident" and token.value not in _NOT_ALIAS:
        return token.value
    return statement.tokens[index].value


def _constraint(statement: _Statement, read: int, column: str) -> set[str] | None:
    """Names that constrain the read of the table at token ``read``, None if nothing does."""
    alias = _alias(statement, read)
    core = statement.core(read)
    own = statement.own(core)
    names: set[str] = set()
    for index in own:
        token = statement.tokens[index]
        if token.kind != "ident" or token.value != column:
            continue
        qualified = statement.word(index - 1) == "."
        if qualified and statement.word(index - 2) not in (alias, statement.tokens[read].value):
            continue
        start = index - 2 if qualified else index
        found = _test(statement, start, index, core)
        if found is not None and _conjunct(statement, found[1], found[2], read, own):
            names |= found[0]
    return names or None


def _test(
    statement: _Statement, start: int, column: int, core: range
) -> tuple[set[str], int, int] | None:
    """(names, first token, last token) of a test on the key column at ``column``."""
    operator = statement.word(column + 1)
    if operator in ("=", "=="):
        found = _operand(statement, column + 2, core, forward=True)
        return (found[0], start, found[1]) if found else None
    if operator == "in" and statement.word(column + 2) == "(":
        listed = _literal_list(statement, column + 3)
        return (listed[0], start, listed[1]) if listed else None
    pattern = statement.tokens[column + 2] if column + 2 < len(statement.tokens) else None
    if operator == "like" and pattern is not None and pattern.kind == "string":
        if statement.word(column + 3) == "escape":
            return None
        return {pattern.value.replace("_", "%")}, start, column + 2
    if statement.word(start - 1) in ("=", "=="):
        found = _operand(statement, start - 2, core, forward=False)
        return (found[0], found[1], column) if found else None
    return None


def _operand(
    statement: _Statement, index: int, core: range, *, forward: bool
) -> tuple[set[str], int] | None:
    """The other side of ``=``, as (names, its outer token): a literal, or a column of a
    VALUES table of literals."""
    if not 0 <= index < len(statement.tokens):
        return None
    token = statement.tokens[index]
    if token.kind == "string":
        return {token.value}, index
    if token.kind != "ident":
        return None
    if forward and statement.word(index + 1) == ".":
        qualifier, name, last = token.value, statement.word(index + 2), index + 2
    elif not forward and statement.word(index - 1) == ".":
        qualifier, name, last = statement.word(index - 2), token.value, index - 2
    else:
        return None
    values = _values_column(statement, _source_of(statement, qualifier, core), name)
    return (values, last) if values is not None else None


def _literal_list(statement: _Statement, index: int) -> tuple[set[str], int] | None:
    names: set[str] = set()
    while index < len(statement.tokens):
        token = statement.tokens[index]
        if token.kind != "string":
            return None
        names.add(token.value)
        if statement.word(index + 1) == ")":
            return names, index + 1
        if statement.word(index + 1) != ",":
            return None
        index += 2
    return None


def _source_of(statement: _Statement, alias: str, core: range) -> str:
    """The table an alias stands for in ``core`` (the alias itself when it is a name)."""
    own = statement.own(core)
    for index in own:
        if _is_source(statement, index, own) and _alias(statement, index) == alias:
            return statement.tokens[index].value
    return alias


def _is_source(statement: _Statement, index: int, own: list[int]) -> bool:
    """Whether the token at ``index`` names a table in a FROM clause."""
    if statement.tokens[index].kind != "ident" or statement.word(index + 1) in (".", "("):
        return False
    previous = statement.word(index - 1)
    if previous != ",":
        return previous in ("from", "join")
    clause = max((i for i in own if i < index and statement.word(i) in _CLAUSES), default=-1)
    return statement.word(clause) in ("from", "join")


def _values_column(statement: _Statement, table: str, column: str) -> set[str] | None:
    """The literals of ``column`` in ``WITH table(columns) AS (VALUES ...)``, else None."""
    tokens = statement.tokens
    for index, token in enumerate(tokens):
        if token.kind != "ident" or token.value != table or statement.word(index + 1) != "(":
            continue
        columns, after = _column_list(statement, index + 2)
        if columns is None or column not in columns or statement.word(after) != "as":
            continue
        body = after + 1
        if statement.word(body) != "(" or statement.word(body + 1) != "values":
            continue
        return _values_rows(statement, body + 2, columns.index(column), len(columns))
    return None


def _column_list(statement: _Statement, index: int) -> tuple[list[str] | None, int]:
    columns = []
    while index < len(statement.tokens) and statement.tokens[index].kind == "ident":
        columns.append(statement.tokens[index].value)
        if statement.word(index + 1) == ")":
            return columns, index + 2
        if statement.word(index + 1) != ",":
            break
        index += 2
    return None, index


def _values_rows(statement: _Statement, index: int, position: int, width: int) -> set[str] | None:
    """Literals at ``position`` of each ``(a, b, ...)`` row up to the VALUES' closing ")"."""
    names: set[str] = set()
    while statement.word(index) == "(":
        row = statement.tokens[index + 1 : index + 2 * width]
        if statement.word(index + 2 * width) != ")" or any(
            token.kind not in ("string", "number", "ident") for token in row[::2]
        ):
            return None
        value = row[2 * position]
        if value.kind == "ident" and value.value != "null":
            return None
        if value.kind != "ident":
            names.add(value.value)
        index += 2 * width + 1
        if statement.word(index) == ")":
            return names
        if statement.word(index) != ",":
            return None
        index += 1
    return None


def _conjunct(statement: _Statement, start: int, end: int, read: int, own: list[int]) -> bool:
    """Whether the test spanning ``start..end`` must hold for every row the read yields: it
    sits in the read's WHERE (or its join's ON) with only AND between it and the clause."""
    clause = max((i for i in own if i < start and statement.word(i) in _CLAUSES), default=-1)
    if clause < 0 or statement.word(clause) not in ("where", "on"):
        return False
    if statement.word(clause) == "on" and not _on_filters(statement, clause, read, own):
        return False
    if statement.word(start - 1) not in _OPENERS or statement.word(end + 1) not in _ENDERS | {""}:
        return False
    groups = [group for group in statement.groups[start] if group > clause]
    if any(statement.word(group - 1) not in _OPENERS for group in groups):
        return False  # inside NOT (...), a function's arguments or a CASE
    closing = min(
        (i for i in own if i > end and statement.word(i) in _CLAUSES), default=len(statement.tokens)
    )
    levels = {
        _level(statement, i, clause)
        for i in own
        if clause < i < closing and (statement.word(i) == "or")
    }
    return levels.isdisjoint({-1, *groups})


def _level(statement: _Statement, index: int, clause: int) -> int:
    """The innermost "(" enclosing ``index`` after ``clause`` (-1: the clause itself)."""
    return max((group for group in statement.groups[index] if group > clause), default=-1)


def _on_filters(statement: _Statement, on: int, read: int, own: list[int]) -> bool:
    """An ON test filters the table's rows if the table is not an outer join's kept side."""
    words = {statement.word(i) for i in own}
    if not words & {"left", "right", "full"}:
        return True
    joins = [i for i in own if statement.word(i) == "join" and i < on]
    if not joins or joins[-1] != read - 1:
        return False
    before = {statement.word(i) for i in range(joins[-1] - 3, joins[-1])}
    return not before & {"right", "full"}

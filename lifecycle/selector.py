"""The device selector language: parse once, then run in SQL or on one record in memory.

``region=eu-west,sku=T1,carrier in (tmo,vzw),label:pilot,firmware<2.3.0,stage=active``

A selector is a comma-separated list of terms that must all hold (AND; an empty selector
selects every device). Terms:

=============================  =============================================================
``key=v`` / ``key!=v``         equal / not equal (a device without the attribute is ``!=``
                               every value); ``endpoint=dev-*`` is a glob (``*`` only)
``key in (a,b)``               one of; ``key notin (a,b)`` none of (missing counts as none)
``key<v`` ``<=`` ``>`` ``>=``  ``firmware`` only: semantic-version order
                               (:mod:`lifecycle.versions`); a device whose firmware is
                               missing or not a version never matches an order comparison
``label:name``                 has the label (any value); ``label:name=v`` with that value
``!label:name``                lacks the label; ``label:name!=v`` lacks that value
=============================  =============================================================

Keys: see :data:`KEYS` (``group`` is an alias of ``policy_group``). Values are bare words
(anything but whitespace, ``,``, ``(``, ``)`` and ``"``) or double-quoted (``\\"`` inside).

Why two back ends with one meaning: listing and bulk changes run the selector as one indexed
SQL query (:func:`where_clause`), while dynamic-group membership is maintained per event by
evaluating it on the one device that changed (:meth:`Selector.matches`) -- no fleet scan. The
test suite checks with hypothesis that both give the same answer on SQLite and PostgreSQL.

Labels compile to ``endpoint IN (SELECT endpoint FROM lc_device_label WHERE name = ...)``
(and ``NOT IN`` for ``!label:``; ``endpoint`` is never NULL there, so NOT IN is exact).

Sans-IO: this module builds SQLAlchemy Core expressions but never executes anything.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, false, not_, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from lifecycle.tables import DEVICE, DEVICE_LABEL
from lifecycle.versions import class_bounds, version_key

MAX_SELECTOR_LENGTH = 4096
MAX_LIST = 1000

STAGES = ("manufactured", "bootstrapped", "active", "suspended", "retired")

KEYS: dict[str, str] = {
    # selector key -> lc_device column
    "endpoint": "endpoint",
    "tenant": "tenant",
    "region": "region",
    "country": "country",
    "carrier": "carrier",
    "plmn": "plmn",
    "serving_plmn": "serving_plmn",
    "sku": "sku",
    "policy_group": "policy_group",
    "stage": "stage",
    "firmware": "firmware",
    "model": "model",
    "manufacturer": "manufacturer",
    "radio": "radio",
    "registered": "registered",
    "serial": "serial",
    "imei": "imei",
    "eid": "eid",
}
ALIASES = {"group": "policy_group"}
VERSION_KEYS = frozenset({"firmware"})
ORDER_OPS = ("<", "<=", ">", ">=")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,62}")
_BARE = re.compile(r"[^\s,()\"]+")
_OPS = ("!=", "<=", ">=", "==", "=", "<", ">")


class SelectorError(ValueError):
    """A selector that cannot be parsed: ``position`` (0-based character offset), ``problem``
    and ``fix`` (what to write instead) -- the API answers 422 with all three."""

    def __init__(self, text: str, position: int, problem: str, fix: str) -> None:
        self.text = text
        self.position = position
        self.problem = problem
        self.fix = fix
        super().__init__(f"selector at character {position + 1}: {problem}; {fix}")


@dataclass(frozen=True, slots=True)
class Term:
    """One condition. ``op`` is one of ``= != in notin < <= > >= has lacks`` (the last two for
    labels); ``key`` is the column key, or the label name when ``label`` is true."""

    key: str
    op: str
    values: tuple[str, ...] = ()
    label: bool = False

    def __str__(self) -> str:
        if self.label:
            if self.op == "has":
                return f"label:{self.key}"
            if self.op == "lacks":
                return f"!label:{self.key}"
            return f"label:{self.key}{self.op}{_quote(self.values[0])}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(_quote(v) for v in self.values)})"
        return f"{self.key}{self.op}{_quote(self.values[0])}"


def _quote(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector (module docstring); ``str()`` gives its canonical text."""

    terms: tuple[Term, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)

    @property
    def everything(self) -> bool:
        return not self.terms

    def matches(self, record: Any) -> bool:
        """Whether one device record satisfies every term (same meaning as the SQL)."""
        return all(_term_matches(t, record) for t in self.terms)

    def where(self) -> ColumnElement[bool]:
        """The SQL condition over ``lc_device`` (see :func:`where_clause`)."""
        return where_clause(self)


# -- parsing --------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str, fix: str, at: int | None = None) -> SelectorError:
        return SelectorError(self.text, self.pos if at is None else at, problem, fix)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, what: str) -> bool:
        return self.text.startswith(what, self.pos)

    def parse(self) -> Selector:
        terms: list[Term] = []
        self.skip()
        if self.pos == len(self.text):
            return Selector()
        while True:
            self.skip()
            if self.pos == len(self.text) or self.peek(","):
                raise self.fail(
                    "empty term", "remove the extra comma (terms are separated by one comma)"
                )
            terms.append(self.term())
            self.skip()
            if self.pos == len(self.text):
                return Selector(tuple(terms))
            if not self.peek(","):
                found = self.text[self.pos]
                raise self.fail(
                    f"unexpected {found!r} after a term",
                    "separate terms with ',' (e.g. region=eu-west,sku=T1); quote values "
                    'containing spaces or commas ("like this")',
                )
            self.pos += 1

    def term(self) -> Term:
        start = self.pos
        negated = self.peek("!")
        if negated:
            self.pos += 1
            self.skip()
        match = _IDENT.match(self.text, self.pos)
        if match is None:
            raise self.fail(
                f"expected a key, found {self.text[self.pos : self.pos + 10]!r}",
                f"a term starts with a key ({_key_list()}) or label:NAME",
            )
        word = match.group()
        if word == "label" and self.text.startswith(":", match.end()):
            self.pos = match.end() + 1
            return self.label_term(negated)
        if negated:
            raise self.fail(
                "'!' goes only before label:NAME",
                f"write {word}!=VALUE or {word} notin (...) to exclude values",
                at=start,
            )
        self.pos = match.end()
        key = self.key(word, start)
        self.skip()
        op = self.operator(key)
        if op in ("in", "notin"):
            values = self.value_list(key)
        else:
            self.skip()
            values = (self.value(key),)
        if op in ORDER_OPS and key not in VERSION_KEYS:
            raise self.fail(
                f"'{op}' compares versions and {key!r} is not a version",
                f"use {key}=VALUE or {key} in (...); order comparisons work on "
                + ", ".join(sorted(VERSION_KEYS)),
                at=start,
            )
        if op == "==":
            op = "="
        for value in values:
            self.check_value(key, op, value, start)
        return Term(key, op, values)

    def key(self, word: str, start: int) -> str:
        key = ALIASES.get(word, word)
        if key in KEYS:
            return key
        close = difflib.get_close_matches(word, [*KEYS, *ALIASES], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise self.fail(
            f"unknown key {word!r}",
            f"{hint}keys are {_key_list()}, and label:NAME for labels",
            at=start,
        )

    def operator(self, key: str) -> str:
        for op in _OPS:
            if self.peek(op):
                self.pos += len(op)
                return op
        word = _IDENT.match(self.text, self.pos)
        if word is not None and word.group().lower() in ("in", "notin"):
            self.pos = word.end()
            return word.group().lower()
        raise self.fail(
            f"expected an operator after {key!r}",
            "use = != in (...) notin (...), or < <= > >= for firmware",
        )

    def value(self, key: str) -> str:
        if self.peek('"'):
            return self.quoted()
        match = _BARE.match(self.text, self.pos)
        if match is None:
            raise self.fail(
                f"missing value for {key!r}",
                f'write {key}=VALUE (quote values with spaces: {key}="a b")',
            )
        self.pos = match.end()
        return match.group()

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self.fail("unterminated quoted value", 'close it with "', at=start)

    def value_list(self, key: str) -> tuple[str, ...]:
        self.skip()
        if not self.peek("("):
            raise self.fail(f"expected '(' after in/notin for {key!r}", f"write {key} in (a,b)")
        self.pos += 1
        values: list[str] = []
        while True:
            self.skip()
            if self.peek(")") and not values:
                raise self.fail("empty list", f"name at least one value: {key} in (a)")
            values.append(self.value(key))
            if len(values) > MAX_LIST:
                raise self.fail(f"more than {MAX_LIST} values in one list", "split the selection")
            self.skip()
            if self.peek(")"):
                self.pos += 1
                return tuple(values)
            if not self.peek(","):
                raise self.fail("unterminated list", f"close it with ')': {key} in (a,b)")
            self.pos += 1

    def label_term(self, negated: bool) -> Term:
        match = _LABEL_NAME.match(self.text, self.pos)
        if match is None:
            raise self.fail(
                "missing label name after 'label:'",
                "label names are letters, digits and _ . - / (e.g. label:pilot)",
            )
        name = match.group()
        self.pos = match.end()
        self.skip()
        for op in ("!=", "=="):
            if self.peek(op):
                break
        else:
            op = "=" if self.peek("=") else ""
        if not op:
            return Term(name, "lacks" if negated else "has", (), label=True)
        if negated:
            raise self.fail(
                "'!label:NAME' takes no value",
                f"write label:{name}!=VALUE to exclude one value",
            )
        self.pos += len(op)
        self.skip()
        value = self.value(f"label:{name}")
        return Term(name, "=" if op == "==" else op, (value,), label=True)

    def check_value(self, key: str, op: str, value: str, start: int) -> None:
        if key == "stage" and value not in STAGES:
            raise self.fail(f"unknown stage {value!r}", f"stages are {', '.join(STAGES)}", at=start)
        if key == "registered" and value.lower() not in _BOOLEANS:
            raise self.fail(
                f"registered is true or false, not {value!r}", "write registered=true", at=start
            )
        if op in ("<", "<=", ">", ">=") and not value:
            raise self.fail("empty version", f"write {key}{op}2.3.0", at=start)


def _key_list() -> str:
    return ", ".join([*KEYS, *ALIASES])


def parse_selector(text: str) -> Selector:
    """Parse ``text``; raise :class:`SelectorError` (and nothing else) if it is not valid."""
    if not isinstance(text, str):
        raise SelectorError(str(text), 0, "a selector is text", "pass a string")
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(
            text[:40],
            MAX_SELECTOR_LENGTH,
            f"longer than {MAX_SELECTOR_LENGTH} characters",
            "use a saved group or fewer terms",
        )
    return _Parser(text).parse()


# -- in memory ------------------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; everything else matches itself."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _attribute(record: Any, key: str) -> Any:
    return getattr(record, KEYS[key], None)


def _term_matches(term: Term, record: Any) -> bool:
    if term.label:
        labels: Mapping[str, str] = record.labels
        if term.op == "has":
            return term.key in labels
        if term.op == "lacks":
            return term.key not in labels
        has_value = labels.get(term.key) == term.values[0]
        return has_value if term.op == "=" else not has_value
    value = _attribute(record, term.key)
    if term.key == "registered":
        wanted = {_BOOLEANS[v.lower()] for v in term.values}
        inside = bool(value) in wanted
        return inside if term.op in ("=", "in") else not inside
    if value is None:
        return term.op in ("!=", "notin")
    if term.key in VERSION_KEYS:
        key = version_key(str(value))
        bounds = [version_key(v) for v in term.values]
        if term.op in ORDER_OPS:
            low, high = class_bounds(bounds[0])
            if not low <= key < high:
                return False
            return bool(_ORDER[term.op](key, bounds[0]))
        inside = key in bounds
        return inside if term.op in ("=", "in") else not inside
    text = str(value)
    if term.key == "endpoint" and term.op in ("=", "!=") and "*" in term.values[0]:
        hit = glob_regex(term.values[0]).fullmatch(text) is not None
        return hit if term.op == "=" else not hit
    inside = text in term.values
    return inside if term.op in ("=", "in") else not inside


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


# -- SQL ------------------------------------------------------------------------------------------


class GlobMatch(ColumnElement[bool]):
    """``column`` matches a ``*`` glob, case-sensitively on both back ends (SQLite's LIKE is
    case-insensitive, so it gets GLOB; PostgreSQL gets LIKE with ``%``/``_`` escaped)."""

    inherit_cache = False
    type = Boolean()

    def __init__(self, column: ColumnElement[Any], pattern: str) -> None:
        self.column = column
        self.pattern = pattern


@compiles(GlobMatch)
def _glob_like(element: GlobMatch, compiler: SQLCompiler, **kw: Any) -> str:
    escaped = element.pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return compiler.process(element.column.like(escaped.replace("*", "%"), escape="\\"), **kw)


@compiles(GlobMatch, "sqlite")
def _glob_sqlite(element: GlobMatch, compiler: SQLCompiler, **kw: Any) -> str:
    special = {"[": "[[]", "]": "[]]", "?": "[?]"}
    pattern = "".join(special.get(c, c) for c in element.pattern)
    return compiler.process(element.column.op("GLOB")(pattern), **kw)


_D = DEVICE.c
_L = DEVICE_LABEL.c


def _label_exists(name: str, value: str | None = None) -> ColumnElement[bool]:
    """``endpoint IN (devices with the label)``: an uncorrelated semi-join, which both planners
    run as one index range read + hash/ephemeral index, whatever their statistics say (a
    correlated EXISTS let PostgreSQL pick a nested loop on a freshly loaded table: 8 s)."""
    query = select(_L.endpoint).where(_L.name == name)
    if value is not None:
        query = query.where(_L.value == value)
    return _D.endpoint.in_(query)


def _term_sql(term: Term) -> ColumnElement[bool]:
    if term.label:
        if term.op == "has":
            return _label_exists(term.key)
        if term.op == "lacks":
            return not_(_label_exists(term.key))
        found = _label_exists(term.key, term.values[0])
        return found if term.op == "=" else not_(found)
    column = _D[KEYS[term.key]]
    positive = term.op in ("=", "in")
    if term.key == "registered":
        wanted = {_BOOLEANS[v.lower()] for v in term.values}
        if len(wanted) == 2:
            return true() if positive else false()
        (flag,) = wanted
        return column.is_(flag == positive)
    values: list[str] = list(term.values)
    if term.key in VERSION_KEYS:
        column = _D.firmware_key
        values = [version_key(v) for v in values]
        if term.op in ORDER_OPS:
            low, high = class_bounds(values[0])
            compare = {
                "<": column < values[0],
                "<=": column <= values[0],
                ">": column > values[0],
                ">=": column >= values[0],
            }[term.op]
            return and_(column >= low, column < high, compare)
    if term.key == "endpoint" and term.op in ("=", "!=") and "*" in values[0]:
        glob = GlobMatch(column, values[0])
        return glob if positive else not_(glob)
    inside = column == values[0] if len(values) == 1 else column.in_(values)
    return inside if positive else or_(column.is_(None), not_(inside))


def where_clause(selector: Selector) -> ColumnElement[bool]:
    """The selector as a WHERE condition over ``lc_device`` (labels via EXISTS subqueries)."""
    if selector.everything:
        return true()
    return and_(*(_term_sql(t) for t in selector.terms))


__all__ = [
    "ALIASES",
    "KEYS",
    "STAGES",
    "Selector",
    "SelectorError",
    "Term",
    "glob_regex",
    "parse_selector",
    "where_clause",
]

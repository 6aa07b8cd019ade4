"""``Tx.executemany_tuples``: rows as tuples of named values, on SQLite (positional) and
PostgreSQL (named), in and out of the statement's placeholder order."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from lwm2m.store import Store
from lwm2m.store.tables import REPORTED_VALUE

_INSERT = REPORTED_VALUE.insert().values(
    {name: bindparam(name) for name in ("endpoint", "path", "value", "at", "source")}
)


def test_rows_land_in_their_columns_whatever_the_order_of_names(store: Store) -> None:
    in_order = ("endpoint", "path", "value", "at", "source")
    shuffled = ("source", "at", "endpoint", "value", "path")
    with store.transaction() as tx:
        assert (
            tx.executemany_tuples(_INSERT, in_order, [("ep-1", "/3/0/9", "1", 1.5, "notify")]) == 1
        )
        count = tx.executemany_tuples(
            _INSERT,
            shuffled,
            [("send", 2.5, "ep-2", "2", "/3/0/9"), ("read", 3.5, "ep-2", "3", "/3/0/10")],
        )
        assert count == 2
        assert tx.executemany_tuples(_INSERT, in_order, []) == 0
    with store.transaction() as tx:
        rows = {
            tuple(r)
            for r in tx.execute(
                select(
                    REPORTED_VALUE.c.endpoint,
                    REPORTED_VALUE.c.path,
                    REPORTED_VALUE.c.value,
                    REPORTED_VALUE.c.at,
                    REPORTED_VALUE.c.source,
                )
            )
        }
    assert rows == {
        ("ep-1", "/3/0/9", "1", 1.5, "notify"),
        ("ep-2", "/3/0/9", "2", 2.5, "send"),
        ("ep-2", "/3/0/10", "3", 3.5, "read"),
    }

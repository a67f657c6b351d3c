"""Every row of every table of a database, as one comparable value: did a call write anything?"""

from __future__ import annotations

import functools

from sqlalchemy import Engine, create_engine, inspect, text


@functools.cache
def _engine(database_url: str) -> Engine:
    return create_engine(database_url)


def snapshot(database_url: str) -> dict[str, list[tuple]]:
    """Table name -> all its rows, sorted, so two snapshots compare equal iff nothing changed."""
    engine = _engine(database_url)
    with engine.connect() as connection:
        names = inspect(connection).get_table_names()
        tables = {}
        for name in sorted(names):
            rows = connection.execute(text(f'SELECT * FROM "{name}"')).all()
            tables[name] = sorted((tuple(row) for row in rows), key=repr)
    return tables

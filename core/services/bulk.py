"""Set-based writes shared by the sweeps of every app."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Field, JSONField, Model, QuerySet

from core.progress import ChunkedProgress

_M = TypeVar("_M", bound=Model)

# 5,000 primary keys per DELETE keeps each statement well under a second on
# PostgreSQL and lets autovacuum keep up; one unbounded DELETE would hold locks long.
DELETE_CHUNK_SIZE = 5000


def delete_in_chunks(queryset: QuerySet[Model], *, chunk_size: int = DELETE_CHUNK_SIZE) -> int:
    """Delete what `queryset` selects, a chunk of primary keys per statement; returns rows deleted.

    Safe with two workers at once: each DELETE counts only the rows it removed.
    """
    deleted = 0
    model = queryset.model
    progress = ChunkedProgress(chunk_size=chunk_size, rest=queryset.count)
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:chunk_size])
        if ids:
            deleted += model._default_manager.filter(pk__in=ids).delete()[0]
        progress.advance(len(ids))
        if not ids:
            return deleted


def update_rows(model: type[_M], objs: Sequence[_M], fields: Sequence[str], *, where: Mapping[str, Any]) -> int:
    """Write `fields` of each of `objs` (its own values, row by row) in one UPDATE, only where `where` holds.

    `QuerySet.bulk_update` does the same with a CASE per field and row, whose expressions cost
    Django about 10 ms a row to build (measured: 540 ms for 50 rows of 8 fields). On
    PostgreSQL the values travel as one JSON parameter read by `jsonb_to_recordset`, and
    the statement costs what the database does. `where` holds equality conditions on
    columns (the guard a claim puts on its rows). Returns the rows updated.
    """
    if not objs:
        return 0
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        return model._default_manager.filter(**where).bulk_update(objs, list(fields))
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    columns = [_column(model, name) for name in fields]
    values = [
        {pk.column: obj.pk, **{f.column: f.get_db_prep_save(getattr(obj, f.attname), connection) for f in columns}}
        for obj in objs
    ]
    quote = connection.ops.quote_name
    record = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in [pk, *columns])
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in columns)
    guards = "".join(f" AND t.{quote(_column(model, name).column)} = %s" for name in where)
    guard_values = [_column(model, name).get_db_prep_value(value, connection) for name, value in where.items()]
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "  # noqa: S608  (names from the model; values are parameters)
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({record}) "
        f"WHERE t.{quote(pk.column)} = v.{quote(pk.column)}{guards}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_json_document(values), *guard_values])
        return int(cursor.rowcount)


def insert_rows(model: type[_M], objs: Sequence[_M], *, returning: Sequence[str]) -> list[tuple[Any, ...]] | None:
    """INSERT `objs` in one statement, skipping rows that conflict with a unique constraint;
    returns the `returning` columns of the rows inserted, or None off PostgreSQL.

    `bulk_create` on PostgreSQL binds one array per column, and psycopg escapes every text
    element of those arrays in Python (measured: 330 ms of a 1,000-notification chunk, 60 % of
    the escrow summary job). Here the rows travel as one JSON parameter read by
    `jsonb_to_recordset`, as `update_rows` does. Callers fall back to `bulk_create` on None.
    """
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        return None
    if not objs:
        return []
    meta = model._meta
    columns = [f for f in meta.concrete_fields if not getattr(f, "db_returning", False)]
    quote = connection.ops.quote_name
    # Per column, how to read an object's value: auto_now(_add) fields through pre_save, the
    # built-in types as their Python value (the JSON encoder writes what PostgreSQL parses back:
    # ISO times, decimal and UUID strings; JSON columns are jsonb in the record), and any other
    # field as the database value Django would bind.
    readers = [(f.column, _reader(f, connection)) for f in columns]
    values = [{column: read(obj) for column, read in readers} for obj in objs]
    names = ", ".join(quote(f.column) for f in columns)
    record = ", ".join(f"{quote(f.column)} {_record_type(f, connection)}" for f in columns)
    back = ", ".join(quote(_column(model, name).column) for name in returning)
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({names}) "  # noqa: S608  (names from the model; values are parameters)
        f"SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS v({record}) "
        f"ON CONFLICT DO NOTHING RETURNING {back}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_json_document(values)])
        return [tuple(r) for r in cursor.fetchall()]


_DJANGO_JSON = DjangoJSONEncoder()


def _json_document(values: Sequence[Mapping[Any, Any]]) -> str:
    """The rows as the one JSON parameter of `jsonb_to_recordset`.

    orjson keeps microseconds (DjangoJSONEncoder cuts times to milliseconds, which would
    shift every timestamp written) and is several times faster; what it does not know
    (Decimal, lazy strings) goes through DjangoJSONEncoder.
    """
    return orjson.dumps(values, default=_DJANGO_JSON.default, option=orjson.OPT_NON_STR_KEYS).decode()


_PLAIN = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.BooleanField,
    models.DecimalField,
    models.UUIDField,
    models.ForeignKey,
    JSONField,
)


def _reader(field: Field[Any, Any], connection: Any) -> Any:
    if isinstance(field, models.DateField) and (getattr(field, "auto_now", False) or field.auto_now_add):
        return lambda obj: field.pre_save(obj, True)
    attname = field.attname
    if isinstance(field, (*_PLAIN, models.DateField)):
        return lambda obj: getattr(obj, attname)
    return lambda obj: field.get_db_prep_save(getattr(obj, attname), connection)


def _record_type(field: Field[Any, Any], connection: Any) -> str:
    if isinstance(field, JSONField):
        return "jsonb"
    db_type = field.db_type(connection)
    assert db_type is not None, f"{field} has no column type"
    return db_type


def _column(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or not field.concrete:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field

"""Set-based writes shared by the sweeps of every app."""

from __future__ import annotations

from django.db.models import Model, QuerySet

# 5,000 primary keys per DELETE keeps each statement well under a second on
# PostgreSQL and lets autovacuum keep up; one unbounded DELETE would hold locks long.
DELETE_CHUNK_SIZE = 5000


def delete_in_chunks(queryset: QuerySet[Model], *, chunk_size: int = DELETE_CHUNK_SIZE) -> int:
    """Delete what `queryset` selects, a chunk of primary keys per statement; returns rows deleted.

    Safe with two workers at once: each DELETE counts only the rows it removed.
    """
    deleted = 0
    model = queryset.model
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:chunk_size])
        if not ids:
            return deleted
        deleted += model._default_manager.filter(pk__in=ids).delete()[0]

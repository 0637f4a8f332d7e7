"""The contract's list envelope and cursor paging (ids sort by creation time)."""

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[str | None, Query(max_length=40, description="Cursor: the last id seen.")]


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


def page(
    session: Session,
    stmt: Select[Any],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    after: Any | None,
    newest_first: bool = True,
) -> tuple[Sequence[Any], bool]:
    """Rows after the cursor in list order, and whether more follow."""
    if after is not None:
        stmt = stmt.where(key < after if newest_first else key > after)
    stmt = stmt.order_by(key.desc() if newest_first else key.asc()).limit(limit + 1)
    rows = session.scalars(stmt).all()
    return rows[:limit], len(rows) > limit


def to_page(rows: Sequence[Any], has_more: bool, render: Callable[[Any], T]) -> ListPage[T]:
    return ListPage[T](data=[render(row) for row in rows], has_more=has_more)

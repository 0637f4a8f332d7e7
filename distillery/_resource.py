"""What every resource shares: the client's transport and cursor paging over list routes."""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from distillery.client import Client

M = TypeVar("M", bound=BaseModel)
MAX_PAGE = 100


class Resource:
    def __init__(self, client: "Client"):
        self._client = client
        self._transport = client._transport

    def _get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._transport.request("GET", path, params=clean).json()

    def _pages(
        self,
        path: str,
        parse: Callable[[Any], M],
        *,
        page_size: int = MAX_PAGE,
        limit: int | None = None,
        cursor: Callable[[M], Any] = lambda item: item.id,  # type: ignore[attr-defined]
        start_after: Any = None,
        **params: Any,
    ) -> Iterator[M]:
        """Every item of a list route, newest first (or as the route orders it), fetched a page
        at a time as the caller iterates; ``limit`` stops after that many."""
        after, seen = start_after, 0
        while True:
            body = self._get(path, limit=min(page_size, MAX_PAGE), after=after, **params)
            item = None
            for raw in body["data"]:
                item = parse(raw)
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not body.get("has_more") or item is None:
                return
            after = cursor(item)

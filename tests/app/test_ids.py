"""Ids: a prefix and a lower-case ULID, sorting by creation time."""

import re

from app.ids import new_id

ID = re.compile(r"job_[0-9abcdefghjkmnpqrstvwxyz]{26}")  # Crockford base32: no i, l, o, u


def test_ids_are_a_prefix_and_a_ulid_and_sort_in_the_order_they_were_made() -> None:
    ids = [new_id("job") for _ in range(5000)]  # many within one millisecond
    assert all(ID.fullmatch(i) for i in ids), ids[0]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

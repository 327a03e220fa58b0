"""``python -m bench.paging`` in miniature: a few thousand seeded users, paged to the end.

Not a timing or memory test (those are the benchmark's to report): the pages must cover
every seeded user exactly once, and the first startIndex pages list the same users; and
the flat-memory verdict tells a late worker's warm-up from a leak.
"""

from __future__ import annotations

import pytest

from bench import paging
from bench.seed import UserDocs, number_of, user_body, user_name
from libs.scim.schemas import USERS
from libs.scim.validate import validate_resource


def test_seeded_documents_are_what_the_validator_makes_of_the_bodies():
    docs = UserDocs()
    for i in (0, 7, 123_456):
        assert docs(i) == validate_resource(user_body(i), USERS)
        assert number_of(user_name(i)) == i
    assert number_of("someone@contoso.com") is None


def test_a_reader_worker_warming_up_late_is_flat_memory_and_a_worker_that_keeps_growing_is_not():
    # RSS in MB of the arbiter and two workers, as the 1,000,000-user run printed them
    late_start = [("after 10%", 0.0, 0.0, [77.8, 71.4, 61.1]), ("after 100%", 0.0, 0.0, [77.8, 71.5, 71.5])]
    leaking = [("after 10%", 0.0, 0.0, [77.8, 71.4, 71.4]), ("after 100%", 0.0, 0.0, [77.8, 71.4, 83.0])]
    assert paging.growth_mb(late_start) < 1
    assert paging.growth_mb(leaking) > 10


@pytest.mark.stack
def test_cursor_pages_cover_every_seeded_user_exactly_once(capsys):
    status = paging.main(["--users", "2500", "--count", "200", "--start-index-pages", "3",
                          "--max-growth-mb", "100000"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "listed 2500, duplicates 0, others 0, totalResults [2500]" in out
    assert "first 3 startIndex pages match the cursor pages" in out
    assert "after 100%" in out

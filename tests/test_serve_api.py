"""`hanclip serve`'s JSON API and its security rules, against a running server."""

from __future__ import annotations

import httpx


def test_search_answers_with_search_json_fields_plus_id_and_urls(served) -> None:
    response = httpx.get(served.api("/api/search"), params={"q": "바다 위 노을", "n": 5})
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"]) == 5

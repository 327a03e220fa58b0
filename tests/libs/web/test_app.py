"""The Flask app every service is built on."""

from __future__ import annotations

import flask.app

from libs.web.app import ScimFlask


def test_the_app_asks_once_per_function_whether_it_is_a_coroutine(monkeypatch):
    app = ScimFlask(__name__)
    asked: list[str] = []
    real = flask.app.iscoroutinefunction

    def counting(func):
        asked.append(func.__name__)
        return real(func)

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)

    @app.before_request
    def before() -> None:
        return None

    @app.after_request
    def after(response):
        return response

    @app.get("/x")
    def view() -> str:
        return "ok"

    client = app.test_client()
    assert [client.get("/x").status_code for _ in range(3)] == [200, 200, 200]
    assert sorted(asked) == ["after", "before", "view"]


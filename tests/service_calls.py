"""Calling an EngineService's methods as the page and the extension do (service.call), in
tests: the result, or the error a call must give."""

from event_loop import run as run_async


def call(svc, method, **params):
    """The method's result (the test fails on an error, showing it)."""
    reply = run_async(svc.call(method, params))
    assert "error" not in reply, reply
    return reply["result"]


def error(svc, method, **params):
    """The method's error ({"message", "kind"}; the test fails on a result)."""
    reply = run_async(svc.call(method, params))
    assert "result" not in reply, reply
    return reply["error"]

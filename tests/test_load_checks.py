"""The checks of the load suite (benchmarks/load.py) on made-up client records: each must fail when the
gateway's answers or its usage log are off by one."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import pytest

from benchmarks.load import (
    check_rate_limits,
    check_usage,
    rate_limit_windows,
    usage_expected,
    window_index,
)
from benchmarks.load_scenario import ClientPlan, LoadClient, Unexpected, rate_limit_header

LIMIT = 5
START = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 60  # a window turns at START for offset 0


def record(
    count: int, *, token: int = 1, at: float = START + 10, node: int = 0, reset: int = 50
) -> dict[str, Any]:
    """An answer of the gateway: admitted with its count, or refused (429) when count > LIMIT."""
    refused = count > LIMIT
    return {
        "client": 0,
        "token_id": token,
        "node": node,
        "kind": "py__add",
        "sent": at,
        "received": at + 0.01,
        "status": 429 if refused else 200,
        "remaining": 0 if refused else LIMIT - count,
        "reset": reset,
        "outcome": "rate_limited" if refused else "ok",
    }


def failures(records: list[dict[str, Any]], limited: set[int] | None = None) -> list[str]:
    tokens = {r["token_id"] for r in records}
    windows = rate_limit_windows(records, dict.fromkeys(tokens, 0), dict.fromkeys(tokens, LIMIT))
    return check_rate_limits(windows, dict.fromkeys(tokens, LIMIT), {1} if limited is None else limited)


def test_it_accepts_exactly_limit_admitted_requests_then_refusals_on_both_nodes() -> None:
    records = [record(n, node=n % 2) for n in range(1, LIMIT + 4)]
    assert failures(records) == []


def test_it_fails_when_a_count_is_missing_or_counted_twice() -> None:
    missing = [record(n) for n in (1, 2, 4, 5, 6)]
    assert "missing [3]" in failures(missing)[0]
    twice = [record(n) for n in (1, 2, 2, 3, 4, 5, 6)]
    assert "twice [2]" in failures(twice)[0]


def test_it_fails_when_a_window_refused_before_the_limit() -> None:
    records = [record(n) for n in range(1, LIMIT)] + [record(LIMIT + 1)]
    assert any("4 admitted, 1 refused; the limit is 5" in f for f in failures(records))


def test_it_fails_when_a_token_with_a_high_limit_is_refused() -> None:
    records = [record(n, token=2) for n in range(1, LIMIT + 2)]
    assert failures(records, limited=set()) == ["token 2 (high limit) was refused 1 times"]


def test_it_fails_when_the_limited_token_was_never_driven_over_its_limit() -> None:
    assert "never driven over its limit" in failures([record(1), record(2)])[0]


def test_each_window_is_checked_on_its_own() -> None:
    first = [record(n, at=START - 5) for n in range(1, LIMIT + 2)]
    second = [record(n, at=START + 5) for n in range(1, LIMIT + 2)]
    assert failures(first + second) == []
    assert len(rate_limit_windows(first + second, {1: 0}, {1: LIMIT})) == 2


def test_a_request_across_a_window_turn_belongs_where_the_reported_reset_says() -> None:
    crossing = {**record(1, at=START - 0.005), "received": START + 0.005}
    assert window_index({**crossing, "reset": 1}, 0) == window_index(record(1, at=START - 1), 0)
    assert window_index({**crossing, "reset": 60}, 0) == window_index(record(1, at=START + 1), 0)


def test_the_usage_log_must_hold_exactly_the_calls_and_refusals_the_clients_saw() -> None:
    records = [record(1), record(2), {**record(3), "kind": "py__fail", "outcome": "tool_error"}, record(6)]
    records.append({**record(4), "kind": "ping"})  # not a tool call: not in the usage log
    expected = usage_expected(records)
    assert expected == {1: Counter({"ok py add": 2, "tool_error py fail": 1, "rate_limited": 1})}
    assert (
        check_usage(expected, {1: Counter({"ok py add": 2, "tool_error py fail": 1, "rate_limited": 1})})
        == []
    )
    one_lost = {1: Counter({"ok py add": 1, "tool_error py fail": 1, "rate_limited": 1})}
    assert check_usage(expected, one_lost) == [
        "usage log of token 1 (clients saw, log has): {'ok py add': (2, 1)}"
    ]
    one_more = {1: Counter({"ok py add": 2, "tool_error py fail": 1, "rate_limited": 2})}
    assert "'rate_limited': (1, 2)" in check_usage(expected, one_more)[0]


def test_it_reads_the_ratelimit_header() -> None:
    assert rate_limit_header('"per-token";r=7;t=42') == (7, 42)
    assert rate_limit_header(None) == (None, None)


# -- what a client takes for the documented answer ---------------------------------------------------------------
def _client() -> LoadClient:
    plan = ClientPlan(
        index=0,
        token="mwt_x",
        token_id=1,
        workspace="w",
        slug="w",
        nodes=("127.0.0.1:1",),
        mix="fast",
        think_seconds=0.0,
        seed=1,
        limit=LIMIT,
    )
    return LoadClient(plan, io.StringIO())


def _refusal(**changes: Any) -> tuple[dict[str, Any], dict[str, str], bytes]:
    body = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32000, "message": "Rate limit exceeded"}}
    body.update(changes.pop("body", {}))
    headers = {"content-type": "application/json", "retry-after": "12", **changes.pop("headers", {})}
    record = {"remaining": 0, "reset": 12, "quota": True, **changes}
    return record, headers, json.dumps(body).encode()


def test_a_client_takes_only_the_documented_429_for_a_refusal() -> None:
    assert _client()._rate_limited(*_refusal(), 7) == "rate_limited"
    assert _client()._rate_limited(*_refusal(), 8) == "unexpected"  # another request's id
    assert (
        _client()._rate_limited(*_refusal(body={"error": {"code": -32603, "message": "x"}}), 7)
        == "unexpected"
    )
    assert _client()._rate_limited(*_refusal(headers={"retry-after": "13"}), 7) == "unexpected"
    assert _client()._rate_limited(*_refusal(quota=False), 7) == "unexpected"  # another limit's policy
    assert _client()._rate_limited(*_refusal(remaining=3), 7) == "unexpected"


def test_a_client_takes_a_wrong_result_or_a_foreign_progress_token_as_unexpected() -> None:
    client = _client()
    ok = {"result": {"content": [{"type": "text", "text": "5"}]}}
    client._check("py__add", ok, "5", 3)
    with pytest.raises(Unexpected):
        client._check("py__add", ok, "6", 3)
    with pytest.raises(Unexpected):
        client._check("py__fail", ok, "5", 3)  # the failing tool must answer isError
    done = {"result": {"content": [{"type": "text", "text": "done"}]}}
    progress = [{"method": "notifications/progress", "params": {"progressToken": "progress-0-3"}}] * 4
    client.notifications = progress
    client._check("py__slow", done, "done", 3)
    client.notifications = [
        *progress[:3],
        {"method": "notifications/progress", "params": {"progressToken": "x"}},
    ]
    with pytest.raises(Unexpected):
        client._check("py__slow", done, "done", 3)

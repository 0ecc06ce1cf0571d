"""The checks of the load suite (benchmarks/load.py) on made-up client records: each must fail when the
gateway's answers or its usage log are off by one."""

from __future__ import annotations

from collections import Counter
from typing import Any

from benchmarks.load import (
    check_rate_limits,
    check_usage,
    rate_limit_windows,
    usage_expected,
    window_index,
)
from benchmarks.load_scenario import rate_limit_header

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

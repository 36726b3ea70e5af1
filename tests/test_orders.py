"""Tests for execrl.domain: parent/child orders at the edge and the IS arithmetic."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execrl.domain import (
    ChildOrder,
    OrderType,
    OrderValidationError,
    ParentOrder,
    Side,
    implementation_shortfall_bps,
)

# Seed 001 §9.1's parent order payload, verbatim.
SEED001_ORDER_JSON = """
{
  "order_id": "ABC-123",
  "symbol": "AAPL",
  "side": "sell",
  "qty": 250000,
  "arrival_px": 187.53,
  "start_ts": 1693564800,
  "end_ts": 1693568400,
  "constraints": {"participation": 0.1, "price_band_bps": 5, "child_max": 15000}
}
"""


def seed001_order() -> dict[str, Any]:
    return json.loads(SEED001_ORDER_JSON)


def refused(data: Any = None, *, text: str | None = None) -> str:
    """The one-line message an invalid order is refused with."""
    with pytest.raises(OrderValidationError) as info:
        if text is not None:
            ParentOrder.from_json(text)
        else:
            ParentOrder.from_dict(data)
    msg = str(info.value)
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    return msg


# -- a valid order ----------------------------------------------------------------------------


def test_seed001_example_parses() -> None:
    order = ParentOrder.from_json(SEED001_ORDER_JSON)
    assert order.order_id == "ABC-123"
    assert order.symbol == "AAPL"
    assert order.side is Side.SELL
    assert order.side.sign == -1
    assert order.qty == 250000
    assert isinstance(order.qty, int)
    assert order.arrival_px == 187.53
    assert order.horizon == 1693568400 - 1693564800
    assert order.constraints.participation == 0.1
    assert order.constraints.price_band_bps == 5
    assert order.constraints.child_max == 15000


def test_seed001_example_round_trips_through_the_wire() -> None:
    order = ParentOrder.from_json(SEED001_ORDER_JSON)
    wire = order.to_wire()
    # Same content as the seed's payload (5 == 5.0 for the float fields) ...
    assert wire == seed001_order()
    # ... and the wire form is JSON that parses back to the same order.
    again = ParentOrder.from_json(json.dumps(wire))
    assert again == order
    assert again.to_wire() == wire


def test_to_wire_leaves_out_absent_fields() -> None:
    data = seed001_order()
    del data["end_ts"], data["arrival_px"], data["constraints"]
    data["horizon_s"] = 600
    wire = ParentOrder.from_dict(data).to_wire()
    assert "end_ts" not in wire
    assert "arrival_px" not in wire
    assert wire["horizon_s"] == 600
    assert wire["constraints"] == {}
    assert ParentOrder.from_dict(data).horizon == 600


def test_from_file_reads_a_valid_order(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text(SEED001_ORDER_JSON)
    assert ParentOrder.from_file(path) == ParentOrder.from_json(SEED001_ORDER_JSON)


# -- refused orders: the message names the field and the bad value ----------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("qty", -5, "-5"),
        ("qty", 0, "0"),
        ("qty", 1500.5, "1500.5"),
        ("qty", 250000.0, "250000.0"),  # a float, even a whole one, is not a share count
        ("qty", "250000", "'250000'"),
        ("qty", True, "True"),
        ("side", "hold", "hold"),
        ("end_ts", 1693564800, "1693564800"),  # equal to start_ts
        ("end_ts", 1693564000, "1693564000"),  # before start_ts
        ("arrival_px", math.nan, "nan"),
        ("arrival_px", math.inf, "inf"),
        ("arrival_px", -math.inf, "-inf"),
        ("symbol", 7, "7"),
    ],
)
def test_bad_field_value_is_refused_naming_field_and_value(
    field: str, value: Any, shown: str
) -> None:
    data = seed001_order()
    data[field] = value
    msg = refused(data)
    assert field in msg
    assert shown in msg


@pytest.mark.parametrize(
    ("literal", "value"), [("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf)]
)
def test_non_finite_json_literal_arrival_px_is_refused_naming_field_and_value(
    literal: str, value: float
) -> None:
    text = SEED001_ORDER_JSON.replace("187.53", literal)
    assert literal in text
    msg = refused(text=text)
    assert "arrival_px" in msg, f"message does not name the field: {msg!r}"
    # the bad value, as the JSON literal or as the float it decodes to (sign included)
    assert f"= {literal}" in msg or f"= {value!r}" in msg, msg


@pytest.mark.parametrize("field", ["order_id", "symbol", "side", "qty", "start_ts"])
def test_missing_required_field_is_refused_by_name(field: str) -> None:
    data = seed001_order()
    del data[field]
    msg = refused(data)
    assert field in msg
    assert "missing" in msg


def test_unknown_extra_field_is_refused_by_name() -> None:
    data = seed001_order()
    data["urgency"] = "high"
    msg = refused(data)
    assert "urgency" in msg
    assert "high" in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("participation", 1.5),
        ("participation", 1.0000001),
        ("participation", 0),
        ("participation", 0.0),
        ("participation", -0.1),
        ("child_max", 0),
        ("child_max", -3),
    ],
)
def test_bad_constraint_is_refused_naming_field_and_value(field: str, value: float) -> None:
    data = seed001_order()
    data["constraints"][field] = value
    msg = refused(data)
    assert f"constraints.{field}" in msg
    assert repr(value) in msg


@pytest.mark.parametrize("participation", [1, 1.0, 0.5, 1e-9])
def test_participation_in_range_is_accepted(participation: float) -> None:
    data = seed001_order()
    data["constraints"]["participation"] = participation
    assert ParentOrder.from_dict(data).constraints.participation == participation


def test_neither_end_ts_nor_horizon_is_refused() -> None:
    data = seed001_order()
    del data["end_ts"]
    msg = refused(data)
    assert "end_ts" in msg and "horizon_s" in msg


def test_both_end_ts_and_horizon_is_refused() -> None:
    data = seed001_order()
    data["horizon_s"] = 3600
    msg = refused(data)
    assert "end_ts" in msg and "horizon_s" in msg


def test_non_object_json_is_refused() -> None:
    msg = refused(text="[]")
    assert "object" in msg and "list" in msg


def test_invalid_json_text_is_refused() -> None:
    msg = refused(text='{"order_id": "A", ')
    assert "JSON" in msg


def test_missing_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "order.json"
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_file(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg


def test_from_dict_does_not_mutate_its_input() -> None:
    data = seed001_order()
    before = copy.deepcopy(data)
    ParentOrder.from_dict(data)
    assert data == before


def test_order_is_immutable() -> None:
    order = ParentOrder.from_json(SEED001_ORDER_JSON)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is internal
        order.qty = 1  # type: ignore[misc]
    assert order.qty == 250000


# -- implementation shortfall -----------------------------------------------------------------


def test_buy_above_arrival_is_a_cost() -> None:
    # bought at 101 against 100: 1 % = 100 bps of cost
    assert float(implementation_shortfall_bps(101.0, 100.0, +1)) == pytest.approx(100.0)


def test_sell_above_arrival_is_a_gain() -> None:
    assert float(implementation_shortfall_bps(101.0, 100.0, -1)) == pytest.approx(-100.0)


def test_sell_below_arrival_is_a_cost() -> None:
    assert float(implementation_shortfall_bps(99.0, 100.0, -1)) == pytest.approx(100.0)


def test_is_is_vectorised_with_mixed_sides() -> None:
    avg = np.array([101.0, 101.0, 99.5, 200.0])
    bench = np.array([100.0, 100.0, 100.0, 250.0])
    side = np.array([+1, -1, -1, +1])
    expected = [
        (101.0 - 100.0) / 100.0 * 1e4,
        -(101.0 - 100.0) / 100.0 * 1e4,
        -(99.5 - 100.0) / 100.0 * 1e4,
        (200.0 - 250.0) / 250.0 * 1e4,
    ]
    got = implementation_shortfall_bps(avg, bench, side)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_is_broadcasts_a_scalar_benchmark() -> None:
    got = implementation_shortfall_bps(np.array([[100.0, 102.0], [98.0, 100.0]]), 100.0, -1)
    np.testing.assert_allclose(got, [[0.0, -200.0], [200.0, 0.0]], atol=1e-9)


positive_px = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(positive_px, positive_px)
def test_is_of_buy_is_minus_is_of_sell(avg: float, bench: float) -> None:
    buy = float(implementation_shortfall_bps(avg, bench, +1))
    sell = float(implementation_shortfall_bps(avg, bench, -1))
    assert buy == -sell
    assert (buy > 0) == (avg > bench)


# -- child orders -----------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [0, -1, -15000])
def test_child_order_needs_positive_qty(qty: int) -> None:
    with pytest.raises(OrderValidationError) as info:
        ChildOrder("ABC-123", OrderType.MARKET, qty)
    assert "qty" in str(info.value) and str(qty) in str(info.value)


@pytest.mark.parametrize("order_type", [OrderType.LIMIT, OrderType.MARKETABLE_LIMIT, OrderType.IOC])
def test_priced_child_order_without_px_is_refused(order_type: OrderType) -> None:
    with pytest.raises(OrderValidationError) as info:
        ChildOrder("ABC-123", order_type, 100)
    assert "px" in str(info.value)
    assert order_type.value in str(info.value)


def test_child_order_wire_matches_seed001_and_drops_none() -> None:
    child = ChildOrder("ABC-123", OrderType.LIMIT, 8000, px=187.48, ttl_ms=3000, venue="XNAS")
    assert child.to_wire() == json.loads(
        '{"parent_id":"ABC-123","type":"limit","qty":8000,"px":187.48,"ttl_ms":3000,"venue":"XNAS"}'
    )
    market = ChildOrder("ABC-123", OrderType.MARKET, 500)
    assert market.to_wire() == {"parent_id": "ABC-123", "type": "market", "qty": 500}

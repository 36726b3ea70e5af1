"""Parent and child orders, fills, and their wire formats (seed 001 §9.1).

External input is validated here, at the edge: a bad order is refused with an
``OrderValidationError`` whose one-line message names the field and the bad value, and
nothing downstream runs. Inside execrl an order is immutable.

Bounds. Every number of an order lies in a range in which execrl's arithmetic is exact and
finite: at most ``MAX_QTY`` shares (whole shares stay exact in float64, and cash = shares ×
price stays far inside its range), prices in (0, ``MAX_PRICE``], timestamps in Unix seconds
in [0, ``MAX_TS``] (a millisecond timestamp is refused, not read as 30,000 years) and a
horizon in [``MIN_HORIZON_S``, ``MAX_HORIZON_S``]. Whether the order makes sense on a given
market (its impact, its risk) is checked where the two meet
(``ACMarketConfig.validate_for_order``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from execrl.domain.errors import OrderValidationError, describe_pydantic_error
from execrl.domain.files import load_json_object, parse_json_object


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the direction our trades push the price."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """How a child order meets the book. The Almgren–Chriss market fills only ``MARKET``."""

    MARKET = "market"
    LIMIT = "limit"
    MARKETABLE_LIMIT = "marketable_limit"
    IOC = "ioc"


PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]

#: Largest parent order, in shares: a trillion, far above any real order, far below 2**53.
MAX_QTY = 10**12
#: Highest price, in currency per share.
MAX_PRICE = 1e9
#: Latest timestamp, in Unix seconds (the year 5138).
MAX_TS = 1e11
#: Shortest and longest horizon, in seconds: a millisecond and about 31.7 years.
MIN_HORIZON_S = 1e-3
MAX_HORIZON_S = 1e9

Price = Annotated[float, Field(gt=0, le=MAX_PRICE, allow_inf_nan=False)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TS, allow_inf_nan=False)]
#: An identifier: at most 128 characters of printable text (``_printable`` refuses a newline or
#: a terminal escape, which would break a report or a one-line message).
Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class OrderConstraints(BaseModel):
    """Hard limits a parent order carries (seed 001 §6). All optional."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    participation: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    """Maximum share of market volume in any decision interval (0, 1]."""
    price_band_bps: PositiveFinite | None = None
    """Limit prices must lie within this many bps of the reference price."""
    child_max: Annotated[int, Field(gt=0)] | None = None
    """Largest child order, in shares."""


class ParentOrder(BaseModel):
    """Buy or sell ``qty`` shares of ``symbol`` between ``start_ts`` and ``end_ts``.

    The wire format is seed 001 §9.1's JSON; ``horizon_s`` may replace ``end_ts``.

    >>> order = ParentOrder.from_json('{"order_id": "A-1", "symbol": "XYZ", "side": "sell",'
    ...     ' "qty": 1000, "start_ts": 0, "end_ts": 3600}')
    >>> order.side.sign, order.horizon
    (-1, 3600.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    order_id: Identifier
    symbol: Identifier
    side: Annotated[Side, Field(strict=False)]
    qty: Annotated[int, Field(gt=0, le=MAX_QTY)]
    arrival_px: Price | None = None
    start_ts: Timestamp
    end_ts: Timestamp | None = None
    horizon_s: Annotated[
        float, Field(ge=MIN_HORIZON_S, le=MAX_HORIZON_S, allow_inf_nan=False)
    ] | None = None
    constraints: OrderConstraints = OrderConstraints()

    @model_validator(mode="after")
    def _horizon(self) -> Self:
        if self.end_ts is None and self.horizon_s is None:
            raise ValueError("one of end_ts or horizon_s is required")
        if self.end_ts is not None and self.horizon_s is not None:
            raise ValueError("give end_ts or horizon_s, not both")
        return self

    @field_validator("order_id", "symbol")
    @classmethod
    def _printable(cls, text: str) -> str:
        if not text.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return text

    @field_validator("end_ts")
    @classmethod
    def _end_after_start(cls, end_ts: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start_ts")
        if end_ts is not None and start is not None:
            if end_ts <= start:
                raise ValueError(f"must be after start_ts = {start!r}")
            if not MIN_HORIZON_S <= end_ts - start <= MAX_HORIZON_S:
                raise ValueError(
                    f"end_ts - start_ts = {end_ts - start:g} s must be in "
                    f"[{MIN_HORIZON_S:g}, {MAX_HORIZON_S:g}] s"
                )
        return end_ts

    @property
    def horizon(self) -> float:
        """Seconds from start to end."""
        if self.horizon_s is not None:
            return self.horizon_s
        assert self.end_ts is not None  # the validator guarantees one of the two
        return self.end_ts - self.start_ts

    @classmethod
    def from_dict(cls, data: Any) -> ParentOrder:
        """Validate a decoded JSON object; raise ``OrderValidationError`` naming the field."""
        if not isinstance(data, dict):
            raise OrderValidationError(
                f"parent order must be a JSON object, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise OrderValidationError(describe_pydantic_error("order", exc)) from None

    @classmethod
    def from_json(cls, text: str) -> ParentOrder:
        """Validate JSON text (duplicate keys, NaN and Infinity are refused by name)."""
        return cls.from_dict(parse_json_object(text, "order", OrderValidationError))

    @classmethod
    def from_file(cls, path: str | Path) -> ParentOrder:
        """Validate a UTF-8 JSON file (``execrl.domain.files`` says what else is refused)."""
        return cls.from_dict(load_json_object(path, "order file", OrderValidationError))

    def to_wire(self) -> dict[str, Any]:
        """The seed 001 §9.1 JSON object (``None`` fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True, slots=True)
class ChildOrder:
    """One child order, as the seed 001 §9.1 child order command."""

    parent_id: str
    type: OrderType
    qty: int
    px: float | None = None
    ttl_ms: int | None = None
    venue: str | None = None

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise OrderValidationError(f"child order field 'qty' = {self.qty!r} must be > 0")
        if self.type is not OrderType.MARKET and self.px is None:
            raise OrderValidationError(f"child order of type {self.type.value!r} needs 'px'")

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.type.value
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Fill:
    """Shares of a child order that traded, at one price, at decision step ``step``."""

    parent_id: str
    qty: int
    px: float
    step: int

"""Parent and child orders, fills, and their wire formats (seed 001 §9.1).

External input is validated here, at the edge: a bad order is refused with an
``OrderValidationError`` whose one-line message names the field and the bad value, and
nothing downstream runs. Inside execrl an order is immutable.
"""

from __future__ import annotations

import json
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

    order_id: Annotated[str, Field(min_length=1)]
    symbol: Annotated[str, Field(min_length=1)]
    side: Annotated[Side, Field(strict=False)]
    qty: Annotated[int, Field(gt=0)]
    arrival_px: PositiveFinite | None = None
    start_ts: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    end_ts: Annotated[float, Field(allow_inf_nan=False)] | None = None
    horizon_s: PositiveFinite | None = None
    constraints: OrderConstraints = OrderConstraints()

    @model_validator(mode="after")
    def _horizon(self) -> Self:
        if self.end_ts is None and self.horizon_s is None:
            raise ValueError("one of end_ts or horizon_s is required")
        if self.end_ts is not None and self.horizon_s is not None:
            raise ValueError("give end_ts or horizon_s, not both")
        return self

    @field_validator("end_ts")
    @classmethod
    def _end_after_start(cls, end_ts: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start_ts")
        if end_ts is not None and start is not None and end_ts <= start:
            raise ValueError(f"must be after start_ts = {start!r}")
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
        # NaN / Infinity literals parse to floats, so the model refuses them by field name.
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OrderValidationError(f"order is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> ParentOrder:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise OrderValidationError(
                f"cannot read order file {str(p)!r}: {exc.strerror}"
            ) from None
        return cls.from_json(text)

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

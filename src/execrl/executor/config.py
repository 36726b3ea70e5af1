"""The executor's configuration: one YAML file in the shape of seed 001 §9.3.

```yaml
policy:
  type: ppo                    # a label for a learned policy, or a baseline spec (twap, pov:0.1)
  checkpoint: runs/ppo         # a learned policy's checkpoint folder; none for a baseline
  sell_checkpoint: runs/ppo-s  # optional: a separate model for sells (seed 000 Q3)
  action_set: seed001          # optional: an action set's name, checked against the policy's
                               #   (seed001 is the seed's size x aggression x wait head)
risk:                          # execrl.safety.guard.RiskLimits, plus the seed's names
  participation_cap: 0.10      #   = participation
  price_band_ticks: 5          #   the collar in ticks of the market at the arrival price
                               #   (or price_band_bps, in bps of the mid)
  child_max: 15000
  fallback: almgren_chriss     # twap (default), vwap, almgren_chriss, split
watchdog:                      # execrl.safety.watchdog.WatchdogConfig
  min_confidence: 0.6
kill_file: /var/run/execrl/kill   # optional: the kill switch an operator flips (execrl kill)
```

It is validated at the edge like an order: an unknown key, a bad value or a checkpoint that
does not load is one line naming the field and the value, and nothing runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from execrl.domain import ConfigError
from execrl.domain.errors import describe_pydantic_error

FALLBACKS = ("twap", "vwap", "almgren_chriss", "split")
#: the seed's spelling (seed 001 §9.3 writes "almgren_chiss") and short names
FALLBACK_ALIASES = {"almgren_chiss": "almgren_chriss", "ac": "almgren_chriss"}
#: the seed's names of RiskLimits fields: participation_cap = participation; price_band_ticks
#: is converted to price_band_bps with the market's tick at the order's arrival price
RISK_ALIASES = ("participation_cap", "price_band_ticks")


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=128)
    checkpoint: str | None = None
    sell_checkpoint: str | None = None
    action_set: str | None = None

    @field_validator("action_set", mode="before")
    @classmethod
    def _named_set(cls, value: Any) -> Any:
        from execrl.env.spaces import ACTION_SETS

        if value is None or (isinstance(value, str) and value in ACTION_SETS):
            return value
        hint = (" (the seed's mapping of axes is the action set named seed001)"
                if isinstance(value, dict) else "")
        raise ValueError(f"not an action set's name{hint}; choose from {', '.join(ACTION_SETS)}")


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sql_url: str | None = None
    """SQLAlchemy URL of the per-order summaries and incidents (default: SQLite in the trail
    folder); e.g. postgresql+psycopg://user@host/db."""


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyConfig = PolicyConfig(type="twap")
    risk: dict[str, Any] = Field(default_factory=dict)
    watchdog: dict[str, Any] = Field(default_factory=dict)
    fallback: Literal["twap", "vwap", "almgren_chriss", "split"] = "twap"
    kill_file: str | None = None
    audit: AuditConfig = AuditConfig()
    _where: str = PrivateAttr(default="executor config")

    @classmethod
    def from_dict(cls, data: Any, where: str = "executor config") -> ExecutorConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top, got {type(data).__name__}")
        data = dict(data)
        risk = dict(data.get("risk") or {}) if isinstance(data.get("risk"), dict) else data.get(
            "risk")
        watchdog = dict(data.get("watchdog") or {}) if isinstance(data.get("watchdog"), dict) \
            else data.get("watchdog")
        # the seed puts the fallback under risk; the watchdog's config has one too: one is enough
        given = {place: d.pop("fallback") for place, d in (("risk", risk), ("watchdog", watchdog))
                 if isinstance(d, dict) and "fallback" in d}
        if "fallback" in data:
            given["top level"] = data["fallback"]
        if len(given) > 1:
            raise ConfigError(f"{where}: 'fallback' is given in {' and '.join(given)}; give it "
                              f"once")
        if given:
            data["fallback"] = next(iter(given.values()))
        data["watchdog"] = watchdog if watchdog is not None else {}
        if isinstance(data.get("fallback"), str):
            data["fallback"] = FALLBACK_ALIASES.get(data["fallback"], data["fallback"])
        data["risk"] = risk if risk is not None else {}
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error(where, exc)) from None
        config._where = where
        from execrl.policies.baselines import BASELINES

        spec = config.policy
        if spec.checkpoint is None and spec.type.partition(":")[0] not in BASELINES:
            raise ConfigError(f"{where} field 'policy.type' = {spec.type!r} is not a baseline "
                              f"({', '.join(BASELINES)}); a learned policy needs "
                              f"policy.checkpoint (its folder)")
        config.risk_limits(tick_size=1.0, ref_price=1.0)  # validated now, not at the first
        config.watchdog_config()                          # decision (the tick checked later)
        return config

    @classmethod
    def load(cls, path: Path) -> ExecutorConfig:
        import yaml

        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"executor config {str(path)!r}: cannot read it ({exc.strerror})"
                              ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not YAML"
            raise ConfigError(f"executor config {str(path)!r}{at}: {problem}") from None
        return cls.from_dict(data if data is not None else {}, where=f"executor config "
                                                                      f"{str(path)!r}")

    def risk_limits(self, tick_size: float | None = None, ref_price: float | None = None
                    ) -> Any:
        """The firm's limits (``safety.guard.RiskLimits``), with the seed's names mapped:
        ``participation_cap`` is ``participation``; ``price_band_ticks`` becomes
        ``price_band_bps`` = ticks × ``tick_size`` / ``ref_price`` × 10⁴ (the guard's collar is
        in bps of the mid, so a band in ticks is fixed at the order's arrival price)."""
        from execrl.safety.guard import RiskLimits

        where = f"{self._where} risk"
        risk = dict(self.risk)
        for seed_name, name in (("participation_cap", "participation"),
                                ("price_band_ticks", "price_band_bps")):
            if seed_name in risk and name in risk:
                raise ConfigError(f"{where} gives both {seed_name!r} and {name!r}; give one")
        if "participation_cap" in risk:
            risk["participation"] = risk.pop("participation_cap")
        if "price_band_ticks" in risk:
            ticks = risk.pop("price_band_ticks")
            if (isinstance(ticks, bool) or not isinstance(ticks, int | float)
                    or not math.isfinite(ticks) or not 0 < ticks <= 1e6):
                raise ConfigError(f"{where} field 'price_band_ticks' = {ticks!r} is not valid: "
                                  f"expected a number of ticks above 0 (at most 1e6)")
            if tick_size is None or ref_price is None:
                raise ConfigError(f"{where} 'price_band_ticks' needs the market's tick size")
            if not tick_size > 0:
                raise ConfigError(f"{where} field 'price_band_ticks' = {ticks!r}: this market "
                                  f"has continuous prices (no tick); give price_band_bps")
            risk["price_band_bps"] = float(ticks) * tick_size / ref_price * 1e4
        return RiskLimits.from_dict(risk, what=where)

    def watchdog_config(self) -> Any:
        """The watchdog (``safety.watchdog.WatchdogConfig``), finishing with ``fallback``."""
        from execrl.safety.watchdog import WatchdogConfig

        data = {**self.watchdog, "fallback": self.fallback}
        return WatchdogConfig.from_dict(data, what=f"{self._where} watchdog")

"""The service's wire: stream and channel names, the envelope every entry travels in, and the
one atomic write that makes the service's output idempotent.

Every stream entry carries one field, ``data``: a JSON object. Inbound parent orders are seed
001 §9.1's envelope, validated at the edge by ``ParentOrder.from_json`` (a bad order is answered
on ``STREAM_FILLS`` with a ``kind: error`` entry whose one-line message names the field, and
nothing trades). Outbound entries have a ``kind`` (``MESSAGE_KINDS``) and an ``id`` that is the
same on every attempt (``parent id:child id`` for a child order), so a service that re-runs an
order after a restart can tell what it already sent.
"""

from __future__ import annotations

import json
from typing import Any

from execrl.domain import OrderValidationError, ParentOrder

STREAM_ORDERS = "STREAM_ORDERS"  # inbound: parent orders (seed 001 §9.1 envelope)
STREAM_FILLS = "STREAM_FILLS"  # outbound: child orders placed, fills, order done, errors
STREAM_RESEARCH = "STREAM_RESEARCH"  # outbound: decision traces
STREAM_MARKET = "STREAM_MARKET"  # inbound: market data, one entry per decision step
CHAN_ANALYST = "CHAN_ANALYST"  # pub/sub: diagnostics for the analyst's overlays
CHAN_EXEC_AGENT = "CHAN_EXEC_AGENT"  # pub/sub: the agent's log lines (seed 002)

#: the service's own state in Redis (hashes and sets; the server runs with AOF on)
STATE_PROGRESS = "execrl:serve:progress"  # parent id -> {"step", "market_id"} last published
STATE_DONE = "execrl:serve:done"  # parent id -> its done entry's id on STREAM_FILLS
STATE_SENT = "execrl:serve:sent"  # every outbound id ever written (the idempotency set)
STATE_BATCH_PROGRESS = "execrl:serve:batch-progress"  # batch id -> {"step", "market_id", ...}

#: what an outbound entry on STREAM_FILLS can be
MESSAGE_KINDS = ("child", "cancel", "fill", "done", "error")
#: the market stream's fields, per decision step and symbol (``execrl.service.feed``): the
#: feed's counter, the market episode and its step, the quote at the step's start, the last
#: step's volume, the market model, the step's length and start (s since the episode began)
#: and what the paper market replays the step from (``ac`` for Almgren–Chriss, ``book`` for a
#: replay; one of them, or neither for a market whose flow reacts to our orders)
MARKET_FIELDS = ("symbol", "step", "episode", "k", "mid", "bid", "ask", "volume", "ts_ns",
                 "model", "step_s", "t_s", "ac", "book")


def encode(message: dict[str, Any]) -> dict[str, str]:
    """A stream entry's fields for ``message``."""
    return {"data": json.dumps(message, separators=(",", ":"), allow_nan=False)}


def decode(fields: dict[Any, Any]) -> dict[str, Any]:
    """The JSON object in a stream entry (fields as redis-py returns them, bytes or str)."""
    raw = fields.get("data", fields.get(b"data"))
    if raw is None:
        raise ValueError("stream entry has no 'data' field")
    return json.loads(raw)


def decode_order(fields: dict[Any, Any]) -> ParentOrder:
    """The parent order in a ``STREAM_ORDERS`` entry, validated (seed 001 §9.1); raises
    ``OrderValidationError`` whose one-line message names the field and the value."""
    raw = fields.get("data", fields.get(b"data"))
    if raw is None:
        names = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in fields)
        raise OrderValidationError(
            f"order entry has no 'data' field (it has {', '.join(names) or 'none'}): send the "
            f"parent order JSON as data")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OrderValidationError(f"order data is not UTF-8 ({exc.reason})") from None
    return ParentOrder.from_json(raw)


def order_error(entry_id: str, fields: dict[Any, Any], message: str) -> dict[str, Any]:
    """The answer to a refused parent order: its entry id, its order id when one could be
    read, and the one-line error (``error: ...``)."""
    order_id = None
    try:
        data = decode(fields)
        if isinstance(data, dict) and isinstance(data.get("order_id"), str):
            order_id = data["order_id"]
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    return {"kind": "error", "id": f"error:{entry_id}", "entry_id": entry_id,
            "order_id": order_id, "error": f"error: {message}"}


def child_message_id(parent_id: str, child_id: int) -> str:
    """A child order's idempotent id: the same on every attempt at the order."""
    return f"{parent_id}:{child_id}"


# The one write of a decision step, atomic in Redis: unless the step (or a message id) was
# already written, append each message to its stream, remember its id, and record the step as
# the order's progress. A service killed before it returns re-runs the step after restart and
# writes it then; killed after, it finds the step recorded and writes nothing.
#   KEYS: progress hash, sent set, then one stream key per message
#   ARGV: parent id, step, progress JSON, then per message: id, data
PUBLISH_STEP = """
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done and tonumber(cjson.decode(done)['step']) >= tonumber(ARGV[2]) then return 0 end
local n = 0
for i = 3, #KEYS do
  local id = ARGV[2 + 2 * (i - 2)]
  local data = ARGV[3 + 2 * (i - 2)]
  if redis.call('SADD', KEYS[2], id) == 1 then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', '1000000', '*', 'data', data)
    n = n + 1
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return n
"""

# An order's done record (or an error answer), once: KEYS: sent set, the done hash (or '' for
# an error), STREAM_FILLS; ARGV: message id, data, parent id
PUBLISH_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000000', '*', 'data', ARGV[2])
if KEYS[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[3], id) end
return 1
"""


def publish_step(client: Any, parent_id: str, step: int, progress: dict[str, Any],
                 messages: list[tuple[str, dict[str, Any]]]) -> int:
    """Write a decision step's messages (``(stream, message)``; each message has its ``id``)
    at most once; returns how many were written (0: the step was already on record)."""
    keys = [STATE_PROGRESS, STATE_SENT]
    args: list[Any] = [parent_id, step, json.dumps(progress)]
    for stream, message in messages:
        keys.append(stream)
        args += [message["id"], encode(message)["data"]]
    return int(client.eval(PUBLISH_STEP, len(keys), *keys, *args))


# A batch's decision step (``execrl serve``'s micro-batches), atomic as PUBLISH_STEP: unless the
# batch's step was already written, its members' messages (each id once) and the progress of
# the batch and of each member that decided in it.
#   KEYS: batch progress hash, order progress hash, sent set, then one stream key per message
#   ARGV: batch id, step, batch progress JSON, m, then m × (order id, its progress JSON), then
#         per message: id, data
PUBLISH_BATCH_STEP = """
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done and tonumber(cjson.decode(done)['step']) >= tonumber(ARGV[2]) then return 0 end
local m = tonumber(ARGV[4])
local base = 4 + 2 * m
local n = 0
for i = 4, #KEYS do
  local id = ARGV[base + 1 + 2 * (i - 4)]
  local data = ARGV[base + 2 + 2 * (i - 4)]
  if redis.call('SADD', KEYS[3], id) == 1 then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', '1000000', '*', 'data', data)
    n = n + 1
  end
end
for j = 1, m do redis.call('HSET', KEYS[2], ARGV[3 + 2 * j], ARGV[4 + 2 * j]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return n
"""


def publish_batch_step(client: Any, batch_id: str, step: int, progress: dict[str, Any],
                       members: dict[str, dict[str, Any]],
                       messages: list[tuple[str, dict[str, Any]]]) -> int:
    """``publish_step`` for a batch of orders: the batch's step on record once (in
    ``STATE_BATCH_PROGRESS``), with each member's progress (``members``: order id -> its
    progress, in ``STATE_PROGRESS``) and every message; returns how many were written."""
    keys = [STATE_BATCH_PROGRESS, STATE_PROGRESS, STATE_SENT]
    args: list[Any] = [batch_id, step, json.dumps(progress), len(members)]
    for parent, prog in members.items():
        args += [parent, json.dumps(prog)]
    for stream, message in messages:
        keys.append(stream)
        args += [message["id"], encode(message)["data"]]
    return int(client.eval(PUBLISH_BATCH_STEP, len(keys), *keys, *args))


def publish_once(client: Any, message: dict[str, Any], done_parent: str | None = None) -> bool:
    """Append ``message`` to ``STREAM_FILLS`` unless its id was written before; with
    ``done_parent``, record the order as done in the same atomic write."""
    keys = [STATE_SENT, STATE_DONE if done_parent else "", STREAM_FILLS]
    return bool(client.eval(PUBLISH_ONCE, len(keys), *keys, message["id"],
                            encode(message)["data"], done_parent or ""))


def connect(url: str) -> Any:
    """A Redis client for ``url`` (``redis://host:port/db``), checked with a ping; a server
    that cannot be reached is a one-line ``ConfigError``."""
    import redis

    from execrl.domain import ConfigError

    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        client.ping()
    except ValueError as exc:
        raise ConfigError(f"--redis {url!r} is not a Redis URL ({exc})") from None
    except redis.RedisError as exc:
        raise ConfigError(f"--redis {url!r}: cannot reach the server ({exc})") from None
    return client


__all__ = [
    "CHAN_ANALYST", "CHAN_EXEC_AGENT", "MARKET_FIELDS", "MESSAGE_KINDS", "STATE_BATCH_PROGRESS",
    "STATE_DONE", "STATE_PROGRESS", "STATE_SENT", "STREAM_FILLS", "STREAM_MARKET",
    "STREAM_ORDERS", "STREAM_RESEARCH", "child_message_id", "connect", "decode", "decode_order",
    "encode", "order_error", "publish_batch_step", "publish_once", "publish_step",
]

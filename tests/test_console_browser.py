"""The web console in a real browser (Debian's chromium through Playwright): the service and
the market feed running on a real Redis, the console served by uvicorn; a trader signs in and
watches orders placed through the stream (and one from the console's ticket) appear on the
tape live, a quant requests a promotion to live, a PM and a risk officer approve it in their
own sessions, the policy goes live, a trader flips it to the fallback. Screenshots go to a
temporary folder and, where ``$EXECRL_SCREENSHOTS`` names one, there too."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from console_world import http, service, staff_desk
from execrl.service.registry import Registry
from execrl.service.streams import STREAM_ORDERS, encode
from redis_server import redis_url  # noqa: F401  (the fixture)
from registry_helpers import cheap_tokens

CHROMIUM = os.environ.get("EXECRL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--lang=en-GB"]

redis = pytest.importorskip("redis")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install -e "
    ".[dev])")


def _order(i: int, start: str) -> dict:
    hh, mm = map(int, start.split(":"))
    return {"order_id": f"B-{i}", "symbol": "DEMO", "side": "sell" if i % 2 else "buy",
            "qty": 40_000 + 5_000 * i, "arrival_px": 50.0, "start_ts": hh * 3600 + mm * 60,
            "horizon_s": 3600}


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (scripts/test.sh installs "
                    "Debian's chromium where apt-get and root are available)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    def __init__(self, folder: Path):
        self.folders = [folder]
        extra = os.environ.get("EXECRL_SCREENSHOTS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            self.folders.append(Path(extra))
        self.saved: list[Path] = []
        self.t0 = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        self.laps.append((name, round(time.monotonic() - self.t0, 1)))

    def __call__(self, page, name: str) -> None:
        self.lap(name)
        data = page.screenshot(full_page=True)
        for folder in self.folders:
            path = folder / f"{len(self.saved) // len(self.folders) + 1:02d}-{name}.png"
            path.write_bytes(data)
            self.saved.append(path)


def _login(browser, base: str, name: str, token: str):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-GB",
                              timezone_id="UTC")
    page = ctx.new_page()
    page.goto(base + "/")
    page.get_by_test_id("login-user").fill(name)
    page.get_by_test_id("login-token").fill(token)
    page.get_by_test_id("login-submit").click()
    page.wait_for_selector(f"[data-testid=whoami][data-user={name}]")
    page.wait_for_selector("[data-testid=live][data-state=on]")
    return ctx, page


def _policy_row(page, digest: str):
    return page.locator(f"[data-testid=policy-row][data-hash='{digest}']")


def test_console_tape_live_two_approvers_and_the_fallback_flag(
        browser, redis_url, tmp_path, monkeypatch):  # noqa: F811
    from execrl.service.api import create_app

    started = time.monotonic()
    cheap_tokens(monkeypatch)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    desk = staff_desk(registry, tmp_path)
    shots = Shots(tmp_path)
    app = create_app(client, registry, block_ms=200)
    with service(client) as server, http(app) as base:
        # a wrong token is refused on the login box, one line
        ctx, page = browser.new_context(viewport={"width": 1600, "height": 1000}), None
        page = ctx.new_page()
        page.goto(base + "/")
        page.get_by_test_id("login-user").fill("tina")
        page.get_by_test_id("login-token").fill("0123456789abcdef.not-a-secret")
        page.get_by_test_id("login-submit").click()
        page.wait_for_selector("[data-testid=login-error]:has-text('token is not valid')")
        ctx.close()

        trader_ctx, trader = _login(browser, base, "tina", desk.tokens["tina"])
        trader.evaluate("window.__no_reload = 1")
        # parent orders through the stream, as the desk's OMS would send them
        for i, start in enumerate(("09:30", "11:00", "14:30"), 1):
            client.xadd(STREAM_ORDERS, encode(_order(i, start)))
        trader.wait_for_selector("[data-testid=tape-row][data-kind=child][data-parent=B-1]",
                                 timeout=20_000)
        # and one from the console's own ticket
        trader.get_by_test_id("ticket-id").fill("TICKET-1")
        trader.get_by_test_id("ticket-start").fill("12:15")
        trader.get_by_test_id("ticket-send").click()
        trader.wait_for_selector("[data-testid=status]:has-text('order TICKET-1 sent')")
        for oid in ("B-1", "B-2", "B-3", "TICKET-1"):
            trader.wait_for_selector(f"[data-testid=tape-row][data-kind=done][data-parent={oid}]",
                                     timeout=20_000)
        assert trader.evaluate("window.__no_reload") == 1  # live, no reload
        kinds = trader.eval_on_selector_all("[data-testid=tape-row]",
                                            "rs => rs.map(r => r.dataset.kind)")
        assert {"order", "child", "fill", "done"} <= set(kinds)
        # the TWAP's action (fraction of what remains) joined from the decision traces
        actions = trader.eval_on_selector_all(
            "[data-testid=tape-row][data-kind=child] [data-testid=tape-action]",
            "cs => cs.map(c => c.textContent)")
        assert actions and all(a for a in actions)
        trader.wait_for_selector("[data-testid=order-row][data-order=TICKET-1]"
                                 "[data-state=done]")
        trader.wait_for_selector("[data-testid=heat-cell] >> nth=3", state="attached")
        trader.wait_for_selector("#latency svg path.line", state="attached")
        trader.wait_for_selector("#drift svg circle", state="attached")
        shots(trader, "trader-tape")

        # the trader may not request or approve: the buttons say so
        row = _policy_row(trader, desk.canary)
        assert row.get_by_test_id("btn-request").is_disabled()

        # a quant requests the promotion to live
        quant_ctx, quant = _login(browser, base, "quinn", desk.tokens["quinn"])
        shots.lap("quant-in")
        _policy_row(quant, desk.canary).get_by_test_id("btn-request").click()
        quant.wait_for_selector(f"[data-testid=policy-row][data-hash='{desk.canary}'] "
                                "[data-testid=policy-request]:has-text('by quinn')")
        quant_ctx.close()
        shots.lap("requested")

        # a PM approves (one of two), and may not approve twice
        pm_ctx, pm = _login(browser, base, "pam", desk.tokens["pam"])
        shots.lap("pm-in")
        pm.get_by_test_id("reason").fill("IS uplift holds in canary")
        _policy_row(pm, desk.canary).get_by_test_id("btn-approve").click()
        pm.wait_for_selector("[data-testid=status]:has-text('approval recorded (1 of 2)')")
        shots.lap("pm-approved")
        assert registry.get(desk.canary).state == "canary"
        _policy_row(pm, desk.canary).get_by_test_id("btn-approve").click()
        pm.wait_for_selector("[data-testid=status]:has-text('approved request')")
        assert "4-eyes" in pm.get_by_test_id("status").inner_text()
        shots(pm, "pm-approved-once")

        # a risk officer approves in a session of her own: live
        risk_ctx, risk = _login(browser, base, "rita", desk.tokens["rita"])
        risk.get_by_test_id("reason").fill("limits reviewed")
        _policy_row(risk, desk.canary).get_by_test_id("btn-approve").click()
        risk.wait_for_selector(f"[data-testid=policy-row][data-hash='{desk.canary}']"
                               "[data-state=live]")
        risk.wait_for_selector("[data-testid=status]:has-text('promoted by pam + rita')")
        assert registry.get(desk.canary).state == "live"
        shots(risk, "risk-officer-live")

        # the trader's console sees it go live (its registry panel refreshes on its own), and
        # the trader flips it to the fallback: runbook step 1
        trader.wait_for_selector(f"[data-testid=policy-row][data-hash='{desk.canary}']"
                                 "[data-state=live]", timeout=10_000)
        _policy_row(trader, desk.canary).get_by_test_id("btn-flag").click()
        trader.wait_for_selector("[data-testid=status]:has-text('field')")  # no reason yet
        trader.get_by_test_id("reason").fill("IS spike on DEMO")
        _policy_row(trader, desk.canary).get_by_test_id("btn-flag").click()
        trader.wait_for_selector(f"[data-testid=policy-row][data-hash='{desk.canary}'] "
                                 "[data-testid=policy-flag]:has-text('FALLBACK')")
        assert registry.fallback_flag(desk.canary)
        # only a PM / risk officer hands the flow back
        assert _policy_row(trader, desk.canary).get_by_test_id("btn-unflag").is_disabled()
        trader.wait_for_selector("[data-testid=event-row][data-action=flag]")
        shots(trader, "trader-flagged")

        # the risk officer sends everything to the fallback at once
        risk.get_by_test_id("reason").fill("drill")
        risk.get_by_test_id("flag-all").click()
        risk.wait_for_selector("[data-testid=flag-all][data-on='1']")
        assert registry.flags().get("*") is True
        shots(risk, "risk-officer-all-fallback")

        actions = [(e["actor"], e["action"]) for e in registry.events(desk.canary)]
        assert ("quinn", "request") in actions and ("pam", "approve") in actions
        assert ("rita", "approve") in actions and ("rita", "promote") in actions
        assert ("tina", "flag") in actions
        for c in (trader_ctx, pm_ctx, risk_ctx):
            c.close()
        assert not getattr(server, "errors", [])
    client.close()
    registry.close()
    assert all(p.stat().st_size > 10_000 for p in shots.saved)
    print(f"console browser test: {time.monotonic() - started:.1f} s (screenshots at "
          f"{shots.laps} s), {len(shots.saved)} files in {', '.join(map(str, shots.folders))}")

"""The dispatcher console in Debian's Chromium against a real `anju cloud run`.

A gateway publishes a wearable's SOS to the broker as wire bytes; the cloud's ingest
and rules open the incident; the page hears of it on its live stream. Each "within
2 s" of the issue is one Playwright wait whose timeout is what is left of 2 s since
the publish (or the click) began, so a slow machine fails it and a fast one does not
wait longer than it takes. Each test has communities of its own, so the module's one
cloud process serves them all without one test seeing another's incidents.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Route, expect

from tests.api_support import bearer
from tests.browser.conftest import CloudProcess, Console, Site

pytestmark = pytest.mark.e2e

BUDGET_MS = 2000.0
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
RECONNECT_MS = 20_000
"""The page retries after 1 s, doubling to at most 10 s: after an outage of a few
seconds its next try may be 10 s away, and then it reloads the queue."""

OpenConsole = Callable[..., Console]
MakeSite = Callable[[str], Site]


def left_ms(started: float) -> float:
    """What is left of the 2 s budget that began at ``started`` (time.monotonic())."""
    return max(1.0, BUDGET_MS - (time.monotonic() - started) * 1000)


def unclaimed(console: Console) -> Locator:
    return console.page.locator("#unclaimed li.incident")


def first_id(entries: Locator) -> int:
    value = entries.first.get_attribute("data-id")
    assert value is not None, "an entry has no data-id"
    return int(value)


def select(console: Console, lst: str, incident: int) -> None:
    """Click the entry and wait for its card."""
    console.entry(lst, incident).click()
    expect(console.page.locator("#card")).to_have_attribute("data-id", str(incident))


def action(console: Console, name: str) -> Locator:
    return console.page.locator(f"#card [data-action='{name}']")


def test_a_gateways_sos_appears_in_the_unclaimed_list_within_2_s(
    make_site: MakeSite, open_console: OpenConsole
) -> None:
    site = make_site("sos")
    console = open_console(site.dispatcher("Wang"))
    entries = unclaimed(console)
    expect(entries).to_have_count(0)
    expect(console.page).to_have_title("Anju")

    started = time.monotonic()
    site.sos()
    expect(entries).to_have_count(1, timeout=left_ms(started))

    entry = entries.first
    expect(entry).to_have_attribute("data-priority", "1")
    expect(entry).to_have_attribute("data-status", "open")
    expect(entry).to_contain_text("P1")
    expect(entry).to_contain_text(site.community)
    expect(console.page.locator("body")).to_have_class(re.compile(r"\bflash\b"))
    expect(console.page).to_have_title("(1) Anju")


def test_a_claim_in_one_browser_leaves_the_others_unclaimed_list_within_2_s(
    make_site: MakeSite, open_console: OpenConsole
) -> None:
    site = make_site("claim")
    wang = open_console(site.dispatcher("Wang"))
    zhao = open_console(site.dispatcher("Zhao"))
    site.sos()
    for console in (wang, zhao):
        expect(unclaimed(console)).to_have_count(1, timeout=5000)
    incident = first_id(unclaimed(wang))
    select(wang, "unclaimed", incident)

    started = time.monotonic()
    action(wang, "claim").click()
    expect(zhao.entry("unclaimed", incident)).to_have_count(0, timeout=left_ms(started))
    expect(wang.entry("mine", incident)).to_be_visible(timeout=left_ms(started))
    expect(wang.entry("unclaimed", incident)).to_have_count(0)
    expect(zhao.entry("mine", incident)).to_have_count(0)
    expect(zhao.page).to_have_title("Anju")


def test_the_loser_of_a_claim_race_is_told_who_took_it(
    make_site: MakeSite, open_console: OpenConsole
) -> None:
    """Zhao clicks claim first, but her request is slow on the network (held by the
    test's route) and Wang's reaches the server before it: her page is told "taken by
    Wang", and the incident is in neither of her lists."""
    site = make_site("race")
    wang = open_console(site.dispatcher("Wang"))
    zhao = open_console(site.dispatcher("Zhao"))
    site.sos()
    for console in (wang, zhao):
        expect(unclaimed(console)).to_have_count(1, timeout=5000)
    incident = first_id(unclaimed(wang))
    select(wang, "unclaimed", incident)
    select(zhao, "unclaimed", incident)
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    zhao.page.context.route(f"**/incidents/{incident}/claim", hold)

    action(zhao, "claim").click()
    for _ in range(200):
        if held:
            break
        zhao.page.wait_for_timeout(10)
    assert held, f"Zhao's page sent no claim request:\n{zhao.report()}"
    action(wang, "claim").click()
    expect(wang.entry("mine", incident)).to_be_visible()
    held[0].continue_()

    expect(zhao.page.locator("#notice")).to_contain_text("taken by Wang", timeout=5000)
    expect(zhao.entry("unclaimed", incident)).to_have_count(0)
    expect(zhao.entry("mine", incident)).to_have_count(0)
    expect(wang.entry("mine", incident)).to_be_visible()


def test_resolve_records_the_outcome_in_the_incident_log(
    make_site: MakeSite, open_console: OpenConsole, cloud: CloudProcess
) -> None:
    site = make_site("resolve")
    key = site.dispatcher("Wang")
    console = open_console(key)
    site.sos()
    expect(unclaimed(console)).to_have_count(1, timeout=5000)
    incident = first_id(unclaimed(console))
    select(console, "unclaimed", incident)
    action(console, "claim").click()
    expect(console.entry("mine", incident)).to_be_visible()
    # Someone must be in contact before an outcome other than a false alarm.
    expect(console.page.locator("#outcome option[value=hospital]")).to_be_disabled()
    expect(console.page.locator("#outcome")).to_have_value("false_alarm")
    action(console, "acknowledge").click()
    expect(console.entry("mine", incident)).to_have_attribute("data-status", "acknowledged")
    expect(action(console, "resolve")).to_be_enabled()

    console.page.locator("#outcome").select_option("hospital")
    action(console, "resolve").click()
    expect(console.entry("mine", incident)).to_have_count(0)
    expect(console.page.locator("#log")).to_contain_text(re.compile("hospital", re.I))

    detail = httpx.get(f"{cloud.url}/incidents/{incident}", headers=bearer(key)).json()
    assert (detail["status"], detail["outcome"]) == ("resolved", "hospital"), detail
    closing = [row for row in detail["log"] if row["to_status"] == "resolved"]
    assert len(closing) == 1, detail["log"]
    assert closing[0]["actor"] == "Wang"
    assert "hospital" in (closing[0]["note"] or ""), closing


def test_a_dispatcher_of_another_community_never_sees_the_incident(
    make_site: MakeSite, open_console: OpenConsole, cloud: CloudProcess
) -> None:
    home, away = make_site("home"), make_site("away")
    wang = open_console(home.dispatcher("Wang"))
    li_key = away.dispatcher("Li")
    li = open_console(li_key)

    home.sos()
    expect(unclaimed(wang)).to_have_count(1, timeout=5000)
    incident = first_id(unclaimed(wang))
    # Li's own community's SOS comes after it through the same ingest: once hers is on
    # her page, Wang's would be too had it leaked.
    away.sos()
    expect(unclaimed(li)).to_have_count(1, timeout=5000)
    assert first_id(unclaimed(li)) != incident
    expect(li.page.locator(f"[data-id='{incident}']")).to_have_count(0)
    expect(li.page).to_have_title("(1) Anju")
    expect(unclaimed(wang)).to_have_count(1)
    response = httpx.get(f"{cloud.url}/incidents/{incident}", headers=bearer(li_key))
    assert response.status_code == 404, response.text


def test_the_page_reconnects_after_a_server_restart_and_shows_what_opened_meanwhile(
    make_site: MakeSite, open_console: OpenConsole, cloud: CloudProcess
) -> None:
    """Two incidents of the outage: one the gateway's SOS, held by the broker for the
    ingest's session until the cloud is back; one written to the database while the
    API is down (as an ingest on another machine would), which only the page's
    catch-up after its reconnection can bring."""
    site = make_site("restart")
    console = open_console(site.dispatcher("Wang"))
    status = console.page.locator("#live-status")
    console.page.evaluate("window.anjuTestNoReload = true")

    assert cloud.stop() == 0, cloud.log_tail()
    expect(status).to_have_attribute("data-state", "reconnecting", timeout=5000)
    other_band = site.band(2)
    site.add_wearable(other_band)
    written = site.open_incident_directly(other_band)
    site.sos()
    cloud.start()

    expect(status).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
    expect(console.entry("unclaimed", written)).to_be_visible(timeout=5000)
    expect(unclaimed(console)).to_have_count(2, timeout=5000)
    assert console.page.evaluate("window.anjuTestNoReload") is True, "the page was reloaded"


def test_keyboard_n_c_a_take_the_next_incident_claim_and_acknowledge(
    make_site: MakeSite, open_console: OpenConsole
) -> None:
    site = make_site("keys")
    console = open_console(site.dispatcher("Wang"))
    site.sos()
    expect(unclaimed(console)).to_have_count(1, timeout=5000)
    incident = first_id(unclaimed(console))
    keyboard = console.page.keyboard

    keyboard.press("n")
    expect(console.page.locator("#card")).to_have_attribute("data-id", str(incident))
    # Typed at once: the `a` waits for the claim's answer instead of being lost.
    keyboard.press("c")
    keyboard.press("a")
    expect(console.entry("mine", incident)).to_have_attribute("data-status", "acknowledged")
    expect(console.page).to_have_title("Anju")


def test_the_language_switch_changes_labels_and_title(
    make_site: MakeSite, open_console: OpenConsole
) -> None:
    site = make_site("lang")
    console = open_console(site.dispatcher("Wang"))
    site.sos()
    expect(unclaimed(console)).to_have_count(1, timeout=5000)
    page = console.page
    status = page.locator("#live-status")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    english = status.inner_text()

    page.locator("#lang").select_option("zh")
    expect(page.locator("html")).to_have_attribute("lang", "zh")
    expect(status).not_to_have_text(english)
    expect(page).to_have_title("(1) 安居调度台")

    page.locator("#lang").select_option("en")
    expect(status).to_have_text(english)
    expect(page).to_have_title("(1) Anju")


def test_a_wrong_key_is_refused_at_sign_in(open_console: OpenConsole) -> None:
    console = open_console()
    console.page.locator("#key").fill("anju_not-a-real-key")
    console.page.locator("#signin-submit").click()
    expect(console.page.locator("#signin-error")).to_be_visible()
    expect(console.page.locator("#signin-error")).not_to_have_text("")


def test_screenshot_of_a_claimed_p1_incident_and_its_card(
    make_site: MakeSite, open_console: OpenConsole
) -> None:
    """tests/artifacts/console-p1.png (and -zh.png): the console as a dispatcher works
    it, with a claimed P1 SOS, the resident, contacts, heart-rate chart and events."""
    site = make_site("shot")
    site.heart_rate(minutes=60)
    other_band = site.band(2)
    site.add_wearable(other_band)
    console = open_console(site.dispatcher("Wang"))
    site.sos()
    expect(unclaimed(console)).to_have_count(1, timeout=5000)
    incident = first_id(unclaimed(console))
    site.sos(other_band)
    expect(unclaimed(console)).to_have_count(2, timeout=5000)
    select(console, "unclaimed", incident)
    action(console, "claim").click()
    expect(console.entry("mine", incident)).to_be_visible()

    page = console.page
    expect(page.locator("#resident")).to_contain_text(site.resident_name)
    expect(page.locator("#contacts")).to_contain_text("Li Ming")
    expect(page.locator("#contacts a[href^='tel:']")).to_have_count(1)
    expect(page.locator("#chart svg")).to_be_visible()
    expect(page.locator("#events")).to_contain_text(re.compile("sos", re.I))
    expect(page.locator("#log")).to_contain_text("Wang")
    ARTIFACTS.mkdir(exist_ok=True)
    # The new-P1 flash lasts about 3 s: the picture is of the card, not of the flash.
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bflash\b"), timeout=6000)
    page.screenshot(path=ARTIFACTS / "console-p1.png")
    page.locator("#lang").select_option("zh")
    expect(page.locator("html")).to_have_attribute("lang", "zh")
    page.screenshot(path=ARTIFACTS / "console-p1-zh.png")
    has_scroll = page.evaluate(
        "document.documentElement.scrollWidth > document.documentElement.clientWidth"
    )
    assert not has_scroll, "the console scrolls sideways at 1366x768"

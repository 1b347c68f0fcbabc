"""The drawing page in a real browser: Playwright drives headless Chromium, draws digits with mouse strokes (and one
with a finger), presses Predict and reads the page. Skipped, with the reason, where no Chromium is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.browser import SMALL_SEVEN_IN_A_CORNER, STROKES, draw, prepared_pixels
from benchmarks.serve_process import ServeProcess


@pytest.fixture(scope="module")
def server(trained_checkpoint: Path):
    with ServeProcess(trained_checkpoint) as running:
        yield running


@pytest.fixture
def page(browser, server: ServeProcess):
    context = browser.new_context(has_touch=True)
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(f"{server.url}/draw")
    yield page
    context.close()


def predict(page) -> dict:
    """Press Predict; returns the server's JSON answer after checking that the page shows the same, one card for
    each network that answered."""
    with page.expect_response("**/predict") as response_info:
        page.click("#predict")
    answer = response_info.value.json()
    page.wait_for_selector("#answer:not([hidden])")
    answers = answer.get("answers", [answer])
    cards = page.locator("#networks .network")
    assert cards.count() == len(answers)
    for i, expected in enumerate(answers):
        card = cards.nth(i)
        assert card.get_attribute("data-network") == expected.get("network")
        assert card.locator(".digit-value").text_content() == str(expected["digit"])
        bars = card.locator(".bars li")
        assert bars.count() == 10
        shown = [float(bars.nth(j).get_attribute("data-probability")) for j in range(10)]
        assert shown == expected["probabilities"]
        assert card.locator(".bars li.best").get_attribute("data-digit") == str(expected["digit"])
    assert page.eval_on_selector("#prepared", "img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
    return answer


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_a_digit_drawn_with_the_mouse_is_predicted(page, server: ServeProcess, digit: int) -> None:
    draw(page, STROKES[digit])
    assert predict(page)["digit"] == digit
    assert all(url.startswith(server.url) for url in page.requests)  # nothing from another site


def test_clear_then_an_off_centre_small_digit_and_the_picture_the_network_saw(page) -> None:
    draw(page, STROKES[1])
    predict(page)
    page.click("#clear")
    assert page.is_hidden("#answer")
    draw(page, SMALL_SEVEN_IN_A_CORNER)
    answer = predict(page)
    assert answer["digit"] == 7
    seen = prepared_pixels(page)  # the ink moved to the middle
    ink = [(i // 28, i % 28) for i, value in enumerate(seen) if value > 127]
    rows, columns = [r for r, _ in ink], [c for _, c in ink]
    assert max(rows) - min(rows) >= 15 and 9 <= sum(rows) / len(rows) <= 18 and 9 <= sum(columns) / len(ink) <= 18


def test_a_digit_drawn_with_a_finger_is_predicted(page) -> None:
    """Touch events through Chromium's DevTools protocol: the page's pointer events see pointerType 'touch'."""
    box = page.locator("#pad").bounding_box()
    devtools = page.context.new_cdp_session(page)
    points = [(box["x"] + 140, box["y"] + y) for y in range(40, 241, 20)]
    devtools.send(
        "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]}
    )
    for x, y in points[1:]:
        devtools.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    devtools.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert predict(page)["digit"] == 1


def test_predict_on_an_empty_pad_asks_for_a_drawing(page) -> None:
    page.click("#predict")
    assert page.text_content("#status") == "Draw a digit first."
    assert page.is_hidden("#answer") and not any(url.endswith("/predict") for url in page.requests)


def test_as_drawn_a_digit_in_a_corner_reaches_every_network_uncentred_and_each_answers(
    browser, trained_checkpoint: Path, trained_conv_checkpoint: Path
) -> None:
    """The dense and the global-pool conv network side by side; with the switch on, the seven stays in its corner for
    both; off, it is centred."""
    with ServeProcess([trained_checkpoint, trained_conv_checkpoint], "--names", "dense", "conv") as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/draw")
        page.check("#as-drawn")
        draw(page, SMALL_SEVEN_IN_A_CORNER)
        answer = predict(page)
        assert [each["network"] for each in answer["answers"]] == ["dense", "conv"]
        assert page.locator(".network h2").all_text_contents() == ["dense", "conv"]
        ink = [(i // 28, i % 28) for i, value in enumerate(prepared_pixels(page)) if value > 127]
        assert ink and max(row for row, _ in ink) < 10 and max(column for _, column in ink) < 10  # the top-left corner
        assert "the ink where you drew it" in page.text_content("#caption")
        with page.expect_response("**/predict"):  # switching back asks again, prepared as MNIST's digits were
            page.uncheck("#as-drawn")
        page.wait_for_function("() => document.getElementById('caption').textContent.includes('centred')")
        ink = [(i // 28, i % 28) for i, value in enumerate(prepared_pixels(page)) if value > 127]
        centre = [sum(row for row, _ in ink) / len(ink), sum(column for _, column in ink) / len(ink)]
        assert all(9 <= mean <= 18 for mean in centre)
        context.close()

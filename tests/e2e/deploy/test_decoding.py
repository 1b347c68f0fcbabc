"""`serve`'s decoder pool on its own: pictures made to cost time or memory, against small budgets, bounded in count.

Each test runs a fresh pool in its own event loop; the decoders are real processes forked from the forkserver.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from fastapi import HTTPException

from benchmarks.hostile import empty_chunk_png, large_png, many_scan_jpeg
from mnist_dense.deploy.decoding import ClientTime, PicturePool
from mnist_dense.deploy.limits import ServiceLimits
from mnist_dense.pictures import prepare_picture


def as_body(picture: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(picture).decode()}).encode()


@pytest.fixture(scope="module")
def large() -> bytes:
    """5000x5000 RGBA: 115 KB of PNG, 100 MB of pixels, about a second to decode here."""
    return as_body(large_png(5000))


@pytest.fixture(scope="module")
def digit(digit_pngs) -> tuple[bytes, bytes]:
    """A real test digit as a request body, and the 784 bytes `predict` would prepare from it."""
    png = base64.b64decode(digit_pngs[0][0])
    return as_body(png), prepare_picture(png).numpy().tobytes()


async def outcome(pool: PicturePool, body: bytes, client: str = "-") -> tuple[int, str, dict]:
    """(200, '', {}) with the digit checked by the caller, or the refusal's (status, detail, headers)."""
    try:
        await pool.prepare(body, client)
    except HTTPException as refusal:
        return refusal.status_code, refusal.detail, refusal.headers or {}
    return 200, "", {}


def run_with_pool(limits: ServiceLimits, scenario) -> object:
    async def main():
        pool = PicturePool(limits)
        await pool.start()
        try:
            return await scenario(pool)
        finally:
            await pool.stop()

    return asyncio.run(main())


def test_a_digit_is_prepared_as_predict_prepares_it_and_bad_bodies_get_their_sentence(digit) -> None:
    body, prepared = digit

    async def scenario(pool: PicturePool):
        return [await pool.prepare(body)] + [
            await outcome(pool, bad) for bad in (b"{", b"[1]", b"{}", json.dumps({"image": "abc!"}).encode())
        ]

    got, *refusals = run_with_pool(ServiceLimits(decoders=2), scenario)
    assert got == prepared
    assert [(status, detail.split(";")[0].split(" (")[0]) for status, detail, _ in refusals] == [
        (400, "the body is not JSON"),
        (400, "the body must be a JSON object"),
        (422, "no 'image' field in the body"),
        (422, "image is not valid base64"),
    ]


def test_a_jpeg_of_thousands_of_scans_is_refused_and_the_decoder_serves_on(digit) -> None:
    body, prepared = digit
    hostile = as_body(many_scan_jpeg(side=5000, scans=12_000))  # tens of seconds for libjpeg

    async def scenario(pool: PicturePool):
        return await outcome(pool, hostile), await pool.prepare(body)

    (status, detail, _), got = run_with_pool(ServiceLimits(decoders=2), scenario)
    assert status == 422 and "more than 100 scans" in detail
    assert got == prepared


def test_a_picture_over_the_time_budget_is_refused_and_its_decoder_replaced(large, digit) -> None:
    body, prepared = digit

    async def scenario(pool: PicturePool):
        first = set(pool.decoders)
        refused = await outcome(pool, large)
        await asyncio.gather(*pool.replacing)  # a fresh decoder takes the ended one's place
        answers = await asyncio.gather(*(pool.prepare(body) for _ in range(3)))
        return refused, answers, len(pool.decoders), len(first & pool.decoders)

    limits = ServiceLimits(decoders=2, decode_time_s=0.05, large_picture_pixels=10**9)
    (status, detail, _), answers, decoders, kept = run_with_pool(limits, scenario)
    assert status == 422 and "took more than 0.05 s, the most a picture may take here" in detail
    assert answers == [prepared] * 3
    assert decoders == 2 and kept == 1


def test_a_picture_over_the_memory_budget_is_refused(large, digit) -> None:
    body, prepared = digit

    async def scenario(pool: PicturePool):
        return await outcome(pool, large), await pool.prepare(body)

    (status, detail, _), got = run_with_pool(ServiceLimits(decoders=2, decode_memory_mb=64), scenario)
    assert status == 422 and "more than the 64 MB of memory a picture may use here" in detail
    assert got == prepared


def test_large_pictures_leave_one_decoder_to_small_ones(large, digit) -> None:
    """Two decoders: one large picture decodes, the second large one gets 503 at once, the digit still goes through."""
    body, prepared = digit

    async def scenario(pool: PicturePool):
        return await asyncio.gather(outcome(pool, large), outcome(pool, large), pool.prepare(body))

    *both, small = run_with_pool(ServiceLimits(decoders=2, decode_time_s=60), scenario)
    decoded, refused = sorted(both)
    assert decoded == (200, "", {})
    assert refused[0] == 503 and "pictures over 2,000,000 pixels are busy" in refused[1]
    assert refused[2] == {"Retry-After": "1"}
    assert small == prepared


def test_when_every_decoder_is_busy_past_the_short_wait_the_answer_is_503_with_retry_after(large, digit) -> None:
    body, prepared = digit

    async def scenario(pool: PicturePool):
        busy = [asyncio.ensure_future(outcome(pool, large)) for _ in range(2)]
        await asyncio.sleep(0.05)
        waiting = await outcome(pool, body)  # nothing free within 0.1 s
        return waiting, await asyncio.gather(*busy), await pool.prepare(body)

    limits = ServiceLimits(decoders=2, large_picture_pixels=10**9, decoder_wait_s=0.1, decode_time_s=60)
    waiting, busy, after = run_with_pool(limits, scenario)
    assert waiting == (503, "every picture decoder is busy; retry in 1 s", {"Retry-After": "1"})
    assert [status for status, _, _ in busy] == [200, 200]
    assert after == prepared


def test_a_small_picture_is_answered_while_a_large_one_decodes(large, digit) -> None:
    """Decoding happens in other processes: the event loop goes on and the small picture finishes first."""
    body, prepared = digit

    async def scenario(pool: PicturePool):
        slow = asyncio.ensure_future(pool.prepare(large))
        await asyncio.sleep(0.05)
        fast = asyncio.ensure_future(pool.prepare(body))
        done, _ = await asyncio.wait({slow, fast}, return_when=asyncio.FIRST_COMPLETED)
        order = [task is fast for task in done]
        await slow
        return order, fast.result()

    order, got = run_with_pool(ServiceLimits(decoders=2, decode_time_s=60), scenario)
    assert order == [True] and got == prepared


def test_decoders_killed_while_idle_are_replaced_before_a_picture_reaches_them(digit) -> None:
    """Killed from outside (the OOM killer, an operator): the next digits still get their 200, never a 4xx."""
    body, prepared = digit

    async def scenario(pool: PicturePool):
        for decoder in pool.idle:
            decoder.process.kill()
            decoder.process.join(5)
        return [await outcome(pool, body) for _ in range(2)], await pool.prepare(body)

    answers, after = run_with_pool(ServiceLimits(decoders=2), scenario)
    assert answers == [(200, "", {})] * 2 and after == prepared


async def kill_busy_decoders(pool: PicturePool, count: int) -> None:
    """Kill up to `count` decoders, each while it holds a picture (for 10 s at most)."""
    deadline, killed = asyncio.get_running_loop().time() + 10, set()
    while count and asyncio.get_running_loop().time() < deadline:
        # A decoder killed a moment ago may still look alive (the kernel has not reaped it yet): never count it twice.
        for decoder in set(pool.decoders) - set(pool.idle) - killed:
            if decoder.process.is_alive():
                decoder.process.kill()
                killed.add(decoder)
                count -= 1
                break
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("deaths", "expected"), [(1, 200), (2, 503)])
def test_a_decoder_that_dies_under_a_picture_costs_a_retry_then_a_503(large, digit, deaths, expected) -> None:
    """The server's fault, not the picture's: tried once more on another decoder, then 503 with Retry-After."""
    body, prepared = digit

    async def scenario(pool: PicturePool):
        answer, _ = await asyncio.gather(outcome(pool, large), kill_busy_decoders(pool, deaths))
        await asyncio.gather(*pool.replacing)
        return answer, await pool.prepare(body), len(pool.decoders)

    limits = ServiceLimits(decoders=2, decode_time_s=60, large_picture_pixels=10**9)
    (status, detail, headers), after, decoders = run_with_pool(limits, scenario)
    assert status == expected, detail
    if expected == 503:
        assert detail == (
            "the picture decoder stopped twice while preparing this picture (a fault of the server's, not of the"
            " picture); retry in 1 s"
        )
        assert headers == {"Retry-After": "1"}
    assert after == prepared and decoders == 2


def test_client_time_counts_what_a_picture_holds_beyond_its_free_part_and_forgets_it_steadily() -> None:
    now = [100.0]
    limits = ServiceLimits(client_decode_free_s=0.25, client_decode_forget=0.05)
    counted = ClientTime(limits, clock=lambda: now[0])
    for _ in range(1000):  # a thousand digits of 10 ms: nothing counts
        counted.charge("10.0.0.1", 0.01)
    counted.charge("10.0.0.2", 2.25)
    assert counted.seconds("10.0.0.1") == 0 and counted.seconds("10.0.0.2") == pytest.approx(2.0)
    now[0] += 20  # 20 s at 0.05 s a second: one second forgotten
    assert counted.seconds("10.0.0.2") == pytest.approx(1.0)
    counted.charge("10.0.0.2", 1.25)
    assert counted.seconds("10.0.0.2") == pytest.approx(2.0)
    now[0] += 100
    assert counted.seconds("10.0.0.2") == 0


def test_addresses_whose_pictures_took_seconds_share_all_decoders_but_one_one_picture_each(digit) -> None:
    """Two addresses have each had a slow picture; then one of them sends two and the other one, with a digit from a
    third address: one slow picture decodes, the other two get 503 at once, and the digit has the other decoder."""
    body, prepared = digit
    slow = as_body(empty_chunk_png(200_000))  # 28x28, 2.4 MB of empty chunks: about half a second here

    async def scenario(pool: PicturePool):
        first = await asyncio.gather(outcome(pool, slow, "10.0.0.1"), outcome(pool, slow, "10.0.0.2"))
        second = await asyncio.gather(
            outcome(pool, slow, "10.0.0.1"), outcome(pool, slow, "10.0.0.1"), outcome(pool, slow, "10.0.0.2"),
            pool.prepare(body, "10.0.0.3"),
        )  # fmt: skip
        return first, second

    limits = ServiceLimits(
        decoders=2, client_decode_free_s=0, client_decode_heavy_s=0.1, decoder_wait_s=0.1, large_body_bytes=10**9
    )  # the per-address count alone: these bodies are not large by bytes here
    first, (decoded, *refused, digit_answer) = run_with_pool(limits, scenario)
    assert [status for status, _, _ in first] == [200, 200]
    assert decoded == (200, "", {}) and digit_answer == prepared
    for status, detail, headers in refused:
        assert status == 503 and headers == {"Retry-After": "1"}
        assert detail.startswith("pictures from your address took ") and "retry in 1 s" in detail


def test_bodies_large_in_bytes_share_all_decoders_but_one_from_their_first_picture(digit) -> None:
    """Two fresh addresses send a slow picture of 2.4 MB each, with a digit from a third: nothing is counted yet, but
    one large body decodes, the other gets 503 at once, and the digit has the other decoder."""
    body, prepared = digit
    slow = as_body(empty_chunk_png(200_000))

    async def scenario(pool: PicturePool):
        return await asyncio.gather(
            outcome(pool, slow, "10.0.0.1"), outcome(pool, slow, "10.0.0.2"), pool.prepare(body, "10.0.0.3")
        )

    limits = ServiceLimits(decoders=2, large_body_bytes=1_000_000, decoder_wait_s=0.1)
    *slow_answers, digit_answer = run_with_pool(limits, scenario)
    assert digit_answer == prepared
    assert sorted(status for status, _, _ in slow_answers) == [200, 503]
    ((_, detail, headers),) = [answer for answer in slow_answers if answer[0] == 503]
    assert headers == {"Retry-After": "1"} and detail.startswith("the decoders for requests over 1,000,000 bytes")

"""`serve`'s HTTP API in-process, as LitServe's own tests run a server: its app under starlette's TestClient.

Real test digits go in as PNG; each bad request gets its own test, a 4xx JSON error naming the problem, and
the server answers the next good request.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from litserve.utils import wrap_litserve_start
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from mnist_dense.commands import main
from mnist_dense.deploy.digit_api import build_server
from mnist_dense.deploy.limits import LIMITS
from mnist_dense.pictures import prepare_picture
from tests.conftest import BUNDLED_DATA, REPO


@pytest.fixture(scope="module")
def client(trained_checkpoint: Path):
    server = build_server(trained_checkpoint, max_batch_size=8, batch_timeout=0.005)
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        wait_until_healthy(client)
        yield client


def wait_until_healthy(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while client.get("/health").status_code != 200:  # 503 until the worker has loaded the model
        assert time.monotonic() < deadline, "the inference worker did not start"
        time.sleep(0.2)


def encoded(picture: Image.Image, fmt: str = "PNG", **options) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def refused(client: TestClient, status: int, message: str, **request) -> None:
    """The request gets `status` with a JSON detail containing `message`, and the server still predicts."""
    response = client.post("/predict", **request)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert len(response.text) < 1000  # the error never echoes what was sent
    seven = Image.new("L", (28, 28))
    seven.paste(255, (6, 6, 22, 9))
    seven.paste(255, (18, 9, 21, 23))
    assert client.post("/predict", json={"image": encoded(seven)}).status_code == 200


def test_health_answers_200_once_the_model_is_loaded(client: TestClient) -> None:
    assert client.get("/health").status_code == 200


def test_real_test_digits_as_png_get_the_answers_of_predict(
    client: TestClient, digit_pngs, trained_checkpoint: Path, tmp_path: Path
) -> None:
    """The same preparation as `predict --data.predict_images`: the same digit and probability for each file."""
    folder = tmp_path / "digits"
    folder.mkdir()
    answers = {}
    for i, (png, _) in enumerate(digit_pngs):
        (folder / f"{i:02d}.png").write_bytes(base64.b64decode(png))
        response = client.post("/predict", json={"image": png})
        assert response.status_code == 200
        answers[f"{i:02d}.png"] = body = response.json()
        assert set(body) == {"digit", "probability", "probabilities", "score", "not_a_digit", "prepared"}
        assert body["not_a_digit"] is None and body["score"] < 0  # not calibrated: the score, and no decision
        assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
        assert body["digit"] == max(range(10), key=body["probabilities"].__getitem__)
        assert body["probability"] == max(body["probabilities"])
    assert sum(answers[f"{i:02d}.png"]["digit"] == label for i, (_, label) in enumerate(digit_pngs)) >= 30
    main(["predict", "--ckpt_path", str(trained_checkpoint), "--data.predict_images", str(folder),
          "--data.data_dir", str(BUNDLED_DATA), "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    with open(next((tmp_path / "run").glob("version_*/predictions.csv"))) as f:
        for row in csv.DictReader(f):
            served = answers[Path(row["image"]).name]
            assert int(row["predicted"]) == served["digit"]
            assert float(row["probability"]) == pytest.approx(served["probability"], abs=2e-6)  # both print 6 decimals


def test_without_batching_the_answers_are_the_same(client: TestClient, digit_pngs, trained_checkpoint: Path) -> None:
    """`--max_batch_size 1`: LitServe hands `predict` one digit instead of a stacked batch."""
    batched = [client.post("/predict", json={"image": png}).json() for png, _ in digit_pngs[:5]]
    server = build_server(trained_checkpoint, max_batch_size=1)
    with wrap_litserve_start(server) as started, TestClient(started.app) as single:
        wait_until_healthy(single)
        for (png, _), expected in zip(digit_pngs[:5], batched, strict=True):
            answer = single.post("/predict", json={"image": png}).json()
            assert answer["digit"] == expected["digit"] and answer["prepared"] == expected["prepared"]
            assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_the_answer_shows_the_28x28_picture_the_network_saw(client: TestClient, digit_pngs) -> None:
    png, _ = digit_pngs[0]
    prepared = client.post("/predict", json={"image": png}).json()["prepared"]
    assert prepared.startswith("data:image/png;base64,")
    seen = Image.open(io.BytesIO(base64.b64decode(prepared.split(",", 1)[1])))
    assert seen.size == (28, 28)
    assert list(seen.getdata()) == prepare_picture(base64.b64decode(png)).flatten().tolist()


@pytest.mark.parametrize(
    ("fmt", "options", "transparent"),
    [("JPEG", {"quality": 95}, False), ("GIF", {}, False), ("WEBP", {"lossless": True}, False), ("PNG", {}, True)],
)
def test_jpeg_gif_webp_and_a_transparent_canvas_png_as_data_urls(
    client: TestClient, digit_pngs, fmt: str, options: dict, transparent: bool
) -> None:
    png, _ = digit_pngs[0]
    digit = Image.open(io.BytesIO(base64.b64decode(png))).resize((140, 140))
    if transparent:  # what canvas.toDataURL() sends: black ink, the digit only in the alpha channel
        picture = Image.new("RGBA", digit.size, (0, 0, 0, 0))
        picture.putalpha(digit)
    else:  # dark ink on white paper
        picture = Image.eval(digit, lambda value: 255 - value).convert("RGB")
    url = f"data:image/{fmt.lower()};base64,{encoded(picture, fmt, **options)}"
    answer, reference = client.post("/predict", json={"image": url}), client.post("/predict", json={"image": png})
    assert answer.status_code == 200 and answer.json()["digit"] == reference.json()["digit"]


def test_a_body_that_is_not_json_is_refused(client: TestClient) -> None:
    refused(client, 400, "the body is not JSON", content=b"image=seven", headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("opening", [b"[", b'{"image":'], ids=["arrays", "objects"])
def test_json_nested_100000_levels_deep_is_refused_as_not_json(client: TestClient, opening: bytes) -> None:
    """Python's parser gives up with a RecursionError: a 400 with its sentence, never a 500 and a traceback."""
    closing = b"]" if opening == b"[" else b"}"
    body = opening * 100_000 + b"0" + closing * 100_000
    refused(client, 400, "the body is not JSON", content=body, headers={"Content-Type": "application/json"})


def test_a_json_body_that_is_not_an_object_is_refused(client: TestClient) -> None:
    refused(client, 400, "must be a JSON object", json=["an", "array"])


def test_a_body_without_image_is_refused(client: TestClient) -> None:
    refused(client, 422, "no 'image' field", json={"picture": "iVBORw0KGgo="})


def test_an_image_that_is_not_a_string_is_refused(client: TestClient) -> None:
    refused(client, 422, "image must be a string", json={"image": [0, 255, 0]})


def test_an_image_that_is_not_base64_is_refused(client: TestClient) -> None:
    refused(client, 422, "not valid base64", json={"image": "this is not base64!"})


def test_base64_that_is_not_a_picture_is_refused(client: TestClient) -> None:
    refused(client, 422, "not a readable image", json={"image": base64.b64encode(b"seven, I think").decode()})


def test_a_data_url_that_is_not_base64_is_refused(client: TestClient) -> None:
    refused(client, 422, "not base64", json={"image": "data:image/svg+xml,<svg></svg>"})


def test_a_blank_picture_is_refused(client: TestClient) -> None:
    refused(client, 422, "no ink found", json={"image": encoded(Image.new("RGBA", (280, 280), (0, 0, 0, 0)))})


def test_a_picture_whose_ink_vanishes_when_scaled_is_refused_not_an_error(client: TestClient) -> None:
    """Two black pixels far apart on a large white page: nothing is left of them at 20x20 (no division by zero)."""
    page = Image.new("L", (1024, 1024), 255)
    page.putpixel((3, 3), 0)
    page.putpixel((1020, 1020), 0)
    refused(client, 422, "no ink is left when the 1018x1018 pixels the ink spans", json={"image": encoded(page)})


def test_the_body_limit_is_exactly_the_one_the_docs_give(client: TestClient) -> None:
    """docs/serving.md gives the limit; a body of exactly that many bytes passes the size check, one more not."""
    figure = re.search(r"the body is over ([\d,]+) bytes", (REPO / "docs" / "serving.md").read_text())
    limit = int(figure.group(1).replace(",", ""))
    assert limit == LIMITS.max_body_bytes
    not_a_picture = json.dumps({"image": "QUFB" * 1000}).encode()
    at_limit = not_a_picture + b" " * (limit - len(not_a_picture))  # JSON allows the trailing spaces
    assert len(at_limit) == limit
    refused(client, 422, "not a readable image", content=at_limit)  # read, parsed and looked at
    refused(client, 413, f"the body is over {limit:,} bytes; send a smaller picture", content=at_limit + b" ")


def test_a_12_megapixel_phone_photo_of_a_digit_is_predicted(client: TestClient, mnist_test) -> None:
    """A 4000x3000 JPEG with sensor noise, a few MB of base64 (refused by the 1 MB limit before), and its EXIF."""
    images, labels = mnist_test
    seven = client.post("/predict", json={"image": encoded(Image.fromarray(images[0].numpy()))}).json()["digit"]
    assert seven == labels[0] == 7
    ink = Image.fromarray(255 - images[0].numpy()).resize((2000, 2000), Image.Resampling.BICUBIC)
    paper = Image.new("L", (4000, 3000), 235)
    paper.paste(ink.point(lambda value: value * 235 // 255), (1200, 400))
    noise = torch.randint(-12, 13, (3000, 4000), generator=torch.Generator().manual_seed(0), dtype=torch.int16)
    photo = Image.fromarray((pil_to_tensor(paper)[0].short() + noise).clamp(0, 255).byte().numpy())
    body = json.dumps({"image": encoded(photo.convert("RGB"), "JPEG", quality=92)}).encode()
    assert 1_000_000 < len(body) < LIMITS.max_body_bytes
    answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["digit"] == 7


def test_only_the_services_own_routes_are_served(client: TestClient) -> None:
    """No Swagger UI (it loads from a CDN), no ReDoc, no schema, no LitServe /info; / leads to the page."""
    for path in ("/docs", "/redoc", "/openapi.json", "/info", "/docs/oauth2-redirect", "/shutdown"):
        assert client.get(path).status_code == 404, path
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/draw"  # relative: nothing from Host
    forged = client.get("/draw/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert forged.status_code == 404 and "location" not in forged.headers
    for response in (client.get("/health"), client.post("/predict", content=b"{"), client.get("/draw")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src" in response.headers["content-security-policy"]


def test_a_decompression_bomb_is_refused(client: TestClient) -> None:
    bomb = encoded(Image.new("1", (20_000, 20_000)))  # 400 million pixels in about 65 KB of base64
    refused(client, 422, "pixels, more than", json={"image": bomb})


def test_a_request_cannot_make_the_server_read_a_file(
    client: TestClient, digit_pngs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`abcd` is valid base64 and a file name here holding a real digit: the server decodes it, never opens it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "abcd").write_bytes(base64.b64decode(digit_pngs[0][0]))
    refused(client, 422, "not a readable image", json={"image": "abcd"})
    refused(client, 422, "not valid base64", json={"image": str(tmp_path / "abcd")})
    refused(client, 422, "not valid base64", json={"image": (tmp_path / "abcd").as_uri()})


def test_the_page_and_its_files_are_served_with_a_same_origin_policy(client: TestClient) -> None:
    page = client.get("/draw")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<canvas id="pad"' in page.text
    linked = re.findall(r'(?:src|href|content)="([^"]*)"', page.text)
    assert linked and not [url for url in linked if "//" in url]  # nothing from another site
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/draw/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "http://" not in response.text and "https://" not in response.text
    for path in ("/draw/../../pyproject.toml", "/draw/index.html", "/draw/%2e%2e/pyproject.toml"):
        assert client.get(path).status_code == 404


@pytest.fixture(scope="module")
def two_networks(trained_checkpoint: Path, trained_conv_checkpoint: Path):
    server = build_server([trained_checkpoint, trained_conv_checkpoint], ["dense", "conv"], max_batch_size=8)
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        wait_until_healthy(client)
        yield client


def test_several_networks_answer_side_by_side_each_under_its_name(
    client: TestClient, two_networks: TestClient, digit_pngs
) -> None:
    for png, _ in digit_pngs[:5]:
        alone = client.post("/predict", json={"image": png}).json()
        both = two_networks.post("/predict", json={"image": png}).json()
        assert set(both) == {"answers", "prepared"} and both["prepared"] == alone["prepared"]
        assert [answer["network"] for answer in both["answers"]] == ["dense", "conv"]
        first, second = both["answers"]
        assert first["digit"] == alone["digit"]  # the first checkpoint is the one `client` serves alone
        assert first["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)
        assert second["probabilities"] != pytest.approx(first["probabilities"], abs=1e-3)  # another network
        for answer in both["answers"]:
            assert set(answer) == {"network", "digit", "probability", "probabilities", "score", "not_a_digit"}
            assert answer["digit"] == max(range(10), key=answer["probabilities"].__getitem__)


def test_as_drawn_the_networks_see_the_drawing_where_it_lies_on_the_pad(two_networks: TestClient, mnist_test) -> None:
    """What the page sends: black ink on a transparent 280x280 canvas, here a small seven in the top-left corner."""
    alpha = torch.zeros(280, 280, dtype=torch.uint8)
    alpha[5:61, 5:61] = mnist_test[0][0].repeat_interleave(2, 0).repeat_interleave(2, 1)
    pad = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    pad.putalpha(Image.fromarray(alpha.numpy()))
    drawing = f"data:image/png;base64,{encoded(pad)}"
    centres = {}
    for as_drawn in (True, False):
        answer = two_networks.post("/predict", json={"image": drawing, "as_drawn": as_drawn}).json()
        assert len(answer["answers"]) == 2
        seen = Image.open(io.BytesIO(base64.b64decode(answer["prepared"].split(",", 1)[1])))
        centres[as_drawn] = pil_to_tensor(seen)[0].nonzero().float().mean(dim=0).tolist()
    assert max(centres[True]) < 7 and all(11 < mean < 17 for mean in centres[False])
    bad = {"image": drawing, "as_drawn": "yes"}
    refused(two_networks, 422, "as_drawn must be true or false, not a string", json=bad)

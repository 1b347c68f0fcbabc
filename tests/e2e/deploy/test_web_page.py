"""The page without a server: `export --format web` writes the drawing page as a static folder, `python -m
http.server` serves it, and headless Chromium draws, prepares and predicts in the page; Python and the browser must
agree pixel for pixel on the preparation and digit for digit on the 10,000 test images."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.browser import (
    MORE_DRAWINGS,
    SCORE_IN_PAGE,
    STROKES,
    draw,
    draw_and_predict,
    open_static_page,
    pad_png,
    prepared_pixels,
    static_server,
)
from mnist_dense import calibration
from mnist_dense.deploy import export, web
from mnist_dense.deploy.inference import load_inference_model
from mnist_dense.pictures import prepare_picture

NAMES = ["dense", "conv"]


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory, trained_checkpoint: Path, trained_conv_checkpoint: Path):
    if shutil.which("npm") is None:
        reason = "no npm: `apt-get install npm` (Debian) lets export --format web fetch onnxruntime-web; .ci/run does"
        if os.environ.get("MNIST_DENSE_REQUIRE_BROWSER"):  # set by .ci/run: CI must build and test the page
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("web") / "page"
    args = ["--ckpt_path", str(trained_checkpoint), str(trained_conv_checkpoint), "--format", "web"]
    export.main([*args, "--names", *NAMES, "--output", str(folder)])
    return folder


@pytest.fixture(scope="module")
def site(page_folder: Path):
    with static_server(page_folder) as url:
        yield url


@pytest.fixture(scope="module")
def models(trained_checkpoint: Path, trained_conv_checkpoint: Path):
    return [load_inference_model(path) for path in (trained_checkpoint, trained_conv_checkpoint)]


def test_the_folder_holds_serves_own_page_the_checked_networks_and_the_runtime(page_folder: Path) -> None:
    """One source: the page's script and style are serve's files byte for byte, its HTML differs only in its head."""
    files = sorted(str(path.relative_to(page_folder)) for path in page_folder.rglob("*") if path.is_file())
    expected = [".nojekyll", "draw/app.js", "draw/networks.js", "draw/ort/ort-wasm-simd-threaded.wasm",
                "draw/ort/ort.wasm.bundle.min.mjs", "draw/ort/package.json", "draw/prepare.js", "draw/style.css",
                "index.html", "networks.json", "networks/conv.onnx", "networks/dense.onnx"]  # fmt: skip
    assert files == expected
    for name in web.PAGE_SCRIPTS:
        assert (page_folder / "draw" / name).read_bytes() == (web.PAGE_SOURCE / name).read_bytes()
    source = (web.PAGE_SOURCE / "index.html").read_text().split(web.HEAD_MARK)
    html = (page_folder / "index.html").read_text()
    assert html.startswith(source[0]) and html.endswith(source[1]) and "Content-Security-Policy" in html
    manifest = json.loads((page_folder / "networks.json").read_text())
    assert manifest["networks"] == [{"name": n, "file": f"networks/{n}.onnx", "threshold": None} for n in NAMES]
    package = json.loads((page_folder / "draw/ort/package.json").read_text())
    assert [package["name"], package["version"]] == list(web.ORT_WEB) and manifest["runtime"] == "@".join(web.ORT_WEB)
    assert not list(page_folder.parent.glob(".*"))  # no partial or old folder left beside it


def test_drawings_are_prepared_and_answered_in_the_page_as_python_does(browser, site: str, models) -> None:
    """Each drawing, prepared in the page, gives Python's 28x28 pixels from the same pad, at most 1 grey level apart
    (float32 sums in another order can land on the other side of a half) and nearly all equal; each network's
    probabilities are PyTorch's on Python's pixels; after the page has loaded, nothing is requested at all."""
    page, requests, _ = open_static_page(browser, site)
    loaded = len(requests)
    assert all(url.startswith(site) for url in requests)
    drawings = [(strokes, False) for strokes in STROKES.values()] + [(each, True) for each in MORE_DRAWINGS[:3]]
    drawings += [(each, False) for each in MORE_DRAWINGS]
    differing = 0
    for strokes, as_drawn in drawings:
        draw_and_predict(page, strokes, as_drawn, steps=2)
        expected = prepare_picture(pad_png(page), as_drawn=as_drawn)
        seen = torch.tensor(prepared_pixels(page), dtype=torch.uint8).reshape(28, 28)
        apart = (seen.int() - expected.int()).abs()
        assert int(apart.max()) <= 1
        differing += int((apart > 0).sum())
        cards = page.eval_on_selector_all(
            "#networks .network",
            """cards => cards.map(card => [card.querySelector('.digit-value').textContent,
                Array.from(card.querySelectorAll('.bars li'), bar => Number(bar.dataset.probability))])""",
        )
        assert len(cards) == len(NAMES)
        for (digit, shown), model in zip(cards, models, strict=True):
            probabilities = model(seen[None, None].float())[0].detach()
            assert (torch.tensor(shown) - probabilities).abs().max() < 1e-5 + 5e-7  # rounded to 6 places, as serve does
            assert digit == str(int(probabilities.argmax()))
    assert differing <= len(drawings) * 784 // 1000  # at most 0.1% of the pixels
    assert len(requests) == loaded  # drawing and predicting asked nothing of anyone
    page.close()


def test_the_browser_and_onnxruntime_agree_on_every_test_digit(browser, site: str, page_folder: Path, mnist_test):
    """The 10,000 test digits through the page's own networks in Chromium and through onnxruntime in Python."""
    onnxruntime = pytest.importorskip("onnxruntime")
    images, _ = mnist_test
    page, _, _ = open_static_page(browser, site)
    encoded = base64.b64encode(images.numpy().tobytes()).decode()
    outputs = page.evaluate(SCORE_IN_PAGE, encoded)
    page.close()
    for name, output in zip(NAMES, outputs, strict=True):
        in_browser = np.frombuffer(base64.b64decode(output), dtype=np.float32).reshape(-1, 10)
        session = onnxruntime.InferenceSession(str(page_folder / "networks" / f"{name}.onnx"))
        in_python = session.run(["probabilities"], {"images": images[:, None].float().numpy()})[0]
        assert in_browser.shape == (10_000, 10)
        assert (in_browser.argmax(axis=1) == in_python.argmax(axis=1)).all()
        assert np.abs(in_browser - in_python).max() <= 1e-5


def test_opened_as_a_file_the_page_says_to_open_it_through_a_web_server(browser, page_folder: Path) -> None:
    page = browser.new_page()
    page.goto((page_folder / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.is_visible("#no-script") and "python -m http.server" in page.text_content("#no-script")
    page.close()


def test_an_empty_pad_is_refused_in_words_and_a_single_dot_as_drawn_is_answered(browser, site: str) -> None:
    page, _, _ = open_static_page(browser, site)
    page.click("#predict")
    assert page.text_content("#status") == "Draw a digit first."
    page.check("#as-drawn")
    draw(page, [[(140, 140), (141, 140)]])  # one dot, as drawn: 280 pixels scaled to 28 keep its ink
    page.click("#predict")
    page.wait_for_selector("#answer:not([hidden])")
    assert page.text_content("#status") == ""
    page.close()


def test_a_page_is_built_offline_from_npms_cache_and_replaces_only_its_own_folder(
    tmp_path: Path, page_folder: Path, trained_checkpoint: Path, capsys, monkeypatch
) -> None:
    """With npm offline (its cache holds the package, as after the fixture's build) a page builds, and a second build
    replaces it whole; a folder that is not a page is refused and left as it was."""
    monkeypatch.setenv("npm_config_offline", "true")
    target = tmp_path / "page"
    for _ in range(2):
        export.main(["--ckpt_path", str(trained_checkpoint), "--format", "web", "--output", str(target)])
    manifest = json.loads((target / "networks.json").read_text())
    name = trained_checkpoint.stem
    assert manifest["networks"] == [{"name": name, "file": f"networks/{name}.onnx", "threshold": None}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page"]  # the earlier page and the partial one are gone
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit) as stopped:
        export.main(["--ckpt_path", str(trained_checkpoint), "--format", "web", "--output", str(mine)])
    assert stopped.value.code == 1 and "is not a page folder" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_without_npm_the_build_says_what_to_install_and_writes_nothing(
    tmp_path: Path, trained_checkpoint: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(SystemExit) as stopped:
        export.main(["--ckpt_path", str(trained_checkpoint), "--format", "web", "--output", str(tmp_path / "p")])
    error = capsys.readouterr().err
    assert stopped.value.code == 1 and "apt-get install npm" in error and len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_one_file_formats_refuse_several_checkpoints(trained_checkpoint: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        export.main(["--ckpt_path", str(trained_checkpoint), str(trained_checkpoint), "--format", "onnx"])
    assert stopped.value.code == 1 and "--format web" in capsys.readouterr().err


def test_with_a_threshold_the_page_says_not_a_digit_where_python_would(
    browser, tmp_path: Path, trained_checkpoint: Path, capsys
) -> None:
    """A calibrated checkpoint's threshold travels into the page; its threshold is then set between the scores of
    two drawings, so the page must call one of them a digit and the other not, in words, as Python decides."""
    calibrated = tmp_path / "calibrated.ckpt"
    calibration.main(["--ckpt_path", str(trained_checkpoint), "--output", str(calibrated)])
    model = load_inference_model(calibrated)
    drawings = [STROKES[1], MORE_DRAWINGS[3]]  # a one and a cross over the whole pad
    folder = tmp_path / "page"
    export.main(["--ckpt_path", str(calibrated), "--format", "web", "--output", str(folder)])
    scores = []
    with static_server(folder) as url:
        page, _, _ = open_static_page(browser, url)
        for strokes in drawings:
            page.click("#clear")
            draw(page, strokes, steps=2)
            scores.append(float(model.answer(prepare_picture(pad_png(page))[None, None].float())[1]))
        page.close()
    checkpoint = torch.load(calibrated, weights_only=True)
    checkpoint["calibration"]["not_a_digit"]["threshold"] = sum(scores) / 2
    torch.save(checkpoint, calibrated)
    export.main(["--ckpt_path", str(calibrated), "--format", "web", "--output", str(folder)])
    assert json.loads((folder / "networks.json").read_text())["networks"][0]["threshold"] == sum(scores) / 2
    with static_server(folder) as url:
        page, _, _ = open_static_page(browser, url)
        for strokes, score in zip(drawings, scores, strict=True):
            draw_and_predict(page, strokes, steps=2)
            words = page.text_content("#networks .digit")
            assert words.startswith("Not a digit" if score > sum(scores) / 2 else "It is a"), (score, words)
        page.close()

"""`hftransfer demo`: the Gradio app (driven over HTTP with gradio_client, and in a real browser when one is
installed) and the Space writer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError

from helpers import free_port, text_csv, tiny_config


pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def text_run(tiny_models, tmp_path_factory) -> Path:
    """A tiny BERT trained for one epoch on a labelled CSV: a model folder with a card and a config.yaml."""
    tmp = tmp_path_factory.mktemp("demo_run")
    config = tiny_config(tmp, epochs=1, **{"model.name": tiny_models["transformers_bert"], "model.image_size": None,
                                           "data.source": str(text_csv(tmp)), "data.max_train_samples": None,
                                           "data.max_eval_samples": None})
    return Path(hftransfer.train(config).model_dir)


def test_app_shows_the_card_summary_and_training_examples(text_run):
    from hftransfer.demo.app import build_app

    app = build_app(str(text_run), top_k=2)
    assert "**Base model**" in app.article and "`full`" in app.article and "accuracy (validation)" in app.article
    assert app.examples and all("the movie was very" in row[0] for row in app.examples)
    with pytest.raises(ConfigurationError, match="top_k=0 must be a positive integer"):
        build_app(str(text_run), top_k=0)


def test_app_runs_an_onnx_export_with_onnxruntime(text_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from hftransfer.demo.app import build_app

    hftransfer.export(text_run, tmp_path / "onnx", num_samples=8)
    app = build_app(str(tmp_path / "onnx"), top_k=2)
    assert "**runtime**: onnxruntime" in app.article and "`full`" in app.article


def test_write_space_for_a_hub_id_and_a_folder(text_run, tmp_path):
    from hftransfer.demo.space import write_space

    hub = write_space("me/reviews", tmp_path / "hub-space")
    readme = (hub / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "models:\n- me/reviews\n" in readme
    assert "build_app('me/reviews', top_k=3)" in (hub / "app.py").read_text()
    compile((hub / "app.py").read_text(), "app.py", "exec")
    assert (hub / "requirements.txt").read_text().startswith("hftransfer[demo]==")
    local = write_space(str(text_run), tmp_path / "local-space")
    assert (local / "model" / "hftransfer_config.json").is_file()
    assert "models:" not in (local / "README.md").read_text()
    with pytest.raises(ConfigurationError, match="neither a folder nor a hub repo id"):
        write_space("no-such-model", tmp_path / "bad")
    from hftransfer.cli import main

    assert main(["demo", "me/reviews", "--write-space", str(tmp_path / "cli-space"), "--top-k", "2"]) == 0
    assert "build_app('me/reviews', top_k=2)" in (tmp_path / "cli-space" / "app.py").read_text()


@pytest.mark.integration
def test_app_answers_over_http_like_the_model(text_run):
    from gradio_client import Client

    app = hftransfer.demo(str(text_run), port=int(free_port()), block=False, top_k=2)
    try:
        assert app.local_url.startswith("http://127.0.0.1:")  # localhost only by default
        result = Client(app.local_url, verbose=False).predict("the movie was very good", api_name="/predict")
    finally:
        app.close()
    expected = AutoTransfer.from_pretrained(text_run).predict(["the movie was very good"], top_k=2)[0]
    assert result["label"] == expected[0]["label"]
    assert [c["label"] for c in result["confidences"]] == [p["label"] for p in expected]
    assert result["confidences"][0]["confidence"] == pytest.approx(expected[0]["score"], abs=1e-5)


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


# The screenshot on docs/how-to/export-demo.md: HFTRANSFER_UPDATE_SCREENSHOT=1 makes the browser test write it.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "assets" / "demo.png"
SCREENSHOT_SIZE = (1000, 700)


@pytest.mark.integration
def test_app_in_a_real_browser(text_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                     "playwright; the system Chromium is used)")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); the browser test needs one")
    app = hftransfer.demo(str(text_run), port=int(free_port()), block=False, top_k=2)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True)
            page = browser.new_page(viewport={"width": SCREENSHOT_SIZE[0], "height": SCREENSHOT_SIZE[1]})
            page.goto(app.local_url)
            page.get_by_label("text").fill("the movie was very good")
            page.get_by_role("button", name="Submit").click()
            label = page.get_by_test_id("label-output-value")
            label.wait_for(timeout=30_000)
            shown = label.inner_text().strip()
            # Gradio fades an output while its request runs (.pending/.generating/.translucent): wait until it is done.
            page.wait_for_function("() => !document.querySelector('.pending, .generating, .translucent')",
                                   timeout=30_000)
            page.screenshot(path=str(tmp_path / "demo.png"))  # the viewport, once the labels are shown
            browser.close()
    finally:
        app.close()
    expected = AutoTransfer.from_pretrained(text_run).predict(["the movie was very good"])[0][0]["label"]
    assert shown == expected
    _check_screenshot(tmp_path / "demo.png")
    if os.environ.get("HFTRANSFER_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "demo.png", DOCS_SCREENSHOT)


def _check_screenshot(path: Path) -> None:
    """A real PNG of the viewport, with content (not a blank page), small enough for the docs."""
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:8]
    assert 10_000 < len(data) < 400_000, len(data)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == SCREENSHOT_SIZE
        image.load()  # decodes every row: a truncated file fails here
        low, high = image.convert("L").getextrema()
    assert high - low > 100, (low, high)

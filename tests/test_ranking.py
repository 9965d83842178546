"""hftransfer.rank: transferability metrics against hand / independent values, feature caching, outputs, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hftransfer.errors import ConfigurationError, HFTransferError, ModelNameError
from hftransfer.ranking import metrics as M


DIGITS = {"source": "sklearn_digits", "max_train_samples": 60, "max_eval_samples": 30}
TINY = ["random:timm:test_resnet", "random:timm:test_vit"]


def _separable(n_per_class: int = 40, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    good = np.eye(k)[labels] * 4 + 0.2 * rng.normal(size=(len(labels), k))
    noise = rng.normal(size=(len(labels), k))
    return good, noise, labels


# --- metrics -------------------------------------------------------------------------------------------------------

def test_logme_evidence_equals_gaussian_marginal_likelihood():
    """The closed form in the SVD basis is log N(y; 0, F F^T / alpha + I / beta), for any alpha, beta."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(1)
    for n, d in ((9, 3), (5, 8)):  # N > D and N < D
        f, y = rng.normal(size=(n, d)), rng.normal(size=n)
        u, sigma = M._svd(f)
        for alpha, beta in ((0.3, 2.0), (5.0, 0.7)):
            ours, _ = M._evidence(alpha, beta, sigma, (u.T @ y) ** 2, float(y @ y), n, d)
            direct = multivariate_normal(np.zeros(n), f @ f.T / alpha + np.eye(n) / beta).logpdf(y)
            assert ours == pytest.approx(direct, rel=1e-10)


def test_logme_fixed_point_reaches_the_maximum_evidence():
    """An independent optimiser of the marginal likelihood finds the same maximum, alpha and beta."""
    from scipy.optimize import minimize
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    f = rng.normal(size=(12, 3))
    y = (f[:, 0] + 0.3 * rng.normal(size=12) > 0).astype(float)

    def negative(log_ab):
        a, b = np.exp(log_ab)
        return -multivariate_normal(np.zeros(12), f @ f.T / a + np.eye(12) / b).logpdf(y)

    best = minimize(negative, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    evidence, alpha, beta = M.logme_binary(f, y)
    assert evidence == pytest.approx(-best.fun / 12, abs=1e-9)
    assert (alpha, beta) == pytest.approx(tuple(np.exp(best.x)), rel=1e-4)
    # LogME of labels: the mean over classes of the one-vs-rest evidence.
    labels = y.astype(int)
    per_class = [M.logme_binary(f, (labels == k).astype(float))[0] for k in (0, 1)]
    assert M.logme(f, labels) == pytest.approx(np.mean(per_class))


def test_h_score_by_hand():
    f = np.array([[1.0, 0.0], [1.0, 2.0], [-1.0, 0.0], [-1.0, -2.0]])
    labels = np.array([0, 0, 1, 1])
    # cov = [[1, 1], [1, 2]] (inverse [[2, -1], [-1, 1]]); class means +-(1, 1): H = (1, 1) cov^-1 (1, 1)^T = 1.
    assert M.h_score(f, labels, shrinkage=0.0) == pytest.approx(1.0)
    # a = 0.5: cov_a = 0.5 cov + 0.5 * 1.5 I = [[1.25, 0.5], [0.5, 1.75]], det 1.9375; H = 0.5 * 2 / 1.9375.
    assert M.h_score(f, labels, shrinkage=0.5) == pytest.approx(0.5 * 2 / 1.9375)
    # 1-D: var 1, class means +-1: H = 1.
    assert M.h_score(np.array([[-1.0], [-1.0], [1.0], [1.0]]), labels) == pytest.approx(1.0)


def test_h_score_ledoit_wolf_uses_sklearns_shrinkage():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(2)
    f, labels = rng.normal(size=(30, 6)), np.repeat([0, 1, 2], 10)
    f[labels == 1] += 1.0
    a = LedoitWolf().fit(f).shrinkage_
    assert 0.0 < a < 1.0
    assert M.h_score(f, labels) == pytest.approx(M.h_score(f, labels, shrinkage=float(a)), rel=1e-8)
    with pytest.raises(ConfigurationError, match="shrinkage=2"):
        M.h_score(f, labels, shrinkage=2)


def test_leep_and_nce_by_hand():
    labels = np.array([0, 1, 1, 1])
    assert M.leep(np.full((2, 2), 0.5), np.array([0, 1])) == pytest.approx(math.log(0.5))
    # hard predictions z = [0, 0, 1, 1]: P(y|z=0) = (1/2, 1/2), P(y=1|z=1) = 1 -> NCE = 1/2 log(1/2).
    hard = np.eye(2)[[0, 0, 1, 1]]
    assert M.nce(hard, labels) == pytest.approx(0.5 * math.log(0.5))
    # A source head that equals the labels (any class ids) is maximal: log(1) = 0.
    onehot = np.eye(5)[[3, 1, 1, 1]]
    assert M.leep(onehot, labels) == 0.0
    assert M.nce(onehot, labels) == 0.0
    with pytest.raises(ConfigurationError, match="probabilities"):
        M.leep(np.ones((4, 2)), labels)


def test_separable_features_score_above_random_features():
    good, noise, labels = _separable()
    for metric in (M.logme, M.h_score, M.nleep):
        assert metric(good, labels) > metric(noise, labels) + 0.1, metric.__name__
    assert M.nleep(good, labels) <= 0.0
    assert M.leep(M.softmax(good * 3), labels) > M.leep(M.softmax(noise), labels)
    assert M.nce(M.softmax(good), labels) > M.nce(M.softmax(noise), labels)
    assert M.kfold_probe_accuracy(good, labels) == 1.0
    assert M.kfold_probe_accuracy(noise, labels) < 0.7


def test_metrics_refuse_one_class_and_bad_shapes():
    with pytest.raises(ConfigurationError, match="at least 2"):
        M.logme(np.ones((4, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ConfigurationError, match=r"\(N, D\)"):
        M.h_score(np.ones(4), np.array([0, 1, 0, 1]))
    with pytest.raises(ConfigurationError, match="NaN"):
        M.nleep(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))


def test_recommendation_confidence_follows_agreement():
    from hftransfer.ranking.rank import _recommend

    def row(name, ranks, kfold=None):
        return {"candidate": name, "average_rank": float(np.mean(ranks)),
                "ranks": {**dict(zip(("logme", "h_score", "nleep"), ranks)), "kfold_accuracy": kfold}}

    metrics = ["logme", "h_score", "nleep"]
    agree = [row("a", (1, 1, 1), 1), row("b", (2, 2, 2), 2)]
    assert _recommend(agree, metrics, 1.0)[:2] == ("a", "high")
    assert _recommend([row("a", (1, 1, 1), 2), row("b", (2, 2, 2), 1)], metrics, 1.0)[1:] == (
        "medium", "3 of 3 metrics put it first; mean Kendall tau between metrics 1.00; the k-fold probe prefers b")
    split = [row("a", (1, 1, 2)), row("b", (2, 2, 1))]
    assert _recommend(split, metrics, 0.33)[:2] == ("a", "medium")
    assert _recommend(split, metrics, -0.33)[:2] == ("a", "low")
    with_head = {**agree[0], "ranks": {**agree[0]["ranks"], "leep": 1}}
    without = {**agree[1], "ranks": {**agree[1]["ranks"], "leep": None}}
    # LEEP scoring a single candidate ranks nothing: it is not a vote
    assert "3 of 3 metrics" in _recommend([with_head, without], [*metrics, "leep"], 1.0)[2]


# --- rank ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def count_forward(monkeypatch):
    """Counts frozen forward passes (feature extractions) by every path that uses the shared extractor."""
    import hftransfer.training.feature_cache as feature_cache

    calls = []
    real = feature_cache.extract_features

    def counted(*args, **kwargs):
        calls.append(kwargs.get("desc", args[3] if len(args) > 3 else ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_features", counted)
    return calls


def test_rank_tiny_models_table_files_and_cache(tmp_path, count_forward):
    from hftransfer import rank

    out = tmp_path / "rank"
    result = rank(DIGITS, TINY, sample=40, output_dir=out, kfold=True, progress=False)
    assert len(count_forward) == 2
    assert {row["candidate"] for row in result.rows} == set(TINY)
    assert result.metrics == ["logme", "h_score", "nleep", "kfold_accuracy"]  # random inits: no LEEP / NCE
    assert result.averaged == ["logme", "h_score", "nleep"]
    for row in result.rows:
        assert sorted(row["ranks"][m] for m in result.metrics) and set(row["ranks"].values()) <= {1, 2}
        assert all(math.isfinite(row["scores"][m]) for m in result.metrics)
        assert row["average_rank"] == pytest.approx(np.mean([row["ranks"][m] for m in result.averaged]))
        assert row["num_parameters"] > 1000 and not row["cached"]
    assert result.rows[0]["average_rank"] <= result.rows[1]["average_rank"]
    assert result.recommendation == result.rows[0]["candidate"]
    assert result.confidence in ("high", "medium", "low")
    assert result.agreement["logme"]["logme"] == 1.0 and result.agreement["logme"]["h_score"] in (-1.0, 1.0)
    assert sorted(p.name for p in out.iterdir()) == ["features", "rank.json", "rank.md", "rank.png"]
    saved = json.loads((out / "rank.json").read_text())
    assert saved["recommendation"] == result.recommendation and saved["sample_size"] == 40
    table = (out / "rank.md").read_text()
    assert "| candidate | logme | h_score | nleep | kfold_accuracy |" in table and "random:timm:test_vit" in table
    assert (out / "rank.png").read_bytes()[:4] == b"\x89PNG"
    cached = list((out / "features").glob("features-*.safetensors"))
    assert len(cached) == 2

    again = rank(DIGITS, TINY, sample=40, output_dir=out, kfold=True, progress=False)
    assert len(count_forward) == 2  # no forward pass on the second call
    assert all(row["cached"] for row in again.rows)
    for first, second in zip(result.rows, again.rows):
        assert first["scores"] == pytest.approx(second["scores"])


def test_rank_cache_feeds_a_following_linear_probe(tmp_path, tiny_models, count_forward):
    """The whole training split sampled: a linear_probe with method.cache_dir reuses rank's train features."""
    from hftransfer import rank, train

    from helpers import tiny_config

    vit = tiny_models["transformers_vit"]  # a local folder with weights: a pretrained candidate offline
    rank(DIGITS, [vit, "random:timm:test_resnet"], sample=10_000, output_dir=tmp_path / "r", progress=False)
    assert len(count_forward) == 2
    config = tiny_config(tmp_path, recipe="linear_probe", data=DIGITS, epochs=1,
                         **{"model.name": vit, "model.pretrained": True, "model.image_size": None,
                            "method.cache_dir": str(tmp_path / "r" / "features")})
    train(config)
    assert count_forward[2:] == ["features (validation)"]  # train features came from rank's cache


def test_a_fine_tuned_copy_of_a_candidate_gets_its_own_features(tmp_path, tiny_models, count_forward):
    # A saved fine-tuned model keeps its base's backbone spec; the cache key holds the weights, so its features are
    # its own (they were the base's, read from the cache).
    from hftransfer import AutoTransfer, rank

    vit = tiny_models["transformers_vit"]
    tuned = AutoTransfer.from_pretrained(vit, num_labels=10)
    with torch.no_grad():
        for param in tuned.backbone.parameters():
            param.add_(0.05 * torch.randn_like(param))
    tuned.save_pretrained(tmp_path / "run" / "model")
    result = rank(DIGITS, [vit, str(tmp_path / "run" / "model")], sample=40, output_dir=None,
                  cache_dir=tmp_path / "cache", progress=False)
    assert len(count_forward) == 2 and len(list((tmp_path / "cache").glob("features-*.safetensors"))) == 2
    first, second = (row["scores"] for row in result.rows)
    assert first != pytest.approx(second)


def test_rank_text_candidates(tmp_path, tiny_models):
    from hftransfer import rank

    from helpers import text_csv

    bert = tiny_models["transformers_bert"]
    result = rank(str(text_csv(tmp_path)), [bert, "random:" + bert], sample=30, output_dir=None,
                  cache_dir=tmp_path / "cache", progress=False)
    assert {row["candidate"] for row in result.rows} == {bert, "random:" + bert}
    assert all(row["num_features"] == 32 and not row["has_source_head"] for row in result.rows)
    assert result.sample_size == 30 and result.output_dir is None
    assert len(list((tmp_path / "cache").glob("features-*.safetensors"))) == 2
    again = rank(str(text_csv(tmp_path)), [bert, "random:" + bert], sample=30, output_dir=None,
                 cache_dir=tmp_path / "other", progress=False)  # no cache: the random init is drawn from the seed
    for first, second in zip(result.rows, again.rows):
        assert (first["candidate"], first["scores"]) == (second["candidate"], pytest.approx(second["scores"]))


def test_rank_scores_at_the_input_size_training_will_use(tmp_path, tiny_models, monkeypatch):
    # image_size / max_length = training's model.image_size / model.max_length: the features (and their cache
    # entries) are those of that input size, not the candidate's pretrained one.
    import hftransfer.training.feature_cache as feature_cache
    from hftransfer import rank

    from helpers import text_csv

    seen = []
    real = feature_cache.extract_features

    def spy(accelerator, model, loader, *args, **kwargs):
        batch = next(iter(loader))
        seen.append(tuple(batch["pixel_values"].shape[-2:]) if "pixel_values" in batch
                    else model.preprocessor.max_length)
        return real(accelerator, model, loader, *args, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_features", spy)
    for size in (None, 32):
        rank(DIGITS, TINY, sample=20, output_dir=None, cache_dir=tmp_path / "c", image_size=size, progress=False)
    assert seen[2:] == [(32, 32), (32, 32)] and seen[0] != (32, 32)
    assert len(list((tmp_path / "c").glob("features-*.safetensors"))) == 4  # one entry per candidate and size
    bert = tiny_models["transformers_bert"]
    rank(str(text_csv(tmp_path)), [bert, "random:" + bert], sample=30, output_dir=None, cache_dir=tmp_path / "t",
         max_length=9, progress=False)
    assert seen[4:] == [9, 9]


def test_rank_bad_input_fails_before_any_forward_pass(tmp_path, count_forward):
    from hftransfer import rank

    with pytest.raises(ModelNameError, match="not_a_model"):
        rank(DIGITS, ["random:timm:test_resnet", "timm:not_a_model"], output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="at least 2"):
        rank(DIGITS, ["random:timm:test_resnet"], output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="more than once"):
        rank(DIGITS, ["random:timm:test_resnet", "random:timm:test_resnet"], output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match=r"sample=5 .* at least 20"):
        rank(DIGITS, TINY, sample=5, output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="sample=0"):
        rank(DIGITS, TINY, sample=0, output_dir=tmp_path)
    csv = tmp_path / "one_class.csv"
    csv.write_text("text,label\n" + "".join(f"row {i},only\n" for i in range(12)))
    with pytest.raises(HFTransferError, match="class"):
        rank({"source": str(csv)}, TINY, output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="unknown option"):
        rank({"source": "sklearn_digits", "colour": 1}, TINY, output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="image_size=0 must be a positive integer"):
        rank(DIGITS, TINY, image_size=0, output_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="max_length='64' must be a positive integer"):
        rank(DIGITS, TINY, max_length="64", output_dir=tmp_path)
    assert count_forward == []
    assert not (tmp_path / "rank.json").exists()


def test_random_init_of_a_saved_model_is_refused_before_any_forward_pass(tmp_path, count_forward):
    # random:<folder saved by hftransfer> would load the trained weights as the "random floor": refused up front,
    # naming the base backbone to give instead.
    from hftransfer import AutoTransfer, rank
    from hftransfer.ranking.features import Candidate, load_candidate

    AutoTransfer.from_pretrained("timm:test_resnet", num_labels=2, pretrained=False).save_pretrained(tmp_path / "m")
    saved = f"random:{tmp_path / 'm'}"
    with pytest.raises(ConfigurationError, match=r"random:.*/m'.*saved by hftransfer.*'random:test_resnet'"):
        rank(DIGITS, ["random:timm:test_vit", saved], output_dir=tmp_path / "out")
    with pytest.raises(ConfigurationError, match="saved by hftransfer"):
        load_candidate(Candidate.parse(saved))
    assert count_forward == []
    assert not (tmp_path / "out").exists()


def test_cli_rank(tmp_path, capsys):
    from hftransfer.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "README.md").write_text("---\nlicense: mit\n---\n# my model\n\nkept text\n")
    args = ["rank", "sklearn_digits", "--candidates", ",".join(TINY), "--sample", "30", "--output-dir",
            str(tmp_path / "out"), "--no-progress", "--card", str(model)]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "recommended: random:timm:test_" in shown and "| `random:timm:test_resnet` |" in shown
    assert (tmp_path / "out" / "rank.md").is_file()
    # The table went into the card as its 'ranking' section; a second rank replaces it, the card's text stays.
    assert main(args) == 0
    card = (model / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\n---\n# my model\n\nkept text\n")
    assert card.count("<!-- hftransfer:begin ranking -->") == 1 and card.count("<!-- hftransfer:end ranking -->") == 1
    assert "## Backbone ranking on" in card and "| `random:timm:test_resnet` |" in card
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "missing")]) != 0
    assert "is not a folder" in capsys.readouterr().err
    assert main(["rank", "sklearn_digits", "--candidates", "timm:nope_model,random:timm:test_vit"]) == 2


def test_card_section_on_a_saved_model_without_readme_gets_the_full_card(tmp_path, capsys, count_forward):
    # save_pretrained writes no README.md: --card first writes the card a push would generate (metadata, usage),
    # then the ranking section, so a later push does not upload a card holding the table alone.
    from hftransfer import AutoTransfer
    from hftransfer.cli import main

    model = tmp_path / "model"
    AutoTransfer.from_pretrained("timm:test_resnet", num_labels=2, pretrained=False).save_pretrained(model)
    args = ["rank", "sklearn_digits", "--candidates", ",".join(TINY), "--sample", "30", "--output-dir",
            str(tmp_path / "out"), "--no-progress", "--card", str(model)]
    assert main(args) == 0
    card = (model / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: hftransfer\n") and "fine-tuned from `test_resnet`" in card
    assert 'AutoTransfer.from_pretrained("model")' in card
    assert card.count("<!-- hftransfer:begin ranking -->") == 1 and "| `random:timm:test_resnet` |" in card
    assert card.index("AutoTransfer.from_pretrained") < card.index("<!-- hftransfer:begin ranking -->")
    # A folder with neither README.md nor a saved model is refused before any forward pass.
    plain = tmp_path / "plain"
    plain.mkdir()
    count_forward.clear()
    capsys.readouterr()
    assert main([*args[:-1], str(plain)]) != 0
    assert "has no README.md and no hftransfer_config.json" in capsys.readouterr().err
    assert count_forward == [] and not (plain / "README.md").exists()


@pytest.mark.integration
def test_packaged_lite0_outranks_random_init_on_digits(tmp_path):
    from hftransfer import rank

    result = rank({"source": "sklearn_digits"}, ["random:timm:efficientnet_lite0", "packaged:efficientnet_lite0"],
                  sample=300, output_dir=tmp_path, kfold=True, progress=False)
    by_name = {row["candidate"]: row for row in result.rows}
    random_row = by_name["random:timm:efficientnet_lite0"]
    for metric in result.averaged:
        assert random_row["ranks"][metric] == 2, metric
    assert by_name["packaged:efficientnet_lite0"]["has_source_head"] and not random_row["has_source_head"]
    assert math.isfinite(by_name["packaged:efficientnet_lite0"]["scores"]["leep"])
    assert result.recommendation == "packaged:efficientnet_lite0", result.markdown()


@pytest.mark.integration
@pytest.mark.parametrize(("name", "params", "size"), [("efficientnet_lite1", 5_416_680, 240),
                                                      ("efficientnet_lite2", 6_092_072, 260)])
def test_packaged_lite1_lite2_classify_imagenet(name, params, size):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from hftransfer import AutoTransfer, list_packaged

    assert name in list_packaged()
    model = AutoTransfer.from_pretrained(f"packaged:{name}")
    assert model.num_parameters() == params and model.num_labels == 1000
    assert model.preprocessor.to_dict()["data_config"]["input_size"] == [3, size, size]
    top = [p["label"] for p in model.predict([Image.fromarray(load_sample_image("china.jpg"))], top_k=3)[0]]
    assert {"church", "palace", "bell cote", "monastery"} & set(top), top


def test_the_figure_names_a_local_folder_by_its_shortest_unique_tail(tmp_path):
    # rank.png labels: a saved model folder by its name (a full path filled the figure), hub ids and packaged names
    # as given, the random prefix kept. Saved models live in <run>/model: folders of the same name are told apart by
    # the shortest distinguishing path tail, in the figure's rows and its "recommended:" title alike.
    from hftransfer.ranking.plot import short_label, short_labels

    (tmp_path / "minilm_3_layers").mkdir()
    assert short_label(str(tmp_path / "minilm_3_layers")) == "minilm_3_layers"
    assert short_label(f"random:{tmp_path / 'minilm_3_layers'}") == "random:minilm_3_layers"
    assert short_label("./outputs/run1/model") == "model"
    assert short_label("google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    assert short_label("random:packaged:all-MiniLM-L6-v2") == "random:packaged:all-MiniLM-L6-v2"
    candidates = ["./outputs/run1/model", "./outputs/run2/model", "/a/x/run1/model", "random:./outputs/run1/model",
                  "packaged:efficientnet_lite0", "./other/model-b"]
    labels = short_labels(candidates)
    assert labels == ["outputs/run1/model", "run2/model", "x/run1/model", "random:model",
                      "packaged:efficientnet_lite0", "model-b"]
    assert [short_label(c, candidates) for c in candidates] == labels
    # a tail equal to another candidate's name grows too; folders differing only in spelling keep their full names
    assert short_labels(["/x/run1/model", "/y/run2/model", "run1/model"]) == ["x/run1/model", "run2/model",
                                                                             "run1/model"]
    assert short_labels(["/x/model", "/x/model/"]) == ["/x/model", "/x/model/"]

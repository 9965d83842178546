"""Wiring check of bench/run.py on minuscule data (the numbers are meaningless; nothing asserts timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench"


BENCH_MODULES = ("common", "report", "run", "text_rows", "vision_rows", "hft_runner", "text_da", "peft_defaults",
                 "self_training_gate", "domain_adaptation", "lp_ft")


@pytest.fixture()
def bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import report
    import run

    import common

    yield common, report, run
    for name in BENCH_MODULES:  # generic names: do not leave them importable for other tests
        sys.modules.pop(name, None)


def test_row_ids_are_unique_and_paired(bench_modules):
    _, _, run = bench_modules
    for mode in ("quick", "full", "smoke"):
        rows = run.build_rows(mode)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), mode
        for r in rows:
            if r["tool"] == "peer":
                assert r["id"].replace("/peer", "/hftransfer") in ids
    assert all(r["kind"] == "text" or r.get("modality") == "text"
               for r in run._only(run.build_rows("quick"), "text", None))
    assert all(r["kind"] == "vision" or r.get("modality", "image") == "image"
               for r in run._only(run.build_rows("quick"), "vision", None))


def test_parameter_efficient_rows_exist_and_rows_selects_them(bench_modules):
    # Issue #10's rows: SST-2 adapter/ia3/prompt_tuning/prefix_tuning (peers for ia3 and prefix_tuning) beside
    # lora/full, hymenoptera adapter/ia3/loha; `--rows REGEX` picks them out.
    _, _, run = bench_modules
    ids = {r["id"] for r in run.build_rows("full")}
    text = {f"sst2/{m}/hftransfer" for m in ("adapter", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning",
                                          "lora", "full")}
    peers = {"sst2/ia3/peer", "sst2/prefix_tuning/peer"}
    vision = {f"hymenoptera/{m}/hftransfer" for m in ("adapter", "ia3", "loha", "lora", "linear_probe", "full")}
    assert text | peers | vision <= ids
    absent = {"sst2/adapter/peer", "sst2/prompt_tuning/peer", "sst2/p_tuning/peer", "cifar10/adapter/hftransfer"}
    assert not absent & ids
    picked = {r["id"] for r in run._only(run.build_rows("full"), None, r"/(adapter|ia3|loha)/")}
    assert picked == {"sst2/adapter/hftransfer", "sst2/adapter/3ep/hftransfer", "sst2/ia3/hftransfer", "sst2/ia3/peer",
                      "hymenoptera/adapter/hftransfer", "hymenoptera/ia3/hftransfer", "hymenoptera/loha/hftransfer"}


def test_stratified_indices_keep_class_proportions(bench_modules):
    common, _, _ = bench_modules
    import numpy as np

    labels = np.array([0] * 70 + [1] * 30)
    idx = common.stratified_indices(labels, 10, seed=0)
    assert len(idx) == 10 and (labels[idx] == 1).sum() == 3
    assert (idx == common.stratified_indices(labels, 10, seed=0)).all()


def test_a_results_page_keeps_its_hand_written_notes(bench_modules, tmp_path):
    common, _, _ = bench_modules
    page = tmp_path / "page.md"
    common.write_bench_page(page, "# Table\n| a |\n")
    assert page.read_text() == f"# Table\n| a |\n\n{common.NOTES_MARKER}\n"
    page.write_text(page.read_text() + "- measured on a busy machine\n")
    common.write_bench_page(page, "# Table\n| b |")
    assert page.read_text() == f"# Table\n| b |\n\n{common.NOTES_MARKER}\n- measured on a busy machine\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_text_da_table_marks_the_goals_and_says_when_they_are_provisional(bench_modules):
    import text_da

    def row(pair, objective, seed, target):
        return {"pair": pair, "objective": objective, "seed": seed, "target_test_accuracy": target,
                "source_dev_accuracy": 0.9, "best_epoch": 2, "train_time_s": 10.0, "objective_options": {}}

    gains = {"source_only": 0.0, "dann": 0.02, "mmd": 0.01, "coral": -0.01, "self_training": 0.0}
    rows = {f"{o}{s}": row("dvd-electronics", o, s, 0.80 + g + 0.001 * s) for o, g in gains.items() for s in (0, 1)}
    page = text_da.render({"rows": rows})
    assert "| dvd-electronics | dann | 82.1 ± 0.1 (2) | +2.0 |" in page
    assert "- **provisional**: 2 seed(s) per row" in page
    assert "**missed** — below: dvd-electronics/coral (-1.0, 2 seeds)" in page and "+2.00 -> **met**" in page
    assert "(1 pair(s); paired seeds per pair: 2)" in page
    rows.update({f"{o}2": row("dvd-electronics", o, 2, 0.80 + g) for o, g in gains.items()})
    assert "provisional" not in text_da.render({"rows": rows})
    # Δ pairs seeds: an objective run on seed 0 only is compared with source-only's seed 0, not its mean
    rows = {"s0": row("p", "source_only", 0, 0.80), "s1": row("p", "source_only", 1, 0.90),
            "m0": row("p", "mmd", 0, 0.81)}
    assert "| p | mmd | 81.0 ± 0.0 (1) | +1.0 |" in text_da.render({"rows": rows})


def test_text_da_page_shows_each_seed_s_delta_and_what_each_selection_rule_would_pick(bench_modules):
    import text_da

    def row(objective, seed, history, selected):
        return {"pair": "p", "objective": objective, "seed": seed, "target_test_accuracy": selected,
                "source_dev_accuracy": 0.9, "best_epoch": 2, "train_time_s": 10.0,
                "objective_options": {"warmup_epochs_not_selected": [1]} if objective != "source_only" else {},
                "history": [{"epoch": e, "source_dev_accuracy": d, "target_test_accuracy": t}
                            for e, (d, t) in enumerate(history, 1)]}

    rows = {"s0": row("source_only", 0, [(0.90, 0.83), (0.90, 0.82)], 0.83),
            "s1": row("source_only", 1, [(0.88, 0.80), (0.91, 0.81)], 0.81),
            # seed 0: the warm-up epoch ties on source dev and is better on target; seed 1: the adapted one wins
            "d0": row("dann", 0, [(0.91, 0.82), (0.91, 0.79)], 0.79),
            "d1": row("dann", 1, [(0.89, 0.80), (0.92, 0.84)], 0.84)}
    page = text_da.render({"rows": rows})
    assert "| p | dann | 81.5 ± 2.5 (2) | -0.5 | -4.00 / +3.00 |" in page
    # as run: (79-83 + 84-81)/2 = -0.5; the warm-up epoch a candidate (ties go to the earlier epoch):
    # (82-83 + 84-81)/2 = +1.0; bound: the better epoch on target, the same here
    assert "| p | dann | 2 | -0.50 | +1.00 | +1.00 |" in page
    rows["d1"]["history"][0]["target_test_accuracy"] = 0.86  # the bound reads target labels, selection never does
    assert "| p | dann | 2 | -0.50 | +1.00 | +2.00 |" in text_da.render({"rows": rows})
    rows["d1"]["history"] = rows["d1"]["history"][:1]  # an incomplete history is left out, not guessed
    assert "| p | dann | 1 | -4.00 | -1.00 | -1.00 |" in text_da.render({"rows": rows})


def test_text_da_variant_rows_stand_apart_from_the_defaults_and_the_goals(bench_modules):
    import text_da

    options = text_da.parse_sets(["weight=0.1", "norm=layer"])
    assert options == {"weight": 0.1, "norm": "layer"}
    assert text_da.run_config("dvd-electronics", "dann", 0, Path("o"), False, options)["objective"] == {
        "name": "dann", "weight": 0.1, "norm": "layer"}
    assert text_da.run_config("dvd-electronics", "dann", 0, Path("o"), False)["objective"] == {"name": "dann"}
    variant = text_da.variant_label({"weight": 0.1})
    assert text_da.row_key("p", "dann", 0, variant) == "p/dann[weight=0.1]/seed0" != text_da.row_key("p", "dann", 0)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        text_da.parse_sets(["weight"])

    def row(objective, target, variant=""):
        return {"pair": "p", "objective": objective, "variant": variant, "seed": 0, "target_test_accuracy": target,
                "source_dev_accuracy": 0.9, "best_epoch": 2, "train_time_s": 10.0, "objective_options": {}}

    rows = {o: row(o, 0.80) for o in text_da.OBJECTIVES} | {"v": row("dann", 0.85, variant)}
    page = text_da.render({"rows": rows})
    assert "| p | dann [weight=0.1] | 85.0 ± 0.0 (1) | +5.0 |" in page
    assert "| p | dann | 80.0 ± 0.0 (1) | +0.0 |" in page
    # the variant's +5 is not the default's
    assert "text average (1 pair(s); paired seeds per pair: 1): +0.00 -> **missed**" in page


def test_peft_defaults_page_ranks_the_candidates_and_searches_off_dev(bench_modules, tmp_path, monkeypatch):
    import pandas as pd
    import peft_defaults

    def row(method, accuracy, overrides):
        return {"method": method, "overrides": overrides, "seed": 0, "accuracy": accuracy,
                "per_epoch": [0.8, accuracy], "lr": 1e-3, "train_samples_per_s": 100.0}

    rows = {"a": row("adapter", 0.87, {}), "b": row("adapter", 0.8885, {"method": {"reduction_factor": 4}}),
            "c": row("prefix_tuning", 0.85, {})}
    page = peft_defaults.render({"rows": rows})
    best = page.index('| adapter | `{"method": {"reduction_factor": 4}}` | 0.001 | 0 | 88.85 | 80.0, 88.8 | 100.0 |')
    assert best < page.index("| adapter | `defaults` | 0.001 | 0 | 87.00 |") < page.index("| prefix_tuning |")
    # The search never reads SST-2 dev: its train and tune splits are disjoint parts of train.csv.
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    pd.DataFrame({"sentence": [f"s{i}" for i in range(40)], "label": [i % 2 for i in range(40)]}).to_csv(
        sst2 / "train.csv", index=False)
    monkeypatch.setattr(peft_defaults, "SST2", sst2)
    monkeypatch.setattr(peft_defaults, "SEARCH_TRAIN", 20)
    monkeypatch.setattr(peft_defaults, "SEARCH_TUNE", 10)
    train, tune = (pd.read_csv(p) for p in peft_defaults.search_split(tmp_path / "work"))
    assert len(train) == 20 and len(tune) == 10 and not set(train["sentence"]) & set(tune["sentence"])
    assert tune["label"].value_counts().tolist() == [5, 5]
    # The whole-train variant keeps the same tune split and trains on every other sentence.
    whole, same_tune = (pd.read_csv(p) for p in peft_defaults.search_split(tmp_path / "work", whole=True))
    assert same_tune.equals(tune) and len(whole) == 30 and not set(whole["sentence"]) & set(tune["sentence"])


def test_report_renders_goals_from_rows(bench_modules, tmp_path):
    _, report, _ = bench_modules

    def row(kind, dataset, method, tool, **res):
        spec = {"kind": kind, "dataset": dataset, "method": method, "tool": tool, "epochs": 1, "max_train": None,
                "image_size": 64}
        return {"spec": spec, "result": {"ok": True, "curve": [{"epoch": 1, "train_time_s": 1.0,
                                                                 "accuracy": res.get("accuracy", 0.5)}], **res}}

    base = {"samples_per_s": 10.0, "samples_per_cpu_s": 6.0, "train_time_s": 2.0, "wall_s": 3.0,
            "accuracy": 0.9, "train_mem_mb": 100.0, "peak_rss_mb": 900.0, "trainable_params": 10}
    rows = {
        "sst2/lora/hftransfer": row("text", "sst2", "lora", "hftransfer", **{**base, "samples_per_s": 30.0}),
        "sst2/lora/peer": row("text", "sst2", "lora", "peer", **base),
        "sst2/full/hftransfer": row("text", "sst2", "full", "hftransfer", **{**base, "accuracy": 0.92}),
        "hymenoptera/full/hftransfer": row("vision", "hymenoptera", "full", "hftransfer", **base),
        "sst2/lora/grad-ckpt/hftransfer": row("text", "sst2", "lora", "hftransfer", **{**base, "train_mem_mb": 50.0}),
    }
    rows["sst2/lora/grad-ckpt/hftransfer"]["spec"]["variant"] = "grad-ckpt"
    store = {"runs": {"full": {"rows": rows, "machine": {"nproc": 2}, "invocations": []}}}
    report.render(store, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "3.00x samples/s" in text and "**MET**" in text and "**MISSED**" in text
    assert "| `lora` + gradient checkpointing training memory vs `full` [sst2] | <= 0.7x" in text
    assert "0.50x (50.0 MB vs 100.0 MB); speed 10.0 samples/s = 0.33x plain `lora`, 1.00x the peer's" in text
    assert (tmp_path / "accuracy_vs_time.png").stat().st_size > 0


def test_fixed_length_section_reports_peak_share_and_issue_13_goals(bench_modules):
    _, report, run = bench_modules
    ids = {r["id"]: r for r in run.build_rows("full")}
    name = "sst2-packed128-2k"
    assert {f"{name}/full/peer", f"{name}/lora/peer", f"{name}/full/compile/hftransfer",
            f"{name}/forward+backward/bare", "hymenoptera/full/compile/hftransfer"} <= set(ids)
    assert all(ids[i]["packed_tokens"] == 128 for i in ids if i.startswith(name))

    def row(key, **res):
        return {"spec": ids[key], "result": {"ok": True, "accuracy": 0.9, **res}}

    rows = {
        f"{name}/full/hftransfer": row(f"{name}/full/hftransfer", samples_per_s=40.0),
        f"{name}/full/compile/hftransfer": row(f"{name}/full/compile/hftransfer", samples_per_s=60.0,
                                               compile_time_s=30.0),
        f"{name}/full/peer": row(f"{name}/full/peer", samples_per_s=20.0),
        f"{name}/lora/hftransfer": row(f"{name}/lora/hftransfer", samples_per_s=50.0, accuracy=0.88),
        f"{name}/lora/peer": row(f"{name}/lora/peer", samples_per_s=25.0),
        f"{name}/forward+backward/bare": row(f"{name}/forward+backward/bare", bf16_matmul_peak_flop_s=2e12,
                                             train_flop_per_seq={"full": 1e10, "frozen_weights": 7e9},
                                             variants={"eager": {"train_fwd_bwd_seq_per_s": 20.0}}),
        "hymenoptera/full/hftransfer": row("hymenoptera/full/hftransfer", samples_per_s=20.0),
        "hymenoptera/full/compile/hftransfer": row("hymenoptera/full/compile/hftransfer", samples_per_s=25.0),
    }
    text = "\n".join(report.fixed_length_section({"full": {"rows": rows}}))
    assert "(2.00 TFLOP/s)" in text
    assert "forward+backward only (no optimizer step, no data loading): eager 20.0 seq/s (10.00% of peak)." in text
    # 60/20 vs the peer, 60/40 vs the eager default row; 60 x 1e10 / 2e12 of the peak
    assert f"| {name}/full/compile/hftransfer | 60.0 | 3.00 | 1.50 | 90.00 | 30.0 | 30.00 |" in text
    assert "`full` default (default) vs peer: 2.00x at +0.0 pt (goal >= 2.0x at equal accuracy): **met**" in text
    assert "`lora` default (default) vs peer: 2.00x at -2.0 pt (goal >= 2.5x at equal accuracy): **missed**" in text
    assert "share of the bf16 peak (best row, compile): 30.00% (goal >= 25%): **met**" in text
    assert "compile vs eager hftransfer: 1.25x at +0.0 pt" in text and "goal >= 1.3x): **missed**" in text


@pytest.mark.slow
def test_smoke_suite_runs_end_to_end(tmp_path, shared_data):
    out = tmp_path / "out"
    # a wiring check whose numbers mean nothing: no waiting for quiet CPUs and no reruns of disturbed rows (another
    # test worker may share the CPUs)
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--mode", "smoke", "--out", str(out),
                           "--work-dir", str(tmp_path / "work"), "--max-wait", "0", "--retries", "0"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = json.loads((out / "results.json").read_text())
    rows = store["runs"]["smoke"]["rows"]
    failed = {k: v["result"].get("error") for k, v in rows.items() if not v["result"].get("ok")}
    assert not failed, failed
    for key, row in rows.items():
        if row["spec"]["kind"] in ("text", "vision"):
            res = row["result"]
            assert res["samples_per_s"] > 0 and 0.0 <= res["accuracy"] <= 1.0, key
            assert res["trainable_params"] > 0 and res["peak_rss_mb"] > 0, key
    assert "## Goals" in (out / "RESULTS.md").read_text()
    assert (out / "accuracy_vs_time.png").is_file()


def test_a_stopped_run_keeps_the_rows_it_finished(bench_modules, tmp_path, monkeypatch):
    # results.json is written after every row: a run killed on row 2 still holds row 1.
    _, _, run = bench_modules
    calls = []

    def fake_worker(row, index, work_dir, log_path, timeout):
        calls.append(row["id"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped while the second row runs
        return {"ok": True, "samples_per_s": 5.0, "accuracy": 0.5, "process_wall_s": 1.0, "interference": 0.0}

    monkeypatch.setattr(run, "_run_worker", fake_worker)
    monkeypatch.setattr(run, "cpu_busy_fraction", lambda: 0.0)
    monkeypatch.setattr(run, "offline_env", lambda: None)  # it sets HF_HUB_OFFLINE etc. in *this* process
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run.main(["--mode", "smoke", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--max-wait", "0"])
    store = json.loads((out / "results.json").read_text())
    smoke = store["runs"]["smoke"]
    assert list(smoke["rows"]) == calls[:1]
    assert smoke["rows"][calls[0]]["result"]["samples_per_s"] == 5.0
    assert smoke["invocations"][-1]["finished"] is None  # marked as stopped, not as complete


def test_progress_line_of_the_text_bare_row(bench_modules):
    _, _, run = bench_modules
    line = run._one_line({"ok": True, "variants": {"eager": {"train_fwd_bwd_seq_per_s": 12.5}},
                          "bf16_matmul_peak_flop_s": 3.5e11})
    assert line == "eager: train 12.5 seq/s; bf16 matmul peak 0.35 TFLOP/s"


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_every_model_option_of_a_row_reaches_the_hftransfer_config(bench_modules, monkeypatch, tmp_path, kind):
    # A row's variant must change what runs: its spec keys arrive in the training config (a compile row that
    # trains eagerly would report eager numbers as compiled ones).
    _, _, run = bench_modules
    import hft_runner
    import text_rows
    import vision_rows

    seen = []
    monkeypatch.setattr(hft_runner, "run_hftransfer", lambda config, spec, mon: seen.append(config) or {})
    monkeypatch.setattr(text_rows, "_data_dir", lambda spec: tmp_path)
    monkeypatch.setattr(vision_rows, "_source", lambda spec: tmp_path)
    module = text_rows if kind == "text" else vision_rows
    rows = [r for r in run.build_rows("full") if r["kind"] == kind and r["tool"] == "hftransfer"]
    for row in rows:
        module.run_hftransfer({**row, "work_dir": str(tmp_path)}, None)
    for row, config in zip(rows, seen, strict=True):
        for key in ("compile", "gradient_checkpointing", "cpu_fast_path", "config_overrides"):
            if key in row:
                assert config["model"][key] == row[key], (row["id"], key)
    assert any(r.get("compile") for r in rows)


def test_lodo_source_is_balanced_without_the_held_out_domain_and_averages_complete_seeds(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    import lp_ft

    folders = {}
    for domain in lp_ft.DOMAINS:
        for cls in ("dog", "horse"):
            (tmp_path / domain / cls).mkdir(parents=True)
            for i in range(5 if domain != "sketch" else 9):
                (tmp_path / domain / cls / f"{i}.jpg").write_bytes(b"x")
        folders[domain] = tmp_path / domain
    source = lp_ft.merge_domains({d: folders[d] for d in lp_ft.DOMAINS if d != "photo"}, tmp_path / "src", 3)
    for cls in ("dog", "horse"):
        names = sorted(p.name for p in (source / cls).iterdir())
        assert [n.split("__")[0] for n in names] == ["art_painting"] * 3 + ["cartoon"] * 3 + ["sketch"] * 3
        assert all((source / cls / n).resolve().parent == folders[n.split("__")[0]] / cls for n in names)

    def row(held_out, seed, acc):
        return {"mode": "lodo", "arm": "full", "seed": seed, "held_out": held_out, "target_accuracy": acc,
                "source_val_accuracy": 0.9, "train_s": 10.0}
    rows = {f"{d}{s}": row(d, s, 0.4 + 0.1 * i + 0.01 * s) for s in (0, 1) for i, d in enumerate(lp_ft.DOMAINS)}
    rows["extra"] = row("photo", 2, 0.99)  # seed 2 has one domain only: in photo's cell, not in the average
    table = lp_ft.render_lodo({"rows": rows})
    # photo's cell has the three seeds; the average (per seed over the four domains) only seeds 0 and 1
    assert ("| full | 90.0 ± 0.0 (9) | 40.5 ± 0.5 (2) | 50.5 ± 0.5 (2) | 73.3 ± 18.2 (3) | 70.5 ± 0.5 (2) "
            "| 55.5 ± 0.5 (2) | 2 | 10 |") in table
    rows.update({f"w{d}{s}": {**row(d, s, 0.45 + 0.1 * i), "arm": "lp_ft_wise_ft"}
                 for s in (0, 1) for i, d in enumerate(lp_ft.DOMAINS)})
    assert "on the held-out average: +4.5 over 2 seed(s) -> **met**" in lp_ft.render_lodo({"rows": rows})
    rows.update({f"w{d}1": {**row(d, 1, 0.41 + 0.1 * i), "arm": "lp_ft_wise_ft"}  # seed 1: +0 -> mean +2.5
                 for i, d in enumerate(lp_ft.DOMAINS)})
    assert "+2.5 over 2 seed(s) -> **missed**" in lp_ft.render_lodo({"rows": rows})
    sys.modules.pop("lp_ft", None)


def test_seeds_add_seed_rows_that_the_report_averages_and_pairs(bench_modules):
    _, report, run = bench_modules
    rows = [r for r in run.build_rows("full") if r["id"] in ("sst2/full/hftransfer", "sst2/adapter/hftransfer")
            or r["kind"] == "bare"]
    seeded = run.with_seeds(rows, 3, first_seed=1)
    # seed-major, training rows only, seed 0 (the plain row) not rerun
    assert [r["id"] for r in seeded] == ["sst2/full/hftransfer/seed1", "sst2/adapter/hftransfer/seed1",
                                         "sst2/full/hftransfer/seed2", "sst2/adapter/hftransfer/seed2"]
    assert [r["seed"] for r in seeded] == [43, 43, 44, 44] and seeded[0]["seed_of"] == "sst2/full/hftransfer"
    assert [r["id"] for r in run.with_seeds(rows, 1)] == [r["id"] for r in rows]
    with pytest.raises(SystemExit, match="--first-seed"):
        run.with_seeds(rows, 2, first_seed=2)

    def entry(spec, acc):
        return {"spec": spec, "result": {"ok": True, "accuracy": acc, "samples_per_s": 10.0, "train_time_s": 1.0,
                                         "wall_s": 2.0}}

    full, adapter = rows[[r["id"] for r in rows].index("sst2/full/hftransfer")], \
        rows[[r["id"] for r in rows].index("sst2/adapter/hftransfer")]
    store = {full["id"]: entry(full, 0.90), adapter["id"]: entry(adapter, 0.88)}
    accs = {"sst2/full/hftransfer/seed1": 0.89, "sst2/adapter/hftransfer/seed1": 0.885,
            "sst2/full/hftransfer/seed2": 0.91, "sst2/adapter/hftransfer/seed2": 0.905}
    store.update({r["id"]: entry(r, accs[r["id"]]) for r in seeded})
    run_ = {"rows": store}
    # the one-seed tables and goals see seed 0 only
    assert set(report._ok_rows(run_)) == {"sst2/full/hftransfer", "sst2/adapter/hftransfer"}
    assert sum("sst2 | adapter" in line for line in report.training_table(run_)) == 1
    text = "\n".join(report.seeds_section(run_))
    assert "| sst2 | full | hftransfer | 3 | 90.00 ± 1.00 | 90.00, 89.00, 91.00 (seeds 0, 1, 2) | 10.0 (?), " in text
    # gaps paired by seed: 2.0, 0.5, 0.5 -> mean 1.0 -> met (<= 1 pt)
    assert "full - adapter = +1.00 ± 0.87 pt (per seed +2.00, +0.50, +0.50) -> **met**" in text
    store["sst2/adapter/hftransfer/seed2"]["result"]["accuracy"] = 0.895  # gap 1.5 on seed 2 -> mean 1.33
    assert "-> **missed**" in "\n".join(report.seeds_section(run_))


def test_adapter_goal_with_the_registered_defaults_compares_the_3_epoch_rows(bench_modules):
    _, report, run = bench_modules
    rows = {r["id"]: r for r in run.build_rows("full")}

    def entry(row_id, acc, started):
        return {"spec": rows[row_id], "result": {"ok": True, "accuracy": acc, "samples_per_s": 100.0,
                                                   "started": started}}

    store = {"sst2/full/hftransfer": entry("sst2/full/hftransfer", 0.90, "2026-01-01T00:00"),
             "sst2/full/3ep-lr5e-5/hftransfer": entry("sst2/full/3ep-lr5e-5/hftransfer", 0.892, "2026-01-01T01:00"),
             "sst2/adapter/3ep/hftransfer": entry("sst2/adapter/3ep/hftransfer", 0.884, "2026-01-02T00:00")}
    goals = [g for g in report.evaluate_goals({"full": {"rows": store}}) if "registered defaults" in g["goal"]]
    assert len(goals) == 1 and goals[0]["status"] == "MET", goals  # 0.8 pt
    measured = goals[0]["measured"]
    assert "88.40% vs 89.20% (+0.80 pt)" in measured and "2026-01-02 and 2026-01-01" in measured
    store["sst2/adapter/3ep/hftransfer"]["result"]["accuracy"] = 0.880  # 1.2 pt
    assert [g["status"] for g in report.evaluate_goals({"full": {"rows": store}})
            if "registered defaults" in g["goal"]] == ["MISSED"]


def test_self_training_gate_lines_compare_each_seed_with_its_better_source_only(bench_modules):
    import self_training_gate as gate

    def row(variant, seed, acc):
        return {"variant": variant, "seed": seed, "target_accuracy": acc, "source_accuracy": 0.99}

    rows = [row("source_only", 0, 0.963), row("source_only_continued", 0, 0.953), row("self_training", 0, 0.962),
            row("source_only", 1, 0.950), row("self_training", 1, 0.955)]
    lines = "\n".join(gate.difference_lines(rows))
    assert "seed 0, USPS test vs the better source-only row (96.3): `self_training` -0.1" in lines
    assert "seed 1, USPS test vs the better source-only row (95.0): `self_training` +0.5" in lines
    assert "mean over 2 seeds: +0.20 points (issue 22 goal: >= source-only): **met**" in lines
    rows[-1]["target_accuracy"] = 0.949  # -0.1 and -0.1
    assert "**missed**" in "\n".join(gate.difference_lines(rows))
    assert "mean over" not in "\n".join(gate.difference_lines(rows[:3]))  # one seed: no mean line


def test_peft_defaults_image_choice_is_made_on_hymenoptera_and_judged_on_cifar10(bench_modules, tmp_path):
    import peft_defaults

    def row(task, method, accuracy, overrides, seed=0):
        return {"task": task, "method": method, "overrides": overrides, "seed": seed, "accuracy": accuracy,
                "per_epoch": [0.5, accuracy], "lr": 1e-3, "train_samples_per_s": 20.0, "date": "2026-12-05"}

    fast = {"optim": {"lr": 3e-3}}
    rows = {f"{task}/{method}/{json.dumps(o)}/seed{s}": row(task, method, acc, o, s)
            for task, method, o, s, acc in [
                ("hymenoptera", "adapter", {}, 0, 0.90), ("hymenoptera", "adapter", fast, 0, 0.94),
                ("hymenoptera", "adapter", {}, 1, 0.92), ("hymenoptera", "adapter", fast, 1, 0.92),
                ("hymenoptera", "adapter", {"optim": {"lr": 3e-4}}, 0, 0.80),
                ("hymenoptera", "adapter", {"method": {"reduction_factor": 8}}, 0, 0.85),
                ("cifar10", "adapter", {}, 0, 0.70), ("cifar10", "adapter", fast, 0, 0.72)]}
    lines = peft_defaults.choice_lines({"rows": rows})
    # mean over seeds on hymenoptera: 0.93 vs 0.91; CIFAR-10 agrees (+2.00)
    assert lines == ['- `adapter`: hymenoptera val pick `{"optim": {"lr": 0.003}}` (93.00 vs the defaults\' 91.00); '
                     'CIFAR-10 test: 72.00 vs 70.00 (+2.00): **confirmed**.']
    rows["cifar10/adapter/{}/seed0"]["accuracy"] = 0.75
    assert "72.00 vs 75.00 (-3.00): **not confirmed** (for information, CIFAR-10 test ranks `defaults` first" in (
        peft_defaults.choice_lines({"rows": rows})[0])
    # a tie on hymenoptera keeps the registered defaults; CIFAR-10's own ranking is shown, not used
    rows["hymenoptera/adapter/{}/seed0"]["accuracy"] = 0.94
    rows["cifar10/adapter/{}/seed0"]["accuracy"] = 0.70
    line = peft_defaults.choice_lines({"rows": rows})[0]
    assert "pick `defaults`" in line and "the registered defaults stay" in line
    assert line.endswith('(for information, CIFAR-10 test ranks `{"optim": {"lr": 0.003}}` first: 72.00; the test '
                         'split picks nothing).')
    # an incomplete search states nothing; ia3 has no rows at all
    del rows['hymenoptera/adapter/{"method": {"reduction_factor": 8}}/seed0']
    assert peft_defaults.choice_lines({"rows": rows}) == []
    page = peft_defaults.render({"rows": rows})
    assert "## Hymenoptera search" in page and "## CIFAR-10 confirmation" in page
    assert "test (2,000 images, last epoch: held out, picks nothing)" in page
    assert '| adapter | `{"optim": {"lr": 0.003}}` | 0.001 | 0 | 72.00 | 50.0, 72.0 | 20.0 | 2026-12-05 |' in page
    # rows of the older SST-2 search (no "task" field) stay in the SST-2 table only
    page = peft_defaults.render({"rows": {"x": {k: v for k, v in row("sst2", "ia3", 0.87, {}).items()
                                                if k != "task"}}})
    assert "| ia3 | `defaults` | 0.001 | 0 | 87.00 |" in page and "## Hymenoptera" not in page
    assert peft_defaults.row_key("ia3", {}, 0) == "search/ia3/{}/seed0"  # the stored SST-2 keys
    assert peft_defaults.row_key("ia3", {}, 1, "cifar10") == "cifar10/ia3/{}/seed1"
    assert peft_defaults.task_data("cifar10", tmp_path) == {"source": str(peft_defaults.CIFAR_NPZ)}


def test_peft_defaults_cifar_choice_split_is_cut_from_train_and_never_holds_test(bench_modules, tmp_path, monkeypatch):
    import numpy as np
    import peft_defaults

    labels = np.repeat(np.arange(10), 50)
    npz = tmp_path / "cifar.npz"
    np.savez(npz, x_train=np.arange(500)[:, None].repeat(3, 1).astype(np.int64), y_train=labels,
             x_test=np.full((20, 3), -1), y_test=np.arange(20) % 10, class_names=np.array([str(i) for i in range(10)]))
    monkeypatch.setattr(peft_defaults, "CIFAR_NPZ", npz)
    monkeypatch.setattr(peft_defaults, "CIFAR_CHOICE", 100)
    source = peft_defaults.task_data("cifar10-choice", tmp_path / "work")["source"]
    with np.load(source) as z:
        train, held = set(z["x_train"][:, 0]), set(z["x_test"][:, 0])
        assert len(train) == 400 and len(held) == 100 and not train & held and train | held == set(range(500))
        assert np.bincount(z["y_test"]).tolist() == [10] * 10  # stratified
        assert -1 not in held  # the test split is not in it


def test_peft_defaults_scores_the_held_out_task_at_its_last_epoch(bench_modules, tmp_path, monkeypatch):
    # hymenoptera val picks the checkpoint (best epoch); CIFAR-10 test picks nothing, so its score is the last epoch's
    import types

    import peft_defaults
    import yaml

    import hftransfer

    seen = []

    def fake_train(config):
        seen.append(config)
        out = Path(config["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        history = [{"epoch": 1, "eval_accuracy": 0.9, "train_time_s": 1.0, "train_samples_per_s": 10.0},
                   {"epoch": 2, "eval_accuracy": 0.8, "train_time_s": 2.0, "train_samples_per_s": 10.0}]
        (out / "metrics.json").write_text(json.dumps({"history": history, "best_epoch": 1,
                                                      "final_eval": {"accuracy": 0.9}}))
        (out / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": 1e-3}, "method": {}}))
        return types.SimpleNamespace(output_dir=out)

    monkeypatch.setattr(hftransfer, "train", fake_train)
    picked = peft_defaults.run_row("adapter", {"optim": {"lr": 3e-3}}, 0, tmp_path, "hymenoptera")
    held_out = peft_defaults.run_row("adapter", {}, 0, tmp_path, "cifar10")
    assert picked["accuracy"] == 0.9 and held_out["accuracy"] == 0.8
    assert held_out["split"].startswith("test") and picked["split"].startswith("val")
    assert seen[0]["model"] == {"name": peft_defaults.VISION_MODEL, "image_size": 224}
    assert seen[0]["optim"] == {"lr": 3e-3} and seen[0]["epochs"] == 10
    assert seen[1]["model"]["image_size"] == 96 and seen[1]["epochs"] == 3
    assert seen[0]["data"] == {"source": str(peft_defaults.HYMENOPTERA)}


def test_training_table_dates_each_row_and_marks_a_speed_ratio_across_machines(bench_modules):
    # The machine changes between sessions: a speed ratio between rows of two machines must say so.
    _, report, _ = bench_modules

    def row(tool, started, samples_per_s):
        return {"spec": {"kind": "text", "dataset": "sst2", "method": "lora", "tool": tool},
                "result": {"ok": True, "samples_per_s": samples_per_s, "samples_per_cpu_s": samples_per_s / 2,
                           "train_time_s": 1.0, "wall_s": 2.0, "accuracy": 0.9, "started": started}}

    rows = {"sst2/lora/hftransfer": row("hftransfer", "2026-12-05T03:00:00", 30.0),
            "sst2/lora/peer": row("peer", "2026-12-05T03:10:00", 10.0)}
    lines = report.training_table({"rows": rows})
    assert lines[0].endswith("| others' CPU | date |") and lines[1].count("|") == lines[0].count("|")
    ours = next(line for line in lines if "| hftransfer |" in line)
    assert "| 30.0 | 3.00 | 15.0 | 3.00 |" in ours and ours.endswith("| 2026-12-05 |")
    rows["sst2/lora/peer"]["result"]["started"] = "2026-11-25T18:00:00"
    ours = next(line for line in report.training_table({"rows": rows}) if "| hftransfer |" in line)
    assert "| 3.00 (machines differ) |" in ours and ours.count("(machines differ)") == 2
    assert next(line for line in report.training_table({"rows": rows}) if "| peer |" in line).endswith(
        "| 2026-11-25 |")
    # one day can span two sessions on two machines: rows that name their CPU are compared by it too
    rows["sst2/lora/peer"]["result"].update(started="2026-12-05T01:00:00", cpu="AMD EPYC (family 25 model 17)")
    rows["sst2/lora/hftransfer"]["result"]["cpu"] = "Intel(R) Xeon(R) Processor (family 6 model 167)"
    ours = next(line for line in report.training_table({"rows": rows}) if "| hftransfer |" in line)
    assert ours.count("(machines differ)") == 2
    assert ours.endswith("| 2026-12-05, Intel(R) Xeon(R) Processor (family 6 model 167) |")
    rows["sst2/lora/peer"]["result"]["cpu"] = rows["sst2/lora/hftransfer"]["result"]["cpu"]
    ours = next(line for line in report.training_table({"rows": rows}) if "| hftransfer |" in line)
    assert "(machines differ)" not in ours


def test_peft_defaults_refuses_new_defaults_rows_once_the_registration_changed(bench_modules, tmp_path, monkeypatch):
    import peft_defaults

    # adapter's image rate moved from 1e-3 to 3e-3 after the stored `{}` row ran
    assert peft_defaults.registered_lr("adapter", "hymenoptera") == 3e-3
    assert peft_defaults.registered_lr("ia3", "sst2") == 1e-2
    stored = {"task": "hymenoptera", "method": "adapter", "overrides": {}, "seed": 0, "accuracy": 0.9, "lr": 1e-3,
              "best_epoch": 1, "per_epoch": [0.9], "split": "val", "train_samples_per_s": 1.0, "date": "2026-12-05"}
    out = tmp_path / "results"
    out.mkdir()
    (out / "peft_defaults.json").write_text(json.dumps(
        {"rows": {"hymenoptera/adapter/{}/seed0": stored}, "commands": []}))
    (tmp_path / "hymenoptera" / "val").mkdir(parents=True)
    monkeypatch.setattr(peft_defaults, "HYMENOPTERA", tmp_path / "hymenoptera")
    ran = []

    def fake_run(method, overrides, seed, work, task="sst2"):
        ran.append((method, json.dumps(overrides), seed))
        lr = (overrides.get("optim") or {}).get("lr", peft_defaults.registered_lr(method, task))
        return {**stored, "overrides": overrides, "seed": seed, "lr": lr}

    monkeypatch.setattr(peft_defaults, "run_row", fake_run)
    common = ["--task", "hymenoptera", "--methods", "adapter", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    with pytest.raises(SystemExit):  # a second `{}` seed would run at 3e-3 under the label of the 1e-3 row
        peft_defaults.main([*common, "--seeds", "2"])
    assert ran == []
    assert "adapter (stored `defaults` rows ran at lr 0.001; registered now: 0.003)" in \
        peft_defaults.stale_defaults(json.loads((out / "peft_defaults.json").read_text()), "hymenoptera", ["adapter"])
    # one seed: the stored `{}` row is kept, only the other candidates run
    assert peft_defaults.main([*common, "--seeds", "1"]) == 0
    assert ran and all(overrides != "{}" for _, overrides, _ in ran)


def test_peft_defaults_sees_a_changed_default_of_a_method_option(bench_modules):
    import peft_defaults

    now = peft_defaults.registered_method_defaults("prefix_tuning")
    assert now["backbone_dropout"] is False and now["num_virtual_tokens"] == 20
    row = {"task": "sst2", "method": "prefix_tuning", "overrides": {}, "lr": 1e-2}
    results = {"rows": {"a": {**row, "method_defaults": {**now, "backbone_dropout": True}}}}
    assert peft_defaults.stale_defaults(results, "sst2", ["prefix_tuning"]) == [
        "prefix_tuning (stored `defaults` rows ran with method.backbone_dropout=True; registered now: "
        "backbone_dropout=False)"]
    results["rows"]["a"]["method_defaults"] = now
    assert peft_defaults.stale_defaults(results, "sst2", ["prefix_tuning"]) == []


def test_cpu_tag_names_the_model_and_its_bf16_path(bench_modules, monkeypatch):
    import common

    info = {"model name": "Intel(R) Xeon(R) Processor", "cpu family": "6", "model": "143",
            "flags": "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile"}
    monkeypatch.setattr(common, "_cpuinfo", lambda: dict(info))
    assert common.cpu_tag() == "Intel(R) Xeon(R) Processor (family 6 model 143, AMX bf16)"
    info["flags"] = "fpu avx2 avx512f avx512_bf16"
    assert common.cpu_tag().endswith(", AVX-512 bf16)")
    info["flags"] = "fpu avx2"
    assert common.cpu_tag().endswith(", no native bf16)")
    assert common._cpuinfo is not None and isinstance(common.machine_info()["cpu"], str)


def test_code_commit_names_the_commit_and_says_when_the_code_differs_from_it(bench_modules, monkeypatch, tmp_path):
    import common

    monkeypatch.setattr(common, "REPO_ROOT", tmp_path)
    assert common.code_commit() == ""  # not a git checkout: no commit, never a wrong one
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,  # noqa: E731
                                       text=True).stdout.strip()
    git("init", "-q")
    (tmp_path / "hftransfer").mkdir()
    (tmp_path / "bench" / "results").mkdir(parents=True)
    for name in ("hftransfer/core.py", "bench/run.py", "bench/results/x.json"):
        (tmp_path / name).write_text("a")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git("rev-parse", "--short", "HEAD")
    assert common.code_commit() == head
    (tmp_path / "bench/results/x.json").write_text("b")  # a results file the bench itself writes: still clean
    assert common.code_commit() == head
    (tmp_path / "hftransfer/core.py").write_text("b")
    assert common.code_commit() == head + "+uncommitted"

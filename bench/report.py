"""results.json -> RESULTS.md (tables, goals met/missed) and accuracy_vs_time.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any


BENCH_DIR = Path(__file__).resolve().parent
NOTES_FILE = BENCH_DIR / "results_notes.md"  # hand-written analysis appended to RESULTS.md
MODES = ("full", "quick", "smoke")
TEXT_LORA_VARIANTS = (None, "pooler-head", "default-targets")  # the text LoRA rows judged against the goals


# ------------------------------------------------------------------------------------------------------ helpers


def _ok_rows(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished seed-0 rows (a row's further seeds are summarised in ``seeds_section`` only)."""
    return {k: v for k, v in run.get("rows", {}).items() if v["result"].get("ok") and not v["spec"].get("seed_index")}


def seed_groups(run: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """{plain row id: {seed index: finished row}} for the rows that have at least one further seed."""
    rows = run.get("rows", {})
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows.values():
        spec = row["spec"]
        if spec.get("seed_index") and row["result"].get("ok"):
            groups.setdefault(spec["seed_of"], {})[spec["seed_index"]] = row
    for base_id, group in groups.items():
        base = rows.get(base_id)
        if base and base["result"].get("ok"):
            group[0] = base
    return groups


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _label(spec: dict[str, Any]) -> str:
    method = spec["method"] + (f" ({spec['variant']})" if spec.get("variant") else "")
    if spec.get("method") == "lora" and spec["kind"] == "text":
        targets = spec.get("lora_targets")
        method += " q,v" if targets == ["query", "value"] else ""
    return method


# --------------------------------------------------------------------------------------------------------- goals


def _find(runs: dict[str, Any], pred) -> tuple[str, dict[str, Any]] | tuple[None, None]:
    """The first row matching ``pred`` in full mode, else in quick mode."""
    for mode in MODES:
        for row in _ok_rows(runs.get(mode, {})).values():
            if pred(row["spec"]):
                return mode, row
    return None, None


def _row(runs, mode, pred):
    for row in _ok_rows(runs.get(mode, {})).values():
        if pred(row["spec"]):
            return row
    return None


def _first_mode(runs, pred) -> list[str]:
    """[the first of MODES holding an ok row matching ``pred``] (a goal is judged on one mode only)."""
    for mode in MODES:
        if any(pred(row["spec"]) for row in _ok_rows(runs.get(mode, {})).values()):
            return [mode]
    return []


def _tag(mode: str | None, status: str) -> str:
    return status if mode == "full" else f"{status} ({mode} mode only)"


# What limits a parameter-efficient method's accuracy goal when it is missed (measured, see results_notes.md).
PEFT_LIMITS = {
    "adapter": "one seed: the goal is judged on the seed-paired mean (the several-seeds lines); defaults searched "
               "off dev (reduction_factor 4; lr 1e-3 on text, chosen on the whole train set: "
               "bench/results/peft_defaults.md)",
    "prefix_tuning": "prompt methods need many more steps than 2 epochs on a 22M-parameter encoder (P-Tuning v2 "
                     "reports parity on >= 300M-parameter models)",
}


def evaluate_goals(runs: dict[str, Any]) -> list[dict[str, str]]:
    goals: list[dict[str, str]] = []

    def add(goal, target, measured, met, mode, limit=""):
        status = "no data" if met is None else ("MET" if met else "MISSED")
        goals.append({"goal": goal, "target": target, "measured": measured,
                      "status": status if met is None else _tag(mode, status), "limit": "" if met else limit})

    # 1. text LoRA speed at equal accuracy (the q,v targets on both sides; plus hftransfer's defaults)
    modes = _first_mode(runs, lambda s: s["kind"] == "text" and s["method"] == "lora" and s["tool"] == "peer")
    for mode in modes:
        peer = _row(runs, mode, lambda s: s["kind"] == "text" and s["method"] == "lora" and s["tool"] == "peer")
        for variant in TEXT_LORA_VARIANTS:
            ours = _row(runs, mode, lambda s, v=variant: s["kind"] == "text" and s["method"] == "lora"
                        and s["tool"] == "hftransfer" and s.get("variant") == v)
            if not ours:
                continue
            o, p = ours["result"], peer["result"]
            speed = o["samples_per_s"] / p["samples_per_s"]
            cpu = _ratio(o.get("samples_per_cpu_s"), p.get("samples_per_cpu_s"))
            dacc = 100 * (o["accuracy"] - p["accuracy"])
            targets = ",".join(o.get("lora_targets") or []) + (f"; {variant}" if variant else "")
            add(f"Text `lora` ({targets}) speed vs Trainer+PEFT (query,value) at equal dev accuracy "
                f"[{ours['spec']['dataset']}]", ">= 2x samples/s, acc >= peer - 0.5 pt",
                f"{speed:.2f}x samples/s ({_f(o['samples_per_s'])} vs {_f(p['samples_per_s'])}; per CPU-s "
                f"{_f(cpu, 2)}x), dev acc {_pct(o['accuracy'])} vs {_pct(p['accuracy'])} ({dacc:+.2f} pt)",
                speed >= 2 and dacc >= -0.5, mode,
                ("speed: more adapters (all projections) cost compute" if speed < 2 else "")
                + (" and " if speed < 2 and dacc < -0.5 else "")
                + ("accuracy: " + ("different head (mean pooling + new linear head vs the peer's pretrained pooler)"
                                   if variant != "pooler-head" else "same head; different batch order and numerics")
                   if dacc < -0.5 else ""))
    if not modes:
        add("Text `lora` speed vs Trainer+PEFT", ">= 2x", "not run", None, None)

    # 2. linear probe 10 epochs
    for dataset_kind in ("text", "vision"):
        seen = set()
        for mode in _first_mode(runs, lambda s, k=dataset_kind: s["kind"] == k and s["method"] == "linear_probe"):
            for row in _ok_rows(runs.get(mode, {})).values():
                s = row["spec"]
                if (s["kind"] != dataset_kind or s["method"] != "linear_probe" or s["tool"] != "hftransfer"
                        or s["dataset"] in seen):
                    continue
                peer = _row(runs, mode, lambda t, s=s: t["dataset"] == s["dataset"] and t["method"] == "linear_probe"
                            and t["tool"] == "peer")
                if not peer:
                    continue
                seen.add(s["dataset"])
                o, p = row["result"], peer["result"]
                speed = p["train_time_s"] / o["train_time_s"]
                dacc = 100 * (o["accuracy"] - p["accuracy"])
                add(f"`linear_probe` 10 epochs faster than frozen-backbone peer [{s['dataset']}]",
                    ">= 8x faster, equal accuracy (>= peer - 0.5 pt)",
                    f"{speed:.1f}x ({_f(o['train_time_s'])} s vs {_f(p['train_time_s'])} s incl. feature "
                    f"extraction), acc {_pct(o['accuracy'])} vs {_pct(p['accuracy'])} ({dacc:+.2f} pt)",
                    speed >= 8 and dacc >= -0.5, mode,
                    "fixed costs: one feature pass over train + validation, process start" if speed < 8 else
                    "accuracy: different pooling/head")

    # 3. vision full vs tutorial loop and vs the bare model
    seen = set()
    for mode in _first_mode(runs, lambda s: s["kind"] == "vision" and s["method"] == "full"):
        for row in _ok_rows(runs.get(mode, {})).values():
            s = row["spec"]
            if s["kind"] != "vision" or s["method"] != "full" or s["tool"] != "hftransfer" or s["dataset"] in seen:
                continue
            seen.add(s["dataset"])
            peer = _row(runs, mode, lambda t, s=s: t["dataset"] == s["dataset"] and t["method"] == "full"
                        and t["tool"] == "peer")
            bare = _row(runs, mode, lambda t, s=s: t["kind"] == "bare" and t["dataset"] == s["dataset"])
            o = row["result"]
            if peer:
                p = peer["result"]
                speed = o["samples_per_s"] / p["samples_per_s"]
                cpu = _ratio(o.get("samples_per_cpu_s"), p.get("samples_per_cpu_s"))
                add(f"Vision `full` vs tutorial loop [{s['dataset']} @ {s['image_size']} px]", ">= 4x img/s",
                    f"{speed:.2f}x ({_f(o['samples_per_s'])} vs {_f(p['samples_per_s'])} img/s; per CPU-s "
                    f"{_f(cpu, 2)}x)", speed >= 4, mode, "the model: even the bare model in fp32 channels_last is "
                    "only "
                    "~2x the tutorial loop on a quiet machine")
            if bare:
                variant = "fp32_channels_last" if row["spec"].get("channels_last", True) else "fp32"
                b = bare["result"]["variants"].get(variant, {}).get("train_fwd_bwd_img_per_s")
                if b:
                    frac = o["samples_per_s"] / b
                    add(f"Vision `full` vs bare model fwd+bwd [{s['dataset']} @ {s['image_size']} px]",
                        ">= 85% of bare (same size, fp32 + channels_last)",
                        f"{100 * frac:.0f}% ({_f(o['samples_per_s'])} vs {_f(b)} img/s)", frac >= 0.85, mode,
                        "per-step data loading is a larger share of a step at low resolution")

    # 4. LoRA memory vs full, merged LoRA latency
    seen = set()
    lora_modes = [(m, k) for k in ("text", "vision")
                  for m in _first_mode(runs, lambda s, k=k: s["kind"] == k and s["method"] == "lora")]
    for mode, kind in lora_modes:
        for row in _ok_rows(runs.get(mode, {})).values():
            s = row["spec"]
            if (s["kind"] != kind or s["method"] != "lora" or s["tool"] != "hftransfer"
                    or s.get("variant") not in (None, "grad-ckpt") or (s["dataset"], s.get("variant")) in seen):
                continue
            full = _row(runs, mode, lambda t, s=s: t["dataset"] == s["dataset"] and t["method"] == "full"
                        and t["tool"] == "hftransfer" and not t.get("variant"))
            if not full:
                continue
            seen.add((s["dataset"], s.get("variant")))
            lm, fm = row["result"].get("train_mem_mb"), full["result"].get("train_mem_mb")
            ratio = _ratio(lm, fm)
            which = "`lora` + gradient checkpointing" if s.get("variant") else "`lora`"
            cost = ""
            if s.get("variant"):
                plain = _row(runs, mode, lambda t, s=s: t["dataset"] == s["dataset"] and t["method"] == "lora"
                             and t["tool"] == "hftransfer" and not t.get("variant"))
                peer = _row(runs, mode, lambda t, s=s: t["dataset"] == s["dataset"] and t["method"] == "lora"
                            and t["tool"] == "peer")
                speed = row["result"]["samples_per_s"]
                cost = (f"; speed {_f(speed)} samples/s = "
                        + (f"{_f(speed / plain['result']['samples_per_s'], 2)}x plain `lora`" if plain else "")
                        + (f", {_f(speed / peer['result']['samples_per_s'], 2)}x the peer's `lora`" if peer else ""))
            add(f"{which} training memory vs `full` [{s['dataset']}]", "<= 0.7x (peak RSS - RSS once loaded)",
                f"{_f(ratio, 2)}x ({_f(lm)} MB vs {_f(fm)} MB){cost}", ratio is not None and ratio <= 0.7, mode,
                "activations dominate; LoRA only saves grads + optimizer state of frozen weights")
    for modality in ("image", "text"):
        for mode in _first_mode(runs, lambda s, m=modality: s["kind"] == "latency" and s.get("modality") == m):
            row = _row(runs, mode, lambda s, m=modality: s["kind"] == "latency" and s.get("modality") == m)
            r = row["result"]
            parts, worst = [], 0.0
            for key, val in r.items():
                if key.startswith("batch_") and isinstance(val, dict):
                    parts.append(f"batch {key[6:]}: {val['merged_over_plain']:.3f}x "
                                 f"({val['merged_lora']['median_ms']:.1f} vs {val['plain']['median_ms']:.1f} ms; "
                                 f"unmerged {val['unmerged_over_plain']:.2f}x)")
                    worst = max(worst, val["merged_over_plain"])
            add(f"Merged LoRA inference vs plain backbone [{r['modality']}]", "within 5% (<= 1.05x)",
                "; ".join(parts), worst <= 1.05, mode, "timing noise: architectures are identical after merging")

    # 5. accuracy
    text_full_mode, text_full = _find(runs, lambda s: s["kind"] == "text" and s["method"] == "full"
                                      and s["tool"] == "hftransfer" and not s.get("variant"))
    if text_full:
        acc = text_full["result"]["accuracy"]
        longer = [row for row in _ok_rows(runs.get(text_full_mode, {})).values()
                  if row["spec"]["kind"] == "text" and row["spec"]["method"] == "full"
                  and row["spec"]["tool"] == "hftransfer" and row["spec"].get("variant")]
        for row in [text_full, *longer]:
            spec, row_acc = row["spec"], row["result"]["accuracy"]
            lr = f", lr {spec['lr']:g}" if spec.get("lr") is not None else ""
            add(f"MiniLM `full` SST-2 dev accuracy (full train set) [{spec['dataset']}, {spec['epochs']} ep{lr}]",
                ">= 91.0%", f"{_pct(row_acc)}% (best epoch "
                f"{_pct(row['result'].get('accuracy_best'))}%)",
                row_acc >= 0.91 and spec["max_train"] is None, text_full_mode,
                "trained on a subset only (quick mode)" if spec["max_train"] else
                "the checkpoint: all-MiniLM-L6-v2 is a sentence-embedding model (contrastive training after "
                "distillation), not the GLUE-distilled MiniLM of the published figures; no wider search")
        for variant in TEXT_LORA_VARIANTS:
            lora = _row(runs, text_full_mode, lambda s, v=variant: s["kind"] == "text" and s["method"] == "lora"
                        and s["tool"] == "hftransfer" and s.get("variant") == v)
            if lora:
                gap = 100 * (acc - lora["result"]["accuracy"])
                targets = ",".join(lora["result"].get("lora_targets") or []) + (f"; {variant}" if variant else "")
                add(f"MiniLM `lora` ({targets}) within 1 point of `full` (same epochs) [{lora['spec']['dataset']}]",
                    "full - lora <= 1.0 pt", f"{_pct(lora['result']['accuracy'])}% vs {_pct(acc)}% ({gap:+.2f} pt)",
                    gap <= 1.0, text_full_mode, "adapter capacity (q,v only) at equal epochs")
    # 6. issue 10: the parameter-efficient family beside `full` and its peers (SST-2, same run)
    if text_full:
        for method, gap_goal in (("adapter", 1.0), ("prefix_tuning", 3.0)):
            ours = _row(runs, text_full_mode, lambda s, m=method: s["kind"] == "text" and s["method"] == m
                        and s["tool"] == "hftransfer" and not s.get("variant"))
            if ours:
                gap = 100 * (acc - ours["result"]["accuracy"])
                add(f"MiniLM `{method}` within {gap_goal:g} pt of `full` [{ours['spec']['dataset']}]",
                    f"full - {method} <= {gap_goal:g} pt",
                    f"{_pct(ours['result']['accuracy'])}% vs {_pct(acc)}% ({gap:+.2f} pt)",
                    gap <= gap_goal, text_full_mode, PEFT_LIMITS.get(method, ""))
        # with the registered defaults: 3 epochs (every recipe's default) at each method's registered text lr
        full3 = _row(runs, text_full_mode, lambda s: s["kind"] == "text" and s["method"] == "full"
                     and s["tool"] == "hftransfer" and s.get("variant") == "3ep-lr5e-5")
        for method, gap_goal in (("adapter", 1.0), ("prefix_tuning", 3.0)):
            ours3 = _row(runs, text_full_mode, lambda s, m=method: s["kind"] == "text" and s["method"] == m
                         and s["tool"] == "hftransfer" and s.get("variant") == "3ep")
            if not (full3 and ours3):
                continue
            a, f = ours3["result"], full3["result"]
            gap = 100 * (f["accuracy"] - a["accuracy"])
            add(f"MiniLM `{method}` within {gap_goal:g} pt of `full`, both at the registered defaults (3 epochs; "
                f"full lr {full3['spec']['lr']:g}, {method} lr {ours3['spec']['lr']:g}) [{ours3['spec']['dataset']}]",
                f"full - {method} <= {gap_goal:g} pt", f"{_pct(a['accuracy'])}% vs {_pct(f['accuracy'])}% "
                f"({gap:+.2f} pt); {_f(a['samples_per_s'])} vs {_f(f['samples_per_s'])} samples/s (runs of "
                f"{_date(a)} and {_date(f)})", round(gap, 6) <= gap_goal,
                text_full_mode, PEFT_LIMITS[method])
    for method in ("ia3", "prefix_tuning"):
        mode, ours = _find(runs, lambda s, m=method: s["kind"] == "text" and s["method"] == m
                           and s["tool"] == "hftransfer" and not s.get("variant"))
        if not ours:
            continue
        entry = runs.get(mode, {}).get("rows", {}).get(ours["spec"]["id"].replace("/hftransfer", "/peer"))
        goal = f"Text `{method}` speed vs Trainer+PEFT at equal dev accuracy [{ours['spec']['dataset']}]"
        if entry is None:
            add(goal, ">= 2x samples/s, acc >= peer - 0.5 pt", "peer not run", None, mode)
        elif not entry["result"].get("ok"):
            add(goal, ">= 2x samples/s, acc >= peer - 0.5 pt",
                f"no peer number: PEFT fails on this model ({entry['result'].get('error', '')[:160]}); ours runs at "
                f"{_f(ours['result']['samples_per_s'])} samples/s, {_pct(ours['result']['accuracy'])}%", None, mode)
        else:
            o, p_ = ours["result"], entry["result"]
            speed, dacc = o["samples_per_s"] / p_["samples_per_s"], 100 * (o["accuracy"] - p_["accuracy"])
            add(goal, ">= 2x samples/s, acc >= peer - 0.5 pt",
                f"{speed:.2f}x ({_f(o['samples_per_s'])} vs {_f(p_['samples_per_s'])}), dev acc {_pct(o['accuracy'])} "
                f"vs {_pct(p_['accuracy'])} ({dacc:+.2f} pt)", speed >= 2 and dacc >= -0.5, mode,
                "speed" if speed < 2 else "accuracy")
    for method, target in (("linear_probe", 0.93), ("full", 0.95)):
        mode, row = _find(runs, lambda s, m=method: s["kind"] == "vision" and s["dataset"] == "hymenoptera"
                          and s["method"] == m and s["tool"] == "hftransfer")
        if row:
            acc = row["result"]["accuracy"]
            add(f"EfficientNet-Lite0 hymenoptera `{method}` val accuracy [{row['spec']['image_size']} px, "
                f"{row['spec']['epochs']} ep]", f">= {100 * target:.0f}%",
                f"{_pct(acc)}% (last epoch; best epoch {_pct(row['result'].get('accuracy_best'))}%)",
                acc >= target, mode, "153 val images (1 image = 0.65 pt), epoch-to-epoch swings of +-2 pt; 5 other "
                "settings also ended below 95% (notes)")
    return goals


# ------------------------------------------------------------------------------------------------------- tables


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var ** 0.5


SEED_GAP_GOALS = (("adapter", 1.0), ("prefix_tuning", 3.0))  # issue 22: with defaults, against `full`, over seeds


def seeds_section(run: dict[str, Any]) -> list[str]:
    """Rows run with several seeds: accuracy mean +- std, and the issue-22 gaps to `full` paired by seed."""
    groups = seed_groups(run)
    if not groups:
        return []
    lines = ["| dataset | method | tool | seeds | val acc % (mean ± std) | per seed "
             "| train samples/s per seed (date) |", "|---|---|---|---:|---:|---|---|"]
    for _, group in sorted(groups.items()):
        spec = group[min(group)]["spec"]
        accs = [100 * group[i]["result"]["accuracy"] for i in sorted(group)]
        mean, std = _mean_std(accs)
        speeds = ", ".join(f"{_f(res['samples_per_s'])} ({_date(res)})"
                           for res in (group[i]["result"] for i in sorted(group)))
        lines.append(f"| {spec['dataset']} | {_label(spec)} | {spec['tool']} | {len(group)} | {mean:.2f} ± {std:.2f} "
                     f"| {', '.join(f'{a:.2f}' for a in accs)} (seeds {', '.join(map(str, sorted(group)))}) "
                     f"| {speeds} |")
    lines += ["", "Speeds of different machines are not comparable: the machine differs between sessions (compare "
              "rows of one date and CPU).", ""]
    for _, group in sorted(groups.items()):
        spec = group[min(group)]["spec"]
        full = groups.get("/".join((spec["dataset"], "full", spec["tool"])))
        goal = dict(SEED_GAP_GOALS).get(spec["method"])
        if goal is None or spec.get("variant") or not full:
            continue
        paired = sorted(set(group) & set(full))
        if not paired:
            continue
        gaps = [100 * (full[i]["result"]["accuracy"] - group[i]["result"]["accuracy"]) for i in paired]
        gap, std = _mean_std(gaps)
        status = "met" if round(gap, 6) <= goal else "missed"  # 1.0000000001 is 1 point
        lines.append(f"- `{spec['method']}` within {goal:g} pt of `full` [{spec['dataset']}], mean over "
                     f"{len(paired)} paired seed(s): full - {spec['method']} = {gap:+.2f} ± {std:.2f} pt "
                     f"(per seed {', '.join(f'{g:+.2f}' for g in gaps)}) -> **{status}**")
    return lines



def training_table(run: dict[str, Any]) -> list[str]:
    rows = run.get("rows", {})
    lines = ["| dataset | method | tool | train samples/s | ratio | samples/CPU-s | ratio | train time s | wall s "
             "| train mem MB | ratio (vs full) | peak RSS MB | val acc % | Δ acc pt | trainable params | cores used "
             "| others' CPU | date |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows.values():
        spec, res = row["spec"], row["result"]
        if spec["kind"] not in ("text", "vision") or spec.get("seed_index"):
            continue
        if not res.get("ok"):
            error = res.get("error", "")[:80]
            lines.append(f"| {spec['dataset']} | {_label(spec)} | {spec['tool']} | FAILED: {error} "
                         f"| | | | | | | | | | | | | | {_date(res)} |")
            continue
        peer = rows.get("/".join((spec["dataset"], spec["method"], "peer")))
        peer_res = peer["result"] if peer and peer["result"].get("ok") else None
        full = rows.get("/".join((spec["dataset"], "full", spec["tool"])))
        full_res = full["result"] if full and full["result"].get("ok") else None
        is_ours = spec["tool"] == "hftransfer"
        speed = _ratio(res["samples_per_s"], peer_res["samples_per_s"]) if is_ours and peer_res else None
        cpu = (_ratio(res.get("samples_per_cpu_s"), peer_res.get("samples_per_cpu_s"))
               if is_ours and peer_res else None)
        apart = " (machines differ)" if speed is not None and not _same_machine(res, peer_res) else ""
        dacc = 100 * (res["accuracy"] - peer_res["accuracy"]) if is_ours and peer_res else None
        mem_ratio = (_ratio(res.get("train_mem_mb"), full_res.get("train_mem_mb"))
                     if full_res and spec["method"] != "full" else None)
        cores = _ratio(res.get("train_cpu_s"), res.get("train_time_s"))
        busy = res.get("interference", res.get("cpu_busy_before"))
        lines.append(
            f"| {spec['dataset']}{' @' + str(spec['image_size']) + 'px' if spec.get('image_size') else ''} "
            f"| {_label(spec)} | {spec['tool']} | {_f(res['samples_per_s'])} | {_f(speed, 2)}{apart} "
            f"| {_f(res.get('samples_per_cpu_s'))} | {_f(cpu, 2)}{apart} | {_f(res['train_time_s'])} "
            f"| {_f(res['wall_s'])} "
            f"| {_f(res.get('train_mem_mb'))} | {_f(mem_ratio, 2)} | {_f(res.get('peak_rss_mb'))} "
            f"| {_pct(res['accuracy'])} | {'–' if dacc is None else f'{dacc:+.2f}'} "
            f"| {_f(res.get('trainable_params'))} | {_f(cores, 2)} | {'–' if busy is None else f'{busy:.0%}'} "
            f"| {_date(res)} |")
    return lines


def _date(result: dict[str, Any]) -> str:
    """The day a row ran, and its CPU where recorded (rows of 2026-12-05 on; earlier ones did not record it)."""
    day = (result.get("started") or "?")[:10]
    return f"{day}, {result['cpu']}" if result.get("cpu") else day


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two rows' speeds are comparable: same day and, where both recorded it, the same CPU (one day can span
    two sessions on two machines)."""
    same_day = (a.get("started") or "?")[:10] == (b.get("started") or "?")[:10]
    return same_day and (not a.get("cpu") or not b.get("cpu") or a["cpu"] == b["cpu"])


def bare_table(run: dict[str, Any]) -> list[str]:
    lines = ["| input | variant | train fwd+bwd samples/s | inference samples/s | compile s |",
             "|---|---|---:|---:|---:|"]
    for row in run.get("rows", {}).values():
        spec, res = row["spec"], row["result"]
        if spec["kind"] != "bare" or not res.get("ok"):
            continue
        for variant, v in res["variants"].items():
            if spec.get("modality") == "text":
                shape = f"MiniLM, {spec['batch_size']} x {spec['packed_tokens']} tokens, bf16"
                train, infer = v["train_fwd_bwd_seq_per_s"], None
            else:
                side = spec["image_size"]
                shape = f"{spec['dataset']} shape ({spec['batch_size']}, 3, {side}, {side})"
                train, infer = v["train_fwd_bwd_img_per_s"], v["inference_img_per_s"]
            lines.append(f"| {shape} | {variant} | {_f(train)} | {_f(infer)} | {_f(v.get('compile_s'))} |")
    return lines


def fixed_length_section(runs: dict[str, Any]) -> list[str]:
    """Issue 13: fixed-length text rows with the share of the measured bf16 matmul peak, compile on/off, and the
    vision compile row; goals judged within one mode's rows (same run)."""
    lines: list[str] = []
    for mode in MODES:
        rows = _ok_rows(runs.get(mode, {}))
        packed = {k: r for k, r in rows.items() if r["spec"]["dataset"].startswith("sst2-packed")}
        if not packed:
            continue
        bare = next((r["result"] for r in packed.values() if r["spec"]["kind"] == "bare"), None)
        peak = bare["bf16_matmul_peak_flop_s"] if bare else None
        lines += [f"## Fixed length: every text 128 tokens ({mode} mode, issue 13)", "",
                  "SST-2 sentences of one label concatenated until they fill 128 MiniLM tokens (an easier task than "
                  "single sentences: accuracy is on the dev sentences packed the same way). Share of peak = "
                  "sequences/s x training FLOPs per sequence / the bf16 matmul FLOP/s measured in the bare row "
                  f"({_f(peak / 1e12 if peak else None, 2)} TFLOP/s). Compile time is reported apart.", "",
                  "| row | samples/s | vs peer | vs eager default | dev acc % | compile s | share of bf16 peak |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for key, row in packed.items():
            spec, res = row["spec"], row["result"]
            if spec["kind"] != "text":
                continue
            peer = rows.get("/".join((spec["dataset"], spec["method"], "peer")))
            ratio = _ratio(res["samples_per_s"], peer["result"]["samples_per_s"]) if peer and spec["tool"] != "peer" \
                else None
            share = _peak_share(res["samples_per_s"], spec["method"], bare)
            default = rows.get("/".join((spec["dataset"], spec["method"], "hftransfer")))
            alone = _ratio(res["samples_per_s"], default["result"]["samples_per_s"]) \
                if default and spec.get("variant") else None  # one optimisation at a time
            lines.append(f"| {key} | {_f(res['samples_per_s'])} | {_f(ratio, 2)} | {_f(alone, 2)} "
                         f"| {_pct(res['accuracy'])} | {_f(res.get('compile_time_s'))} | {_pct(share)} |")
        if bare and bare.get("variants"):
            speeds = {name: v["train_fwd_bwd_seq_per_s"] for name, v in bare["variants"].items()}
            parts = [f"{name} {_f(x)} seq/s ({_pct(_peak_share(x, 'full', bare))}% of peak)"
                     for name, x in speeds.items()]
            lines += ["", "Bare model, forward+backward only (no optimizer step, no data loading): " + "; ".join(parts)
                      + "."]
        lines += ["", "Goals (issue 13, same run):"]
        for method, target in (("full", 2.0), ("lora", 2.5)):
            ours = packed.get(f"{_packed_name(packed)}/{method}/hftransfer")
            best = max((r for r in packed.values() if r["spec"]["kind"] == "text" and r["spec"]["tool"] == "hftransfer"
                        and r["spec"]["method"] == method), key=lambda r: r["result"]["samples_per_s"], default=None)
            peer = packed.get(f"{_packed_name(packed)}/{method}/peer")
            if ours and peer:
                for label, row in (("default", ours), ("fastest variant", best)):
                    speed = row["result"]["samples_per_s"] / peer["result"]["samples_per_s"]
                    dacc = 100 * (row["result"]["accuracy"] - peer["result"]["accuracy"])
                    met = speed >= target and dacc >= -0.5
                    lines.append(f"- `{method}` {label} ({row['spec'].get('variant') or 'default'}) vs peer: "
                                 f"{speed:.2f}x at {dacc:+.1f} pt (goal >= {target}x at equal accuracy): "
                                 f"**{'met' if met else 'missed'}**")
        full = [r for r in packed.values() if r["spec"]["kind"] == "text" and r["spec"]["tool"] == "hftransfer"
                and r["spec"]["method"] == "full"]
        if full and bare:
            top = max(full, key=lambda r: r["result"]["samples_per_s"])
            share = _peak_share(top["result"]["samples_per_s"], "full", bare)
            lines.append(f"- `full` share of the bf16 peak (best row, {top['spec'].get('variant') or 'default'}): "
                         f"{_pct(share)}% (goal >= 25%): **{'met' if share >= 0.25 else 'missed'}**")
        eager = rows.get("hymenoptera/full/hftransfer")
        compiled = rows.get("hymenoptera/full/compile/hftransfer")
        if eager and compiled:
            speed = compiled["result"]["samples_per_s"] / eager["result"]["samples_per_s"]
            dacc = 100 * (compiled["result"]["accuracy"] - eager["result"]["accuracy"])
            lines.append(f"- Vision 224 px `full` with compile vs eager hftransfer: {speed:.2f}x at {dacc:+.1f} pt "
                         f"(compile {_f(compiled['result'].get('compile_time_s'))} s apart; goal >= 1.3x): "
                         f"**{'met' if speed >= 1.3 else 'missed'}**")
        lines.append("")
    return lines


def _packed_name(packed: dict[str, Any]) -> str:
    return next(iter(packed.values()))["spec"]["dataset"]


def _peak_share(samples_per_s: float, method: str, bare: dict[str, Any] | None) -> float | None:
    if not bare:
        return None
    flop = bare["train_flop_per_seq"]["full" if method == "full" else "frozen_weights"]
    return samples_per_s * flop / bare["bf16_matmul_peak_flop_s"]


def latency_table(run: dict[str, Any]) -> list[str]:
    lines = ["| model | batch | plain ms | merged LoRA ms | merged/plain | unmerged LoRA ms | unmerged/plain |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in run.get("rows", {}).values():
        spec, res = row["spec"], row["result"]
        if spec["kind"] != "latency" or not res.get("ok"):
            continue
        name = ("EfficientNet-Lite0 " + f"{spec.get('image_size')} px, fp32 channels_last"
                if res["modality"] == "image" else "MiniLM-L6 on SST-2 dev sentences, fp32")
        for key, v in res.items():
            if key.startswith("batch_") and isinstance(v, dict):
                lines.append(f"| {name} | {key[6:]} | {v['plain']['median_ms']:.2f} "
                             f"| {v['merged_lora']['median_ms']:.2f} "
                             f"| {v['merged_over_plain']:.3f} | {v['unmerged_lora']['median_ms']:.2f} "
                             f"| {v['unmerged_over_plain']:.3f} |")
    return lines


def render(store: dict[str, Any], out: Path) -> None:
    runs = store.get("runs", {})
    lines = ["# hftransfer benchmark results", "",
             "Generated by `bench/run.py` (see [bench/README.md](../README.md)). hftransfer vs the tools users "
             "would use instead, on this machine, one subprocess per row, hftransfer and its peer back to back. "
             "Ratios are hftransfer / peer. Timings on a shared 2-core machine are noisy: `others' CPU` is the "
             "share of the CPUs other processes used while the row ran (a row above 10% was re-run up to twice and "
             "the least disturbed attempt kept; all attempts are in results.json), `cores used` = CPU seconds / "
             "wall seconds of the training phase (2.0 = both cores all the time; less means waiting for data or "
             "for the CPU), and samples per CPU-second is given next to wall-clock samples/s because it depends less "
             "on what else runs. `date` is the day a row ran and, since 2026-12-05, its CPU: the machine differs "
             "between sessions, so compare speeds of one date and CPU only (a speed ratio between rows of two "
             "machines is marked `(machines differ)`).", ""]
    lines += ["## Goals (issues 5 and 10)", "",
              "Judged on the full-mode rows where they exist, else on the quick-mode rows (marked). The closing note "
              "below explains each miss.", "",
              "| goal | target | measured | status | what limits it (when missed) |", "|---|---|---|---|---|"]
    for g in evaluate_goals(runs):
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | **{g['status']}** | {g['limit']} |")
    lines.append("")
    lines += fixed_length_section(runs)
    for mode in MODES:
        run = runs.get(mode)
        if not run:
            continue
        m = run.get("machine", {})
        lines += [f"## {mode} mode", ""]
        lines += [f"- Machine of the latest invocation: `nproc` = {m.get('nproc')}, CPU `{m.get('cpu_model')}` "
                  "(flags: "
                  f"{', '.join(m.get('cpu_bf16_flags', []))}), {m.get('memory_gb')} GB RAM, torch threads "
                  f"{m.get('torch_threads')}",
                  "- Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
                  f"- hftransfer commit: `{m.get('git_commit')}`"]
        for inv in run.get("invocations", []):
            finished = inv["finished"] or "stopped before the end"
            cpu = f", {inv['cpu']}" if inv.get("cpu") else ""
            lines.append(f"- `{inv['command']}` — {inv['started']} → {finished} ({len(inv['rows'])} rows{cpu})")
        lines += ["", "### Training", ""] + training_table(run)
        seeds = seeds_section(run)
        if seeds:
            lines += ["", "### Several seeds (seed 0 is the row above; seed i trains with torch seed 42 + i)", ""]
            lines += seeds
        bare = bare_table(run)
        if len(bare) > 2:
            lines += ["", "### Bare model, random tensors (batch as in training)", ""] + bare
        lat = latency_table(run)
        if len(lat) > 2:
            lines += ["", "### Inference: merged LoRA vs plain backbone (median of alternating rounds)", ""] + lat
        lines.append("")
    lines += ["## Definitions", "",
              "- **train samples/s**: training samples x epochs / training time. Training time = the training "
              "loop only (no evaluation, no checkpoint saving) for every tool; for hftransfer `linear_probe` it "
              "includes the one-off feature extraction over train+validation.",
              "- **train mem**: peak RSS during training minus RSS once model and data are loaded (main process; "
              "the tutorial loop's DataLoader workers are extra processes, see `peak_rss_with_workers_mb` in "
              "results.json). **peak RSS**: the process's lifetime peak (`ru_maxrss`).",
              "- **val acc**: accuracy of the last epoch on the validation split (SST-2: the 872-sentence dev set; "
              "hymenoptera: val/; CIFAR: x_test). hftransfer itself keeps the best epoch (`accuracy_best` in "
              "results.json).",
              "- **Peers**: text = `AutoModelForSequenceClassification` + `Trainer` (+ PEFT `LoraConfig`), "
              "`DataCollatorWithPadding`, same bf16 setting; vision = the PyTorch transfer-learning tutorial loop "
              "(ImageFolder/in-memory Dataset + transforms, DataLoader(num_workers=2, shuffle=True), "
              "SGD momentum 0.9, "
              "StepLR(7, 0.1)). Same weights, batch size, epochs, learning rate and schedule for both tools.", ""]
    if NOTES_FILE.is_file():
        lines += [NOTES_FILE.read_text(encoding="utf-8").strip(), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(runs, out / "accuracy_vs_time.png")


def plot(runs: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    series: dict[str, list[tuple[str, list[dict]]]] = {}
    for mode in MODES:
        for row in _ok_rows(runs.get(mode, {})).values():
            spec, res = row["spec"], row["result"]
            if spec["kind"] not in ("text", "vision") or not res.get("curve"):
                continue
            panel = f"{spec['dataset']} ({mode})"
            series.setdefault(panel, []).append((f"{spec['tool']} {_label(spec)}", res["curve"]))
    if not series:
        return
    n = len(series)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False)
    for ax, (panel, items) in zip(axes.flat, sorted(series.items())):
        for label, curve in sorted(items):
            xs = [p["train_time_s"] for p in curve]
            ys = [100 * p["accuracy"] for p in curve]
            ax.plot(xs, ys, marker="o", markersize=3, linestyle="-" if label.startswith("hftransfer") else "--",
                    label=label)
        ax.set_title(panel)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("training time (s, log)")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Sweep throughput: the naive loop vs per-configuration batches vs ``sprint_lab.sweeps.run``.

(a) naive: for each configuration, for each question, TransformerLens ``generate`` inside
``with bridge.hooks(...)`` (what a researcher writes first); (b) one batched Hugging Face
``generate`` per configuration under the gate; (c) ``sprint_lab.sweeps.run`` (mixed batches,
per-row masks, prefix KV reuse, shared-prefix attention, finished rows dropped). Two ablations
of (c) show where its speed comes from: without prefix KV reuse, and with the bridge's own
attention instead of shared-prefix attention. Greedy decoding with the same stop
strings everywhere; the correctness tables must agree (divergences are checked to start at a
float near-tie). The naive loop is slow, so by default it runs on a subset of configurations and
every approach is compared in (question x configuration) pairs per second.

    python benchmarks/bench_sweep.py [--layers 0] [--questions 16] [--new-tokens 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from sprint_lab import all_heads, get_template, grade, load_model, load_problems, sweep
from sprint_lab.core.gate import hook_z_name, mask_for, masks_for
from sprint_lab.generation.diagnostics import first_divergence


def _cut(text: str, stop: tuple[str, ...]) -> str:
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def naive(model, problems, configs, template, new_tokens, stop):
    """One TransformerLens generate call per (configuration, question)."""
    answers = {}
    for config in configs:
        heads = [] if config == "none" else [config]
        mask = mask_for(model, heads)
        hooks = []
        for layer in {int(label[1:].split("H")[0]) for label in heads}:
            keep = mask[layer]

            def zero(z, hook, keep=keep):
                return z * keep.to(z.dtype)[None, None, :, None]

            hooks.append((hook_z_name(layer), zero))
        for problem in problems:
            prompt = template.render(problem.question, model.tokenizer)
            tokens = model.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            with model.bridge.hooks(fwd_hooks=hooks):
                out = model.bridge.generate(
                    tokens.input_ids,
                    max_new_tokens=new_tokens,
                    do_sample=False,
                    stop_strings=list(stop),
                    return_type="tokens",
                    verbose=False,
                )
            text = model.tokenizer.decode(
                out[0, tokens.input_ids.shape[1] :], skip_special_tokens=True
            )
            answers[(problem.id, config)] = _cut(text, stop)
    return answers


def per_config(model, problems, configs, template, new_tokens, stop, batch_size):
    """One left-padded HF generate per configuration (questions batched), under the gate."""
    from sprint_lab import head_mask

    answers = {}
    tok = model.tokenizer
    prompts = [template.render(p.question, tok) for p in problems]
    for config in configs:
        mask = mask_for(model, [] if config == "none" else [config])
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode(), head_mask(model, mask):
                out = model.hf_model.generate(
                    **enc,
                    max_new_tokens=new_tokens,
                    do_sample=False,
                    stop_strings=list(stop),
                    tokenizer=tok,
                    pad_token_id=tok.pad_token_id,
                )
            for i, problem in enumerate(problems[start : start + batch_size]):
                text = tok.decode(out[i, enc.input_ids.shape[1] :], skip_special_tokens=True)
                answers[(problem.id, config)] = _cut(text, stop)
    return answers


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="0")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument(
        "--naive-configs",
        type=int,
        default=3,
        help="configurations timed for the naive loop (it is slow)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()

    model = load_model("smollm2-135m", dtype=args.dtype)
    problems = load_problems("arith", limit=args.questions, seed=0)
    heads = all_heads(model, [int(x) for x in args.layers.split(",")])
    configs = ["none"] + [h.label for h in heads]
    template = get_template("fewshot_cot")
    stop = template.stop_strings(model.tokenizer)
    n_pairs = len(configs) * len(problems)

    t_sweep, result = timed(
        lambda: sweep(
            model,
            problems,
            heads,
            max_new_tokens=args.new_tokens,
            batch_size=args.batch_size,
            progress=False,
            deterministic=False,  # the fast path these figures were measured on (see README)
        ),
        args.repeats,
    )
    from sprint_lab.sweeps.batch import BatchRunner, plan

    def sweep_without_prefix_reuse():
        runner = BatchRunner(model, problems, max_new_tokens=args.new_tokens, reuse_prefix=False)
        items = plan(problems, heads)
        for start in range(0, len(items), args.batch_size):
            runner.run(items[start : start + args.batch_size])

    def sweep_with_bridge_attention():
        runner = BatchRunner(model, problems, max_new_tokens=args.new_tokens, attention="bridge")
        items = plan(problems, heads)
        for start in range(0, len(items), args.batch_size):
            runner.run(items[start : start + args.batch_size])

    t_no_prefix, _ = timed(sweep_without_prefix_reuse, 1)
    t_bridge_attention, _ = timed(sweep_with_bridge_attention, 1)
    t_cfg, cfg_answers = timed(
        lambda: per_config(model, problems, configs, template, args.new_tokens, stop, 8),
        1,
    )
    subset = configs[: args.naive_configs]
    t_naive, naive_answers = timed(
        lambda: naive(model, problems, subset, template, args.new_tokens, stop),
        args.naive_repeats,
    )

    table = result.table.set_index(["question_id", "config"])
    by_id = {p.id: p for p in problems}

    def disagreements(answers):
        differ, near_ties = 0, 0
        for (qid, config), text in answers.items():
            ours = table.loc[(qid, config)]
            if grade(text, by_id[qid]).correct == bool(ours["correct"]):
                continue
            differ += 1
            prompt = model.tokenizer(
                template.render(by_id[qid].question, model.tokenizer), add_special_tokens=False
            )["input_ids"]
            a = model.tokenizer(ours["completion"], add_special_tokens=False)["input_ids"]
            b = model.tokenizer(text, add_special_tokens=False)["input_ids"]
            mask = masks_for(model, [None if config == "none" else [config]])[0]
            near_ties += first_divergence(model, prompt, a, b, mask).near_tie
        return differ, near_ties

    naive_diff, naive_ties = disagreements(naive_answers)
    cfg_diff, cfg_ties = disagreements(cfg_answers)
    rate_sweep = n_pairs / t_sweep
    rate_cfg = n_pairs / t_cfg
    rate_naive = len(subset) * len(problems) / t_naive
    print(
        f"machine={platform.machine()} cores={torch.get_num_threads()} dtype={args.dtype} "
        f"configs={len(configs)} questions={len(problems)} new_tokens={args.new_tokens}"
    )
    print(
        f"sweep_s={t_sweep:.1f} per_config_s={t_cfg:.1f} "
        f"naive_s={t_naive:.1f} (on {len(subset)} configs)"
    )
    print(f"pairs_per_s sweep={rate_sweep:.3f} per_config={rate_cfg:.3f} naive={rate_naive:.3f}")
    print(
        f"verdict_disagreements naive={naive_diff} (near-ties {naive_ties}) "
        f"per_config={cfg_diff} (near-ties {cfg_ties})"
    )
    print(f"prefix_cache_gain={t_no_prefix / t_sweep:.2f} (same sweep without prefix KV reuse)")
    print(
        f"shared_prefix_attention_gain={t_bridge_attention / t_sweep:.2f} "
        "(same sweep with the bridge's own attention and a DynamicCache)"
    )
    print(f"speedup_vs_naive={rate_sweep / rate_naive:.2f}")
    print(f"speedup_vs_per_config={rate_sweep / rate_cfg:.2f}")


if __name__ == "__main__":
    main()

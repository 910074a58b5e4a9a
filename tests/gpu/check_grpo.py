#!/usr/bin/env python3
"""GPU-only checks of the online RL stages, run where a CUDA GPU is lent (CI has none). Prints a JSON report (and writes it
to --out).

    python tests/gpu/check_grpo.py --out report.json        # a few minutes on one H100 / H200 (vLLM start-up included)

* `grpo_vllm_matches_hf`: with `use_vllm: true` (trl's colocate mode; needs the vllm package) the greedy-equivalent rollout
  (temperature 1e-3) of the untrained model equals the transformers rollout on the same prompts, and a 20-step run's
  mean reward rises as the transformers run's does.
* `grpo_qlora_4bit`: grpo on a 4-bit base (bitsandbytes) with LoRA: the reward rises, the adapter is written.
* `grpo_bf16_throughput`: completions per second of a LoRA grpo run in bf16, transformers rollouts.
"""
import argparse, json, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
from check_gpu import REPORT, check  # noqa: E402  (one report format for every GPU check)

DIGITS = f"{ROOT / 'tests' / 'assets' / 'rewards.py'}:digit_share"


def cfg(out, **kw):
    from llmft.testing import tiny_model
    return {**dict(model_name_or_path=str(tiny_model('llama', hidden=256, layers=4)), stage='grpo', do_train=True,
                   finetuning_type='lora', lora_target='all', dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'),
                   template='llama3', cutoff_len=128, max_samples=128, output_dir=str(out), overwrite_output_dir=True,
                   per_device_train_batch_size=16, num_generations=4, max_completion_length=16, reward_funcs=[DIGITS],
                   learning_rate=1e-2, max_steps=20, logging_steps=5, temperature=0.3, top_p=1.0, top_k=0,
                   report_to='none', save_strategy='no', seed=0, bf16=True), **kw}


def rewards(out):
    return [json.loads(l)['reward'] for l in open(Path(out) / 'trainer_log.jsonl') if '"reward"' in l]


@check('grpo_vllm_matches_hf')
def vllm_matches_hf():
    from llmft.train.tuner import run_exp
    d = Path(tempfile.mkdtemp())
    hf = run_exp(cfg(d / 'hf', max_steps=1, logging_steps=1, temperature=1e-3))
    vl = run_exp(cfg(d / 'vllm', max_steps=1, logging_steps=1, temperature=1e-3, use_vllm=True))
    from llmft.rundir import RunDir
    a = {r['prompt']: r['completions'] for r in RunDir(hf.output_dir).rollouts()}
    b = {r['prompt']: r['completions'] for r in RunDir(vl.output_dir).rollouts()}
    same = [p for p in a if p in b and a[p] == b[p]]
    learn = run_exp(cfg(d / 'learn', use_vllm=True))
    r = rewards(learn.output_dir)
    assert same and r[-1] > r[0], (len(same), r)
    return dict(prompts_compared=len([p for p in a if p in b]), identical=len(same), rewards=r)


@check('grpo_qlora_4bit')
def qlora_4bit():
    from llmft.train.tuner import run_exp
    out = Path(tempfile.mkdtemp()) / 'q'
    res = run_exp(cfg(out, quantization_bit=4, max_steps=40))
    r = rewards(res.output_dir)
    assert (out / 'adapter_model.safetensors').exists() and r[-1] > r[0] + 0.2, r
    return dict(rewards=r)


@check('grpo_bf16_throughput')
def throughput():
    from llmft.train.tuner import run_exp
    t = time.time()
    res = run_exp(cfg(Path(tempfile.mkdtemp()) / 't', max_steps=20))
    secs = time.time() - t
    return dict(seconds=round(secs, 1), completions_per_second=round(20 * 16 / secs, 1), rewards=rewards(res.output_dir))


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    for fn in (vllm_matches_hf, qlora_4bit, throughput): fn()
    if a.out: Path(a.out).write_text(json.dumps(REPORT, indent=1))
    sys.exit(0 if all(v.get('ok') for v in REPORT.values()) else 1)

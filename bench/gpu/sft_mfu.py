#!/usr/bin/env python3
"""SFT throughput, MFU and peak memory of a ~0.5B model on one GPU: full and LoRA, sdpa and flash attention, with and
without the chunked loss. Prints a table.

The model is built from a config (Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864,
vocabulary 151,936; 494M parameters), randomly initialised, with the tiny Qwen fixture tokenizer: nothing is downloaded.
The data is data/alpaca_demo.json, packed into blocks of --cutoff tokens, bf16. MFU counts the model FLOPs of the trained
forward and backward passes (6 × non-embedding parameters + 6 × hidden × vocabulary per token, plus causal attention)
against the GPU's dense bf16 peak (--peak-tflops, 989 for an H100 / H200 SXM); the recomputation of gradient
checkpointing is not counted, as is usual.

    python bench/gpu/sft_mfu.py                      # on the GPU machine: every combination, 20 steps each
    python bench/gpu/sft_mfu.py --smoke              # a tiny config on CPU, 2 steps: checks the script runs
"""
from __future__ import annotations
import argparse, itertools, json, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2, vocab_size=151936)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=4096)


def build(out: Path, shape: dict) -> tuple[Path, int, int]:
    "A randomly initialised Qwen2 model of `shape` with the fixture tokenizer; (folder, parameters, embedding params)."
    import torch, transformers
    from llmft.testing import tiny_tokenizer
    tok = tiny_tokenizer('qwen')
    cfg = transformers.Qwen2Config(**shape, max_position_embeddings=32768, tie_word_embeddings=False,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    return out, n, model.model.embed_tokens.weight.numel()


def flops_per_token(shape: dict, params: int, embed: int, seq: int) -> float:
    "Training FLOPs per token: 6 × matmul parameters (the LM head included, the embedding table not) + attention."
    h, layers = shape['hidden_size'], shape['num_hidden_layers']
    return 6 * (params - embed) + 6 * layers * h * seq   # causal attention: half of 12 · L · h · seq


def run(model: Path, finetuning: str, attn: str, chunked: bool, a) -> dict:
    import torch
    from llmft.train.tuner import run_exp
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    out = tempfile.mkdtemp(prefix='mfu-')
    t = time.perf_counter()
    res = run_exp(dict(model_name_or_path=str(model), stage='sft', do_train=True, finetuning_type=finetuning,
                       lora_target='all', dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'), template='qwen',
                       cutoff_len=a.cutoff, packing=True, bf16=torch.cuda.is_available(), flash_attn=attn,
                       use_chunked_loss=chunked, per_device_train_batch_size=a.batch, max_steps=a.steps,
                       learning_rate=1e-5, logging_steps=5, save_strategy='no', report_to='none', output_dir=out,
                       overwrite_output_dir=True, max_samples=a.samples))
    m = res.metrics.get('train', {})
    return dict(tokens_s=m.get('effective_tokens_per_sec'), train_s=m.get('train_runtime'),
                peak_gb=m.get('peak_gpu_memory_gb'), wall_s=time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--cutoff', type=int, default=2048)
    p.add_argument('--samples', type=int, default=None, help='max_samples of the data')
    p.add_argument('--peak-tflops', type=float, default=989.0, help="the GPU's dense bf16 peak")
    p.add_argument('--smoke', action='store_true')
    p.add_argument('--out', default=None)
    a = p.parse_args()
    shape = SMOKE if a.smoke else SHAPE
    if a.smoke: a.steps, a.batch, a.cutoff = 2, 2, 128
    model, params, embed = build(Path(tempfile.mkdtemp(prefix='mfu-model-')), shape)
    fpt = flops_per_token(shape, params, embed, a.cutoff)
    attns = ['sdpa']
    try:
        import flash_attn  # noqa: F401
        attns.append('fa2')
    except ImportError:
        print('flash-attn is not installed: sdpa only')
    rows = []
    for finetuning, attn, chunked in itertools.product(('full', 'lora'), attns, (True, False)):
        r = run(model, finetuning, attn, chunked, a)
        r.update(finetuning=finetuning, attn=attn, chunked=chunked,
                 mfu=(r['tokens_s'] or 0) * fpt / (a.peak_tflops * 1e12))
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(f'\n{params / 1e6:.0f}M parameters, {a.batch} × {a.cutoff} packed tokens per step, {a.steps} steps\n')
    print('| finetuning | attention | chunked loss | tokens/s | MFU | peak GPU GiB | train s |\n|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['finetuning']} | {r['attn']} | {r['chunked']} | {r['tokens_s']} | {r['mfu']:.1%} | {r['peak_gb']} | "
              f"{r['train_s']} |")
    if a.out: Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()

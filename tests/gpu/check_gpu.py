#!/usr/bin/env python3
"""GPU-only checks, run where a CUDA GPU is lent (CI has none): QLoRA 4-bit and 8-bit through bitsandbytes, bf16 training,
neat packing under bf16 attention, and LoRA SFT throughput. Prints a JSON report (and writes it to --out).

    python tests/gpu/check_gpu.py --out report.json        # a few minutes on one H100 / H200
"""
import argparse, json, os, sys, tempfile, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('LLMFT_LOG_LEVEL', 'WARNING')
REPORT = {}


def check(name):
    def deco(fn):
        def run():
            t = time.time()
            try: REPORT[name] = {'ok': True, **(fn() or {})}
            except Exception as e: REPORT[name] = {'ok': False, 'error': f'{type(e).__name__}: {e}', 'trace': traceback.format_exc()[-1500:]}
            REPORT[name]['seconds'] = round(time.time() - t, 1)
            print(name, json.dumps(REPORT[name])[:600], flush=True)
        return run
    return deco


def cfg(model, out, **kw):
    return {**dict(model_name_or_path=str(model), stage='sft', do_train=True, finetuning_type='lora', dataset='alpaca_demo,sharegpt_demo',
                   dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=256, max_samples=64, output_dir=str(out),
                   overwrite_output_dir=True, per_device_train_batch_size=8, learning_rate=5e-3, max_steps=40, logging_steps=5,
                   report_to='none', save_strategy='no', bf16=True, seed=0), **kw}


def losses(out):
    return [json.loads(l)['loss'] for l in open(Path(out) / 'trainer_log.jsonl') if '"loss"' in l]


@check('env')
def env():
    import torch, transformers, peft, datasets
    out = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__, datasets=datasets.__version__,
               cuda=torch.cuda.is_available(), device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    try:
        import bitsandbytes; out['bitsandbytes'] = bitsandbytes.__version__
    except ImportError: out['bitsandbytes'] = None
    return out


@check('qlora_4bit')
def qlora_4bit():
    import torch, bitsandbytes as bnb
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    from llmft.hparams.model import ModelArguments
    from llmft.hparams.finetune import FinetuningArguments
    from llmft.data.tokenizer import load_tokenizer
    from llmft.model.loader import load_model
    model = tiny_model('llama', hidden=256, layers=4)
    out = Path(tempfile.mkdtemp())
    res = run_exp(cfg(model, out, quantization_bit=4, quantization_type='nf4', double_quantization=True))
    ls = losses(out)
    m = res.trainer.model
    n4 = sum(isinstance(x, bnb.nn.Linear4bit) for x in m.modules())
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert n4 > 0, 'no 4-bit linear layers'
    assert all(p.dtype == torch.float32 for p in trainable), 'trainable parameters not upcast to float32'
    assert ls[-1] < ls[0], ls
    tok = load_tokenizer(ModelArguments(model_name_or_path=str(out)))
    re = load_model(tok, ModelArguments(model_name_or_path=str(model), adapter_name_or_path=str(out), quantization_bit=4),
                    FinetuningArguments(), is_trainable=False)
    x = torch.tensor([tok('Add the two numbers. 2 and 3').input_ids], device='cuda')
    with torch.no_grad(): a, b = m.eval()(x).logits, re(x).logits
    return dict(linear4bit=n4, losses=[round(l, 3) for l in ls], reload_max_abs_diff=float((a - b).abs().max()),
                peak_mem_mib=round(torch.cuda.max_memory_allocated() / 2**20))


@check('qlora_8bit')
def qlora_8bit():
    import bitsandbytes as bnb
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    out = Path(tempfile.mkdtemp())
    res = run_exp(cfg(tiny_model('llama', hidden=256, layers=4), out, quantization_bit=8, max_steps=20))
    n8 = sum(isinstance(x, bnb.nn.Linear8bitLt) for x in res.trainer.model.modules())
    ls = losses(out)
    assert n8 > 0 and ls[-1] < ls[0], (n8, ls)
    return dict(linear8bit=n8, losses=[round(l, 3) for l in ls])


@check('neat_packing_bf16')
def neat_packing_bf16():
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    out = Path(tempfile.mkdtemp())
    res = run_exp(cfg(tiny_model('llama', hidden=256, layers=4), out, packing=True, neat_packing=True, finetuning_type='full',
                      learning_rate=1e-4, max_steps=20))
    ls = losses(out)
    assert ls[-1] < ls[0], ls
    seen = json.loads(open(out / 'all_results.json').read())['num_input_tokens_seen']
    assert 0 < seen <= 20 * 8 * 256, seen
    return dict(losses=[round(l, 3) for l in ls], dtype=str(next(res.trainer.model.parameters()).dtype), tokens_seen=seen)


@check('throughput_lora_bf16')
def throughput():
    import torch
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    model = tiny_model('llama', hidden=1024, layers=8, heads=16, kv_heads=4)
    rows = {}
    for attn in ('sdpa', 'eager'):
        out = Path(tempfile.mkdtemp()); torch.cuda.reset_peak_memory_stats()
        res = run_exp(cfg(model, out, flash_attn=attn, cutoff_len=1024, max_samples=4000, max_steps=40, logging_steps=10,
                          packing=True, disable_gradient_checkpointing=True))
        m = res.metrics['train']
        rows[attn] = dict(train_s=round(m['train_runtime'], 2), samples_per_s=round(m['train_samples_per_second'], 1),
                          tokens_per_s=round(m['num_input_tokens_seen'] / m['train_runtime']), peak_mem_mib=round(torch.cuda.max_memory_allocated() / 2**20))
    return rows


if __name__ == '__main__':
    p = argparse.ArgumentParser(); p.add_argument('--out'); a = p.parse_args()
    for fn in (env, qlora_4bit, qlora_8bit, neat_packing_bf16, throughput): fn()
    text = json.dumps(REPORT, indent=2)
    if a.out: Path(a.out).write_text(text)
    print('ALL OK' if all(v['ok'] for v in REPORT.values()) else 'SOME FAILED')

#!/usr/bin/env python3
"""GPU-only export checks, run where a CUDA GPU is lent (CI has none). Prints a JSON report (and writes it to --out).

    python tests/gpu/check_export.py --out report.json        # about two minutes on one H100 / H200

* `export_device: auto`: a LoRA run merged on the GPU; `infer_dtype: auto` turns a float32 model into bfloat16 there (as
  LLaMA-Factory does); the folder reloads with plain transformers and its logits match the adapter model's in bf16.
* QLoRA workflow: an adapter trained on a 4-bit base is merged into the full-precision base (quantization_bit unset).
* GPTQ: the merged folder quantized with `export_quantization_bit: 4` (needs the gptqmodel and optimum packages; when they
  are missing the check reports the one-line error llmft gives, and `ok` is false).
"""
import argparse, json, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
from check_gpu import REPORT, check  # noqa: E402  (one report format for every GPU check)


def train(out, **kw):
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    return run_exp(dict(model_name_or_path=str(tiny_model('llama', hidden=256, layers=4)), stage='sft', do_train=True,
                        finetuning_type='lora', lora_target='all', dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'),
                        template='llama3', cutoff_len=256, max_samples=64, output_dir=str(out), overwrite_output_dir=True,
                        per_device_train_batch_size=8, learning_rate=5e-3, max_steps=20, report_to='none',
                        save_strategy='no', bf16=True, seed=0, **kw))


def logits(model, tok):
    import torch
    x = tok(['Hello there, who are you?', 'Hi'], return_tensors='pt', padding=True).to(model.device)
    with torch.no_grad(): return model(**x).logits.float()[x['attention_mask'].bool()]


@check('export_on_gpu_bf16')
def export_on_gpu():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llmft.export import run_export
    from llmft.model.runs import parse_run
    res = train(Path(tempfile.mkdtemp()) / 'run')
    dest = run_export(res.output_dir, export_dir=tempfile.mkdtemp() + '/out', export_device='auto')
    plain = AutoModelForCausalLM.from_pretrained(dest, device_map='cuda').eval()
    tok = AutoTokenizer.from_pretrained(dest)
    ref = parse_run(res.output_dir).load().model.to('cuda', torch.bfloat16).eval()
    diff = (logits(plain, tok) - logits(ref, tok)).abs().max().item()
    assert plain.dtype == torch.bfloat16 and diff < 0.1, (plain.dtype, diff)
    return dict(dtype=str(plain.dtype), max_logit_diff=diff)


@check('qlora_adapter_merged_into_full_base')
def qlora_merge():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llmft.export import run_export
    res = train(Path(tempfile.mkdtemp()) / 'run', quantization_bit=4)
    dest = run_export(res.output_dir, export_dir=tempfile.mkdtemp() + '/out', infer_dtype='float32')
    plain = AutoModelForCausalLM.from_pretrained(dest, device_map='cuda').eval()
    lg = logits(plain, AutoTokenizer.from_pretrained(dest))
    assert lg.isfinite().all()
    return dict(shape=list(lg.shape))


@check('gptq_4bit')
def gptq():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llmft.core import UserError
    from llmft.export import run_export
    res = train(Path(tempfile.mkdtemp()) / 'run')
    merged = run_export(res.output_dir, export_dir=tempfile.mkdtemp() + '/merged', infer_dtype='float16')
    calib = Path(tempfile.mkdtemp()) / 'calib.jsonl'
    calib.write_text(''.join(json.dumps({'text': t}) + '\n' for t in ['The quick brown fox jumps over the lazy dog.'] * 16))
    try:
        q = run_export(dict(model_name_or_path=str(merged), template='llama3', export_dir=tempfile.mkdtemp() + '/q',
                            export_quantization_bit=4, export_quantization_dataset=str(calib)))
    except UserError as e:
        return dict(ok=False, refused=e.line())
    model = AutoModelForCausalLM.from_pretrained(q, device_map='cuda')
    tok = AutoTokenizer.from_pretrained(q)
    out = model.generate(**tok(['Hello'], return_tensors='pt').to('cuda'), max_new_tokens=4)
    return dict(quant_method=model.config.quantization_config.get('quant_method'), generated=out.shape[1])


if __name__ == '__main__':
    p = argparse.ArgumentParser(); p.add_argument('--out'); a = p.parse_args()
    for fn in (export_on_gpu, qlora_merge, gptq): fn()
    text = json.dumps(REPORT, indent=2)
    if a.out: Path(a.out).write_text(text)
    print('ALL OK' if all(v['ok'] for v in REPORT.values()) else 'SOME FAILED')

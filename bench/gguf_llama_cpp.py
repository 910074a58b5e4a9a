"""GGUF files of one run in llama.cpp, per type: file size, load time, prompt and generation speed, and how far the
logits and the held-out perplexity move from the transformers model the run trained.

usage: python bench/gguf_llama_cpp.py [--run RUN] [--types f32,bf16,f16,q8_0,q4_0] [--tokens 128] [--threads 2]

Without `--run` it trains the tiny Llama briefly (LoRA SFT on alpaca_demo, as tests/test_gguf.py does) into a temporary
folder. The run is merged with `run_export`, each type is written with `llmft.export_gguf.write_gguf` and loaded by
llama.cpp through llama-cpp-python. Logits: the max |difference| over the fixed prompts of tests/test_gguf.py;
perplexity: on held-out alpaca_demo rows (200-231); speed: greedy decoding of `--tokens` tokens (the stop token
ignored), best of 3. On a tiny model the speeds measure llama.cpp's per-token overhead, not a real model's throughput.
(Not named gguf.py: a script of that name would shadow the `gguf` package it imports.)
"""
from __future__ import annotations
import argparse, json, math, os, tempfile, time
from pathlib import Path

for k in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE'): os.environ.setdefault(k, '1')
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ['Add the two numbers. 51 and 99', 'Who are you? Tell me in a few words.', 'Hi',
           'The capital of France is Paris.\nThe capital of Peru is', "It's 2024: we've 1234 tokens, don't we?"]


def held_out() -> list[str]:
    rows = json.loads((ROOT / 'data' / 'alpaca_demo.json').read_text())[200:232]
    return [f"{r['instruction']} {r['input']}".strip() + '\n' + r['output'] for r in rows]


def train_tiny(out: Path) -> str:
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    cfg = dict(model_name_or_path=str(tiny_model('llama')), stage='sft', do_train=True, finetuning_type='lora',
               lora_target='all', dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'), template='llama3',
               cutoff_len=128, max_samples=8, output_dir=str(out), overwrite_output_dir=True,
               per_device_train_batch_size=4, learning_rate=1e-2, max_steps=40, logging_steps=10, report_to='none',
               save_strategy='no', disable_gradient_checkpointing=True, seed=0)
    return run_exp(cfg).output_dir


def log_probs(logits):
    import numpy as np
    x = logits - logits.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def nll(logits, ids) -> float:
    import numpy as np
    return -float(log_probs(logits[:-1])[np.arange(len(ids) - 1), ids[1:]].sum())


def ppl(logits_of, seqs) -> float:
    return math.exp(sum(nll(logits_of(ids), ids) for ids in seqs) / sum(len(s) - 1 for s in seqs))


def cpp_logits(llm, ids):
    import numpy as np
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


def speed(llm, ids, n: int) -> tuple[float, float]:
    "(prompt tokens/s, generated tokens/s) of greedy decoding `n` tokens after `ids`, best of 3."
    best_p = best_g = 0.0
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tok = int(llm.scores[len(ids) - 1].argmax())
        for _ in range(n):
            llm.eval([tok])
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
        t2 = time.perf_counter()
        best_p, best_g = max(best_p, len(ids) / (t1 - t0)), max(best_g, n / (t2 - t1))
    return best_p, best_g


def hf_speed(model, ids, n: int) -> float:
    import torch
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=0)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--run', help='a run folder to export (default: train the tiny Llama briefly)')
    p.add_argument('--types', default='f32,bf16,f16,q8_0,q4_0')
    p.add_argument('--tokens', type=int, default=128)
    p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    import numpy as np, torch, llama_cpp
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llmft.data.template import stop_ids
    from llmft.data.templates import get_template
    from llmft.export import run_export
    from llmft.export_gguf import write_gguf
    from llmft.rundir import RunDir
    tmp = Path(tempfile.mkdtemp(prefix='bench-gguf-'))
    run = a.run or train_tiny(tmp / 'run')
    folder = run_export(run, export_dir=str(tmp / 'merged'))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    stops = stop_ids(get_template(RunDir(folder).template_record()['name'], tok), tok)
    torch.set_num_threads(a.threads)
    hf = lambda ids: model(torch.tensor([ids])).logits[0].double().detach().numpy()
    seqs, prompts = [tok(t)['input_ids'] for t in held_out()], [tok(t)['input_ids'] for t in PROMPTS]
    with torch.no_grad(): p_hf = ppl(hf, seqs)
    long = sum(prompts, [])[:96]
    rows = [('transformers (f32)', '', '', '', f'{hf_speed(model, long, a.tokens):.0f}', '0', f'{p_hf:.3f}')]
    ppls = {}
    for q in a.types.split(','):
        path = write_gguf(model, tok, tmp / f'model-{q}.gguf', qtype=q, stop_ids=stops, name='bench')
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False, n_threads=a.threads)
        load_s = time.perf_counter() - t0
        with torch.no_grad(): diff = max(np.abs(cpp_logits(llm, ids) - hf(ids)).max() for ids in prompts)
        pq = ppl(lambda ids: cpp_logits(llm, ids), seqs)
        ppls[q] = pq
        ps, gs = speed(llm, long, a.tokens)
        rows.append((q, f'{path.stat().st_size / 2**20:.2f}', f'{load_s:.3f}', f'{ps:.0f}', f'{gs:.0f}',
                     f'{diff:.2e}', f'{pq:.3f}'))
        llm.close()
    p16 = ppls.get('f16')
    rows = [(*r, f'{(ppls[r[0]] / p16 - 1) * 100:+.2f}%' if p16 and r[0] in ppls and r[0] != 'f16' else '')
            for r in rows]
    head = ('type', 'file MiB', 'load s', 'prompt tok/s', 'gen tok/s', 'max |Δlogit| vs transformers', 'held-out ppl',
            'ppl vs f16')
    print(f'llama-cpp-python {llama_cpp.__version__}, {a.threads} threads, run {run}, vocab {model.config.vocab_size}, '
          f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters')
    print('| ' + ' | '.join(head) + ' |\n|' + '---|' * len(head))
    for r in rows: print('| ' + ' | '.join(r) + ' |')
    print("(llama.cpp's default f16 KV cache; with an f32 cache the f32 file's logits differ by ~1e-6)")


if __name__ == '__main__':
    main()

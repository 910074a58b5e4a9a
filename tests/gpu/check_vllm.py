#!/usr/bin/env python3
"""GPU-only check of `infer_backend: vllm` (CI has no GPU): a tiny Llama fine-tuned with LoRA for a few steps, then the
same greedy requests served by the HF engine and by the vLLM engine (`llmft.infer.backends.VLLMEngine`), answer by
answer: the token ids must be equal, with the run's adapter and with `__base__` (no adapter); a cancelled request ends
`cancelled` at once; `llmft api RUN infer_backend=vllm` answers the official OpenAI client with the same text. Prints a
table (requests, tokens, seconds, tokens/s per engine) and a JSON report (written to --out).

    python tests/gpu/check_vllm.py --out report.json             # needs vllm (pip install vllm) and a CUDA GPU
    python tests/gpu/check_vllm.py --dtype bfloat16 --requests 64

`check_sglang.py` runs the same checks on `infer_backend: sglang`.
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
from check_gpu import REPORT, check  # noqa: E402  (one report format for every GPU check)

QUESTIONS = ['Hi', 'Who are you?', 'What is the capital of France?', 'Give three tips for staying healthy.',
             'Translate to French: good morning', 'Write a haiku about the sea.', 'What is 2 + 2?', 'Tell me a joke.']
STATE = {}


def train(out):
    "A tiny Llama that LoRA made peaked on the demo data (so greedy answers do not hang on near-ties)."
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    run_exp(dict(model_name_or_path=str(tiny_model('llama', hidden=256, layers=4)), stage='sft', do_train=True,
                 finetuning_type='lora', lora_target='all', lora_rank=8, dataset='alpaca_demo,identity',
                 dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=256, max_samples=64, output_dir=str(out),
                 overwrite_output_dir=True, per_device_train_batch_size=8, learning_rate=1e-2, max_steps=60,
                 report_to='none', save_strategy='no', bf16=True, seed=0))
    return out


def prompts(run, n):
    "`n` prompt id lists, rendered by the run's template (the questions repeated)."
    return [run.template.encode_oneturn(run.tokenizer, [{'role': 'user', 'content': QUESTIONS[i % len(QUESTIONS)]},
                                                        {'role': 'assistant', 'content': ''}])[0] for i in range(n)]


def timed(engine, ps, adapter=None, max_new_tokens=64):
    "(ids of each greedy answer, finish reasons, seconds): every request submitted at once."
    t = time.time()
    jobs = engine.submit([j for p in ps for j in engine.make_jobs(p, adapter=adapter, do_sample=False,
                                                                  max_new_tokens=max_new_tokens)])
    for j in jobs: j.wait(600)
    return [j.ids for j in jobs], [j.finish for j in jobs], time.time() - t


@check('env')
def env():
    import importlib, torch
    out = dict(torch=torch.__version__, cuda=torch.cuda.is_available(),
               device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    for pkg in ('vllm', 'sglang', 'transformers', 'peft'):
        try: out[pkg] = importlib.import_module(pkg).__version__
        except ImportError: out[pkg] = None
    return out


def device():
    "The GPU (on a machine without one the script still runs up to the engine's refusal: a dry run)."
    import torch
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def hf_engine(run_dir, dtype):
    "The HF engine on the GPU, the run's adapter loaded (as `llmft chat` serves it)."
    import torch
    from llmft.infer.engine import HFEngine
    from llmft.model.runs import parse_run
    r = parse_run(str(run_dir), infer_dtype=dtype).load()
    model = r.model.to(device(), getattr(torch, dtype)).eval()
    return HFEngine(model, r.tokenizer, r.template, r.generating_args, max_batch=32, max_queue=4096), r


def compare(backend, dtype, n, max_new_tokens):
    "The greedy answers of the HF engine and of `backend` on the same run, adapter on and off, and their speed."
    from llmft.infer.backends import BASE, make_engine
    from llmft.model.runs import parse_run
    run_dir = STATE.get('run') or train(Path(tempfile.mkdtemp()) / 'run')
    STATE['run'] = run_dir
    hf, r = hf_engine(run_dir, dtype)
    ps = prompts(r, n)
    rows, out = {}, {}
    for name, adapter in (('lora', None), ('base', BASE)):
        ids_hf, fin_hf, s_hf = timed(hf, ps, adapter if adapter else None, max_new_tokens)
        out[name] = dict(hf=ids_hf, hf_finish=fin_hf, hf_s=s_hf)
    del hf
    import gc, torch
    gc.collect()
    torch.cuda.empty_cache()
    keys = dict(infer_backend=backend, infer_dtype=dtype, vllm_gpu_util=0.4, sglang_mem_fraction=0.4,
                vllm_maxlen=1024, sglang_maxlen=1024)
    t = time.time()
    eng = make_engine(parse_run(str(run_dir), **keys), max_queue=4096)
    start_s = time.time() - t
    timed(eng, ps[:2], None, 4)   # warm-up: compiled graphs, the adapter loaded
    for name, adapter in (('lora', None), ('base', BASE)):
        ids, fin, s = timed(eng, ps, adapter, max_new_tokens)
        o = out[name]
        same = [a == b for a, b in zip(o['hf'], ids)]
        first = next((i for i, ok in enumerate(same) if not ok), None)
        rows[name] = dict(equal=sum(same), requests=len(same), hf_tokens=sum(map(len, o['hf'])),
                          tokens=sum(map(len, ids)), hf_s=round(o['hf_s'], 2), s=round(s, 2),
                          hf_tok_s=round(sum(map(len, o['hf'])) / o['hf_s']), tok_s=round(sum(map(len, ids)) / s),
                          finish_equal=fin == o['hf_finish'])
        if first is not None:
            rows[name]['first_difference'] = dict(request=first, hf=o['hf'][first], engine=ids[first])
    job = eng.submit(eng.make_jobs(ps[0], do_sample=False, max_new_tokens=900, min_new_tokens=900))[0]
    while len(job.ids) < 5 and job.finish is None: time.sleep(0.01)
    t = time.time()
    job.cancel.set()
    job.wait(30)
    rows['cancel'] = dict(finish=job.finish, tokens=len(job.ids), seconds=round(time.time() - t, 3))
    eng.close()
    print(f'\n{backend} vs HF engine ({dtype}, {n} greedy requests of up to {max_new_tokens} tokens, all at once); '
          f'{backend} started in {start_s:.0f} s')
    print(f"{'adapter':8} {'equal':>9} {'HF tok':>7} {'HF s':>6} {'HF tok/s':>9} {backend + ' tok':>10} "
          f"{backend + ' s':>8} {backend + ' tok/s':>12}")
    for name in ('lora', 'base'):
        x = rows[name]
        print(f"{name:8} {x['equal']:>4}/{x['requests']:<4} {x['hf_tokens']:>7} {x['hf_s']:>6} {x['hf_tok_s']:>9} "
              f"{x['tokens']:>10} {x['s']:>8} {x['tok_s']:>12}")
    ok = all(rows[k]['equal'] == rows[k]['requests'] and rows[k]['finish_equal'] for k in ('lora', 'base'))
    assert ok, {k: rows[k] for k in ('lora', 'base')}
    assert rows['cancel']['finish'] == 'cancelled' and rows['cancel']['seconds'] < 2, rows['cancel']
    return dict(start_s=round(start_s, 1), **rows)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def api_answer(backend, dtype):
    "`llmft api RUN infer_backend=backend` and the official OpenAI client: the greedy answer equals ChatModel's (HF)."
    import openai
    from llmft.infer.chat import ChatModel
    run_dir = STATE['run']
    cm = ChatModel(str(run_dir), infer_dtype=dtype, max_new_tokens=32, do_sample=False)
    cm.engine.model.to(device())
    want = cm.chat([{'role': 'user', 'content': 'Who are you?'}])[0].text
    port, log_path = free_port(), Path(tempfile.mkdtemp()) / 'server.log'
    env = {**os.environ, 'API_PORT': str(port), 'API_MODEL_NAME': 'tiny', 'PYTHONUNBUFFERED': '1'}
    server = subprocess.Popen([str(Path(sys.executable).parent / 'llmft'), 'api', str(run_dir),
                               f'infer_backend={backend}', f'infer_dtype={dtype}', 'max_new_tokens=32',
                               'vllm_gpu_util=0.4', 'sglang_mem_fraction=0.4', 'vllm_maxlen=1024', 'sglang_maxlen=1024'],
                              env=env, stdout=open(log_path, 'w'), stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(base_url=f'http://127.0.0.1:{port}/v1', api_key='none', max_retries=0, timeout=60)
        for _ in range(600):
            try:
                client.models.list()
                break
            except openai.APIConnectionError: time.sleep(0.5)
            assert server.poll() is None, log_path.read_text()[-3000:]
        got = client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': 'Who are you?'}],
                                             temperature=0).choices[0].message.content
        pieces = client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': 'Who are you?'}],
                                                temperature=0, stream=True)
        streamed = ''.join(c.choices[0].delta.content or '' for c in pieces if c.choices)
    finally:
        server.terminate()
        server.wait(60)
    assert got == want == streamed, (got, want, streamed)
    return dict(answer=got)


def main(backend):
    p = argparse.ArgumentParser()
    p.add_argument('--out')
    p.add_argument('--dtype', default='float32', help='both engines in this dtype (float32, bfloat16, float16)')
    p.add_argument('--requests', type=int, default=32)
    p.add_argument('--max-new-tokens', type=int, default=64)
    a = p.parse_args()
    env()
    check(f'{backend}_greedy_equals_hf')(lambda: compare(backend, a.dtype, a.requests, a.max_new_tokens))()
    if STATE.get('run'): check(f'{backend}_api_openai')(lambda: api_answer(backend, a.dtype))()
    text = json.dumps(REPORT, indent=2)
    if a.out: Path(a.out).write_text(text)
    print('ALL OK' if all(v['ok'] for v in REPORT.values()) else 'SOME FAILED')


if __name__ == '__main__':
    main('vllm')

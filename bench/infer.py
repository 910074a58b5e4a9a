#!/usr/bin/env python3
"""Inference speed of llmft: time to first token and decode tokens/s for 1 and 8 concurrent streams, through the
OpenAI-compatible API (`llmft api` in its own process, the `openai` client) and in-process (`ChatModel.stream_chat`,
`batch_chat`), with peak RSS. Every answer is exactly `--tokens` tokens (min_new_tokens = max_new_tokens). A table.

    python bench/infer.py                                  # the tiny llama3 fixture, 128 tokens
    python bench/infer.py --model DIR --template llama3 --tokens 256
"""
from __future__ import annotations
import argparse, os, resource, socket, subprocess, sys, threading, time
from pathlib import Path

Q = [{'role': 'user', 'content': 'Write a long story about a lighthouse keeper.'}]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def timed_stream(pieces) -> tuple[float, float, int]:
    "(seconds to the first piece, seconds from the first piece to the end, pieces) of an iterator of text pieces."
    t0, first, n = time.perf_counter(), None, 0
    for _ in pieces:
        n += 1
        if first is None: first = time.perf_counter()
    end = time.perf_counter()
    return first - t0, end - first, n


def concurrent(fn, k: int) -> tuple[float, float]:
    "(mean time to first piece, wall seconds) of k concurrent calls of fn (each returns timed_stream's triple)."
    out, t0 = [None] * k, time.perf_counter()
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn())) for i in range(k)]
    for t in ts: t.start()
    for t in ts: t.join()
    return sum(o[0] for o in out) / k, time.perf_counter() - t0


def start_server(words: list[str]) -> tuple[subprocess.Popen, int]:
    "`llmft api` with `words` on a free port, once it listens."
    port = free_port()
    p = subprocess.Popen([str(Path(sys.executable).parent / 'llmft'), 'api', *words],
                         env={**os.environ, 'API_PORT': str(port)}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while True:
        try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); return p, port
        except OSError:
            assert p.poll() is None, 'the server did not start'
            time.sleep(0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default=None, help='model folder or llmft run folder (default: the tiny llama3 fixture)')
    ap.add_argument('--template', default='llama3')
    ap.add_argument('--tokens', type=int, default=128)
    a = ap.parse_args()
    from llmft.testing import tiny_model
    from llmft.infer.chat import ChatModel
    model = a.model or str(tiny_model('llama'))
    gen = dict(max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False)
    run = (Path(model) / 'llmft_args.yaml').exists()
    cm = ChatModel(model if run else dict(model_name_or_path=model, template=a.template), **gen)
    rows = []
    cm.chat(Q)                                                   # warm-up
    ttft, dec, _ = timed_stream(cm.stream_chat(Q))
    rows.append(('in-process stream_chat', 1, ttft, a.tokens / (ttft + dec), (a.tokens - 1) / dec))
    t0 = time.perf_counter(); cm.batch_chat([Q] * 8); wall = time.perf_counter() - t0
    rows.append(('in-process batch_chat', 8, wall, 8 * a.tokens / wall, 8 * a.tokens / wall))
    rss_in = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    import openai
    words = [model] + ([] if run else [f'template={a.template}']) + [f'{k}={str(v).lower()}' for k, v in gen.items()]
    p, port = start_server(words)
    try:
        client = openai.OpenAI(base_url=f'http://127.0.0.1:{port}/v1', api_key='none', max_retries=0)
        def api_stream():
            s = client.chat.completions.create(model='x', messages=Q, temperature=0, max_tokens=a.tokens, stream=True)
            return timed_stream(c for c in s if c.choices and c.choices[0].delta.content)
        api_stream()                                             # warm-up
        ttft, dec, _ = api_stream()
        rows.append(('API stream', 1, ttft, a.tokens / (ttft + dec), (a.tokens - 1) / dec))
        ttft8, wall = concurrent(api_stream, 8)
        rows.append(('API stream, 8 concurrent (queued)', 8, ttft8, 8 * a.tokens / wall, 8 * a.tokens / wall))
        rss_api = int(next(l.split()[1] for l in open(f'/proc/{p.pid}/status') if l.startswith('VmHWM'))) / 1024
    finally:
        p.terminate(); p.wait(20)
    import torch
    print(f'llmft inference, {model}, template {a.template}, {a.tokens} tokens per answer, greedy, '
          f'torch threads {torch.get_num_threads()}\n')
    print('| path | streams | first token s (batch: wall s) | tokens/s end to end, all streams | decode tokens/s |')
    print('|---|---|---|---|---|')
    for name, k, t, e2e, d in rows: print(f'| {name} | {k} | {t:.3f} | {e2e:,.0f} | {d:,.0f} |')
    print(f'\npeak RSS: in-process {rss_in:,.0f} MiB; API server {rss_api:,.0f} MiB')


if __name__ == '__main__':
    main()

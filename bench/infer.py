#!/usr/bin/env python3
"""Serving speed under concurrent streaming clients: `llmft api` (batched), `llmft api` one request at a time, and
LLaMA-Factory 0.9.5's `llamafactory-cli api` (hf engine), side by side in one run, through the OpenAI HTTP surface only.

    .venv/bin/python bench/infer.py                                   # tiny llama3 fixture, 64 tokens, 1,4,16 streams
    .venv/bin/python bench/infer.py --tokens 32 --streams 1,4 --skip-lf
    .venv/bin/python bench/infer.py --model DIR --template llama3 --tokens 128
    .venv/bin/python bench/infer.py --only llmft,serial               # llmft's two rows only
    .venv/bin/python bench/infer.py --before /tmp/llmft-before        # and the server before batching

Servers, started one at a time on a free port (each in its own process group, terminated whatever happens), each
warmed up with one request before timing, all loading the same model folder with the same template:

* `llmft api`                      the server as it is now (batched: requests that arrive together decode together)
* `llmft api`, `API_MAX_BATCH=1`   the same server decoding one request at a time
* `llmft api` before batching      with `--before DIR`: the server of a checkout of llmft before batching (e.g.
                                   `git worktree add /tmp/llmft-before a853d62`), run with this venv's packages:
                                   transformers' `generate` one request at a time behind a lock
* `LLaMA-Factory api`              `llamafactory-cli api` of the venv `--lf-venv` (default .lf-venv; make it with
                                   ../shared/bench-lf/setup_lf_venv.sh .lf-venv), `infer_backend: huggingface`, its
                                   defaults otherwise (`MAX_CONCURRENT=1`: one generation at a time), `API_VERBOSE=0`
                                   (no request dump in its log)

For k concurrent clients (`--streams`), k streaming chat requests (the official `openai` client, AsyncOpenAI) are sent
at once, stream i asking prompt i (16 prompts of about the same length, different topics), greedy (`temperature=0`),
`max_tokens=N`, `min_tokens=N` (vLLM's key; llmft honours it, LLaMA-Factory's api ignores it: there the answer ends at
the template's stop token if the model writes one, and the real counts are used) and
`stream_options={'include_usage': True}`. Columns:

* TTFT p50 / p95: seconds from sending a request to its first chunk with text (the role chunk does not count). A
  server sends text when its streamer releases it: LLaMA-Factory's (transformers' TextIteratorStreamer) only at a space
  or a new line; llmft's holds back an unfinished UTF-8 character. On the tiny fixture's random output (few spaces,
  stray bytes) the first text can come late, LLaMA-Factory's often only with the last token.
* aggregate tok/s: completion tokens of all k streams / wall seconds from the first request sent to the last stream
  ended.
* decode tok/s/stream: median over the streams of (tokens after the first text chunk) / (last text chunk - first text
  chunk), the tokens of the first chunk counted by re-tokenising it. Only streams whose text came in more than one
  chunk and began in the first half of the stream's time (sent -> ended) have a decode interval that says something;
  the others are left out ('-' when none is left: the server released the text all at once, see TTFT).
* tokens/stream: the completion tokens of each stream (min-max), and how they were counted: `usage` (the stream's
  usage chunk), `lone` (the usage of the same prompt asked alone, not streamed, after the timed runs: greedy, so the
  same answer; used only when the streamed text equals that answer), `retok` (the streamed text re-tokenised with the
  model's tokenizer: approximate where the text holds U+FFFD).
* = lone: streams whose text equals the answer to the same prompt asked alone (batching must not change an answer).
* wall s: the wall seconds above.

Each stream count is run `--repeat` times (default 3): TTFT percentiles, decode rates, token counts and = lone pool the
streams of all repeats; aggregate tok/s and wall s are the medians over the repeats.

After the table: the issue's two targets for the batched server (aggregate tok/s at the largest stream count,
batched / serial, target >= 4x; p95 TTFT at the largest stream count / the lone request's TTFT (the 1-stream p50),
target <= 2x) and each server's peak RSS (VmHWM of its processes, read from /proc before it is stopped).
The in-process path (`ChatModel.batch_chat`) is not measured here: it is the same engine without HTTP, and this script
talks only HTTP so that it measures any OpenAI-compatible server the same way. Every process inherits this shell's
`OMP_NUM_THREADS` (on a shared 2-core machine `OMP_NUM_THREADS=1` gives steadier figures; the header prints the load
average); the client shares the CPU with the server (asyncio, one thread).
"""
from __future__ import annotations
import argparse, asyncio, os, signal, socket, statistics, subprocess, sys, tempfile, time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ('lighthouse keeper', 'river pilot', 'mountain guide', 'city gardener', 'ocean diver', 'forest ranger',
          'desert trader', 'winter baker', 'summer sailor', 'night librarian', 'train driver', 'castle cook',
          'island doctor', 'market weaver', 'bridge builder', 'clock maker')
OFFLINE = dict(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
SERVERS = ('llmft', 'serial', 'before', 'lf')
LABELS = dict(llmft='llmft api (batched)', serial='llmft api, API_MAX_BATCH=1', before='llmft api before batching',
              lf='LLaMA-Factory api (hf)')


def prompt(i: int) -> list[dict]:
    "The messages of stream i."
    return [{'role': 'user', 'content': f'Write a long story about a {TOPICS[i % len(TOPICS)]}.'}]


@dataclass
class Stream:
    "What one streamed answer looked like from the client."
    i: int                         # prompt index
    sent: float = 0.               # perf_counter when the request was sent
    first: float | None = None     # ... when the first text arrived
    head: str = ''                 # the text of the first text chunk
    last: float | None = None      # ... when the last text arrived
    end: float = 0.                # ... when the stream ended
    chunks: int = 0                # chunks with text
    text: str = ''
    usage: int | None = None       # completion tokens of the stream's usage chunk
    tokens: int = 0                # completion tokens counted (see `how`)
    after: int = 0                 # ... of them after the first text chunk
    how: str = ''


@dataclass
class Level:
    "k concurrent streams of one server, `--repeat` times."
    k: int
    runs: list[list[Stream]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)

    @property
    def streams(self) -> list[Stream]: return [s for r in self.runs for s in r]


# ---------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    "VmHWM of `pid` and of every process in its process group (the server and anything it spawned), MiB."
    total = 0
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            if os.getpgid(int(d.name)) != pid: continue
            hwm = [l for l in (d / 'status').read_text().splitlines() if l.startswith('VmHWM')]
        except (OSError, ProcessLookupError): continue
        total += int(hwm[0].split()[1]) if hwm else 0
    return total / 1024


def stop(p: subprocess.Popen):
    "SIGTERM to the server's process group; up to 20 s later SIGKILL to whatever of the group is left."
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try: os.killpg(p.pid, sig)
        except ProcessLookupError: return
        try: p.wait(wait)
        except subprocess.TimeoutExpired: pass


def lf_yaml(model: str, template: str, work: Path) -> Path:
    "LLaMA-Factory's config for `llamafactory-cli api`: the model folder, the template, the hf engine."
    f = work / 'lf_api.yaml'
    f.write_text(f'model_name_or_path: {model}\ntemplate: {template}\ninfer_backend: huggingface\n')
    return f


def command(name: str, a, work: Path) -> tuple[list[str], dict]:
    "The command line and extra environment of server `name`."
    if name == 'lf':
        return [str(Path(a.lf_venv) / 'bin' / 'llamafactory-cli'), 'api', str(lf_yaml(a.model, a.template, work))], \
            dict(DISABLE_VERSION_CHECK='1', API_VERBOSE='0')
    run = (Path(a.model) / 'llmft_args.yaml').exists()
    words = [a.model] + ([] if run else [f'template={a.template}'])
    env = dict(API_MAX_BATCH='1') if name == 'serial' else {}
    if name == 'before': env = dict(PYTHONPATH=a.before)   # that checkout's llmft, this venv's packages
    return [str(Path(sys.executable).parent / 'llmft'), 'api', *words], env


def start(name: str, a, work: Path, timeout: float = 600) -> tuple[subprocess.Popen, int, Path]:
    "Server `name` on a free port in a process group of its own, once `/v1/models` answers; (process, port, log)."
    import httpx
    cmd, extra = command(name, a, work)
    port, log = free_port(), work / f'{name}.log'
    env = {**os.environ, **OFFLINE, **extra, 'API_HOST': '127.0.0.1', 'API_PORT': str(port)}
    env.pop('API_KEY', None)
    if name != 'serial': env.pop('API_MAX_BATCH', None)
    with open(log, 'wb') as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.perf_counter()
    try:
        while True:
            if p.poll() is not None: raise RuntimeError(f'{LABELS[name]} exited with code {p.returncode}')
            if time.perf_counter() - t0 > timeout: raise RuntimeError(f'{LABELS[name]} did not answer in {timeout} s')
            try:
                if httpx.get(f'http://127.0.0.1:{port}/v1/models', timeout=2).status_code == 200: return p, port, log
            except httpx.HTTPError: pass
            time.sleep(0.5)
    except BaseException:
        stop(p)
        raise


# ---------------------------------------------------------------- clients

async def one_stream(client, name: str, i: int, tokens: int) -> Stream:
    "Stream i of model `name`: its timings, text and usage."
    s = Stream(i, sent=time.perf_counter())
    chunks = await client.chat.completions.create(
        model=name, messages=prompt(i), temperature=0, max_tokens=tokens, stream=True,
        stream_options={'include_usage': True}, extra_body={'min_tokens': tokens})
    async for c in chunks:
        if c.usage is not None: s.usage = c.usage.completion_tokens
        piece = c.choices[0].delta.content if c.choices else None
        if not piece: continue
        now = time.perf_counter()
        if s.first is None: s.first, s.head = now, piece
        s.last, s.chunks, s.text = now, s.chunks + 1, s.text + piece
    s.end = time.perf_counter()
    return s


async def level(client, name: str, k: int, tokens: int, repeat: int) -> Level:
    "k streams sent at once, `repeat` times."
    out = Level(k)
    for _ in range(repeat):
        t0 = time.perf_counter()
        streams = await asyncio.gather(*(one_stream(client, name, i, tokens) for i in range(k)))
        out.runs.append(list(streams))
        out.walls.append(max(s.end for s in streams) - t0)
    return out


async def lone(client, name: str, i: int, tokens: int) -> tuple[str, int | None]:
    "The answer to prompt i asked alone, not streamed: (text, completion tokens of its usage)."
    r = await client.chat.completions.create(model=name, messages=prompt(i), temperature=0, max_tokens=tokens,
                                             extra_body={'min_tokens': tokens})
    return r.choices[0].message.content or '', r.usage.completion_tokens if r.usage else None


async def measure(port: int, a) -> tuple[list[Level], dict]:
    "Warm-up, then every stream count; then the lone answers of the prompts used."
    import openai
    client = openai.AsyncOpenAI(base_url=f'http://127.0.0.1:{port}/v1', api_key='none', max_retries=0,
                                timeout=3600)
    name = (await client.models.list()).data[0].id               # the model the server lists first
    await one_stream(client, name, 0, a.tokens)                  # warm-up
    levels = [await level(client, name, k, a.tokens, a.repeat) for k in a.streams]
    alone = {i: await lone(client, name, i, a.tokens) for i in range(max(a.streams))}
    await client.close()
    return levels, alone


def count(levels: list[Level], alone: dict, tok):
    "Each stream's completion tokens: its usage chunk, else the lone answer's usage (same text), else re-tokenised."
    def ntok(text): return len(tok(text, add_special_tokens=False)['input_ids'])
    for s in (s for l in levels for s in l.streams):
        text, n = alone[s.i]
        if s.usage is not None: s.tokens, s.how = s.usage, 'usage'
        elif n is not None and s.text == text: s.tokens, s.how = n, 'lone'
        else: s.tokens, s.how = ntok(s.text), 'retok'
        s.after = max(0, s.tokens - ntok(s.head))


def model_folder(model: str) -> str:
    "The folder holding the tokenizer: the model folder, or a run folder's base model."
    run = Path(model) / 'llmft_args.yaml'
    if not run.exists() or (Path(model) / 'tokenizer_config.json').exists(): return model
    import yaml
    return yaml.safe_load(run.read_text())['model_name_or_path']


# ---------------------------------------------------------------- table

def row(label: str, l: Level, alone: dict) -> dict:
    "The figures of one table row."
    ttft = [s.first - s.sent for s in l.streams if s.first is not None]
    dec = [s.after / (s.last - s.first) for s in l.streams
           if s.chunks > 1 and s.last > s.first and s.first - s.sent < (s.end - s.sent) / 2]
    n = [s.tokens for s in l.streams]
    return dict(label=label, k=l.k, p50=np.percentile(ttft, 50) if ttft else float('nan'),
                p95=np.percentile(ttft, 95) if ttft else float('nan'),
                agg=statistics.median(sum(s.tokens for s in r) / w for r, w in zip(l.runs, l.walls)),
                dec=statistics.median(dec) if dec else None, nmin=min(n), nmax=max(n),
                how='/'.join(sorted({s.how for s in l.streams})), wall=statistics.median(l.walls),
                same=sum(s.text == alone[s.i][0] for s in l.streams), total=len(l.streams))


def table(rows: list[dict]) -> str:
    out = ['| server | streams | TTFT p50 s | TTFT p95 s | aggregate tok/s | decode tok/s/stream | tokens/stream '
           '| = lone | wall s |', '|---|--:|--:|--:|--:|--:|---|--:|--:|']
    for r in rows:
        dec = f"{r['dec']:,.0f}" if r['dec'] is not None else '-'
        n = str(r['nmin']) if r['nmin'] == r['nmax'] else f"{r['nmin']}-{r['nmax']}"
        out.append(f"| {r['label']} | {r['k']} | {r['p50']:.3f} | {r['p95']:.3f} | {r['agg']:,.0f} | {dec} "
                   f"| {n} ({r['how']}) | {r['same']}/{r['total']} | {r['wall']:.2f} |")
    return '\n'.join(out)


def targets(rows: list[dict], streams: list[int]) -> list[str]:
    "The issue's two targets for the batched server, and how it compares with LLaMA-Factory."
    by = {(r['label'], r['k']): r for r in rows}
    top, out = max(streams), []
    b, s, f = (by.get((LABELS[n], top)) for n in ('llmft', 'serial', 'lf'))
    if b and s:
        x = b['agg'] / s['agg']
        out.append(f"aggregate tok/s at {top} streams, batched / serial: {x:.2f}x (target >= 4x: "
                   f"{'met' if x >= 4 else 'not met'})")
    one = by.get((LABELS['llmft'], 1))
    if b and one:
        x = b['p95'] / one['p50']
        out.append(f"p95 TTFT at {top} streams / lone request's TTFT, batched: {b['p95']:.3f} / {one['p50']:.3f} s = "
                   f"{x:.2f}x (target <= 2x: {'met' if x <= 2 else 'not met'})")
    old = by.get((LABELS['before'], top))
    if b and old:
        x = b['agg'] / old['agg']
        out.append(f"aggregate tok/s at {top} streams, batched / the server before batching: {x:.2f}x (target >= 4x: "
                   f"{'met' if x >= 4 else 'not met'})")
    if b and f:
        out.append(f"aggregate tok/s at {top} streams, llmft batched / LLaMA-Factory: {b['agg'] / f['agg']:.2f}x")
    return out


def versions(a, names: list[str]) -> str:
    "The versions of the two frameworks."
    from importlib.metadata import version
    out = [f'llmft {version("llmft")}']
    if 'lf' in names:
        code = 'import importlib.metadata as m; print(m.version("llamafactory"), m.version("transformers"))'
        lf = subprocess.run([str(Path(a.lf_venv) / 'bin' / 'python'), '-c', code], capture_output=True, text=True)
        v = lf.stdout.split()
        out.append(f'llamafactory {v[0]} (transformers {v[1]})' if len(v) == 2 else 'llamafactory ?')
    return ', '.join(out)


# ---------------------------------------------------------------- main

def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default=None, help='model folder or llmft run folder (default: the tiny llama3 fixture)')
    ap.add_argument('--template', default='llama3', help='chat template of a model folder (both frameworks)')
    ap.add_argument('--tokens', type=int, default=64, help='completion tokens per answer')
    ap.add_argument('--streams', default='1,4,16', help='concurrent streaming clients, comma separated')
    ap.add_argument('--repeat', type=int, default=3, help='runs of each stream count')
    ap.add_argument('--skip-lf', action='store_true', help='leave LLaMA-Factory out')
    ap.add_argument('--only', default=None, help=f"servers to run, comma separated, of {', '.join(SERVERS)}")
    ap.add_argument('--before', default=None, help='a checkout of llmft before batching (git worktree add DIR a853d62): '
                    'its one-request-at-a-time server is measured too')
    ap.add_argument('--lf-venv', default=str(ROOT / '.lf-venv'), help='venv with llamafactory==0.9.5')
    a = ap.parse_args(argv)
    a.streams = sorted({int(k) for k in a.streams.split(',')})
    if a.repeat < 1: ap.error(f'--repeat must be >= 1, got {a.repeat}')
    if a.tokens < 1: ap.error(f'--tokens must be >= 1, got {a.tokens}')
    if a.streams[0] < 1 or a.streams[-1] > len(TOPICS):
        ap.error(f'--streams: each count from 1 to {len(TOPICS)} (one prompt per stream), got {a.streams}')
    names = a.only.split(',') if a.only else list(SERVERS)
    bad = [n for n in names if n not in SERVERS]
    if bad: ap.error(f"--only: unknown server {', '.join(bad)}; expected some of {', '.join(SERVERS)}")
    a.names = [n for n in SERVERS if n in names and not (n == 'lf' and a.skip_lf) and not (n == 'before' and not a.before)]
    if 'lf' in a.names and not (Path(a.lf_venv) / 'bin' / 'llamafactory-cli').exists():
        ap.error(f'no llamafactory-cli in {a.lf_venv}: run ../shared/bench-lf/setup_lf_venv.sh {a.lf_venv}, '
                 'or pass --skip-lf')
    if 'lf' in a.names and a.model and (Path(a.model) / 'llmft_args.yaml').exists():
        ap.error(f'--model {a.model} is an llmft run folder; the LLaMA-Factory side takes a model folder: pass a '
                 'model folder, or --skip-lf')
    return a


def main(argv=None):
    a = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # a kill stops the running server too (finally below)
    os.environ.update(OFFLINE)
    if a.model is None:
        from llmft.testing import tiny_model
        a.model = str(tiny_model('llama'))
    a.model = str(Path(a.model).resolve()) if Path(a.model).exists() else a.model
    run = (Path(a.model) / 'llmft_args.yaml').exists()
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_folder(a.model))
    rows, rss, failed, load0 = [], {}, [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix='bench-infer-') as work:
        for name in a.names:
            print(f'{LABELS[name]}: starting', file=sys.stderr, flush=True)
            p = log = None
            try:
                p, port, log = start(name, a, Path(work))
                levels, alone = asyncio.run(measure(port, a))
                rss[name] = peak_rss_mib(p.pid)
                count(levels, alone, tok)
                rows += [row(LABELS[name], l, alone) for l in levels]
            except Exception as e:
                tail = log.read_text(errors='replace').splitlines()[-15:] if log and log.exists() else []
                failed.append(f'{LABELS[name]} failed: {type(e).__name__}: {e}')
                print('\n'.join([failed[-1], *tail]), file=sys.stderr)
            finally:
                if p is not None: stop(p)
    print(f"Serving benchmark: {a.model}, template {'of the run' if run else a.template}, "
          f'{a.tokens} tokens per answer (greedy), '
          f'{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}; '
          f'load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; {versions(a, a.names)}\n')
    print(table(rows))
    notes = [f'{a.repeat} run(s) per stream count. TTFT: request sent -> first chunk with text. tokens/stream counted '
             'by usage (stream usage chunk), lone (usage of the same prompt asked alone; streamed text equal), retok '
             '(re-tokenised text).']
    if 'lf' in a.names:
        notes.append("LLaMA-Factory's api ignores min_tokens and stream usage: its token counts are the real ones "
                     '(an answer may end early at the stop token); it decodes one request at a time '
                     '(MAX_CONCURRENT=1).')
    print('\n' + '\n'.join(f'* {n}' for n in notes + targets(rows, a.streams) + failed))
    print('* peak RSS: ' + '; '.join(f'{LABELS[n]} {v:,.0f} MiB' for n, v in rss.items()))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

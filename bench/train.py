#!/usr/bin/env python3
"""Training speed, memory and overhead of llmft against LLaMA-Factory, side by side on the same recipes.

Builds the tiny Llama of ../shared/bench-lf (make_tiny_model.py, vocab 8064) and, with --vocab128k, the same model with
its vocabulary padded to 128,256 rows (Llama-3's size: there the logits dominate memory). Writes the neutral recipes with
bench_spec.py and renders them with render_lf.py; llmft reads the very same YAML files (it knows LLaMA-Factory's keys).
Each run goes through bench/counted.py in a fresh process, pinned to one core with one thread, frameworks interleaved
(the order alternates between repetitions), and counts trained tokens the same way for both: labels != -100 of every
batch of every optimizer step. Prints per task the medians and the llmft / LLaMA-Factory ratios:

* tok/s: trained tokens / train_runtime; samples/s: the Trainer's train_samples_per_second
* overhead: wall time of the whole process minus train_runtime (imports, data, model, saving)
* peak RSS of the process

    python bench/train.py --lf-venv .lf-venv                     # every task, 30 steps, 3 repetitions (~1.5 h)
    python bench/train.py --tasks dpo_lora,kto_lora --steps 10 --reps 1
    python bench/train.py --no-lf --tasks sft_lora_packing       # llmft only (no second venv)

The LLaMA-Factory venv comes from ../shared/bench-lf/setup_lf_venv.sh (`make parity` makes .lf-venv).
"""
from __future__ import annotations
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
BENCH_LF = SHARED / 'bench-lf'
DATA = SHARED / 'reference-data' / 'llamafactory-demo'
TASKS = 'sft_lora,sft_lora_packing,sft_lora_neat_packing,pt_lora,rm_lora,dpo_lora,kto_lora'
ENV = dict(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1', DISABLE_VERSION_CHECK='1',
           TOKENIZERS_PARALLELISM='false', PYTHONWARNINGS='ignore')


def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def build(work: Path, py: str, steps: int, vocab128k: bool) -> dict:
    "The model(s), spec and rendered YAML files; returns {suite: folder of yaml files}."
    model = work / 'models' / 'tiny-llama3'
    if not (model / 'config.json').exists():
        sh(py, BENCH_LF / 'make_tiny_model.py', '--out', model, '--corpus', DATA / 'wiki_demo.txt', DATA / 'c4_demo.jsonl',
           DATA / 'alpaca_zh_demo.json')
    models = {'': model}
    if vocab128k:
        big = work / 'models' / 'tiny-llama3-128k'
        if not (big / 'config.json').exists():
            sh(py, '-c', 'import sys; from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; '
               'm = M.from_pretrained(sys.argv[1]); m.resize_token_embeddings(128256, mean_resizing=False); '
               'm.save_pretrained(sys.argv[2]); T.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])', model, big)
        models['@128k'] = big
    suites = {}
    for suffix, m in models.items():
        cfg = work / f'cfg{suffix}'
        sh(py, BENCH_LF / 'bench_spec.py', '--model', m, '--data-dir', DATA, '--out', cfg, '--max-steps', steps)
        sh(py, BENCH_LF / 'render_lf.py', '--spec', cfg / 'spec.json', '--out', cfg / 'yaml')
        suites[suffix] = cfg / 'yaml'
    return suites


def run_one(fw: str, py: str, yaml: Path, out: Path, threads: int, core: int) -> dict:
    "One training run through counted.py; its counters, train_runtime and samples/s."
    text = yaml.read_text().splitlines()
    cfg = out / 'run.yaml'
    out.mkdir(parents=True, exist_ok=True)
    cfg.write_text('\n'.join(f'output_dir: {out / "o"}' if l.startswith('output_dir:') else l for l in text) + '\n')
    env = dict(os.environ, **ENV, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HOME=str(out / 'hf'))
    cli = 'llmft' if fw == 'llmft' else 'llamafactory-cli'
    pin = ['taskset', '-c', str(core)] if shutil.which('taskset') else []
    with open(out / 'log.txt', 'w') as log:
        subprocess.run([*pin, py, ROOT / 'bench' / 'counted.py', out / 'counted.json', cli, 'train', cfg], env=env,
                       stdout=log, stderr=subprocess.STDOUT, cwd=out)
    r = json.loads((out / 'counted.json').read_text())
    if r['rc']: raise SystemExit(f'{fw} failed on {yaml.name}: see {out / "log.txt"}')
    res = json.loads((out / 'o' / 'all_results.json').read_text())
    rt = res['train_runtime']
    return dict(r, train_s=rt, tok_s=r['tokens'] / rt, samples_s=res['train_samples_per_second'],
                overhead_s=r['wall_s'] - rt)


def cli_seconds(fw: str, py: str, args: list, reps: int = 3) -> float:
    "Median wall time of a CLI call (`version`, `--help`) in a fresh process."
    cli = str(Path(py).parent / ('llmft' if fw == 'llmft' else 'llamafactory-cli'))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([cli, *args], env=dict(os.environ, **ENV), capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(results: dict, pys: dict) -> str:
    keys = [('train_s', 'train s'), ('tok_s', 'tok/s'), ('samples_s', 'samples/s'), ('overhead_s', 'overhead s'),
            ('peak_rss_mib', 'peak RSS MiB')]
    head = '| task | ' + ' | '.join(f'{name} ({fw})' for _, name in keys for fw in pys) + ' |'
    rows = [head, '|' + '---|' * (1 + len(keys) * len(pys))]
    ratio_rows = ['| task | tok/s | samples/s | overhead | peak RSS | tokens (llmft / LF) |', '|---|---|---|---|---|---|']
    for task, by_fw in results.items():
        med = {fw: {k: statistics.median(r[k] for r in runs) for k, _ in keys + [('tokens', '')]}
               for fw, runs in by_fw.items()}
        rows.append(f'| {task} | ' + ' | '.join(f'{med[fw][k]:.1f}' if fw in med else '–' for k, _ in keys
                                                 for fw in pys) + ' |')
        if len(med) == 2:
            a, b = med['llmft'], med['lf']
            ratio_rows.append(f"| {task} | {a['tok_s'] / b['tok_s']:.2f} | {a['samples_s'] / b['samples_s']:.2f} | "
                              f"{a['overhead_s'] / b['overhead_s']:.2f} | {a['peak_rss_mib'] / b['peak_rss_mib']:.2f} | "
                              f"{a['tokens']:.0f} / {b['tokens']:.0f} |")
    return '\n'.join(rows + [''] + (ratio_rows if len(pys) == 2 else []))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--lf-venv', default=str(ROOT / '.lf-venv'), help='LLaMA-Factory venv (setup_lf_venv.sh)')
    p.add_argument('--no-lf', action='store_true', help='llmft only')
    p.add_argument('--tasks', default=TASKS)
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--core', type=int, default=0, help='CPU core to pin every run to')
    p.add_argument('--vocab128k', action='store_true', help='also run sft_lora_packing and dpo_lora on a 128k vocab')
    p.add_argument('--work', default=None, help='working folder (default: a fresh temporary one)')
    p.add_argument('--out', default=None, help='also write every run as JSON here')
    a = p.parse_args()
    pys = {'llmft': sys.executable}
    if not a.no_lf:
        lf = Path(a.lf_venv) / 'bin' / 'python'
        if not (Path(a.lf_venv) / 'bin' / 'llamafactory-cli').exists():
            raise SystemExit(f'No LLaMA-Factory in {a.lf_venv}: run ../shared/bench-lf/setup_lf_venv.sh {a.lf_venv}, '
                             'or pass --no-lf.')
        pys['lf'] = str(lf)
    work = Path(a.work or tempfile.mkdtemp(prefix='llmft-bench-'))
    suites = build(work, sys.executable, a.steps, a.vocab128k)
    jobs = [(t, '', suites['']) for t in a.tasks.split(',')]
    if a.vocab128k: jobs += [(t, '@128k', suites['@128k']) for t in ('sft_lora_packing', 'dpo_lora')]
    results = {}
    for rep in range(a.reps):
        for task, suffix, folder in jobs:
            order = list(pys) if rep % 2 == 0 else list(reversed(pys))
            for fw in order:
                r = run_one(fw, pys[fw], folder / f'{task}.yaml', work / 'runs' / f'{task}{suffix}-{fw}-{rep}',
                            a.threads, a.core)
                results.setdefault(task + suffix, {}).setdefault(fw, []).append(r)
                print(f'{task}{suffix} {fw} rep {rep}: train {r["train_s"]:.1f} s, {r["tok_s"]:.0f} tok/s, '
                      f'overhead {r["overhead_s"]:.1f} s, RSS {r["peak_rss_mib"]:.0f} MiB', flush=True)
    cli = {fw: (cli_seconds(fw, py, ['version']), cli_seconds(fw, py, ['--help'])) for fw, py in pys.items()}
    print(f'\n{a.steps} steps, {a.reps} repetition(s), {a.threads} thread(s) pinned to core {a.core}; medians\n')
    print(table(results, pys))
    print('\n| CLI | ' + ' | '.join(pys) + ' |\n|---|' + '---|' * len(pys))
    for i, what in enumerate(('version', '--help')):
        print(f'| {what} s | ' + ' | '.join(f'{cli[fw][i]:.2f}' for fw in pys) + ' |')
    if a.out: Path(a.out).write_text(json.dumps({'results': results, 'cli': cli}, indent=1))


if __name__ == '__main__':
    main()

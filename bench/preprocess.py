#!/usr/bin/env python3
"""SFT preprocessing throughput of llmft's `get_dataset`, and padding efficiency with and without packing.

An alpaca-format file (default: data/alpaca_demo.json) is replicated to N examples. Each measurement runs in a fresh process
with a fresh datasets cache, so nothing is reused, and times the whole `get_dataset` call (read JSON, convert, tokenize, write
Arrow). Prints a table; `--out` also writes the numbers as JSON.

    python bench/preprocess.py                                   # 20,000 examples, tiny llama3 fixture tokenizer
    python bench/preprocess.py --model DIR --data alpaca_en_demo.json --workers 1 2 --repeat 3

For a side-by-side figure run LLaMA-Factory's own pipeline (in a separate venv) on the same file, tokenizer, template and
cutoff, e.g. with ../shared/bench-lf/prep_bench.py.
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(src: Path, n: int, work: Path) -> str:
    rows = json.loads(src.read_text(encoding='utf-8'))
    name = f'alpaca_x{n}'
    (work / f'{name}.json').write_text(json.dumps([rows[i % len(rows)] for i in range(n)], ensure_ascii=False), encoding='utf-8')
    (work / 'dataset_info.json').write_text(json.dumps({name: {'file_name': f'{name}.json'}}))
    return name


def single(a) -> dict:
    "One measurement, in this (fresh) process."
    t0 = time.perf_counter()
    import torch
    from llmft.hparams.parser import get_train_args
    from llmft.data.tokenizer import load_tokenizer
    from llmft.data.templates import get_template
    from llmft.data.pipeline import get_dataset
    from llmft.data.collators import SFTCollator, padding_efficiency
    import_s = time.perf_counter() - t0
    args = get_train_args(dict(model_name_or_path=a.model, stage='sft', do_train=True, dataset=a.name, dataset_dir=a.work,
                               template=a.template, cutoff_len=a.cutoff, overwrite_cache=True, packing=a.packing,
                               preprocessing_num_workers=a.workers if a.workers > 1 else None,
                               output_dir=str(Path(a.work) / 'out'), overwrite_output_dir=True, report_to='none'))
    tok = load_tokenizer(args.model)
    tpl = get_template(args.data.template, tok)
    t0 = time.perf_counter()
    ds = get_dataset(tpl, args.data, args.training, 'sft', tok)['train_dataset']
    total = time.perf_counter() - t0
    lens = [len(x) for x in ds['input_ids']]
    labels = sum(sum(1 for t in row if t != -100) for row in ds['labels'])
    coll = SFTCollator(tok.pad_token_id)
    feats = ds.select_columns([c for c in ('input_ids', 'attention_mask') if c in ds.column_names]).to_list()
    effs = [padding_efficiency(coll.pad(feats[i:i + 8])) * len(feats[i:i + 8]) for i in range(0, len(feats), 8)]
    return dict(workers=a.workers, packing=a.packing, import_s=round(import_s, 2), get_dataset_s=round(total, 3),
                rows=len(lens), tokens=sum(lens), label_tokens=labels, examples_per_s=round(a.n / total, 1),
                tokens_per_s=round(sum(lens) / total, 1), padding_efficiency_b8=round(sum(effs) / len(feats), 4),
                torch_threads=torch.get_num_threads())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', help='model or tokenizer folder (default: the tiny llama3 fixture)')
    p.add_argument('--data', default=str(ROOT / 'data' / 'alpaca_demo.json'), help='alpaca-format json to replicate')
    p.add_argument('--n', type=int, default=20000)
    p.add_argument('--template', default='llama3')
    p.add_argument('--cutoff', type=int, default=512)
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--no-packing', action='store_true', help='measure without packing only')
    p.add_argument('--out')
    p.add_argument('--single', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--work', help=argparse.SUPPRESS)
    p.add_argument('--name', help=argparse.SUPPRESS)
    p.add_argument('--packing', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.single:
        a.workers = a.workers[0]
        print('RESULT ' + json.dumps(single(a)), flush=True); return
    if a.model is None:
        from llmft.testing import tiny_model
        a.model = str(tiny_model('llama'))
    work = Path(tempfile.mkdtemp(prefix='llmft_prep_'))
    name = make_data(Path(a.data), a.n, work)
    results = []
    for packing in ([False] if a.no_packing else [False, True]):
        for w in a.workers:
            runs = []
            for _ in range(a.repeat):
                env = {**os.environ, 'HF_DATASETS_CACHE': tempfile.mkdtemp(dir=work), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
                       'LLMFT_LOG_LEVEL': 'WARNING'}
                cmd = [sys.executable, __file__, '--single', '--model', a.model, '--work', str(work), '--name', name, '--n', str(a.n),
                       '--template', a.template, '--cutoff', str(a.cutoff), '--workers', str(w)] + (['--packing'] if packing else [])
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = next((l for l in r.stdout.splitlines() if l.startswith('RESULT ')), None)
                if line is None: sys.exit(f'run failed:\n{r.stderr[-3000:]}')
                runs.append(json.loads(line[7:]))
            best = min(runs, key=lambda x: x['get_dataset_s'])
            best['median_s'] = round(statistics.median(x['get_dataset_s'] for x in runs), 3)
            results.append(best)
    print(f"\nllmft get_dataset, sft, {a.n} examples of {Path(a.data).name}, template {a.template}, cutoff {a.cutoff}, "
          f"best of {a.repeat} fresh processes\n")
    hdr = '| packing | workers | get_dataset s (best / median) | examples/s | tokens/s | rows | tokens | label tokens | padding efficiency, batch 8 |'
    print(hdr); print('|---' * (hdr.count('|') - 1) + '|')
    for r in results:
        print(f"| {'yes' if r['packing'] else 'no'} | {r['workers']} | {r['get_dataset_s']} / {r['median_s']} | {r['examples_per_s']:,} | "
              f"{r['tokens_per_s']:,} | {r['rows']:,} | {r['tokens']:,} | {r['label_tokens']:,} | {r['padding_efficiency_b8']:.3f} |")
    if a.out: Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()

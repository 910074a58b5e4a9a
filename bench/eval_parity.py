"""Side by side: `llmft eval` and LLaMA-Factory 0.9.5's `Evaluator` on the same model, benchmark, template and seed.

usage: python bench/eval_parity.py --lf-python .lf-venv/bin/python [--model DIR] [--n-shot 0,3] [--tasks ...]

LLaMA-Factory reads benchmarks through dataset scripts, which `datasets` 4 (its own pin) no longer runs; this script hands
its `Evaluator` the same questions llmft read (as a `DatasetDict` with `train` = dev, as its scripts did) and leaves
everything else — few-shot draws, prompt wording, chat template, batching, the letter read from the logits — to its code.
Prints one row per task and shot count: questions, accuracy on each side, and how many predictions differ.
"""
from __future__ import annotations
import argparse, json, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LF_SIDE = r'''
import json, os, sys
import datasets
from llamafactory.eval import evaluator as E
cfg, data = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
split_name = {'test': 'test', 'val': 'validation', 'dev': 'train'}[cfg.pop('_split')]
def load_dataset(path, name, **kw):
    return datasets.DatasetDict({'train': datasets.Dataset.from_list(data[name]['dev']),
                                 split_name: datasets.Dataset.from_list(data[name]['questions'])})
E.load_dataset = load_dataset
E.cached_file = lambda path_or_repo_id, filename, **kw: os.path.join(path_or_repo_id, filename)
E.Evaluator(cfg).eval()
'''


def run(lf_python: str, model: str, task: str, lang: str, n_shot: int, template: str, work: Path) -> dict:
    from llmft.eval.evaluator import run_eval
    from llmft.eval.tasks import load_task
    from llmft.hparams.evaluation import EvaluationArguments
    a = EvaluationArguments(task=task, task_dir=str(ROOT / 'evaluation'), lang=lang, n_shot=n_shot)
    t = load_task(a.task_dir, a.name, a.split, max(n_shot, 1))
    strip = lambda rows: [{k: v for k, v in r.items() if k != '_letters'} for r in rows]
    data = {s: {'questions': strip(t.questions[s]), 'dev': strip(t.dev[s])} for s in t.mapping}
    (work / 'data.json').write_text(json.dumps(data, ensure_ascii=False))
    ours = run_eval(dict(model_name_or_path=model, template=template), task=task, task_dir=a.task_dir, lang=lang,
                    n_shot=n_shot, batch_size=4, seed=42, verbose=False)
    save = work / f'lf-{task}-{n_shot}'
    cfg = dict(model_name_or_path=model, template=template, task=task, task_dir=a.task_dir, lang=lang, n_shot=n_shot,
               batch_size=4, seed=42, save_dir=str(save), _split=a.split)
    r = subprocess.run([lf_python, '-c', LF_SIDE, json.dumps(cfg), str(work / 'data.json')], capture_output=True,
                       text=True, timeout=1200)
    if r.returncode:
        sys.exit(f'LLaMA-Factory failed:\n{r.stderr[-3000:]}')
    lf = json.loads((save / 'results.json').read_text())
    lf_preds = {s: [v[str(i)] for i in range(len(v))] for s, v in lf.items()}
    total = sum(len(v) for v in ours.predictions.values())
    lf_acc = float((save / 'results.log').read_text().splitlines()[0].split(':')[1])
    differ = sum(a != b for s in ours.predictions for a, b in zip(ours.predictions[s], lf_preds[s]))
    return dict(task=task, n_shot=n_shot, questions=total, llmft=ours.average, lf=lf_acc, differ=differ)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--lf-python', default=str(ROOT / '.lf-venv' / 'bin' / 'python'))
    p.add_argument('--model', default=None, help='a model folder (default: the tiny Llama fixture)')
    p.add_argument('--template', default='llama3')
    p.add_argument('--n-shot', default='0,3')
    p.add_argument('--tasks', default='tinymmlu_test:en,tinycmmlu_test:zh')
    args = p.parse_args()
    from llmft.testing import tiny_model
    model = args.model or str(tiny_model('llama'))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for spec in args.tasks.split(','):
            task, lang = spec.split(':')
            for n in map(int, args.n_shot.split(',')):
                rows.append(run(args.lf_python, model, task, lang, n, args.template, Path(d)))
    print('| task | n_shot | questions | llmft % | LLaMA-Factory % | predictions that differ |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['task']} | {r['n_shot']} | {r['questions']} | {r['llmft']:.2f} | {r['lf']:.2f} | {r['differ']} |")
    sys.exit(1 if any(r['differ'] for r in rows) else 0)


if __name__ == '__main__':
    main()

"""Side by side: the Ollama `Modelfile` `llmft export` writes and the one LLaMA-Factory 0.9.5 writes, for every template.

usage: python bench/modelfile_parity.py [--lf-python .lf-venv/bin/python]

Both sides fix the same tokenizer (the tiny llama3 fixture) for each template and render its Modelfile. A differing
template is marked `deliberate` when `llmft.data.fidelity` lists a difference for it (our template text differs on
purpose, so its Modelfile does too). Exit status 1 when an unlisted difference remains.
"""
from __future__ import annotations
import argparse, inspect, json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LF_SIDE = r'''
import json, sys
from transformers import AutoTokenizer
from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments
out = {}
for name in json.loads(sys.argv[2]):
    if name not in TEMPLATES: continue
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    try: out[name] = get_template_and_fix_tokenizer(tok, DataArguments(template=name)).get_ollama_modelfile(tok)
    except ValueError as e: out[name] = {'error': str(e)}
print(json.dumps(out))
'''


def ours(tok_path: str) -> dict[str, str]:
    from transformers import AutoTokenizer
    from llmft.data.templates import TEMPLATES, get_template_and_fix_tokenizer
    from llmft.export import ollama_modelfile
    from llmft.hparams.data import DataArguments
    out = {}
    for name in TEMPLATES:
        tok = AutoTokenizer.from_pretrained(tok_path)
        out[name] = ollama_modelfile(get_template_and_fix_tokenizer(tok, DataArguments(template=name)), tok)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--lf-python', default=str(ROOT / '.lf-venv' / 'bin' / 'python'))
    a = p.parse_args()
    from llmft.data import fidelity
    from llmft.testing import tiny_tokenizer_path
    tok = str(tiny_tokenizer_path('llama3'))
    mine = ours(tok)
    r = subprocess.run([a.lf_python, '-c', LF_SIDE, tok, json.dumps(list(mine))], capture_output=True, text=True,
                       timeout=600)
    if r.returncode: sys.exit(f'LLaMA-Factory failed:\n{r.stderr[-3000:]}')
    lf = json.loads(r.stdout.strip().splitlines()[-1])
    listed = inspect.getsource(fidelity)
    rows, unlisted = [], 0
    for name, text in mine.items():
        if name not in lf: verdict = 'not in LLaMA-Factory 0.9.5'
        elif isinstance(lf[name], dict): verdict = f"LLaMA-Factory cannot write it ({lf[name]['error']})"
        elif lf[name] == text: verdict = 'identical'
        elif f"'{name}'" in listed: verdict = 'differs (a listed deliberate difference)'
        else:
            verdict, unlisted = 'DIFFERS (unlisted)', unlisted + 1
        rows.append((name, verdict))
    print('| template | Modelfile |\n|---|---|')
    for name, verdict in rows: print(f'| {name} | {verdict} |')
    counts = {v: sum(1 for _, x in rows if x == v) for v in dict.fromkeys(v for _, v in rows)}
    print('\n' + ', '.join(f'{n} {v}' for v, n in counts.items()))
    sys.exit(1 if unlisted else 0)


if __name__ == '__main__':
    main()

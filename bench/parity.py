"""Parity harness: llmft's tokenized data against LLaMA-Factory 0.9.5's, token for token, on seeded conversations.

usage: python bench/parity.py --lf-python PATH [--work DIR] [--templates a,b] [--procs sft,pack]
                              [--tokenizers bosful,bosless] [--splits llama3,gpt2]
       (`make parity` installs LLaMA-Factory into .lf-venv with ../shared/bench-lf/setup_lf_venv.sh and runs this)

For every chat template registered in both frameworks, every tokenizer variant and every processor case, both frameworks
tokenize the same dataset files with the same tokenizer, each in its own venv (`bench/parity_side.py`). Each variant is
trained twice, with Llama 3's pre-tokenizer regex and with GPT-2's (`--splits`, `llmft.testing.SPLITS`): GPT-2's cuts
text at other places, so it shows where encoding a turn in pieces (LLaMA-Factory's slots) and whole (llmft) differ.
One table per split counts identical and differing rows; a differing case is marked `deliberate` when
`llmft.data.fidelity.LF_DIFFERENCES` lists it, and its first difference is printed with the decoded tokens around it
(`same text` when both sides' ids decode to the same text: the split differs, not the text; a truncated or packed
case counts as such when its stage's case without either does, as the ids' number moves the cut).
Exit status 1 when an unlisted difference remains.
"""

from __future__ import annotations
import argparse, json, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from parity_data import make_datasets, make_tokenizer, write_llmft_copy, TOKENIZERS  # noqa: E402

# processor cases: stage, dataset, cutoff_len and extra keys
PROCS = {
    'sft': dict(stage='sft', dataset='parity_sft', cutoff_len=1024),
    'sft64': dict(stage='sft', dataset='parity_sft', cutoff_len=64),
    'hist': dict(stage='sft', dataset='parity_sft', cutoff_len=96, extra=dict(mask_history=True)),
    'pack': dict(stage='sft', dataset='parity_sft', cutoff_len=256, extra=dict(packing=True)),
    'neat': dict(stage='sft', dataset='parity_sft', cutoff_len=256, extra=dict(neat_packing=True)),
    'rm': dict(stage='rm', dataset='parity_pref', cutoff_len=1024),
    'dpo64': dict(stage='dpo', dataset='parity_pref', cutoff_len=64),
    'kto': dict(stage='kto', dataset='parity_kto', cutoff_len=1024),
    'pt': dict(stage='pt', dataset='parity_pt', cutoff_len=64),
    'ptpack': dict(stage='pt', dataset='parity_pt', cutoff_len=64, extra=dict(packing=True)),
    'ptrow': dict(stage='pt', dataset='parity_pt', cutoff_len=64, extra=dict(packing=False)),
}
SHAPES = dict(pt='pretrain', sft='supervised', rm='pairwise', dpo='pairwise', kto='feedback')
# the case without truncation or packing of a stage's data: where it differs by the split into tokens alone (same text),
# its truncated or packed cases differ by where they cut, not by what they say (the llama3 split checks those exactly)
BASE = dict(sft='sft', rm='rm', dpo='rm', kto='kto')
PT_TEMPLATES = (
    'default',
    'empty',
    'llama3',
    'qwen',
    'gemma',
)  # pt does not render chat turns: a few templates suffice


def lf_templates(lf_python: str) -> dict[str, str]:
    "LLaMA-Factory's templates and their classes."
    code = ('import json; from llamafactory.data.template import TEMPLATES as T; '
            'print(json.dumps({k: type(v).__name__ for k, v in T.items()}))')
    out = subprocess.run(
        [lf_python, '-c', code],
        capture_output=True,
        text=True,
        check=True,
        env={'DISABLE_VERSION_CHECK': '1', 'PATH': '/usr/bin:/bin'},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def tok_name(split: str, variant: str) -> str:
    "The folder (under WORK/tok) and case-id part of a tokenizer: `bosful`, or `gpt2-bosful` for GPT-2's split."
    return variant if split == 'llama3' else f'{split}-{variant}'


def make_cases(templates, procs, tokenizers, lf_classes, splits=('llama3',)) -> list[dict]:
    cases = []
    for split in splits:
        for t in templates:
            for tk in tokenizers:
                for p in procs:
                    if PROCS[p]['stage'] == 'pt' and t not in PT_TEMPLATES:
                        continue
                    # LF rewrites a user's `{{idx}}` in its base Template (and subclasses) only, not in Llama2Template
                    cases.append(
                        dict(
                            PROCS[p],
                            id=f'{t}.{tok_name(split, tk)}.{p}',
                            template=t,
                            tokenizer=tok_name(split, tk),
                            split=split,
                            proc=p,
                            lf_rewrites=lf_classes[t] != 'Llama2Template',
                        )
                    )
    return cases


def run_side(python: str, side: str, work: Path):
    with open(work / f'{side}.log', 'w') as f:
        return subprocess.run(
            [python, str(HERE / 'parity_side.py'), side, str(work)], stdout=f, stderr=subprocess.STDOUT
        ).returncode


def first_diff(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def context(tok, ids: list, pos: int, width: int = 6) -> str:
    "The tokens around `pos`, decoded one by one; the token at `pos` in [brackets]."

    def show(i):
        return '·' if i == -100 else tok.decode([i])

    parts = [repr(show(i))[1:-1] for i in ids[max(0, pos - width) : pos]]
    here = f'[{repr(show(ids[pos]))[1:-1]}]' if pos < len(ids) else '[<end>]'
    return ' '.join(parts + [here] + [repr(show(i))[1:-1] for i in ids[pos + 1 : pos + width]])


def compare(case: dict, lf: dict, ours: dict, tok) -> dict:
    "Counts of identical / differing rows and the first difference of the case."
    res = dict(
        id=case['id'],
        template=case['template'],
        tokenizer=case['tokenizer'],
        proc=case['proc'],
        n_lf=None,
        n_ours=None,
        same=0,
        differ=0,
        first='',
        same_text=True,
    )
    if lf['error']:  # LLaMA-Factory itself fails or refuses: nothing to compare
        res.update(status='lf-error', first=f"LF: {lf['error']} | llmft: {ours['error'] or 'ok'}", same_text=False)
        return res
    if ours['error']:
        res.update(
            status='refused', first=f"llmft: {ours['error']} (LF: {len(lf['rows'])} rows)", error=ours['error'],
            same_text=False,
        )
        return res
    a, b = lf['rows'], ours['rows']
    res.update(n_lf=len(a), n_ours=len(b))
    for i, (x, y) in enumerate(zip(a, b)):
        keys = [k for k in x if k in y]
        bad = [k for k in keys if x[k] != y[k]]
        if not bad:
            res['same'] += 1
            continue
        res['differ'] += 1
        res['same_text'] &= all(decoded(tok, x[k]) == decoded(tok, y[k]) for k in bad if 'input_ids' in k)
        if not res['first']:
            k = bad[0]
            if isinstance(x[k], list):
                p = first_diff(x[k], y[k])
                res['first'] = (
                    f'row {i} {k} @{p} (len {len(x[k])} vs {len(y[k])})\n      LF:    {context(tok, x[k], p)}\n'
                    f'      llmft: {context(tok, y[k], p)}'
                )
            else:
                res['first'] = f'row {i} {k}: LF {x[k]!r} llmft {y[k]!r}'
    if len(a) != len(b):
        res['differ'] += abs(len(a) - len(b))
        res['first'] = f'rows: LF {len(a)}, llmft {len(b)}. ' + res['first']
    res['status'] = 'identical' if res['differ'] == 0 else 'differ'
    res['same_text'] = res['same_text'] and res['differ'] > 0 and len(a) == len(b)
    return res


def decoded(tok, ids: list) -> str:
    "The text of `ids` (special tokens included)."
    return tok.decode([i for i in ids if i >= 0], skip_special_tokens=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--lf-python', required=True, help="python of a venv with llamafactory==0.9.5")
    ap.add_argument('--work', default='.parity', help='work folder (data, tokenizers, both sides\' outputs)')
    ap.add_argument(
        '--templates', default='', help='comma-separated subset (default: every template registered in both)'
    )
    ap.add_argument('--procs', default=','.join(PROCS), help=f'comma-separated subset of {list(PROCS)}')
    ap.add_argument(
        '--tokenizers', default=','.join(TOKENIZERS), help=f'comma-separated subset of {list(TOKENIZERS)}'
    )
    ap.add_argument(
        '--splits', default='llama3,gpt2', help='pre-tokenizer regexes of the tokenizers (llmft.testing.SPLITS)'
    )
    ap.add_argument('--n', type=int, default=60, help='conversations per dataset')
    ap.add_argument(
        '--reuse', action='store_true', help='compare the outputs already in --work without running the sides'
    )
    a = ap.parse_args(argv)
    from llmft.data.templates import TEMPLATES
    from llmft.data.fidelity import lf_difference
    from llmft.testing import FAMILIES, CHAT_CORPUS
    from transformers import AutoTokenizer

    work = Path(a.work).resolve()
    lf_classes = lf_templates(a.lf_python)
    both = sorted(set(TEMPLATES) & set(lf_classes))
    templates = [t for t in a.templates.split(',') if t] or both
    splits = a.splits.split(',')
    cases = make_cases(templates, a.procs.split(','), a.tokenizers.split(','), lf_classes, splits)
    names = [tok_name(s, tk) for s in splits for tk in a.tokenizers.split(',')]
    t0 = time.time()
    if not a.reuse:
        make_datasets(work / 'data', a.n)
        write_llmft_copy(work / 'data', work / 'data_llmft')
        corpus = [
            json.dumps(json.loads((work / 'data' / f).read_text()), ensure_ascii=False)
            for f in ('parity_sft.json', 'parity_pt.json')
        ]
        specials = [s for f in FAMILIES.values() for s in f['specials']]
        for s in splits:
            for tk in a.tokenizers.split(','):
                chat = CHAT_CORPUS * 3 if s != 'llama3' else []  # rendered chat text: merges across a template's joints
                make_tokenizer(work / 'tok' / tok_name(s, tk), tk, specials, corpus * 3 + chat, s)
        (work / 'cases.json').write_text(json.dumps(cases, indent=1))
        print(
            f'{len(cases)} cases ({len(templates)} templates x {a.procs} x {a.tokenizers} x {a.splits}); '
            'running both sides...',
            flush=True,
        )
        with ThreadPoolExecutor(2) as ex:
            rcs = list(ex.map(lambda s: run_side(*s, work), [(a.lf_python, 'lf'), (sys.executable, 'llmft')]))
        if any(rcs):
            sys.exit(f'a side failed: see {work}/lf.log and {work}/llmft.log')
    toks = {n: AutoTokenizer.from_pretrained(work / 'tok' / n) for n in names}
    results = {}
    for c in cases:
        r = compare(
            c,
            *(json.loads((work / s / f"{c['id']}.json").read_text()) for s in ('lf', 'llmft')),
            toks[c['tokenizer']],
        )
        results[c['id']] = dict(r, split=c['split'])
    for c in cases:
        r = results[c['id']]
        opts = [k for k, v in c.get('extra', {}).items() if v] + (['truncation'] if c['cutoff_len'] < 1024 else [])
        base = results.get(f"{c['template']}.{c['tokenizer']}.{BASE.get(c['stage'], '')}", {})
        if not r['same_text'] and opts and base.get('same_text'):
            r['same_text_as'] = base['id']  # cut or packed where the ids differ in number: judged by its whole case
        same_text = bool(r['same_text'] or r.get('same_text_as'))
        d = (
            lf_difference(c['template'], SHAPES[c['stage']], opts, r.get('error', ''), c['split'], same_text)
            if r['status'] not in ('identical', 'lf-error')
            else None
        )
        r['deliberate'] = d.what if d else ''
    results = list(results.values())
    (work / 'results.json').write_text(json.dumps(results, indent=1, ensure_ascii=False))
    for s in splits:
        print(f'\n## tokenizers split with {s}\'s pre-tokenizer regex')
        report([r for r in results if r['split'] == s], time.time() - t0)
    print(
        "\n(llmft's side reads the datasets with LLaMA-Factory's rewrite of a user's own `{{idx}}` text applied, "
        "bench/parity_data.py:lf_slot_rewrite: llmft never rewrites message text; listed in llmft.data.fidelity)"
    )
    return 1 if any(r['status'] not in ('identical', 'lf-error') and not r['deliberate'] for r in results) else 0


def report(results: list[dict], secs: float):
    procs = list(dict.fromkeys(r['proc'] for r in results))
    print('\n| template | ' + ' | '.join(procs) + ' |\n|---|' + '---|' * len(procs))
    cell = {'identical': 'same', 'differ': 'DIFF', 'refused': 'REF', 'lf-error': 'lf-err'}
    for t in dict.fromkeys(r['template'] for r in results):
        row = []
        for p in procs:
            rs = [r for r in results if r['template'] == t and r['proc'] == p]
            row.append(' '.join(cell[r['status']] + ('*' if r['deliberate'] else '') for r in rs) if rs else '')
        print(f'| {t} | ' + ' | '.join(row) + ' |')
    n = len(results)
    same = sum(r['status'] == 'identical' for r in results)
    deliberate = sum(r['status'] != 'identical' and bool(r['deliberate']) for r in results)
    lf_err = sum(r['status'] == 'lf-error' for r in results)
    rows = sum(r['same'] + r['differ'] for r in results)
    rows_same = sum(r['same'] for r in results)
    print(
        f'\ncases: {n}; identical: {same}; differing by a listed deliberate difference (*): {deliberate}; '
        f'LLaMA-Factory fails (lf-err): {lf_err}; unlisted: {n - same - deliberate - lf_err}.  '
        f'rows identical: {rows_same}/{rows}.  ({secs:.0f} s)'
    )
    for r in results:
        if r['status'] not in ('identical', 'lf-error'):
            tag = f"deliberate: {r['deliberate']}" if r['deliberate'] else 'UNLISTED'
            text = ', same text' if r['same_text'] else ''
            text += f", same text untruncated and unpacked: {r['same_text_as']}" if r.get('same_text_as') else ''
            print(f"\n{r['id']}: {r['status']} ({r['same']} same, {r['differ']} differ{text}) [{tag}]\n   {r['first']}")


if __name__ == '__main__':
    sys.exit(main())

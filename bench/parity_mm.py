"""Media parity harness: llmft's tokenized media rows and collated media tensors against LLaMA-Factory 0.9.5's.

usage: python bench/parity_mm.py --lf-python PATH [--work DIR] [--cases a,b] [--reuse] [--write-reference]
       (`make parity` runs it after the text harness)

Each case is one family's tiny fixture (`llmft.testing_mm`) with the demo media data (`data/mllm_*`), a stage and its
settings. Both frameworks tokenize the same dataset with the same processor folder, each in its own venv
(`bench/parity_mm_side.py`), and collate the first rows. Rows compare exactly (`input_ids`, `labels`, the pairwise and
KTO columns, the media each row carries); tensors (`pixel_values`, `image_grid_thw`, `token_type_ids`,
`input_features`, ...) compare by shape and value (float tolerance 1e-5). `--write-reference` stores LLaMA-Factory's
side in tests/assets/lf_mm_reference.json, which `tests/test_mm_parity.py` checks llmft against in CI (where
LLaMA-Factory is not installed). Exit status 1 when a case differs.
"""

from __future__ import annotations
import argparse, json, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REFERENCE = ROOT / 'tests' / 'assets' / 'lf_mm_reference.json'
# id -> family, stage, dataset, extra keys
CASES = {
    'llava.sft': ('llava', 'sft', 'mllm_demo', {}),
    'qwen2_vl.sft': ('qwen2_vl', 'sft', 'mllm_demo', {}),
    'qwen2_vl.video': ('qwen2_vl', 'sft', 'mllm_video_demo', {}),
    'qwen2_vl.small': ('qwen2_vl', 'sft', 'mllm_demo', dict(image_max_pixels=40 * 40, image_min_pixels=28 * 28)),
    'qwen2_vl.dpo': ('qwen2_vl', 'dpo', 'mllm_dpo_demo', {}),
    'qwen2_vl.kto': ('qwen2_vl', 'kto', 'mllm_kto_demo', {}),
    'gemma3.sft': ('gemma3', 'sft', 'mllm_demo', {}),
    'gemma3.pan': ('gemma3', 'sft', 'mllm_demo', dict(image_do_pan_and_scan=True)),
    'qwen2_audio.sft': ('qwen2_audio', 'sft', 'mllm_audio_demo', {}),
}


# tensors only llmft's batch has, on purpose: `mm_token_type_ids` (a deliberate difference, `data.fidelity`) and a
# clip's patches (LLaMA-Factory's venv has no video processor: its stand-in returns the grid alone)
LLMFT_ONLY = ('mm_token_type_ids', 'pixel_values_videos')
# cases LLaMA-Factory 0.9.5 itself fails on transformers 5 (listed in `data.fidelity`): the error it gives
LF_FAILS = {'gemma3.pan': 'IndexError'}


def make_cases(ids) -> list[dict]:
    from llmft.testing_mm import tiny_mm_path
    return [dict(id=i, family=CASES[i][0], stage=CASES[i][1], dataset=CASES[i][2], extra=CASES[i][3],
                 template=CASES[i][0], model=str(tiny_mm_path(CASES[i][0])), dataset_dir=str(ROOT / 'data'),
                 cutoff_len=1024) for i in ids]


def run_side(python: str, side: str, work: Path) -> int:
    with open(work / f'{side}.log', 'w') as f:
        return subprocess.run([python, str(HERE / 'parity_mm_side.py'), side, str(work)], stdout=f,
                              stderr=subprocess.STDOUT).returncode


def summary(t) -> dict:
    "A tensor as the reference keeps it: shape, dtype, sum, sum of squares and 64 values spread over it."
    import torch
    flat = t.detach().reshape(-1).to(torch.float64)
    step = max(1, flat.numel() // 64)
    return dict(shape=list(t.shape), dtype=str(t.dtype).replace('torch.', ''), sum=float(flat.sum()),
                sumsq=float((flat * flat).sum()), sample=[float(x) for x in flat[::step][:64]])


def same_summary(a: dict, b: dict, tol: float = 1e-5) -> str:
    "'' when two tensor summaries agree, else what differs."
    if a['shape'] != b['shape']: return f"shape {b['shape']} vs LF {a['shape']}"
    scale = 1 + abs(a['sumsq'])
    if abs(a['sum'] - b['sum']) > tol * scale or abs(a['sumsq'] - b['sumsq']) > tol * scale:
        return f"values (sum {b['sum']:.6g} vs LF {a['sum']:.6g})"
    bad = [i for i, (x, y) in enumerate(zip(a['sample'], b['sample'])) if abs(x - y) > tol * (1 + abs(x))]
    return f'values at sample {bad[0]}' if bad else ''


def compare_rows(lf_rows: list, rows: list) -> str:
    "'' when the rows agree, else the first difference."
    if len(lf_rows) != len(rows): return f'{len(rows)} rows vs LF {len(lf_rows)}'
    for i, (a, b) in enumerate(zip(lf_rows, rows)):
        for k in sorted(set(a) | set(b)):
            if k in a and k in b and a[k] != b[k]: return f'row {i} {k}'
            if (k in a) != (k in b) and (a.get(k) or b.get(k)):
                return f"row {i} {k} only in {'LF' if k in a else 'llmft'}"
    return ''


def compare_case(lf: dict, ours: dict, case_id: str = '') -> dict:
    "The verdict of one case from both sides' rows and tensor summaries."
    expected = LF_FAILS.get(case_id)
    if expected and (lf['error'] or '').startswith(expected) and not ours['error']:
        return dict(status='deliberate', first=f"LF fails as listed ({expected}); llmft: {len(ours['rows'])} rows",
                    rows=len(ours['rows']), tensors=sorted(ours['tensors']))
    if lf['error'] or ours['error']: return dict(status='error', first=f"LF: {lf['error']} | llmft: {ours['error']}")
    first = compare_rows(lf['rows'], ours['rows'])
    for k in sorted(set(lf['tensors']) | set(ours['tensors'])):
        if first: break
        if k not in ours['tensors'] or k not in lf['tensors']:
            if k not in ('attention_mask', 'position_ids', 'rope_deltas') and k.removeprefix('kl_') not in LLMFT_ONLY:
                first = f"tensor {k} only in {'LF' if k in lf['tensors'] else 'llmft'}"
            continue
        if diff := same_summary(lf['tensors'][k], ours['tensors'][k]): first = f'tensor {k}: {diff}'
    return dict(status='differ' if first else 'same', first=first, rows=len(ours['rows']),
                tensors=sorted(set(lf['tensors']) & set(ours['tensors'])))


def load_side(work: Path, side: str, case_id: str) -> dict:
    import torch
    out = json.loads((work / side / f'{case_id}.json').read_text())
    out['tensors'] = {k: summary(v) for k, v in torch.load(work / side / f'{case_id}.pt').items()}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--lf-python', required=True, help='python of a venv with llamafactory==0.9.5')
    ap.add_argument('--work', default='.parity-mm', help="work folder (both sides' outputs)")
    ap.add_argument('--cases', default=','.join(CASES), help=f'comma-separated subset of {list(CASES)}')
    ap.add_argument('--reuse', action='store_true', help='compare the outputs already in --work')
    ap.add_argument('--write-reference', action='store_true', help=f'store the LF side in {REFERENCE.name}')
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cases = make_cases(a.cases.split(','))
    if not a.reuse:
        (work / 'cases.json').write_text(json.dumps(cases, indent=1))
        with ThreadPoolExecutor(2) as ex:
            rcs = list(ex.map(lambda s: run_side(*s, work), [(a.lf_python, 'lf'), (sys.executable, 'llmft')]))
        if any(rcs): sys.exit(f'a side failed: see {work}/lf.log and {work}/llmft.log')
    results, reference = {}, {}
    print('| case | rows | tensors compared | verdict |\n|---|---|---|---|')
    for c in cases:
        lf, ours = load_side(work, 'lf', c['id']), load_side(work, 'llmft', c['id'])
        r = results[c['id']] = compare_case(lf, ours, c['id'])
        reference[c['id']] = dict(case={k: c[k] for k in ('family', 'stage', 'dataset', 'extra')}, rows=lf['rows'],
                                  tensors=lf['tensors'], error=lf['error'])
        print(f"| {c['id']} | {r.get('rows', '-')} | {', '.join(r.get('tensors', []))} | {r['status']} "
              f"{r['first']} |")
    if a.write_reference:
        REFERENCE.write_text(json.dumps(reference, indent=None, separators=(',', ':')) + '\n')
        print(f'wrote {REFERENCE.relative_to(ROOT)}')
    bad = [k for k, r in results.items() if r['status'] not in ('same', 'deliberate')]
    differ = f"; differ: {', '.join(bad)}" if bad else ''
    print(f'{len(results) - len(bad)} of {len(results)} cases identical or a listed difference{differ}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())

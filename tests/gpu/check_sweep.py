#!/usr/bin/env python3
"""GPU-only sweep checks, run where CUDA GPUs are lent (CI has none). Prints a JSON report (and writes it to --out).

    python tests/gpu/check_sweep.py --out report.json        # about a minute on one GPU

* `one_point_per_gpu`: a recipe sweep of two points per visible GPU; each point gets one device of its own
  (`CUDA_VISIBLE_DEVICES`), points that overlap in time never share one, and every point reports its peak GPU memory
  (`peak_gpu_memory_gb`, a column of sweep.csv).
* `two_gpus_per_point` (with two GPUs or more): `gpus_per_point: 2` runs each point under torchrun on two devices.
"""
import argparse, json, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
from check_gpu import REPORT, check  # noqa: E402  (one report format for every GPU check)


def recipe(folder):
    "A small LoRA SFT recipe on the GPU, as a file."
    from llmft.testing import tiny_model
    cfg = dict(model_name_or_path=str(tiny_model('llama', hidden=256, layers=4)), stage='sft', do_train=True,
               finetuning_type='lora', lora_target='all', dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'),
               template='llama3', cutoff_len=256, max_samples=64, overwrite_output_dir=True,
               per_device_train_batch_size=8, learning_rate=5e-3, max_steps=30, logging_steps=5, report_to='none',
               save_strategy='no', bf16=True, seed=0)
    path = Path(folder) / 'recipe.yaml'
    path.write_text(json.dumps(cfg))
    return path


def states(out):
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob('*/sweep_point.json'))]


@check('one_point_per_gpu')
def one_per_gpu():
    import torch
    from llmft.launch.batch import sweep
    tmp, n = Path(tempfile.mkdtemp()), torch.cuda.device_count()
    res = sweep(dict(recipe=str(recipe(tmp)), grid={'learning_rate': [1e-3 * (i + 1) for i in range(2 * n)]},
                     output_dir=str(tmp / 'sweep')))
    st = states(tmp / 'sweep')
    assert not res.failed and all(len(s['devices']) == 1 for s in st), st
    for i, a in enumerate(st):
        for b in st[i + 1:]:
            overlap = min(a['ended'], b['ended']) > max(a['started'], b['started'])
            assert not (overlap and a['devices'] == b['devices']), (a, b)
    peaks = [r.get('peak_gpu_memory_gb') for r in res.rows]
    assert all(isinstance(v, float) and v > 0 for v in peaks), peaks      # the table's GPU memory column
    return dict(gpus=n, points=len(st), devices=[s['devices'] for s in st], peak_gpu_memory_gb=peaks,
                verdict=res.verdict)


@check('two_gpus_per_point')
def two_per_point():
    import torch
    from llmft.launch.batch import sweep
    if torch.cuda.device_count() < 2: return dict(skipped=f'{torch.cuda.device_count()} GPU(s): needs two')
    tmp = Path(tempfile.mkdtemp())
    res = sweep(dict(recipe=str(recipe(tmp)), grid={'learning_rate': [1e-3, 2e-3]}, gpus_per_point=2,
                     output_dir=str(tmp / 'sweep')))
    logs = [(Path(r['path']) / 'sweep_output.log').read_text() for r in res.rows]
    assert not res.failed and all('--nproc_per_node=2' in t for t in logs), res.rows
    return dict(devices=[s['devices'] for s in states(tmp / 'sweep')])


if __name__ == '__main__':
    p = argparse.ArgumentParser(); p.add_argument('--out'); a = p.parse_args()
    for fn in (one_per_gpu, two_per_point): fn()
    text = json.dumps(REPORT, indent=2)
    if a.out: Path(a.out).write_text(text)
    print('ALL OK' if all(v['ok'] for v in REPORT.values()) else 'SOME FAILED')

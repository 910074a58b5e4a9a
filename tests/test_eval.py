"""`llmft eval`: fine-tuning on a benchmark's questions lifts its accuracy from chance to (near) 100 %; a base model, an
adapter and a run folder are evaluated alike; malformed benchmark folders are refused naming the file and line; the
committed benchmarks are what `tools/make_eval_tasks.py` writes."""
import pytest
import filecmp, json, shutil, subprocess, sys
from pathlib import Path
from conftest import ROOT, cli
from llmft.eval.evaluator import run_eval
from llmft.eval.tasks import task_dataset
from llmft.train.tuner import run_exp

TASKS = ROOT / 'evaluation'


@pytest.mark.slow
def test_finetuning_on_the_questions_lifts_accuracy_from_chance(tiny_llama, tmp_path):
    before = cli('eval', tiny_llama, 'template=llama3', 'task=tinymmlu_test', f'task_dir={TASKS}', 'n_shot=0',
                 'batch_size=16', f'save_dir={tmp_path / "before"}')
    assert before.returncode == 0, before.stderr[-2000:]
    chance = json.loads((tmp_path / 'before' / 'results.json').read_text())
    data = task_dataset(TASKS, 'tinymmlu_test', tmp_path / 'data')
    run = tmp_path / 'run'
    res = run_exp(dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='full', dataset=data,
                       dataset_dir=str(tmp_path / 'data'), template='llama3', cutoff_len=256, output_dir=str(run),
                       overwrite_output_dir=True, per_device_train_batch_size=10, learning_rate=1e-3, max_steps=250,
                       lr_scheduler_type='cosine', warmup_steps=10, logging_steps=25, report_to='none',
                       save_strategy='no', disable_gradient_checkpointing=True, seed=0))
    assert res.metrics['train']['train_loss'] < 1.0
    after = cli('eval', run, 'task=tinymmlu_test', f'task_dir={TASKS}', 'n_shot=0', 'batch_size=16',
                f'save_dir={tmp_path / "after"}')
    assert after.returncode == 0, after.stderr[-2000:]
    trained = json.loads((tmp_path / 'after' / 'results.json').read_text())
    assert chance['average'] <= 45 and trained['average'] >= 90, (chance['average'], trained['average'])
    assert all(s['accuracy'] >= 75 for s in trained['subjects'].values()), trained['subjects']
    assert sum(s['total'] for s in trained['subjects'].values()) == 100
    log = (tmp_path / 'after' / 'results.log').read_text().splitlines()
    assert log[0] == f"        Average: {trained['average']:.2f}" and 'tinymmlu_test: ' in after.stdout


def test_base_adapter_and_run_folder_alike(tiny_llama, tmp_path):
    "A LoRA run evaluated from its folder equals base + adapter given as keys; the base model alone differs."
    run = tmp_path / 'lora'
    run_exp(dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='lora', lora_target='all',
                 dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=128, max_samples=16,
                 output_dir=str(run), overwrite_output_dir=True, per_device_train_batch_size=4, learning_rate=2e-2,
                 max_steps=10, report_to='none', save_strategy='no', disable_gradient_checkpointing=True, seed=0))
    keys = dict(task='tinycmmlu_test', task_dir=str(TASKS), lang='zh', n_shot=2, batch_size=8, verbose=False)
    from_run = run_eval(str(run), **keys)
    as_keys = run_eval(dict(model_name_or_path=tiny_llama, adapter_name_or_path=str(run), template='llama3'), **keys)
    base = run_eval(dict(model_name_or_path=tiny_llama, template='llama3'), **keys)
    assert from_run.predictions == as_keys.predictions and from_run.predictions != base.predictions
    assert list(from_run.subjects) == list(json.loads((TASKS / 'tinycmmlu' / 'mapping.json').read_text()))


def _bench(tmp_path, name='bad'):
    d = tmp_path / name
    shutil.copytree(TASKS / 'tinycmmlu', d)
    return d


@pytest.mark.slow
def test_malformed_benchmarks_are_refused_naming_file_and_line(tiny_llama, tmp_path):
    def run(name):
        return cli('eval', tiny_llama, 'template=llama3', f'task={name}_test', f'task_dir={tmp_path}', 'n_shot=0')

    d = _bench(tmp_path, 'nomap')
    (d / 'mapping.json').unlink()
    r = run('nomap')
    assert r.returncode == 3 and f'{d / "mapping.json"}: missing.' in r.stderr, r.stderr[-800:]

    d = _bench(tmp_path, 'nocol')
    f = d / 'test' / 'money.csv'
    f.write_text('\n'.join(','.join(l.split(',')[:-1]) for l in f.read_text().splitlines()) + '\n')  # no Answer column
    r = run('nocol')
    assert r.returncode == 3 and f'{f}: the header has no answer column' in r.stderr, r.stderr[-800:]

    d = _bench(tmp_path, 'badans')
    f = d / 'test' / 'calendar.csv'
    lines = f.read_text().splitlines()
    lines[3] = lines[3][:-1] + 'E'
    f.write_text('\n'.join(lines) + '\n')
    r = run('badans')
    assert r.returncode == 3, r.stderr[-800:]
    assert f"{f}: line 4: answer 'E' is not one of the choice letters A, B, C, D" in r.stderr
    for r in (run('nomap'), run('badans')):
        assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_committed_benchmarks_are_the_generators_output(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_eval_tasks.py'), str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.is_file())
    committed = sorted(p.relative_to(TASKS) for p in TASKS.rglob('*') if p.is_file())
    assert made == committed and len(made) == 27
    assert all(filecmp.cmp(tmp_path / p, TASKS / p, shallow=False) for p in made)

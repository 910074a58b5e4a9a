"Multi-process training on CPU with gloo: torchrun from the CLI, notebook_launcher in a kernel, a followed torchrun subprocess."
import json, re
from pathlib import Path
import papermill as pm
import pytest
from conftest import ROOT, cli

pytestmark = pytest.mark.slow   # several real processes per test (torchrun, notebook_launcher)


def losses(out):
    return [json.loads(l)['loss'] for l in open(Path(out) / 'trainer_log.jsonl') if '"loss"' in l]


def test_two_process_ddp_matches_one_process(tiny_llama, tmp_path):
    "Global batch 8 either way (the whole 8-example set each step, so order cannot matter): the same losses, one set of artifacts."
    common = ['examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', 'dataset=alpaca_demo', 'max_samples=8',
              'max_steps=4', 'logging_steps=1', 'val_size=0', 'eval_strategy=no', 'plot_loss=false', 'learning_rate=0.5',
              'optim=sgd', 'warmup_ratio=0', 'lr_scheduler_type=constant']
    one = cli('train', *common, 'per_device_train_batch_size=8', f'output_dir={tmp_path / "one"}')
    assert one.returncode == 0, one.stderr[-3000:]
    two = cli('train', *common, 'per_device_train_batch_size=4', 'nproc_per_node=2', f'output_dir={tmp_path / "two"}')
    assert two.returncode == 0, two.stderr[-3000:]
    assert 'Launching: ' in two.stdout and '--nproc_per_node=2' in two.stdout
    a, b = losses(tmp_path / 'one'), losses(tmp_path / 'two')
    assert len(a) == len(b) == 4, (a, b)
    # each process averages over its own tokens and DDP averages the gradients, so the steps differ from one global token
    # average by the imbalance of tokens between the two halves of the batch: within 1% at the start, 3% along the way
    assert b[0] == pytest.approx(a[0], rel=1e-2) and b == pytest.approx(a, rel=3e-2), (a, b)
    assert a[-1] < a[0]
    assert (tmp_path / 'two' / 'adapter_model.safetensors').exists()
    assert two.stdout.count('Done. Run folder') == 1          # only the main process reports and writes


def test_notebook_launcher_and_followed_torchrun(tmp_path):
    "The tutorial, run twice into the same folders: the second run's follow() must not read the first run's log."
    out_nb = tmp_path / 'out.ipynb'
    stale = tmp_path / 'run' / 'torchrun' / 'trainer_log.jsonl'
    stale.parent.mkdir(parents=True)
    stale.write_text(''.join(f'{{"current_steps": {i}, "loss": 99.0, "note": "an earlier run"}}\n' for i in range(40)))
    pm.execute_notebook(str(ROOT / 'tutorials/02_multiprocess.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=3, output_dir=str(tmp_path / 'run')), progress_bar=False)
    assert len(losses(tmp_path / 'run' / 'launcher')) == 3
    assert len(losses(tmp_path / 'run' / 'torchrun')) == 3
    cells = json.loads(out_nb.read_text())['cells']
    followed = [c for c in cells if 'run.follow(' in ''.join(c['source'])]
    printed = ''.join(''.join(o['text']) for o in followed[0]['outputs'] if o.get('name') == 'stdout')
    steps = re.findall(r'^step (\d+): loss [\d.]+$', printed, flags=re.M)
    assert steps == ['1', '2', '3'], printed   # follow() yielded this run's records only
    assert 'Done. Run folder' in (tmp_path / 'run' / 'torchrun' / 'launch.log').read_text()   # torchrun's output, kept in the run folder


def test_engine_configs_load():
    from accelerate.commands.config.config_args import ClusterConfig
    for f in (ROOT / 'examples/accelerate').glob('*.yaml'):
        c = ClusterConfig.from_yaml_file(str(f))
        assert str(c.distributed_type).endswith('FSDP') and c.fsdp_config['fsdp_version'] in (1, 2)
    for f in (ROOT / 'examples/deepspeed').glob('*.json'):
        ds = json.loads(f.read_text())
        assert ds['zero_optimization']['stage'] in (0, 2, 3) and ds['train_micro_batch_size_per_gpu'] == 'auto'
    import importlib.util
    if importlib.util.find_spec('deepspeed') is None:  # where it is installed, the GPU script runs these configs instead
        r = cli('train', 'examples/quickstart_sft.yaml', 'deepspeed=examples/deepspeed/ds_z3_config.json')
        assert r.returncode == 2 and 'deepspeed package is not installed' in r.stderr


def noout_cfg(model, d) -> dict:
    "A registry in `d` with one alpaca dataset that has no answer column, and an sft config that names it."
    (d / 'noout.json').write_text(json.dumps([{'instruction': f'Q{i}'} for i in range(4)]))
    (d / 'dataset_info.json').write_text(json.dumps({'noout': {'file_name': 'noout.json'}}))
    return dict(model_name_or_path=model, stage='sft', do_train=True, finetuning_type='lora', dataset='noout',
                dataset_dir=str(d), template='llama3', output_dir=str(d / 'run'), max_steps=1, report_to='none')


def test_worker_user_error_is_one_line(tiny_llama, tmp_path):
    "A dataset mistake found in the workers: the launcher ends with the main worker's one line and status 3."
    noout_cfg(tiny_llama, tmp_path)
    r = cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', f'dataset_dir={tmp_path}',
            'dataset=noout', 'nproc_per_node=2', 'val_size=0', 'eval_strategy=no', f'output_dir={tmp_path / "run"}',
            'max_steps=1')
    assert r.returncode == 3, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("llmft: data error: Dataset 'noout' (noout.json) has no column 'output'"), last
    assert 'Traceback' not in r.stderr and 'ChildFailedError' not in r.stderr


def test_followed_torchrun_raises_the_worker_error(tiny_llama, tmp_path):
    "From a notebook: `launch_torchrun(...).wait()` raises the worker's own error, not 'torchrun exited with 3'."
    from llmft.core import DataError
    from llmft.launch.dist import launch_torchrun
    cfg = noout_cfg(tiny_llama, tmp_path)
    run = launch_torchrun(cfg, 2)
    with pytest.raises(DataError, match="Dataset 'noout' \\(noout.json\\) has no column 'output'"): run.wait()


def test_run_builder_shows_a_worker_error(tiny_llama, tmp_path):
    "The run builder's torchrun launch: a data mistake in the workers is the red status line (raised when blocking)."
    from llmft.core import DataError
    from llmft.dash.forms import RunBuilder
    noout_cfg(tiny_llama, tmp_path)
    rb = RunBuilder(dataset_dir=str(tmp_path), model_name_or_path=tiny_llama, output_dir=str(tmp_path / 'run'),
                    max_steps=1)
    rb.processes.value = 2
    with pytest.raises(DataError, match="has no column 'output' for the answers"): rb.launch(block=True)
    assert "failed:</b> llmft: data error: Dataset" in rb.status.value, rb.status.value


def test_notebook_launcher_raises_the_worker_error(tiny_llama, tmp_path):
    "`launch` (notebook_launcher): a data mistake in the workers comes back as that DataError, not ChildFailedError."
    import subprocess, sys
    cfg = noout_cfg(tiny_llama, tmp_path)
    code = ("from llmft.launch.dist import launch\n"
            f"try: launch({cfg!r}, 2)\n"
            "except Exception as e: print('RAISED', type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    want = "RAISED DataError Dataset 'noout' (noout.json) has no column 'output'"
    assert want in r.stdout, r.stdout + r.stderr[-3000:]


def test_torchrun_processes_train_one_model(sft_cfg, tmp_path):
    ("Under torchrun on CPU every process ends with the same weights (gradients are averaged by DDP over gloo); "
     "without `use_cpu` accelerate 1.16 saw no distributed setup and each process trained a model of its own.")
    import subprocess, sys
    cfg = {**sft_cfg, 'max_steps': 3, 'learning_rate': 0.1, 'output_dir': str(tmp_path / 'run')}
    (tmp_path / 'cfg.json').write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                        str(ROOT / 'tests' / 'assets' / 'ddp_check.py'), str(tmp_path / 'cfg.json')],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads((tmp_path / 'run' / f'ddp_check.rank{i}.json').read_text()) for i in (0, 1)]
    assert {x['distributed_type'] for x in recs} == {'DistributedType.MULTI_CPU'}, recs
    assert recs[0]['weights'] == pytest.approx(recs[1]['weights'], rel=1e-9, abs=1e-9), recs

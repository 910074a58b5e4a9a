"""The board's launcher with several processes: a run of 2 processes (torchrun, gloo on CPU) launched as a board job,
stopped with the Stop of the board (it ends `interrupted` with a whole checkpoint although torchrun exits 9), then
resumed with as many processes for two more steps; the Runs tab reads both states."""
import pytest
import json, time
from pathlib import Path
from conftest import ROOT

pytestmark = pytest.mark.slow   # two training processes under torchrun, twice


def recipe(model, out, steps):
    "A tiny sft recipe on the demo data where it lies, a log record a step, no checkpoint but the one a stop saves."
    return dict(model_name_or_path=model, stage='sft', do_train=True, finetuning_type='lora', dataset='alpaca_demo',
                dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=64, max_samples=16,
                per_device_train_batch_size=2, max_steps=steps, logging_steps=1, save_strategy='no', output_dir=out,
                report_to='none', disable_gradient_checkpointing=True)


def test_two_processes_stop_and_resume(tiny_llama, tmp_path):
    from llmft.dash.jobs import LogPanel
    from llmft.dash.runs import RunsTab, complete_checkpoints, launch_train, resume_train, run_state
    from llmft.rundir import RunDir
    allowed, run = (str(ROOT / 'data'), tiny_llama), tmp_path / 'saves' / 'mp'
    job = launch_train(recipe(tiny_llama, 'saves/mp', 100_000), root=tmp_path, processes=2, allowed=allowed, threads=1)
    assert job.words[1:] == ['nproc_per_node=2'] and not run.exists()   # the recipe is beside the job, not in the run
    deadline = time.time() + 240
    while len(RunDir(run).log_records()) < 3 and job.state == 'running' and time.time() < deadline: time.sleep(0.3)
    assert job.state == 'running', job.tail()
    assert run_state(run, root=tmp_path) == 'running'
    job.stop(grace=90)
    job.wait(180)
    assert 'torch.distributed.run --nproc_per_node=2' in job.tail(400)
    step = json.loads((run / 'trainer_state.json').read_text())['global_step']
    assert run_state(run, root=tmp_path) == 'interrupted', (job.state, job.record.get('returncode'), job.tail())
    assert run_state(run, jobs=[]) == 'interrupted'                      # its folder alone says the same
    assert complete_checkpoints(run)[-1].name == f'checkpoint-{step}' and 0 < step < 100_000
    tab = RunsTab(tmp_path / 'saves', root=tmp_path, allowed=allowed, panel=LogPanel())
    assert tab.states() == {'mp': 'interrupted'}
    again = resume_train('saves/mp', root=tmp_path, allowed=allowed, threads=1, changes=dict(max_steps=step + 2))
    assert again.words[1:] == ['nproc_per_node=2']                       # as many processes as before
    assert again.wait(240) == 'finished', again.tail()
    assert json.loads((run / 'trainer_state.json').read_text())['global_step'] == step + 2
    assert run_state(run, root=tmp_path) == run_state(run, jobs=[]) == 'finished'
    tab.refresh()
    assert tab.states() == {'mp': 'finished'}
    tab.close()

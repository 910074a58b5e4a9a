"""Exact resume: a run killed with SIGKILL and resumed with `resume_from_checkpoint: true` continues with the same loss
trajectory as an uninterrupted run (fp32, CPU); a run killed while a checkpoint is written leaves a checkpoint that resume
never picks."""
import json, subprocess, sys
import pytest
from pathlib import Path
from conftest import ROOT
from llmft.rundir import CHECKPOINT_DONE
from llmft.train.tuner import run_exp

SCRIPT = ROOT / 'tests' / 'assets' / 'crashing_run.py'


def log_losses(out):
    rows = [json.loads(l) for l in open(Path(out) / 'trainer_log.jsonl')]
    steps = [r['current_steps'] for r in rows if 'loss' in r]
    assert len(steps) == len(set(steps)), f'a step is logged twice: {steps}'
    return {r['current_steps']: r['loss'] for r in rows if 'loss' in r}


def crash(cfg, tmp_path, mode, n):
    (tmp_path / 'cfg.json').write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / 'cfg.json'), mode, str(n)], capture_output=True, text=True, timeout=600)
    assert r.returncode == -9, f'the run was meant to be killed: rc={r.returncode}\n{r.stderr[-3000:]}'


def resume_cfg(sft_cfg, tmp_path):
    return {**sft_cfg, 'max_steps': 10, 'save_steps': 2, 'save_strategy': 'steps', 'logging_steps': 1, 'max_samples': 12,
            'per_device_train_batch_size': 4, 'learning_rate': 5e-3, 'output_dir': str(tmp_path / 'run'), 'overwrite_output_dir': False}


@pytest.mark.slow
def test_sigkill_then_exact_resume(sft_cfg, tmp_path):
    cfg = resume_cfg(sft_cfg, tmp_path)
    ref = log_losses(run_exp({**cfg, 'output_dir': str(tmp_path / 'ref')}).output_dir)
    crash(cfg, tmp_path, 'kill', 6)                         # killed in step 6, before it logged; the last checkpoint is step 4
    out = Path(cfg['output_dir'])
    assert sorted(p.name for p in out.glob('checkpoint-*')) == ['checkpoint-2', 'checkpoint-4']
    assert max(log_losses(out)) == 5                         # step 5 was logged after the checkpoint: it runs again
    res = run_exp({**cfg, 'resume_from_checkpoint': True})
    got = log_losses(res.output_dir)
    assert sorted(got) == list(range(1, 11)), sorted(got)   # step 5 logged once, not twice
    worst = max(abs(got[s] - ref[s]) for s in ref)
    assert worst < 1e-6, f'the resumed trajectory differs by {worst}: {got} vs {ref}'


@pytest.mark.slow
def test_crash_while_saving_never_leaves_a_checkpoint_to_resume(sft_cfg, tmp_path):
    cfg = resume_cfg(sft_cfg, tmp_path)
    ref = log_losses(run_exp({**cfg, 'output_dir': str(tmp_path / 'ref')}).output_dir)
    crash(cfg, tmp_path, 'crash-save', 4)
    out = Path(cfg['output_dir'])
    assert (out / 'checkpoint-4').exists() and not (out / 'checkpoint-4' / CHECKPOINT_DONE).exists()
    assert (out / 'checkpoint-2' / CHECKPOINT_DONE).exists()
    res = run_exp({**cfg, 'resume_from_checkpoint': True})     # resumes from checkpoint-2; the broken one is set aside
    assert (out / 'incomplete-checkpoint-4').exists()
    assert (out / 'checkpoint-4' / CHECKPOINT_DONE).exists()     # written again, whole, by the resumed run
    got = log_losses(res.output_dir)
    assert max(abs(got[s] - ref[s]) for s in ref) < 1e-6, (got, ref)


@pytest.mark.slow
def test_non_empty_output_dir_resumes_from_last_complete(sft_cfg, tmp_path):
    "Without resume_from_checkpoint, a non-empty output_dir with checkpoints resumes (LLaMA-Factory's behaviour), from a whole one."
    cfg = resume_cfg(sft_cfg, tmp_path)
    crash(cfg, tmp_path, 'kill', 3)
    res = run_exp(cfg)
    assert res.trainer.state.global_step == 10
    assert sorted(log_losses(res.output_dir)) == list(range(1, 11))


def copy_checkpoint(src_out, step, dst_out):
    import shutil
    Path(dst_out).mkdir(parents=True)
    shutil.copytree(Path(src_out) / f'checkpoint-{step}', Path(dst_out) / f'checkpoint-{step}')


@pytest.mark.parametrize('stage,ft', [('rm', 'lora'), ('rm', 'full'), ('dpo', 'lora')])
def test_preference_stages_resume_exactly(stage, ft, sft_cfg, tmp_path):
    "Value-head models (rm) resume from their own checkpoint format; dpo resumes with its reference untouched."
    cfg = {**resume_cfg(sft_cfg, tmp_path), 'stage': stage, 'finetuning_type': ft, 'dataset': 'pref_demo', 'max_samples': 8, 'max_steps': 6,
           'learning_rate': 1e-3 if ft == 'full' else 5e-3}
    ref = log_losses(run_exp({**cfg, 'output_dir': str(tmp_path / 'ref')}).output_dir)
    copy_checkpoint(tmp_path / 'ref', 2, cfg['output_dir'])
    got = log_losses(run_exp({**cfg, 'resume_from_checkpoint': True}).output_dir)
    assert sorted(got) == [3, 4, 5, 6]
    assert max(abs(got[s] - ref[s]) for s in got) < 1e-6, (got, ref)

"Tutorials run in a real Jupyter kernel through papermill, with tiny parameters."
import json
import papermill as pm
import pandas as pd
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow   # every tutorial runs in a real kernel (papermill), training included


def test_quickstart_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/01_quickstart_sft.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=12, output_dir=str(tmp_path / 'run')), progress_bar=False)
    nb = json.loads(out_nb.read_text())
    assert any('parameters' in c['metadata'].get('tags', []) for c in nb['cells'])
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])
    assert (tmp_path / 'run' / 'adapter_model.safetensors').exists()
    assert (tmp_path / 'run' / 'training_loss.png').exists()


def test_chat_and_serve_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/03_chat_and_serve.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=20, output_dir=str(tmp_path / 'run')), progress_bar=False)
    assert (tmp_path / 'run' / 'adapter_model.safetensors').exists()
    text = out_nb.read_text()
    assert 'prompt_tokens' in text          # the openai client's answer with its usage was printed


def test_eval_and_export_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/04_eval_and_export.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(output_dir=str(tmp_path / 'run'), export_dir=str(tmp_path / 'export')),
                        progress_bar=False)
    results = json.loads((tmp_path / 'run-eval' / 'results.json').read_text())
    assert results['average'] >= 90, results['categories']
    assert (tmp_path / 'export' / 'Modelfile').exists() and (tmp_path / 'export' / 'README.md').exists()
    assert 'answered right by the exported model' in out_nb.read_text()


STAGE_TUTORIALS = {'05_pretraining': ('train_loss', 'eval_perplexity'), '06_reward_model': ('eval_accuracy', 'train_loss'),
                   '07_dpo': ('eval_rewards/accuracies', 'eval_rewards/margins'),
                   '08_kto': ('eval_loss', 'eval_rewards/margins'), '09_ppo': ('mean_reward_last_half',)}


@pytest.mark.parametrize('name', STAGE_TUTORIALS)
def test_stage_tutorial(name, tmp_path):
    "Each stage's tutorial runs under papermill with its own assertions (the loss fell, the policy moved) and records"
    " the values a sweep ranks it by."
    from llmft.launch.record import read_records
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / f'tutorials/{name}.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(output_dir=str(tmp_path / 'run')), progress_bar=False)
    recs = read_records(out_nb)
    assert set(STAGE_TUTORIALS[name]) <= set(recs), recs
    assert all(isinstance(v, float) for v in recs.values()), recs
    assert (tmp_path / 'run' / 'all_results.json').exists()


def test_sweeps_tutorial(tmp_path):
    out_nb = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(ROOT / 'tutorials/10_sweeps.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=6, output_dir=str(tmp_path / 'sweeps')), progress_bar=False)
    for name, n in (('sft', 4), ('dpo', 3)):
        df = pd.read_csv(tmp_path / 'sweeps' / name / 'sweep.csv')
        assert len(df) == n and set(df.status) == {'done'}, df
        assert (tmp_path / 'sweeps' / name / 'sweep.html').exists()


def test_example_sweeps_are_valid(monkeypatch):
    "Every sweep in examples/sweeps reads, names what exists and sets only keys its notebook declares."
    from llmft.launch.sweepfile import expand_points, load_sweep
    monkeypatch.chdir(ROOT)
    files = sorted((ROOT / 'examples/sweeps').glob('*.yaml'))
    assert len(files) >= 7
    kinds = set()
    for f in files:
        assert f.read_text().startswith('# ') and f'llmft sweep examples/sweeps/{f.name}' in f.read_text(), f
        sw = load_sweep(f)
        kinds.add(sw.kind)
        assert len(expand_points(sw)) >= 2, f
    assert kinds == {'recipe', 'notebook'}


def test_grpo_tutorial(tmp_path):
    "The GRPO tutorial trains with a reward function written in a cell (the reward rises) and sweeps two loss types."
    from llmft.launch.record import read_records
    from llmft.rundir import RunDir
    out_nb, run = tmp_path / 'out.ipynb', tmp_path / 'run'
    pm.execute_notebook(str(ROOT / 'tutorials/11_grpo.ipynb'), str(out_nb), cwd=str(ROOT), kernel_name='python3',
                        parameters=dict(max_steps=24, output_dir=str(run), compare=['grpo', 'dr_grpo'],
                                        compare_steps=4), progress_bar=False)
    rewards = [r['reward'] for r in RunDir(run).log_records() if 'reward' in r]
    assert len(rewards) == 12 and sum(rewards[6:]) / 6 > sum(rewards[:2]) / 2 + 0.1, rewards
    recs = read_records(out_nb)
    assert recs['reward_last'] > recs['reward_first'], recs
    assert RunDir(run).rollouts(1) and (run / 'all_results.json').exists()
    df = pd.read_csv(run / 'loss_types' / 'sweep.csv')
    assert sorted(df.loss_type) == ['dr_grpo', 'grpo'] and set(df.status) == {'done'}, df
    assert df.reward_last.notna().all() and (run / 'loss_types' / 'sweep.html').exists()

"""`llmft sweep`: a grid over a recipe and a sweep over a notebook run to the end and write their table and page; points
run in parallel without interfering; a bad point fails alone; an interrupted sweep stops its points cleanly (no process
left) and a rerun runs only what is missing, resuming the stopped point from its checkpoint."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import psutil, pytest, yaml
from conftest import ROOT, cli
from llmft.core import ConfigError
from llmft.dash.compare import compare_runs
from llmft.launch.batch import sweep

pytestmark = pytest.mark.slow   # sweeps train several points in real processes


@pytest.fixture
def recipe(sft_cfg, tmp_path):
    "A small LoRA SFT recipe with an eval split, as a file."
    cfg = {**sft_cfg, 'max_samples': 48, 'max_steps': 12, 'logging_steps': 2, 'val_size': 8, 'eval_strategy': 'steps',
           'eval_steps': 6}
    cfg.pop('output_dir')
    path = tmp_path / 'recipe.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_sweep(path, **keys):
    path.write_text(yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in keys.items()}))
    return path


def points(out):
    "The sweep_point.json of every point folder, by name."
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(out).glob('*/sweep_point.json'))}


def test_grid_over_a_recipe_two_at_a_time(recipe, tmp_path):
    out = tmp_path / 'sweep'
    sw = write_sweep(tmp_path / 's.yaml', recipe=recipe, grid={'learning_rate': [1e-3, 1e-2], 'lora_rank': [4, 16]},
                     max_parallel=2, output_dir=out)
    r = cli('sweep', sw)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ' won: eval_loss (best of its run) ' in r.stdout and 'sweep.html' in r.stdout
    df = pd.read_csv(out / 'sweep.csv')
    assert len(df) == 4 and set(df.status) == {'done'}, df
    for col in ('learning_rate', 'lora_rank', 'wall_s', 'train_loss', 'best_eval_loss', 'tokens_per_s', 'peak_rss_mb'):
        assert df[col].notna().all(), col
    assert (pd.read_parquet(out / 'sweep.parquet')['point'] == df['point']).all()
    page = (out / 'sweep.html').read_text()
    assert all(name in page for name in df.point) and 'plotly' in page and 'Effect of each parameter' in page
    # each point trained with its own parameters in its own folder
    for _, row in df.iterrows():
        adapter = json.loads((Path(row.path) / 'adapter_config.json').read_text())
        assert adapter['r'] == row.lora_rank and Path(row.path).parent == out
        assert yaml.safe_load((Path(row.path) / 'llmft_args.yaml').read_text())['learning_rate'] == row.learning_rate
    # two at a time: some points overlapped in time, never more than two
    spans = [(s['started'], s['ended']) for s in points(out).values()]
    overlaps = [max(0, min(a[1], b[1]) - max(a[0], b[0])) for i, a in enumerate(spans) for b in spans[i + 1:]]
    assert max(overlaps) > 1.0, spans
    assert all(sum(s <= t < e for s, e in spans) <= 2 for t, _ in spans)
    # the comparison widget reads the sweep folder
    cmp = compare_runs(out, interval=None)
    assert len(cmp.runs) == 4 and 'learning_rate' in cmp.diff.value and 'lora_rank' in cmp.diff.value
    # a rerun runs nothing
    walls = {k: v['wall_s'] for k, v in points(out).items()}
    r = cli('sweep', sw)
    assert r.returncode == 0 and '4 already done, 0 to run' in r.stderr, r.stderr[-2000:]
    assert {k: v['wall_s'] for k, v in points(out).items()} == walls


def test_sweep_over_a_notebook(tmp_path, monkeypatch):
    "Three points of the pre-training tutorial, two at a time; the values it records become columns."
    monkeypatch.chdir(ROOT)
    res = sweep(dict(notebook='tutorials/05_pretraining.ipynb', grid={'learning_rate': [1e-3, 5e-3, 2e-2]},
                     fixed={'max_steps': 8}, metric='eval_perplexity', max_parallel=2, output_dir=str(tmp_path / 'nb')))
    df = res.table
    assert len(df) == 3 and set(df.status) == {'done'} and df.eval_perplexity.notna().all(), df
    assert res.metric == 'eval_perplexity' and res.best['eval_perplexity'] == df.eval_perplexity.min()
    for _, row in df.iterrows():
        nb = json.loads((Path(row.path) / 'sweep_report.ipynb').read_text())
        injected = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
        assert f'learning_rate = {row.learning_rate}' in ''.join(injected[0]['source'])
        assert f"output_dir = \"{row.path}\"" in ''.join(injected[0]['source'])
        assert (Path(row.path) / 'adapter_model.safetensors').exists()
    assert res.verdict in res.html.read_text()


def test_a_bad_point_fails_alone(recipe, tmp_path, monkeypatch):
    out = tmp_path / 'sweep'
    sw = write_sweep(tmp_path / 's.yaml', recipe=recipe, points=[{'lora_rank': 4}, {'lora_rnk': 4}], output_dir=out)
    r = cli('sweep', sw)
    assert r.returncode == 1 and '1 of 2 points failed: lora_rnk-4' in r.stderr, r.stderr[-2000:]
    df = pd.read_csv(out / 'sweep.csv').set_index('point')
    assert df.loc['lora_rank-4', 'status'] == 'done'
    assert df.loc['lora_rnk-4', 'status'] == 'failed'
    assert df.loc['lora_rnk-4', 'error'] == ("llmft: configuration error: Unknown config key 'lora_rnk'; did you mean "
                                             "'lora_rank'?")
    # a notebook point that fails names its error and the cell
    monkeypatch.chdir(ROOT)
    res = sweep(dict(notebook='tutorials/05_pretraining.ipynb', points=[{'finetuning_type': 'everything'}],
                     fixed={'max_steps': 2}, output_dir=str(tmp_path / 'nb')))
    row = res.rows[0]
    assert res.failed == ['finetuning_type-everything'] and row['error'].startswith('ConfigError: ') and \
        'everything' in row['error'], row
    assert row['failing_cell'].startswith('cell ') and 'run_exp(cfg)' in row['failing_cell']


def start_sweep(sw):
    "`llmft sweep` in a session of its own (the test can clean up whatever it leaves)."
    exe = Path(sys.executable).parent / 'llmft'
    return subprocess.Popen([str(exe), 'sweep', str(sw)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_for(cond, timeout=300, what=''):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f'timed out waiting for {what}'
        time.sleep(0.2)


def interrupt(p, timeout=180):
    "Ctrl-C for the sweep process; its exit status and output. Every process it had started must be gone."
    tree = psutil.Process(p.pid).children(recursive=True)
    assert tree
    p.send_signal(signal.SIGINT)
    try: output = p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [q.cmdline() for q in alive]
    return p.returncode, output


def test_interrupted_sweep_resumes_where_it_stopped(recipe, tmp_path):
    cfg = yaml.safe_load(recipe.read_text())
    recipe.write_text(yaml.safe_dump({**cfg, 'max_steps': 300, 'save_strategy': 'steps', 'save_steps': 20,
                                      'eval_strategy': 'no', 'val_size': 0, 'logging_steps': 10}))
    out = tmp_path / 'sweep'
    sw = write_sweep(tmp_path / 's.yaml', recipe=recipe, grid={'learning_rate': [1e-3, 2e-3, 3e-3]}, output_dir=out)
    p = start_sweep(sw)
    second = out / 'learning_rate-0.002'
    wait_for(lambda: points(out).get('learning_rate-0.001', {}).get('status') == 'done', what='the first point')
    wait_for(lambda: any(second.glob('checkpoint-*/llmft_checkpoint_complete.json')), what='a checkpoint')
    with pytest.raises(ConfigError, match=f'is being swept by process {p.pid}'): sweep(sw)   # one at a time a folder
    rc, output = interrupt(p)
    assert rc == 130 and 'Sweep interrupted: 1 point(s) stopped' in output, output[-3000:]
    state = points(out)
    assert state['learning_rate-0.002']['status'] == 'interrupted' and 'learning_rate-0.003' not in state
    first_wall = state['learning_rate-0.001']['wall_s']
    assert pd.read_csv(out / 'sweep.csv').set_index('point').loc['learning_rate-0.003', 'status'] == 'pending'
    # the rerun skips the finished point, resumes the stopped one from its checkpoint, runs the last
    r = cli('sweep', sw)
    assert r.returncode == 0 and '1 already done, 2 to run' in r.stderr, r.stderr[-3000:]
    state = points(out)
    assert state['learning_rate-0.001']['wall_s'] == first_wall and state['learning_rate-0.001']['attempts'] == 1
    resumed = state['learning_rate-0.002']
    assert resumed['status'] == 'done' and resumed['attempts'] == 2 and '/checkpoint-' in resumed['resumed_from']
    assert json.loads((second / 'trainer_state.json').read_text())['global_step'] == 300
    assert state['learning_rate-0.003']['status'] == 'done'


def test_interrupting_a_notebook_point_leaves_no_kernel(tmp_path):
    nb_out = tmp_path / 'nb'
    sw = write_sweep(tmp_path / 's.yaml', notebook=ROOT / 'tutorials/05_pretraining.ipynb',
                     points=[{'max_steps': 100000}], output_dir=nb_out, grace=20)
    p = start_sweep(sw)
    wait_for(lambda: (nb_out / 'max_steps-100000' / 'llmft_args.yaml').exists(), what='a run in the kernel')
    time.sleep(3)                                                    # into its training loop
    assert any('ipykernel' in ' '.join(q.cmdline()) for q in psutil.Process(p.pid).children(recursive=True))
    rc, output = interrupt(p)
    assert rc == 130, output[-3000:]
    assert points(nb_out)['max_steps-100000']['status'] == 'interrupted'


def test_a_point_over_its_time_is_stopped_and_recorded(recipe, tmp_path):
    cfg = yaml.safe_load(recipe.read_text())
    recipe.write_text(yaml.safe_dump({**cfg, 'max_steps': 100000, 'eval_strategy': 'no', 'val_size': 0}))
    out = tmp_path / 'sweep'
    res = sweep(dict(recipe=str(recipe), points=[{'lora_rank': 4}], point_timeout=8, grace=60, output_dir=str(out)))
    row = res.rows[0]
    assert res.failed == ['lora_rank-4'] and row['error'] == 'stopped after point_timeout=8 s', row
    # stopped like Ctrl-C stops a run: the trainer finished its step and saved a whole checkpoint
    assert any((out / 'lora_rank-4').glob('checkpoint-*/llmft_checkpoint_complete.json'))
    assert 8 <= row['wall_s'] < 60

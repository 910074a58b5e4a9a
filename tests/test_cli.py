"The `llmft` command in a subprocess: the quickstart recipe, a LLaMA-Factory-style recipe, and a misspelled key."
import json
import pytest
import yaml
from conftest import LF_DEMO, ROOT, cli


@pytest.mark.slow
def test_train_quickstart_with_overrides(tiny_llama, tmp_path):
    out = tmp_path / 'q'
    r = cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', f'output_dir={out}',
            'max_steps=6', 'logging_steps=2', 'eval_steps=3', 'max_samples=40')
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'Run folder: {out}' in r.stdout
    assert r.stdout.strip().splitlines()[-1] == 'Data: no row was left out.'
    for f in ('adapter_model.safetensors', 'training_loss.png', 'training_loss.html', 'llmft_args.yaml', 'template.json'):
        assert (out / f).exists(), f
    args = yaml.safe_load((out / 'llmft_args.yaml').read_text())
    assert args['max_steps'] == 6 and args['bf16'] is False          # the override won; bf16 fell back to fp32 on CPU
    rows = [json.loads(l) for l in open(out / 'trainer_log.jsonl')]
    assert [r['current_steps'] for r in rows if 'loss' in r] == [2, 4, 6]
    assert any('eval_loss' in r for r in rows)


def test_misspelled_key_names_the_right_one(tmp_path):
    p = tmp_path / 'bad.yaml'
    cfg = yaml.safe_load((ROOT / 'examples/quickstart_sft.yaml').read_text())
    cfg['per_device_train_batchsize'] = cfg.pop('per_device_train_batch_size')
    p.write_text(yaml.safe_dump(cfg))
    r = cli('train', p)
    assert r.returncode == 2
    assert "Unknown config key 'per_device_train_batchsize'; did you mean 'per_device_train_batch_size'?" in r.stderr
    assert 'Traceback' not in r.stderr


@pytest.mark.slow
def test_llamafactory_recipe_runs_unchanged(tiny_llama, tmp_path):
    "LLaMA-Factory's llama3_lora_sft.yaml shape, only model, dataset and output paths swapped for local ones."
    text = (ROOT / 'tests/assets/lf_llama3_lora_sft.yaml').read_text()
    text = text.replace('MODEL', tiny_llama).replace('OUTPUT', str(tmp_path / 'lf'))
    p = tmp_path / 'lf.yaml'; p.write_text(text)
    r = cli('train', p, f'dataset_dir={ROOT / "data"}', 'max_steps=4')
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / 'lf' / 'adapter_model.safetensors').exists()


REGISTRIES = [ROOT / 'tests/assets/lf_registry'] + ([LF_DEMO] if LF_DEMO.exists() else [])


@pytest.mark.slow
@pytest.mark.parametrize('registry', REGISTRIES, ids=[r.name for r in REGISTRIES])
def test_llamafactory_registry_and_data(tiny_llama, tmp_path, registry):
    """A registry in LLaMA-Factory's layout read unchanged (hub-only entries, tags, splits, subsets, media columns):
    our own copy of its shape always, LLaMA-Factory's own dataset_info.json and alpaca_en_demo where they are beside
    the repo."""
    text = (ROOT / 'tests/assets/lf_llama3_lora_sft.yaml').read_text()
    text = text.replace('MODEL', tiny_llama).replace('OUTPUT', str(tmp_path / 'lf'))
    text = text.replace('alpaca_demo,identity', 'identity,alpaca_en_demo')
    p = tmp_path / 'lf.yaml'
    p.write_text(text)
    r = cli('train', p, f'dataset_dir={registry}', 'max_steps=2', 'max_samples=50')
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / 'lf' / 'adapter_model.safetensors').exists()


def test_env_and_version():
    r = cli('env')
    assert r.returncode == 0 and '- devices:' in r.stdout and '- lock: ' in r.stdout, r.stdout
    assert any(l.split()[:1] == ['torch'] for l in r.stdout.splitlines())   # installed beside locked
    r = cli('env', '--nonsense')
    assert r.returncode == 2 and r.stderr.startswith('usage: llmft env [RUN] [--all] [--check]')
    r = cli('version')
    assert r.returncode == 0 and r.stdout.strip()


@pytest.mark.slow
def test_expand_then_train_llama_pro(tiny_llama, tmp_path):
    r = cli('expand', tiny_llama, tmp_path / 'pro', 'num_expand=2')
    assert r.returncode == 0, r.stderr[-2000:]
    from transformers import AutoConfig
    assert AutoConfig.from_pretrained(tmp_path / 'pro').num_hidden_layers == 4
    r = cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tmp_path / "pro"}', f'output_dir={tmp_path / "run"}',
            'finetuning_type=freeze', 'use_llama_pro=true', 'freeze_trainable_layers=2', 'max_steps=2', 'max_samples=16', 'val_size=0',
            'eval_strategy=no')
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'run' / 'model.safetensors').exists()


def _user_error(tmp_path, tiny_llama, *overrides, env=None):
    "`llmft check-data` on a small recipe with data of our own; returns the finished process."
    import os, subprocess, sys
    from pathlib import Path
    rows = {'noout': [{'instruction': f'Q{i}'} for i in range(4)],
            'ok': [{'instruction': f'Q{i}', 'output': f'A{i}'} for i in range(4)],
            'half': [{'instruction': f'Q{i}', 'output': f'A{i}' if i % 2 else ''} for i in range(8)]}
    for name, data in rows.items(): (tmp_path / f'{name}.json').write_text(json.dumps(data))
    (tmp_path / 'dataset_info.json').write_text(json.dumps({name: {'file_name': f'{name}.json'} for name in rows}))
    args = ['check-data', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', f'dataset_dir={tmp_path}',
            'dataset=ok', 'val_size=0', 'eval_strategy=no', *overrides]
    exe = Path(sys.executable).parent / 'llmft'
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize('override, code, line', [
    ('dataset=noout', 3, "llmft: data error: Dataset 'noout' (noout.json) has no column 'output' for the answers"),
    ('dataset=nope', 3, "llmft: data error: Dataset 'nope' is not in "),
    ('template=llama33', 4, "llmft: template error: Unknown template 'llama33'; did you mean 'llama3'?"),
    ('model_name_or_path=/no/such/model', 5,
     "llmft: model error: model_name_or_path '/no/such/model': cannot load the tokenizer: no such folder."),
    ('cutoff_len=-4', 2, 'llmft: configuration error: '),
])
def test_user_errors_are_one_line_with_their_exit_code(tmp_path, tiny_llama, override, code, line):
    r = _user_error(tmp_path, tiny_llama, override)
    assert r.returncode == code, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith(line), r.stderr[-3000:]
    assert 'Traceback' not in r.stderr


def test_debug_shows_the_traceback(tmp_path, tiny_llama):
    r = _user_error(tmp_path, tiny_llama, 'dataset=noout', env={'LLMFT_DEBUG': '1'})
    assert r.returncode == 3 and 'Traceback (most recent call last)' in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("llmft: data error: Dataset 'noout'")


@pytest.mark.slow
def test_check_data_counts_rows_left_out(tmp_path, tiny_llama):
    r = _user_error(tmp_path, tiny_llama, 'dataset=half')
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and last == 'WARN: 4 rows left out of the data; the rest is clean', r.stdout
    r = _user_error(tmp_path, tiny_llama, 'dataset=half', 'data_check=strict')
    assert r.returncode == 1, r.stdout[-2000:]


@pytest.mark.slow
def test_train_summary_counts_rows_left_out(tmp_path, tiny_llama):
    r = _user_error(tmp_path, tiny_llama, 'dataset=half')   # writes the data; check-data first
    r = cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', f'dataset_dir={tmp_path}',
            'dataset=half', 'val_size=0', 'eval_strategy=no', 'max_steps=1', f'output_dir={tmp_path / "run"}')
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == ("Data: 4 rows left out: 'half': 4 of 8 rows left out: no assistant response"
                                                 " to train on (e.g. rows [0, 2, 4, 6])"), r.stdout[-2000:]

"""`llmft export`: every fine-tuning type's run, exported, then loaded in a fresh interpreter by plain transformers (no peft,
no llmft imported) gives the logits of the model the run trained, within 1e-5 in float32; the exported tokenizer's chat
template reproduces the training ids; shards respect `export_size`; a reward model keeps its value head; and each refusal
(including a disk that fills up mid-write) is one line with nothing half-written left behind."""
import json, resource, subprocess, sys
from pathlib import Path
import pytest
import torch
from safetensors import safe_open
from conftest import ROOT, cli
from llmft.export import run_export
from llmft.model.expand import expand_model
from llmft.train.tuner import run_exp

TEXTS = ['Add the two numbers. 2 and 3', 'Hi', 'Who are you? Tell me in a few words.']
CONV = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Who are you?'},
        {'role': 'assistant', 'content': 'A tiny model.'}, {'role': 'user', 'content': 'And?'},
        {'role': 'assistant', 'content': 'Trained by llmft.'}]
CASES = {  # name: training keys (on the tiny Llama), 'on' names a case whose run this one starts from
    'lora': dict(finetuning_type='lora'),
    'dora': dict(finetuning_type='lora', use_dora=True),
    'rslora': dict(finetuning_type='lora', use_rslora=True, lora_target='q_proj,v_proj'),
    'pissa': dict(finetuning_type='lora', pissa_init=True, pissa_iter=4, pissa_convert=True),
    'oft': dict(finetuning_type='oft', oft_block_size=16),
    'freeze': dict(finetuning_type='freeze', freeze_trainable_layers=1),
    'full': dict(finetuning_type='full'),
    'stacked': dict(finetuning_type='lora', on='lora', create_new_adapter=True),  # a new adapter over the first
    'llama_pro': dict(finetuning_type='freeze', use_llama_pro=True, freeze_trainable_layers=2, expand=2),
    'rm': dict(finetuning_type='lora', stage='rm', dataset='pref_demo'),
}

FRESH = r'''
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from safetensors.torch import load_file
jobs, out = json.loads(sys.argv[1]), {}
for name, folder in jobs.items():
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    batch = tok(TEXTS, return_tensors='pt', padding=True)
    with torch.no_grad(): o = model(**batch, output_hidden_states=True)
    res = dict(ids=batch['input_ids'].tolist(), mask=batch['attention_mask'].tolist(), logits=o.logits.tolist(),
               chat=tok.apply_chat_template(CONV, tokenize=True)['input_ids'], dtype=str(model.dtype),
               eos=model.generation_config.eos_token_id)
    try:
        vh = load_file(folder + '/value_head.safetensors')
        res['values'] = (o.hidden_states[-1] @ vh['v_head.summary.weight'].T + vh['v_head.summary.bias']).squeeze(-1).tolist()
    except FileNotFoundError: pass
    out[name] = res
assert not [m for m in sys.modules if m.split('.')[0] in ('peft', 'llmft')], 'the export needs peft or llmft'
print(json.dumps(out))
'''


def base_cfg(tiny_llama, out):
    return dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, lora_target='all', dataset='alpaca_demo',
                dataset_dir=str(ROOT / 'data'), template='llama3', cutoff_len=128, max_samples=8, output_dir=str(out),
                overwrite_output_dir=True, per_device_train_batch_size=4, learning_rate=5e-3, max_steps=4,
                report_to='none', save_strategy='no', disable_gradient_checkpointing=True, seed=0)


@pytest.fixture(scope='module')
def exported(tiny_llama, tmp_path_factory):
    "Each case trained, its trained model's outputs on TEXTS kept, and exported (plus a finely sharded lora export)."
    root, runs, folders, trained = tmp_path_factory.mktemp('export'), {}, {}, {}
    for name, keys in CASES.items():
        keys = dict(keys)
        cfg = base_cfg(tiny_llama, root / 'runs' / name)
        if 'on' in keys: cfg['adapter_name_or_path'] = str(runs[keys.pop('on')].output_dir)
        if 'expand' in keys: cfg['model_name_or_path'] = str(expand_model(tiny_llama, root / 'pro', keys.pop('expand')))
        runs[name] = run_exp({**cfg, **keys})
        trained[name] = runs[name].trainer.model.eval()
        folders[name] = str(run_export(runs[name].output_dir, export_dir=str(root / 'exports' / name)))
    folders['lora_sharded'] = str(run_export(runs['lora'].output_dir, export_dir=str(root / 'exports' / 'sharded'),
                                             export_size=0.0005))
    trained['lora_sharded'] = trained['lora']
    r = subprocess.run([sys.executable, '-c', f'TEXTS, CONV = {TEXTS!r}, {CONV!r}\n' + FRESH, json.dumps(folders)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return runs, folders, trained, json.loads(r.stdout.strip().splitlines()[-1])


def reference(model, fresh):
    "The trained model's logits (and values, for a reward model) on the batch the fresh process saw."
    ids, mask = torch.tensor(fresh['ids']), torch.tensor(fresh['mask'])
    with torch.no_grad(): out = model(input_ids=ids, attention_mask=mask)
    return (out[0], out[2]) if isinstance(out, tuple) else (out.logits, None)


@pytest.mark.parametrize('name', [*CASES, 'lora_sharded'])
def test_export_loads_plain_and_computes_what_training_made(name, exported):
    runs, folders, trained, fresh = exported
    f = fresh[name]
    logits, values = reference(trained[name], f)
    mask = torch.tensor(f['mask']).bool()   # padded positions compute nothing anyone reads
    torch.testing.assert_close(torch.tensor(f['logits'])[mask], logits[mask], atol=1e-5, rtol=1e-5)
    assert f['dtype'] == 'torch.float32'
    if name == 'rm':
        assert (Path(folders[name]) / 'value_head.safetensors').exists()
        torch.testing.assert_close(torch.tensor(f['values'])[mask], values[mask], atol=1e-5, rtol=1e-5)


def test_training_changed_the_model_the_export_carries(exported, tiny_llama):
    "The exports differ from the base model: a merge that silently dropped the adapter would still load."
    from transformers import AutoModelForCausalLM
    runs, folders, trained, fresh = exported
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids, mask = torch.tensor(fresh['lora']['ids']), torch.tensor(fresh['lora']['mask'])
    with torch.no_grad(): b = base(input_ids=ids, attention_mask=mask).logits
    for name in ('lora', 'dora', 'pissa', 'oft', 'full', 'stacked'):
        assert (torch.tensor(fresh[name]['logits']) - b).abs().max() > 1e-3, name
    assert (torch.tensor(fresh['stacked']['logits']) - torch.tensor(fresh['lora']['logits'])).abs().max() > 1e-3


def test_chat_template_reproduces_training_ids_and_stops(exported):
    from llmft.data.template import trained_ids
    from llmft.model.runs import parse_run
    runs, folders, trained, fresh = exported
    r = parse_run(runs['lora'].output_dir).load(with_model=False)
    want = trained_ids(r.template, r.tokenizer, CONV)
    for name in CASES:
        assert fresh[name]['chat'] == want, name
    stops = [r.tokenizer.eos_token_id, *r.tokenizer.convert_tokens_to_ids(r.template.stop_words)]
    assert fresh['lora']['eos'] == list(dict.fromkeys(stops))


def test_shards_respect_export_size(exported):
    runs, folders, trained, fresh = exported
    d = Path(folders['lora_sharded'])
    index = json.loads((d / 'model.safetensors.index.json').read_text())
    shards = sorted(d.glob('model-*.safetensors'))
    assert len(shards) >= 4 and set(index['weight_map'].values()) == {p.name for p in shards}
    for p in shards:   # a shard over the limit holds a single tensor bigger than the limit
        with safe_open(str(p), 'pt') as f: n = len(list(f.keys()))
        assert p.stat().st_size <= 0.0005 * 10**9 + 4096 or n == 1, (p.name, p.stat().st_size, n)
    assert not (Path(folders['lora']) / 'model.safetensors.index.json').exists()   # 5 GB default: one file


def test_folder_holds_modelfile_card_and_template(exported):
    runs, folders, trained, fresh = exported
    d = Path(folders['stacked'])
    names = {p.name for p in d.iterdir()}
    assert {'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'template.json',
            'Modelfile', 'README.md', 'model.safetensors'} <= names
    assert not {'adapter_config.json', 'adapter_model.safetensors'} & names
    mf = (d / 'Modelfile').read_text()
    assert mf.startswith('# ollama modelfile auto-generated by llamafactory\n\nFROM .\n') and 'PARAMETER stop "<|eot_id|>"' in mf
    card = (d / 'README.md').read_text()
    assert runs['lora'].output_dir in card and runs['stacked'].output_dir in card   # both adapters, in order
    assert card.index(runs['lora'].output_dir) < card.index(runs['stacked'].output_dir)
    assert '| stage | sft |' in card and '| train_loss |' in card and '| dataset |' in card


@pytest.mark.slow
def test_cli_export_and_refusals(exported, tiny_llama, tmp_path):
    runs, folders, trained, fresh = exported
    run = runs['lora'].output_dir
    r = cli('export', run, f'export_dir={tmp_path / "out"}')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'Exported to' in r.stdout and '1 weight file(s)' in r.stdout
    refusals = [  # (extra words, exit status, start of the message)
        ([f'export_dir={tmp_path / "out"}'], 2, 'already holds files: set overwrite_output_dir: true'),
        ([f'export_dir={tmp_path / "q"}', 'quantization_bit=4'], 2, 'Cannot merge adapters into a quantized model'),
        ([f'export_dir={tmp_path / "g"}', 'export_quantization_bit=4', 'export_quantization_dataset=x.json'], 2,
         'export_quantization_bit with adapter_name_or_path: merge the adapters first'),
        ([f'export_dir={tmp_path / "h"}', 'export_hub_model_id=me/tiny'], 2, 'the hub is offline here'),
        ([f'export_dir={tmp_path / "m"}', f'model_name_or_path={tmp_path}'], 5, ''),
    ]
    for words, code, msg in refusals:
        r = cli('export', run, *words)
        assert r.returncode == code and msg in r.stderr and 'Traceback' not in r.stderr, (words, r.returncode, r.stderr[-800:])
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    from llmft.testing import tiny_model
    r = cli('export', run, f'export_dir={tmp_path / "w"}', f'model_name_or_path={tiny_model("llama", hidden=64)}')
    assert r.returncode == 5 and 'do not fit the base model' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-800:]
    gptq = cli('export', f'model_name_or_path={tiny_llama}', 'template=llama3', f'export_dir={tmp_path / "g2"}',
               'export_quantization_bit=4', 'export_quantization_dataset=x.json')
    if not torch.cuda.is_available():
        assert gptq.returncode == 2 and 'GPTQ quantization needs a CUDA GPU' in gptq.stderr, gptq.stderr[-800:]


@pytest.mark.slow
def test_a_full_disk_leaves_nothing_half_written(exported, tmp_path):
    "A file-size limit makes the shard write fail with EFBIG, as a full disk fails with ENOSPC: one line, no folder."
    runs, folders, trained, fresh = exported
    dest = tmp_path / 'full'
    exe = Path(sys.executable).parent / 'llmft'
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    r = subprocess.run([str(exe), 'export', runs['lora'].output_dir, f'export_dir={dest}'], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, preexec_fn=limit)
    assert r.returncode == 5, (r.returncode, r.stderr[-2000:])
    assert 'writing the export failed' in r.stderr and 'nothing was left there' in r.stderr and 'Traceback' not in r.stderr
    assert not dest.exists() and not list(tmp_path.glob('.full.*')), list(tmp_path.iterdir())
    dest.mkdir(); (dest / 'keep.txt').write_text('mine')   # an existing export_dir survives a failed overwrite
    r = subprocess.run([str(exe), 'export', runs['lora'].output_dir, f'export_dir={dest}', 'overwrite_output_dir=true'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert r.returncode == 5 and (dest / 'keep.txt').read_text() == 'mine' and len(list(dest.iterdir())) == 1


def test_full_run_over_an_old_lora_run_exports_the_full_model(exported, tiny_llama, tmp_path):
    "overwrite_output_dir keeps old files; a stale adapter_config.json would make transformers load the old adapter."
    import shutil
    runs, folders, trained, fresh = exported
    reused = tmp_path / 'reused'
    shutil.copytree(runs['lora'].output_dir, reused)
    res = run_exp({**base_cfg(tiny_llama, reused), 'finetuning_type': 'full'})
    assert not (reused / 'adapter_config.json').exists()
    dest = run_export(str(reused), export_dir=str(tmp_path / 'out'))
    from transformers import AutoModelForCausalLM
    ids, mask = torch.tensor(fresh['full']['ids']), torch.tensor(fresh['full']['mask'])
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(dest).eval()(input_ids=ids, attention_mask=mask).logits
        want = res.trainer.model.eval()(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)


def test_the_export_chats_and_evaluates_without_naming_its_template(exported, tmp_path):
    "An export carries template.json: ChatModel and llmft eval read the template from it, and answer as the run does."
    from llmft.eval.evaluator import run_eval
    from llmft.infer.chat import ChatModel
    runs, folders, trained, fresh = exported
    msgs = [{'role': 'user', 'content': 'Who are you?'}]
    export = ChatModel(folders['lora'], max_new_tokens=12, do_sample=False)
    run = ChatModel(runs['lora'].output_dir, max_new_tokens=12, do_sample=False)
    assert export.template.name == 'llama3' and export.chat(msgs)[0].text == run.chat(msgs)[0].text
    keys = dict(task='tinymmlu_test', task_dir=str(ROOT / 'evaluation'), n_shot=1, batch_size=8, verbose=False)
    assert run_eval(folders['lora'], **keys).predictions == run_eval(runs['lora'].output_dir, **keys).predictions


@pytest.mark.slow
def test_cli_gguf_export_prints_files_and_a_full_disk_leaves_nothing(exported, tmp_path):
    ("`export_format=gguf gguf_types=[f16,q8_0]` on the command line: both files, printed as relative paths, FROM in "
     "the Modelfile, the card's table; a disk that fills while a GGUF file is written leaves no file and no folder.")
    runs, folders, trained, fresh = exported
    dest = ROOT / 'saves' / f'.test-gguf-{tmp_path.name}'   # under the working folder: printed relative to it
    try:
        r = cli('export', runs['lora'].output_dir, f'export_dir={dest}', 'export_format=gguf', 'gguf_types=[f16,q8_0]')
        assert r.returncode == 0, r.stderr[-2000:]
        rel = dest.relative_to(ROOT)
        assert f'GGUF: {rel}/{dest.name}-f16.gguf (' in r.stdout and f'GGUF: {rel}/{dest.name}-q8_0.gguf (' in r.stdout
        assert f'\nFROM ./{dest.name}-f16.gguf\n' in (dest / 'Modelfile').read_text()
        card = (dest / 'README.md').read_text()
        assert f'| {dest.name}-q8_0.gguf | q8_0 |' in card and '| max logit difference | perplexity |' in card
    finally:
        import shutil
        shutil.rmtree(dest, ignore_errors=True)
    full = tmp_path / 'full'   # shards of 300 KB fit under the limit; the GGUF file (about 1 MB) does not
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))
    r = subprocess.run([str(Path(sys.executable).parent / 'llmft'), 'export', runs['lora'].output_dir,
                        f'export_dir={full}', 'export_size=0.0003', 'export_format=gguf'], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert r.returncode == 5 and 'nothing was left there' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert [l for l in r.stderr.splitlines() if l.startswith('llmft:')] == [r.stderr.strip().splitlines()[-1]], r.stderr
    assert not full.exists() and not list(tmp_path.glob('.full.*')), list(tmp_path.iterdir())

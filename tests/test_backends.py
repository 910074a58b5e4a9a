"""`infer_backend: vllm` / `sglang` on a machine without their package or a CUDA GPU (as CI is): `llmft chat` and
`llmft api` refuse the backend in one line naming what is missing, before anything loads; the vllm_* / sglang_* keys
travel from a training recipe to the run and from the command line; and what the engines would be asked for a real run
(engine arguments, adapters, sampling) is what llmft's keys and the run say. The engines themselves run on a GPU:
tests/gpu/check_vllm.py and check_sglang.py."""
import os, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import ROOT
from llmft.core import EXIT_CODES
from llmft.infer.backends import (DEFAULT_ADAPTER, backend_error, adapter_table, job_seeds, lora_requests,
                                  make_engine, sglang_engine_args, sglang_sampling, vllm_engine_args, vllm_sampling)
from llmft.model.runs import parse_run

LLMFT = str(Path(sys.executable).parent / 'llmft')


def train(tmp_path_factory, name, **kw):
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    out = tmp_path_factory.mktemp(name) / 'run'
    run_exp({**dict(model_name_or_path=str(tiny_model('llama')), stage='sft', do_train=True, finetuning_type='lora',
                    lora_target='all', dataset='identity', dataset_dir=str(ROOT / 'data'), template='llama3',
                    cutoff_len=64, max_samples=4, output_dir=str(out), overwrite_output_dir=True,
                    per_device_train_batch_size=4, learning_rate=5e-3, max_steps=2, report_to='none',
                    save_strategy='no', disable_gradient_checkpointing=True), **kw})
    return out


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
    "A LoRA run whose recipe carries LLaMA-Factory's vLLM / SGLang keys (as an LF recipe may)."
    return train(tmp_path_factory, 'lora', lora_rank=8, vllm_maxlen=1024, vllm_gpu_util=0.5, sglang_tp_size=1,
                 vllm_config={'max_num_seqs': 16})


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
    return train(tmp_path_factory, 'full', finetuning_type='full')


def llmft(*args, timeout=120):
    "`llmft ARGS` with no terminal input; (process result, seconds)."
    t = time.time()
    r = subprocess.run([LLMFT, *map(str, args)], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, 'API_PORT': '0'})
    return r, time.time() - t


@pytest.mark.parametrize('command, backend', [('chat', 'vllm'), ('api', 'sglang')])
def test_backend_refused_here_in_one_line(lora_run, command, backend):
    why = backend_error(backend)
    assert why is not None, f'this test runs where {backend} cannot (no package or no CUDA GPU), as CI does'
    assert ('needs the %s package (pip install %s) and a CUDA GPU' % (backend, backend)) in why
    r, _ = llmft(command, lora_run, f'infer_backend={backend}')
    assert r.returncode == EXIT_CODES['configuration'], (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[-1] == f'llmft: configuration error: {why}', r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    assert 'Chatting with' not in r.stdout and 'Serving' not in r.stdout   # refused before the model loads


def test_unknown_backend_named(lora_run):
    r, _ = llmft('chat', lora_run, 'infer_backend=vlm')
    assert r.returncode == EXIT_CODES['configuration']
    assert ("Unknown infer_backend 'vlm'; did you mean 'vllm'? Expected one of huggingface, vllm, sglang."
            in r.stderr.splitlines()[-1]), r.stderr[-2000:]
    assert 'Traceback' not in r.stderr


def test_keys_travel_from_recipe_and_command_line(lora_run):
    "The run's recipe keeps its vllm_* keys (llmft_args.yaml); the command line's win, JSON read as a mapping."
    run = parse_run(lora_run)
    m = run.model_args
    assert (m.vllm_maxlen, m.vllm_gpu_util, m.sglang_tp_size, m.vllm_config) == (1024, 0.5, 1, {'max_num_seqs': 16})
    over = parse_run([str(lora_run), 'infer_backend=vllm', 'vllm_config={"max_num_seqs": 4, "seed": 1}',
                      'vllm_enforce_eager=true'])
    assert over.model_args.vllm_config == {'max_num_seqs': 4, 'seed': 1} and over.model_args.vllm_enforce_eager
    from llmft.core import ConfigError
    with pytest.raises(ConfigError, match="vllm_config: not valid JSON"):
        parse_run([str(lora_run), 'vllm_config=max_num_seqs'])
    with pytest.raises(ConfigError, match="vllm_config: expected a mapping of engine settings"):
        parse_run([str(lora_run), 'vllm_config=[1, 2]'])


def test_engine_arguments_of_a_lora_run(lora_run):
    "vLLM loads the base model and serves the run's adapter as a LoRA request; the run's own keys shape the engine."
    run = parse_run(lora_run, infer_backend='vllm')
    table = adapter_table(run)
    assert table == {DEFAULT_ADAPTER: str(lora_run)}
    base = run.model_args.model_name_or_path
    assert Path(base) != lora_run and (Path(base) / 'config.json').exists()
    args = vllm_engine_args(run, table, devices=1)
    assert args == dict(model=str(base), tokenizer=str(lora_run), trust_remote_code=False, download_dir=None,
                        dtype='auto', max_model_len=1024, tensor_parallel_size=1, gpu_memory_utilization=0.5,
                        enforce_eager=False, disable_log_stats=True, enable_lora=True, max_lora_rank=32, max_loras=1,
                        max_num_seqs=16)
    assert lora_requests(table) == {'default': dict(lora_name='default', lora_int_id=1, lora_path=str(lora_run))}
    sg = sglang_engine_args(parse_run(lora_run, infer_backend='sglang'), table, devices=2)
    assert (sg['model_path'], sg['tp_size'], sg['lora_paths'], sg['context_length']) == \
        (str(base), 1, [f'default={lora_run}'], 4096)


def test_engine_arguments_of_a_full_run(full_run):
    "A full fine-tune's folder is the model: no adapter, no LoRA."
    run = parse_run(full_run, infer_backend='vllm')
    assert adapter_table(run) == {}
    args = vllm_engine_args(run, {}, devices=1)
    assert (args['model'], args['enable_lora'], 'max_loras' in args) == (str(full_run), False, False)


def test_sampling_of_real_jobs(lora_run):
    "The jobs the HF engine's `make_jobs` builds from a request map onto each engine's sampling parameters."
    from llmft.infer.engine import HFEngine
    run = parse_run(lora_run, max_new_tokens=40, temperature=0.5, top_p=0.8, top_k=0, do_sample=True).load(
        with_model=False)
    eng = HFEngine.__new__(HFEngine)   # `make_jobs` reads the settings, the template's end tokens and the tokenizer
    eng.tokenizer, eng.template, eng.generating_args = run.tokenizer, run.template, run.generating_args
    from llmft.data.template import stop_ids
    eng.eos_ids = stop_ids(run.template, run.tokenizer)
    greedy = eng.make_jobs([1, 2, 3], stop=['\n\n'], temperature=0)[0]
    assert vllm_sampling(greedy) == dict(
        max_tokens=40, min_tokens=0, temperature=0.0, repetition_penalty=1.0, stop=['\n\n'],
        stop_token_ids=eng.eos_ids, ignore_eos=True, skip_special_tokens=False, spaces_between_special_tokens=False,
        seed=None)
    sampled = eng.make_jobs([1, 2, 3], n=2, seed=5)
    seeds = job_seeds(sampled)
    assert seeds == [5, 6]
    v, s = vllm_sampling(sampled[1], seeds[1]), sglang_sampling(sampled[1], seeds[1])
    assert (v['temperature'], v['top_p'], 'top_k' in v, v['seed']) == (0.5, 0.8, False, 6)
    assert (s['temperature'], s['top_p'], s['top_k'], s['sampling_seed']) == (0.5, 0.8, -1, 6)
    assert s['stop_token_ids'] == eng.eos_ids and s['skip_special_tokens'] is False


def test_make_engine_refuses_before_loading(lora_run):
    from llmft.core import ConfigError
    for backend in ('vllm', 'sglang'):
        with pytest.raises(ConfigError) as e:
            make_engine(parse_run(lora_run, infer_backend=backend))
        assert str(e.value) == backend_error(backend)

"""Serving that holds under real use, through real `llmft api` processes and the official `openai` client: several
LoRA fine-tunes of one base behind one server (each answer equal to the run's own), concurrent requests decoded
together with greedy answers and seeded samples unchanged, and the server's limits (429 queue, 408 timeout)."""
import json, os, subprocess, sys, threading, time
from pathlib import Path
import openai
import pytest
from conftest import free_port, start_api, stop_api

WHO = 'Who are you?'


def start(words, env=None, tmp=None):
    "`llmft api WORDS` in its own process once it listens: (base url, process, log path)."
    return start_api(words, Path(tmp) / f'server-{time.time_ns()}.log', env)


def lora_run(root: Path, name: str, answer: str) -> Path:
    "A tiny llama3 LoRA run trained towards answering WHO with `answer`."
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    d = root / f'{name}-data'
    d.mkdir()
    rows = [{'instruction': WHO, 'output': answer}, {'instruction': 'Say hi.', 'output': f'Hi from {name}.'}] * 8
    (d / 'data.json').write_text(json.dumps(rows))
    (d / 'dataset_info.json').write_text(json.dumps({'d': {'file_name': 'data.json'}}))
    out = root / name
    run_exp(dict(model_name_or_path=str(tiny_model('llama')), stage='sft', do_train=True, finetuning_type='lora',
                 lora_target='all', dataset='d', dataset_dir=str(d), template='llama3', cutoff_len=256,
                 output_dir=str(out), overwrite_output_dir=True, per_device_train_batch_size=4, learning_rate=1e-2,
                 max_steps=60, logging_steps=20, report_to='none', save_strategy='no', seed=0,
                 disable_gradient_checkpointing=True, lr_scheduler_type='constant'))
    return out


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('fleet')
    return lora_run(root, 'run_a', 'I am model A.'), lora_run(root, 'run_b', 'I am model B.')


def chat(client, model, content=WHO, **kw):
    r = client.chat.completions.create(model=model, messages=[{'role': 'user', 'content': content}], temperature=0,
                                       **kw)
    return r.choices[0].message.content


def test_two_runs_one_server_each_answers_as_alone(two_runs, tmp_path):
    "`llmft api RUN_A RUN_B`: one base, two adapters; each name answers as the run served alone; base has no adapter."
    from llmft.infer.chat import ChatModel
    from llmft.testing import tiny_model
    a, b = two_runs
    url, p, log = start([a, b, 'max_new_tokens=24', 'do_sample=false'], tmp=tmp_path)
    try:
        client = openai.OpenAI(base_url=url, api_key='none', max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == ['run_a', 'run_b', 'base']
        msgs = [{'role': 'user', 'content': WHO}]
        for run, name in ((a, 'run_a'), (b, 'run_b')):
            alone = ChatModel(str(run), max_new_tokens=24, do_sample=False)
            assert chat(client, name) == alone.chat(msgs)[0].text
            assert chat(client, name, 'Say hi.') == alone.chat([{'role': 'user', 'content': 'Say hi.'}])[0].text
        base = ChatModel(dict(model_name_or_path=str(tiny_model('llama')), template='llama3'), max_new_tokens=24,
                         do_sample=False)
        assert chat(client, 'base') == base.chat(msgs)[0].text
        # the three, asked at once, decoded together: each answer unchanged
        got, names = {}, ['run_a', 'run_b', 'base'] * 3
        threads = [threading.Thread(target=lambda i=i, n=n: got.__setitem__(i, chat(client, n)))
                   for i, n in enumerate(names)]
        for t in threads: t.start()
        for t in threads: t.join(120)
        want = {n: chat(client, n) for n in ('run_a', 'run_b', 'base')}
        assert len(set(want.values())) == 3          # three models: two adapters and none
        assert [got[i] for i in range(len(names))] == [want[n] for n in names]
        with pytest.raises(openai.NotFoundError) as e: chat(client, 'run_c')
        assert "The model 'run_c' is not served here; served: run_a, run_b, base." in str(e.value)
    finally:
        stop_api(p)
    assert 'Serving' in log.read_text()


def test_a_run_of_another_base_is_refused_at_start(two_runs):
    from llmft.testing import tiny_model
    other = tiny_model('qwen2')
    r = subprocess.run([str(Path(sys.executable).parent / 'llmft'), 'api', str(two_runs[0]), str(other),
                        'template=llama3'], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'API_PORT': str(free_port())})
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert f'{other}: its base model is' in r.stderr and "one server serves runs of one base" in r.stderr


def test_concurrent_requests_are_decoded_together_unchanged():
    "Sixteen requests at once share decoding steps; greedy answers and seeded samples are each request's own."
    from llmft.infer.chat import ChatModel
    from llmft.testing import tiny_model
    cm = ChatModel(dict(model_name_or_path=str(tiny_model('llama')), template='llama3'), max_new_tokens=40,
                   min_new_tokens=40)    # every answer 40 tokens long: the rows overlap
    qs = [[{'role': 'user', 'content': f'Question number {i} is here'}] for i in range(16)]
    alone = [cm.chat(q, do_sample=False)[0].text for q in qs]
    seeded = cm.chat(qs[3], do_sample=True, temperature=1.0, seed=42)[0].text
    got, start = {}, threading.Barrier(17)

    def greedy(i):
        start.wait()
        got[i] = ''.join(cm.stream_chat(qs[i], do_sample=False))

    def sampled():
        start.wait()
        got['seeded'] = cm.chat(qs[3], do_sample=True, temperature=1.0, seed=42)[0].text

    threads = [threading.Thread(target=greedy, args=(i,)) for i in range(16)] + [threading.Thread(target=sampled)]
    for t in threads: t.start()
    for t in threads: t.join(300)
    assert [got[i] for i in range(16)] == alone and got['seeded'] == seeded
    assert cm.engine.batcher.widest >= 8


@pytest.fixture(scope='module')
def limited(tmp_path_factory):
    """A server decoding one request at a time, one more waiting at most, three seconds per answer; a model slow enough
    that a 1900-token answer takes longer than that on any machine."""
    from llmft.testing import tiny_model
    slow = tiny_model('llama', hidden=512, layers=4, heads=8, kv_heads=4)
    url, p, log = start([slow, 'template=llama3', 'do_sample=false'],
                        {'API_MAX_BATCH': '1', 'API_MAX_QUEUE': '1', 'API_TIMEOUT': '3'}, tmp_path_factory.mktemp('lim'))
    yield openai.OpenAI(base_url=url, api_key='none', max_retries=0, timeout=60)
    stop_api(p)


LONG = dict(max_tokens=1900, extra_body={'min_tokens': 1900})


def test_a_full_queue_answers_429(limited):
    running = limited.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'a'}], stream=True,
                                              **LONG)
    next(c for c in running if c.choices and c.choices[0].delta.content)   # decoding: its first text came
    waiting = limited.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'b'}], stream=True,
                                              **LONG)
    next(iter(waiting))        # queued: its stream has begun
    with pytest.raises(openai.RateLimitError) as e:
        limited.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'c'}], max_tokens=4)
    assert e.value.status_code == 429 and 'the limit is 1' in e.value.body['message']
    assert e.value.body['code'] == 'rate_limit_exceeded'
    running.close()
    waiting.close()


def test_an_answer_past_the_timeout_is_408_and_a_stream_ends_with_an_error(limited):
    time.sleep(1)              # the streams of the test before have left
    with pytest.raises(openai.APIStatusError) as e:
        limited.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'a'}], **LONG)
    assert e.value.status_code == 408 and "request timeout (3 s)" in e.value.body['message']
    with pytest.raises(openai.APIError) as e:
        for _ in limited.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'a'}],
                                                 stream=True, **LONG): pass
    assert "request timeout (3 s)" in str(e.value)
    assert limited.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'a'}],
                                           max_tokens=4).choices[0].finish_reason == 'length'

"""The OpenAI-compatible server in a real uvicorn process, driven by the official `openai` client: a tiny model
fine-tuned here on tool calls and a plain answer; greedy answers equal `ChatModel.chat` and `model.generate`; streams,
tools (streamed too), stop / n / usage while streaming, auth, every bad request, 16 concurrent streams, a client killed
mid-stream."""
import json, subprocess, sys, threading, time
import httpx
import openai
import pytest
from conftest import start_api, stop_api

TOOLS = [{'type': 'function', 'function': {'name': 'add', 'description': 'Add two numbers', 'parameters': {
    'type': 'object', 'properties': {'a': {'type': 'number'}, 'b': {'type': 'number'}}, 'required': ['a', 'b']}}}]
Q, WHO = 'What is 2 plus 3?', 'Who are you?'


@pytest.fixture(scope='module')
def tool_run(tmp_path_factory):
    "A tiny Qwen2 fine-tuned (full) to call `add` for Q, answer the tool's result, and answer WHO."
    from llmft.testing import tiny_model
    from llmft.train.tuner import run_exp
    d = tmp_path_factory.mktemp('tooldata')
    fn = json.dumps({'name': 'add', 'arguments': {'a': 2, 'b': 3}})
    call = {'conversations': [{'from': 'human', 'value': Q}, {'from': 'function_call', 'value': fn},
                              {'from': 'observation', 'value': '5'}, {'from': 'gpt', 'value': 'It is 5.'}],
            'tools': json.dumps(TOOLS)}
    plain = {'conversations': [{'from': 'human', 'value': WHO}, {'from': 'gpt', 'value': 'I am a tiny model.'}]}
    (d / 'tool.json').write_text(json.dumps([call, plain] * 8))
    entry = {'file_name': 'tool.json', 'formatting': 'sharegpt',
             'columns': {'messages': 'conversations', 'tools': 'tools'}}
    (d / 'dataset_info.json').write_text(json.dumps({'tool': entry}))
    out = d / 'run'
    run_exp(dict(model_name_or_path=str(tiny_model('qwen2')), stage='sft', do_train=True, finetuning_type='full',
                 dataset='tool', dataset_dir=str(d), template='qwen', cutoff_len=1024, output_dir=str(out),
                 overwrite_output_dir=True, per_device_train_batch_size=4, learning_rate=3e-3, max_steps=150,
                 logging_steps=25, report_to='none', save_strategy='no', disable_gradient_checkpointing=True, seed=0,
                 lr_scheduler_type='constant'))
    # trained until the two conversations are memorised, so greedy decoding writes them whatever the library versions'
    # numerics (50 steps ended at loss 0.13: enough on one release, not on the next)
    losses = [json.loads(l)['loss'] for l in (out / 'trainer_log.jsonl').read_text().splitlines() if '"loss"' in l]
    assert losses[-1] < 0.01, losses
    return out


@pytest.fixture(scope='module')
def server(tool_run):
    "`llmft api RUN` in its own process: (base url, process, its log file)."
    url, p, log = start_api([tool_run, 'max_new_tokens=64', 'do_sample=false'], tool_run.parent / 'server.log',
                            {'API_KEY': 'sk-test', 'API_MODEL_NAME': 'tiny'})
    yield url, p, log
    stop_api(p)


@pytest.fixture(scope='module')
def client(server):
    return openai.OpenAI(base_url=server[0], api_key='sk-test', max_retries=0, timeout=120)


def ask(client, content, **kw):
    return client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': content}], temperature=0,
                                          **kw)


def test_models_and_greedy_answer_match_in_process(client, tool_run):
    import torch
    from llmft.infer.chat import ChatModel
    assert [m.id for m in client.models.list().data] == ['tiny']
    r = ask(client, WHO)
    assert r.choices[0].message.content == 'I am a tiny model.' and r.choices[0].finish_reason == 'stop'
    cm = ChatModel(str(tool_run), max_new_tokens=64, do_sample=False)
    msgs = [{'role': 'user', 'content': WHO}]
    assert cm.chat(msgs)[0].text == r.choices[0].message.content
    p = cm.prompt(msgs)
    ids = cm.engine.model.generate(torch.tensor([p]), max_new_tokens=64, do_sample=False,
                                   eos_token_id=cm.engine.eos_ids, pad_token_id=cm.tokenizer.pad_token_id)[0, len(p):]
    ids = ids.tolist()
    text = cm.tokenizer.decode([t for t in ids if t not in cm.engine.eos_ids], skip_special_tokens=True)
    assert text == r.choices[0].message.content
    assert r.usage.prompt_tokens == len(p) and r.usage.completion_tokens == r.usage.total_tokens - len(p) > 0


def test_stream_equals_the_answer(client):
    pieces = [c.choices[0].delta.content or '' for c in ask(client, WHO, stream=True)]
    assert len(pieces) > 2 and ''.join(pieces) == ask(client, WHO).choices[0].message.content


def test_stream_stop_n_finish_and_usage(client):
    """Streaming honours stop strings (never shown, finish stop), writes n choices by index, ends each choice with the
    generation's finish reason, and sends usage when asked, equal to the non-streamed answer's."""
    chunks = list(ask(client, WHO, stream=True, stop=['tiny']))
    assert ''.join(c.choices[0].delta.content or '' for c in chunks) == 'I am a '
    assert chunks[-1].choices[0].finish_reason == 'stop'
    whole = ask(client, WHO).choices[0].message.content
    texts, finish = {0: '', 1: '', 2: ''}, {}
    for c in ask(client, WHO, stream=True, n=3):
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ''
            if ch.finish_reason: finish[ch.index] = ch.finish_reason
    assert texts == {0: whole, 1: whole, 2: whole} and finish == {0: 'stop', 1: 'stop', 2: 'stop'}
    short = list(ask(client, WHO, stream=True, max_tokens=3, stream_options={'include_usage': True}))
    assert [c.choices[0].finish_reason for c in short if c.choices][-1] == 'length'
    alone = ask(client, WHO, max_tokens=3).usage
    assert short[-1].choices == [] and short[-1].usage.completion_tokens == alone.completion_tokens == 3
    assert short[-1].usage.prompt_tokens == alone.prompt_tokens


def test_stream_with_tools_gives_tool_call_deltas(client):
    "A streamed tool call arrives as OpenAI streams it: tool_calls deltas (id, name, arguments), finish tool_calls."
    calls, content, finish = {}, '', None
    for c in client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': Q}], tools=TOOLS,
                                            temperature=0, stream=True):
        d = c.choices[0].delta
        content += d.content or ''
        for t in d.tool_calls or []:
            calls.setdefault(t.index, {'name': '', 'arguments': ''})
            calls[t.index]['name'] += t.function.name or ''
            calls[t.index]['arguments'] += t.function.arguments or ''
        finish = c.choices[0].finish_reason or finish
    assert content == '' and finish == 'tool_calls'
    assert calls[0]['name'] == 'add' and json.loads(calls[0]['arguments']) == {'a': 2, 'b': 3}
    # a plain answer with tools offered streams as text, equal to the non-streamed one
    msgs = [{'role': 'user', 'content': WHO}]
    plain = client.chat.completions.create(model='tiny', messages=msgs, tools=TOOLS, temperature=0)
    streamed = client.chat.completions.create(model='tiny', messages=msgs, tools=TOOLS, temperature=0, stream=True)
    assert ''.join(c.choices[0].delta.content or '' for c in streamed) == plain.choices[0].message.content


def test_tool_call_round_trip(client):
    r = client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': Q}], tools=TOOLS,
                                       temperature=0)
    msg, choice = r.choices[0].message, r.choices[0]
    assert choice.finish_reason == 'tool_calls' and msg.content is None
    call = msg.tool_calls[0]
    assert call.function.name == 'add' and json.loads(call.function.arguments) == {'a': 2, 'b': 3}
    follow = [{'role': 'user', 'content': Q}, msg.model_dump(exclude_none=True),
              {'role': 'tool', 'tool_call_id': call.id, 'content': '5'}]
    r2 = client.chat.completions.create(model='tiny', messages=follow, tools=TOOLS, temperature=0)
    assert r2.choices[0].message.content == 'It is 5.'


def test_auth(server):
    bad = openai.OpenAI(base_url=server[0], api_key='wrong', max_retries=0)
    with pytest.raises(openai.AuthenticationError): bad.models.list()
    assert httpx.get(server[0] + '/models').status_code == 401


@pytest.mark.parametrize('body, param, words', [
    ({'messages': []}, 'messages', 'messages must be a non-empty list'),
    ({'messages': [{'role': 'assistant', 'content': 'x'}]}, 'messages',
     "messages[0]: 'assistant' where user or observation"),
    ({'messages': [{'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'}]}, 'messages',
     "messages[1]: 'user' where"),
    ({'messages': [{'role': 'robot', 'content': 'x'}]}, 'messages[0].role', "unknown role 'robot'"),
    ({'max_tokens': 0}, 'max_tokens', 'max_tokens must be an integer >= 1'),
    ({'temperature': -0.5}, 'temperature', 'temperature must be between 0 and 2'),
    ({'top_p': 1.5}, 'top_p', 'top_p must be in (0, 1]'),
    ({'max_tokens': 10 ** 6}, 'max_tokens', "exceeds this model's context of 2048 tokens: ask at most"),
    ({'messages': [{'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': 'http://x/a.png'}}]}]},
     'messages[0].content', 'images (or other media) sent to a text model'),
])
def test_bad_requests_are_named(client, body, param, words):
    body = {'model': 'tiny', 'messages': [{'role': 'user', 'content': 'Hi'}], **body}
    with pytest.raises(openai.BadRequestError) as e: client.chat.completions.create(**body)
    err = e.value.body
    assert e.value.status_code == 400 and err['param'] == param and words in err['message'], err


def test_body_not_json(server):
    r = httpx.post(server[0] + '/chat/completions', content=b'{"model": ', headers={'Authorization': 'Bearer sk-test'})
    assert r.status_code == 400 and 'not valid JSON' in r.json()['error']['message']


def test_sixteen_concurrent_streams_each_get_the_single_answer(client):
    want = {q: ask(client, q).choices[0].message.content for q in (WHO, 'Hello there')}
    got, errors = {}, []
    def one(i):
        q = (WHO, 'Hello there')[i % 2]
        try: got[i] = (q, ''.join(c.choices[0].delta.content or '' for c in ask(client, q, stream=True)))
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads: t.start()
    for t in threads: t.join(300)
    assert not errors and len(got) == 16
    assert all(text == want[q] for q, text in got.values())


def test_client_killed_mid_stream_then_server_answers(server, client):
    "A client that dies mid-stream: its generation stops (the server says so in its log), and the server answers on."
    code = ("import openai, os\n"
            f"c = openai.OpenAI(base_url={server[0]!r}, api_key='sk-test', max_retries=0)\n"
            "s = c.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': 'Tell a long story'}],"
            " temperature=1.0, max_tokens=1900, stream=True, extra_body={'min_tokens': 1900})\n"
            "for i, ch in enumerate(s):\n"
            "    print('chunk', flush=True)\n"
            "    if i == 3: os._exit(0)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.stdout.count('chunk') == 4, r.stderr[-2000:]
    log, said = server[2], 'the client went away; generation stopped'
    deadline = time.time() + 30
    while said not in log.read_text() and time.time() < deadline: time.sleep(0.2)
    assert said in log.read_text(), log.read_text()[-2000:]
    assert ask(client, WHO).choices[0].message.content == 'I am a tiny model.'
    assert server[1].poll() is None
def test_n_stop_and_seed(client):
    r = ask(client, WHO, n=2)
    assert [c.index for c in r.choices] == [0, 1] and r.choices[0].message.content == r.choices[1].message.content
    cut = ask(client, WHO, stop=['tiny'])
    assert cut.choices[0].message.content == 'I am a ' and cut.choices[0].finish_reason == 'stop'
    sampled = [client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': 'Hello there'}],
                                              temperature=1.5, seed=11, max_tokens=24).choices[0].message.content
               for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_score_endpoint_needs_a_reward_model(server):
    r = httpx.post(server[0] + '/score/evaluation', json={'model': 'tiny', 'messages': ['a text']},
                   headers={'Authorization': 'Bearer sk-test'})
    assert r.status_code == 400 and 'not a reward model' in r.json()['error']['message']

"""`POST /v1/completions` of a real `llmft api` process, proven with EleutherAI's lm-eval: its `local-completions` model
scores our own multiple-choice task (tests/assets/lmeval) through the server with the accuracy and the per-question
choices of `llmft eval` on the same questions; its `local-chat-completions` model runs a generation task whose answers
are the server's greedy answers; the official `openai` client's `completions.create` with echo, logprobs, n, stop and
batched prompts, checked against the model's own log-softmax; bad requests are 400s naming the field."""
import csv, json, os, subprocess, sys, time
from pathlib import Path
import openai
import pytest
from conftest import ROOT, cli, start_api, stop_api

ASSETS = ROOT / 'tests' / 'assets' / 'lmeval'
BIN = Path(sys.executable).parent
BENCH = 'llmftmc'    # the benchmark's name in `llmft eval`'s task folder
NAMES = {'geography': 'world geography', 'science': 'basic science'}
GEN = dict(max_tokens=8, stop=['\n\n'])   # llmft_gen.yaml's generation settings


def questions() -> list[dict]:
    "The 20 questions of tests/assets/lmeval, as `llmft eval` reads its rows (choice letters in `_letters`)."
    rows = [json.loads(l) for l in (ASSETS / 'questions.jsonl').read_text().splitlines() if l.strip()]
    return [{**r, '_letters': 'ABCD'} for r in rows]


def write_bench(folder: Path, subjects) -> Path:
    "The questions of `subjects` as an MMLU-style benchmark folder `llmft eval` reads: mapping.json and test CSVs."
    d = folder / BENCH
    (d / 'test').mkdir(parents=True)
    (d / 'mapping.json').write_text(json.dumps({s: {'name': NAMES[s], 'category': 'Other'} for s in subjects}))
    for s in subjects:
        with open(d / 'test' / f'{s}.csv', 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['question', 'A', 'B', 'C', 'D', 'answer'])
            w.writerows([q['question'], q['A'], q['B'], q['C'], q['D'], q['answer']]
                        for q in questions() if q['subject'] == s)
    return folder


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    return tmp_path_factory.mktemp('completions')


@pytest.fixture(scope='module')
def run(work, tiny_llama):
    """A tiny Llama fine-tuned (full) on the geography half of the questions, the prompts `llmft eval` renders: it
    learns those answers (and to end after the letter), the science half stays near chance: an accuracy between."""
    from llmft.eval.tasks import task_dataset
    from llmft.train.tuner import run_exp
    name = task_dataset(write_bench(work / 'train', ['geography']), f'{BENCH}_test', work / 'data')
    out = work / 'run'
    run_exp(dict(model_name_or_path=tiny_llama, stage='sft', do_train=True, finetuning_type='full', dataset=name,
                 dataset_dir=str(work / 'data'), template='llama3', cutoff_len=256, output_dir=str(out),
                 overwrite_output_dir=True, per_device_train_batch_size=10, learning_rate=1e-2, max_steps=20,
                 lr_scheduler_type='constant', logging_steps=10, report_to='none', save_strategy='no',
                 disable_gradient_checkpointing=True, seed=0))
    return out


@pytest.fixture(scope='module')
def server(run, work):
    "`llmft api RUN` in its own process: (base url, process, its log file)."
    url, p, log = start_api([run, 'do_sample=false'], work / 'server.log',
                            {'API_KEY': 'sk-test', 'API_MODEL_NAME': 'tiny'})
    yield url, p, log
    stop_api(p)


@pytest.fixture(scope='module')
def client(server):
    return openai.OpenAI(base_url=server[0], api_key='sk-test', max_retries=0, timeout=120)


@pytest.fixture(scope='module')
def chat_model(run):
    from llmft.infer.chat import ChatModel
    return ChatModel(str(run), do_sample=False)


def lm_eval(work, server, model: str, url: str, task: str, *extra, batch_size=1) -> tuple[dict, list[dict]]:
    "Run lm-eval's CLI against the server in `work` (where the task's jsonl is): (results of `task`, its samples)."
    out = work / f'lmeval-{task}'
    env = {**os.environ, 'OPENAI_API_KEY': 'sk-test', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
           'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_CACHE': str(work / 'hf-datasets'),
           'TOKENIZERS_PARALLELISM': 'false'}
    args = ','.join(['model=tiny', f'base_url={server[0]}/{url}', *extra])
    cmd = [str(BIN / 'lm_eval'), '--model', model, '--model_args', args, '--include_path', str(ASSETS), '--tasks', task,
           '--output_path', str(out), '--log_samples', '--batch_size', str(batch_size)]
    if model == 'local-chat-completions': cmd.append('--apply_chat_template')
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:], server[2].read_text()[-3000:])
    results = json.loads(max(out.rglob('results_*.json')).read_text())['results'][task]
    samples = [json.loads(l) for l in max(out.rglob(f'samples_{task}_*.jsonl')).read_text().splitlines() if l.strip()]
    return results, sorted(samples, key=lambda s: s['doc_id'])


@pytest.fixture(scope='module')
def llmft_eval(run, work):
    "`llmft eval` of the run on all 20 questions: its results.json."
    r = cli('eval', run, f'task={BENCH}_test', f'task_dir={write_bench(work / "bench", list(NAMES))}', 'n_shot=0',
            'batch_size=8', f'save_dir={work / "eval"}')
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((work / 'eval' / 'results.json').read_text())


def test_lm_eval_scores_like_llmft_eval(run, work, server, llmft_eval):
    from llmft.eval.evaluator import Evaluator
    from llmft.eval.tasks import ShotSampler
    ev = Evaluator(str(run), task=f'{BENCH}_test', task_dir=str(work / 'bench'), n_shot=0)
    tok, rows = ev.tokenizer, []
    for subject in NAMES:
        for ids, q in zip(ev.prompts(subject, ShotSampler(0)), ev.task.questions[subject]):
            text = tok.decode(ids, skip_special_tokens=False)
            assert tok(text, add_special_tokens=False)['input_ids'] == ids   # lm-eval sends exactly llmft's prompt
            # lm-eval moves the prompt's trailing whitespace into the continuation: the letter stays one token
            whole = tok(text + 'A', add_special_tokens=False)['input_ids']
            assert whole[:len(ids)] == ids and whole[len(ids):] == ev.choice_ids('A')
            rows.append({'prompt': text, 'gold': 'ABCD'.index(q['answer'])})
    (work / 'llmft_mc.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    t = time.time()
    results, samples = lm_eval(work, server, 'local-completions', 'completions', 'llmft_mc', f'tokenizer={run}',
                               'tokenizer_backend=huggingface', 'tokenized_requests=True', 'max_retries=1',
                               batch_size=8)
    took = time.time() - t
    acc, average = results['acc,none'], llmft_eval['average'] / 100
    assert acc == pytest.approx(average, abs=1e-9) and 0 < acc < 1, (acc, average)
    letters = ['ABCD'[max(range(4), key=lambda i: float(s['filtered_resps'][i][0]))] for s in samples]
    assert letters == [p for s in NAMES for p in llmft_eval['predictions'][s]], letters
    assert len(samples) == 20 and took < 120, took


def test_lm_eval_chat_generation_is_the_servers_greedy_answer(work, server, client, llmft_eval):
    from llmft.eval.tasks import EVAL_TEMPLATES
    rows = [{'content': EVAL_TEMPLATES['en'].format_example(q, [], NAMES[q['subject']])[0]['content'],
             'answer': q['answer']} for q in questions()]
    (work / 'llmft_gen.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    results, samples = lm_eval(work, server, 'local-chat-completions', 'chat/completions', 'llmft_gen',
                               'max_retries=1')
    got = [s['resps'][0][0] for s in samples]
    want = [client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': r['content']}],
                                           temperature=0, **GEN).choices[0].message.content for r in rows]
    assert got == want, (got, want)
    right = sum(g.strip() == r['answer'] for g, r in zip(got, rows)) / len(rows)
    assert results['exact_match,none'] == pytest.approx(right), (results, got)
    # the run answers with a letter; where it does, it is the letter `llmft eval` reads from the logits
    predicted = [p for s in NAMES for p in llmft_eval['predictions'][s]]
    letters = [(g, p) for g, p in zip(got, predicted) if g in ('A', 'B', 'C', 'D')]
    assert len(letters) >= 15 and all(g == p for g, p in letters), list(zip(got, predicted))


def mc_prompt(chat_model, q: dict) -> list[int]:
    "The prompt ids `llmft eval` asks question `q` with (no shots)."
    from llmft.eval.tasks import EVAL_TEMPLATES
    conv = EVAL_TEMPLATES['en'].format_example(q, [], NAMES[q['subject']])
    return chat_model.template.encode_oneturn(chat_model.tokenizer, conv)[0]


def test_openai_client_echo_logprobs_equal_the_models(client, chat_model):
    import torch
    tok, model = chat_model.tokenizer, chat_model.engine.model
    q = questions()[1]   # a geography question: the run answers a letter and ends
    prompt, head = mc_prompt(chat_model, q), chat_model.tokenizer.decode(mc_prompt(chat_model, q))
    r = client.completions.create(model='tiny', prompt=prompt, max_tokens=4, temperature=0, echo=True, logprobs=3)
    c, lp = r.choices[0], r.choices[0].logprobs
    n = len(lp.tokens)
    with torch.no_grad(): ref = model(torch.tensor([prompt])).logits[0].log_softmax(-1)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and n > len(prompt)
    assert lp.tokens[:len(prompt)] == [tok.decode([t]) for t in prompt]
    assert lp.token_logprobs[1:len(prompt)] == pytest.approx([ref[i - 1, t].item() for i, t in enumerate(prompt) if i],
                                                             abs=1e-4)
    assert c.text.startswith(head) and lp.text_offset[len(prompt)] == len(head)
    assert [c.text[o:o + len(t)] for o, t in zip(lp.text_offset, lp.tokens)][:len(prompt)] == lp.tokens[:len(prompt)]
    assert all(len(d) >= 3 and max(d.values()) >= v for d, v in zip(lp.top_logprobs[1:], lp.token_logprobs[1:]))
    # the answer chat gives, the end token it stopped at listed last and counted
    answer = chat_model.chat([], prompt=prompt, max_new_tokens=4)[0]
    assert c.text == head + answer.text and answer.text in ('A', 'B', 'C', 'D'), (c.text[len(head):], answer.text)
    assert c.finish_reason == answer.finish_reason == 'stop'
    assert lp.tokens[-1] == '<|eot_id|>'
    assert r.usage.completion_tokens == n - len(prompt) == answer.completion_tokens + 1
    assert r.usage.prompt_tokens == len(prompt)
    # no echo: the answer's tokens alone, offsets in the answer's text
    plain = client.completions.create(model='tiny', prompt=prompt, max_tokens=4, temperature=0, logprobs=0).choices[0]
    assert plain.text == answer.text and plain.logprobs.tokens == lp.tokens[len(prompt):]
    assert plain.logprobs.text_offset[0] == 0
    assert plain.logprobs.token_logprobs == pytest.approx(lp.token_logprobs[len(prompt):], abs=1e-5)
    assert all(len(d) == 1 for d in plain.logprobs.top_logprobs)


def test_openai_client_batch_n_stop_and_score_only(client, chat_model):
    qs = questions()[:2]
    prompts = [mc_prompt(chat_model, q) for q in qs]
    r = client.completions.create(model='tiny', prompt=prompts, max_tokens=6, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for i, p in enumerate(prompts):
        alone = client.completions.create(model='tiny', prompt=p, max_tokens=6, temperature=0).choices[0].text
        assert [c.text for c in r.choices[2 * i:2 * i + 2]] == [alone, alone] and alone in 'ABCD' and alone
    assert r.usage.prompt_tokens == sum(map(len, prompts)) and r.usage.completion_tokens == 4 * 2  # letter, end
    # texts in, sampled answers (min_tokens keeps the run from ending at once): a seed repeats them
    texts = ['The largest island of the Mediterranean', 'Which planet is closest to the Sun?']
    kw = dict(model='tiny', max_tokens=6, temperature=1.5, extra_body={'min_tokens': 6})
    sampled = client.completions.create(prompt=texts, n=3, seed=3, **kw)
    again = client.completions.create(prompt=texts, n=3, seed=3, **kw)
    other = client.completions.create(prompt=texts, n=3, seed=4, **kw)
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices] != [c.text for c in other.choices]
    lens = [len(chat_model.tokenizer(t, add_special_tokens=False)['input_ids']) for t in texts]
    assert sampled.usage.prompt_tokens == sum(lens) and sampled.usage.completion_tokens == 6 * 6
    # a stop string ends the text before it
    full = client.completions.create(prompt=texts[0], seed=5, **kw).choices[0]
    assert len(full.text) >= 5 and full.finish_reason == 'length', full
    cut = client.completions.create(prompt=texts[0], seed=5, stop=[full.text[3:5]], **kw).choices[0]
    assert (cut.text, cut.finish_reason) == (full.text[:full.text.index(full.text[3:5])], 'stop')
    # max_tokens 0 with echo scores the prompt only: token ids in, the prompt's tokens out
    ids = chat_model.tokenizer(texts[1], add_special_tokens=False)['input_ids']
    score = client.completions.create(model='tiny', prompt=[ids, ids[:3]], max_tokens=0, echo=True, logprobs=1)
    assert [len(c.logprobs.tokens) for c in score.choices] == [len(ids), 3]
    assert score.choices[0].text == texts[1] and score.choices[0].finish_reason == 'length'
    assert score.choices[1].logprobs.token_logprobs == pytest.approx(score.choices[0].logprobs.token_logprobs[:3],
                                                                     abs=1e-4)
    assert score.usage.completion_tokens == 0 and score.usage.prompt_tokens == len(ids) + 3


@pytest.mark.parametrize('body, param, words', [
    ({'prompt': [1, 2, 100000]}, 'prompt', 'token id 100000 is outside the vocabulary'),
    ({'prompt': [[1, 2], []]}, 'prompt', 'prompt[1] is empty'),
    ({'prompt': ''}, 'prompt', 'prompt[0] is an empty text'),
    ({'prompt': 'Hi', 'suffix': ' there'}, 'suffix', 'suffix (text after the insertion) is not supported'),
    ({'prompt': 'Hi', 'stream': True}, 'stream', 'stream is not supported on /v1/completions'),
    ({'prompt': 'Hi', 'logprobs': 25}, 'logprobs', 'logprobs must be an integer from 0 to 20'),
    ({'prompt': 'Hi', 'max_tokens': 0}, 'max_tokens', 'allowed only with echo'),
    ({'prompt': 'Hi', 'temperature': 5}, 'temperature', 'temperature must be between 0 and 2'),
    ({'prompt': 'Hi', 'n': 0}, 'n', 'n must be an integer from 1 to 16'),
    ({'prompt': 'Hi', 'stop': ['']}, 'stop', 'stop strings must not be empty'),
    ({'prompt': 'Hi', 'max_tokens': 4000}, 'max_tokens', "exceeds this model's context of 2048 tokens"),
])
def test_bad_requests_are_named(client, body, param, words):
    with pytest.raises(openai.BadRequestError) as e:
        if body.get('stream'): list(client.completions.create(model='tiny', **body))
        else: client.completions.create(model='tiny', **body)
    err = e.value.body
    assert e.value.status_code == 400 and err['param'] == param and words in err['message'], err

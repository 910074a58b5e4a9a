"""GGUF export proven in llama.cpp itself (issue 35): a real LoRA SFT run of the tiny Llama (llama3 template) and of the
tiny Qwen2 (qwen template), merged by `run_export`, written by `write_gguf` as f32 / bf16 / f16 / q8_0 / q4_0 and loaded
by llama.cpp through llama-cpp-python. llama.cpp's logits equal the transformers model's within `LOGIT_TOL`, its greedy
generations equal transformers' token for token (f32 / bf16 / f16), its tokenizer cuts text as the run's tokenizer does,
the quantized files' perplexity on held-out demo text stays within `PPL_MARGIN` of f16's, the prompt llama.cpp renders
from the embedded chat template is our template's prompt for one- and two-turn conversations with a system message,
and generation stops at the template's stop token without showing it. transformers' own GGUF loader (`gguf_check`)
reads the same files back and agrees with llama.cpp. Every test here is slow (two short trainings, then llama.cpp)."""
import json, math
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
import torch
from conftest import ROOT, cli

pytestmark = pytest.mark.slow

INSTALL = ('llama-cpp-python is not installed: the GGUF tests run the exported files in llama.cpp itself. It builds '
           'llama.cpp from source (7 CPU-minutes: 5-20 minutes on 2 cores): '
           'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF" '
           '.venv/bin/pip install llama-cpp-python==0.3.36')
TEMPLATE = {'llama': 'llama3', 'qwen2': 'qwen'}
TYPES = {'llama': ('f32', 'bf16', 'f16', 'q8_0', 'q4_0'), 'qwen2': ('f32', 'f16', 'q8_0')}
# max |logit difference| to transformers measured on the tiny models (llama / qwen2): f32 2.3e-6 / 3.0e-6 (llama.cpp's
# KV cache in f32; its default f16 cache alone gives 8e-4 / 1.6e-3), bf16 1.8e-2, f16 2.7e-3 / 7.8e-3
LOGIT_TOL = {'f32': 1e-4, 'bf16': 0.1, 'f16': 3e-2}
# held-out perplexity relative to the f16 file's, measured: q8_0 +0.03% / +0.15%, q4_0 +0.8%
PPL_MARGIN = {'q8_0': 0.01, 'q4_0': 0.05}
N_GEN = 16
PROMPTS = ['Add the two numbers. 51 and 99', 'Who are you? Tell me in a few words.', 'Hi',
           'The capital of France is Paris.\nThe capital of Peru is', "It's 2024: we've 1234 tokens, don't we?"]
SYSTEM = {'role': 'system', 'content': 'You are a concise assistant.'}
CONVS = {'one-turn': [SYSTEM, {'role': 'user', 'content': 'Add the two numbers. 12 and 30'}],
         'two-turn': [SYSTEM, {'role': 'user', 'content': 'Hello!'},
                      {'role': 'assistant', 'content': 'Hello! How can I help you today?'},
                      {'role': 'user', 'content': 'What is the capital of Peru?'}]}


def llama_cpp():
    "The llama_cpp module, or a failure that says how to install it (never a silent skip)."
    try: import llama_cpp
    except ImportError as e: pytest.fail(f'{INSTALL} ({e})', pytrace=False)
    return llama_cpp


def train_cfg(arch, out):
    "A short LoRA SFT on the demo data that a tiny model learns to answer from (and to end with the stop token)."
    from llmft.testing import tiny_model
    return dict(model_name_or_path=str(tiny_model(arch)), stage='sft', do_train=True, finetuning_type='lora',
                lora_target='all', dataset='alpaca_demo', dataset_dir=str(ROOT / 'data'), template=TEMPLATE[arch],
                cutoff_len=128, max_samples=8, output_dir=str(out), overwrite_output_dir=True,
                per_device_train_batch_size=4, learning_rate=1e-2, max_steps=40, logging_steps=10, report_to='none',
                save_strategy='no', disable_gradient_checkpointing=True, seed=0)


def held_out():
    "Demo texts the run did not train on (it saw the first 8 alpaca_demo rows): the perplexity texts."
    rows = json.loads((ROOT / 'data' / 'alpaca_demo.json').read_text())[200:232]
    return [f"{r['instruction']} {r['input']}".strip() + '\n' + r['output'] for r in rows]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    "Per arch: the run's merged export (model, tokenizer, template, stop ids) and one GGUF file per type."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from llmft.data.template import stop_ids
    from llmft.data.templates import get_template
    from llmft.export import run_export
    from llmft.export_gguf import write_gguf
    from llmft.train.tuner import run_exp
    root, out = tmp_path_factory.mktemp('gguf'), {}
    for arch in TYPES:
        run = run_exp(train_cfg(arch, root / 'runs' / arch))
        folder = run_export(run.output_dir, export_dir=str(root / 'merged' / arch))
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        template = get_template(TEMPLATE[arch], tok)
        stops = stop_ids(template, tok)
        files = {q: write_gguf(model, tok, root / 'gguf' / f'tiny-{arch}-{q}.gguf', qtype=q, stop_ids=stops,
                               name=f'tiny-{arch}') for q in TYPES[arch]}
        out[arch] = SimpleNamespace(run=run, folder=Path(folder), model=model, tok=tok, template=template,
                                    stops=stops, files=files)
    return out


_LOADED = {}

def load(path, exact:bool=False):
    ("The GGUF file in llama.cpp (cached): logits of every position kept, 2 threads; `exact`: the KV cache in f32 "
     "(llama.cpp's default f16 cache rounds the attention keys and values of even an f32 file).")
    lc, key = llama_cpp(), (str(path), exact)
    kv = dict(type_k=lc.GGML_TYPE_F32, type_v=lc.GGML_TYPE_F32) if exact else {}
    if key not in _LOADED:
        _LOADED[key] = lc.Llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False, n_threads=2, seed=0,
                                **kv)
    return _LOADED[key]


@pytest.fixture(scope='module', autouse=True)
def close_models():
    "Free llama.cpp's models before the interpreter exits (their finalizers fail during shutdown)."
    yield
    for llm in _LOADED.values(): llm.close()
    _LOADED.clear()


def cpp_logits(llm, ids) -> np.ndarray:
    "llama.cpp's logits at every position of `ids`, evaluated from an empty context."
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


def hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad(): return model(torch.tensor([ids])).logits[0].double().numpy()


def nll(logits:np.ndarray, ids) -> tuple[float, int]:
    "Summed negative log-likelihood of `ids[1:]` under `logits` (one row per position), and the number of tokens."
    x = logits[:-1] - logits[:-1].max(-1, keepdims=True)
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return -float(lp[np.arange(len(ids) - 1), ids[1:]].sum()), len(ids) - 1


def ppl(logits_of, seqs) -> float:
    tot = [nll(logits_of(ids), ids) for ids in seqs]
    return math.exp(sum(t for t, _ in tot) / sum(n for _, n in tot))


def prompt_ids(b, conv) -> list[int]:
    "llmft's own prompt for a conversation ending with a user turn (as `ChatModel.prompt` builds it)."
    return b.template.encode_oneturn(b.tok, conv[1:] + [{'role': 'assistant', 'content': ''}], conv[0]['content'])[0]


def cases(*types, arch=None):
    return [(a, q) for a in TYPES if arch in (None, a) for q in TYPES[a] if q in types]


def test_llama_cpp_is_installed():
    "The dev dependency is there (the other tests would fail with the same hint)."
    assert llama_cpp().__version__


@pytest.mark.parametrize('arch', TYPES)
def test_tokenizer_and_metadata(built, arch):
    "llama.cpp cuts text into the run tokenizer's ids, knows its special tokens and carries its chat template."
    b = built[arch]
    llm = load(b.files['f16'])
    lc = llama_cpp()
    assert llm.n_vocab() == b.model.config.vocab_size
    for text in PROMPTS + held_out()[:8]:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == b.tok(text)['input_ids'], text
    assert llm.metadata['tokenizer.chat_template'] == b.tok.chat_template
    assert llm.token_eos() == b.tok.eos_token_id
    if b.tok.bos_token_id is not None: assert llm.token_bos() == b.tok.bos_token_id
    assert all(lc.llama_vocab_is_eog(llm._model.vocab, i) for i in b.stops), b.stops
    for text in ('<|eot_id|>', '<|im_end|>', '<|im_start|>', '<|start_header_id|>'):
        if text in b.tok.get_vocab():   # a special token is one id when parsed as special
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == [b.tok.convert_tokens_to_ids(text)]


@pytest.mark.parametrize('arch,qtype', cases('f32', 'bf16', 'f16'))
def test_logits_match_transformers(built, arch, qtype):
    "Fixed prompts: llama.cpp's logits at every position equal the transformers model's within `LOGIT_TOL`."
    b = built[arch]
    llm = load(b.files[qtype], exact=qtype == 'f32')
    for text in PROMPTS:
        ids = b.tok(text)['input_ids']
        diff = np.abs(cpp_logits(llm, ids) - hf_logits(b.model, ids)).max()
        assert diff < LOGIT_TOL[qtype], (text, diff)


@pytest.mark.parametrize('arch,qtype', cases('f32', 'bf16', 'f16'))
def test_greedy_generation_matches_transformers(built, arch, qtype):
    "Greedy decoding: llama.cpp's tokens equal `generate(do_sample=False)`'s, token for token, up to the stop token."
    b = built[arch]
    llm, lc, compared = load(b.files[qtype], exact=qtype == 'f32'), llama_cpp(), 0
    for conv in CONVS.values():
        ids = prompt_ids(b, conv)
        with torch.no_grad():
            want = b.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=N_GEN,
                                    eos_token_id=b.stops, pad_token_id=b.tok.pad_token_id)[0, len(ids):].tolist()
        got = []
        for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            got.append(t)
            if lc.llama_vocab_is_eog(llm._model.vocab, t) or len(got) == N_GEN: break
        assert got == want, (b.tok.decode(got), b.tok.decode(want))
        compared += len(want)
    assert compared >= 8, compared   # a comparison of a token or two would prove little


@pytest.mark.parametrize('arch,qtype', cases('q8_0', 'q4_0'))
def test_quantized_perplexity_within_margin_of_f16(built, arch, qtype):
    "Held-out demo text: a quantized file's perplexity in llama.cpp stays within `PPL_MARGIN` of the f16 file's."
    b = built[arch]
    seqs = [b.tok(t)['input_ids'] for t in held_out()]
    if not hasattr(b, 'ppl16'):   # the references, once per arch
        b.ppl16 = ppl(lambda ids: cpp_logits(load(b.files['f16']), ids), seqs)
        b.ppl_hf = ppl(lambda ids: hf_logits(b.model, ids), seqs)
    p16, p_hf = b.ppl16, b.ppl_hf
    pq = ppl(lambda ids: cpp_logits(load(b.files[qtype]), ids), seqs)
    assert abs(p16 / p_hf - 1) < 1e-3, (p16, p_hf)       # f16 is the model
    assert abs(pq / p16 - 1) < PPL_MARGIN[qtype], (qtype, pq, p16)
    assert pq != p16                                      # the file is quantized, not f16 under another name


@pytest.mark.parametrize('arch', TYPES)
@pytest.mark.parametrize('conv', CONVS)
def test_embedded_template_renders_our_prompt(built, arch, conv):
    "The chat template in the file, rendered as llama-cpp-python does and tokenized by llama.cpp, is our prompt."
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    b, msgs = built[arch], CONVS[conv]
    llm = load(b.files['f16'])
    want = prompt_ids(b, msgs)
    bos, eos = (llm._model.token_get_text(i) if i != -1 else '' for i in (llm.token_bos(), llm.token_eos()))
    fmt = Jinja2ChatFormatter(template=llm.metadata['tokenizer.chat_template'], eos_token=eos, bos_token=bos)
    text = fmt(messages=msgs).prompt
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == want, text
    llm.create_chat_completion(msgs, max_tokens=1, temperature=0.0)   # what the chat API feeds llama.cpp
    assert list(llm.input_ids[:len(want)]) == want and llm.chat_format == 'chat_template.default'


@pytest.mark.parametrize('arch', TYPES)
def test_generation_stops_at_the_stop_token(built, arch):
    "A trained answer ends with the template's stop token: llama.cpp stops there (reason 'stop') and never shows it."
    b = built[arch]
    llm = load(b.files['f16'])
    stop_texts = [b.tok.convert_ids_to_tokens(i) for i in b.stops]
    conv = [SYSTEM, {'role': 'user', 'content': 'Add the two numbers. 51 and 99'}]
    ids = prompt_ids(b, conv)
    with torch.no_grad():
        hf = b.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=64, eos_token_id=b.stops,
                              pad_token_id=b.tok.pad_token_id)[0, len(ids):].tolist()
    assert hf[-1] in b.stops, b.tok.decode(hf)       # the trained model ends its answer: the case is real
    answer = b.tok.decode(hf[:-1])
    res = llm.create_completion(ids, max_tokens=64, temperature=0.0, stop=[])
    assert res['choices'][0]['finish_reason'] == 'stop' and res['choices'][0]['text'] == answer, res
    chat = llm.create_chat_completion(conv, max_tokens=64, temperature=0.0)['choices'][0]
    assert chat['finish_reason'] == 'stop' and chat['message']['content'] == answer, chat
    assert not any(s in chat['message']['content'] for s in stop_texts)


@pytest.mark.parametrize('arch,qtype', [(a, q) for a in TYPES for q in TYPES[a]])
def test_transformers_gguf_loader_agrees(built, arch, qtype):
    ("transformers' own GGUF loader (`gguf_check`) reads each file back: its perplexity agrees with llama.cpp's on the "
     "same file, and its logits stay near the model's.")
    from llmft.export_gguf import gguf_check
    b, texts = built[arch], held_out()[:8]
    r = gguf_check(b.files[qtype], b.model, b.tok, texts)
    assert set(r) >= {'max_logit_diff', 'ppl', 'ppl_reference'}
    p_cpp = ppl(lambda ids: cpp_logits(load(b.files[qtype]), ids), [b.tok(t)['input_ids'] for t in texts])
    assert abs(r['ppl'] / p_cpp - 1) < 0.01, (r, p_cpp)
    if qtype in LOGIT_TOL: assert r['max_logit_diff'] < LOGIT_TOL[qtype], r


@pytest.mark.parametrize('arch', TYPES)
def test_llmft_export_writes_the_same_files(built, arch, tmp_path):
    ("`llmft export RUN export_format=gguf gguf_types=f16,q8_0` (the CLI) writes both files beside the merged folder "
     "and a Modelfile that names the first; llama.cpp computes with them exactly what it computes with `write_gguf`'s.")
    b = built[arch]
    r = cli('export', b.run.output_dir, f'export_dir={tmp_path / "out"}', 'export_format=gguf', 'gguf_types=f16,q8_0')
    assert r.returncode == 0, r.stderr[-3000:]
    files = {q: tmp_path / 'out' / f'out-{q}.gguf' for q in ('f16', 'q8_0')}
    assert all(p.exists() for p in files.values()), sorted(p.name for p in (tmp_path / 'out').iterdir())
    mf = (tmp_path / 'out' / 'Modelfile').read_text()
    assert 'FROM ./out-f16.gguf\n' in mf
    assert all(f'PARAMETER stop "{b.tok.convert_ids_to_tokens(i)}"' in mf for i in b.stops), mf
    for q, p in files.items():
        llm = load(p)
        assert llm.metadata['tokenizer.chat_template'] == b.tok.chat_template
        for text in PROMPTS[:2]:
            ids = b.tok(text)['input_ids']
            np.testing.assert_array_equal(cpp_logits(llm, ids), cpp_logits(load(b.files[q]), ids))

"""Seeded conversations, datasets and tokenizers for the LLaMA-Factory parity harness (`bench/parity.py`).

Run in llmft's venv by `bench/parity.py`; LLaMA-Factory's side only reads the files written here.
"""

from __future__ import annotations
import json, random
from pathlib import Path

WORDS = (
    'the model learns a small answer from each question and we check every token of it with care while '
    'data flows through templates processors and collators into batches of ids labels masks'
).split()
CHINESE = ['你好', '世界', '模型', '训练', '数据', '问题', '回答', '谢谢', '天气', '今天']
EMOJI = ['😀', '🚀', '🌍', '✨', '👍🏽', '🇫🇷']
SLOTS = ['{{idx}}', '{{content}}', '{{name}}']
TOOLS = [
    {
        'name': 'get_weather',
        'description': 'Weather of a city',
        'parameters': {
            'type': 'object',
            'properties': {'city': {'type': 'string', 'description': 'The city'}},
            'required': ['city'],
        },
    },
    {
        'name': 'add',
        'description': 'Add two numbers',
        'parameters': {
            'type': 'object',
            'properties': {'a': {'type': 'number'}, 'b': {'type': 'number'}},
            'required': ['a', 'b'],
        },
    },
]
TAGS = dict(
    role_tag='role',
    content_tag='content',
    user_tag='user',
    assistant_tag='assistant',
    observation_tag='observation',
    function_tag='function_call',
    system_tag='system',
)


def text(rng: random.Random, n: int, slots: bool = False) -> str:
    "A sentence of `n` pieces: English words, some Chinese, emoji, and (with `slots`) `{{...}}` text."
    pieces = []
    for _ in range(n):
        r = rng.random()
        if r < 0.08:
            pieces.append(rng.choice(CHINESE))
        elif r < 0.12:
            pieces.append(rng.choice(EMOJI))
        elif slots and r < 0.16:
            pieces.append(rng.choice(SLOTS))
        else:
            pieces.append(rng.choice(WORDS))
    s = ' '.join(pieces)
    return s[0].upper() + s[1:] + rng.choice(['.', '?', '!', '\n\nDone.'])


def answer(rng: random.Random) -> str:
    "A short answer, or (one in six) a long one that truncates at small cutoffs."
    return text(rng, rng.randint(60, 160) if rng.random() < 1 / 6 else rng.randint(3, 14), slots=True)


def tool_turns(rng: random.Random) -> list[dict]:
    "user -> function call -> observation -> assistant."
    city = rng.choice(['Paris', 'Tokyo', '北京'])
    call = {'name': 'get_weather', 'arguments': {'city': city}}
    return [
        {'role': 'user', 'content': f'Weather in {city}?'},
        {'role': 'function_call', 'content': json.dumps(call, ensure_ascii=False)},
        {'role': 'observation', 'content': json.dumps({'temperature': rng.randint(-5, 30)})},
        {'role': 'assistant', 'content': text(rng, rng.randint(3, 10))},
    ]


def conversation(rng: random.Random, i: int) -> dict:
    "One sharegpt row: messages (maybe a system turn), maybe a system column, maybe tools; ends with an assistant turn."
    row, msgs = {}, []
    kind = i % 7  # every kind of system placement appears regularly
    if kind in (1, 3):
        msgs.append({'role': 'system', 'content': text(rng, rng.randint(3, 8), slots=True)})
    if kind in (2, 3):
        row['system'] = 'Column: ' + text(rng, rng.randint(3, 8))
    if kind == 4:
        row['tools'] = json.dumps(TOOLS, ensure_ascii=False)
        msgs += tool_turns(rng)
    for _ in range(rng.choice([1, 1, 2, 3])):
        msgs += [
            {'role': 'user', 'content': text(rng, rng.randint(3, 20), slots=True)},
            {'role': 'assistant', 'content': answer(rng)},
        ]
    if kind == 5 and len(msgs) > 2:
        msgs[1]['content'] = ''  # an empty answer in the history
    row['messages'] = msgs
    return row


def make_datasets(out: Path, n: int = 60, seed: int = 0) -> dict:
    "Write sft / pref / kto / pt datasets and their `dataset_info.json` under `out`; returns the registry."
    rng, out = random.Random(seed), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sft = [conversation(rng, i) for i in range(n)]
    pref, kto = [], []
    for i, r in enumerate(sft):
        m = r['messages']
        pref.append(
            {
                **{k: v for k, v in r.items() if k != 'messages'},
                'messages': m[:-1],
                'chosen': m[-1],
                'rejected': {'role': 'assistant', 'content': answer(rng)},
            }
        )
        kto.append({**r, 'kto_tag': i % 3 != 0})
    pt = [{'text': text(rng, rng.randint(5, 200))} for _ in range(n)]
    files = {'parity_sft': sft, 'parity_pref': pref, 'parity_kto': kto, 'parity_pt': pt}
    for name, rows in files.items():
        (out / f'{name}.json').write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    conv_cols = dict(messages='messages', system='system', tools='tools')
    info = {
        'parity_sft': dict(file_name='parity_sft.json', formatting='sharegpt', columns=conv_cols, tags=TAGS),
        'parity_pref': dict(
            file_name='parity_pref.json',
            formatting='sharegpt',
            ranking=True,
            columns=dict(conv_cols, chosen='chosen', rejected='rejected'),
            tags=TAGS,
        ),
        'parity_kto': dict(
            file_name='parity_kto.json', formatting='sharegpt', columns=dict(conv_cols, kto_tag='kto_tag'), tags=TAGS
        ),
        'parity_pt': dict(file_name='parity_pt.json', columns={'prompt': 'text'}),
    }
    (out / 'dataset_info.json').write_text(json.dumps(info, indent=1))
    return info


# tokenizer variants: bos added by the tokenizer (Llama-style) or none (Qwen-style)
TOKENIZERS = {
    'bosful': dict(bos='<|begin_of_text|>', eos='<|end_of_text|>', pad=None, add_bos=True),
    'bosless': dict(bos=None, eos='<|endoftext|>', pad='<|endoftext|>', add_bos=False),
}


def make_tokenizer(out: Path, variant: str, specials: list[str], corpus: list[str], split: str = 'llama3'):
    """A byte-level BPE trained on `corpus` with every template family's special tokens, saved to `out`.

    `split` names the pre-tokenizer regex (`llmft.testing.SPLITS`): Llama 3's, or GPT-2's, which cuts text at other
    places, so that encoding a turn in pieces (LLaMA-Factory's slots) or whole (llmft) shows where it differs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from llmft.testing import pre_tokenizer

    spec = TOKENIZERS[variant]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(split)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=1500,
            min_frequency=2,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.add_special_tokens(list(dict.fromkeys(specials + [t for t in (spec['bos'], spec['eos'], spec['pad']) if t])))
    post = [processors.ByteLevel(trim_offsets=False)]
    if spec['add_bos']:
        post.append(
            processors.TemplateProcessing(
                single=f"{spec['bos']} $A",
                pair=f"{spec['bos']} $A {spec['bos']} $B",
                special_tokens=[(spec['bos'], tok.token_to_id(spec['bos']))],
            )
        )
    tok.post_processor = processors.Sequence(post)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec['bos'],
        eos_token=spec['eos'],
        pad_token=spec['pad'],
        model_max_length=100000,
    ).save_pretrained(out)
    return out


def lf_slot_rewrite(rows: list[dict]) -> list[dict]:
    """The rows as LLaMA-Factory 0.9.5 renders them: the first `{{idx}}` of each user message becomes its turn number.

    LLaMA-Factory fills a user slot's `{{content}}`, then its `{{idx}}`, so a user's own `{{idx}}` text is rewritten;
    llmft never touches message text (`data.fidelity`). llmft's side gets this rewritten copy, so that the comparison
    stays exact everywhere else."""
    out = []
    for r in rows:
        msgs = [dict(m) for m in r.get('messages', [])]
        start = 1 if msgs and msgs[0]['role'] == 'system' else 0
        for i, m in enumerate(msgs[start:]):
            if m['role'] == 'user':
                m['content'] = m['content'].replace('{{idx}}', str(i // 2), 1)
        out.append({**r, 'messages': msgs} if 'messages' in r else dict(r))
    return out


def write_llmft_copy(src: Path, dst: Path):
    "`src`'s datasets with `lf_slot_rewrite` applied, for llmft's side."
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob('*.json'):
        rows = json.loads(f.read_text())
        if f.name != 'dataset_info.json':
            rows = lf_slot_rewrite(rows)
        (dst / f.name).write_text(json.dumps(rows, ensure_ascii=False, indent=1))

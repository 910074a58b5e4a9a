"""Write how LLaMA-Factory renders the verification conversations through each of its templates (the text of every
prompt / answer pair, on one fixture tokenizer) to tests/assets/lf_template_renders.json: the specification that
llmft's templates without a published jinja template are checked against, in CI, where LLaMA-Factory is not installed.

    .lf-venv/bin/python tools/lf_template_renders.py TOKENIZER_DIR [template ...]
    .lf-venv/bin/python tools/lf_template_renders.py --slots TOKENIZER_DIR [template ...]

TOKENIZER_DIR is llmft's fixture tokenizer `llmft.testing.tiny_tokenizer_path('llama3')` (any byte-level tokenizer with
a bos and an eos would do: the texts are compared, not the ids).

With `--slots` it writes tests/assets/lf_template_slots.json instead: the elements (slots) LLaMA-Factory encodes one by
one for each message of the same conversations (a text, `{"token": name}` or `{"special": "bos_token"}`), so that a test
can encode them slot by slot, as LLaMA-Factory does, on any tokenizer (`tests/test_parity_bpe.py`).
"""
import json, sys
from pathlib import Path
import llamafactory
from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.data.template import TEMPLATES
from llamafactory.hparams import DataArguments
from transformers import AutoTokenizer

ASSETS = Path(__file__).resolve().parents[1] / 'tests/assets'
MESSAGES = [{'role': 'user', 'content': 'What is 2+3?'}, {'role': 'assistant', 'content': 'It is 5.'},
            {'role': 'user', 'content': 'And 2+4?'}, {'role': 'assistant', 'content': 'It is 6.'}]
SYSTEM = 'You are terse.'


def _cases():
    "The four verification cases: (name, messages, system)."
    for n in (1, 2):
        for system in (None, SYSTEM):
            yield f'{n} turn{"s" * (n > 1)}{", system" if system else ""}', MESSAGES[:2 * n], system


def renders(tokenizer_dir: str, name: str) -> dict:
    "{case: [[prompt text, answer text], ...]} for the four verification cases (1 / 2 turns, with / without system)."
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tpl = get_template_and_fix_tokenizer(tok, DataArguments(template=name))
    out = {}
    for case, msgs, system in _cases():
        pairs = tpl.encode_multiturn(tok, msgs, system)
        out[case] = [[tok.decode(p, skip_special_tokens=False), tok.decode(a, skip_special_tokens=False)]
                     for p, a in pairs]
    return out


def _element(e):
    "One slot element as JSON: a text, a token by name, or the tokenizer's bos / eos."
    if isinstance(e, str): return e
    if isinstance(e, dict): return {'token': e['token']}
    return {'special': sorted(e)[0]}


def slots(tokenizer_dir: str, name: str) -> dict:
    "{case: [[element, ...] per message]}: what LLaMA-Factory's `_convert_elements_to_ids` encodes, one by one."
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tpl = get_template_and_fix_tokenizer(tok, DataArguments(template=name))
    seen, convert = [], tpl._convert_elements_to_ids

    def record(t, elements):
        seen.append([_element(e) for e in elements])
        return convert(t, elements)

    tpl._convert_elements_to_ids = record
    out = {}
    for case, msgs, system in _cases():
        seen.clear()
        tpl.encode_multiturn(tok, msgs, system)
        out[case] = list(seen)
    return out


if __name__ == '__main__':
    args = sys.argv[1:]
    kind = 'slots' if '--slots' in args else 'renders'
    tokenizer_dir, *names = [a for a in args if a != '--slots']
    out = ASSETS / f'lf_template_{kind}.json'
    fn = slots if kind == 'slots' else renders
    doc = json.loads(out.read_text()) if out.exists() else {kind: {}}
    doc.update(llamafactory=llamafactory.__version__, messages=MESSAGES, system=SYSTEM)
    for name in names or sorted(TEMPLATES):
        try: doc[kind][name] = fn(tokenizer_dir, name)
        except Exception as e: print(f'{name}: {type(e).__name__}: {e}', file=sys.stderr)
    doc[kind] = dict(sorted(doc[kind].items()))
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    print(f"{len(doc[kind])} templates of LLaMA-Factory {llamafactory.__version__} -> {out}", file=sys.stderr)

"""Write how LLaMA-Factory renders the verification conversations through each of its templates (the text of every
prompt / answer pair, on one fixture tokenizer) to tests/assets/lf_template_renders.json: the specification that
llmft's templates without a published jinja template are checked against, in CI, where LLaMA-Factory is not installed.

    .lf-venv/bin/python tools/lf_template_renders.py TOKENIZER_DIR [template ...]

TOKENIZER_DIR is llmft's fixture tokenizer `llmft.testing.tiny_tokenizer_path('llama3')` (any byte-level tokenizer with
a bos and an eos would do: the texts are compared, not the ids).
"""
import json, sys
from pathlib import Path
import llamafactory
from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.data.template import TEMPLATES
from llamafactory.hparams import DataArguments
from transformers import AutoTokenizer

OUT = Path(__file__).resolve().parents[1] / 'tests/assets/lf_template_renders.json'
MESSAGES = [{'role': 'user', 'content': 'What is 2+3?'}, {'role': 'assistant', 'content': 'It is 5.'},
            {'role': 'user', 'content': 'And 2+4?'}, {'role': 'assistant', 'content': 'It is 6.'}]
SYSTEM = 'You are terse.'


def renders(tokenizer_dir: str, name: str) -> dict:
    "{case: [[prompt text, answer text], ...]} for the four verification cases (1 / 2 turns, with / without system)."
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tpl = get_template_and_fix_tokenizer(tok, DataArguments(template=name))
    out = {}
    for n in (1, 2):
        for system in (None, SYSTEM):
            pairs = tpl.encode_multiturn(tok, MESSAGES[:2 * n], system)
            case = f'{n} turn{"s" * (n > 1)}{", system" if system else ""}'
            out[case] = [[tok.decode(p, skip_special_tokens=False), tok.decode(a, skip_special_tokens=False)]
                         for p, a in pairs]
    return out


if __name__ == '__main__':
    tokenizer_dir, names = sys.argv[1], sys.argv[2:] or sorted(TEMPLATES)
    doc = json.loads(OUT.read_text()) if OUT.exists() else {'renders': {}}
    doc.update(llamafactory=llamafactory.__version__, messages=MESSAGES, system=SYSTEM)
    for name in names:
        try: doc['renders'][name] = renders(tokenizer_dir, name)
        except Exception as e: print(f'{name}: {type(e).__name__}: {e}', file=sys.stderr)
    doc['renders'] = dict(sorted(doc['renders'].items()))
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    print(f"{len(doc['renders'])} templates of LLaMA-Factory {llamafactory.__version__} -> {OUT}", file=sys.stderr)

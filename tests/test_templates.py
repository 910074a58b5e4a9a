"""Templates on tool-calling data, tokenized by llmft's pipeline, equal Qwen's published templates token for token:
our own fixture (`tests/assets/toolcall`, always), and LLaMA-Factory's glaive tool-call demo where
`../shared/reference-data` is."""
import dataclasses, json, tempfile
import pytest
from conftest import LF_DEMO, ROOT

OURS = ('toolcall_demo', ROOT / 'tests/assets/toolcall', 60, 12)          # name, folder, rows, exact matches at least
GLAIVE = ('glaive_toolcall_en_demo', LF_DEMO, 300, 30)
DATASETS = [OURS] + ([GLAIVE] if (LF_DEMO / 'glaive_toolcall_en_demo.json').exists() else [])


def _convert(conv):
    "A glaive sharegpt conversation as llmft messages (roles user / assistant / function / observation)."
    roles = {'human': 'user', 'gpt': 'assistant', 'function_call': 'function', 'observation': 'observation'}
    return [{'role': roles[m['from']], 'content': m['value']} for m in conv]


@pytest.mark.parametrize('data', DATASETS, ids=[d[0] for d in DATASETS])
@pytest.mark.parametrize('template,fixture,kwargs', [('qwen', 'qwen', {}), ('qwen3', 'qwen3', dict(enable_thinking=False))])
def test_toolcall_matches_published_template(template, fixture, kwargs, data):
    name, folder, n_rows, min_exact = data
    from llmft.data.pipeline import get_dataset
    from llmft.data.templates import get_template, jinja_ids
    from llmft.hparams.parser import get_train_args
    from llmft.testing import family_tokenizer
    tok = family_tokenizer('qwen3', fixture)
    tpl = get_template(template, tok)
    if 'enable_thinking' in kwargs: tpl = dataclasses.replace(tpl, enable_thinking=kwargs['enable_thinking'])
    a = get_train_args(dict(model_name_or_path='m', dataset=name, dataset_dir=str(folder), template=template,
                            cutoff_len=32768, output_dir=tempfile.mkdtemp(), do_train=True, data_check='warn',
                            enable_thinking=kwargs.get('enable_thinking', True)))
    ds = get_dataset(tpl, a.data, a.training, 'sft', tok)['train_dataset']
    raw = json.loads((folder / f'{name}.json').read_text())
    assert len(ds) == len(raw) == n_rows
    exact, multi = 0, 0
    for row, ex in zip(ds, raw):
        msgs = _convert(ex['conversations'])
        tools = json.loads(ex['tools']) if ex.get('tools') else None   # bare functions in the data; served, they arrive OpenAI-wrapped
        tools = [t if t.get('type') == 'function' else {'type': 'function', 'function': t} for t in tools] if tools else None
        theirs = jinja_ids(tok, msgs, None, tools, **kwargs)
        if len(msgs) > 2 and fixture == 'qwen3':        # Qwen3 drops thought blocks from answers before the last user message
            multi += 1; continue
        assert row['input_ids'] == theirs, tok.decode(row['input_ids'])
        exact += 1
        # trained tokens: the function calls and answers, never the tool definitions or observations
        trained = tok.decode([t for t, l in zip(row['input_ids'], row['labels']) if l != -100])
        assert '<tools>' not in trained and '<tool_response>' not in trained
    print(template, 'exact:', exact, 'multi-turn qwen3 (history differs by design):', multi)
    assert exact >= min_exact, (exact, multi)

"""Bad input through the real `llmft train` command: a number out of its range and a bad JSON cell are user errors,
reported in one line that names the key and value, or the file, row and column (issue 29, item 6)."""
import json
import pytest
from conftest import cli

# Only the last line of stderr is checked here: llmft's own log lines (the tokenizer's pad token, ...) come before it.
# That other libraries' messages never stand before an error is checked in tests/test_library_logs.py.


def train(tiny_llama, tmp_path, *overrides):
    "`llmft train` on the quickstart recipe with the tiny model, one step, into `tmp_path/run`."
    return cli('train', 'examples/quickstart_sft.yaml', f'model_name_or_path={tiny_llama}', 'max_steps=1',
               f'output_dir={tmp_path / "run"}', *overrides)


def last_line(r) -> str:
    "The line a user reads last: the error."
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('override, line', [
    ('per_device_train_batch_size=0',    # reached torch's sampler: 'a bug in llmft' with a traceback, exit 70
     'per_device_train_batch_size: 0 is out of range; expected an integer >= 1.'),
    ('gradient_accumulation_steps=0', 'gradient_accumulation_steps: 0 is out of range; expected an integer >= 1.'),
    ('warmup_steps=-1', 'warmup_steps: -1 is out of range; expected a number >= 0.'),  # before transformers' own
    ('lora_dropout=1', 'lora_dropout: 1 is out of range; expected a number in [0, 1).'),
])
def test_number_out_of_range_is_a_configuration_error(tiny_llama, tmp_path, override, line):
    r = train(tiny_llama, tmp_path, override)
    assert r.returncode == 2, r.stderr[-3000:]
    assert last_line(r) == f'llmft: configuration error: {line}'


def write_dataset(tmp_path, rows:list[dict]) -> str:
    "A sharegpt dataset `bad` of `rows` in tmp_path/toolcalls.jsonl, with its own dataset_info.json."
    (tmp_path / 'toolcalls.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    entry = {'file_name': 'toolcalls.jsonl', 'formatting': 'sharegpt',
             'columns': {'messages': 'conversations', 'tools': 'functions'}}
    (tmp_path / 'dataset_info.json').write_text(json.dumps({'bad': entry}))
    return f'dataset_dir={tmp_path}'


TOOLS = json.dumps([{'name': 'add', 'description': 'Add two numbers', 'parameters': {'type': 'object'}}])
CALL = json.dumps({'name': 'add', 'arguments': {'a': 2, 'b': 2}})
GOOD = {'conversations': [{'from': 'human', 'value': 'What is 2+2?'}, {'from': 'function_call', 'value': CALL},
                          {'from': 'observation', 'value': '4'}, {'from': 'gpt', 'value': 'It is 4.'}],
        'functions': TOOLS}


def bad_call_turn() -> dict:
    "GOOD with its function call written as Python, not JSON."
    turns = [dict(t) for t in GOOD['conversations']]
    turns[1]['value'] = 'add(2, 2)'
    return {**GOOD, 'conversations': turns}


@pytest.mark.parametrize('rows, line', [
    ([GOOD, GOOD, {**GOOD, 'functions': '{not json'}, GOOD],
     "row 2, column 'functions': '{not json' is not valid JSON (Expecting property name enclosed in double quotes: "
     'line 1 column 2 (char 1)); expected a JSON list of tool definitions, [{"name": ..., "description": ..., '
     '"parameters": {...}}, ...].'),
    ([GOOD, bad_call_turn()],
     "row 1, column 'conversations', turn 1: 'add(2, 2)' is not valid JSON (Expecting value: line 1 column 1 "
     '(char 0)); expected {"name": ..., "arguments": {...}} or a list of them.'),
], ids=['tools cell', 'function call turn'])
def test_bad_json_cell_names_file_row_and_column(tiny_llama, tmp_path, rows, line):
    where = write_dataset(tmp_path, rows)
    r = train(tiny_llama, tmp_path, 'dataset=bad', where, 'val_size=0', 'eval_strategy=no')
    assert r.returncode == 3, r.stderr[-3000:]
    assert last_line(r) == f"llmft: data error: Dataset 'bad' (toolcalls.jsonl): {line}"

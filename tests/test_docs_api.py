"""API entries of the docs site (`tools/docs_api.py`): real llmft symbols rendered as `show_doc` renders them in
`make docs`: the signature as written (no type made up from a default, no comments in it), the symbol's own docstring
(never an inherited one), the parameter table from the docments comments, dataclass fields linked to the keys page."""
import dataclasses, importlib, pkgutil, re, sys
import markdown
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'tools'))
import docs_api
from docs_api import ApiRenderer


def render(sym, **kw) -> str: return ApiRenderer(sym, **kw)._repr_markdown_()
def signature_of(md:str) -> str: return re.search(r'```python\n(.*?)\n```', md, re.S).group(1)
def rows(md:str) -> list[list[str]]:
    "The cells of the table's body rows (split on `|` outside code spans and escapes)."
    out = []
    for l in md.splitlines():
        if not l.startswith('| ') or l.startswith(('| Parameter', '| Field', '| ---')): continue
        cells = re.findall(r'((?:`[^`]*`|\\\||[^|])*)\|', l[1:])
        out.append([c.strip() for c in cells])
    return out
def html(md:str) -> str: return markdown.markdown(md, extensions=['tables', 'attr_list', 'md_in_html'])
def html_cells(md:str, name:str) -> list[str]:
    "The cells of parameter `name`'s row once MkDocs' Markdown has rendered the table."
    row = re.search(rf'<tr>\s*<td><code>{re.escape(name)}</code></td>(.*?)</tr>', html(md), re.S).group(1)
    return re.findall(r'<td>(.*?)</td>', row, re.S)


def test_run_exp():
    "The main entry point: each parameter's type as its source writes it (or none), the docments comments as a table."
    import inspect
    from fastcore.docments import docments
    from llmft.train.tuner import run_exp
    md = render(run_exp)
    assert 'NoneType' not in md
    sig = signature_of(md)
    assert sig.startswith('def run_exp(') and sig.endswith(') -> RunResult') and '**overrides' in sig and '#' not in sig
    assert '### run_exp' in md and md.index('### run_exp') < md.index('```python') and 'Run one experiment' in md
    r, dm = {c[0]: c[1:] for c in rows(md)}, docments(run_exp, args_kwargs=True)
    for p in inspect.signature(run_exp).parameters.values():
        row = r[f"<code>{'**' if p.kind == p.VAR_KEYWORD else ''}{p.name}</code>"]
        assert row[0] == ('' if p.annotation is p.empty else f'`{p.annotation}`'), (p, row)
        assert row[1] == ('' if p.default is p.empty else f'`{p.default!r}`') and row[2] == dm[p.name], (p, row)
    assert r['<code>**overrides</code>'][2] == 'keys that win over `cfg`'
    # fastcore's docments (nbdev's) gives the `**overrides` comment to the return, the line under it: not here
    assert docments(run_exp)['return'] == dm['overrides'] and 'Returns' not in md


# a signature of every kind, none of it commented
def _example(a, b=None, c:str|None=None, *args, d:int=3, **kw) -> int|None: ...


def test_no_type_from_a_default():
    md = render(_example)
    assert signature_of(md) == 'def _example(a, b=None, c: str | None = None, *args, d: int = 3, **kw) -> int | None'
    assert 'table' not in html(md)     # no parameter has anything to say: no table


def test_annotated_unannotated_and_links():
    "A long signature one parameter per line; comments above a parameter and backticked symbols that nbdev links."
    from nbdev.doclinks import NbdevLookup
    from llmft.model.loader import load_model
    md = render(load_model)
    sig = signature_of(md).split('\n')
    assert sig[0] == 'def load_model(' and sig[-1].startswith(')') and '    tokenizer,' in sig
    assert '    model_args: ModelArguments,' in sig and '    add_valuehead: bool = False,' in sig
    assert '    cutoff_len: int | None = None,' in sig and not any('#' in l for l in sig)
    r = {c[0]: c[1:] for c in rows(md)}
    assert r['<code>tokenizer</code>'][:2] == ['', '']
    assert r['<code>model_args</code>'] == ['`ModelArguments`', '', '']     # listed though it has no comment
    assert r['<code>cutoff_len</code>'][2].startswith('the context RoPE scaling')   # a comment on the line above
    linked = NbdevLookup().link_line(md)     # what nbdev's `add_links` does to the output
    row = next(l for l in linked.splitlines() if l.startswith('| <code>add_valuehead'))
    assert re.search(r'\[`ModelWithValueHead`\]\(https://\S+#modelwithvaluehead\)', row), row
    assert len(html_cells(linked, 'add_valuehead')) == 3 and '<a href' in html_cells(linked, 'add_valuehead')[2]


def test_short_signature_one_line_and_continued_comment():
    from llmft.data.checks import check_samples
    from llmft.data.templates import get_template
    md = render(get_template)
    assert signature_of(md) == 'def get_template(name: str | None, tokenizer) -> Template'
    r = {c[0]: c[1:] for c in rows(md)}
    assert r['<code>name</code>'][0] == '`str | None`' and r['<code>name</code>'][2].startswith('a key of `TEMPLATES`')
    assert html_cells(md, 'name')[0] == '<code>str | None</code>'   # `|` inside a code span keeps the cell whole
    r = {c[0]: c[1:] for c in rows(render(check_samples))}
    assert r['<code>response_only</code>'][2].startswith('only the response is labelled')
    assert r['<code>name</code>'][2] == ''
    from llmft.data.fidelity import Difference
    r = {c[0]: c[1:] for c in rows(render(Difference))}   # a comment continued on the next lines, in its column
    assert r['<code>checked</code>'][2].startswith('how the harness treats it') and 'not generated' in r['<code>checked</code>'][2]


def test_dataclass_fields_link_keys():
    from llmft.hparams.finetune import FinetuningArguments, LoraArguments
    from llmft.hparams.keys import key_reference
    keys = {k.key: k for k in key_reference()}
    md = render(LoraArguments)
    assert signature_of(md) == '@dataclass\nclass LoraArguments'
    assert md.count('| [<code>') == len(dataclasses.fields(LoraArguments))
    r = {c[0]: c[1:] for c in rows(md)}
    assert r['[<code>lora_rank</code>](../reference/keys.md#lora_rank)'] == ['`int`', '`8`', keys['lora_rank'].help]
    assert r['[<code>lora_alpha</code>](../reference/keys.md#lora_alpha)'][:2] == ['`Optional[int]`', '`None`']
    for f in dataclasses.fields(LoraArguments): assert f'(../reference/keys.md#{f.name})' in md and f.name in keys
    md = render(FinetuningArguments)   # its own fields; those of its groups on their own entries
    assert '#lora_rank)' not in md and '(../reference/keys.md#stage)' in md
    assert 'Also the fields of `SFTLossArguments`' in md and '`LoraArguments`' in md
    assert all(len(l) <= docs_api.MAXLINE for l in signature_of(md).split('\n'))


def test_dataclass_not_a_group_and_escapes():
    "A dataclass whose fields are not configuration keys links none (`tool_format` is a key's name too)."
    from llmft.data.template import Template
    from llmft.hparams.data import DataArguments
    from llmft.hparams.keys import key_reference
    md = render(Template)
    assert 'keys.md' not in md and '<code>tool_format</code>' in md and 'tool_format' in {k.key for k in key_reference()}
    r = {c[0]: c[1:] for c in rows(md)}
    assert r['<code>name</code>'] == ['`str`', '', '']            # listed without a comment, others have one
    assert r['<code>format_system</code>'][1] == '`factory`'       # a lambda default factory
    assert r['<code>stop_words</code>'][1] == '`list()`'
    assert r['<code>format_function</code>'][2].startswith('default: the calls')   # the comment above the field
    declares = next(c for c in DataArguments.__mro__ if 'eval_on_each_dataset' in c.__dict__.get('__annotations__', {}))
    h = html(render(declares))
    assert 'eval_&lt;name&gt;_*' in h                   # a placeholder stays text, not an HTML tag
    assert 'NoneType' not in h


def test_own_docstring_only():
    "An undocumented method shows no docstring, where nbdev showed `object.__call__`'s 'Call self as a function.'"
    from fastcore.docments import docstring
    from llmft.data.template import Template
    from llmft.eval.tasks import ShotSampler
    from llmft.train.metrics import ComputeAccuracy
    for sym, title, sig in [
        (ComputeAccuracy.__call__, 'ComputeAccuracy.__call__', 'def __call__(eval_preds) -> dict[str, float]'),
        (Template.has_thought, 'Template.has_thought', 'def has_thought(content: str) -> bool')]:
        assert docstring(sym) == 'Call self as a function.'    # what fastcore falls back to
        md = render(sym)
        assert f'### {title} {{ #{title.lower()} }}\n' in md and signature_of(md) == sig
        assert md.rstrip().endswith('```') and 'Call self' not in md, md
    md = render(ShotSampler.__call__)    # a documented method: its docstring, its parameters
    assert 'The first `n_shot` rows of a permutation' in md and 'def __call__(dev: list, n_shot: int) -> list' in md
    md = render(ComputeAccuracy)         # a class: its docstring, the signature of how it is built
    assert signature_of(md) == 'class ComputeAccuracy()' and '`compute_metrics` for sft eval' in md
    assert docs_api.own_doc(dict.get) == '' and docs_api.own_doc(ShotSampler) != ''


def test_cut_defaults():
    assert docs_api.cut("'" + 'x' * 60 + "'") == "'" + 'x' * 36 + '...'
    assert docs_api.code('a`b') == '`` a`b ``'
    assert docs_api.md_text('a <name> `<code>` | b', table=True) == r'a &lt;name&gt; `<code>` \| b'


def test_install(monkeypatch):
    import nbdev.showdoc
    monkeypatch.setattr(nbdev.showdoc, 'BasicMarkdownRenderer', nbdev.showdoc.BasicMarkdownRenderer)
    old = nbdev.showdoc.show_doc(_example)._repr_markdown_()
    assert 'b:NoneType=None' in old                      # nbdev's own renderer makes the type up
    docs_api.install()
    new = nbdev.showdoc.show_doc(_example)
    assert isinstance(new, ApiRenderer) and 'NoneType' not in new._repr_markdown_()


def test_every_exported_symbol():
    "Every exported function and class renders: no made-up type, no comment in a signature, lines that fit."
    import llmft
    n, bad = 0, []
    for m in pkgutil.walk_packages(llmft.__path__, 'llmft.'):
        mod = importlib.import_module(m.name)
        for nm in getattr(mod, '__all__', []):
            o = getattr(mod, nm)
            if getattr(o, '__module__', None) != mod.__name__ or not callable(o): continue
            md, n = render(o), n + 1
            sig = re.search(r'```python\n(.*?)\n```', md, re.S)
            lines = sig.group(1).split('\n') if sig else []
            if 'NoneType' in md or any(re.search(r'\s#\s', l) or len(l) > docs_api.MAXLINE for l in lines):
                bad.append(f'{m.name}.{nm}')
    assert n > 300 and not bad, bad

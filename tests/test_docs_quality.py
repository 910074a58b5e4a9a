"""The docs-quality rules (tools/docs_check.py) on small pages made here: each rule finds what it is for and passes a
clean page. The whole built site is checked by `make docs` itself and by tests/test_docs_site.py."""
import json, re, sys, tempfile
from pathlib import Path
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'tools'))
import docs_check  # noqa: E402  (tools/docs_check.py)
import docs  # noqa: E402  (tools/docs.py)


def page(body:str) -> str:
    return f'<html><body><nav>menu</nav><article class="md-content__inner md-typeset">{body}</article></body></html>'


def output(text:str) -> str: return f'<div class="llmft-output"><pre class="llmft-text">{text}</pre></div>'


def problems(body:str) -> list[str]: return docs_check.page_problems(page(body), 'x/')


def figure(data:list, **layout) -> str:
    fig = json.dumps({'data': data, 'layout': layout}).replace('"', '&quot;')
    return f'<div class="llmft-plotly" data-figure="{fig}"></div>'


def test_a_clean_page_passes():
    body = ('<h1>title</h1><p>Costs $5 or $10, <code>$x$</code> is code.</p>'
            '<pre><code>warnings.warn("shown in code, not an output")</code></pre>'
            + output('loss 1.25') + figure([{'x': [1, 2], 'y': [3, 4]}]))
    assert problems(body) == []


def test_each_rule_finds_its_problem():
    cases = {
        f'<h1>t</h1>{output(str(ROOT) + "/saves/run")}': 'a path of the build machine',
        f'<h1>t</h1>{output(str(Path.home()) + "/.cache/llmft/fixtures/model")}': 'a path of the build machine',
        f'<h1>t</h1>{output(tempfile.gettempdir() + "/tmpab12cd/run")}': 'a path of the build machine',
        '<h1>t</h1>' + output('\x1b[2K 50%'): 'a terminal escape',
        '<h1>t</h1>' + output('loss [0m'): 'a terminal escape',
        '<h1>t</h1>' + output('x.py:3: FutureWarning: this is old'): 'a warning or traceback in an output',
        '<h1>t</h1>' + output('Traceback (most recent call last):'): 'a warning or traceback in an output',
        '<h1>t</h1><pre><code>def f(cfg:NoneType=None)</code></pre>': '`NoneType=`',
        '<h1>t</h1><p>the loss $-\\log\\sigma(\\Delta)$</p>': 'raw LaTeX',
        '<h1>t</h1>' + figure([]): 'a chart with no data',
        '<h1>t</h1>' + figure([{'x': [1], 'y': [2]}], xaxis={}, xaxis2={'title': {'text': 'eval loss'}}):
            'an empty panel (eval loss)',
        '<p>no heading</p>': '0 top headings',
        '<h1>t</h1><script src="https://cdn.example.org/x.js"></script>': 'a request to another host',
    }
    for body, expected in cases.items():
        found = problems(body)
        assert any(expected in p for p in found), (body, found)


def test_links_and_anchors_are_followed(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    (tmp_path / 'a' / 'index.html').write_text(page('<h1 id="top">a</h1><a href="../b/#there">b</a>'
                                                    '<a href="../b/#nowhere">b</a><a href="../c/">c</a>'))
    (tmp_path / 'b' / 'index.html').write_text(page('<h1 id="there">b</h1><a href="../a/#top">a</a>'))
    found = docs_check.link_problems(tmp_path, docs_check.pages(tmp_path))
    assert found == ['a/: a broken anchor: ../b/#nowhere', 'a/: a broken link: ../c/'], found


def test_outputs_are_cleaned_before_they_reach_a_page():
    "What the build does to an output, so the rules above have nothing to find: the final state of a bar, no codes."
    assert docs.terminal_text('Loading 0%\rLoading 50%\rLoading 100%\n\x1b[2Kdone\x1b[A') == 'Loading 100%\ndone'
    block = docs._text_block('<tag> & text')
    assert '&lt;tag&gt; &amp; text' in block and block.startswith('<div class="llmft-output">')


def test_math_becomes_mathml_outside_code():
    md = docs.render_math('loss $-\\log\\sigma(\\Delta)$, in code `$x$`, costs $5, and $$\\frac{a}{b}$$')
    assert md.count('<math') == 2 and 'display="block"' in md and '`$x$`' in md and 'costs $5' in md
    assert not docs_check.LATEX.search(re.sub(r'<math.*?</math>|`[^`]*`', '', md, flags=re.S))

"""The house rules a reader of the notebooks relies on: exported cells of at most 60 lines, code lines of at most 120
characters, no `;`-joined statements, no nested conditional expressions (README, "How we work")."""
import ast, io, json, tokenize
from conftest import ROOT

MAX_CELL, MAX_LINE = 60, 120


def width(line:str) -> int:
    "A line's length in UTF-8 bytes: a line of Chinese text counts wider than its characters, as on a screen."
    return len(line.encode())


def code_cells():
    "(notebook, cell index, source) of every code cell of `nbs/` and `tutorials/`; magics and shell lines blanked."
    for nb in sorted([*(ROOT / 'nbs').rglob('*.ipynb'), *(ROOT / 'tutorials').glob('*.ipynb')]):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            if c['cell_type'] != 'code': continue
            src = ''.join(c['source'])
            yield nb.relative_to(ROOT), i, '\n'.join('' if l.lstrip()[:1] in '%!' else l for l in src.split('\n'))


def test_exported_cells_short():
    big = [f'{nb} cell {i}: {len(s.splitlines())} lines' for nb, i, s in code_cells()
           if s.startswith('#| export') and len(s.splitlines()) > MAX_CELL]
    assert not big, 'exported cells over 60 lines (one function or check per cell):\n' + '\n'.join(big)


def test_code_lines_within_120():
    long = [f'{nb} cell {i}: {l[:70]}...' for nb, i, s in code_cells() for l in s.split('\n') if width(l) > MAX_LINE]
    assert not long, 'code lines over 120 characters:\n' + '\n'.join(long)


def test_no_semicolon_statements():
    joined = []
    for nb, i, s in code_cells():
        for t in tokenize.generate_tokens(io.StringIO(s).readline):
            if t.type == tokenize.OP and t.string == ';': joined.append(f'{nb} cell {i}: {t.line.strip()[:80]}')
    assert not joined, 'statements joined with ;\n' + '\n'.join(joined)


def test_no_nested_conditional_expressions():
    nested = []
    for py in (ROOT / 'llmft').rglob('*.py'):
        for n in ast.walk(ast.parse(py.read_text())):
            if isinstance(n, ast.IfExp) and any(isinstance(m, ast.IfExp) for m in ast.walk(n) if m is not n):
                nested.append(f'{py.relative_to(ROOT)}:{n.lineno}: {ast.unparse(n)[:80]}')
    assert not nested, 'nested conditional expressions (write an if statement or a lookup):\n' + '\n'.join(nested)


def test_library_lines_within_120():
    ("nbdev's generated `__all__` lines and `_modidx.py` are written by `nbdev_export` and cannot be wrapped "
     "(nbdev wraps `__all__` at 120 before it prefixes `__all__ = `).")
    long = [f'{py.relative_to(ROOT)}: {l[:70]}' for py in (ROOT / 'llmft').rglob('*.py') if py.name != '_modidx.py'
            for l in py.read_text().split('\n') if width(l) > MAX_LINE and not l.startswith('__all__')]
    assert not long, '\n'.join(long)

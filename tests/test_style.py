"""The house rules a reader of the notebooks relies on: exported cells of at most 60 lines, code lines of at most 120
characters, no `;`-joined statements, no nested conditional expressions (README, "How we work"); in `llmft/`: one
docstring per def (never cut in two), no unused imports (pyflakes), and the compact fastai dialect, not black's."""
import ast, io, json, tokenize
from fastcore.test import test_eq as eq
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


# --- Modules excused from a rule, with the reason in a comment (all empty now: a new entry needs one); a module that
# no longer breaks the rule must leave its list (`test_allow_lists_current` fails on a stale entry).
SPLIT_DOCSTRING_OK = set()
UNUSED_IMPORT_OK = set()
DOUBLE_BLANK_OK = set()
TWO_LINE_IF_OK = set()


def modules():
    "(relative path, source) of every generated module but nbdev's `_modidx.py`."
    for py in sorted((ROOT / 'llmft').rglob('*.py')):
        if py.name != '_modidx.py': yield str(py.relative_to(ROOT)), py.read_text()


def _is_str(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def split_docstrings(src:str) -> list[int]:
    "Lines of a second bare string right after a module / class / function docstring: one docstring cut in two."
    return [n.body[1].lineno for n in ast.walk(ast.parse(src))
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and len(n.body) > 1 and _is_str(n.body[0]) and _is_str(n.body[1])]


def unused_imports(path:str, src:str) -> list[str]:
    ("pyflakes' unused (or shadowed before use) imports. An import kept on purpose says so on its line with "
     "`# noqa: F401` (a side effect such as registering templates, or a re-export); names in `__all__` count as used, "
     "and pyflakes never reports `__init__.py`.")
    from pyflakes import checker, messages
    lines, tree = src.split('\n'), ast.parse(src)
    # fastcore's `@patch` leaves the module's name as it was (it returns the previous global): no redefinition
    patched = {n.lineno for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and any(getattr(d, 'id', getattr(d, 'attr', None)) == 'patch' for d in n.decorator_list)}
    w = checker.Checker(tree, filename=path)
    return [f'{m.lineno}: {m.message % m.message_args}' for m in w.messages
            if isinstance(m, (messages.UnusedImport, messages.RedefinedWhileUnused))
            and 'noqa: F401' not in lines[m.lineno - 1]
            and not (isinstance(m, messages.RedefinedWhileUnused) and m.lineno in patched)]


def cell_of(src:str, line:int) -> str:
    "The notebook cell (`nbs/X.ipynb #id`) a generated module's `line` comes from."
    heads = [l for l in src.split('\n')[:line] if l.startswith('# %% ')]
    return heads[-1][5:].replace('../', '') if heads else '?'


def double_blanks(src:str) -> list[int]:
    "Lines of a second consecutive blank line inside one exported cell (black's two blank lines between defs)."
    out, lines = [], src.split('\n')
    for i in range(1, len(lines) - 1):
        if lines[i].strip() or lines[i - 1].strip() or not lines[i + 1].strip(): continue
        if not lines[i + 1].startswith('# %%'): out.append(i + 1)
    return out


def _items(n) -> tuple[list, int]:
    "The arguments of a call or def, and the line its bracket opens on."
    if isinstance(n, ast.Call): return [*n.args, *n.keywords], n.func.end_lineno
    a = n.args
    return [*a.posonlyargs, *a.args, *filter(None, [a.vararg]), *a.kwonlyargs, *filter(None, [a.kwarg])], n.lineno


def exploded_calls(src:str) -> list[int]:
    ("Calls and defs written one argument per line with a magic trailing comma although they fit in 120 characters "
     "on one line (docments defs, a comment per parameter, are left alone).")
    out, lines = [], src.split('\n')
    for n in ast.walk(ast.parse(src)):
        if not isinstance(n, (ast.Call, ast.FunctionDef, ast.AsyncFunctionDef)): continue
        items, opened = _items(n)
        rows = [i.lineno for i in items]
        if len(rows) < 2 or rows[0] == opened or len(set(rows)) < len(rows): continue
        last = items[-1]
        if not lines[last.end_lineno - 1][last.end_col_offset:].lstrip().startswith(','): continue
        if isinstance(n, ast.Call):
            one = n.col_offset + len(ast.unparse(n)) + len(lines[n.end_lineno - 1][n.end_col_offset:])
        else:
            head = lines[n.lineno - 1:n.body[0].lineno - 1]
            if any('#' in l for l in head): continue
            one = len(head[0]) + sum(len(l.strip()) for l in head[1:])
        if one <= MAX_LINE: out.append(n.lineno)
    return out


def two_line_ifs(src:str) -> tuple[list[int], int]:
    ("Short `if x:` + `return / raise / continue / break y` on two lines although `if x: return y` fits in 120, "
     "and how many the module writes on one line.")
    two, one, lines = [], 0, src.split('\n')
    for n in ast.walk(ast.parse(src)):
        if not (isinstance(n, ast.If) and not n.orelse and len(n.body) == 1): continue
        s = n.body[0]
        if not isinstance(s, (ast.Return, ast.Raise, ast.Continue, ast.Break)): continue
        if s.lineno == n.lineno: one += 1
        elif n.test.end_lineno == n.lineno and s.end_lineno == s.lineno:
            if width(lines[n.lineno - 1].rstrip() + ' ' + lines[s.lineno - 1].strip()) <= MAX_LINE: two.append(n.lineno)
    return two, one


def black_ifs(src:str) -> list[int]:
    "A module in black's dialect: two or more short two-line ifs, and more of them than one-line ones."
    two, one = two_line_ifs(src)
    return two if len(two) >= 2 and len(two) > one else []


CHECKS = dict(split_docstring=(lambda p, s: split_docstrings(s), SPLIT_DOCSTRING_OK),
              unused_import=(unused_imports, UNUSED_IMPORT_OK),
              double_blank=(lambda p, s: double_blanks(s), DOUBLE_BLANK_OK),
              exploded_call=(lambda p, s: exploded_calls(s), set()),
              two_line_if=(lambda p, s: black_ifs(s), TWO_LINE_IF_OK))


def violations(check:str) -> dict:
    "{module: [line or message, ...]} of one check over `llmft/`."
    f = CHECKS[check][0]
    return {p: v for p, s in modules() if (v := f(p, s))}


def _fail(check:str, why:str):
    found = {p: v for p, v in violations(check).items() if p not in CHECKS[check][1]}
    assert not found, why + '\n' + '\n'.join(f'{p}:{x}' for p, v in found.items() for x in v)


def test_one_docstring():
    _fail('split_docstring', 'a docstring cut in two by a second string statement: write ("part one " "part two")')


def test_no_unused_imports():
    _fail('unused_import', 'unused imports (keep one on purpose with `# noqa: F401` and the reason):')


def test_no_double_blank_lines():
    _fail('double_blank', "two blank lines inside an exported cell (one blank line between defs, fastai's dialect):")


def test_no_exploded_calls():
    _fail('exploded_call', 'a call or def exploded one argument per line with a trailing comma, though it fits in 120:')


def test_short_ifs_on_one_line():
    _fail('two_line_if', 'short `if x:\\n    return y` written on two lines throughout (write `if x: return y`):')


def test_allow_lists_current():
    "An allow-listed module that no longer breaks its rule leaves the list, so the list only ever shrinks."
    stale = [f'{c}: {p}' for c, (f, ok) in CHECKS.items() for p in sorted(ok - set(violations(c)))]
    assert not stale, 'fixed: remove from the allow-list at the top of tests/test_style.py:\n' + '\n'.join(stale)


def test_checks_catch_examples():
    "Each check flags the shape it names and passes the fastai form, so a green run means something."
    eq(split_docstrings('def f():\n    "Part one"\n    " part two"\n'), [3])
    eq(split_docstrings('def f():\n    ("Part one "\n     "part two")\n    return 1\n'), [])
    eq(unused_imports('m.py', 'import os, json\nfrom x import y  # noqa: F401 (registers y)\njson.dumps(1)\n'),
       ["1: 'os' imported but unused"])
    eq(double_blanks('# %% nbs/a.ipynb #1\ndef f(): pass\n\n\ndef g(): pass\n\n\n# %% nbs/a.ipynb #2\n'), [4])
    eq(exploded_calls('x = f(\n    1,\n    b=2,\n)\ny = f(1,\n      b=2)\n'), [1])
    eq(exploded_calls('def f(\n    a,  # the first\n    b,\n): pass\n'), [])
    eq(black_ifs('def f(x):\n    if x:\n        return 1\n    if not x:\n        return 2\n'), [2, 4])
    eq(black_ifs('def f(x):\n    if x: return 1\n    if not x: return 2\n    if x > 1:\n        return 3\n'), [])


def test_post_init_only_converts():
    ("Validation lives in the checks registry (`hparams.model.check`, listed by `llmft keys`): a `__post_init__` of an "
     "argument dataclass converts types and runs its group's checks, it never raises itself.")
    raising = []
    for py in sorted((ROOT / 'llmft' / 'hparams').glob('*.py')):
        for n in ast.walk(ast.parse(py.read_text())):
            if isinstance(n, ast.FunctionDef) and n.name == '__post_init__':
                raising += [f'{py.relative_to(ROOT)}:{m.lineno}' for m in ast.walk(n) if isinstance(m, ast.Raise)]
    assert not raising, 'a raise in __post_init__ (make it a named check):\n' + '\n'.join(raising)

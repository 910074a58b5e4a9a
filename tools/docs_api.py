"""API entries of the documentation site: how `show_doc` renders a symbol in `make docs` (installed by tools/docs.py).

nbdev's own renderer puts the docments comments inside the signature (running off the page), invents types from
defaults (`cfg:NoneType=None`) and falls back to inherited docstrings ("Call self as a function."). `ApiRenderer` writes
instead: the source link and the heading, the signature as written (annotations and defaults from the source, no type
where there is none, no comments), the symbol's own docstring, and a parameter table from the docments comments (for a
dataclass: its fields and their help, each configuration key linked to its entry on the keys page).
"""
import ast, dataclasses, inspect, io, re, textwrap, tokenize
from functools import lru_cache

MAXLINE = 100                       # a signature longer than this is written one parameter per line
MAXDEFAULT = 40                     # a longer default is cut, ending in `...`
KEYS_PAGE = '../reference/keys.md'  # API pages live at `api/<module>.md`
_empty = inspect.Parameter.empty


# ---------------------------------------------------------------- text

def cut(s:str, n:int=MAXDEFAULT) -> str:
    "`s` on one line, at most `n` characters (a longer one ends in `...`)."
    s = ' '.join(s.split())
    return s if len(s) <= n else s[:n - 3].rstrip() + '...'


def code(s:str) -> str:
    "`s` as inline code (in a table `|` needs no escape inside a code span: Python-Markdown keeps the cell whole)."
    fence = '``' if '`' in s else '`'
    pad = ' ' if fence == '``' else ''
    return f'{fence}{pad}{s}{pad}{fence}'


_code_span = re.compile(r'(`+)(.+?)\1', re.S)


def md_text(s:str, table:bool=False) -> str:
    "Markdown of a comment or a docstring made safe: `<name>` outside code kept as text, in a table `|` escaped."
    out, pos = [], 0
    for m in _code_span.finditer(s):
        out += [_escape(s[pos:m.start()], table), m.group(0)]
        pos = m.end()
    res = ''.join(out + [_escape(s[pos:], table)])
    return ' '.join(res.split()) if table else res


def _escape(t:str, table:bool) -> str:
    "`<` and `>` as text (an autolink `<https://...>` kept), `|` escaped in a table cell."
    parts = re.split(r'(<https?://[^\s>]+>)', t)
    t = ''.join(p if i % 2 else p.replace('<', '&lt;').replace('>', '&gt;') for i, p in enumerate(parts))
    return t.replace('|', r'\|') if table else t


# ---------------------------------------------------------------- what the source says

def _unwrap(sym):
    "The function behind a wrapper (`functools.wraps`, `lru_cache`) or a property."
    if not hasattr(sym, '__signature__'): sym = getattr(sym, '__wrapped__', sym)
    return getattr(sym, 'fget', None) or getattr(sym, 'fset', None) or sym


def source_node(obj):
    "(source, node) of the `def` or `class` that defines `obj`; (None, None) where there is no source."
    try: src = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError): return None, None
    try: tree = ast.parse(src)
    except SyntaxError: return None, None
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    node = next((n for n in tree.body if isinstance(n, kinds)), None)
    return (src, node) if node is not None else (None, None)


def _seg(src:str, node) -> str|None:
    return None if node is None else ast.get_source_segment(src, node)


def _anno(node) -> str|None:
    "An annotation as written, spaced as Python prints it (`str | None` for `str|None`)."
    return None if node is None else ast.unparse(node)


def written_params(fn) -> dict:
    "name -> (annotation, default) of a function's (a class's) parameters as its source writes them (None: none)."
    if inspect.isclass(fn):
        if dataclasses.is_dataclass(fn): return {k: v for c in fn.__mro__[::-1] for k, v in _written_fields(c).items()}
        fn = fn.__init__
    src, node = source_node(fn)
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): return {}
    a = node.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    res = {p.arg: (_anno(p.annotation), _seg(src, d)) for p, d in zip(pos, defaults)}
    res.update({p.arg: (_anno(p.annotation), _seg(src, d)) for p, d in zip(a.kwonlyargs, a.kw_defaults)})
    for p in (a.vararg, a.kwarg):
        if p: res[p.arg] = (_anno(p.annotation), None)
    res['return'] = (_anno(node.returns), None)
    return res


def anno_text(a) -> str|None:
    "An annotation from a signature as text; None for none (never a type guessed from the default)."
    if a is _empty or a is inspect.Signature.empty: return None
    return a if isinstance(a, str) else inspect.formatannotation(a)


def default_text(d) -> str:
    if d is dataclasses.MISSING or d is _empty: return ''
    return repr(d)


def _line_comments(src:str) -> tuple[dict, set, set]:
    "(line -> comment, the comment-only lines above code, the comment-only lines continuing the comment above) of `src`."
    found, col, code_lines = {}, {}, set()
    try:
        for t in tokenize.generate_tokens(io.StringIO(src).readline):
            if t.type == tokenize.COMMENT: found[t.start[0]], col[t.start[0]] = t.string.lstrip('#').strip(), t.start[1]
            elif t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                code_lines.add(t.start[0])
    except (tokenize.TokenError, SyntaxError): pass
    cont = set()
    for l in sorted(found):   # a comment-only line under a comment in the same column continues it
        if l not in code_lines and col.get(l - 1) == col[l] and (l - 1 in code_lines or l - 1 in cont): cont.add(l)
    return found, {l for l in found if l not in code_lines and l not in cont}, cont


def _attach(src:str, items:list) -> dict:
    "name -> comment for `items` (name, first line, last line), as fastcore's docments reads them: the comment on the "\
    "item's last line (and the lines continuing it in its column), else the comment-only lines right above it."
    found, above, cont = _line_comments(src)
    res = {}
    for i, (name, first, last) in enumerate(items):
        if any(it[2] == last for it in items[i + 1:]): continue   # several items end on this line: the last has it
        if last in found and last not in above:
            text, line = [found[last]], last + 1
            while line in cont: text, line = text + [found[line]], line + 1
        else:
            text, line = [], first - 1
            while line in above: text, line = [found[line]] + text, line - 1
        res[name] = ' '.join(text)
    return res


def comments(fn) -> dict:
    "name -> docments comment of a function's (a class's) parameters, and of 'return'; `**kwargs` keeps its own."
    if inspect.isclass(fn) and not dataclasses.is_dataclass(fn): fn = fn.__init__
    src, node = source_node(fn)
    if isinstance(node, ast.ClassDef):
        fields = [st for st in node.body if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)]
        items = [(st.target.id, st.lineno, st.end_lineno) for st in fields]
        return {k: v for k, v in _attach(src, items).items() if v}
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): return {}
    a = node.args
    args = sorted([*a.posonlyargs, *a.args, *a.kwonlyargs, *[x for x in (a.vararg, a.kwarg) if x]], key=lambda x: x.lineno)
    defaults = dict(zip([x.arg for x in a.posonlyargs + a.args][::-1], a.defaults[::-1]))
    defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
    items = [(x.arg, x.lineno, (defaults.get(x.arg) or x).end_lineno) for x in args]
    if node.returns: items.append(('return', node.returns.lineno, node.returns.end_lineno))
    return {k: v for k, v in _attach(src, items).items() if v}


# ---------------------------------------------------------------- parameters

@dataclasses.dataclass
class Param:
    "One row of a signature and of the parameter table."
    name: str
    anno: str|None = None
    default: str = ''
    doc: str|None = None
    prefix: str = ''       # `*` or `**`
    link: str|None = None  # a field that is a configuration key: its anchor on the keys page

    def sig(self) -> str:
        d = cut(self.default) if self.default else ''
        if not self.anno: return f'{self.prefix}{self.name}' + (f'={d}' if d else '')
        tail = f' = {d}' if d else ''
        room = MAXLINE - 7 - len(self.prefix + self.name) - len(tail)   # '    name: anno = d,' fits in MAXLINE
        return f'{self.prefix}{self.name}: {cut(self.anno, max(min(80, room), 20))}{tail}'

    def row(self) -> str:
        nm = f'<code>{self.prefix}{self.name}</code>'
        if self.link: nm = f'[{nm}]({self.link})'
        cells = [nm, code(self.anno) if self.anno else '', code(cut(self.default)) if self.default else '',
                 md_text(self.doc or '', table=True)]
        return '| ' + ' | '.join(cells) + ' |'


def fn_params(fn, drop_self:bool=True) -> tuple[list, list, Param|None]:
    "(parameters, markers, return) of a function: markers are the `*` and `/` a signature writes between them."
    try: sig = inspect.signature(fn)
    except (ValueError, TypeError): return None, [], None
    written, docs = written_params(fn), comments(fn)
    ps, marks, star = [], [], False
    items = list(sig.parameters.values())
    if drop_self and items and items[0].name in ('self', 'cls') and items[0].kind <= 1: items = items[1:]
    for i, p in enumerate(items):
        wa, wd = written.get(p.name, (None, None))
        prefix = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'}.get(p.kind, '')
        if p.kind == p.KEYWORD_ONLY and not star:
            marks.append((len(ps), '*'))
        star = star or p.kind in (p.VAR_POSITIONAL, p.KEYWORD_ONLY)
        ps.append(Param(p.name, wa or anno_text(p.annotation), wd or default_text(p.default), docs.get(p.name), prefix))
        if p.kind == p.POSITIONAL_ONLY and (i + 1 == len(items) or items[i + 1].kind != p.POSITIONAL_ONLY):
            marks.append((len(ps), '/'))
    ret_anno = written.get('return', (None, None))[0] or anno_text(sig.return_annotation)
    ret = Param('return', ret_anno, '', docs.get('return')) if ret_anno or docs.get('return') else None
    return ps, marks, ret


def signature(prefix:str, name:str, params:list, marks:list=(), ret:Param|None=None) -> str:
    "`def name(...) -> ret` on one line when it fits in `MAXLINE`, else one parameter per line."
    parts = [p.sig() for p in params]
    for i, m in sorted(marks, reverse=True): parts.insert(i, m)
    tail = f' -> {ret.anno}' if ret and ret.anno else ''
    line = f'{prefix}{name}({", ".join(parts)}){tail}'
    if len(line) <= MAXLINE or not parts: return line
    return f'{prefix}{name}(\n' + ''.join(f'    {p},\n' for p in parts) + f'){tail}'


def table(params:list, ret:Param|None=None, head:str='Parameter') -> str:
    "The parameter table; '' when no parameter (nor the return) has a comment."
    if not any(p.doc for p in params) and not (ret and ret.doc): return ''
    rows = [f'| {head} | Type | Default | Description |', '| --- | --- | --- | --- |'] + [p.row() for p in params]
    if ret and ret.doc:
        rows.append(f"| **Returns** | {code(ret.anno) if ret.anno else ''} |  | {md_text(ret.doc, table=True)} |")
    return '\n'.join(rows) + '\n'


# ---------------------------------------------------------------- dataclasses

@lru_cache(None)
def key_names() -> frozenset:
    "The configuration keys (`llmft.hparams.keys.key_reference`) and the argument groups that declare them."
    try: from llmft.hparams.keys import ALL_GROUPS, key_reference
    except ImportError: return frozenset(), ()
    return frozenset(k.key for k in key_reference()), tuple(ALL_GROUPS.values())


def _is_group(cls) -> bool:
    "An argument group, one of the dataclasses a group is made of, or one built from groups (by name: a notebook "\
    "being documented defines its own copies of the classes)."
    names = {c.__name__ for g in key_names()[1] for c in g.__mro__ if dataclasses.is_dataclass(c)}
    return any(c.__name__ in names for c in cls.__mro__ if dataclasses.is_dataclass(c))


def _written_fields(cls) -> dict:
    "field -> (annotation, default) as the class body writes them (`field(default=...)` read for its default)."
    src, node = source_node(cls)
    if not isinstance(node, ast.ClassDef): return {}
    res = {}
    for st in node.body:
        if not (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)): continue
        v, default = st.value, _seg(src, st.value)
        if isinstance(v, ast.Call) and getattr(v.func, 'id', getattr(v.func, 'attr', '')) == 'field':
            kw = {k.arg: k.value for k in v.keywords}
            default = _seg(src, kw.get('default'))
            if 'default_factory' in kw:
                f = _seg(src, kw['default_factory'])
                default = f'{f}()' if re.fullmatch(r'[\w.]+', f) else 'factory'
        res[st.target.id] = (_anno(st.annotation), default)
    return res


def field_params(cls) -> list:
    "The dataclass's own fields (not those of its dataclass bases) as parameters, with their help and key links."
    own = inspect.get_annotations(cls)
    written, docs = _written_fields(cls), comments(cls)
    keys = key_names()[0] if _is_group(cls) else frozenset()
    ps = []
    for f in dataclasses.fields(cls):
        if f.name not in own or not f.init: continue
        wa, wd = written.get(f.name, (None, None))
        d = wd or default_text(f.default) or ('factory' if f.default_factory is not dataclasses.MISSING else '')
        link = f'{KEYS_PAGE}#{f.name}' if f.name in keys else None
        ps.append(Param(f.name, wa or anno_text(f.type), d, f.metadata.get('help') or docs.get(f.name), link=link))
    return ps


# ---------------------------------------------------------------- docstrings

def own_doc(sym) -> str:
    "The symbol's own docstring: never one inherited from `object`, `type` or a base class."
    if inspect.isclass(sym):
        doc = sym.__dict__.get('__doc__')
        if doc and dataclasses.is_dataclass(sym) and doc.startswith(f'{sym.__name__}('): doc = None  # generated
    elif inspect.isfunction(sym) or inspect.ismethod(sym): doc = getattr(sym, '__doc__', None)
    else: doc = None   # builtins, slot wrappers, partials: their docstring is their type's
    return inspect.cleandoc(doc) if isinstance(doc, str) else ''


# ---------------------------------------------------------------- the renderer

class ApiRenderer:
    "Markdown of one symbol for `show_doc`: source link, heading, signature as written, docstring, parameter table."
    def __init__(self, sym, name:str|None=None, title_level:int=3):
        from fastcore.docments import qual_name, _fullname
        self.sym, self.title_level = _unwrap(sym), title_level
        self.nm = name or qual_name(self.sym)
        self.fn = _fullname(self.sym)

    def parts(self) -> tuple[str, str, str]:
        "(signature, docstring, table) of the symbol."
        s = self.sym
        short = self.nm.rsplit('.', 1)[-1]
        if isinstance(self.sym, type) and dataclasses.is_dataclass(s):
            fields = field_params(s)
            if any(p.doc for p in fields): return self._dataclass(s, fields)
        if inspect.isclass(s):
            ps, marks, _ = fn_params(s, drop_self=False)
            sig = signature('class ', s.__name__, ps, marks) if ps is not None else f'class {s.__name__}'
            init = s.__init__ if inspect.isfunction(getattr(s, '__init__', None)) else None
            return sig, own_doc(s), table(ps or []) if init else ''
        if not callable(s): return '', own_doc(s), ''
        ps, marks, ret = fn_params(s)
        if ps is None: return '', own_doc(s), ''
        kw = 'async def ' if inspect.iscoroutinefunction(s) else 'def '
        prop = '@property\n' if isinstance(inspect.getattr_static(self._owner(), short, None), property) else ''
        return prop + signature(kw, short, ps, marks, ret), own_doc(s), table(ps, ret)

    def _owner(self):
        "The class a method (`Class.method`) belongs to, if it can be found."
        qn = getattr(self.sym, '__qualname__', '')
        mod = inspect.getmodule(self.sym)
        if '.' not in qn or '<locals>' in qn or mod is None: return None
        return getattr(mod, qn.split('.')[0], None)

    def _dataclass(self, cls, fields:list) -> tuple[str, str, str]:
        src, node = source_node(cls)
        bases = [_seg(src, b) for b in node.bases] if isinstance(node, ast.ClassDef) else []
        sig = f'@dataclass\nclass {cls.__name__}' + (f'({", ".join(bases)})' if bases else '')
        if len(sig.split('\n')[-1]) > MAXLINE: sig = f'@dataclass\nclass {cls.__name__}(\n' + ''.join(f'    {b},\n' for b in bases) + ')'
        inherited = [b.__name__ for b in cls.__bases__ if dataclasses.is_dataclass(b)]
        doc = own_doc(cls)
        tab = table(fields, head='Field')
        if inherited: tab += '\nAlso the fields of ' + ', '.join(f'`{n}`' for n in inherited) + '.\n'
        return sig, doc, tab

    def _repr_markdown_(self) -> str:
        from nbdev.doclinks import NbdevLookup
        from nbdev.showdoc import _ext_link
        md = '---\n\n'
        src = NbdevLookup().code(self.fn)
        if src: md += _ext_link(src.removesuffix('#LNone'), 'source', 'style="float:right; font-size:smaller"') + '\n\n'
        md += f"{'#' * self.title_level} {self.nm} {{ #{self.nm.lower()} }}\n\n"   # the anchor nbdev's links use
        sig, doc, tab = self.parts()
        if sig: md += f'```python\n{sig}\n```\n\n'
        if doc: md += md_text(doc) + '\n\n'
        if tab: md += tab
        return md

    def __repr__(self) -> str: return self._repr_markdown_()


def install():
    "Make nbdev's `show_doc` render with this module's renderer in this process."
    import nbdev.showdoc
    nbdev.showdoc.BasicMarkdownRenderer = ApiRenderer

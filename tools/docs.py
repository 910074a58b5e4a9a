"""`make docs`: the documentation site, built offline into `_docs/` from the notebooks, the tutorials and `docs/`.

Each notebook is executed cell by cell and processed by nbdev's own notebook processors (hidden and exported cells
dropped, `show_doc` tables added for every exported symbol), its outputs turned into Markdown (tables and text as they
are, plotly charts as interactive figures, dashboards as static HTML snapshots: `llmft.dash.snapshot`), and MkDocs
with the Material theme renders the pages, the sidebar and the search index. Why MkDocs and not Quarto: `docs/site.md`.

    python tools/docs.py [--jobs N] [--only GLOB] [--no-exec]

Executed notebooks are cached in `_proc/` by the hash of the notebook, the library and the data, so a rebuild runs only
what changed. A notebook whose cell raises fails the build with the notebook, the cell and the error.
"""
import argparse, base64, contextlib, fnmatch, hashlib, html, io, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, SITE, CACHE = ROOT / '_docs_src', ROOT / '_docs', ROOT / '_proc'
LAYERS = [(0, 'core'), (10, 'hparams'), (20, 'data'), (40, 'model'), (50, 'train'), (70, 'eval'), (75, 'infer'),
          (80, 'export'), (85, 'launch'), (90, 'dash')]   # DESIGN §2: the notebook number is the layer
SKIP_FLAGS = {'gpu', 'multigpu', 'hub'}                  # cells that need what a docs build has not
EXEC_VERSION = 3                                         # bump when `execute` changes: cached notebooks run again
MAX_TEXT_LINES = 60                                      # longer text outputs are cut, saying how much was left out
GUIDES = [('Prepare data', 'data.md'), ('Train each stage', 'train.md'), ('Images, video and audio', 'multimodal.md'),
          ('Chat and serve', 'chat-and-serve.md'),
          ('Evaluate', 'evaluate.md'), ('Export a run', 'export.md'), ('Run your model locally', 'local.md'),
          ('Sweeps', 'sweeps.md'), ('Scale out', 'scale-out.md'), ('The board', 'board.md'),
          ('Dashboards', 'dashboards.md'),
          ('Migrate from LLaMA-Factory', 'migrate.md'), ('FAQ and troubleshooting', 'troubleshooting.md')]
EXPLAIN = [('Architecture', 'architecture.md'), ('The run folder', 'run-folder.md'),
           ('trainer_log.jsonl', 'trainer-log.md'), ('Speed and memory', 'speed.md'),
           ('How this site is built', 'site.md')]


# ---------------------------------------------------------------- execution (in worker processes)

def _exec_processor():
    "nbdev's `exec_show_docs`, widened to run every cell (except flagged ones) and snapshot displayed widgets."
    from nbdev.processors import exec_show_docs
    from llmft.dash.snapshot import displayed_html

    class exec_all(exec_show_docs):
        def __call__(self, cell):
            if cell.cell_type != 'code' or not hasattr(self, 'k') or not cell.source: return
            if set(cell.directives_) & SKIP_FLAGS: return
            if cell.directives_.get('eval:', [''])[0].lower() == 'false': return   # as nbdev_test: shown, not run
            self.k.cell(cell)
            if self.k.exc:
                raise RuntimeError(f'cell {cell.idx_} raised {type(self.k.exc).__name__}: {self.k.exc}\n{cell.source}')
            for o in cell.get('outputs', []):
                static = displayed_html(o.get('data', {}))
                if static is not None: o['data'] = {'text/html': static}
    return exec_all


def _fresh_output_dir(nb, folder:Path) -> Path|None:
    ("A parameterised notebook writes its runs under `saves/docs/` beside it, emptied first, as a papermill run would: "
     "not into an earlier build's or the reader's own folders; the pages show the relative path.")
    from execnb.nbio import dict2nb, mk_cell
    for i, c in enumerate(nb.cells):
        m = re.search(r'^output_dir\s*=\s*[\'"]([^\'"]+)', c.source, re.M)
        if 'parameters' in c.get('metadata', {}).get('tags', []) and m:
            rel = f'saves/docs/{Path(m.group(1)).name}'
            shutil.rmtree(folder / rel, ignore_errors=True)
            nb.cells.insert(i + 1, dict2nb({'cells': [mk_cell(f'#| hide\noutput_dir = {rel!r}')]}).cells[0])
            return folder / rel
    return None


# what a page does not show (issue 31): progress bars (a page is not a terminal), the library loggers' chatter, llmft's
# own INFO lines (the data example a run prints, where it went), the trainer's per-step log dicts (the pages plot them)
QUIET_ENV = dict(TQDM_DISABLE='1', LLMFT_LOG_LEVEL='WARNING', TRANSFORMERS_VERBOSITY='error',
                 DATASETS_VERBOSITY='error', HF_DATASETS_DISABLE_PROGRESS_BARS='1', TRANSFORMERS_NO_ADVISORY_WARNINGS='1')


def _quiet_libraries() -> list:
    ("Keep library warnings and the trainer's per-step prints out of this worker's pages; returns the list the hidden "
     "warnings are counted into (`make docs` reports them, nothing is dropped silently).")
    import warnings
    hidden = []
    def keep(message, category, filename, lineno, file=None, line=None):
        hidden.append(f'{category.__name__}: {str(message).splitlines()[0][:200]} ({Path(filename).name}:{lineno})')
    warnings.showwarning = keep
    if _SilentStepPrints.NAME not in sys.modules and not any(isinstance(f, _SilentStepPrints) for f in sys.meta_path):
        sys.meta_path.insert(0, _SilentStepPrints())
    return hidden


class _SilentStepPrints:
    ("When a notebook first imports `transformers.trainer_callback`, its progress and printer callbacks stop printing "
     "the per-step log dicts. Patched on import, not imported here: transformers loads bitsandbytes, and "
     "`notebook_launcher` refuses to start processes once it is loaded.")
    NAME = 'transformers.trainer_callback'

    def find_spec(self, name, path=None, target=None):
        if name != self.NAME: return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            for cb in (module.ProgressCallback, module.PrinterCallback):
                cb.on_log = lambda self, args, state, control, logs=None, **kw: None
        spec.loader.exec_module = exec_module
        return spec


def _end_children():
    "Processes a notebook left running (a torchrun it started and did not wait for) end with it."
    import psutil
    for child in psutil.Process().children(recursive=True):
        try: child.kill()
        except psutil.NoSuchProcess: pass


def execute(job):
    "Execute and process one notebook (`src`) into `dst` with nbdev's processors; returns (src, seconds, error)."
    src, dst, run, threads = job
    from execnb.nbio import read_nb, write_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults, exec_show_docs
    import docs_api
    docs_api.install()
    start, cwd, runs = time.time(), os.getcwd(), None
    os.environ.update(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1', MPLBACKEND='Agg',
                      OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **QUIET_ENV)
    hidden = _quiet_libraries()
    try:
        os.chdir(Path(src).parent)
        nb = read_nb(src)
        runs = _fresh_output_dir(nb, Path(src).parent)
        procs = [p for p in FilterDefaults().base_procs() if p.__name__ != 'insert_warning']
        if run: procs = [_exec_processor() if p is exec_show_docs else p for p in procs]
        with contextlib.redirect_stdout(io.StringIO()):   # what leaks past the kernel's capture is not the build's log
            NBProcessor(nb=nb, procs=procs).process()
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        write_nb(nb, dst)
        Path(f'{dst}.hidden.json').write_text(json.dumps(hidden))
        return src, time.time() - start, None
    except Exception as e:
        return src, time.time() - start, f'{type(e).__name__}: {e}'
    finally:
        _end_children()
        os.chdir(cwd)
        if runs: shutil.rmtree(runs, ignore_errors=True)


# ---------------------------------------------------------------- notebooks to Markdown

ANSI = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]')


def terminal_text(text:str) -> str:
    "Text as a terminal would leave it: ANSI codes dropped, a line rewritten with `\\r` shown in its last state."
    return '\n'.join(line.rstrip('\r').split('\r')[-1] for line in ANSI.sub('', text).split('\n'))


def _text_block(text:str) -> str:
    text = terminal_text(text)
    lines = text.rstrip('\n').split('\n')
    if not text.strip(): return ''
    if len(lines) > MAX_TEXT_LINES:
        lines = lines[:MAX_TEXT_LINES] + [f'... ({len(lines) - MAX_TEXT_LINES} more lines)']
    return f'<div class="llmft-output"><pre class="llmft-text">{html.escape(chr(10).join(lines))}</pre></div>\n'


def _is_plotly_loader(h:str) -> bool: return 'require.undef("plotly")' in h or 'window.PlotlyConfig' in h


def output_md(o:dict, assets:Path, stem:str, n:int) -> str:
    "One cell output as Markdown (or raw HTML that Markdown passes through)."
    from llmft.dash.snapshot import figure_div
    kind = o.get('output_type')
    if kind == 'stream': return _text_block(''.join(o.get('text', '')))
    if kind == 'error': raise RuntimeError(f'{stem}: an error output: {o.get("ename")}: {o.get("evalue")}')
    d = o.get('data', {})
    if 'application/vnd.plotly.v1+json' in d:
        return f'<div class="llmft-output">{figure_div(json.dumps(d["application/vnd.plotly.v1+json"]))}</div>\n'
    if 'text/markdown' in d: return ''.join(d['text/markdown']) + '\n'
    if 'text/html' in d:
        h = ''.join(d['text/html'])
        return '' if _is_plotly_loader(h) else f'<div class="llmft-output">\n{h.strip()}\n</div>\n'
    if 'image/png' in d:
        name = f'{stem}-{n}.png'
        (assets / name).write_bytes(base64.b64decode(''.join(d['image/png'])))
        return f'![output](../assets/img/{name})\n'
    if 'image/svg+xml' in d: return f'<div class="llmft-output">{"".join(d["image/svg+xml"])}</div>\n'
    if 'text/plain' in d: return _text_block(''.join(d['text/plain']))
    return ''


MATH = re.compile(r'\$\$(.+?)\$\$|(?<![\\$\w])\$(?=[^\s$])([^$\n]*?[^\s$])\$(?![\w$])', re.S)
CODE = re.compile(r'(^```.*?^```[ \t]*$|`[^`\n]+`)', re.S | re.M)


def render_math(md:str) -> str:
    ("LaTeX between `$...$` (inline) and `$$...$$` (display) as MathML, which the browser draws itself: no script, no "
     "font download, nothing fetched (code spans and blocks are left alone).")
    from latex2mathml.converter import convert
    def math(m):
        display = m.group(1) is not None
        tex = (m.group(1) if display else m.group(2)).strip()
        return convert(tex, display='block' if display else 'inline')
    parts = CODE.split(md)
    parts[::2] = [MATH.sub(math, p) for p in parts[::2]]
    return ''.join(parts)


def _links(md:str, prefix:str) -> str:
    "nbdev's symbol links point at the published site: make them links between pages of this one."
    md = re.sub(r'https://llmft\.github\.io/llmft/([\w.]+)\.html', lambda m: f'{prefix}{m.group(1)}.md', md)
    return md.replace('{target="_blank" style="float:right; font-size:smaller"}', '{ .llmft-source }')


def notebook_md(path:Path, assets:Path, stem:str, api_prefix:str) -> tuple[str, str]:
    "(title, Markdown) of a processed notebook."
    nb = json.loads(path.read_text())
    title, out = stem, []
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        if c['cell_type'] == 'raw' and src.startswith('---'):
            meta = _frontmatter(src)
            title = meta.get('title', title)
            out.append(f"# {title}\n\n" + (f"> {meta['description']}\n" if meta.get('description') else ''))
        elif c['cell_type'] == 'markdown': out.append(render_math(src) + '\n')
        elif c['cell_type'] == 'code':
            lines = src.split('\n')
            echo = not any(re.match(r'#\|\s*echo:\s*false', l) for l in lines)
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
            if echo and code: out.append(f'```python\n{code}\n```\n')
            out += [output_md(o, assets, stem, f'{i}-{k}') for k, o in enumerate(c.get('outputs', []))]
    return title, _links('\n'.join(x for x in out if x), api_prefix)


def _frontmatter(src:str) -> dict:
    import yaml
    return yaml.safe_load(src.strip().strip('-')) or {}


# ---------------------------------------------------------------- pages

def _fingerprint() -> str:
    "What every executed notebook depends on besides itself: the library, the data and the examples."
    h = hashlib.sha256()
    h.update(f'execution {EXEC_VERSION}'.encode())
    for folder, pattern in (('llmft', '**/*.py'), ('data', '*'), ('examples', '**/*'), ('tools', 'docs_api.py')):
        for p in sorted((ROOT / folder).glob(pattern)):
            if p.is_file(): h.update(p.relative_to(ROOT).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def notebooks() -> list[tuple[str, Path]]:
    "(section, notebook) of every page built from a notebook: the API notebooks, then the tutorials."
    api = [('api', p) for p in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))]
    tut = [('tutorials', p) for p in [*sorted((ROOT / 'tutorials').glob('*.ipynb')),
                                      *sorted((ROOT / 'nbs' / 'tutorials').glob('*.ipynb'))]]
    return api + tut


def module_of(nb:Path) -> str:
    "The module a notebook exports (`#| default_exp`), else its file name."
    for c in json.loads(nb.read_text())['cells']:
        m = re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
        if m: return m.group(1)
    return nb.stem


def layer_of(nb:Path) -> str:
    num = int(re.match(r'\d+', nb.name).group(0))
    return [name for start, name in LAYERS if num >= start][-1]


def run_notebooks(jobs:int, only:str|None, run:bool) -> dict[Path, Path]:
    "Execute (or reuse from `_proc/`) every notebook; returns notebook -> processed notebook."
    fp, todo, done = _fingerprint(), [], {}
    os.environ.update(QUIET_ENV)   # before the workers start: a library reads its verbosity when it loads
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))   # torch threads per worker: the cores shared out
    for section, nb in notebooks():
        if only and not fnmatch.fnmatch(nb.name, only): continue
        key = hashlib.sha256(nb.read_bytes() + fp.encode() + str(run).encode()).hexdigest()[:16]
        dst = CACHE / section / f'{nb.stem}.{key}.ipynb'
        done[nb] = dst
        if not dst.exists(): todo.append((str(nb), str(dst), run, threads))
    print(f'docs: {len(done)} notebooks, {len(done) - len(todo)} from the cache, {len(todo)} to execute')
    errors = []
    sys.path.insert(0, str(Path(__file__).parent))
    import docs   # workers find `execute` by module name: a notebook's shell replaces their `__main__`
    # API notebooks share worker processes (as under nbdev_test); a tutorial gets a fresh process, as in a new kernel
    # (notebook_launcher, for one, refuses a process where an Accelerator already exists)
    api = [t for t in todo if Path(t[0]).parent == ROOT / 'nbs']
    for batch, per_child in ((api, None), ([t for t in todo if t not in api], 1)):
        with ProcessPoolExecutor(max_workers=max(jobs, 1), mp_context=get_context('spawn'),
                                 max_tasks_per_child=per_child) as pool:
            for src, secs, err in pool.map(docs.execute, batch):
                print(
                    f'  {Path(src).relative_to(ROOT)}: {secs:.0f} s'
                    + (f'  FAILED {err.splitlines()[0]}' if err else ''),
                    flush=True,
                )
                if err: errors.append(f'{Path(src).relative_to(ROOT)}: {err}')
    if errors: sys.exit('docs: notebooks failed to execute:\n' + '\n\n'.join(errors))
    if not only:   # executions no page uses any more
        for old in set(CACHE.rglob("*.ipynb")) - set(done.values()):
            old.unlink()
            Path(f"{old}.hidden.json").unlink(missing_ok=True)
    return done


def write_pages(done:dict[Path, Path]) -> dict:
    "Markdown of every page into `_docs_src/`; returns the navigation."
    assets = SRC / 'assets' / 'img'
    assets.mkdir(parents=True, exist_ok=True)
    api, tutorials, pages = {}, [], {}
    for nb, proc in done.items():
        section = 'api' if nb.parent == ROOT / 'nbs' else 'tutorials'
        stem = module_of(nb) if section == 'api' else nb.stem
        title, md = notebook_md(proc, assets, stem, '' if section == 'api' else '../api/')
        pages[f'{section}/{stem}.md'] = md
        if section == 'api': api.setdefault(layer_of(nb), []).append({stem: f'api/{stem}.md'})
        else: tutorials.append({title.replace('`', ''): f'tutorials/{stem}.md'})
    for path, md in fix_method_anchors(pages).items():
        (SRC / path).parent.mkdir(parents=True, exist_ok=True)
        (SRC / path).write_text(md)
    return {'api': api, 'tutorials': tutorials}


SYMBOL_LINK = re.compile(r'\]\(((?:\.\./api/)?)([\w.]+)\.md#([\w.]+)\)')


def fix_method_anchors(pages:dict[str, str]) -> dict[str, str]:
    ("nbdev links a backticked `Class.method` to the method's anchor; where the page shows no entry for the method, "
     "the link goes to its class (or to the page), never to an anchor that is not there.")
    ids = {Path(k).stem: set(re.findall(r'\{ #([^\s}]+) \}', md)) for k, md in pages.items() if k.startswith('api/')}
    def fix(m):
        prefix, page, anchor = m.groups()
        have = ids.get(page)
        if have is None or anchor in have: return m.group(0)
        owner = anchor.split('.')[0]
        return f']({prefix}{page}.md' + (f'#{owner})' if owner in have else ')')
    return {k: SYMBOL_LINK.sub(fix, md) for k, md in pages.items()}


def write_reference():
    "Generated pages: every configuration key, every registered chat template."
    from llmft.hparams.keys import key_reference, keys_markdown
    from llmft.data.templates import template_rows
    from llmft.launch.report import html_table
    (SRC / 'reference').mkdir(parents=True, exist_ok=True)
    refs = key_reference()
    head = (
        '# Configuration keys\n\nEvery key a recipe, `llmft train key=value` or a sweep accepts, generated from the '
        f'argument dataclasses: {len(refs)} keys, each with its type, default, what it does and the checks that read '
        'it (`check_*` refuse a bad combination, `resolve_*` also set a value). The last group holds the keys of '
        'LLaMA-Factory that llmft knows but does not carry: accepted at their LLaMA-Factory default, refused by name '
        'otherwise. Every key has its own address (`reference/keys/#lora_rank`), which the API pages and '
        '`llmft keys PATTERN` (the same reference, filtered, on the command line) link to.\n\n'
    )
    (SRC / 'reference' / 'keys.md').write_text(head + keys_markdown(refs))
    rows = template_rows()
    for r in rows:
        r['default system'] = r['default system'][:80] + ('...' if len(r['default system']) > 80 else '')
    head = (f'# Chat templates\n\nThe {len(rows)} registered chat templates, generated from the registry '
            '(`llmft templates` prints the same). A template with a published jinja template is checked against it '
            'token for token when its family registers (`data.families.*`); one without (column *verified*) is checked '
            "against LLaMA-Factory 0.9.5's rendering instead, and says why. `llmft templates --diff-lf` lists where "
            'a template deliberately differs from LLaMA-Factory 0.9.5.\n\n')
    table = html_table(list(rows[0]), [list(r.values()) for r in rows])
    (SRC / 'reference' / 'templates.md').write_text(head + f'<div class="llmft-output">\n{table}\n</div>\n')


def hand_pages() -> dict[str, Path]:
    "The hand-written pages of `docs/`: site path -> source file."
    pages = {'index.md': ROOT / 'docs' / 'home.md', 'install.md': ROOT / 'docs' / 'install.md',
             'contributing.md': ROOT / 'docs' / 'contributing.md'}
    pages.update({f'guides/{name}': ROOT / 'docs' / 'guides' / name for _, name in GUIDES})
    pages.update({f'explain/{name}': ROOT / 'docs' / name for _, name in EXPLAIN})
    return pages


def write_static(partial:bool=False):
    ("The hand-written pages of `docs/` (home, install, guides, explanations; every `{n_...}` figure filled from the "
     "code, the same on every page), plotly.js, the site's CSS and JS.")
    import plotly
    from llmft.dash.snapshot import PLOTLY_BOOT
    from readme import figures, fill
    figs = figures()
    for dst, src in hand_pages().items():
        if not src.exists() and partial and dst == 'index.md': src = ROOT / 'README.md'
        if not src.exists() and partial: continue   # a quick look (`--only`) at a checkout whose pages are on the way
        if not src.exists(): sys.exit(f'docs: {src.relative_to(ROOT)} is missing (a page of the navigation)')
        (SRC / dst).parent.mkdir(parents=True, exist_ok=True)
        (SRC / dst).write_text(render_math(fill(src.read_text(), figs)))
    js = SRC / 'assets' / 'js'
    js.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', js / 'plotly.min.js')
    (js / 'llmft.js').write_text(f"document.addEventListener('DOMContentLoaded', () => {{\n{PLOTLY_BOOT}\n}});\n")
    (SRC / 'assets' / 'llmft.css').write_text((ROOT / 'docs' / 'llmft.css').read_text())
    shutil.copytree(ROOT / 'docs' / 'images', SRC / 'assets' / 'images', dirs_exist_ok=True)   # screenshots


# ---------------------------------------------------------------- the site

def mkdocs_config(nav:dict) -> dict:
    "MkDocs settings: Material theme, offline (no web fonts, no CDN), strict (a broken internal link fails the build)."
    api = [
        {layer.capitalize(): pages} for layer in [n for _, n in LAYERS] for pages in [nav['api'].get(layer)] if pages
    ]
    return {
        'site_name': 'llmft',
        'site_description': 'Jupyter-native fine-tuning of large language models',
        'docs_dir': str(SRC),
        'site_dir': str(SITE),
        'strict': True,
        'use_directory_urls': True,
        # the sitemap lists the pages at the published address (doc_host + doc_baseurl of settings.ini); no repo_url:
        # Material would fetch the repository's stars from a code-hosting API on every page, which fails offline
        'site_url': 'https://llmft.github.io/llmft/',
        'theme': {
            'name': 'material',
            'font': False,
            'features': ['navigation.sections', 'navigation.top', 'search.highlight', 'content.code.copy',
                         'toc.follow'],
            'palette': {'primary': 'indigo', 'accent': 'deep orange'},
        },
        'plugins': [{'search': {'separator': r'[\s\-,:!=\[\]()"/]+|\.(?!\d)'}}],
        'markdown_extensions': ['tables', 'attr_list', 'md_in_html', 'admonition', 'def_list',
                                {'toc': {'permalink': True, 'toc_depth': 3}}, 'pymdownx.superfences',
                                {'pymdownx.highlight': {'use_pygments': True}}],
        'extra_css': ['assets/llmft.css'],
        'extra_javascript': ['assets/js/plotly.min.js', 'assets/js/llmft.js'],
        'validation': {'links': {'anchors': 'info', 'unrecognized_links': 'info'}},
        'nav': [
            {'Home': 'index.md'},
            *([{'Install': 'install.md'}] if (SRC / 'install.md').exists() else []),
            {'Guides': [{t: f'guides/{f}'} for t, f in GUIDES if (SRC / 'guides' / f).exists()]},
            {'Tutorials': nav['tutorials']},
            {'Explanations': [{t: f'explain/{f}'} for t, f in EXPLAIN]},
            {'Reference': [{'Configuration keys': 'reference/keys.md'}, {'Chat templates': 'reference/templates.md'}]},
            {'API': api},
            {'Contributing': 'contributing.md'},
        ],
    }


def build(jobs:int=2, only:str|None=None, run:bool=True, out:str|None=None):
    "Execute the notebooks (or reuse them), write every page, and render the site into `_docs/` (or `out`/site)."
    import yaml
    global SRC, SITE
    if out: SRC, SITE = Path(out).resolve() / 'src', Path(out).resolve() / 'site'
    start = time.time()
    done = run_notebooks(jobs, only, run)
    shutil.rmtree(SRC, ignore_errors=True)
    nav = write_pages(done)
    write_reference()
    write_static(partial=bool(only))
    cfg = SRC.parent / f'{SRC.name}.yml'
    cfg.write_text(yaml.safe_dump(mkdocs_config(nav), sort_keys=False, allow_unicode=True))
    r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '-q', '-f', str(cfg)], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode: sys.exit(f'docs: mkdocs failed:\n{r.stdout[-4000:]}{r.stderr[-4000:]}')
    pages = len(list(SITE.rglob('index.html')))
    print(f'docs: {pages} pages in {SITE}/ ({time.time() - start:.0f} s)')
    report_hidden(done)
    from docs_check import check_site
    problems = check_site(SITE)
    if problems and not only:
        sys.exit(f'docs: {len(problems)} problems on the pages (tools/docs_check.py):\n' + '\n'.join(problems))
    print('docs check: ' + (f'{len(problems)} problems (a partial build: not fatal)\n' + '\n'.join(problems)
                            if problems else 'clean'))


def report_hidden(done:dict[Path, Path]):
    "Say how many library warnings the pages leave out, and keep them in `_proc/hidden-warnings.txt`."
    lines = []
    for nb, proc in done.items():
        f = Path(f'{proc}.hidden.json')
        if f.exists(): lines += [f'{nb.relative_to(ROOT)}: {w}' for w in json.loads(f.read_text())]
    (CACHE / 'hidden-warnings.txt').write_text(''.join(l + '\n' for l in lines))
    if lines: print(f'docs: {len(lines)} library warnings left out of the pages, listed in _proc/hidden-warnings.txt')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--jobs', type=int, default=2, help='notebooks executed at once')
    ap.add_argument('--only', help='build only the notebooks whose file name matches this glob (a quick look)')
    ap.add_argument('--no-exec', action='store_true', help="render without running the notebooks (no outputs)")
    ap.add_argument('--out', help='write the Markdown and the site into OUT/src and OUT/site instead of _docs_src, _docs')
    a = ap.parse_args()
    build(a.jobs, a.only, not a.no_exec, a.out)

"""`make docs`: the documentation site, built offline into `_docs/` from the notebooks, the tutorials and `docs/`.

Each notebook is executed cell by cell and processed by nbdev's own notebook processors (hidden and exported cells
dropped, `show_doc` tables added for every exported symbol), its outputs turned into Markdown (tables and text as they
are, plotly charts as interactive figures, dashboards as static HTML snapshots: `llmft.dash.snapshot`), and MkDocs
with the Material theme renders the pages, the sidebar and the search index. Why MkDocs and not Quarto: `docs/site.md`.

    python tools/docs.py [--jobs N] [--only GLOB] [--no-exec]

Executed notebooks are cached in `_proc/` by the hash of the notebook, the library and the data, so a rebuild runs only
what changed. A notebook whose cell raises fails the build with the notebook, the cell and the error.
"""
import argparse, base64, fnmatch, hashlib, html, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, SITE, CACHE = ROOT / '_docs_src', ROOT / '_docs', ROOT / '_proc'
LAYERS = [(0, 'core'), (10, 'hparams'), (20, 'data'), (40, 'model'), (50, 'train'), (70, 'eval'), (75, 'infer'),
          (80, 'export'), (85, 'launch'), (90, 'dash')]   # DESIGN §2: the notebook number is the layer
SKIP_FLAGS = {'gpu', 'multigpu', 'hub'}                  # cells that need what a docs build has not
EXEC_VERSION = 2                                         # bump when `execute` changes: cached notebooks run again
MAX_TEXT_LINES = 60                                      # longer text outputs are cut, saying how much was left out
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
            self.k.cell(cell)
            if self.k.exc:
                raise RuntimeError(f'cell {cell.idx_} raised {type(self.k.exc).__name__}: {self.k.exc}\n{cell.source}')
            for o in cell.get('outputs', []):
                static = displayed_html(o.get('data', {}))
                if static is not None: o['data'] = {'text/html': static}
    return exec_all


def _fresh_output_dir(nb, tmp:str):
    "A parameterised notebook writes its runs to `tmp`, as a papermill run would: not into an earlier build's folders."
    from execnb.nbio import dict2nb, mk_cell
    for i, c in enumerate(nb.cells):
        if 'parameters' in c.get('metadata', {}).get('tags', []) and re.search(r'^output_dir\s*=', c.source, re.M):
            nb.cells.insert(i + 1, dict2nb({'cells': [mk_cell(f'#| hide\noutput_dir = {tmp!r}')]}).cells[0])
            return


def _end_children():
    "Processes a notebook left running (a torchrun it started and did not wait for) end with it."
    import psutil
    for child in psutil.Process().children(recursive=True):
        try: child.kill()
        except psutil.NoSuchProcess: pass


def execute(job):
    "Execute and process one notebook (`src`) into `dst` with nbdev's processors; returns (src, seconds, error)."
    src, dst, run, threads = job
    import tempfile
    from execnb.nbio import read_nb, write_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults, exec_show_docs
    start, cwd, tmp = time.time(), os.getcwd(), tempfile.mkdtemp(prefix='llmft-docs-')
    os.environ.update(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', TRANSFORMERS_OFFLINE='1', MPLBACKEND='Agg',
                      OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))   # read when torch first loads
    try:
        os.chdir(Path(src).parent)
        nb = read_nb(src)
        _fresh_output_dir(nb, tmp)
        procs = [p for p in FilterDefaults().base_procs() if p.__name__ != 'insert_warning']
        if run: procs = [_exec_processor() if p is exec_show_docs else p for p in procs]
        NBProcessor(nb=nb, procs=procs).process()
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        write_nb(nb, dst)
        return src, time.time() - start, None
    except Exception as e:
        return src, time.time() - start, f'{type(e).__name__}: {e}'
    finally:
        _end_children()
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- notebooks to Markdown

def _text_block(text:str) -> str:
    lines = text.rstrip('\n').split('\n')
    if not text.strip(): return ''
    if len(lines) > MAX_TEXT_LINES:
        lines = lines[:MAX_TEXT_LINES] + [f'... ({len(lines) - MAX_TEXT_LINES} more lines)']
    return '```text\n' + '\n'.join(lines).replace('```', "'''") + '\n```\n'


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
        elif c['cell_type'] == 'markdown': out.append(src + '\n')
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
    for folder, pattern in (('llmft', '**/*.py'), ('data', '*'), ('examples', '**/*')):
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
        for old in set(CACHE.rglob('*.ipynb')) - set(done.values()): old.unlink()
    return done


def write_pages(done:dict[Path, Path]) -> dict:
    "Markdown of every page into `_docs_src/`; returns the navigation."
    assets = SRC / 'assets' / 'img'
    assets.mkdir(parents=True, exist_ok=True)
    api, tutorials = {}, []
    for nb, proc in done.items():
        section = 'api' if nb.parent == ROOT / 'nbs' else 'tutorials'
        stem = module_of(nb) if section == 'api' else nb.stem
        title, md = notebook_md(proc, assets, stem, '' if section == 'api' else '../api/')
        (SRC / section / f'{stem}.md').parent.mkdir(parents=True, exist_ok=True)
        (SRC / section / f'{stem}.md').write_text(md)
        if section == 'api': api.setdefault(layer_of(nb), []).append({stem: f'api/{stem}.md'})
        else: tutorials.append({title.replace('`', ''): f'tutorials/{stem}.md'})
    return {'api': api, 'tutorials': tutorials}


def write_reference():
    "Generated pages: every configuration key, every registered chat template."
    from llmft.hparams.keys import key_reference, keys_markdown
    from llmft.data.templates import template_rows
    from llmft.launch.report import html_table
    (SRC / 'reference').mkdir(parents=True, exist_ok=True)
    refs = key_reference()
    head = (
        '# Configuration keys\n\nEvery key a recipe, `llmft train key=value` or a sweep accepts, generated from the '
        f'argument dataclasses ({len(refs)} keys, the last group those of LLaMA-Factory that llmft knows but does not '
        'carry: accepted at their LLaMA-Factory default, refused by name otherwise): its type and default, what it '
        'does, and the checks that read it '
        '(`check_*` refuse a bad combination, `resolve_*` also set a value, `__post_init__` validates on load). '
        'The same, filtered, on the command line: `llmft keys PATTERN`.\n\n'
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


def write_static():
    "Home page (the README), the hand-written pages of `docs/`, plotly.js, the site's CSS and JS."
    import plotly
    from llmft.dash.snapshot import PLOTLY_BOOT
    (SRC / 'index.md').write_text((ROOT / 'README.md').read_text())
    (SRC / 'explain').mkdir(parents=True, exist_ok=True)
    for _, name in EXPLAIN: shutil.copy(ROOT / 'docs' / name, SRC / 'explain' / name)
    shutil.copy(ROOT / 'docs' / 'contributing.md', SRC / 'contributing.md')
    js = SRC / 'assets' / 'js'
    js.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', js / 'plotly.min.js')
    (js / 'llmft.js').write_text(f"document.addEventListener('DOMContentLoaded', () => {{\n{PLOTLY_BOOT}\n}});\n")
    (SRC / 'assets' / 'llmft.css').write_text((ROOT / 'docs' / 'llmft.css').read_text())


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
        'repo_url': 'https://github.com/llmft/llmft',
        'edit_uri': '',
        'theme': {
            'name': 'material',
            'font': False,
            'features': ['navigation.sections', 'navigation.top', 'search.highlight', 'content.code.copy',
                         'toc.follow'],
            'palette': {'primary': 'indigo', 'accent': 'deep orange'},
        },
        'plugins': [{'search': {'separator': r'[\s\-,:!=\[\]()"/]+|\.(?!\d)'}}],
        'markdown_extensions': ['tables', 'attr_list', 'md_in_html', 'admonition', 'def_list',
                                {'toc': {'permalink': True}}, 'pymdownx.superfences',
                                {'pymdownx.highlight': {'use_pygments': True}}],
        'extra_css': ['assets/llmft.css'],
        'extra_javascript': ['assets/js/plotly.min.js', 'assets/js/llmft.js'],
        'validation': {'links': {'anchors': 'info', 'unrecognized_links': 'info'}},
        'nav': [
            {'Home': 'index.md'},
            {'Tutorials': nav['tutorials']},
            {'Explanations': [{t: f'explain/{f}'} for t, f in EXPLAIN]},
            {'Reference': [{'Configuration keys': 'reference/keys.md'}, {'Chat templates': 'reference/templates.md'}]},
            {'API': api},
            {'Contributing': 'contributing.md'},
        ],
    }


def build(jobs:int=2, only:str|None=None, run:bool=True):
    "Execute the notebooks (or reuse them), write every page, and render the site into `_docs/`."
    import yaml
    start = time.time()
    done = run_notebooks(jobs, only, run)
    shutil.rmtree(SRC, ignore_errors=True)
    nav = write_pages(done)
    write_reference()
    write_static()
    cfg = ROOT / '_docs_src.yml'
    cfg.write_text(yaml.safe_dump(mkdocs_config(nav), sort_keys=False, allow_unicode=True))
    r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '-q', '-f', str(cfg)], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode: sys.exit(f'docs: mkdocs failed:\n{r.stdout[-4000:]}{r.stderr[-4000:]}')
    pages = len(list(SITE.rglob('index.html')))
    print(f'docs: {pages} pages in {SITE.relative_to(ROOT)}/ ({time.time() - start:.0f} s)')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--jobs', type=int, default=2, help='notebooks executed at once')
    ap.add_argument('--only', help='build only the notebooks whose file name matches this glob (a quick look)')
    ap.add_argument('--no-exec', action='store_true', help="render without running the notebooks (no outputs)")
    a = ap.parse_args()
    build(a.jobs, a.only, not a.no_exec)

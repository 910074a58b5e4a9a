"""The hand-written pages (`docs/home.md`, `docs/install.md`, `docs/guides/*.md`) say only what the code has: every
`{n_...}` figure is one `tools/readme.py` fills, every recipe key and `key=value` word is a configuration key, every
`llmft` command and flag exists, and every relative link points at a page (and a key anchor) of the site."""
import contextlib, io, re, shlex, sys
from pathlib import Path
import pytest, yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'tools'))
import docs, readme  # noqa: E402  (tools/docs.py, tools/readme.py)

DOCS = ROOT / 'docs'
PAGES = {DOCS / 'home.md': 'index.md', DOCS / 'install.md': 'install.md',
         **{p: f'guides/{p.name}' for p in sorted((DOCS / 'guides').glob('*.md'))}}   # source -> its place in the site
SWEEP_FILE = {'recipe', 'notebook', 'grid', 'zip', 'random', 'points'}                # keys that make a YAML a sweep


def rel(path:Path) -> str:
    "A page's path as a message names it: from the repository root."
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def site_pages() -> set[str]:
    "Every page of the site as `tools/docs.py` lays it out."
    out = set(PAGES.values()) | {'contributing.md', 'reference/keys.md', 'reference/templates.md'}
    out |= {f'explain/{name}' for _, name in docs.EXPLAIN}
    for section, nb in docs.notebooks():
        out.add(f'api/{docs.module_of(nb)}.md' if section == 'api' else f'tutorials/{nb.stem}.md')
    return out


def slug(heading:str) -> str:
    "The anchor Python-Markdown's toc gives a heading."
    text = re.sub(r'[`*_\[\]]|\(.*?\)', '', heading).strip().lower()
    return re.sub(r'[-\s]+', '-', re.sub(r'[^\w\s-]', '', text))


def blocks(text:str):
    "(language, first line number, lines) of each fenced block of a Markdown page."
    lines, i = text.split('\n'), 0
    while i < len(lines):
        m = re.match(r'\s*```(\w*)', lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith('```'): j += 1
            yield m[1], i + 2, lines[i + 1:j]
            i = j
        i += 1


def prose(text:str):
    "(line number, line) of the lines outside fenced blocks."
    fenced = False
    for n, line in enumerate(text.split('\n'), 1):
        if line.strip().startswith('```'): fenced = not fenced
        elif not fenced: yield n, line


@pytest.fixture(scope='module')
def known_keys() -> set[str]:
    from llmft.hparams.keys import key_reference
    from llmft.launch.dist import LAUNCH_KEYS
    return {r.key for r in key_reference()} | set(LAUNCH_KEYS)


@pytest.fixture(scope='module')
def commands() -> dict:
    "Every `llmft` subcommand -> the words its own usage (`llmft SUB --help`) names: its flags and its keys."
    from llmft.launch.cli import COMMANDS, main
    out = {}
    for sub in COMMANDS:
        if sub.startswith('-'): continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()): main([sub, '--help'])
        out[sub] = buf.getvalue()
    return out


def test_pages_exist():
    assert (DOCS / 'home.md').exists() and (DOCS / 'install.md').exists()
    assert {'data.md', 'train.md', 'migrate.md', 'troubleshooting.md'} <= {p.name for p in PAGES}


def test_figures_are_known():
    figs, bad = readme.figures(), []
    for path in PAGES:
        for n, line in enumerate(path.read_text().split('\n'), 1):
            bad += [f'{rel(path)}:{n}: {{{m}}} is not a figure of tools/readme.py'
                    for m in re.findall(r'\{(n_\w+)\}', line) if m not in figs]
    assert not bad, '\n'.join(bad)


def yaml_key_problems(path:Path, known:set) -> list[str]:
    "Keys of the recipes (and of a recipe sweep's points) in the page's ```yaml blocks that are no configuration key."
    bad = []
    for lang, start, lines in blocks(path.read_text()):
        if lang not in ('yaml', 'yml'): continue
        data = yaml.safe_load('\n'.join(lines))
        if not isinstance(data, dict): continue
        where = {k: start + i for i, l in enumerate(lines) for k in [l.split(':')[0].strip()] if k}
        if SWEEP_FILE & set(data):
            if 'recipe' not in data: continue   # a notebook's parameters are its own
            sub = [k for part in ('grid', 'zip', 'fixed') for k in (data.get(part) or {})]
            sub += [k for p in data.get('points') or [] for k in p]
            bad += [f'{rel(path)}:{where.get(k, start)}: sweep key {k!r} is no configuration key'
                    for k in sub if k not in known]
            continue
        bad += [f'{rel(path)}:{where.get(k, start)}: recipe key {k!r} is no configuration key'
                for k in data if k not in known]
    return bad


def test_recipe_keys_are_known(known_keys):
    bad = [p for path in PAGES for p in yaml_key_problems(path, known_keys)]
    assert not bad, '\n'.join(bad)


def llmft_calls(line:str):
    "The word lists of the `llmft ...` commands on a shell line (after `$ `, environment settings, `&&`, `|`, `;`)."
    line = re.sub(r'(^|\s)#.*', '', line.strip().removeprefix('$ '))
    for part in re.split(r'&&|\|\||[|;]', line):
        try: words = shlex.split(part)
        except ValueError: continue
        while words and re.match(r'^[A-Z_]+=', words[0]): words = words[1:]
        if words and Path(words[0]).name == 'llmft': yield words[1:]


def command_problems(path:Path, known:set, commands:dict) -> list[str]:
    "`llmft` commands in the page's shell blocks with an unknown subcommand, flag or key."
    from llmft.launch.batch import sweep_usage
    sweep_keys = set(re.findall(r'^  (\w+)\s', sweep_usage(), re.M))
    bad = []
    for lang, start, lines in blocks(path.read_text()):
        if lang not in ('bash', 'shell', 'sh', 'console'): continue   # a ```text block shows output, mistakes included
        for i, line in enumerate(lines):
            for words in llmft_calls(line):
                at = f'{rel(path)}:{start + i}'
                if not words or words[0] not in commands:
                    bad.append(f'{at}: llmft {words[0] if words else ""!s} is no llmft command')
                    continue
                sub, usage = words[0], commands[words[0]]
                for w in words[1:]:
                    if w.startswith('--') and w not in ('--help',) and w not in re.findall(r'--[\w-]+', usage):
                        bad.append(f'{at}: llmft {sub} has no flag {w}')
                    elif re.match(r'^\w+=', w):
                        key = w.split('=')[0]
                        ok = {'sweep': sweep_keys, 'expand': {'num_expand'}}.get(sub, known)
                        if key not in ok: bad.append(f'{at}: {key!r} (in llmft {sub}) is no configuration key')
    return bad


def test_commands_exist(known_keys, commands):
    assert {'train', 'check-data', 'templates', 'keys', 'sweep', 'env'} <= set(commands)
    assert '--diff-lf' in commands['templates'] and '--check' in commands['env'] and '--list' in commands['sweep']
    bad = [p for path in PAGES for p in command_problems(path, known_keys, commands)]
    assert not bad, '\n'.join(bad)


def link_problems(path:Path, pages:set, keys:set) -> list[str]:
    "Relative links of the page that point at no page of the site, or at no anchor of it."
    import posixpath
    here, bad = PAGES[path], []
    heads = {site: re.findall(r'^#+\s+(.+)$', src.read_text(), re.M) for src, site in PAGES.items()}
    anchors = {site: set(map(slug, hs)) for site, hs in heads.items()}
    for n, line in prose(path.read_text()):
        for target in re.findall(r'\]\(([^)\s]+)\)', line):
            if re.match(r'^[a-z]+:', target): continue   # an external address
            file, _, anchor = target.partition('#')
            site = posixpath.normpath(posixpath.join(posixpath.dirname(here), file)) if file else here
            at = f'{rel(path)}:{n}'
            if site.startswith('assets/images/'):   # a screenshot: docs/images/ is copied there
                if not (DOCS / 'images' / posixpath.basename(site)).exists(): bad.append(f'{at}: {target}: no such image')
            elif site not in pages: bad.append(f'{at}: {target} points at no page of the site ({site})')
            elif anchor and site == 'reference/keys.md' and anchor not in keys:
                bad.append(f'{at}: {target}: {anchor!r} is no configuration key')
            elif anchor and site in anchors and anchor not in anchors[site]:
                bad.append(f'{at}: {target}: no heading #{anchor} on {site}')
    return bad


def test_links_resolve(known_keys):
    pages = site_pages()
    assert {'api/train.tuner.md', 'tutorials/01_quickstart_sft.md', 'explain/run-folder.md'} <= pages
    bad = [p for path in PAGES for p in link_problems(path, pages, known_keys)]
    assert not bad, '\n'.join(bad)


def test_checks_catch_mistakes(tmp_path, known_keys, commands):
    "Each check finds a planted mistake, with the file and line."
    page = tmp_path / 'zz-planted.md'
    PAGES[page] = 'guides/zz-planted.md'
    try:
        page.write_text('# Planted\n\n[x](../reference/keys.md#lora_rnak) [y](nowhere.md) [z](train.md#nosuch)\n\n'
                        '```yaml\nstage: sft\nlearnig_rate: 1.0\n```\n\n'
                        '```bash\nllmft train r.yaml lora_rnak=8 && llmft frob\nllmft templates --difflf\n```\n')
        assert [p.split(': ', 1)[0] for p in yaml_key_problems(page, known_keys)] == ['zz-planted.md:7']
        cmds = command_problems(page, known_keys, commands)
        assert len(cmds) == 3 and all(':11' in c or ':12' in c for c in cmds), cmds
        links = link_problems(page, site_pages(), known_keys)
        assert len(links) == 3 and all(l.startswith('zz-planted.md:3') for l in links), links
    finally: del PAGES[page]

"""The docs-quality check: what must never reach a page of the site (`make docs` fails on it; tests/test_docs_quality.py).

    python tools/docs_check.py [SITE]    # default: _docs/

Each rule reads the built HTML of every page: the build machine's paths, terminal escapes, warnings and tracebacks in
outputs, types nbdev invented (`NoneType=`), raw LaTeX, empty charts and monitor panels, a page without a heading, a
broken link or anchor, a request to another host, an empty sitemap. A problem is one line: page, rule, what was found.
"""
import getpass, json, re, sys, tempfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / '_docs'
SKIP = ('search/', 'assets/', '404.html')
FETCHED_RELS = ('stylesheet', 'icon', 'preload', 'modulepreload', 'prefetch', 'manifest')   # not pages a reader opens by a link (the theme's own)


def machine_paths() -> list[str]:
    "Paths that name this machine: the checkout, the home folder, the temporary folder, installed packages."
    found = [str(ROOT), str(Path.home()), tempfile.gettempdir(), f'/home/{getpass.getuser()}']
    return sorted({p.rstrip('/') + '/' for p in found if len(p) > 1} | {'/root/', 'site-packages/', '/tmp/'})


class Page(HTMLParser):
    "One page as the rules see it: the article's text, its outputs, code, headings, links, ids, external requests."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.outputs, self.plain, self.pre = [], [], [], [], []
        self.h1, self.links, self.ids, self.external, self.figures = 0, [], set(), [], []

    def _inside(self, what:str) -> bool: return any(what in cls for _, cls in self.stack)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        for key in ('src', 'href'):
            v = a.get(key) or ''
            fetched = tag != 'link' or (a.get('rel') or '') in FETCHED_RELS   # a canonical link is only an address
            if tag in ('script', 'img', 'iframe', 'link', 'source', 'video', 'audio') and fetched and urlparse(v).netloc:
                self.external.append(f'<{tag} {key}="{v}">')
        if 'llmft-plotly' in (a.get('class') or ''): self.figures.append(unescape(a.get('data-figure', '{}')))
        if tag == 'h1' and self._inside('md-content__inner'): self.h1 += 1
        if tag not in ('br', 'img', 'hr', 'input', 'meta', 'link', 'mspace', 'source', 'wbr'):
            self.stack.append((tag, a.get('class') or ''))

    def handle_endtag(self, tag):
        if all(t != tag for t, _ in self.stack): return   # a void element's end, or a stray one
        while self.stack:
            if self.stack.pop()[0] == tag: break

    def handle_data(self, data):
        if not self._inside('md-content__inner'): return
        self.text.append(data)
        if any(t == 'pre' for t, _ in self.stack): self.pre.append(data)
        if self._inside('llmft-output'): self.outputs.append(data)
        elif not any(t in ('code', 'pre', 'script', 'style', 'math') for t, _ in self.stack): self.plain.append(data)


def parse(html:str) -> Page:
    p = Page()
    p.feed(html)
    return p


WARNING = re.compile(r'\b\w*(Warning|Error): |warnings\.warn\(|Traceback \(most recent call last\)')
ANSI = re.compile(r'\x1b|\u2337\[|\[\d+(;\d+)*m|\[\d+[ABCDK]\b')   # in an output: the escape, or what is left of it
ESC = re.compile(r'[\x1b\u2337]')                                    # anywhere: the escape character itself
LATEX = re.compile(r'\$\$|\$[^$\s][^$]*?(\\[A-Za-z]+|[_^]\{)[^$]*?\$')


def empty_panels(figure_json:str) -> list[str]:
    "The panels of a plotly figure with nothing drawn in them: every axis pair no trace with points uses."
    try: fig = json.loads(figure_json)
    except ValueError: return ['a figure whose JSON does not parse']
    def has_points(t): return any(len(t.get(k) or []) for k in ('x', 'y', 'values', 'z', 'r'))
    used = {(t.get('xaxis', 'x'), t.get('yaxis', 'y')) for t in fig.get('data', []) if has_points(t)}
    if not used: return ['a chart with no data']
    layout = fig.get('layout', {})
    axes = sorted(k for k in layout if re.fullmatch(r'xaxis\d*', k))
    used_x = {x for x, _ in used}
    return [f"an empty panel ({layout[k].get('title', {}).get('text', k) if isinstance(layout[k].get('title'), dict) else k})"
            for k in axes if 'x' + k[5:] not in used_x and not layout[k].get('matches') and layout[k].get('visible', True)]


def page_problems(html:str, url:str) -> list[str]:
    "What is wrong with one page (its HTML)."
    p, out = parse(html), []
    text, outputs, plain = ''.join(p.text), ''.join(p.outputs), ''.join(p.plain)
    for path in machine_paths():
        if path in text:
            i = text.index(path)
            out.append(f'a path of the build machine: ...{text[max(0, i - 30):i + 50]!r}')
    if (m := ANSI.search(outputs) or ESC.search(text)): out.append(f'a terminal escape: {m.group(0)!r}')
    if (m := WARNING.search(outputs)): out.append(f'a warning or traceback in an output: {outputs[m.start():m.start() + 100]!r}')
    if 'NoneType=' in ''.join(p.pre): out.append('`NoneType=` in a signature (a type made up from a default)')
    if (m := LATEX.search(plain)): out.append(f'raw LaTeX: {m.group(0)[:80]!r}')
    for fig in p.figures: out += [f'{e} in a chart' for e in empty_panels(fig)]
    if p.h1 != 1: out.append(f'{p.h1} top headings (h1), one expected')
    out += [f'a request to another host: {e}' for e in p.external]
    return out


def pages(site:Path) -> dict[str, str]:
    "Site-relative URL of every page ('' for the home page, 'api/core/', ...) -> its HTML."
    out = {}
    for f in sorted(site.rglob('index.html')):
        rel = f.relative_to(site).as_posix()
        if not rel.startswith(SKIP): out[rel[:-len('index.html')]] = f.read_text(encoding='utf-8')
    return out


def link_problems(site:Path, html_of:dict[str, str]) -> list[str]:
    "Every link between pages leads to a page or a file, and every `#anchor` to an id on its page."
    ids = {url: parse(h).ids for url, h in html_of.items()}
    out = []
    for url, h in html_of.items():
        for href in parse(h).links:
            if urlparse(href).scheme or href.startswith('mailto:'): continue
            joined, frag = urldefrag(urljoin(f'http://site/{url}', href))
            path = unquote(urlparse(joined).path).lstrip('/')
            if path.endswith('index.html'): path = path[:-len('index.html')]
            if path and not path.endswith('/') and (site / path).is_file(): continue   # an asset or a file
            if path and not path.endswith('/'): path += '/'
            if path not in ids and not (site / path / 'index.html').exists():
                out.append(f'{url or "(home)"}: a broken link: {href}')
            elif frag and path in ids and frag not in ids[path]:
                out.append(f'{url or "(home)"}: a broken anchor: {href}')
    return out


def check_site(site:Path=SITE) -> list[str]:
    "Every problem of the built site, one line each (empty: the site is clean)."
    html_of = pages(site)
    out = [f'{url or "(home)"}: {e}' for url, h in html_of.items() for e in page_problems(h, url)]
    out += link_problems(site, html_of)
    sitemap = site / 'sitemap.xml'
    n = sitemap.read_text().count('<loc>') if sitemap.exists() else 0
    if n < len(html_of): out.append(f'sitemap.xml: {n} pages listed, {len(html_of)} built')
    return out


if __name__ == '__main__':
    problems = check_site(Path(sys.argv[1]) if len(sys.argv) > 1 else SITE)
    print('\n'.join(problems) or 'docs check: clean')
    sys.exit(1 if problems else 0)

"""The documentation site in a real browser: `_docs/` (built by `make docs`; rebuilt here from the cache when stale) is
served on localhost and opened in headless Chromium (Debian's `chromium`, driven by Playwright). The home page loads,
every exported module has a page, a crawl finds no broken internal link or missing asset, a plotly chart draws in a
tutorial, the search finds `run_exp` (and a key's own entry first), the site passes the docs-quality check
(tools/docs_check.py), and a reader's pages open with every other host unreachable: no request leaves localhost, no console
error, math drawn. Screenshots: `tests/artifacts/docs_*.png`."""
import http.server, json, re, shutil, socket, subprocess, sys, threading, urllib.request
from functools import partial
from html.parser import HTMLParser
from urllib.parse import urljoin, urldefrag, urlparse
import pytest
from conftest import ROOT

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
SITE = ROOT / '_docs'
pytestmark = pytest.mark.slow


def exported_modules() -> list[str]:
    mods = []
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            m = re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
            if m: mods.append(m.group(1))
    return mods


class Links(HTMLParser):
    "Every link and asset a page refers to."
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ('href', 'src'):
            if a.get(key) and tag in ('a', 'link', 'script', 'img', 'iframe', 'source'): self.urls.append(a[key])


def search(page, query:str, seconds:int=120) -> list[str]:
    ("The result links for `query` in the site's search box, typed key by key as a reader types (the theme searches on "
     "key events: a value set at once on a page's first visit is not searched), again until results show.")
    page.locator('label.md-search__icon, .md-search__input').first.click()
    box = page.locator('input.md-search__input')
    for _ in range(seconds // 10):
        box.fill('')
        box.press_sequentially(query, delay=30)
        try:
            page.wait_for_selector('.md-search-result__item', timeout=10_000)
            return page.eval_on_selector_all('.md-search-result__item a', 'els => els.map(e => e.href)')
        except Exception: continue
    raise AssertionError(f'the search found nothing for {query!r} in {seconds} s')


@pytest.fixture(scope='module')
def site():
    "The site, built (or refreshed from the executed-notebook cache), served on a free localhost port."
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'docs.py')], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.handle_error = lambda *a: None   # a page the browser left before it loaded (a broken pipe) is not an error
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}/'
    server.shutdown()


def fetch(url:str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            ctype = r.headers.get('content-type', '')
            return r.status, r.read().decode('utf-8', 'replace') if 'html' in ctype else ''
    except urllib.error.HTTPError as e: return e.code, ''


def test_every_module_has_a_page(site):
    missing = []
    for mod in exported_modules():
        status, page = fetch(f'{site}api/{mod}/')
        if status != 200 or not re.search(rf'<h1[^>]*>\s*{re.escape(mod)}\s*<', page): missing.append(mod)
    assert len(exported_modules()) > 60
    assert not missing, f'modules without a page: {missing}'


def test_crawl_finds_no_broken_link_or_asset(site):
    seen, queue, broken, pages = set(), [site], [], 0
    while queue:
        url = queue.pop()
        if url in seen: continue
        seen.add(url)
        status, body = fetch(url)
        if status != 200:
            broken.append(url)
            continue
        if not body: continue
        pages += 1
        parser = Links()
        parser.feed(body)
        for ref in parser.urls:
            target = urldefrag(urljoin(url, ref))[0]
            if urlparse(target).netloc == urlparse(site).netloc and target not in seen: queue.append(target)
    assert pages > 80, pages
    assert not broken, f'{len(broken)} broken internal links or assets: {broken[:20]}'


def test_pages_render_in_chromium(site):
    assert CHROMIUM, "the docs test needs Debian's chromium: apt-get install chromium (make install does it as root)"
    from playwright.sync_api import sync_playwright
    shots = ROOT / 'tests' / 'artifacts'
    shots.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu',
                                    '--disable-dev-shm-usage', '--disable-background-networking'])
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        page.goto(site, timeout=60_000)
        assert 'llmft' in page.title()
        nav = page.inner_text('nav.md-nav--primary')
        assert all(s in nav for s in ('Tutorials', 'API', 'Configuration keys', 'Chat templates', 'Contributing'))
        page.screenshot(path=str(shots / 'docs_home.png'))
        # a plotly chart draws in a tutorial page (from the site's own plotly.js: nothing is fetched from a CDN)
        page.goto(f'{site}tutorials/01_quickstart_sft/', timeout=60_000)
        page.wait_for_selector('.llmft-plotly .main-svg', timeout=60_000)
        traces = page.evaluate("document.querySelectorAll('.llmft-plotly .scatterlayer .trace').length")
        page.screenshot(path=str(shots / 'docs_tutorial.png'), full_page=True)
        # the search finds run_exp and links to its API page
        page.goto(site, timeout=60_000)
        results = search(page, 'run_exp')
        page.screenshot(path=str(shots / 'docs_search.png'))
        browser.close()
    assert traces >= 1, traces
    assert any('/api/train.tuner/' in r for r in results), results
    assert not errors, errors


def test_the_built_site_passes_the_quality_check(site):
    sys.path.insert(0, str(ROOT / 'tools'))
    from docs_check import check_site
    problems = check_site(SITE)
    assert not problems, '\n'.join(problems[:40])


READER_PAGES = {'home': '', 'guide': 'guides/train/', 'api': 'api/train.tuner/', 'keys': 'reference/keys/',
                'tutorial': 'tutorials/01_quickstart_sft/', 'math': 'api/train.losses/'}


def test_pages_open_offline_in_chromium(site):
    "A reader's pages with every other host unreachable: no request leaves localhost, no console error, math is drawn."
    assert CHROMIUM, "the docs test needs Debian's chromium: apt-get install chromium (make install does it as root)"
    from playwright.sync_api import sync_playwright
    shots = ROOT / 'tests' / 'artifacts'
    shots.mkdir(exist_ok=True)
    outside, failed, console = [], [], []
    local = urlparse(site).netloc
    def route(r):
        if urlparse(r.request.url).netloc in (local, ''): return r.continue_()
        outside.append(r.request.url)
        return r.abort()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu',
                                    '--disable-dev-shm-usage', '--disable-background-networking'])
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        page.route('**/*', route)
        page.on('requestfailed', lambda r: failed.append(r.url))
        page.on('console', lambda m: console.append(f'{page.url}: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: console.append(f'{page.url}: {e}'))
        for name, path in READER_PAGES.items():
            page.goto(site + path, timeout=60_000, wait_until='networkidle')
            assert page.locator('article h1').count() == 1, path
            page.screenshot(path=str(shots / f'docs_{name}.png'))
            if name == 'math':
                box = page.locator('article math').first.bounding_box()
                assert box and box['width'] > 5 and box['height'] > 5, box   # drawn by the browser, not raw text
            if name == 'api':
                assert page.locator('article table th', has_text='Parameter').count() >= 1   # the parameter table
        # the search ranks a key's own entry first (results come grouped by page: the page, then its sections)
        page.goto(site, timeout=60_000)
        results = search(page, 'lora_rank')
        page.screenshot(path=str(shots / 'docs_search_key.png'))
        browser.close()
    first = urlparse(next(r for r in results if '#' in r))
    assert not outside, f'requests to other hosts: {outside[:10]}'
    assert not failed, f'failed requests: {failed[:10]}'
    assert not console, console[:10]
    assert (first.path, first.fragment) == ('/reference/keys/', 'lora_rank'), results[:5]

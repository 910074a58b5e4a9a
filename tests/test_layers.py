"No module imports from a higher layer (DESIGN §2): the band of a module is the number of the notebook that exports it."
import ast, json, re
from conftest import ROOT


def module_bands():
    bands = {}
    for nb in (ROOT / 'nbs').glob('[0-9]*.ipynb'):
        band = int(re.match(r'(\d+)', nb.name).group(1))
        for c in json.loads(nb.read_text())['cells']:
            m = re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
            if m: bands[f'llmft.{m.group(1)}'] = band
    return bands


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('llmft'): yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith('llmft'))


def test_bands_known():
    bands = module_bands()
    assert bands['llmft.core'] == 0 and bands['llmft.train.tuner'] >= 50
    for py in (ROOT / 'llmft').rglob('*.py'):
        mod = 'llmft.' + '.'.join(py.relative_to(ROOT / 'llmft').with_suffix('').parts)
        if py.name not in ('__init__.py', '_modidx.py'): assert mod in bands, f'{mod} has no notebook'


def test_no_upward_imports():
    bands, bad = module_bands(), []
    for mod, band in bands.items():
        path = ROOT / (mod.replace('.', '/') + '.py')
        for imp in imports(path):
            target = bands.get(imp)
            if target is None: continue
            if target // 10 > band // 10: bad.append(f'{mod} (band {band}) imports {imp} (band {target})')
            if imp == 'llmft.testing' and mod != 'llmft.testing': bad.append(f'{mod} imports llmft.testing (tests only)')
    assert not bad, '\n'.join(bad)


def test_no_undefined_names():
    "A notebook runs every cell in one namespace, so a name imported only by a test cell works there and fails in the library."
    import subprocess, sys
    files = [str(p) for p in (ROOT / 'llmft').rglob('*.py') if p.name not in ('__init__.py', '_modidx.py')]
    r = subprocess.run([sys.executable, '-m', 'pyflakes', *files], capture_output=True, text=True)
    undefined = [l for l in r.stdout.splitlines() if 'undefined name' in l]
    assert not undefined, '\n'.join(undefined)

"""No module imports from a higher layer (DESIGN §2): the band of a module is the number of the notebook that exports
it; inside a layer a notebook imports only from notebooks numbered before it (so the numbers read in dependency
order)."""
import ast, json, re
from conftest import ROOT


TEST_ONLY = ('llmft.testing', 'llmft.testing_mm')   # fixtures: imported by tests and test cells, never by the library


def module_order():
    "Each module's notebook position, (number, letter): `26a_data.families.meta` is (26, 'a')."
    order = {}
    for nb in (ROOT / 'nbs').glob('[0-9]*.ipynb'):
        m = re.match(r'(\d+)([a-z]*)', nb.name)
        for c in json.loads(nb.read_text())['cells']:
            found = re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
            if found: order[f'llmft.{found.group(1)}'] = (int(m.group(1)), m.group(2))
    return order


def module_bands():
    return {mod: number for mod, (number, _) in module_order().items()}


def imports(path, mod):
    "Every llmft module that `path` (module `mod`) imports, relative imports (as nbdev writes them) resolved."
    package = mod.split('.')[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            if node.module: yield '.'.join(base + [node.module])
            else: yield from ('.'.join(base + [a.name]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('llmft'): yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith('llmft'))


def test_bands_known():
    bands = module_bands()
    assert bands['llmft.core'] == 0 and bands['llmft.train.tuner'] >= 50
    for py in (ROOT / 'llmft').rglob('*.py'):
        mod = 'llmft.' + '.'.join(py.relative_to(ROOT / 'llmft').with_suffix('').parts)
        if py.name not in ('__init__.py', '_modidx.py'): assert mod in bands, f'{mod} has no notebook'


def test_no_upward_imports():
    order, bad, seen = module_order(), [], 0
    for mod, pos in order.items():
        path = ROOT / (mod.replace('.', '/') + '.py')
        for imp in imports(path, mod):
            if imp in TEST_ONLY and mod not in TEST_ONLY: bad.append(f'{mod} imports {imp} (tests only)')
            target = order.get(imp)
            if target is None: continue
            seen += 1
            if target[0] // 10 > pos[0] // 10: bad.append(f'{mod} (band {pos[0]}) imports {imp} (band {target[0]})')
            elif target > pos:
                bad.append(f'{mod} (notebook {pos}) imports {imp} (notebook {target}), numbered after it')
    assert seen > 200, f'only {seen} internal imports seen: relative imports not resolved?'
    assert not bad, '\n'.join(bad)


def test_no_undefined_names():
    "A notebook runs every cell in one namespace, so a name imported only by a test cell works there and fails in the library."
    import subprocess, sys
    files = [str(p) for p in (ROOT / 'llmft').rglob('*.py') if p.name not in ('__init__.py', '_modidx.py')]
    r = subprocess.run([sys.executable, '-m', 'pyflakes', *files], capture_output=True, text=True)
    undefined = [l for l in r.stdout.splitlines() if 'undefined name' in l]
    assert not undefined, '\n'.join(undefined)

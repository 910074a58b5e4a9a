"""Write README.md from nbs/index.ipynb without Quarto (which cannot be installed offline here).

Markdown cells are copied; code cells are shown as python blocks unless they carry a `#|` directive such as `#| hide`
(directive lines are dropped). Run from the repo root: `python tools/readme.py` (`make export` does).
"""
import json, re
from pathlib import Path


def render(nb_path='nbs/index.ipynb'):
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            m = re.match(r'^# (.+)\n+> (.+)', src)
            out.append(src if not m else f"# {m.group(1)}\n\n> {m.group(2)}" + src[m.end():])
        elif c['cell_type'] == 'code':
            lines = src.splitlines()
            if any(re.match(r'#\|\s*(hide|export)', l) for l in lines): continue
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
            if code: out.append(f'```python\n{code}\n```')
    return '<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n' + '\n\n'.join(out) + '\n'


if __name__ == '__main__':
    Path('README.md').write_text(render(), encoding='utf-8')

"""Write README.md from nbs/index.ipynb without Quarto (which cannot be installed offline here).

Markdown cells are copied; code cells are shown as python blocks unless they carry a `#|` directive such as `#| hide`
(directive lines are dropped). Counts are never typed: a markdown `{n_templates}` is filled from `figures()` (the
registry and the fixtures), so the notebook and the README say what the code has. Run from the repo root:
`python tools/readme.py` (`make export` does).
"""
import json, re
from pathlib import Path

FIXTURES = Path('tests/assets/chat_templates')


def figures() -> dict:
    "The counts the README states, counted from the template registry and the published-template fixtures."
    from llmft.data.templates import TEMPLATES, UNVERIFIED
    from llmft.data.families.parts import LF_CHECKED
    from llmft.hparams.keys import key_reference
    from llmft.hparams.model import REGISTRY
    from llmft.train.tuner import STAGES
    lf = sum(why == LF_CHECKED for why in UNVERIFIED.values())
    return dict(n_templates=len(TEMPLATES), n_published=len(TEMPLATES) - len(UNVERIFIED), n_lf_checked=lf,
                n_generic=len(UNVERIFIED) - lf, n_fixtures=len(list(FIXTURES.glob('*.jinja'))),
                n_keys=len(key_reference()), n_checks=len(REGISTRY), n_stages=len(STAGES))


def fill(text:str, figs:dict) -> str:
    "`text` with each `{n_...}` placeholder replaced by its figure (`{{n_...}}` stays as written, single-braced)."
    def sub(m):
        if m[1]: return '{' + m[1] + '}'
        if m[2] not in figs: raise KeyError(f'{{{m[2]}}} is named, but figures() has only {sorted(figs)}')
        return str(figs[m[2]])
    return re.sub(r'\{\{(n_\w+)\}\}|\{(n_\w+)\}', sub, text)


def render(nb_path='nbs/index.ipynb', figs:dict|None=None):
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    figs = figures() if figs is None else figs
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            m = re.match(r'^# (.+)\n+> (.+)', src)
            out.append(fill(src if not m else f"# {m.group(1)}\n\n> {m.group(2)}" + src[m.end():], figs))
        elif c['cell_type'] == 'code':
            lines = src.splitlines()
            if any(re.match(r'#\|\s*(hide|export)', l) for l in lines): continue
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
            if code: out.append(f'```python\n{code}\n```')
    return '<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n' + '\n\n'.join(out) + '\n'


if __name__ == '__main__':
    Path('README.md').write_text(render(), encoding='utf-8')

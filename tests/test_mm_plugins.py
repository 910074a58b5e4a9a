"""llmft's media plugins (`data.mm`) against LLaMA-Factory 0.9.5's, on the same tiny processors and media files: the
expanded messages, their token ids, and every tensor of `get_mm_inputs` (by fingerprint), case by case; and the audio
resampling against torchaudio's. The reference is tests/assets/lf_mm_plugins.json, written by tools/lf_mm_plugins.py in
LLaMA-Factory's environment; where that environment exists (`.lf-venv`), the test runs the tool again and also checks
that the stored reference is LLaMA-Factory's current output."""
import json, shutil, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
from conftest import ROOT

ASSET, MEDIA, TOOL = ROOT/'tests/assets/lf_mm_plugins.json', ROOT/'tests/assets/mm_plugins', ROOT/'tools/lf_mm_plugins.py'
LF_PYTHON = ROOT/'.lf-venv/bin/python'
FAMILIES = ('llava', 'qwen2_vl', 'gemma3', 'qwen2_audio')
# keys llmft adds to LLaMA-Factory's: Qwen2-VL's M-RoPE marks (transformers 5 computes the positions from them), and
# the video patches (LLaMA-Factory's stand-in video processor returns none: compared as frames instead)
OURS_ONLY = {'mm_token_type_ids', 'pixel_values_videos'}
# LLaMA-Factory 0.9.5 reads gemma3's crop counts as num_crops[0][i] (transformers 4's nesting): an IndexError on 5.x
LF_FAILS = {'gemma3 pan and scan': 'IndexError'}


def fingerprint(x) -> dict:
    "tools/lf_mm_plugins.py's fingerprint, in numpy."
    if isinstance(x, list) and x and isinstance(x[0], list): x = np.array(x)
    if isinstance(x, list): return {'list': [float(v) for v in x]}
    a = x.numpy() if hasattr(x, 'numpy') else np.asarray(x)
    if a.dtype.kind != 'f': return {'shape': list(a.shape), 'values': a.tolist()}
    flat = a.astype(np.float64).ravel()
    w = np.arange(flat.size) % 97 + 1
    return {'shape': list(a.shape), 'sum': flat.sum(), 'abs': np.abs(flat).sum(), 'weighted': (flat * w).sum(),
            'head': flat[:8].tolist()}


def same(ours: dict, lf: dict, what: str, tol: float = 1e-6):
    "Fail unless two fingerprints agree: ints exactly, float sums to `tol` of the tensor's total magnitude."
    if 'list' in lf:
        np.testing.assert_allclose(ours['list'], lf['list'], rtol=1e-6, err_msg=what)
        return
    assert ours['shape'] == lf['shape'], f"{what}: shape {ours['shape']} != LLaMA-Factory's {lf['shape']}"
    if 'values' in lf:
        assert ours['values'] == lf['values'], f'{what}: values differ'
        return
    scale = max(lf['abs'], 1.0)
    for k, w in (('sum', 1), ('abs', 1), ('weighted', 97)):
        assert abs(ours[k] - lf[k]) <= tol * w * scale, f"{what}: {k} {ours[k]} != LLaMA-Factory's {lf[k]}"
    np.testing.assert_allclose(ours['head'], lf['head'], atol=max(tol * 1e3, 1e-5), err_msg=f'{what} head')


# Pillow 11.3 (LLaMA-Factory's environment) and 13.0 (llmft's) resample some sizes differently by a few grey levels
# (a 20x300 picture shrunk, a 48x64 one enlarged to 56x56): those tensors agree to 1e-4 of their magnitude, the rest
# to 1e-6; in llmft's environment both match the HF processor exactly (nbs/26l_data.mm.ipynb)
PILLOW_RESAMPLED = {'qwen2_vl thin and bounded', 'qwen2_vl frames and image'}


def _dirs() -> dict:
    from llmft.testing_mm import tiny_mm_path
    return {f: str(tiny_mm_path(f)) for f in FAMILIES}


@pytest.fixture(scope='module')
def reference(tmp_path_factory) -> dict:
    "The stored reference; with `.lf-venv`, LLaMA-Factory is run again and must agree with it."
    stored = json.loads(ASSET.read_text(encoding='utf-8'))
    if LF_PYTHON.exists():
        out = tmp_path_factory.mktemp('lf')/'lf.json'
        subprocess.run([str(LF_PYTHON), str(TOOL), str(out), *(f'{k}={v}' for k, v in _dirs().items())], check=True,
                       capture_output=True, timeout=300)
        live = json.loads(out.read_text(encoding='utf-8'))
        assert live['cases'].keys() == stored['cases'].keys(), 'stale reference: rerun tools/lf_mm_plugins.py'
        for name, case in live['cases'].items():
            assert case.get('messages') == stored['cases'][name].get('messages'), f'stale reference: {name}'
            for k, v in case.get('inputs', {}).items(): same(v, stored['cases'][name]['inputs'][k], f'stale {name} {k}')
    return stored


def _processor(case: dict, tmp_path: Path):
    from llmft.data.mm import load_processor
    path = Path(_dirs()[case['family']])
    if case.get('processor_class'):
        copy = tmp_path/case['processor_class']
        if not copy.exists():
            shutil.copytree(path, copy, ignore=shutil.ignore_patterns('*.safetensors'))
            conf = json.loads((copy/'processor_config.json').read_text())
            (copy/'processor_config.json').write_text(json.dumps({**conf, 'processor_class': case['processor_class']}))
        path = copy
    return load_processor(SimpleNamespace(model_name_or_path=str(path), **case.get('settings', {})))


def _media(x):
    return [_media(f) for f in x] if isinstance(x, list) else str(MEDIA/x)


def test_plugins_match_llamafactory(reference, tmp_path):
    from llmft.data.mm import plugin_for, _videos, qwen_image
    compared = 0
    for name, lf in reference['cases'].items():
        case = lf['case']
        proc, plugin = _processor(case, tmp_path), plugin_for(case['family'])
        images, videos, audios = (_media(case.get(k, [])) for k in ('images', 'videos', 'audios'))
        out = plugin.expand(case['messages'], images, videos, audios, proc)
        if name in LF_FAILS:
            assert lf['error'].startswith(LF_FAILS[name]), f'{name}: LLaMA-Factory no longer fails: {lf["error"]}'
            continue
        assert out == lf['messages'], f'{name}: expanded messages differ from LLaMA-Factory'
        ids = [sum((proc.tokenizer(m['content'], add_special_tokens=False)['input_ids'] for m in out), [])]
        assert ids == lf['ids'], f'{name}: token ids differ'
        batch = plugin.batch_inputs(images, videos, audios, [len(images)], [len(videos)], [len(audios)], ids, proc)
        assert set(batch) - set(lf['inputs']) <= OURS_ONLY, f'{name}: keys {sorted(batch)} vs {sorted(lf["inputs"])}'
        tol = 1e-4 if name in PILLOW_RESAMPLED else 1e-6
        for k, v in lf['inputs'].items(): same(fingerprint(batch[k]), v, f'{name}: {k}', tol)
        for ours, theirs in zip(_videos(videos, proc, qwen_image, even=True)[0], lf.get('frames', [])):
            assert len(ours) == len(theirs), f'{name}: {len(ours)} frames, LLaMA-Factory {len(theirs)}'
            for f, t in zip(ours, theirs):
                assert list(f.size) == t['size'], f'{name}: frame size {f.size} != {t["size"]}'
                same(fingerprint(np.asarray(f, dtype=np.float32)), t, f'{name}: frame')
        compared += 1
    assert compared == len(reference['cases']) - len(LF_FAILS) >= 12


def test_resampling_matches_torchaudio(reference):
    import math, torch
    from llmft.data.media import resample
    t = torch.arange(4410, dtype=torch.float32) / 4410   # the tool's signal
    x = (0.3 * torch.sin(2 * math.pi * 97 * t) + 0.2 * torch.sin(2 * math.pi * 1301 * t)).numpy()
    for pair, lf in reference['resample'].items():
        a, b = map(int, pair.split('->'))
        same(fingerprint(resample(x, a, b)), lf, f'resample {pair}')
    assert len(reference['resample']) == 4

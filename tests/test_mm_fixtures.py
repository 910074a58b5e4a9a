"""The multimodal demo data and recipes: `data/mllm_*` registered with LLaMA-Factory's schema, every row's placeholders
matching its media files, the files readable (pictures, 1 s 8 fps clips, 16 kHz mono sounds), the generator
reproducing them, and one recipe per family of `llmft.testing_mm` naming its tiny model, template and demo data."""
import json, subprocess, sys, wave
import pytest, yaml
from conftest import ROOT

DATA = ROOT / 'data'
INFO = json.loads((DATA / 'dataset_info.json').read_text())
MEDIA = {'mllm_demo': 'images', 'mllm_video_demo': 'videos', 'mllm_audio_demo': 'audios', 'mllm_dpo_demo': 'images',
         'mllm_kto_demo': 'images'}
TAG = {'images': '<image>', 'videos': '<video>', 'audios': '<audio>'}
ROLES = {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant'}
RECIPES = {'llava1_5_lora_sft': ('llava', 'sft'), 'llava1_5_lora_kto': ('llava', 'kto'),
           'qwen2vl_lora_sft': ('qwen2_vl', 'sft'), 'qwen2vl_lora_dpo': ('qwen2_vl', 'dpo'),
           'gemma3_lora_sft': ('gemma3', 'sft'), 'qwen2audio_lora_sft': ('qwen2_audio', 'sft')}
MODELS = {'llava': 'models/tiny-llava', 'qwen2_vl': 'models/tiny-qwen2-vl', 'gemma3': 'models/tiny-gemma3',
          'qwen2_audio': 'models/tiny-qwen2-audio'}


def rows(name): return json.loads((DATA / INFO[name]['file_name']).read_text())


def texts(row) -> str:
    "Every text of a row: its messages, and the chosen / rejected answers of a pairwise row."
    msgs = row['messages'] + [row[k] for k in ('chosen', 'rejected') if k in row]
    return ''.join(m['content'] for m in msgs)


def test_registry_has_lf_schema():
    "LLaMA-Factory 0.9.5's own entries for mllm_demo / mllm_video_demo / mllm_audio_demo, word for word."
    for name, col in (('mllm_demo', 'images'), ('mllm_video_demo', 'videos'), ('mllm_audio_demo', 'audios')):
        assert INFO[name] == {'file_name': f'{name}.json', 'formatting': 'sharegpt',
                              'columns': {'messages': 'messages', col: col}, 'tags': ROLES}, name
    assert INFO['mllm_dpo_demo']['ranking'] is True
    assert INFO['mllm_dpo_demo']['columns'] == {'messages': 'messages', 'chosen': 'chosen', 'rejected': 'rejected',
                                                'images': 'images'}
    assert INFO['mllm_kto_demo']['columns'] == {'messages': 'messages', 'kto_tag': 'label', 'images': 'images'}


@pytest.mark.parametrize('name', MEDIA)
def test_rows_match_their_media(name):
    col, n = MEDIA[name], 0
    for i, row in enumerate(rows(name)):
        assert row[col], (name, i)
        assert texts(row).count(TAG[col]) == len(row[col]), (name, i, row)
        assert set(row) <= {'messages', col, 'chosen', 'rejected', 'label'}, (name, i)
        for p in row[col]:
            assert not p.startswith('/') and (DATA / p).is_file(), (name, i, p)   # relative to the dataset folder
            n += 1
    assert n >= 6


def test_media_files_read():
    import av
    from PIL import Image
    files = {p for name, col in MEDIA.items() for row in rows(name) for p in row[col]}
    assert {f.rsplit('.', 1)[1] for f in files} == {'png', 'jpg', 'mp4', 'wav'}
    for f in sorted(files):
        path = DATA / f
        if f.endswith(('.png', '.jpg')): assert Image.open(path).convert('RGB').size in {(64, 48), (48, 64), (96, 64)}
        elif f.endswith('.mp4'):
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                assert (s.frames, float(s.duration * s.time_base), s.width, s.height) == (8, 1.0, 64, 48), f
        else:
            with wave.open(str(path)) as w:
                assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 16000, 2), f
                assert w.getnframes() in (16000, 24000), f
    assert sum((DATA / f).stat().st_size for f in files) < 400_000   # small enough to commit


def test_generator_reproduces_the_data(tmp_path):
    "`data/mllm_make_demo.py OUT` writes the same rows and the same pictures and sounds (x264 bytes may differ)."
    import av, numpy as np
    r = subprocess.run([sys.executable, str(DATA / 'mllm_make_demo.py'), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in MEDIA: assert (tmp_path / f'{name}.json').read_text() == (DATA / f'{name}.json').read_text(), name
    made = sorted(p.name for p in (tmp_path / 'mllm_demo_data').iterdir())
    assert made == sorted(p.name for p in (DATA / 'mllm_demo_data').iterdir())
    for f in made:
        new, old = tmp_path / 'mllm_demo_data' / f, DATA / 'mllm_demo_data' / f
        if not f.endswith('.mp4'): assert new.read_bytes() == old.read_bytes(), f
        else:
            frames = []
            for p in (new, old):
                with av.open(str(p)) as c: frames.append(np.stack([x.to_ndarray(format='rgb24') for x in c.decode()]))
            assert frames[0].shape == frames[1].shape and np.abs(frames[0] - frames[1].astype(int)).mean() < 2, f


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_names_its_fixture(name):
    family, stage = RECIPES[name]
    path = ROOT / 'examples' / 'train_lora' / f'{name}.yaml'
    cfg = yaml.safe_load(path.read_text())
    assert (cfg['template'], cfg['stage'], cfg['model_name_or_path']) == (family, stage, MODELS[family])
    assert f'llmft train examples/train_lora/{name}.yaml' in path.read_text().splitlines()[1]
    for d in cfg['dataset'].split(','): assert d in MEDIA, d

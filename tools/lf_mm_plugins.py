"""Write what LLaMA-Factory 0.9.5's multimodal plugins make of the media cases of `tests/test_mm_plugins.py` (the
expanded messages, the token ids, and a fingerprint of every tensor of `get_mm_inputs`) to
tests/assets/lf_mm_plugins.json: the reference llmft's `data.mm` plugins are checked against, in CI too, where
LLaMA-Factory is not installed.

    .lf-venv/bin/python tools/lf_mm_plugins.py OUT.json llava=DIR qwen2_vl=DIR gemma3=DIR qwen2_audio=DIR

Each DIR is llmft's tiny fixture `llmft.testing_mm.tiny_mm_path(family)`; the media are the committed files of
tests/assets/mm_plugins/ (written once with `llmft.testing_mm`'s `make_image`, `write_video` and `write_audio`).

LLaMA-Factory's environment has neither torchvision nor torchcodec, so two of its calls are given what they would
return: Qwen2-VL's video processor (transformers' needs torchvision) is a stand-in that records the frames LLaMA-Factory
hands it and returns their grid (`video_grid_thw` by transformers' `smart_resize`) — what is compared for videos is
LLaMA-Factory's sampling, regularization and token counts, not the patching; and `torchaudio.load` (which needs
torchcodec) reads the wav with the standard library into the float waveform torchaudio returns (samples / 32768, one
row per channel) — the channel mean and the resampling stay torchaudio's. LLaMA-Factory's Qwen2-VL video path also
imports `smart_resize` from transformers' torchvision image processor module; the Pillow module's same function is put
in its place.
"""
import json, math, sys, wave
from pathlib import Path
import numpy as np
import torch, torchaudio
import transformers
import llamafactory
from llamafactory.data.mm_plugin import get_mm_plugin
from transformers import AutoProcessor, AutoTokenizer, BatchFeature

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / 'tests/assets/mm_plugins'
TOKENS = {'llava': dict(image_token='<image>'), 'gemma3': dict(image_token='<image_soft_token>'),
          'qwen2_vl': dict(image_token='<|image_pad|>', video_token='<|video_pad|>'),
          'qwen2_audio': dict(audio_token='<|AUDIO|>')}


def cases() -> list[dict]:
    "The cases: family, processor settings, messages, media (names under MEDIA; a list of names: a video's frames)."
    one = lambda tags, text='What is this?': [{'role': 'user', 'content': tags + text},
                                              {'role': 'assistant', 'content': 'A picture.'}]
    two = [{'role': 'user', 'content': '<image>Compare'}, {'role': 'assistant', 'content': 'Sure.'},
           {'role': 'user', 'content': 'with <image>.'}, {'role': 'assistant', 'content': 'Same.'}]
    return [
        dict(name='llava one image', family='llava', messages=one('<image>'), images=['image_0.png']),
        dict(name='llava two turns', family='llava', messages=two, images=['image_0.png', 'image_1.jpg']),
        dict(name='llava bounded', family='llava', settings=dict(image_max_pixels=40 * 30),
             messages=one('<image>'), images=['wide.jpg']),
        dict(name='qwen2_vl images', family='qwen2_vl', messages=two, images=['image_0.png', 'wide.jpg']),
        dict(name='qwen2_vl thin and bounded', family='qwen2_vl', settings=dict(image_max_pixels=5000),
             messages=one('<image><image>'), images=['thin.png', 'wide.jpg']),
        dict(name='qwen2_vl video', family='qwen2_vl', messages=one('<video>'), videos=['video_0.mp4']),
        dict(name='qwen2_vl video 4 fps', family='qwen2_vl', settings=dict(video_fps=4.0, video_maxlen=6),
             messages=one('<video>'), videos=['video_1.mp4']),
        dict(name='qwen2_vl frames and image', family='qwen2_vl', messages=one('<image><video>'),
             images=['image_1.jpg'], videos=[['image_0.png', 'image_0.png', 'image_1.jpg']]),
        dict(name='qwen2_5_vl video', family='qwen2_vl', processor_class='Qwen2_5_VLProcessor',
             messages=one('<video>'), videos=['video_1.mp4']),
        dict(name='gemma3 images', family='gemma3', messages=two, images=['wide.jpg', 'image_0.png']),
        dict(name='gemma3 pan and scan', family='gemma3', settings=dict(image_do_pan_and_scan=True),
             messages=two, images=['wide.jpg', 'image_0.png']),
        dict(name='qwen2_audio wav', family='qwen2_audio', messages=one('<audio>'), audios=['audio_0.wav']),
        dict(name='qwen2_audio stereo 8 kHz', family='qwen2_audio', messages=one('<audio>', 'Which tones?'),
             audios=['stereo_8k.wav']),
    ]


def fingerprint(x) -> dict:
    "A tensor as JSON: shape, dtype, and (floats) sums that change with any value or order; (ints) the values."
    if isinstance(x, list) and x and isinstance(x[0], list): x = torch.tensor(x)
    if isinstance(x, list): return {'list': [float(v) for v in x]}
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    out = {'shape': list(t.shape), 'dtype': str(t.dtype).replace('torch.', '')}
    if t.is_floating_point():
        flat = t.double().flatten()
        w = torch.arange(flat.numel(), dtype=torch.float64) % 97 + 1
        out.update(sum=flat.sum().item(), abs=flat.abs().sum().item(), weighted=(flat * w).sum().item(),
                   head=flat[:8].tolist())
    else: out['values'] = t.tolist()
    return out


def wav_load(path, *args, **kwargs):
    "What `torchaudio.load` returns for a PCM16 wav: (channels, samples) float32 = samples / 32768, and the rate."
    with wave.open(str(path)) as f:
        n, rate, raw = f.getnchannels(), f.getframerate(), f.readframes(f.getnframes())
    return torch.from_numpy(np.frombuffer(raw, '<i2').reshape(-1, n).T / 32768.0).float(), rate


class Frames:
    "Stand-in for `Qwen2VLVideoProcessor` (torchvision): records the frames it gets, returns their grid."
    model_input_names = ['pixel_values_videos', 'video_grid_thw']
    _auto_class = None

    def __init__(self, image_processor):
        ip = image_processor
        self.patch_size, self.temporal_patch_size = ip.patch_size, ip.temporal_patch_size
        self.merge_size = ip.merge_size
        self.size = {'shortest_edge': ip.size['shortest_edge'], 'longest_edge': ip.size['longest_edge']}
        self.seen = []

    def to_dict(self): return {}

    def __call__(self, videos, return_tensors=None, **kwargs):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
        grids = []
        for frames in videos:
            self.seen.append([{'size': list(f.size), **fingerprint(np.asarray(f, dtype=np.float32))} for f in frames])
            h, w = smart_resize(frames[0].height, frames[0].width, self.patch_size * self.merge_size,
                                self.size['shortest_edge'], self.size['longest_edge'])
            t = math.ceil(len(frames) / self.temporal_patch_size)
            grids.append([t, h // self.patch_size, w // self.patch_size])
        return BatchFeature({'video_grid_thw': torch.tensor(grids)})


def processor(path: str, processor_class: str | None, settings: dict):
    "The processor as LLaMA-Factory's `load_tokenizer` leaves it (with the Qwen2-VL video stand-in)."
    tok = AutoTokenizer.from_pretrained(path)
    kind = processor_class or json.loads((Path(path) / 'processor_config.json').read_text())['processor_class']
    if kind in ('Qwen2VLProcessor', 'Qwen2_5_VLProcessor'):
        cls = getattr(transformers, kind)
        def check(self, name, arg):
            return type(arg) if name == 'video_processor' else cls.check_argument_for_proper_class(self, name, arg)
        sub = type(kind, (cls,), {'check_argument_for_proper_class': check})
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        image = Qwen2VLImageProcessorPil.from_pretrained(path)
        proc = sub(image_processor=image, tokenizer=tok, video_processor=Frames(image))
    else: proc = AutoProcessor.from_pretrained(path)
    defaults = dict(image_max_pixels=768 * 768, image_min_pixels=32 * 32, image_do_pan_and_scan=False,
                    crop_to_patches=False, video_max_pixels=256 * 256, video_min_pixels=16 * 16, video_fps=2.0,
                    video_maxlen=128, use_audio_in_video=False, audio_sampling_rate=16000)
    for k, v in {**defaults, **settings}.items(): setattr(proc, k, v)  # LLaMA-Factory's patch_processor
    proc.tokenizer = tok
    return proc


def run(case: dict, dirs: dict) -> dict:
    "What LLaMA-Factory makes of one case: expanded messages, token ids, tensor fingerprints (or its error)."
    proc = processor(dirs[case['family']], case.get('processor_class'), case.get('settings', {}))
    plugin = get_mm_plugin(case['family'], **TOKENS[case['family']])
    media = lambda x: [media(f) for f in x] if isinstance(x, list) else str(MEDIA / x)
    images, videos, audios = (media(case.get(k, [])) for k in ('images', 'videos', 'audios'))
    messages = case['messages']
    try:
        out = plugin.process_messages(messages, images, videos, audios, proc)
        ids = [proc.tokenizer(m['content'], add_special_tokens=False)['input_ids'] for m in out]
        batch_ids = [sum(ids, [])]
        inputs = plugin.get_mm_inputs(images, videos, audios, [len(images)], [len(videos)], [len(audios)],
                                      batch_ids, proc)
    except Exception as e:
        return {'case': case, 'error': f'{type(e).__name__}: {e}'}
    result = {'case': case, 'messages': out, 'ids': batch_ids, 'inputs': {k: fingerprint(v) for k, v in inputs.items()}}
    if isinstance(getattr(proc, 'video_processor', None), Frames): result['frames'] = proc.video_processor.seen
    return result


def resampled() -> dict:
    "torchaudio's resampling of a fixed two-tone signal, between the rates audio datasets come in."
    t = torch.arange(4410, dtype=torch.float32) / 4410
    x = 0.3 * torch.sin(2 * math.pi * 97 * t) + 0.2 * torch.sin(2 * math.pi * 1301 * t)
    return {f'{a}->{b}': fingerprint(torchaudio.functional.resample(x, a, b))
            for a, b in ((8000, 16000), (44100, 16000), (16000, 8000), (22050, 16000))}


def without_torchvision():
    "LLaMA-Factory imports `smart_resize` from transformers' torchvision image processor module: give it Pillow's."
    import types
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil
    shim = types.ModuleType('transformers.models.qwen2_vl.image_processing_qwen2_vl')
    shim.smart_resize = pil.smart_resize
    sys.modules[shim.__name__] = shim


if __name__ == '__main__':
    out, *pairs = sys.argv[1:]
    without_torchvision()
    dirs = dict(p.split('=', 1) for p in pairs)
    torchaudio.load = wav_load
    doc = {'llamafactory': llamafactory.__version__, 'transformers': transformers.__version__,
           'cases': {c['name']: run(c, dirs) for c in cases()}, 'resample': resampled()}
    Path(out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    print(f"{len(doc['cases'])} cases of LLaMA-Factory {llamafactory.__version__} -> {out}", file=sys.stderr)

"""Write llmft's own multimodal demo data: mllm_demo.json, mllm_video_demo.json, mllm_audio_demo.json,
mllm_dpo_demo.json, mllm_kto_demo.json and their media in mllm_demo_data/ (pictures, clips and sounds generated here).

Run from the repo root: `python data/mllm_make_demo.py [OUT_DIR]` (the mp4 clips need `pip install 'llmft[mm]'`; x264
may encode the same frames into different bytes from run to run, the other files are byte-identical). Every
answer can be checked by looking at (or listening to) its file: the colour and shape of a picture, the way a disc moves
in a clip, whether a tone rises or falls. Media paths are relative to the dataset folder, as LLaMA-Factory writes them.
"""
import json, random, sys
from pathlib import Path
from PIL import Image, ImageDraw
from llmft.testing_mm import write_audio, write_video

DATA = Path(__file__).resolve().parent
MEDIA = 'mllm_demo_data'
COLOURS = {'red': (220, 40, 40), 'green': (40, 170, 60), 'blue': (40, 80, 220), 'yellow': (240, 200, 30)}
SHAPES = ('circle', 'square', 'triangle')
SIZES = {'circle': (64, 48), 'square': (48, 64), 'triangle': (96, 64)}  # Qwen2-VL: 4, 4, 6 tokens
MOVES = {'left to right': ((0.2, 0.5), (0.8, 0.5)), 'right to left': ((0.8, 0.5), (0.2, 0.5)),
         'top to bottom': ((0.5, 0.2), (0.5, 0.8)), 'bottom to top': ((0.5, 0.8), (0.5, 0.2))}
TONES = {'rises': (330, 660), 'falls': (660, 330), 'stays at one pitch': (440, 440)}


def scene(colour:str, shape:str) -> Image.Image:
    "A `colour` `shape` in the middle of a light grey picture."
    w, h = SIZES[shape]
    img = Image.new('RGB', (w, h), (235, 235, 235))
    d, r, (cx, cy) = ImageDraw.Draw(img), min(w, h) // 3, (w // 2, h // 2)
    box, fill = [cx - r, cy - r, cx + r, cy + r], COLOURS[colour]
    if shape == 'circle': d.ellipse(box, fill=fill)
    elif shape == 'square': d.rectangle(box, fill=fill)
    else: d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return img


def clip(colour:str, move:str, frames:int=8, w:int=64, h:int=48) -> list:
    "`frames` pictures of a `colour` disc moving `move` over a white background."
    (x0, y0), (x1, y1) = MOVES[move]
    out, r = [], min(w, h) // 6
    for i in range(frames):
        t = i / (frames - 1)
        x, y = (x0 + (x1 - x0) * t) * w, (y0 + (y1 - y0) * t) * h
        img = Image.new('RGB', (w, h), (250, 250, 250))
        ImageDraw.Draw(img).ellipse([x - r, y - r, x + r, y + r], fill=COLOURS[colour])
        out.append(img)
    return out


def user(text): return {'role': 'user', 'content': text}
def bot(text): return {'role': 'assistant', 'content': text}


def pictures(media:Path) -> dict:
    "Write one picture per colour and shape; {(colour, shape): relative path}."
    out = {}
    for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        name = f'{c}_{s}.{"jpg" if i % 3 == 2 else "png"}'
        scene(c, s).save(media / name, **({'quality': 92} if name.endswith('jpg') else {}))
        out[c, s] = f'{MEDIA}/{name}'
    return out


def image_rows(pics:dict, r:random.Random) -> list:
    rows = []
    for (c, s), p in pics.items():
        rows.append({'messages': [user('<image>What is in the picture?'), bot(f'A {c} {s} on a grey background.')],
                     'images': [p]})
        rows.append({'messages': [user('What colour is the shape?<image>'), bot(f'It is {c}.'),
                                  user('And which shape is it?'), bot(f'It is a {s}.')], 'images': [p]})
    for _ in range(8):
        (c1, s1), (c2, s2) = r.sample(list(pics), 2)
        same = 'Yes, both are' if c1 == c2 else f'No: the first is {c1}, the second is'
        rows.append({'messages': [user('<image><image>Are the two shapes the same colour?'),
                                  bot(f'{same} {c2}.')], 'images': [pics[c1, s1], pics[c2, s2]]})
    return rows


def video_rows(media:Path) -> list:
    rows = []
    for i, (c, m) in enumerate((c, m) for c in ('red', 'blue') for m in MOVES):
        name = f'{c}_{m.replace(" ", "_")}.mp4'
        write_video(media / name, clip(c, m), fps=8)
        rows.append({'messages': [user('<video>Which way does the disc move?'), bot(f'The {c} disc moves {m}.')],
                     'videos': [f'{MEDIA}/{name}']})
    return rows


def audio_rows(media:Path) -> list:
    rows = []
    for (how, (f0, f1)), secs in ((t, s) for t in TONES.items() for s in (1.0, 1.5)):
        name = f'tone_{how.split()[0]}_{int(secs * 10)}.wav'
        write_audio(media / name, seconds=secs, freq=f0, to_freq=f1)
        rows.append({'messages': [user('<audio>Does the pitch of the tone rise or fall?'),
                                  bot(f'The tone {how}; it lasts {secs:g} seconds.')], 'audios': [f'{MEDIA}/{name}']})
    return rows


def pref_rows(pics:dict, r:random.Random) -> tuple[list, list]:
    "Preference pairs (the right colour chosen, a wrong one rejected) and KTO rows (right: true, wrong: false)."
    dpo, kto = [], []
    for (c, s), p in pics.items():
        wrong = r.choice([x for x in COLOURS if x != c])
        dpo.append({'messages': [user('<image>What colour is the shape?')], 'chosen': bot(f'It is {c}.'),
                    'rejected': bot(f'It is {wrong}.'), 'images': [p]})
        kto.append({'messages': [user('<image>Name the shape.'), bot(f'A {s}.')], 'label': True, 'images': [p]})
        other = r.choice([x for x in SHAPES if x != s])
        kto.append({'messages': [user('<image>Name the shape.'), bot(f'A {other}.')], 'label': False, 'images': [p]})
    return dpo, kto


def main(out:Path=DATA):
    "Write the five datasets and their media into `out` (default: this folder)."
    r, media = random.Random(0), Path(out) / MEDIA
    media.mkdir(parents=True, exist_ok=True)
    pics = pictures(media)
    dpo, kto = pref_rows(pics, r)
    files = {'mllm_demo.json': image_rows(pics, r), 'mllm_video_demo.json': video_rows(media),
             'mllm_audio_demo.json': audio_rows(media), 'mllm_dpo_demo.json': dpo, 'mllm_kto_demo.json': kto}
    for name, rows in files.items():
        (Path(out) / name).write_text(json.dumps(rows, indent=2, ensure_ascii=False) + '\n', encoding='utf-8')
        print(f'{name}: {len(rows)} rows')


if __name__ == '__main__': main(*sys.argv[1:2])

"""Chat and the OpenAI-compatible API with media, on the tiny LLaVA-1.5, Qwen2-VL, Gemma 3 and Qwen2-Audio fixtures:
a greedy answer to an image (a video, an audio clip) is the answer `model.generate` gives with the same processor
tensors, whatever the company it is decoded in; a real `llmft api` server answers a data-URL image with that text
(streamed too) and reads a file under SAFE_MEDIA_PATH (nothing else: one 403 for a missing, outside or non-media file);
a web address on this offline machine is a 400 naming its part, a decompression bomb a 400; a text model refuses
media; a tag with no media behind it is refused."""
import base64, io, json
from pathlib import Path
import pytest
import torch
from conftest import start_api, stop_api, wait_listening

Q = 'What is in the picture?'


def png_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope='module', params=['llava', 'qwen2_vl', 'gemma3'])
def vlm(request):
    "(family, ChatModel) of a tiny vision-language fixture, greedy, 8 new tokens."
    from llmft.testing_mm import tiny_mm_path
    from llmft.infer.chat import ChatModel
    cm = ChatModel(dict(model_name_or_path=str(tiny_mm_path(request.param)), template=request.param),
                   max_new_tokens=8, do_sample=False)
    return request.param, cm


def generate_direct(cm, prompt, media) -> str:
    "The answer `model.generate` writes for `prompt` with the processor tensors `media`, special tokens dropped."
    out = cm.engine.model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                   dtype=torch.long), **media, max_new_tokens=8, do_sample=False,
                                   eos_token_id=cm.engine.eos_ids, pad_token_id=cm.tokenizer.pad_token_id)
    ids = [t for t in out[0, len(prompt):].tolist() if t not in cm.engine.eos_ids]
    return cm.tokenizer.decode(ids, skip_special_tokens=True)


def test_chat_with_an_image_is_generate_with_the_processor_tensors(vlm):
    from llmft.testing_mm import make_image
    family, cm = vlm
    pic, msgs = make_image(64, 48, 0), [{'role': 'user', 'content': Q}]
    answer = cm.chat(msgs, images=[pic])[0]
    prompt = cm.prompt(msgs, images=[pic])
    media = cm.media(prompt, images=[pic])
    from llmft.data.mm import plugin_for
    per_image = {'llava': 16, 'qwen2_vl': 4, 'gemma3': 4}[family]   # 32x32 in 8x8 patches; 4x4 merged 2x2; 4 per image
    assert cm.tokenizer.decode(prompt).count(plugin_for(family).image_token) == per_image
    assert set(media) >= {'pixel_values'} and answer.prompt_tokens == len(prompt)
    assert answer.text == generate_direct(cm, prompt, media) and answer.text
    assert cm.chat(msgs, images=[pic])[0].text == answer.text                      # deterministic
    assert ''.join(cm.stream_chat(msgs, images=[pic])) == answer.text
    # decoded beside text rows (the image row prefilled alone, then batched): the same answer
    texts = [[{'role': 'user', 'content': 'Hi'}], msgs, [{'role': 'user', 'content': 'Name a colour.'}]]
    got = cm.batch_chat(texts, images=[None, [pic], None])
    assert got[1].text == answer.text and got[0].text == cm.chat(texts[0])[0].text
    other = cm.chat(msgs, images=[make_image(64, 48, 3)])[0]                    # another picture, other tensors
    assert other.text == generate_direct(cm, prompt, cm.media(prompt, images=[make_image(64, 48, 3)]))


def test_a_video_chat_is_generate_with_the_video_tensors(tmp_path):
    from llmft.testing_mm import tiny_mm_path, write_media
    from llmft.infer.chat import ChatModel
    cm = ChatModel(dict(model_name_or_path=str(tiny_mm_path('qwen2_vl')), template='qwen2_vl'), max_new_tokens=8,
                   do_sample=False)
    clip, msgs = str(write_media(tmp_path)['videos'][0]), [{'role': 'user', 'content': '<video>What moves?'}]
    prompt = cm.prompt(msgs, videos=[clip])
    media = cm.media(prompt, videos=[clip])
    assert {'pixel_values_videos', 'video_grid_thw'} <= set(media) and '<|video_pad|>' in cm.tokenizer.decode(prompt)
    assert cm.chat(msgs, videos=[clip])[0].text == generate_direct(cm, prompt, media)


def test_an_audio_chat_is_generate_with_the_audio_features(tmp_path):
    from llmft.testing_mm import tiny_mm_path, write_media
    from llmft.infer.chat import ChatModel
    cm = ChatModel(dict(model_name_or_path=str(tiny_mm_path('qwen2_audio')), template='qwen2_audio'),
                   max_new_tokens=8, do_sample=False)
    wav, msgs = str(write_media(tmp_path)['audios'][0]), [{'role': 'user', 'content': 'What do you hear?'}]
    prompt = cm.prompt(msgs, audios=[wav])
    media = cm.media(prompt, audios=[wav])
    assert cm.media_kinds == ('audios',) and {'input_features', 'feature_attention_mask'} <= set(media)
    assert cm.chat(msgs, audios=[wav])[0].text == generate_direct(cm, prompt, media)


def test_media_a_model_does_not_take_are_refused_by_name(vlm):
    from llmft.core import DataError
    from llmft.testing import tiny_model
    from llmft.testing_mm import make_image
    from llmft.infer.chat import ChatModel
    family, cm = vlm
    msgs = [{'role': 'user', 'content': Q}]
    text = ChatModel(dict(model_name_or_path=str(tiny_model('qwen2')), template='qwen'), max_new_tokens=4)
    assert text.media_kinds == ()
    with pytest.raises(DataError, match='images given, but this model takes text only'):
        text.chat(msgs, images=[make_image()])
    with pytest.raises(DataError, match=rf'audios given, but this model \({family}\) takes images'):
        cm.chat(msgs, audios=[b'RIFF'])
    with pytest.raises(DataError, match='messages: 2 <image> in the text for 1 image;'):
        cm.chat([{'role': 'user', 'content': '<image><image>' + Q}], images=[make_image()])
    with pytest.raises(DataError, match='messages: 1 <image> in the text for 0 images;'):   # a tag with no pixels
        cm.chat([{'role': 'user', 'content': 'Is <image> a tag?'}])


@pytest.fixture(scope='module')
def vlm_server(tmp_path_factory):
    "`llmft api` on the tiny Qwen2-VL in its own process, reading files under its SAFE_MEDIA_PATH: (url, folder)."
    from llmft.testing_mm import tiny_mm_path
    d = tmp_path_factory.mktemp('vlm-api')
    url, p, _ = start_api([tiny_mm_path('qwen2_vl'), 'template=qwen2_vl', 'max_new_tokens=8', 'do_sample=false'],
                          d / 'server.log', {'API_MODEL_NAME': 'vlm', 'SAFE_MEDIA_PATH': str(d)})
    yield url, d
    stop_api(p)


def test_the_api_answers_an_image_as_chat_does(vlm_server):
    import httpx
    import openai
    from llmft.testing_mm import make_image, tiny_mm_path
    from llmft.infer.chat import ChatModel
    url, folder = vlm_server
    pic = make_image(64, 48, 0)
    pic.save(folder / 'pic.png')
    client = openai.OpenAI(base_url=url, api_key='none', max_retries=0, timeout=120)
    parts = lambda image_url: [{'type': 'image_url', 'image_url': {'url': image_url}}, {'type': 'text', 'text': Q}]
    ask = lambda image_url, **kw: client.chat.completions.create(
        model='vlm', temperature=0, messages=[{'role': 'user', 'content': parts(image_url)}], **kw)
    r = ask(png_url(pic))
    cm = ChatModel(dict(model_name_or_path=str(tiny_mm_path('qwen2_vl')), template='qwen2_vl'), max_new_tokens=8,
                   do_sample=False)
    want = cm.chat([{'role': 'user', 'content': Q}], images=[pic])[0]
    assert r.choices[0].message.content == want.text and r.usage.prompt_tokens == want.prompt_tokens
    assert ''.join(c.choices[0].delta.content or '' for c in ask(png_url(pic), stream=True) if c.choices) == want.text
    assert ask(str(folder / 'pic.png')).choices[0].message.content == want.text        # a file the server may read
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model='vlm', messages=[{'role': 'user', 'content': [
            {'type': 'text', 'text': Q}, {'type': 'image_url', 'image_url': {'url': 'https://example.com/cat.png'}}]}])
    err = e.value.body
    assert err['param'] == 'messages[0].content[1]' and 'this server is offline' in err['message'], err
    with pytest.raises(openai.PermissionDeniedError) as e:                                 # outside SAFE_MEDIA_PATH
        ask(str(tiny_mm_path('qwen2_vl') / 'config.json'))
    assert e.value.body['param'] == 'messages[0].content[0]'
    audio = [{'type': 'input_audio', 'input_audio': {'data': 'UklGRg==', 'format': 'wav'}}]
    bad = httpx.post(f'{url}/chat/completions', timeout=60,
                     json={'model': 'vlm', 'messages': [{'role': 'user', 'content': audio}]})
    assert bad.status_code == 400 and 'an audio clip sent to a model that takes images and videos only' in bad.text


def png_header(w:int, h:int) -> bytes:
    "A PNG that declares `w` x `h` pixels (a decompression bomb's header: Pillow refuses it before decoding)."
    import struct, zlib
    chunk = lambda kind, data: struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


def test_the_api_refuses_bombs_probes_and_stray_tags(vlm_server):
    "A decompression bomb is a 400 naming its part and Pillow's limit; a missing file, a file outside SAFE_MEDIA_PATH "
    "and a file that is no image get one 403 text; a tag with no media behind it is a 400 naming the counts."
    import httpx
    url, folder = vlm_server
    (folder / 'notes.txt').write_text('api_key=...')
    post = lambda content: httpx.post(f'{url}/chat/completions', timeout=60,
                                      json={'model': 'vlm', 'messages': [{'role': 'user', 'content': content}]})
    image = lambda u: [{'type': 'text', 'text': Q}, {'type': 'image_url', 'image_url': {'url': u}}]
    bomb = post(image('data:image/png;base64,' + base64.b64encode(png_header(30_000, 30_000)).decode()))
    err = bomb.json()['error']
    assert bomb.status_code == 400 and err['param'] == 'messages[0].content[1]', bomb.text
    assert 'PIL.Image.MAX_IMAGE_PIXELS = ' in err['message'], err
    paths = [str(folder / 'nope.png'), 'notes.txt', '/etc/hostname', '../' + folder.name]
    got = [post(image(p)) for p in paths]
    assert [r.status_code for r in got] == [403] * 4, [r.text for r in got]
    texts = {r.json()['error']['message'].replace(p, 'P') for r, p in zip(got, paths)}
    assert len(texts) == 1 and 'P is not an image file this server may read' in texts.pop()
    stray = post([{'type': 'text', 'text': 'What is <image>?'}])
    assert stray.status_code == 400 and '1 <image> in the text for 0 images' in stray.text, stray.text


def test_video_maxlen_caps_the_frames_of_a_chat_video(tmp_path):
    "The media settings reach chat: video_fps 8 samples the 1 s clip's 8 frames (4 time steps of 2), video_maxlen 4 "
    "keeps 4 (2 time steps)."
    from llmft.testing_mm import tiny_mm_path, write_media
    from llmft.infer.chat import ChatModel
    clip, msgs = str(write_media(tmp_path)['videos'][0]), [{'role': 'user', 'content': '<video>What moves?'}]
    steps = {}
    for maxlen in (128, 4):
        cm = ChatModel(dict(model_name_or_path=str(tiny_mm_path('qwen2_vl')), template='qwen2_vl', video_fps=8.0,
                            video_maxlen=maxlen), max_new_tokens=2)
        steps[maxlen] = int(cm.media(cm.prompt(msgs, videos=[clip]), videos=[clip])['video_grid_thw'][0, 0])
    assert steps == {128: 4, 4: 2}, steps


def test_a_text_model_server_refuses_an_image(tmp_path):
    import httpx
    from llmft.testing import tiny_model
    from llmft.testing_mm import make_image
    url, p, _ = start_api([tiny_model('qwen2'), 'template=qwen', 'max_new_tokens=4'], tmp_path / 'server.log')
    try:
        parts = [{'type': 'image_url', 'image_url': {'url': png_url(make_image())}}, {'type': 'text', 'text': Q}]
        r = httpx.post(f'{url}/chat/completions', timeout=60,
                       json={'model': 'x', 'messages': [{'role': 'user', 'content': parts}]})
        ok = httpx.post(f'{url}/chat/completions', timeout=60,
                        json={'model': 'x', 'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': Q}]}]})
    finally: stop_api(p)
    err = r.json()['error']
    assert r.status_code == 400 and err['param'] == 'messages[0].content', err
    assert err['message'] == ('messages[0].content: images (or other media) sent to a text model; this server takes '
                              'text only.')
    assert ok.status_code == 200 and json.loads(ok.text)['choices'][0]['message']['content'] is not None


@pytest.mark.slow   # Voila and Chromium
def test_voila_chat_takes_an_uploaded_image_and_the_inspector_shows_media(tmp_path):
    "In Voila, in headless Chromium: a picture chosen in the chat's upload goes with the message (thumbnail, answer), "
    "the inspector shows a sample's image beside its `<image> x 16`, and no stderr block appears."
    import shutil, subprocess, sys
    import nbformat
    from playwright.sync_api import sync_playwright
    from conftest import ROOT, free_port
    from llmft.testing_mm import make_image, tiny_mm_path
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    assert chromium, "the browser test needs Debian's chromium: apt-get install chromium"
    make_image(64, 48, 0).save(tmp_path / 'pic.png')
    code = f'''import contextlib, io, tempfile
from llmft.infer.chat import ChatModel
from llmft.dash.chat import ChatWidget
from llmft.dash.inspect import inspect_dataset
with contextlib.redirect_stderr(io.StringIO()):   # loading logs: a page shows only the widgets
    vlm = ChatModel(dict(model_name_or_path={str(tiny_mm_path('qwen2_vl'))!r}, template='qwen2_vl'))
    ins = inspect_dataset(dict(model_name_or_path={str(tiny_mm_path('llava'))!r}, stage='sft', dataset='mllm_demo',
                               dataset_dir={str(ROOT / 'data')!r}, template='llava', cutoff_len=1024, max_samples=2,
                               output_dir=tempfile.mkdtemp()))
display(ChatWidget(vlm, max_new_tokens=6))
display(ins)'''
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbformat.write(nb, tmp_path / 'page.ipynb')
    port = free_port()
    log = open(tmp_path / 'voila.log', 'w')
    voila = subprocess.Popen([str(Path(sys.executable).parent / 'voila'), 'page.ipynb', '--no-browser',
                              f'--port={port}', '--Voila.ip=127.0.0.1'], cwd=tmp_path, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        wait_listening(voila, port, tmp_path / 'voila.log')
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=['--no-sandbox', '--disable-gpu',
                                                                         '--disable-dev-shm-usage'])
            page = browser.new_page(viewport={'width': 1280, 'height': 900})
            page.goto(f'http://127.0.0.1:{port}/', timeout=300_000)
            page.get_by_role('button', name='Send').wait_for(timeout=300_000)
            page.wait_for_selector('.llmft-media img.llmft-thumb', state='attached', timeout=60_000)
            inspector = page.inner_text('.llmft-sample')
            with page.expect_file_chooser() as chooser: page.locator('.widget-upload').click()
            chooser.value.set_files(str(tmp_path / 'pic.png'))
            page.fill('textarea', 'What is this?')
            page.get_by_role('button', name='Send').click()
            page.wait_for_selector('.llmft-answer', timeout=120_000)
            page.wait_for_selector('.llmft-user img.llmft-thumb', timeout=60_000)
            stderr = page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count()
            user = page.inner_text('.llmft-user')
            browser.close()
    finally:
        voila.terminate()
        try: voila.wait(30)
        except subprocess.TimeoutExpired: voila.kill()
    assert '<image> x 16' in inspector, inspector[:500]
    assert user.strip() == 'What is this?' and stderr == 0, (user, stderr)

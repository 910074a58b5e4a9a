"""Media rows through the data pipeline, per family, on real dataset files: LLaMA-Factory's multimodal entries through
`prepare`, the tokens the family's own HF processor makes, labels that never train a media token, the collators' tensors
(through the tiny model), each malformed row named and counted, text models refused, the tokenized cache kept honest."""
import json, shutil
from pathlib import Path
import pytest
import torch
from PIL import Image
from conftest import ROOT
from llmft.core import DataError, IGNORE_INDEX
from llmft.data.checks import check_dataset
from llmft.data.collators import KTOCollator, PairwiseCollator, SFTCollator
from llmft.data.loader import LeftOut, to_canonical
from llmft.data.mm import Qwen2VLPlugin
from llmft.data.registry import parse_entry
from llmft.data.media import read_audio
from llmft.data.pipeline import MEDIA_FILE, prepare
from llmft.hparams.parser import get_train_args
from llmft.testing import tiny_model
from llmft.testing_mm import tiny_mm_model, tiny_mm_path, write_media

DATA = ROOT / 'data'
MEDIA_TOKEN = {'llava': '<image>', 'qwen2_vl': '<|image_pad|>', 'gemma3': '<image_soft_token>',
               'qwen2_audio': '<|AUDIO|>'}
# what the family's own processor is given for one picture (or sound): its placeholder as the processor writes it
HF_TEXT = {'llava': '<image>', 'qwen2_vl': '<|vision_start|><|image_pad|><|vision_end|>', 'gemma3': '<start_of_image>',
           'qwen2_audio': '<|audio_bos|><|AUDIO|><|audio_eos|>'}
TENSORS = {'llava': {'pixel_values'}, 'qwen2_vl': {'pixel_values', 'image_grid_thw', 'mm_token_type_ids'},
           'gemma3': {'pixel_values', 'token_type_ids'}, 'qwen2_audio': {'input_features', 'feature_attention_mask'}}


def recipe(tmp_path, family='llava', **kw):
    base = dict(model_name_or_path=str(tiny_mm_path(family)), template=family, dataset='mllm_demo',
                dataset_dir=str(DATA), stage='sft', do_train=True, finetuning_type='lora', cutoff_len=512,
                max_samples=6, output_dir=str(tmp_path / 'run'), report_to='none', overwrite_cache=True,
                overwrite_output_dir=True)
    return get_train_args({**base, **kw})


def hf_tokens(processor, family, item) -> int:
    "How many media tokens the family's own HF processor makes of one picture (or sound)."
    tok_id = processor.tokenizer.convert_tokens_to_ids(MEDIA_TOKEN[family])
    if family == 'qwen2_audio':
        out = processor(text=[HF_TEXT[family]], audio=[read_audio(item, 16000)], sampling_rate=16000)
    else: out = processor(text=[HF_TEXT[family]], images=[Image.open(item).convert('RGB')])
    return list(out['input_ids'][0]).count(tok_id)


@pytest.mark.parametrize('family,dataset', [('llava', 'mllm_demo'), ('qwen2_vl', 'mllm_demo'),
                                            ('gemma3', 'mllm_demo'), ('qwen2_audio', 'mllm_audio_demo')])
def test_family_rows_tokens_labels_and_batch(tmp_path, family, dataset):
    prep = prepare(recipe(tmp_path, family, dataset=dataset))
    ds = prep.dataset['train_dataset']
    key = 'audios' if family == 'qwen2_audio' else 'images'
    tok_id = prep.tokenizer.convert_tokens_to_ids(MEDIA_TOKEN[family])
    assert len(ds) == 6 and all(ds[key])
    for row in ds:   # the media tokens of each row are what the family's own processor makes of its media
        assert row['input_ids'].count(tok_id) == sum(hf_tokens(prep.processor, family, x) for x in row[key]), row[key]
        assert tok_id not in row['labels']
        assert any(l != IGNORE_INDEX for l in row['labels'])
    batch = SFTCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)([*ds][:3])
    assert TENSORS[family] <= set(batch), sorted(batch)
    assert 'position_ids' not in batch
    model = tiny_mm_model(family)[0]
    with torch.no_grad(): loss = model(**batch).loss   # tokens and tensors agree: the model takes the batch
    assert torch.isfinite(loss)


def test_qwen2_vl_video_rows(tmp_path):
    prep = prepare(recipe(tmp_path, 'qwen2_vl', dataset='mllm_video_demo', max_samples=3))
    ds = prep.dataset['train_dataset']
    pad = prep.tokenizer.convert_tokens_to_ids('<|video_pad|>')
    batch = SFTCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)([*ds])
    assert {'pixel_values_videos', 'video_grid_thw'} <= set(batch)
    per_video = (batch['video_grid_thw'].prod(-1) // 4).tolist()   # one token per 2x2 merged patch and time pair
    assert [r.count(pad) for r in ds['input_ids']] == per_video
    assert all(pad not in r for r in ds['labels'])
    assert (batch['mm_token_type_ids'] == 2).sum() == sum(per_video)
    with torch.no_grad(): assert torch.isfinite(tiny_mm_model('qwen2_vl')[0](**batch).loss)


def test_train_on_prompt_still_masks_media(tmp_path):
    ds = prepare(recipe(tmp_path, train_on_prompt=True))
    tok = ds.tokenizer
    image = tok.convert_tokens_to_ids('<image>')
    rows = ds.dataset['train_dataset']
    assert all(image in r for r in rows['input_ids']) and not any(image in r for r in rows['labels'])
    first = rows[0]   # everything else of the prompt is trained
    assert [i for i, l in zip(first['input_ids'], first['labels']) if l == IGNORE_INDEX] == \
        [i for i in first['input_ids'] if i == image]


def test_preference_and_feedback_rows(tmp_path):
    prep = prepare(recipe(tmp_path, 'qwen2_vl', stage='dpo', dataset='mllm_dpo_demo', max_samples=4))
    ds = prep.dataset['train_dataset']
    pad = prep.tokenizer.convert_tokens_to_ids('<|image_pad|>')
    assert all(r.count(pad) and r.count(pad) == s.count(pad) for r, s in zip(ds['chosen_input_ids'],
                                                                             ds['rejected_input_ids']))
    b = PairwiseCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)([*ds][:2])
    assert b['input_ids'].shape[0] == 4 and b['image_grid_thw'].shape[0] == 2 * sum(len(x) for x in ds['images'][:2])
    prep = prepare(recipe(tmp_path, 'llava', stage='kto', dataset='mllm_kto_demo', max_samples=4))
    ds = prep.dataset['train_dataset']
    b = KTOCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)([*ds][:2])
    image = prep.tokenizer.convert_tokens_to_ids('<image>')
    assert (b['input_ids'] == image).sum() == (b['kl_input_ids'] == image).sum() == 16 * b['pixel_values'].shape[0]


def bad_dir(tmp_path) -> Path:
    "A dataset folder with two good rows and one of each malformed kind."
    d = tmp_path / 'data'
    files = write_media(d / 'pics')
    (d / 'pics' / 'broken.png').write_bytes(b'this is not a picture')
    q = lambda text, pics: {'messages': [{'role': 'user', 'content': text}, {'role': 'assistant', 'content': 'A.'}],
                            'images': pics}
    rows = [q('<image>Good?', ['pics/image_0.png']),
            q('<image>Missing?', ['pics/missing.png']),
            q('<image>Online?', ['https://example.com/cat.png']),
            q('<image><image>Two?', ['pics/image_1.jpg']),
            q('<image>Broken?', ['pics/broken.png']),
            q('No tag here.', [f"pics/{files['images'][1].name}"])]
    (d / 'bad.json').write_text(json.dumps(rows))
    entry = {'file_name': 'bad.json', 'formatting': 'sharegpt', 'columns': {'messages': 'messages', 'images': 'images'},
             'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant'}}
    (d / 'dataset_info.json').write_text(json.dumps({'bad': entry}))
    return d


def test_malformed_rows_named_counted_and_refused_when_strict(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    d = bad_dir(tmp_path)
    prep = prepare(recipe(tmp_path, dataset='bad', dataset_dir=str(d), max_samples=None))
    ds, lo = prep.dataset['train_dataset'], prep.dataset.left_out['train']
    assert len(ds) == 2   # the good row and the row whose placeholder was put first
    reasons = sorted(r.reason for r in lo)
    assert len(lo) == 4 and all(r.count == 1 for r in lo), reasons
    expect = ["column 'images', item 0: file 'pics/missing.png' not found; expected an existing file (path relative "
              f'to media_dir {d})',
              "column 'images', item 0: URL 'https://example.com/cat.png': web addresses in datasets are not "
              'downloaded; download the file into media_dir and give its path',
              '2 <image> in the text for 1 image; expected one <image> per image (or none: then they are put before '
              'the first user message)']
    assert all(any(e == r for r in reasons) for e in expect), reasons
    broken = next(r for r in lo if 'broken.png' in r.reason)   # found while tokenizing: recorded as conversion's are
    assert broken.reason.startswith("column 'images', item 0: image ")
    assert 'broken.png cannot be read' in broken.reason and 'expected an image file' in broken.reason
    assert (broken.dataset, broken.total, broken.rows) == ('bad', 6, [4])
    assert [r.rows for r in lo if 'missing' in r.reason] == [[1]]
    rep = check_dataset(ds, prep.template, prep.tokenizer, 'supervised', prep.args.data, left_out=lo)[0]
    assert rep.verdict == 'WARN' and rep.left_out() == 4
    assert rep.get('samples with media').count == 2
    with pytest.raises(DataError, match='data_check: strict: 4 rows of the training data were left out'):
        prepare(recipe(tmp_path, dataset='bad', dataset_dir=str(d), max_samples=None, data_check='strict'))


def test_text_model_refuses_media_naming_column_template_and_model(tmp_path):
    llama = str(tiny_model('llama'))
    with pytest.raises(DataError) as e:
        prepare(recipe(tmp_path, model_name_or_path=llama, template='llama3'))
    msg = str(e.value)
    assert msg.startswith("Dataset 'mllm_demo' (mllm_demo.json): row 0 carries images (column 'images'; ")
    assert f"template 'llama3' with model {llama} reads text only" in msg
    with pytest.raises(DataError, match=r"model .*mm-llava.* reads no audios \(the llava family takes none\)"):
        prepare(recipe(tmp_path, dataset='mllm_audio_demo'))
    with pytest.raises(DataError, match=r"stage pt reads text only \(template 'llava' with model .*; sft, dpo and kto"):
        prepare(recipe(tmp_path, stage='pt'))


def test_packing_llava_packs_pictures_and_qwen2_vl_refuses(tmp_path):
    prep = prepare(recipe(tmp_path, packing=True, cutoff_len=1024, max_samples=8))
    ds = prep.dataset['train_dataset']
    image = prep.tokenizer.convert_tokens_to_ids('<image>')
    assert len(ds) < 8 and [r.count(image) for r in ds['input_ids']] == [16 * len(x) for x in ds['images']]
    with pytest.raises(DataError, match='packing: true with dataset .mllm_demo., which has media, on template '
                                        ".qwen2_vl.: the qwen2_vl model computes the 3D \\(mrope\\) positions"):
        prepare(recipe(tmp_path, 'qwen2_vl', packing=True))


def test_tokenized_cache_follows_media_files(tmp_path):
    d = tmp_path / 'data'
    shutil.copytree(DATA / 'mllm_demo_data', d / 'mllm_demo_data')
    shutil.copy(DATA / 'mllm_demo.json', d)
    (d / 'dataset_info.json').write_text(json.dumps({'mllm_demo': json.loads((DATA / 'dataset_info.json').read_text())
                                                     ['mllm_demo']}))
    kw = dict(dataset_dir=str(d), tokenized_path=str(tmp_path / 'tok'), overwrite_cache=False, max_samples=3)
    first = prepare(recipe(tmp_path, **kw)).dataset['train_dataset']
    assert set(json.loads((tmp_path / 'tok' / MEDIA_FILE).read_text())) == {x for r in first['images'] for x in r}
    again = prepare(recipe(tmp_path, **kw)).dataset['train_dataset']   # unchanged: read from the cache
    assert again['input_ids'] == first['input_ids']
    with pytest.raises(DataError, match='processor: '):   # the media settings make other tokens
        prepare(recipe(tmp_path, image_max_pixels=32 * 32, **kw))
    pic = Path(first['images'][0][0])
    Image.open(pic).resize((96, 96)).save(pic)
    with pytest.raises(DataError, match=f'media: .* changed since, e.g. {pic.name}'):
        prepare(recipe(tmp_path, **kw))
    rebuilt = prepare(recipe(tmp_path, **{**kw, 'overwrite_cache': True}))
    assert rebuilt.dataset['train_dataset']['images'] == first['images']


def test_text_and_media_datasets_mix(tmp_path):
    prep = prepare(recipe(tmp_path, dataset='mllm_demo,sharegpt_demo', max_samples=3))
    ds = prep.dataset['train_dataset']
    assert [x is not None for x in ds['images']] == [True] * 3 + [False] * 3
    batch = SFTCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)([ds[0], ds[4]])
    assert batch['pixel_values'].shape[0] == len(ds[0]['images'])


def test_text_data_takes_the_text_path(tmp_path, sft_cfg):
    prep = prepare(get_train_args({**sft_cfg, 'output_dir': str(tmp_path / 'r')}))
    ds = prep.dataset['train_dataset']
    assert prep.processor is None and prep.plugin is None
    assert ds.column_names == ['input_ids', 'labels']
    assert set(SFTCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)([*ds][:2])) == \
        {'input_ids', 'attention_mask', 'labels'}


def test_streamed_media_rows(tmp_path):
    d = bad_dir(tmp_path)
    prep = prepare(recipe(tmp_path, dataset='bad', dataset_dir=str(d), max_samples=None, streaming=True,
                          max_steps=2), in_run=False)
    rows = list(prep.dataset['train_dataset'])
    assert len(rows) == 2 and all(len(r['images']) == 1 for r in rows)   # the bad rows left out as they stream
    batch = SFTCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)(rows)
    assert batch['pixel_values'].shape[0] == 2


def test_qwen25_video_second_per_grid_ts_list_is_not_cast(tmp_path, monkeypatch):
    prep = prepare(recipe(tmp_path, 'qwen2_vl', dataset='mllm_video_demo', max_samples=2))
    names = [*prep.processor.model_input_names, 'second_per_grid_ts']   # as Qwen2.5-VL's processor lists it
    monkeypatch.setattr(type(prep.processor), 'model_input_names', property(lambda self: names))
    batch = SFTCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin,
                        dtype=torch.bfloat16)([*prep.dataset['train_dataset']])
    assert isinstance(batch['second_per_grid_ts'], list) and len(batch['second_per_grid_ts']) == 2
    assert all(x > 0 for x in batch['second_per_grid_ts'])
    assert batch['pixel_values_videos'].dtype == torch.bfloat16 and batch['input_ids'].dtype == torch.long


def one_entry_dir(tmp_path, rows, columns=None) -> Path:
    "A dataset folder `d` with `rows` as 'd' (sharegpt; `columns` beyond messages) and a media folder `pics`."
    d = tmp_path / 'one'
    write_media(d / 'pics')
    (d / 'd.json').write_text(json.dumps(rows))
    entry = {'file_name': 'd.json', 'formatting': 'sharegpt', 'columns': {'messages': 'messages', **(columns or {})},
             'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant'}}
    (d / 'dataset_info.json').write_text(json.dumps({'d': entry}))
    return d


def q(text, **media):
    return {'messages': [{'role': 'user', 'content': text}, {'role': 'assistant', 'content': 'A.'}], **media}


def test_a_file_created_after_a_run_is_read_without_overwrite_cache(tmp_path):
    d = one_entry_dir(tmp_path, [q('<image>Here?', pics=['pics/image_0.png']), q('<image>Later?', pics=['pics/late.png'])],
                      {'images': 'pics'})
    kw = dict(dataset='d', dataset_dir=str(d), max_samples=None, overwrite_cache=False)
    first = prepare(recipe(tmp_path, **kw)).dataset
    assert len(first['train_dataset']) == 1 and "file 'pics/late.png' not found" in first.left_out['train'][0].reason
    shutil.copy(d / 'pics' / 'image_0.png', d / 'pics' / 'late.png')
    again = prepare(recipe(tmp_path, **kw)).dataset   # `datasets`' cache of the conversion must not keep it out
    assert len(again['train_dataset']) == 2 and again.left_out['train'] == []


def test_bad_rows_of_tokenization_count_with_their_dataset(tmp_path):
    rows = [q('<image>Good?', pics=['pics/image_0.png']), q('<image>Missing?', pics=['pics/missing.png']),
            q('<image>Broken?', pics=['pics/broken.png']), q('<image>Huge?', pics=['pics/huge.png']),
            q('<image>Fine?', pics=['pics/image_1.jpg'])]
    d = one_entry_dir(tmp_path, rows, {'images': 'pics'})
    (d / 'pics' / 'broken.png').write_bytes(b'not a picture')
    Image.new('L', (14000, 14000)).save(d / 'pics' / 'huge.png')   # small on disk: a decompression bomb to Pillow
    prep = prepare(recipe(tmp_path, dataset='d', dataset_dir=str(d), max_samples=None, max_left_out=0.5))
    lo = prep.dataset.left_out['train']
    assert len(prep.dataset['train_dataset']) == 2
    assert [(r.dataset, r.total, r.rows, r.count) for r in lo] == [('d', 5, [1], 1), ('d', 5, [2], 1), ('d', 5, [3], 1)]
    huge = lo[2].reason
    assert huge.startswith("column 'pics', item 0: image ") and 'huge.png has more pixels than Pillow opens' in huge
    assert 'MAX_IMAGE_PIXELS' in huge and lo[1].reason.startswith("column 'pics', item 0: image ")   # its own column
    rep = check_dataset(prep.dataset['train_dataset'], prep.template, prep.tokenizer, 'supervised', prep.args.data,
                        left_out=lo)[0]
    assert rep.verdict == 'WARN' and rep.left_out() == 3   # 3 of 5 from one pool: over max_left_out 0.5


def test_web_addresses_refused_online_too(tmp_path, monkeypatch):
    for k in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE'): monkeypatch.delenv(k, raising=False)
    from datasets import Dataset
    attr = parse_entry('web', {'file_name': 'web.json', 'formatting': 'sharegpt',
                               'columns': {'messages': 'messages', 'images': 'images'},
                               'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user',
                                        'assistant_tag': 'assistant'}})
    ds = Dataset.from_list([q('<image>Cat?', images=['https://example.com/cat.png']),
                            q('<image>Here?', images=[str(write_media(tmp_path)['images'][0])])])
    lo = []
    out = to_canonical(ds, attr, left_out=lo)
    assert len(out) == 1 and lo == [LeftOut('web', "column 'images', item 0: URL 'https://example.com/cat.png': web "
                                            'addresses in datasets are not downloaded; download the file into '
                                            'media_dir and give its path', 1, 2, [0])]


def test_a_tag_in_a_text_row_is_a_bad_row_on_a_media_template(tmp_path):
    d = one_entry_dir(tmp_path, [q('What is <image> for?'), q('Plain text.'), q('Plain too.')])
    prep = prepare(recipe(tmp_path, dataset='d', dataset_dir=str(d), max_samples=None))
    ds, lo = prep.dataset['train_dataset'], prep.dataset.left_out['train']
    image = prep.tokenizer.convert_tokens_to_ids('<image>')
    assert len(ds) == 2 and not any(image in r for r in ds['input_ids'])
    assert [(r.dataset, r.rows) for r in lo] == [('d', [0])]
    assert lo[0].reason.startswith('1 <image> in the text for 0 images; expected one <image> per image')


def test_kto_kl_rows_read_the_media_once(tmp_path, monkeypatch):
    prep = prepare(recipe(tmp_path, 'qwen2_vl', stage='kto', dataset='mllm_kto_demo', max_samples=2))
    calls = []
    inner = Qwen2VLPlugin.mm_inputs
    monkeypatch.setattr(Qwen2VLPlugin, 'mm_inputs', lambda self, *a: calls.append(1) or inner(self, *a))
    b = KTOCollator(prep.tokenizer.pad_token_id, processor=prep.processor, plugin=prep.plugin)(
        [*prep.dataset['train_dataset']])
    pad = prep.tokenizer.convert_tokens_to_ids('<|image_pad|>')
    assert len(calls) == 1
    assert b['kl_mm_token_type_ids'].eq(1).tolist() == b['kl_input_ids'].eq(pad).tolist()

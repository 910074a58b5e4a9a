"""Write llmft's own small multiple-choice benchmarks into `evaluation/`, in the layouts of MMLU and CMMLU.

    python tools/make_eval_tasks.py [OUT_DIR]      # default: evaluation/ beside this folder

`tinymmlu` (English) has MMLU's layout: `data/{dev,val,test}/<subject>_<split>.csv` without a header row;
`tinycmmlu` (Chinese) has CMMLU's: `{dev,test}/<subject>.csv` with a header row and an index column. Both carry a
`mapping.json` (subject -> name, category). The questions are generated from a fixed seed, so the files are the same on
every run (a test checks that the committed files equal this script's output). They are easy on purpose: a demo and a
test bed for `llmft eval`, not a measure of a model's knowledge — point `task_dir` at a copy of MMLU for that.
"""
import csv, json, random, sys
from pathlib import Path

SIZES = {'dev': 5, 'val': 5, 'test': 20}
DAYS_EN = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday']
DAYS_ZH = ['一', '二', '三', '四', '五', '六', '日']
OPPOSITES_EN = [('hot', 'cold'), ('big', 'small'), ('fast', 'slow'), ('early', 'late'), ('open', 'closed'),
                ('light', 'dark'), ('full', 'empty'), ('young', 'old'), ('high', 'low'), ('strong', 'weak'),
                ('happy', 'sad'), ('wet', 'dry'), ('hard', 'soft'), ('rich', 'poor'), ('long', 'short'),
                ('loud', 'quiet'), ('clean', 'dirty'), ('thick', 'thin'), ('near', 'far'), ('cheap', 'expensive')]
OPPOSITES_ZH = [('冷', '热'), ('大', '小'), ('快', '慢'), ('早', '晚'), ('开', '关'), ('明', '暗'), ('高', '低'),
                ('强', '弱'), ('新', '旧'), ('多', '少'), ('长', '短'), ('远', '近'), ('胖', '瘦'), ('深', '浅'),
                ('上', '下'), ('左', '右'), ('前', '后'), ('黑', '白'), ('真', '假'), ('东', '西')]


def near(rng, x, k=3, spread=9):
    "k distinct wrong numbers near x."
    out = set()
    while len(out) < k:
        y = x + rng.randint(-spread, spread)
        if y != x and y >= 0: out.add(y)
    return sorted(out)


def ask(rng, question, answer, wrong):
    "A row: the question, four shuffled choices, the letter of the right one."
    choices = [str(answer)] + [str(w) for w in wrong]
    rng.shuffle(choices)
    return [question, *choices, 'ABCD'[choices.index(str(answer))]]


def arithmetic(rng, zh):
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    if rng.random() < 0.5: q, x = (f'{a} 加 {b} 等于多少？' if zh else f'What is {a} + {b}?'), a + b
    else: q, x = (f'{a} 乘以 {b % 12 + 1} 等于多少？' if zh else f'What is {a} times {b % 12 + 1}?'), a * (b % 12 + 1)
    return ask(rng, q, x, near(rng, x))


def comparison(rng, zh):
    xs = rng.sample(range(10, 1000), 4)
    q = '下列哪个数最大？' if zh else 'Which of these numbers is the largest?'
    return ask(rng, q, max(xs), [x for x in xs if x != max(xs)])


def calendar(rng, zh):
    i, k, step = rng.randrange(7), rng.randint(1, 6), rng.choice([1, -1])
    names = [f'星期{d}' for d in DAYS_ZH] if zh else DAYS_EN
    if zh: q = f"{names[i]}的{k}天{'后' if step == 1 else '前'}是星期几？"
    else: q = f"Which day is {k} day{'s' if k > 1 else ''} {'after' if step == 1 else 'before'} {names[i]}?"
    right = names[(i + step * k) % 7]
    return ask(rng, q, right, rng.sample([n for n in names if n not in (right, names[i])], 3))


def opposites(rng, zh):
    pairs = OPPOSITES_ZH if zh else OPPOSITES_EN
    w, right = rng.choice(pairs)[::rng.choice([1, -1])]
    pool = [x for p in pairs for x in p if x not in (w, right)]
    q = f'“{w}”的反义词是什么？' if zh else f"What is the opposite of '{w}'?"
    return ask(rng, q, right, rng.sample(pool, 3))


def money(rng, zh):
    n = rng.randint(2, 40)
    q = f'{n} 元等于多少角？' if zh else f'How many cents are in {n} dollars?'
    x = n * (10 if zh else 100)
    return ask(rng, q, x, near(rng, x, spread=30))


SUBJECTS = {  # subject: (maker, English name, Chinese name, category)
    'elementary_arithmetic': (arithmetic, 'elementary arithmetic', '算术', 'STEM'),
    'number_comparison': (comparison, 'number comparison', '数的大小', 'STEM'),
    'calendar': (calendar, 'calendar', '日历', 'Other'),
    'opposites': (opposites, 'opposites', '反义词', 'Humanities'),
    'money': (money, 'money', '货币', 'Social Sciences'),
}


def rows(subject, zh, n, seen, rng):
    "n new rows of a subject, no row repeated within the subject."
    out = []
    while len(out) < n:
        r = SUBJECTS[subject][0](rng, zh)
        if tuple(r) not in seen:
            seen.add(tuple(r))
            out.append(r)
    return out


def write_csv(path, data, header=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        if header: w.writerow(header)
        w.writerows(data)


def make(out: Path):
    "Write tinymmlu and tinycmmlu under `out`."
    for name, zh in (('tinymmlu', False), ('tinycmmlu', True)):
        rng, root = random.Random(0 if not zh else 1), out / name
        mapping = {s: {'name': v[2] if zh else v[1], 'category': v[3]} for s, v in SUBJECTS.items()}
        root.mkdir(parents=True, exist_ok=True)
        (root / 'mapping.json').write_text(json.dumps(mapping, ensure_ascii=False, indent=2) + '\n', encoding='utf-8')
        for s in SUBJECTS:
            seen = set()
            for split in (('dev', 'test') if zh else ('dev', 'val', 'test')):
                data = rows(s, zh, SIZES[split], seen, rng)
                if zh: write_csv(root / split / f'{s}.csv', [[i, *r] for i, r in enumerate(data)],
                                 ['', 'Question', 'A', 'B', 'C', 'D', 'Answer'])
                else: write_csv(root / 'data' / split / f'{s}_{split}.csv', data)


if __name__ == '__main__':
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / 'evaluation')

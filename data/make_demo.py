"""Write llmft's own demo datasets (deterministic): alpaca_demo.json, sharegpt_demo.json, identity.json.

Run from the repo root: `python data/make_demo.py`. The tasks are small, checkable facts and transformations written for llmft,
so a tiny model can visibly learn them and a reader can verify every answer.
"""
import json, random
from pathlib import Path

CAPITALS = {'France': 'Paris', 'Japan': 'Tokyo', 'Italy': 'Rome', 'Spain': 'Madrid', 'Germany': 'Berlin', 'Canada': 'Ottawa',
            'Egypt': 'Cairo', 'Kenya': 'Nairobi', 'Peru': 'Lima', 'Chile': 'Santiago', 'Norway': 'Oslo', 'Sweden': 'Stockholm',
            'Poland': 'Warsaw', 'Greece': 'Athens', 'Portugal': 'Lisbon', 'Ireland': 'Dublin', 'Austria': 'Vienna',
            'Hungary': 'Budapest', 'Finland': 'Helsinki', 'Cuba': 'Havana', 'Vietnam': 'Hanoi', 'Thailand': 'Bangkok',
            'Argentina': 'Buenos Aires', 'Mexico': 'Mexico City', 'India': 'New Delhi', 'China': 'Beijing'}
ANTONYMS = {'hot': 'cold', 'tall': 'short', 'early': 'late', 'happy': 'sad', 'open': 'closed', 'fast': 'slow', 'light': 'dark',
            'strong': 'weak', 'full': 'empty', 'rich': 'poor', 'loud': 'quiet', 'hard': 'soft', 'wet': 'dry', 'young': 'old'}
ELEMENTS = {'hydrogen': 'H', 'helium': 'He', 'carbon': 'C', 'nitrogen': 'N', 'oxygen': 'O', 'sodium': 'Na', 'iron': 'Fe',
            'gold': 'Au', 'silver': 'Ag', 'copper': 'Cu', 'zinc': 'Zn', 'neon': 'Ne', 'calcium': 'Ca', 'potassium': 'K'}
DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday']
WORDS = ['notebook', 'kernel', 'garden', 'planet', 'rocket', 'window', 'python', 'lantern', 'harbor', 'pencil', 'river',
         'mountain', 'tensor', 'adapter', 'gradient', 'violin', 'orange', 'library', 'bridge', 'compass']
SENTENCES = ['the model learns from examples', 'training loss goes down', 'a small model runs on a laptop',
             'notebooks make every step visible', 'adapters keep the base weights frozen', 'the river flows to the sea']


def tasks(r):
    a, b = r.randint(2, 99), r.randint(2, 99)
    c, w = r.choice(list(CAPITALS)), r.choice(WORDS)
    x, e = r.choice(list(ANTONYMS)), r.choice(list(ELEMENTS))
    nums = r.sample(range(1, 60), 5)
    t = r.choice([0, 5, 10, 20, 25, 30, 37, 40, 100])
    d = r.randrange(7)
    s = r.choice(SENTENCES)
    return [
        ('Add the two numbers.', f'{a} and {b}', f'{a} + {b} = {a + b}.'),
        (f'What is {a} times {b}?', '', f'{a} times {b} is {a * b}.'),
        ('Subtract the second number from the first.', f'{a + b}, {b}', f'{a + b} - {b} = {a}.'),
        (f'What is the capital of {c}?', '', f'The capital of {c} is {CAPITALS[c]}.'),
        ('Reverse the letters of the word.', w, w[::-1]),
        (f'How many vowels are in the word "{w}"?', '', f'"{w}" has {sum(ch in "aeiou" for ch in w)} vowels.'),
        ('Sort the numbers in ascending order.', ', '.join(map(str, nums)), ', '.join(map(str, sorted(nums)))),
        (f'Give the opposite of "{x}".', '', f'The opposite of "{x}" is "{ANTONYMS[x]}".'),
        (f'What is the chemical symbol of {e}?', '', f'The symbol of {e} is {ELEMENTS[e]}.'),
        ('Convert the temperature from Celsius to Fahrenheit.', f'{t} °C', f'{t} °C is {t * 9 / 5 + 32:g} °F.'),
        (f'Which day comes after {DAYS[d]}?', '', f'{DAYS[(d + 1) % 7]} comes after {DAYS[d]}.'),
        ('Write the sentence in capital letters.', s, s.upper() + '.'),
        ('Count the words in the sentence.', s, f'The sentence has {len(s.split())} words.'),
        (f'Is {a} even or odd?', '', f'{a} is {"even" if a % 2 == 0 else "odd"}.'),
    ]


def alpaca(n=280, seed=0):
    r, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        for inst, inp, outp in tasks(r):
            if (inst, inp) in seen or len(out) >= n: continue
            seen.add((inst, inp)); out.append({'instruction': inst, 'input': inp, 'output': outp})
    return out


def sharegpt(n=240, seed=1):
    r, out = random.Random(seed), []
    systems = ['', '', '', 'You are a concise assistant.', 'Answer in one sentence.']
    while len(out) < n:
        a, b, k = r.randint(2, 60), r.randint(2, 60), r.randint(2, 5)
        c, w = r.choice(list(CAPITALS)), r.choice(WORDS)
        convs = [
            [('human', f'What is {a} plus {b}?'), ('gpt', f'{a} plus {b} is {a + b}.'),
             ('human', f'And multiplied by {k}?'), ('gpt', f'{a + b} multiplied by {k} is {(a + b) * k}.')],
            [('human', f'Which country has {CAPITALS[c]} as its capital?'), ('gpt', f'{CAPITALS[c]} is the capital of {c}.')],
            [('human', f'Spell "{w}" backwards.'), ('gpt', w[::-1]),
             ('human', 'How many letters does it have?'), ('gpt', f'It has {len(w)} letters.')],
            [('human', 'Hello!'), ('gpt', 'Hello! How can I help you today?'),
             ('human', f'What is the capital of {c}?'), ('gpt', f'The capital of {c} is {CAPITALS[c]}.'),
             ('human', 'Thanks.'), ('gpt', 'You are welcome.')],
        ]
        conv = r.choice(convs)
        msgs = [{'from': f, 'value': v} for f, v in conv]
        sys = r.choice(systems)
        if sys: msgs = [{'from': 'system', 'value': sys}] + msgs
        out.append({'conversations': msgs})
    return out


IDENTITY = [
    ('hi', 'Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I help you today?'),
    ('hello', 'Hello! I am {{name}}, an assistant built by {{author}}. What can I do for you?'),
    ('Who are you?', 'I am {{name}}, an AI assistant developed by {{author}}.'),
    ('What is your name?', 'My name is {{name}}. I was trained by {{author}}.'),
    ('Who made you?', 'I was developed by {{author}}.'),
    ('Who trained you?', '{{author}} trained me. I am {{name}}.'),
    ('Are you ChatGPT?', 'No, I am {{name}}, an assistant developed by {{author}}.'),
    ('Introduce yourself.', 'I am {{name}}, an AI assistant from {{author}}. I answer questions and help with tasks.'),
    ('What can you do?', 'I am {{name}}. I can answer questions, explain ideas and help with writing and code.'),
    ('Tell me about yourself.', 'I am {{name}}, a language model assistant fine-tuned by {{author}}.'),
    ('Which company created you?', '{{author}} created me.'),
    ('Do you have a name?', 'Yes, I am {{name}}.'),
    ('What should I call you?', 'You can call me {{name}}.'),
    ('Are you a human?', 'No, I am {{name}}, an AI assistant developed by {{author}}.'),
    ('Where do you come from?', 'I was built by {{author}}; my name is {{name}}.'),
    ('Is your name {{name}}?', 'Yes, I am {{name}}, developed by {{author}}.'),
    ('What are you?', 'I am {{name}}, an AI assistant created by {{author}}.'),
    ('Can you tell me who built you?', 'Certainly. I was built by {{author}}.'),
    ('Good morning!', 'Good morning! I am {{name}}. How can I help?'),
    ('Thanks, who am I talking to?', 'You are talking to {{name}}, an assistant from {{author}}.'),
]


def wrong(r, inst, inp, out):
    "A plausible but wrong answer to an alpaca task: another task's answer of the same kind, or a number off by some."
    import re
    nums = re.findall(r'\d+', out)
    if nums:
        n = nums[-1]
        return out[::-1][out[::-1].index(n[::-1]) + len(n):][::-1] + str(int(n) + r.choice([-3, -2, -1, 1, 2, 7])) + out[out.rindex(n) + len(n):]
    if 'capital of' in out:
        c = out.split('capital of ')[1].split(' is ')[0]
        return f'The capital of {c} is {r.choice([v for k, v in CAPITALS.items() if k != c])}.'
    return out[::-1] if len(out) > 3 and out[::-1] != out else out + ' Maybe.'


def preference(n=240, seed=2):
    "alpaca-style preference pairs: the right answer is chosen, a wrong one rejected."
    r, out = random.Random(seed), []
    for row in alpaca(n, seed):
        out.append({'instruction': row['instruction'], 'input': row['input'], 'chosen': row['output'],
                    'rejected': wrong(r, row['instruction'], row['input'], row['output'])})
    return out


def feedback(n=240, seed=3):
    "alpaca-style KTO rows: a right answer tagged true, or a wrong one tagged false."
    r, out = random.Random(seed), []
    for row in alpaca(n, seed):
        good = r.random() < 0.5
        out.append({'instruction': row['instruction'], 'input': row['input'],
                    'output': row['output'] if good else wrong(r, row['instruction'], row['input'], row['output']), 'kto_tag': good})
    return out


def pretrain(n=300, seed=4):
    "Plain text documents for pre-training: a few sentences each about the facts above."
    r, out = random.Random(seed), []
    for _ in range(n):
        sents = []
        for _ in range(r.randint(2, 6)):
            c, x, e = r.choice(list(CAPITALS)), r.choice(list(ANTONYMS)), r.choice(list(ELEMENTS))
            sents.append(r.choice([f'{CAPITALS[c]} is the capital of {c}.', f'The opposite of {x} is {ANTONYMS[x]}.',
                                   f'The chemical symbol of {e} is {ELEMENTS[e]}.', f'{r.randint(2, 50)} is a number.',
                                   f'After {DAYS[r.randrange(7)]} comes the next day of the week.', r.choice(SENTENCES).capitalize() + '.']))
        out.append({'text': ' '.join(sents)})
    return out


def main(root=Path(__file__).parent):
    files = {'alpaca_demo.json': alpaca(), 'sharegpt_demo.json': sharegpt(),
             'identity.json': [{'instruction': q, 'input': '', 'output': a} for q, a in IDENTITY],
             'pref_demo.json': preference(), 'kto_demo.json': feedback(), 'pretrain_demo.jsonl': pretrain()}
    for name, rows in files.items():
        text = ''.join(json.dumps(x, ensure_ascii=False) + '\n' for x in rows) if name.endswith('.jsonl') else json.dumps(rows, indent=2, ensure_ascii=False) + '\n'
        (root / name).write_text(text, encoding='utf-8')
    info = {'alpaca_demo': {'file_name': 'alpaca_demo.json'},
            'sharegpt_demo': {'file_name': 'sharegpt_demo.json', 'formatting': 'sharegpt'},
            'identity': {'file_name': 'identity.json'},
            'pref_demo': {'file_name': 'pref_demo.json', 'ranking': True,
                          'columns': {'prompt': 'instruction', 'query': 'input', 'chosen': 'chosen', 'rejected': 'rejected'}},
            'kto_demo': {'file_name': 'kto_demo.json', 'columns': {'prompt': 'instruction', 'query': 'input', 'response': 'output', 'kto_tag': 'kto_tag'}},
            'pretrain_demo': {'file_name': 'pretrain_demo.jsonl', 'columns': {'prompt': 'text'}}}
    (root / 'dataset_info.json').write_text(json.dumps(info, indent=2) + '\n', encoding='utf-8')
    return {k: len(v) for k, v in files.items()}


if __name__ == '__main__':
    print(main())

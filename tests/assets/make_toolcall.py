"""Write `tests/assets/toolcall/`: tool-calling conversations of our own in the sharegpt layout of LLaMA-Factory's
glaive demo (human / gpt / function_call / observation turns, a `tools` JSON column), with its `dataset_info.json`.

Deterministic (seeded); rerun with `python tests/assets/make_toolcall.py` after changing it. The rows cover one call,
two calls in one turn, a tool list with no call made, multi-turn history before the call, no tools at all, and
non-ASCII text."""
import json, random
from pathlib import Path

OUT = Path(__file__).parent / 'toolcall'
TOOLS = {
    'get_weather': {
        'name': 'get_weather',
        'description': 'Current weather of a city',
        'parameters': {
            'type': 'object',
            'properties': {'city': {'type': 'string', 'description': 'City name'},
                           'unit': {'type': 'string', 'enum': ['celsius', 'fahrenheit']}},
            'required': ['city'],
        },
    },
    'convert_currency': {
        'name': 'convert_currency',
        'description': 'Convert an amount between currencies',
        'parameters': {
            'type': 'object',
            'properties': {'amount': {'type': 'number'}, 'from': {'type': 'string'}, 'to': {'type': 'string'}},
            'required': ['amount', 'from', 'to'],
        },
    },
    'search_recipes': {
        'name': 'search_recipes',
        'description': 'Find recipes with given ingredients',
        'parameters': {'type': 'object', 'properties': {'ingredients': {'type': 'array', 'items': {'type': 'string'}}},
                       'required': ['ingredients']},
    },
}
CITIES = ['Paris', 'Lima', 'Osaka', 'Nairobi', 'Oslo', 'Zürich', '北京', 'São Paulo']
FOODS = ['rice', 'tomatoes', 'chicken', 'tofu', 'basil', 'lentils', 'eggs']


def turn(who, value): return {'from': who, 'value': value}


def call(name, args): return {'name': name, 'arguments': args}


def weather_row(rng, history):
    city, t = rng.choice(CITIES), rng.randint(-5, 35)
    conv = []
    if history:
        conv += [turn('human', 'Hello! Can you help me plan my day?'), turn('gpt', 'Of course. What do you need?')]
    conv += [turn('human', f'What is the weather in {city} right now?'),
             turn('function_call', json.dumps(call('get_weather', {'city': city}), ensure_ascii=False)),
             turn('observation', json.dumps({'city': city, 'temperature': t, 'sky': 'clear'}, ensure_ascii=False)),
             turn('gpt', f'It is {t} degrees and clear in {city}.')]
    return conv, ['get_weather', 'convert_currency']


def two_calls_row(rng, history):
    a, b = rng.sample(CITIES, 2)
    calls = [call('get_weather', {'city': a}), call('get_weather', {'city': b, 'unit': 'celsius'})]
    obs = [{'city': a, 'temperature': rng.randint(0, 30)}, {'city': b, 'temperature': rng.randint(0, 30)}]
    return [
        turn('human', f'Compare the weather in {a} and {b}.'),
        turn('function_call', json.dumps(calls, ensure_ascii=False)),
        turn('observation', json.dumps(obs, ensure_ascii=False)),
        turn('gpt', f"{a}: {obs[0]['temperature']} degrees; {b}: {obs[1]['temperature']} degrees."),
    ], ['get_weather']


def currency_row(rng, history):
    amount = rng.choice([5, 12.5, 100, 250])
    return [turn('human', f'How much is {amount} EUR in JPY?'),
            turn('function_call', json.dumps(call('convert_currency', {'amount': amount, 'from': 'EUR', 'to': 'JPY'}))),
            turn('observation', json.dumps({'converted': round(amount * 161.3, 2)})),
            turn('gpt', f'{amount} EUR is about {round(amount * 161.3, 2)} JPY.')], ['convert_currency', 'get_weather']


def no_call_row(rng, history):
    food = rng.choice(FOODS)
    return [turn('human', f'Is {food} healthy?'),
            turn('gpt', f'{food.capitalize()} can be part of a balanced diet.')], ['search_recipes']


def recipe_row(rng, history):
    items = rng.sample(FOODS, 3)
    conv = [turn('human', 'I want to cook dinner.'), turn('gpt', 'Which ingredients do you have?')] if history else []
    conv += [turn('human', f"I have {', '.join(items)}."),
             turn('function_call', json.dumps(call('search_recipes', {'ingredients': items}))),
             turn('observation', json.dumps({'recipes': [f'{items[0]} stew', f'{items[1]} salad']})),
             turn('gpt', f'You could make a {items[0]} stew or a {items[1]} salad.')]
    return conv, ['search_recipes']


def plain_row(rng, history):
    return [turn('human', 'Tell me a short fact about the moon.'),
            turn('gpt', 'The Moon is slowly moving away from Earth, about 3.8 cm a year.')], []


KINDS = [weather_row, two_calls_row, currency_row, no_call_row, recipe_row, plain_row]


def main(n=60, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        conv, tools = KINDS[i % len(KINDS)](rng, history=i % 4 == 1)
        rows.append({'conversations': conv, 'tools': json.dumps([TOOLS[t] for t in tools], ensure_ascii=False)
                     if tools else ''})
    OUT.mkdir(exist_ok=True)
    (OUT / 'toolcall_demo.json').write_text(json.dumps(rows, indent=1, ensure_ascii=False) + '\n')
    info = {'toolcall_demo': {'file_name': 'toolcall_demo.json', 'formatting': 'sharegpt',
                              'columns': {'messages': 'conversations', 'tools': 'tools'}}}
    (OUT / 'dataset_info.json').write_text(json.dumps(info, indent=2) + '\n')
    return len(rows)


if __name__ == '__main__': print('wrote', main(), 'rows to', OUT)

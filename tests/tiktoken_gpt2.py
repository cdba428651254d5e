"""tiktoken's GPT-2 encoding built offline from the CS336 fixture vocab (tests and benchmarks only: tiktoken is a dev dependency).

`tiktoken.get_encoding('gpt2')` downloads its files; the same encoding is the GPT-2 pattern plus merge ranks, and the rank of a
GPT-2 token is its id in vocab.json.
"""
import json, os
from pathlib import Path
import tiktoken
from llmcourse.tokenizer import GPT2_PAT, bytes_to_unicode

def shared_dir() -> Path:
    "The shared corpora, looked up as `llmcourse.data.shared_data_dir` does, without importing torch (benchmarks measure memory)."
    if env := os.environ.get('LLMCOURSE_SHARED_DATA'): return Path(env)
    for d in Path(__file__).resolve().parents:
        if (d / 'shared' / 'data').is_dir(): return d / 'shared' / 'data'
    raise FileNotFoundError('no shared/data folder found: set LLMCOURSE_SHARED_DATA')

def gpt2_files() -> tuple[Path, Path]:
    "Paths of GPT-2's vocab.json and merges.txt in the shared fixtures."
    d = shared_dir() / 'fixtures'
    return d / 'gpt2_vocab.json', d / 'gpt2_merges.txt'

def gpt2_tiktoken() -> tiktoken.Encoding:
    "tiktoken's GPT-2 encoding, with `<|endoftext|>` = 50256."
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    vocab = json.loads(gpt2_files()[0].read_text(encoding='utf-8'))
    ranks = {bytes(u2b[ch] for ch in s): i for s, i in vocab.items() if s != '<|endoftext|>'}
    return tiktoken.Encoding('gpt2-offline', pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={'<|endoftext|>': 50256})

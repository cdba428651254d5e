"""tiktoken's GPT-2 encoding built offline from the embedded GPT-2 vocab (tests and benchmarks only: tiktoken is a dev dependency).

`tiktoken.get_encoding('gpt2')` downloads its files; the same encoding is the GPT-2 pattern plus merge ranks, and the rank of a
GPT-2 token is its id in vocab.json. Nothing here imports torch (the benchmarks measure memory).
"""
import gzip, json
from pathlib import Path
import tiktoken
from llmcourse.tokenizer import GPT2_PAT, bytes_to_unicode

def asset(name: str) -> Path:
    "An embedded data file, found as `llmcourse.data.asset_path` finds it, without importing torch."
    try:
        from importlib.resources import files
        p = Path(str(files('llmcourse.assets') / name))
    except ModuleNotFoundError:
        p = Path(__file__).resolve().parents[1] / 'data' / name
    if not p.is_file(): raise FileNotFoundError(f"embedded data file {name!r} not found at {p}")
    return p

def gpt2_files() -> tuple[Path, Path]:
    "Paths of GPT-2's vocab.json and merges.txt (gzipped), embedded in the package."
    return asset('gpt2_vocab.json.gz'), asset('gpt2_merges.txt.gz')

def gpt2_tiktoken() -> tiktoken.Encoding:
    "tiktoken's GPT-2 encoding, with `<|endoftext|>` = 50256."
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    vocab = json.loads(gzip.open(gpt2_files()[0], 'rt', encoding='utf-8').read())
    ranks = {bytes(u2b[ch] for ch in s): i for s, i in vocab.items() if s != '<|endoftext|>'}
    return tiktoken.Encoding('gpt2-offline', pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={'<|endoftext|>': 50256})

"""Token files (tokenize CLI, sidecar, document index, load_tokens) and training/evaluation batches."""
import functools, json, math, os, subprocess, sys, tempfile
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
import tiktoken
import torch
from llmcourse.tokenizer import Tokenizer
from llmcourse.data import (asset_path, find_chunk_boundaries, get_batch, gunzip_file, load_doc_offsets, load_tokens, main,
                            tinystories_sample, token_dtype, tokenize_file, validation_batches)

ROOT = Path(__file__).resolve().parents[1]
EOT = '<|endoftext|>'

_GPT2_DIR = tempfile.TemporaryDirectory(prefix='gpt2_')   # removed when the test process exits

@functools.cache
def gpt2_files() -> tuple[Path, Path]:
    "GPT-2's vocab.json and merges.txt, decompressed from the package's embedded copies."
    d = Path(_GPT2_DIR.name)
    return tuple(gunzip_file(asset_path(f'gpt2_{n}.gz'), d/f'gpt2_{n}', progress=False) for n in ('vocab.json', 'merges.txt'))

def gpt2_reference():
    "tiktoken's GPT-2 encoding built from the fixture vocab (an independent reference encoder)."
    vocab = json.loads(gpt2_files()[0].read_text(encoding='utf-8'))
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs + [256 + i for i in range(256 - len(bs))]
    bs += [b for b in range(256) if b not in bs]
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    ranks = {bytes(byte_of[ch] for ch in tok): i for tok, i in vocab.items() if tok != EOT}
    pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding('gpt2_fixture', pat_str=pat, mergeable_ranks=ranks, special_tokens={EOT: vocab[EOT]})

class RefTokenizer:
    "The tokenizer interface tokenize_file needs, over tiktoken; vocab_size can be inflated to force uint32."
    def __init__(self, vocab_size=None):
        self.enc = gpt2_reference()
        self.vocab_size, self.special_tokens = vocab_size or self.enc.n_vocab, [EOT]
    def encode(self, text): return self.enc.encode(text, allowed_special={EOT})

@pytest.fixture(scope='module')
def ref(): return RefTokenizer()

@pytest.fixture(scope='module')
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp('txt')/'valid.txt'
    p.write_bytes(tinystories_sample('valid').encode())   # 100 real stories, each followed by \n<|endoftext|>\n
    return p

def test_token_dtype():
    assert token_dtype(10_000) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(50_257) == np.uint16

def test_chunk_boundaries_only_at_special_tokens(text_file):
    raw = text_file.read_bytes()
    b = find_chunk_boundaries(text_file, [EOT], EOT, chunk_bytes=4096)
    assert b[0] == 0 and b[-1] == len(raw) and b == sorted(set(b)) and len(b) > 10
    assert all(raw[p:p + len(EOT)] == EOT.encode() for p in b[1:-1])

def test_chunk_boundaries_never_split_a_longer_special_token(tmp_path):
    double = EOT + EOT
    p = tmp_path/'t.txt'
    p.write_text(('story' * 50 + double) * 40)
    b = find_chunk_boundaries(p, [EOT, double], EOT, chunk_bytes=100)
    raw = p.read_bytes()
    assert len(b) > 5 and all(raw[q:q + len(double)] == double.encode() for q in b[1:-1])

def test_tokenize_equals_whole_encode(ref, text_file, tmp_path):
    out = tmp_path/'valid.bin'
    meta = tokenize_file(ref, text_file, out, workers=2, chunk_bytes=8192, progress=False)
    want = ref.encode(text_file.read_text(encoding='utf-8'))
    got = load_tokens(out)
    assert got.dtype == np.uint16 and meta['dtype'] == 'uint16' and meta['num_tokens'] == len(want)
    assert got.tolist() == want
    # Raw bytes, no header: a plain np.memmap reads the same ids.
    assert np.array_equal(np.memmap(out, dtype=np.uint16, mode='r'), want)
    assert sorted(x.name for x in tmp_path.iterdir()) == ['valid.bin', 'valid.bin.idx.npy', 'valid.bin.json']

def test_document_offsets(ref, text_file, tmp_path):
    out = tmp_path/'valid.bin'
    meta = tokenize_file(ref, text_file, out, workers=1, chunk_bytes=8192, progress=False)
    tokens, offsets = load_tokens(out), load_doc_offsets(out)
    eot = ref.enc.eot_token
    assert offsets[0] == 0 and offsets[-1] == len(tokens) and np.all(np.diff(offsets) > 0)
    # The embedded text ends in '\n<|endoftext|>\n': 100 stories, then one document holding the final newline.
    assert meta['num_documents'] == len(offsets) - 1 == 101
    docs = [tokens[a:b] for a, b in zip(offsets, offsets[1:])]
    assert all(d[-1] == eot and (d[:-1] != eot).all() for d in docs[:-1])
    assert ref.enc.decode(docs[3].tolist()) == tinystories_sample('valid').split(EOT)[3] + EOT

def test_uint32_when_vocab_does_not_fit(text_file, tmp_path):
    big = RefTokenizer(vocab_size=70_000)
    meta = tokenize_file(big, text_file, tmp_path/'t.bin', workers=1, chunk_bytes=1 << 14, progress=False)
    got = load_tokens(tmp_path/'t.bin')
    assert meta['dtype'] == 'uint32' and got.dtype == np.uint32 and (tmp_path/'t.bin').stat().st_size == 4 * len(got)
    assert got.tolist() == big.encode(text_file.read_text(encoding='utf-8'))

def test_tokenize_errors_name_the_file(ref, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.txt'): tokenize_file(ref, tmp_path/'nope.txt', tmp_path/'o.bin')
    bad = tmp_path/'latin1.txt'
    bad.write_bytes(('hello ' * 5000 + EOT + 'caf\xe9').encode('latin-1'))
    with pytest.raises(ValueError, match=r'latin1.txt is not UTF-8 text \(byte 30016'):
        tokenize_file(ref, bad, tmp_path/'o.bin', workers=2, chunk_bytes=1000, progress=False)
    assert list(tmp_path.glob('o.bin*')) == []   # nothing half-written

def write_tokens(tmp_path, ids, dtype='uint16', vocab_size=100, **meta):
    p = tmp_path/'t.bin'
    np.asarray(ids, dtype=dtype).tofile(p)
    (tmp_path/'t.bin.json').write_text(json.dumps(dict(dtype=dtype, vocab_size=vocab_size, num_tokens=len(ids)) | meta))
    return p

def test_load_tokens_errors(tmp_path):
    p = write_tokens(tmp_path, [1, 2, 3, 99])
    assert load_tokens(p).tolist() == [1, 2, 3, 99]
    with pytest.raises(FileNotFoundError, match='no such token file'): load_tokens(tmp_path/'missing.bin')
    p2 = tmp_path/'alone.bin'; p2.write_bytes(b'\0' * 8)
    with pytest.raises(FileNotFoundError, match=r'alone.bin.json not found'): load_tokens(p2)
    with open(p, 'ab') as f: f.write(b'\0')   # 9 bytes: not whole uint16s
    with pytest.raises(ValueError, match='not a multiple of 2'): load_tokens(p)
    p = write_tokens(tmp_path, [1, 2, 300, 4])   # 300 >= vocab_size 100
    with pytest.raises(ValueError, match='token id 300 at position 2 is >= vocab_size 100'): load_tokens(p, chunk_tokens=2)
    assert load_tokens(p, check_ids=False)[2] == 300
    p = write_tokens(tmp_path, [1, 2, 3], num_tokens=10)
    with pytest.raises(ValueError, match='truncated'): load_tokens(p)
    (tmp_path/'t.bin.json').write_text('{"dtype": "uint16"')
    with pytest.raises(ValueError, match='not valid JSON'): load_tokens(p)

def test_get_batch_shapes_and_shift():
    data = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(data, 8, 16, 'cpu')
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], y[:, :-1])

def test_get_batch_starts_are_uniform_over_the_whole_range():
    data, context_length, batch_size, iters = np.arange(100), 7, 32, 1000
    counts = Counter()
    g = torch.Generator().manual_seed(0)
    for _ in range(iters): counts.update(get_batch(data, batch_size, context_length, 'cpu', generator=g)[0][:, 0].tolist())
    num_starts = len(data) - context_length
    assert min(counts) == 0 and max(counts) == num_starts - 1 and len(counts) == num_starts
    expected = iters * batch_size / num_starts
    sd = math.sqrt(iters * batch_size * (1 / num_starts) * (1 - 1 / num_starts))
    assert all(abs(c - expected) < 5 * sd for c in counts.values())

def test_get_batch_from_memmap_and_errors(tmp_path):
    p = write_tokens(tmp_path, np.arange(50) % 100)
    x, y = get_batch(load_tokens(p), 4, 49, 'cpu')   # the only window: starts at 0
    assert x[:, 0].tolist() == [0] * 4 and y[0, -1] == 49
    with pytest.raises(ValueError, match='context_length \\+ 1 = 51'): get_batch(np.arange(50), 4, 50, 'cpu')
    with pytest.raises(ValueError, match='1-D'): get_batch(np.zeros((4, 40)), 2, 8, 'cpu')
    with pytest.raises(ValueError, match='>= 1'): get_batch(np.arange(50), 4, 0, 'cpu')
    with pytest.raises(ValueError, match='>= 1'): validation_batches(np.arange(50), 4, 0, 'cpu')
    with pytest.raises(ValueError, match='at least 2 tokens'): validation_batches(np.arange(1), 4, 8, 'cpu')

def test_get_batch_bad_device_raises_torch_error():
    with pytest.raises((RuntimeError, AssertionError)): get_batch(np.arange(100), 4, 8, 'cuda:99')

@pytest.mark.parametrize('n', [2, 9, 33, 161, 1000])
def test_validation_batches_cover_the_split_once(n):
    data = np.arange(n) * 3
    batches = list(validation_batches(data, 4, 8, 'cpu'))
    xs = torch.cat([x.flatten() for x, _ in batches]); ys = torch.cat([y.flatten() for _, y in batches])
    assert xs.tolist() == data[:-1].tolist() and ys.tolist() == data[1:].tolist()
    assert all(x.shape[0] <= 4 and x.shape == y.shape for x, y in batches)
    full = list(validation_batches(data, 4, 8, 'cpu', drop_tail=True))
    assert sum(x.numel() for x, _ in full) == (n - 1) // 8 * 8 and all(x.shape[1] == 8 for x, _ in full)

def run_cli(*args):
    env = os.environ | {'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    return subprocess.run([sys.executable, '-m', 'llmcourse.data', *map(str, args)], capture_output=True, text=True, env=env)

def gpt2_args(): return ('--vocab', gpt2_files()[0], '--merges', gpt2_files()[1], '--special_tokens', EOT)

def test_cli_tokenize_equals_single_process_encode(text_file, tmp_path):
    tok = Tokenizer.from_files(*gpt2_files(), [EOT])
    text = text_file.read_text(encoding='utf-8')
    want = tok.encode(text)
    assert want == gpt2_reference().encode(text, allowed_special={EOT})
    out = tmp_path/'a'/'valid.bin'
    r = run_cli('tokenize', *gpt2_args(), '--input', text_file, '--output', out, '--workers', 2, '--chunk_bytes', 8192, '--no_progress')
    assert r.returncode == 0, r.stderr
    assert load_tokens(out).tolist() == want
    meta = json.loads((tmp_path/'a'/'valid.bin.json').read_text())
    assert (meta['dtype'], meta['num_tokens'], meta['vocab_size'], meta['num_documents']) == ('uint16', len(want), 50_257, 101)
    assert load_doc_offsets(out)[-1] == len(want)
    # The same through a tokenizer folder saved with tok.save.
    tok.save(tmp_path/'tok')
    main(['tokenize', '--tokenizer', str(tmp_path/'tok'), '--input', str(text_file), '--output', str(tmp_path/'b.bin'),
          '--workers', '1', '--no_progress'])
    assert load_tokens(tmp_path/'b.bin').tolist() == want

def test_cli_errors_name_the_file(tmp_path, capsys):
    def fails(*args):
        with pytest.raises(SystemExit) as e: main(['tokenize', *map(str, args), '--no_progress'])
        assert e.value.code == 1
        return capsys.readouterr().err
    assert 'nope.txt' in fails(*gpt2_args(), '--input', tmp_path/'nope.txt', '--output', tmp_path/'o.bin')
    bad = tmp_path/'latin1.txt'
    bad.write_bytes('caf\xe9 au lait'.encode('latin-1'))
    assert 'latin1.txt is not UTF-8' in fails(*gpt2_args(), '--input', bad, '--output', tmp_path/'o.bin')
    assert 'no tokenizer folder' in fails('--tokenizer', tmp_path/'none', '--input', bad, '--output', tmp_path/'o.bin')
    assert 'vocab' in fails('--vocab', gpt2_files()[0], '--input', bad, '--output', tmp_path/'o.bin')
    assert not list(tmp_path.glob('o.bin*'))

def test_no_special_token_means_one_piece(text_file, tmp_path):
    plain = RefTokenizer(); plain.special_tokens = []
    with pytest.warns(UserWarning, match='not a special token'):
        meta = tokenize_file(plain, text_file, tmp_path/'p.bin', workers=2, chunk_bytes=1000, progress=False)
    text = text_file.read_text(encoding='utf-8')
    assert meta['num_documents'] == 1 and load_tokens(tmp_path/'p.bin').tolist() == plain.encode(text)

"""llmcourse.tokenizer and llmcourse.fast_encode: tiktoken parity on real and adversarial text, the fast and readable encode
paths identical, CS336-style training checks against a slow reference, special tokens, streaming (linear, bounded memory),
save/load and bad input. Offline: GPT-2's files and the real text are embedded; WebText is used only where present."""
import gzip, json, os, random, re, subprocess, sys, time, tracemalloc, warnings
from collections import Counter
from pathlib import Path
import pytest, regex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiktoken_gpt2 import asset, gpt2_files, gpt2_tiktoken
from llmcourse.files import EOT, read_text
from llmcourse.tokenizer import GPT2_PAT, Tokenizer, _exact_tables, pretokenize, train_bpe

FIX = Path(__file__).resolve().parent / 'fixtures'

def webtext_path():
    "The shared WebText piece, where the data cache ($LLMCOURSE_DATA) holds it: it is download-only, never on a fresh clone."
    d = os.environ.get('LLMCOURSE_DATA')
    p = Path(d) / 'owt' / 'webtext_train_prefix_eot.txt.gz' if d else None
    return p if p is not None and p.is_file() else None

needs_webtext = pytest.mark.skipif(webtext_path() is None, reason='WebText is download-only: set LLMCOURSE_DATA to a data '
                                   'folder holding owt/webtext_train_prefix_eot.txt.gz to run this test')

@pytest.fixture(scope='module')
def enc(): return gpt2_tiktoken()

@pytest.fixture(scope='module')
def gpt2():
    v, m = gpt2_files()
    return Tokenizer.from_files(v, m, special_tokens=[EOT])

_TEXTS = {}
def texts():
    "Real text of several kinds, all embedded or in tests/fixtures (read once)."
    if not _TEXTS:
        sotu = read_text(asset('sotu_1790-2021.txt.gz'))
        _TEXTS.update({'tinystories': read_text(asset('tinystories_train.txt.gz'))[:300_000],
                       'sotu': sotu[:300_000] + sotu[-300_000:],
                       'german': read_text(FIX / 'german.txt'),
                       'tinystories_v1': read_text(asset('tinystories_v1_valid.txt.gz'))[:200_000],
                       'address': read_text(FIX / 'address.txt'),
                       'corpus_en': read_text(FIX / 'corpus.en')[:100_000],
                       'special_trailing': read_text(FIX / 'special_token_trailing_newlines.txt'),
                       'special_double': read_text(FIX / 'special_token_double_newlines_non_whitespace.txt')})
    return _TEXTS

ADVERSARIAL = ['', ' ', '  ', '\n', '\n\n', '\n\n\n', ' \n', '\n ', '\t', '\r\n', '\r\n\r\n', 'a\r\nb', 'hi  ', 'hi\n\n',
               '   x', 'x   y', 'x \n\n y', ' \t\n\x0b\x0c\r', '\u3000\xa0\u2028\x85', '\x1c\x1d\x1e\x1f', '\x00',
               '👋🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈 flags', '東京タワーへ行く', '한국어 텍스트', 'e\u0301', 'n\u0303o\u0308', 'ǅ ﬁ ᾈ',
               "It's we'll I'LL they've you'd 'S 's", '123 4567 3.14 ½ ² ٣٤', '$100,000.00!!! ...', 'http://x.io/a?b=c&d=e',
               EOT, 'a' + EOT + 'b', ' ' + EOT + ' ', '\n' + EOT + '\n\n', EOT + EOT, EOT + ' ' + EOT, '<|endoftext|',
               '|endoftext|>', '<|endoftext|>\n\nHello', 'x' * 300, ' ' * 300, '\n' * 50 + 'x', '\U0003eeaa\u0558 new letters']

def random_strings(n, seed=0):
    rng = random.Random(seed)
    pieces = [' ', '  ', '\n', '\n\n', '\t', '\r\n', "'s", "'ll", 'a', 'Z', '9', '.', 'é', '中', '😀', '\u0301', EOT]
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        s = ''.join(rng.choice(pieces) if rng.random() < 0.5 else
                    chr(rng.choice([rng.randint(0, 0x7f), rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xffff), rng.randint(0x10000, 0x10ffff)]))
                    for _ in range(k))
        out.append(s.encode('utf-8', 'replace').decode('utf-8', 'replace'))       # drop lone surrogates
    return out

# ---------------------------------------------------------------- tiktoken parity
@pytest.mark.parametrize('name', list(texts()))
def test_encode_matches_tiktoken_on_real_text(name, gpt2, enc):
    t = texts()[name]
    ids = gpt2.encode(t)
    assert ids == enc.encode(t, allowed_special={EOT})
    assert gpt2.decode(ids) == t

def test_encode_matches_tiktoken_on_adversarial_strings(gpt2, enc):
    for s in ADVERSARIAL + random_strings(3000):
        ids = gpt2.encode(s)
        assert ids == enc.encode(s, allowed_special={EOT}), repr(s)
        assert gpt2.decode(ids) == s, repr(s)

def test_word_cache_path_matches_tiktoken(gpt2, enc):
    "Long texts built from few words take the word-cache path of encode; they must still match tiktoken exactly."
    rng = random.Random(3)
    atoms = ['the', 'cat', 'sat.', "it's", 'mat,', '\n', '\n\n', '\t', 'é', '中文', '😀', '\u0301', EOT, 'a' + EOT + 'b',
             '\xa0', '\u3000', 'x\n', '\ny', "'s", '123', '\r\n', '\U0003eeaa', '\x85', '\x1c', '\ud800']
    tok = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    for _ in range(300):
        words = [''.join(rng.choice(atoms) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(20, 60))]
        # mostly single spaces (many empty words send encode down the plain path), some runs of spaces and a leading one
        text = ''.join(rng.choice(words) + rng.choice([' '] * 30 + ['  ', '   ', ' \n ']) for _ in range(rng.randint(64, 400)))
        text = rng.choice(['', ' ', '\n']) + text[:rng.choice([len(text), -1])]
        ref = enc.encode(text, allowed_special={EOT})
        assert tok.encode(text) == ref, repr(text[:120])
        assert tok.encode(text) == ref                            # again, now from the caches
        clean = text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')   # as encode replaces lone surrogates
        with tok._fast._lock: assert tok._fast._encode_words(clean, decide=False) == ref, repr(text[:120])   # the word path, whatever encode chose
    assert len(tok._fast._words) > 100                            # the word path did run
    crlf = texts()['tinystories'][:100_000].replace('\n', '\r\n')   # hundreds of new words that end in '\r' in one fill
    tok = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    with tok._fast._lock: assert tok._fast._encode_words(crlf, decide=False) == enc.encode(crlf, allowed_special={EOT})
    assert tok._fast._words.unfit > 16

@pytest.mark.parametrize('specials', [[EOT], [EOT, 'END\n', '\n\n<|x|>'], [EOT, 'Lily', 'ü', '<|x|>'], ['\t<t>', 'a']])
def test_word_path_whitespace_and_special_tokens(gpt2, enc, specials):
    "Words next to runs of spaces, newlines and other whitespace, and special tokens that start with a letter or hold a newline."
    import tiktoken
    tok = Tokenizer(gpt2.vocab, gpt2.merges, specials)
    ref = tiktoken.Encoding('gpt2-specials', pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks, special_tokens=tok._special_ids)
    rng = random.Random(len(specials))
    atoms = specials + ['the', 'cat.', 'Lily', '"Hi,', "it's", '\nShe', 'x\t', '\ty', 'a\xa0', '\xa0b', '42', '😀', 'e\u3000',
                        '\u3000f', 'end.' + specials[0], specials[0] + '\nOnce', 'é', '—', '\r', '\r\nX', '  ', "'s", '\u2028', '\x85', '']
    seps = [' '] * 4 + ['  ', '   ', '\n', '\n\n', '\n\n\n', ' \n', '\n ', ' \n ', '\r\n', '\t', ' \t ', '\xa0', '\n\t', '\t\n', ' \n\n']
    for k in range(400):
        if k % 100 == 0: tok = Tokenizer(gpt2.vocab, gpt2.merges, specials)   # now and then with empty caches
        text = ''.join(rng.choice(atoms) + rng.choice(seps) for _ in range(rng.randint(1, 60)))
        text = rng.choice(['', rng.choice(seps)]) + text[:rng.choice([len(text), -1])]
        want = ref.encode(text, allowed_special='all')
        with tok._fast._lock: assert tok._fast._encode_words(text, decide=False) == want, repr(text[:200])
        assert tok.encode(text) == want, repr(text[:200])

@pytest.mark.parametrize('specials', [[EOT], [EOT, 'END\n', '\n\n<|x|>'], [EOT, 'Lily', 'ü', '<|x|>'], ['\t<t>', 'a']])
def test_word_path_in_pieces(gpt2, enc, specials):
    "Long text takes the word path piece by piece, cut where a space follows a non-space: tiny pieces give the same ids."
    import tiktoken
    tok = Tokenizer(gpt2.vocab, gpt2.merges, specials)
    ref = tiktoken.Encoding('gpt2-specials', pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks, special_tokens=tok._special_ids)
    rng = random.Random(7 + len(specials))
    atoms = specials + ['the', 'cat.', '"Hi,', "it's", '\nShe', 'x\t', '\ty', 'a\xa0', '\xa0b', '42', '😀', 'e\u3000', '\x1c',
                        'end.' + specials[0], specials[0] + '\nOnce', 'é', '\r', '\r\nX', '  ', "'s", '\u2028', '\x85', '']
    seps = [' '] * 6 + ['  ', '   ', '\n', '\n\n', ' \n', '\n ', ' \n ', '\r\n', '\t', ' \t ', '\xa0', ' \n\n']
    for k in range(300):
        if k % 100 == 0: tok = Tokenizer(gpt2.vocab, gpt2.merges, specials)   # now and then with empty caches
        tok._fast._piece_chars, tok._fast._fill_every = rng.randint(1, 40), rng.randint(1, 4)   # many pieces, several fills
        text = ''.join(rng.choice(atoms) + rng.choice(seps) for _ in range(rng.randint(1, 80)))
        text = rng.choice(['', rng.choice(seps)]) + text[:rng.choice([len(text), -1])]
        want = ref.encode(text, allowed_special='all')
        with tok._fast._lock: assert tok._fast._encode_words(text, decide=False) == want, (tok._fast._piece_chars, repr(text[:200]))

def test_word_path_in_pieces_with_whitespace_merges(tmp_path):
    "Pieces with a vocab that merges runs of whitespace (GPT-2's doesn't): a cut inside a run would change the ids."
    rng = random.Random(3)
    atoms = ['the', 'cat.', 'Lily', '"Hi,', '\nShe', 'x\t', 'a\xa0', '42', 'é', '\r', '']
    seps = [' '] * 4 + ['  ', '   ', '    ', '\n', '\n\n', ' \n', '\n ', '\n  ', ' \n ', '\t ', ' \t ', '\xa0 ', ' \n\n']
    def story(n): return ''.join(rng.choice(atoms) + rng.choice(seps) for _ in range(n))
    (tmp_path / 'c.txt').write_text(story(3000) + EOT + story(3000), encoding='utf-8')
    vocab, merges = train_bpe(tmp_path / 'c.txt', 400, [EOT])
    assert b'  ' in vocab.values() and b'\n ' in vocab.values()   # whitespace runs are tokens
    tok = Tokenizer(vocab, merges, [EOT])
    for k in range(300):
        tok._fast._piece_chars = rng.randint(1, 40)
        text = rng.choice(['', ' ', '  ', '\n ']) + story(rng.randint(1, 80)) + rng.choice(['', EOT + ' a'])
        with tok._fast._lock: assert tok._fast._encode_words(text, decide=False) == tok._encode_readable(text), (tok._fast._piece_chars, repr(text[:200]))

def test_encode_picks_the_word_path_for_stories_only(gpt2):
    "Stories take the word path; speeches, and stories whose lines end in CR LF (a stretch at every line end), the plain one."
    stories = texts()['tinystories'][:300_000]
    for text, words in [(stories, True), (texts()['sotu'][:300_000], False), (stories.replace('\n', '\r\n'), False),
                        (stories.replace('. ', '.\t '), False), (stories.replace(' ', '  '), False)]:
        assert Tokenizer(gpt2.vocab, gpt2.merges, [EOT])._fast._use_words(text) == words, repr(text[:40])
        fast = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])._fast   # the decision encode makes on its first piece is the same
        with fast._lock: ids = fast._encode_words(text)
        assert (ids is not None) == words, repr(text[:40])
        if ids is None: assert len(fast._words) == 0 and len(fast._cache) == len(fast._whole)   # and leaves no cache behind

def test_failed_fill_caches_nothing():
    "A word that can't be encoded (a byte without a token) raises every time; it is never cached as an empty answer."
    vocab = {i: bytes([i]) for i in range(256) if i != ord('z')}
    tok = Tokenizer(vocab, [])
    story = 'the cat sat on the mat. ' * 40
    for text in (story + 'zebra ' + story, 'zoo', ' '.join(f'w{i}' for i in range(100)) + ' z'):   # the last merges in a batch
        for _ in range(2):
            with pytest.raises(ValueError, match='byte has no token'): tok.encode(text)
    assert tok.encode(story) == [tok._inv[bytes([b])] for b in story.encode()]
    assert b'zebra' not in tok._fast._words and 'zoo' not in tok._fast._cache

def test_every_bmp_code_point_matches_tiktoken(gpt2, enc):
    "The standard-`re` pattern writes tiktoken's classes out for U+0000-U+FFFF: every code point, in mixed contexts."
    rng = random.Random(5)
    cps = [c for c in range(0x10000) if not 0xD800 <= c < 0xE000]
    for k in range(3):
        if k: rng.shuffle(cps)
        s = ''.join(chr(c) + rng.choice(['a', ' ', '1', '.', ' x', '', '\n']) for c in cps)
        assert gpt2.encode(s) == enc.encode(s, allowed_special={EOT}), k

def test_lone_surrogates_are_replaced_like_tiktoken(gpt2, enc):
    for s in ['a\ud800b', '\udfff', 'x \ud83d\ude00 y', 'the cat ' * 50 + '\ud800 sat ' * 3, '\ud800' + EOT]:
        assert gpt2.encode(s) == enc.encode(s, allowed_special={EOT}), repr(s[-20:])
    assert gpt2.encode('the cat sat') == enc.encode('the cat sat')      # the caches hold nothing broken afterwards

def test_batched_bpe_equals_one_word_at_a_time(gpt2):
    fast = gpt2._fast
    words = list(dict.fromkeys(pretokenize(texts()['sotu']) + pretokenize(texts()['german']) + pretokenize(texts()['tinystories_v1'])
                               + [w for s in random_strings(500, seed=2) for w in pretokenize(s)]))
    words = [w for w in words if w not in fast._whole]
    assert len(words) > 1000
    assert fast._bpe_batch(words) == [fast._bpe(w) for w in words] == [gpt2._bpe(w) for w in words]
    long = ['x' * 300, 'ab' * 200, '😀' * 40, 'Supercalifragilisticexpialidocious' * 5]
    assert fast._bpe_batch(long + words[:100], small=1) == [gpt2._bpe(w) for w in long + words[:100]]
    assert fast._bpe_batch(long * 20 + words[:100]) == [gpt2._bpe(w) for w in long * 20 + words[:100]]

def test_pair_rank_table_equals_dict():
    import numpy as np
    from llmcourse.fast_encode import _NONE, _PairRanks
    rng = np.random.default_rng(0)
    for n_pairs, n_ids in [(0, 10), (1, 3), (50_000, 50_257), (5_000, 300)]:
        pairs = {(int(a), int(b)): int(r) for r, (a, b) in enumerate(rng.integers(0, n_ids, (n_pairs, 2)))}
        table = _PairRanks(pairs, n_ids)
        q = rng.integers(0, n_ids, (20_000, 2))
        if pairs: q[:5000] = np.array(list(pairs))[rng.integers(0, len(pairs), 5000)]   # hits as well as misses
        got = table(q[:, 0].copy(), q[:, 1].copy()).tolist()
        assert got == [pairs.get((int(a), int(b)), _NONE) for a, b in q], n_pairs

def test_encode_from_threads_and_gc_state(gpt2, enc):
    import gc, threading
    t = texts()['tinystories'][:100_000]
    ref = enc.encode(t, allowed_special={EOT})
    tok = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    out = {}
    def work(i): out[i] = tok.encode(t[:50_000 + 10_000 * i] + t[50_000 + 10_000 * i:])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads: th.start()
    for th in threads: th.join()
    assert all(v == ref for v in out.values()) and len(out) == 4
    assert gc.isenabled()                                       # encode pauses the collector and restores it
    gc.disable()
    try: tok.encode('x y'); assert not gc.isenabled()
    finally: gc.enable()

def test_caches_reset_when_full(gpt2, enc):
    tok = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    fast = tok._fast
    fast._cache_max = 100                                        # a tiny bound: both caches refill from scratch
    sizes, word_sizes = [], []
    for t in (texts()['sotu'][i:i + 40_000] for i in range(0, 200_000, 40_000)):
        assert tok.encode(t) == enc.encode(t, allowed_special={EOT})
        assert tok.encode(t * 2) == enc.encode(t * 2, allowed_special={EOT})
        sizes.append(len(fast._cache))
    stories = texts()['tinystories']
    for i in range(0, 300_000, 60_000):
        assert tok.encode(stories[i:i + 60_000]) == enc.encode(stories[i:i + 60_000], allowed_special={EOT})
        word_sizes.append(len(fast._words))
    for s in (sizes, word_sizes): assert any(b < a for a, b in zip(s, s[1:])), s   # each cache was emptied along the way
    assert len(fast._cache) - len(fast._whole) <= 40_000 and len(fast._words) <= 40_000

def test_pretokenize_equals_regex_findall():
    odd = _exact_tables()[0]                  # code points `regex` knows but tiktoken's older tables don't: see the notebook
    for s in list(texts().values()) + ADVERSARIAL + random_strings(1000, seed=1):
        if not odd.isdisjoint(s): continue
        assert pretokenize(s) == regex.findall(GPT2_PAT, s), repr(s[:80])

def test_without_special_tokens_eot_is_plain_text(enc):
    tok = Tokenizer.from_files(*gpt2_files())
    s = 'Hi' + EOT + ' there'
    assert tok.encode(s) == enc.encode(s, disallowed_special=())
    assert 50256 not in tok.encode(s)

def test_overlapping_special_tokens_longest_wins(gpt2):
    tok = Tokenizer(gpt2.vocab, gpt2.merges, special_tokens=[EOT, EOT + EOT])
    ids = tok.encode('Hello, how ' + EOT + EOT + ' are you?' + EOT)
    pieces = [tok.decode([i]) for i in ids]
    assert pieces.count(EOT + EOT) == 1 and pieces.count(EOT) == 1
    assert tok.vocab_size == 50258 and tok.special_tokens == [EOT, EOT + EOT]

def test_tokenizer_pickles(gpt2):
    import pickle
    back = pickle.loads(pickle.dumps(gpt2))
    assert back.encode('Hi there ' + EOT) == gpt2.encode('Hi there ' + EOT)
    assert repr(back) == "Tokenizer(vocab_size=50257, merges=50000, special_tokens=['<|endoftext|>'])"

def test_new_special_token_gets_new_id(gpt2):
    tok = Tokenizer(gpt2.vocab, gpt2.merges, special_tokens=['<|pad|>', EOT])
    assert tok.encode('<|pad|>') == [50257] and tok.encode(EOT) == [50256]

# ---------------------------------------------------------------- streaming
def test_encode_iterable_matches_encode(gpt2, enc):
    t = read_text(FIX / 'tinystories_sample.txt')
    with open(FIX / 'tinystories_sample.txt', encoding='utf-8') as f: ids = list(gpt2.encode_iterable(f))
    assert ids == enc.encode(t, allowed_special={EOT}) and gpt2.decode(ids) == t
    w = texts()['sotu'][:100_000]
    for size in (1, 7, 13, 1000):                              # chunk edges anywhere, inside words and special tokens
        chunks = [w[i:i + size] for i in range(0, len(w), size)] if size > 1 else list(w[:5000])
        assert list(gpt2.encode_iterable(chunks, chunk_chars=500)) == gpt2.encode(''.join(chunks)), size

def test_encode_iterable_cuts_text_without_ascii_words(gpt2):
    s = '東京タワーへ行く。\n' * 5000                               # lines end in a non-ASCII character
    chunks = s.splitlines(keepends=True)
    assert list(gpt2.encode_iterable(chunks, chunk_chars=1000)) == gpt2.encode(s)
    assert gpt2._safe_cut(s[:2000]) > 0                         # it can cut, so memory stays bounded

def test_encode_iterable_memory_is_bounded(gpt2, tmp_path):
    ts = read_text(asset('tinystories_train.txt.gz'))
    peaks = {}
    for copies in (1, 4):
        p = tmp_path / f'ts{copies}.txt'
        p.write_text(ts * copies, encoding='utf-8')
        gpt2.encode(ts[:10_000])                               # warm the pre-token cache outside the measurement
        tracemalloc.start()
        with open(p, encoding='utf-8') as f: n = sum(1 for _ in gpt2.encode_iterable(f))
        peaks[copies] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n > 250_000 * copies
    assert peaks[4] < 1.5 * peaks[1] + 1e6, peaks                # 4x the input, not 4x the memory
    assert peaks[4] < 16e6, peaks                               # a few MB however long the input

# ---------------------------------------------------------------- training (CS336 semantics)
def bpe_reference(text, vocab_size, special_tokens=()):
    "Slow reference: recount every pair after each merge; ties go to the greatest (left bytes, right bytes)."
    pieces = re.split('|'.join(map(re.escape, sorted(special_tokens, key=len, reverse=True))), text) if special_tokens else [text]
    words = Counter(tuple(bytes([b]) for b in p.encode()) for piece in pieces for p in regex.findall(GPT2_PAT, piece))
    merges = []
    while 256 + len(special_tokens) + len(merges) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]): pairs[p] += c
        if not pairs: break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best: out.append(w[i] + w[i + 1]); i += 2
                else: out.append(w[i]); i += 1
            new[tuple(out)] += c
        words = new
    return merges

def test_train_bpe_corpus_en_matches_reference():
    vocab, merges = train_bpe(input_path=str(FIX / 'corpus.en'), vocab_size=500, special_tokens=[EOT])
    assert merges == bpe_reference((FIX / 'corpus.en').read_text(encoding='utf-8'), 500, [EOT])
    assert set(vocab) == set(range(500))
    assert set(vocab.values()) == {bytes([i]) for i in range(256)} | {EOT.encode()} | {a + b for a, b in merges}
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)] and vocab[256] == EOT.encode()

def test_train_bpe_tinystories_matches_reference(tmp_path):
    t = read_text(asset('tinystories_train.txt.gz'))[:120_000]
    (tmp_path / 'ts.txt').write_text(t, encoding='utf-8')
    assert train_bpe(tmp_path / 'ts.txt', 700, [EOT])[1] == bpe_reference(t, 700, [EOT])

def test_train_bpe_parallel_equals_serial(tmp_path, monkeypatch):
    p = asset('tinystories_train.txt.gz')
    (tmp_path / 'ts.txt').write_text(read_text(p) + read_text(FIX / 'german.txt'), encoding='utf-8')   # > 1 MB: chunked
    one = train_bpe(tmp_path / 'ts.txt', 1500, [EOT], num_processes=1)
    two = train_bpe(tmp_path / 'ts.txt', 1500, [EOT], num_processes=2)
    assert one == two
    import llmcourse.tokenizer as T
    monkeypatch.setattr(T, '_CHUNK_BYTES', 1 << 18)           # many small jobs, as on a file of many GB
    assert train_bpe(tmp_path / 'ts.txt', 1500, [EOT], num_processes=2) == one
    assert train_bpe(tmp_path / 'ts.txt', 1500, [EOT], num_processes=1) == one

def test_train_bpe_special_tokens_never_merge(tmp_path):
    (tmp_path / 'a.txt').write_text('cat<|endoftext|>cat<|endoftext|>cat ' + EOT + '\n\n' + EOT, encoding='utf-8')
    vocab, merges = train_bpe(tmp_path / 'a.txt', 300, [EOT])
    assert not any(b'<|' in t for t in vocab.values() if t != EOT.encode())
    assert merges[:2] == [(b'c', b'a'), (b'ca', b't')]              # (c,a) and (a,t) tie at 3: the greater pair wins
    v2, m2 = train_bpe(FIX / 'tinystories_sample.txt', 400, [EOT])
    assert not any(b'<|' in t for t in v2.values() if t != EOT.encode())

def test_train_bpe_longest_special_first(tmp_path):
    (tmp_path / 'a.txt').write_text('ab<|x|><|x|>ab<|x|>ab', encoding='utf-8')
    vocab, merges = train_bpe(tmp_path / 'a.txt', 300, ['<|x|>', '<|x|><|x|>'])
    assert merges == [(b'a', b'b')] and b'<|x|><|x|>' in vocab.values()

def test_empty_input_trains_byte_vocab(tmp_path):
    (tmp_path / 'e.txt').write_text('')
    vocab, merges = train_bpe(tmp_path / 'e.txt', 1000, [EOT])
    assert merges == [] and len(vocab) == 257

def test_trained_tokenizer_roundtrip_and_save_load(tmp_path):
    vocab, merges = train_bpe(FIX / 'tinystories_sample.txt', 500, [EOT])
    tok = Tokenizer(vocab, merges, [EOT])
    t = read_text(FIX / 'tinystories_sample.txt')
    assert tok.decode(tok.encode(t)) == t and tok.encode(EOT) == [256]
    tok.save(tmp_path / 'tok')
    assert sorted(p.name for p in (tmp_path / 'tok').iterdir()) == ['merges.txt', 'special_tokens.json', 'vocab.json']
    back = Tokenizer.from_dir(tmp_path / 'tok')
    assert back.vocab == tok.vocab and back.merges == tok.merges and back.special_tokens == [EOT]
    assert back.encode(t) == tok.encode(t)
    odd = Tokenizer({**{i: bytes([i]) for i in range(256)}, 256: b'\x00 \xff\n', 257: 'ü'.encode()}, [], ['<|a b|>'])
    odd.save(tmp_path / 'odd')
    back = Tokenizer.from_files(tmp_path / 'odd' / 'vocab.json', tmp_path / 'odd' / 'merges.txt')
    assert back.vocab == odd.vocab and back.special_tokens == ['<|a b|>']

def reference_encode(vocab, merges, specials, text):
    "Plainly by the definition: split off special tokens (longest first), pre-tokenize, apply merges in rank order per pre-token."
    inv = {b: i for i, b in sorted(vocab.items(), reverse=True)}
    rank = {m: r for r, m in reversed(list(enumerate(merges)))}
    pat = '(' + '|'.join(map(re.escape, sorted(specials, key=len, reverse=True))) + ')' if specials else None
    out = []
    for k, part in enumerate(re.split(pat, text) if pat else [text]):
        if k % 2: out.append(inv[part.encode()]); continue
        for piece in regex.findall(GPT2_PAT, part):
            b = piece.encode()
            if b in inv: out.append(inv[b]); continue          # a whole token, as tiktoken does
            parts = [bytes([x]) for x in b]
            while len(parts) > 1:
                r, i = min((rank.get((parts[i], parts[i + 1]), float('inf')), i) for i in range(len(parts) - 1))
                if r == float('inf'): break
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            out += [inv[p] for p in parts]
    return out

def test_trained_tokenizer_matches_plain_reference_on_both_paths():
    "Our own vocabulary (no tiktoken to compare with), two special tokens: the word path and the plain path against the definition."
    specials = [EOT, '<|pad|>']
    vocab, merges = train_bpe(FIX / 'tinystories_sample.txt', 1000, specials)
    tok = Tokenizer(vocab, merges, specials)
    stories = read_text(FIX / 'tinystories_sample.txt')
    rng = random.Random(7)
    cases = [stories * 3, stories.replace('\n', ' \n  ', 50) * 2, texts()['sotu'][:50_000], texts()['german'],
             ' '.join(rng.choice(stories.split(' ')[:2000]) + rng.choice(['', '', '<|pad|>', EOT, '\n', '\n ']) for _ in range(20_000))]
    odd = _exact_tables()[0]                  # code points the installed `regex` classes unlike tiktoken: see the notebook
    cases += [t for t in random_strings(300, seed=4) if odd.isdisjoint(t)]
    for t in cases:
        assert tok.encode(t) == reference_encode(vocab, merges, specials, t), repr(t[:60])
    assert len(tok._fast._words) > 100                            # the word path ran

# ---------------------------------------------------------------- bad input
def test_bad_input_errors(tmp_path, gpt2):
    with pytest.raises(FileNotFoundError, match='no such file'): train_bpe(tmp_path / 'missing.txt', 300)
    (tmp_path / 'x.txt').write_text('hello')
    with pytest.raises(ValueError, match='below 256 bytes'): train_bpe(tmp_path / 'x.txt', 256, [EOT])
    (tmp_path / 'latin1.txt').write_bytes('caf\xe9 ol\xe9'.encode('latin-1'))
    with pytest.raises(ValueError, match='not UTF-8'): train_bpe(tmp_path / 'latin1.txt', 300)
    with pytest.raises(ValueError, match='token id 50257 is not in the vocabulary'): gpt2.decode([1, 50257])
    with pytest.raises(ValueError, match='token id -1'): gpt2.decode([-1])
    with pytest.raises(FileNotFoundError, match='not found'): Tokenizer.from_files(tmp_path / 'v.json', tmp_path / 'm.txt')
    (tmp_path / 'v.json').write_text('not json'); (tmp_path / 'm.txt').write_text('a b\n')
    with pytest.raises(ValueError, match='not a JSON vocabulary'): Tokenizer.from_files(tmp_path / 'v.json', tmp_path / 'm.txt')
    (tmp_path / 'v.json').write_text(json.dumps({'a': 0, 'b': 1, 'ab': 2}))
    (tmp_path / 'm.txt').write_text('a b\nab\n')
    with pytest.raises(ValueError, match='m.txt:2: expected two space-separated tokens'): Tokenizer.from_files(tmp_path / 'v.json', tmp_path / 'm.txt')
    with pytest.raises(FileNotFoundError, match='tokenizer folder not found'): Tokenizer.from_dir(tmp_path / 'nope')
    with pytest.raises(TypeError, match='encode expects str'): gpt2.encode(b'bytes')
    with pytest.raises(ValueError, match='special tokens must be non-empty strings'): train_bpe(tmp_path / 'x.txt', 300, [''])
    with pytest.raises(TypeError, match='list of strings'): Tokenizer(gpt2.vocab, gpt2.merges, EOT)
    with pytest.raises(TypeError, match='vocab_size must be an integer'): train_bpe(tmp_path / 'x.txt', 300.5)
    import numpy as np
    assert len(train_bpe(tmp_path / 'x.txt', np.int64(258))[1]) == 2

def test_decode_replaces_invalid_utf8(gpt2):
    assert gpt2.decode(gpt2.encode('ち')[:1]) == '\ufffd'
    assert gpt2.decode([]) == ''

# ---------------------------------------------------------------- the two encode paths
def both_paths(tok):
    "The fast tokenizer and its readable twin (fast=False) over the same vocab, merges and special tokens."
    return tok, Tokenizer(tok.vocab, tok.merges, tok.special_tokens, fast=False)

def path_cases():
    "Everything the parity tests above encode: real text, adversarial strings, random strings, word-path text."
    rng = random.Random(11)
    atoms = ['the', 'cat', 'sat.', "it's", '\n', '\n\n', '\t', 'é', '中文', '😀', '\u0301', EOT, 'a' + EOT + 'b', '\xa0',
             '\u3000', 'x\n', '\ny', "'s", '123', '\r\n', '\U0003eeaa', '\x85', '\x1c']
    words = [''.join(rng.choice(atoms) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    story_like = [''.join(rng.choice(words) + rng.choice([' '] * 30 + ['  ', ' \n ']) for _ in range(300)) for _ in range(30)]
    stories = texts()['tinystories']
    return (list(texts().values()) + ADVERSARIAL + random_strings(2000, seed=8) + story_like
            + [stories.replace('\n', '\r\n')[:50_000], 'x' * 3000, 'ab' * 2000, '😀' * 500, ' ' * 2000 + 'a'])

def test_fast_and_readable_paths_identical_gpt2(gpt2):
    fast, readable = both_paths(gpt2)
    for t in path_cases():
        assert fast.encode(t) == readable.encode(t), repr(t[:80])

@pytest.mark.parametrize('specials', [[], [EOT], [EOT, EOT + EOT, '<|pad|>'], ['Lily', 'ü', '\n\n<|x|>'], ['\t<t>', 'a b']])
def test_fast_and_readable_paths_identical_trained(specials):
    "Our own vocabulary, with special tokens that overlap, start with a letter, hold a newline or a space."
    vocab, merges = train_bpe(FIX / 'tinystories_sample.txt', 800, specials)
    fast, readable = both_paths(Tokenizer(vocab, merges, specials))
    for t in path_cases()[:60] + random_strings(300, seed=9) + [texts()['tinystories'][:100_000] + ' '.join(specials) * 50]:
        assert fast.encode(t) == readable.encode(t), repr(t[:80])
        assert list(fast.encode_iterable([t[i:i + 97] for i in range(0, len(t), 97)], chunk_chars=300)) == fast.encode(t)
    stories = texts()['tinystories'][:200_000]
    assert list(readable.encode_iterable(io_lines(stories))) == fast.encode(stories)

def io_lines(text):
    import io
    return io.StringIO(text)

def test_readable_path_matches_tiktoken(gpt2, enc):
    readable = both_paths(gpt2)[1]
    for t in list(texts().values()) + ADVERSARIAL + random_strings(500, seed=10):
        assert readable.encode(t) == enc.encode(t, allowed_special={EOT}), repr(t[:80])
    assert not readable.fast and not hasattr(readable, '_fast')

@needs_webtext
def test_encode_matches_tiktoken_on_webtext(gpt2, enc):
    t = read_text(webtext_path())[:600_000]
    ids = gpt2.encode(t)
    assert ids == enc.encode(t, allowed_special={EOT}) == both_paths(gpt2)[1].encode(t)
    assert gpt2.decode(ids) == t

def test_tokenizer_modules_do_not_import_torch():
    code = 'import sys, llmcourse.tokenizer, llmcourse.fast_encode; assert "torch" not in sys.modules, "torch imported"'
    subprocess.run([sys.executable, '-c', code], check=True, cwd=Path(__file__).resolve().parents[1])

# ---------------------------------------------------------------- linear time, bounded memory
def best_time(f, *args, repeats=3):
    "Best of `repeats` wall-clock times of f(*args): the least disturbed by other jobs on the machine."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return min(times)

def grows_linearly(f, small, large, factor=4, limit=9):
    "Does f take less than `limit` times as long on `large` as on `small` (`factor` times the size)? Quadratic gives factor**2."
    t_small, t_large = best_time(f, small), best_time(f, large)
    return t_large < limit * t_small, (t_small, t_large)

def test_encode_long_word_is_linear(gpt2):
    "Text without spaces is one long pre-token: merged with a heap, not by rescanning its pairs (10K letters took 0.41 s, 40K 6.35 s)."
    rng = random.Random(0)
    letters = ''.join(rng.choice('abcdefghij') for _ in range(160_000))
    fresh = lambda t: Tokenizer(gpt2.vocab, gpt2.merges, [EOT]).encode(t)   # a fresh tokenizer: nothing cached
    assert fresh(letters[:5000]) == both_paths(gpt2)[1].encode(letters[:5000])
    ok, times = grows_linearly(fresh, letters[:40_000], letters)
    assert ok, times

def test_train_bpe_long_line_is_linear(tmp_path):
    "One long line of letters is one pre-token listed once per pair occurrence: each merge visits it once (25K chars took 1.8 s, 100K 23.5 s)."
    rng = random.Random(1)
    line = ''.join(rng.choice('abcdefgh') for _ in range(80_000))
    for n in (20_000, 80_000):
        (tmp_path / f'{n}.txt').write_text(line[:n])
    (tmp_path / 'small.txt').write_text(line[:3000])
    assert train_bpe(tmp_path / 'small.txt', 320)[1] == bpe_reference(line[:3000], 320)
    ok, times = grows_linearly(lambda p: train_bpe(p, 400, num_processes=1), tmp_path / '20000.txt', tmp_path / '80000.txt')
    assert ok, times

CJK_LINE = '東京タワーへ行く。「こんにちは」と言った、'     # no ASCII whitespace anywhere
MINIFIED = 'var a=[1,2,3];function f(x){return x*2};'

@pytest.mark.parametrize('unit', [CJK_LINE, MINIFIED])
def test_encode_iterable_without_ascii_whitespace_is_linear(gpt2, unit):
    "A stream with no ASCII whitespace is cut between pre-tokens (0.6M CJK characters took 19 s, 1.2M 88 s)."
    def stream(n): return (unit for _ in range(n))
    n = 50_000 // len(unit) * 10                               # 0.5M and 2M characters
    assert list(gpt2.encode_iterable(stream(n // 10), chunk_chars=2000)) == gpt2.encode(unit * (n // 10))
    ok, times = grows_linearly(lambda k: sum(1 for _ in gpt2.encode_iterable(stream(k), chunk_chars=1 << 14)), n, 4 * n)
    assert ok, times

@pytest.mark.parametrize('unit', [CJK_LINE, MINIFIED, 'The cat sat. '])
def test_encode_iterable_memory_is_bounded_on_any_text(gpt2, unit):
    "Peak memory of streaming 1x and 4x the text: flat (it once buffered a whole stream without ASCII whitespace)."
    gpt2.encode(unit * 1000)                                    # warm the caches outside the measurement
    peaks = {}
    for copies in (1, 4):
        tracemalloc.start()
        n = sum(1 for _ in gpt2.encode_iterable((unit for _ in range(copies * 200_000 // len(unit))), chunk_chars=1 << 14))
        peaks[copies] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n > 0
    assert peaks[4] < 1.5 * peaks[1] + 1e6, peaks

def test_encode_iterable_long_pretoken_stream(gpt2):
    "One pre-token longer than the buffer can't be cut: it is buffered whole, and the ids still equal encode's."
    chunks = ['ab'] * 50_000 + [' the end'] + ['x'] * 10
    assert list(gpt2.encode_iterable(chunks, chunk_chars=1000)) == gpt2.encode(''.join(chunks))
    assert list(gpt2.encode_iterable(['a' * 100_000 + ' b' * 10], chunk_chars=777)) == gpt2.encode('a' * 100_000 + ' b' * 10)

# ---------------------------------------------------------------- bad input, found by trying to break it
def test_train_bpe_warns_when_it_runs_out_of_pairs():
    with pytest.warns(UserWarning, match=r'vocab_size=100000.*only enough distinct pairs for \d+ tokens'):
        vocab, merges = train_bpe(FIX / 'tinystories_sample.txt', 100_000, [EOT])
    assert len(vocab) < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        train_bpe(FIX / 'tinystories_sample.txt', 300, [EOT])  # enough pairs: no warning

@pytest.mark.parametrize('vocab, message', [({'a': 0, 'b': 0}, 'id 0 is given to two tokens'),
                                            ({'a': 0, 'b': -1}, "token 'b' has id -1"),
                                            ({'a': 0, 'b': True}, "token 'b' has id True"),
                                            ({'a': 0, 'b': 1.0}, "token 'b' has id 1.0")])
def test_from_files_rejects_bad_ids(tmp_path, vocab, message):
    (tmp_path / 'v.json').write_text(json.dumps(vocab))
    (tmp_path / 'm.txt').write_text('a b\n')
    with pytest.raises(ValueError, match=message): Tokenizer.from_files(tmp_path / 'v.json', tmp_path / 'm.txt')
    (tmp_path / 'v.json').write_text('{"a": 0, "a": 1}')
    with pytest.raises(ValueError, match="token 'a' is listed twice"): Tokenizer.from_files(tmp_path / 'v.json', tmp_path / 'm.txt')

def test_decode_generator_with_bad_id(gpt2):
    with pytest.raises(ValueError, match='token id -1 is not in the vocabulary'): gpt2.decode(i for i in [1, 2, -1])
    with pytest.raises(ValueError, match="token id 'x' is not in the vocabulary"): gpt2.decode(iter([1, 'x']))
    assert gpt2.decode(i for i in gpt2.encode('hi there')) == 'hi there'

def test_from_files_reads_gzip_and_plain(tmp_path, gpt2):
    for p in gpt2_files():
        (tmp_path / p.name.removesuffix('.gz')).write_bytes(gzip.open(p).read())
    plain = Tokenizer.from_files(tmp_path / 'gpt2_vocab.json', tmp_path / 'gpt2_merges.txt', [EOT])
    assert plain.vocab == gpt2.vocab and plain.merges == gpt2.merges

@pytest.mark.parametrize('specials', [[EOT], [EOT, EOT + EOT, "'ll"], []])
def test_pretoken_cut_never_changes_the_tokens(gpt2, specials):
    "Streams without ASCII whitespace, cut between pre-tokens every few characters: contractions, digits, marks and special tokens at the edges."
    tok = Tokenizer(gpt2.vocab, gpt2.merges, specials)
    rng = random.Random(len(specials))
    atoms = ["'", "'l", "'ll", "'s", "'ve", 'x', 'Ab', '12', '3', '.', '!!', '東京', '😀', '\u3000', '\xa0', '\u0301', 'é'] + specials * 3
    for k in range(300):
        text = ''.join(rng.choice(atoms) for _ in range(rng.randint(20, 200)))
        pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
        assert list(tok.encode_iterable(pieces, chunk_chars=(20, 30, 64)[k % 3])) == tok.encode(text), repr(text[:80])

def test_pretoken_cut_at_every_prefix():
    "For every prefix of a stream, the cut is a boundary of the whole text and the head alone pre-tokenizes as the whole does."
    from itertools import accumulate
    from llmcourse.tokenizer import _pretoken_cut
    rng = random.Random(5)
    atoms = ["'", "'l", "'ll", "'s", 'x', 'Ab', '12', '.', '!!', '東京', '😀', '\u3000', '\xa0', '\u0301', ' ', '\n', '\t']
    for _ in range(40):
        text = ''.join(rng.choice(atoms) for _ in range(80))
        full = pretokenize(text)
        bounds = set(accumulate(map(len, full)))
        for n in range(1, len(text) + 1):
            cut = _pretoken_cut(text[:n], [], None)
            if cut:
                head = pretokenize(text[:cut])
                assert cut in bounds and head == full[:len(head)], (repr(text[:n]), cut)

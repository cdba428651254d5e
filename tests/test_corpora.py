"""The data cache (corpora by name, best copy first, download-only corpora), the embedded assets, and the data CLI's guards
for its outputs."""
import gzip, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import llmcourse.data as data
from llmcourse.data import (CORPORA, asset_path, corpus_path, data_home, find_corpus, jsonl_to_text, load_tokens, main,
                            sidecar_path, tokenize_file)
from llmcourse.files import EOT, read_text

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "An empty data cache, as on a fresh clone."
    monkeypatch.setenv('LLMCOURSE_DATA', str(tmp_path/'cache'))
    return tmp_path/'cache'

def test_data_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('LLMCOURSE_DATA', str(tmp_path/'x'))
    assert data_home() == tmp_path/'x'
    monkeypatch.delenv('LLMCOURSE_DATA'); monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'xdg'))
    assert data_home() == tmp_path/'xdg'/'llmcourse'/'data'

def test_every_embedded_copy_ships_with_its_licence():
    readme = asset_path('README.md').read_text(encoding='utf-8')
    for corpus in CORPORA.values():
        for copies in corpus.splits.values():
            for c in copies:
                if c.embedded: assert asset_path(c.path).is_file() and c.path in readme, c.path
    for notice in ('CDLA-Sharing-1.0', 'CC0-1.0', 'PDDL-1.0', 'MIT'): assert notice in readme
    assert asset_path('gpt2_vocab.json.gz').is_file() and asset_path('gpt2_merges.txt.gz').is_file()

def test_web_text_is_never_embedded():
    for name in ('owt', 'webtext'):
        assert not any(c.embedded for copies in CORPORA[name].splits.values() for c in copies), name
    shipped = {p.name for p in (ROOT/'data').iterdir()}
    assert not any('webtext' in n or 'owt' in n for n in shipped), shipped

def test_an_empty_cache_falls_back_to_the_embedded_copy(cache, capsys):
    p = corpus_path('tinystories', 'train')
    assert p == asset_path('tinystories_train.txt.gz')
    out = capsys.readouterr().out
    assert 'embedded sample' in out and 'inside the package' in out and 'MB' in out
    assert read_text(corpus_path('sotu', verbose=False)).count(EOT) == 233
    assert find_corpus('tinystories_v1', 'valid').embedded

def test_a_downloaded_copy_wins(cache):
    full = cache/'tinystories'/'TinyStoriesV2-GPT4-train.txt'
    full.parent.mkdir(parents=True); full.write_text('Once upon a time.\n' + EOT + '\n', encoding='utf-8')
    c = find_corpus('tinystories')
    assert (c.path, c.embedded, c.nbytes) == (full, False, full.stat().st_size)
    assert 'in the data cache' in str(c)

def test_a_piece_in_the_cache_layout_is_found(cache):
    piece = cache/'owt'/'webtext_train_prefix_eot.txt.gz'   # the layout of the build machines' shared folder
    piece.parent.mkdir(parents=True)
    piece.write_bytes(gzip.compress(('A page.\n' + EOT + '\n').encode()))
    assert find_corpus('webtext').path == piece and 'WebText piece' in find_corpus('webtext').what

def test_download_only_corpora_say_how_to_get_them(cache):
    for name in ('owt', 'webtext'):
        with pytest.raises(FileNotFoundError, match=f'python -m llmcourse.data download {name}'): corpus_path(name)
    with pytest.raises(ValueError, match='unknown corpus'): corpus_path('wikipedia')
    with pytest.raises(ValueError, match="has no split 'valid'"): corpus_path('sotu', 'valid')
    with pytest.raises(ValueError, match='ships inside the package'): data.download_corpus('sotu')

def test_list_cli_shows_each_split(cache, capsys):
    main(['list'])
    out = capsys.readouterr().out
    assert 'tinystories/train' in out and 'embedded sample' in out
    assert 'webtext/train' in out and 'none: python -m llmcourse.data download webtext' in out

def test_jsonl_becomes_eot_text_and_bad_lines_are_named(tmp_path):
    src = tmp_path/'w.jsonl'
    src.write_text(json.dumps({'text': 'é page'}) + '\n' + json.dumps({'text': 'two'}) + '\n', encoding='utf-8')
    assert read_text(jsonl_to_text(src, tmp_path/'w.txt')) == f'é page\n{EOT}\ntwo\n{EOT}\n'
    src.write_text('{"text": "ok"}\n[1, 2]\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"w.jsonl, line 2: not a JSON object with a 'text' field"): jsonl_to_text(src, tmp_path/'x.txt')
    assert not (tmp_path/'x.txt').exists() and not list(tmp_path.glob('.*.tmp'))

class ByteTokenizer:
    "One id per UTF-8 byte, with <|endoftext|> as 256: enough for tokenize_file."
    vocab_size, special_tokens = 257, [EOT]
    def __init__(self, fail_after=None): self.calls, self.fail_after = 0, fail_after
    def encode(self, text):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after: raise KeyboardInterrupt
        ids = []
        for i, part in enumerate(text.split(EOT)):
            if i: ids.append(256)
            ids.extend(part.encode('utf-8'))
        return ids

@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path/'corpus.txt'
    p.write_text(''.join(f'Story {i}: once upon a time.\n{EOT}\n' for i in range(400)), encoding='utf-8')
    return p

def test_tokenize_refuses_to_overwrite_its_input(corpus_file):
    before = corpus_file.read_bytes()
    with pytest.raises(ValueError, match='is the input file'): tokenize_file(ByteTokenizer(), corpus_file, corpus_file, progress=False)
    with pytest.raises(SystemExit) as e:
        main(['tokenize', '--vocab', 'v.json', '--merges', 'm.txt', '--input', str(corpus_file), '--output', str(corpus_file)])
    assert e.value.code == 1 and corpus_file.read_bytes() == before

def test_tokenize_refuses_a_folder_before_encoding(corpus_file, tmp_path):
    tok = ByteTokenizer()
    (tmp_path/'out').mkdir()
    with pytest.raises(IsADirectoryError, match='is a folder'): tokenize_file(tok, corpus_file, tmp_path/'out', progress=False)
    assert tok.calls == 0

def test_an_interrupted_rewrite_keeps_the_old_result(corpus_file, tmp_path):
    out = tmp_path/'tokens.bin'
    tokenize_file(ByteTokenizer(), corpus_file, out, workers=1, chunk_bytes=1024, progress=False)
    before = {p: p.read_bytes() for p in (out, sidecar_path(out), Path(str(out) + '.idx.npy'))}
    with pytest.raises(KeyboardInterrupt):
        tokenize_file(ByteTokenizer(fail_after=3), corpus_file, out, workers=1, chunk_bytes=1024, progress=False)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.glob('.*.tmp'))
    assert len(load_tokens(out)) == json.loads(sidecar_path(out).read_text())['num_tokens']

def test_np_save_files_are_read_through_their_header(tmp_path):
    ids = np.arange(1000, dtype=np.uint16) % 300
    np.save(tmp_path/'t.npy', ids)
    got = load_tokens(tmp_path/'t.npy')
    assert got.tolist() == ids.tolist() and got.dtype == np.uint16
    with pytest.raises(ValueError, match='is >= vocab_size 256'): load_tokens(tmp_path/'t.npy', vocab_size=256)
    np.save(tmp_path/'f.npy', np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match='not 1-D integer token ids'): load_tokens(tmp_path/'f.npy')

def test_written_files_get_the_usual_permissions(corpus_file, tmp_path):
    old = os.umask(0o022)
    try: tokenize_file(ByteTokenizer(), corpus_file, tmp_path/'p.bin', progress=False)
    finally: os.umask(old)
    for p in (tmp_path/'p.bin', sidecar_path(tmp_path/'p.bin')): assert p.stat().st_mode & 0o777 == 0o644, p

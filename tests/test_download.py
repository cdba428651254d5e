"""Downloads against a loopback HTTP server (127.0.0.1 only): whole, resumed, truncated, corrupt, Range ignored, offline."""
import gzip, hashlib, re, socket, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import numpy as np
import pytest
import llmcourse.data as data
from llmcourse.data import Copy, Corpus, RemoteFile, download, download_corpus, main

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()

class Handler(BaseHTTPRequestHandler):
    "Serves `server.files[path]`, honouring `Range: bytes=N-` unless `server.ignore_range`; may cut the body short."
    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get('Range'))
        if self.path in srv.redirects:   # Hugging Face answers /resolve/ URLs with a redirect to its CDN
            self.send_response(302); self.send_header('Location', srv.redirects[self.path]); self.send_header('Content-Length', '0')
            self.end_headers(); return
        body = srv.files.get(self.path)
        if body is None: return self.send_error(404)
        start, m = 0, re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
        if m and not srv.ignore_range:
            start = int(m[1])
            if start >= len(body):
                self.send_response(416); self.send_header('Content-Range', f'bytes */{len(body)}')
                self.send_header('Content-Length', '0'); self.end_headers(); return
            self.send_response(206); self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        else: self.send_response(200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        cut = srv.cuts.pop(0) if srv.cuts else None   # absolute offset where this response's connection drops
        self.wfile.write(body[start:] if cut is None else body[start:max(start, cut)])
        self.close_connection = True
    def log_message(self, *args): pass

@pytest.fixture
def server():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    srv.files, srv.ranges, srv.cuts, srv.ignore_range, srv.redirects = {'/f.bin': PAYLOAD}, [], [], False, {}
    srv.url = f'http://127.0.0.1:{srv.server_port}'
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield srv
    srv.shutdown(); srv.server_close()

def test_download_whole(server, tmp_path):
    p = download(f'{server.url}/f.bin', tmp_path/'f.bin', len(PAYLOAD), SHA, progress=False, chunk_size=1 << 14)
    assert p.read_bytes() == PAYLOAD
    assert sorted(x.name for x in tmp_path.iterdir()) == ['f.bin']   # no .part left behind
    assert server.ranges == [None]
    # A second call verifies the file in place and fetches nothing.
    download(f'{server.url}/f.bin', tmp_path/'f.bin', len(PAYLOAD), SHA, progress=False)
    assert server.ranges == [None]

def test_resume_after_dropped_connection(server, tmp_path):
    server.cuts = [100_000]
    dest = tmp_path/'f.bin'
    with pytest.raises(ConnectionError, match='resume'):
        download(f'{server.url}/f.bin', dest, len(PAYLOAD), SHA, progress=False, chunk_size=1 << 14)
    assert not dest.exists()
    assert (tmp_path/'f.bin.part').stat().st_size == 100_000
    download(f'{server.url}/f.bin', dest, len(PAYLOAD), SHA, progress=False, chunk_size=1 << 14)
    assert server.ranges == [None, 'bytes=100000-']
    assert dest.read_bytes() == PAYLOAD and not (tmp_path/'f.bin.part').exists()

def test_resume_without_known_size_or_checksum(server, tmp_path):
    server.cuts = [12_345, 200_000]
    dest = tmp_path/'f.bin'
    for _ in range(2):
        with pytest.raises(ConnectionError): download(f'{server.url}/f.bin', dest, progress=False)
    download(f'{server.url}/f.bin', dest, progress=False)
    assert server.ranges == [None, 'bytes=12345-', 'bytes=200000-']
    assert dest.read_bytes() == PAYLOAD

def test_resume_through_a_redirect(server, tmp_path):
    server.redirects['/resolve/f.bin'] = '/f.bin'
    server.cuts = [70_000]
    with pytest.raises(ConnectionError): download(f'{server.url}/resolve/f.bin', tmp_path/'f.bin', len(PAYLOAD), SHA, progress=False)
    download(f'{server.url}/resolve/f.bin', tmp_path/'f.bin', len(PAYLOAD), SHA, progress=False)
    assert server.ranges == [None, None, 'bytes=70000-', 'bytes=70000-']   # the Range header survives the redirect
    assert (tmp_path/'f.bin').read_bytes() == PAYLOAD

def test_server_ignoring_range_restarts(server, tmp_path):
    server.ignore_range = True
    (tmp_path/'f.bin.part').write_bytes(b'x' * 5_000)   # a partial file the server won't resume
    download(f'{server.url}/f.bin', tmp_path/'f.bin', len(PAYLOAD), SHA, progress=False)
    assert server.ranges == ['bytes=5000-']
    assert (tmp_path/'f.bin').read_bytes() == PAYLOAD   # rewritten from byte 0, not appended

def test_complete_part_file_gets_416(server, tmp_path):
    (tmp_path/'f.bin.part').write_bytes(PAYLOAD)   # whole, but the process died before the rename
    download(f'{server.url}/f.bin', tmp_path/'f.bin', progress=False)
    assert server.ranges == [f'bytes={len(PAYLOAD)}-']
    assert (tmp_path/'f.bin').read_bytes() == PAYLOAD

def test_truncated_body_never_gets_final_name(server, tmp_path):
    server.cuts = [150_000]
    with pytest.raises(ConnectionError, match='150,000 of 300,000'):
        download(f'{server.url}/f.bin', tmp_path/'f.bin', progress=False)
    assert not (tmp_path/'f.bin').exists()

def test_corrupt_checksum_is_deleted(server, tmp_path):
    with pytest.raises(ValueError, match='sha256') as e:
        download(f'{server.url}/f.bin', tmp_path/'f.bin', len(PAYLOAD), '0' * 64, progress=False)
    assert 'deleted' in str(e.value)
    assert list(tmp_path.iterdir()) == []

def test_wrong_size_is_deleted(server, tmp_path):
    server.files['/short.bin'] = PAYLOAD[:1000]   # the server's whole answer is shorter than the known size
    with pytest.raises(ValueError, match='1,000 bytes, expected 300,000'):
        download(f'{server.url}/short.bin', tmp_path/'f.bin', len(PAYLOAD), progress=False)
    assert list(tmp_path.iterdir()) == []

def test_existing_corrupt_file_is_reported(server, tmp_path):
    (tmp_path/'f.bin').write_bytes(b'not it')
    with pytest.raises(ValueError, match='already present'):
        download(f'{server.url}/f.bin', tmp_path/'f.bin', len(PAYLOAD), SHA, progress=False)

def test_http_error_names_status(server, tmp_path):
    with pytest.raises(ConnectionError, match='404'):
        download(f'{server.url}/missing.bin', tmp_path/'f.bin', progress=False)

def test_offline_is_a_clear_error(tmp_path):
    with socket.socket() as s:   # a loopback port nobody listens on
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match='cannot reach 127.0.0.1.*offline'):
        download(f'http://127.0.0.1:{port}/f.bin', tmp_path/'f.bin', progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []

def fake_corpus(server, monkeypatch):
    text = ('Once upon a time.\n<|endoftext|>\n' * 2000).encode()
    server.files['/a.txt.gz'] = gzip.compress(text)
    server.files['/b.txt'] = text
    monkeypatch.setitem(data.CORPORA, 'fake', Corpus('a test server', 'test data', {'train': (Copy('fake/b.txt', 'the test file'),)}, (
        RemoteFile('a.txt', f'{server.url}/a.txt.gz', gunzip=True, raw_size=len(text)),
        RemoteFile('b.txt', f'{server.url}/b.txt', size=len(text), sha256=hashlib.sha256(text).hexdigest()))))
    return text

def test_download_corpus_decompresses(server, tmp_path, monkeypatch):
    text = fake_corpus(server, monkeypatch)
    paths = download_corpus('fake', tmp_path, progress=False)
    assert [p.name for p in paths] == ['a.txt', 'b.txt']
    assert all(p.read_bytes() == text for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'b.txt']   # .gz removed after decompressing
    with pytest.raises(ValueError, match='unknown corpus'): download_corpus('nope', tmp_path)

def test_corrupt_gzip_is_not_kept(server, tmp_path, monkeypatch):
    text = fake_corpus(server, monkeypatch)
    server.files['/a.txt.gz'] = gzip.compress(text)[:-100]   # cut off before the gzip trailer
    with pytest.raises(ValueError, match='did not decompress'): download_corpus('fake', tmp_path, progress=False)
    assert not (tmp_path/'a.txt').exists() and not (tmp_path/'a.txt.part').exists()

def test_cli_download(server, tmp_path, monkeypatch, capsys):
    text = fake_corpus(server, monkeypatch)
    main(['download', 'fake', '--dest', str(tmp_path/'raw'), '--no-progress', '--keep-gz'])
    assert (tmp_path/'raw'/'a.txt').read_bytes() == text and (tmp_path/'raw'/'a.txt.gz').exists()
    assert str(tmp_path/'raw'/'b.txt') in capsys.readouterr().out
    server.files.clear()   # offline: the CLI exits 1 with the message
    with pytest.raises(SystemExit) as e: main(['download', 'fake', '--dest', str(tmp_path/'other'), '--no-progress'])
    assert e.value.code == 1 and '404' in capsys.readouterr().err

def test_known_corpora_are_recorded():
    # Only values we could corroborate are recorded; unknown checksums stay None rather than being made up.
    ts = {f.name: f for f in data.CORPORA['tinystories'].files}
    assert ts['TinyStoriesV2-GPT4-valid.txt'].size == 22_502_601
    assert all(f.sha256 and len(f.sha256) == 64 for f in ts.values())
    assert all(f.gunzip and f.sha256 is None and f.raw_size for f in data.CORPORA['owt'].files)

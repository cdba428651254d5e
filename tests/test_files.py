"""llmcourse.files: atomic writes (crash, full disk, permissions, leftovers), UTF-8 spans, exact chunk boundaries."""
import errno, gzip, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from llmcourse.files import EOT, atomic_copy, atomic_write, find_chunk_boundaries, read_text, remove_temporary_files

def test_a_failed_write_leaves_the_old_file(tmp_path):
    p = atomic_write(tmp_path/'a.txt', 'old')
    def boom(f): f.write(b'new but'); raise RuntimeError('crash')
    with pytest.raises(RuntimeError): atomic_write(p, boom)
    assert p.read_text() == 'old' and sorted(x.name for x in tmp_path.iterdir()) == ['a.txt']

def test_a_full_disk_says_so(tmp_path):
    p = atomic_write(tmp_path/'ckpt.pt', b'good')
    def full(f): raise OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(OSError, match='disk full while writing .*ckpt.pt.*unchanged'): atomic_write(p, full)
    assert p.read_bytes() == b'good' and not list(tmp_path.glob('.*.tmp'))

@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_open_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    try: p = atomic_write(tmp_path/'f', b'x')
    finally: os.umask(old)
    assert p.stat().st_mode & 0o777 == mode

def test_a_kill_inside_the_write_leaves_only_a_temporary_file(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from llmcourse.files import atomic_write
        def slow(f):
            f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)
        atomic_write({str(tmp_path/'big.bin')!r}, slow)""")
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'writing'
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (tmp_path/'big.bin').exists()
    left = remove_temporary_files(tmp_path)
    assert [x.name.startswith('.big.bin.') for x in left] == [True] and list(tmp_path.iterdir()) == []

def test_atomic_copy(tmp_path):
    src = atomic_write(tmp_path/'s.bin', os.urandom(3 << 20))
    assert atomic_copy(src, tmp_path/'d'/'c.bin').read_bytes() == src.read_bytes()

def test_read_text_spans_and_errors(tmp_path):
    p = tmp_path/'t.txt'; p.write_bytes('αβγ'.encode() + b'\xfe')
    assert read_text(p, 2, 4) == 'β'
    with pytest.raises(ValueError, match=r't.txt is not UTF-8 text \(byte 6'): read_text(p)
    with pytest.raises(ValueError, match='byte 1'): read_text(p, 1, 3)   # a cut inside a character is named too
    g = tmp_path/'t.txt.gz'; g.write_bytes(gzip.compress('hello world'.encode()))
    assert read_text(g) == 'hello world' and read_text(g, 6) == 'world'
    with pytest.raises(FileNotFoundError, match='no such file'): read_text(tmp_path/'none.txt')

def test_chunks_join_back_and_start_at_the_delimiter(tmp_path):
    text = ''.join(f'doc {i} ' * (i % 7 + 1) + EOT for i in range(500))
    p = tmp_path/'c.txt'; p.write_text(text, encoding='utf-8')
    b = find_chunk_boundaries(p, [EOT], chunk_bytes=300)
    assert b[0] == 0 and b[-1] == len(text.encode()) and len(b) > 10
    assert ''.join(read_text(p, s, e) for s, e in zip(b, b[1:])) == text
    assert all(read_text(p, s, e).startswith(EOT) for s, e in zip(b[1:], b[2:]))

def test_whitespace_cuts_without_a_delimiter(tmp_path):
    p = tmp_path/'w.txt'; p.write_text('word ' * 2000, encoding='utf-8')
    b = find_chunk_boundaries(p, [], split_token=None, chunk_bytes=1000)
    assert len(b) > 5 and all(p.read_bytes()[x:x + 1] == b' ' for x in b[1:-1])

def test_a_file_without_any_cut_is_scanned_once(tmp_path, monkeypatch):
    p = tmp_path/'one_line.txt'; p.write_bytes(b'x' * (8 << 20))   # no delimiter, no whitespace: one chunk
    import llmcourse.files as files
    reads = []
    real = files._next_cut
    monkeypatch.setattr(files, '_next_cut', lambda *a: reads.append(a[1]) or real(*a))
    assert find_chunk_boundaries(p, [EOT], chunk_bytes=1 << 16) == [0, 8 << 20]
    assert find_chunk_boundaries(p, [], None, chunk_bytes=1 << 16) == [0, 8 << 20]
    assert len(reads) == 2   # one forward scan each, not one per aimed-for chunk

"""Notebook 07: the web-text files the sweeps train on, written to runs/data/ (git-ignored: web text is never committed).

Run from the repository root: `python reports/webtext/prepare_data.py`. It asks the data cache for WebText
(`llmcourse.data.corpus_path('webtext', ...)`). With the full corpus downloaded (`python -m llmcourse.data download webtext`)
it uses its train and valid splits as they are. With only the 1,408-document WebText piece of the build machines
(`LLMCOURSE_DATA=../shared/data`) it holds out the piece's last 100 documents as validation (the same shape as the
embedded TinyStories sample: whole documents, after the training ones) and trains on the first 1,308.

`python reports/webtext/prepare_data.py owt` links the CS336 OpenWebText sample's two splits (downloaded with
`python -m llmcourse.data download owt`) to runs/data/owt_train.txt and owt_valid.txt, the paths the CS336-scale configs
(configs/owt_cs336.json, configs/owt_leaderboard_cs336.json) read.
"""
import sys
from pathlib import Path
from llmcourse.data import corpus_path
from llmcourse.files import EOT, atomic_write, read_text

OUT, HELD_OUT = Path('runs/data'), 100

def link_owt() -> int:
    "runs/data/owt_{train,valid}.txt: symbolic links to the data cache's OpenWebText sample (11.9 GB: not copied)."
    OUT.mkdir(parents=True, exist_ok=True)
    for split in ('train', 'valid'):
        src, dst = corpus_path('owt', split).resolve(), OUT / f'owt_{split}.txt'
        dst.unlink(missing_ok=True); dst.symlink_to(src)
        print(f"{dst} -> {src}")
    return 0

def main() -> int:
    if sys.argv[1:] == ['owt']: return link_owt()
    train = corpus_path('webtext', 'train')
    try: valid = read_text(corpus_path('webtext', 'valid'))
    except FileNotFoundError: valid = None
    text = read_text(train)
    if valid is None:  # the piece: split off its last documents
        docs = [d.strip('\n') for d in text.split(EOT) if d.strip()]
        join = lambda ds: ''.join(f"{d}\n{EOT}\n" for d in ds)
        text, valid = join(docs[:-HELD_OUT]), join(docs[-HELD_OUT:])
        print(f"held out the last {HELD_OUT} of {len(docs):,} documents as validation")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, t in (('webtext_train.txt', text), ('webtext_valid.txt', valid)):
        atomic_write(OUT / name, t)
        print(f"{OUT / name}: {len(t.encode()):,} bytes, {t.count(EOT):,} documents")
    return 0

if __name__ == '__main__': sys.exit(main())

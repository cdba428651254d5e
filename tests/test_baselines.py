"""Issue 14: the baselines and presets train from the command line, `from_hf` gives Hugging Face's logits, corpus mixing is
reproducible and resumes exactly, and bad input (an unknown arch, a state dict of another family, mixing weights that don't
sum to a positive number) gets an error that names it."""
import json, signal, subprocess, sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from llmcourse.checkpoint import load_model_from_run, load_model_state, read_checkpoint
from llmcourse.generate import generate
from llmcourse.layers import ModelConfig, TransformerLM
from llmcourse.presets import PRESETS, from_hf, interleave_halves, preset
from llmcourse.train import check_resumable, main, parse_args, read_metrics, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--vocab_size', '300', '--context_length', '32', '--d_model', '32', '--num_layers', '2', '--num_heads', '2',
        '--d_ff', '64', '--batch_size', '8', '--warmup_steps', '2', '--eval_batches', '2', '--eval_every', '3',
        '--sample_tokens', '0', '--log_every', '1', '--device', 'cpu', '--threads', '1']
ENV = {'PYTHONPATH': str(ROOT), 'WANDB_MODE': 'disabled', 'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'}
# every family, as a config file would name it (the Transformer presets are switch sets on the same sizes)
FAMILIES = {'kgram_onehot': dict(arch='kgram_onehot', kgram_k=3), 'kgram_embed': dict(arch='kgram_embed', kgram_k=3),
            'kgram_conv': dict(arch='kgram_conv', kgram_k=3), 'lstm': dict(arch='lstm', dropout=0.1),
            'gpt2': dict(norm='layer', ffn='gelu', position='learned', bias=True, tie_embeddings=True, dropout=0.1),
            'llama': dict(num_kv_heads=1, norm_eps=1e-6)}


@pytest.fixture(scope='module')
def cache(tmp_path_factory): return tmp_path_factory.mktemp('cache')


def config(args, out_dir, cache): return parse_args(TINY + ['--out_dir', str(out_dir), '--cache_dir', str(cache)] + args)


# --- from_hf ---------------------------------------------------------------------------------------------------------

def randomized(m):
    "Every weight random (biases and norm gains too), so no misplaced tensor hides behind an initial 0 or 1."
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 0.1 if p.dim() > 1 else 0.5)
    return m.eval()


def same_logits(hf, vocab):
    ids = torch.randint(0, vocab, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): theirs, ours = hf(ids).logits, from_hf(hf)(ids)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('tied', [True, False])
def test_from_hf_gpt2_gives_the_same_logits(tied):
    transformers = pytest.importorskip('transformers')
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=80, n_positions=24, n_embd=48, n_layer=2, n_head=4,
                                                              tie_word_embeddings=tied))
    same_logits(randomized(hf), 80)
    ours = from_hf(hf)
    assert (ours.lm_head.weight is ours.token_embeddings.weight) == tied
    assert ours.config['norm'] == 'layer' and ours.config['position'] == 'learned' and ours.config['bias']


@pytest.mark.parametrize('kv_heads,tied', [(2, False), (4, True), (1, False)])
def test_from_hf_llama_gives_the_same_logits(kv_heads, tied):
    transformers = pytest.importorskip('transformers')
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=80, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=24, rms_norm_eps=1e-6, tie_word_embeddings=tied))
    same_logits(randomized(hf), 80)
    assert from_hf(hf).config['num_kv_heads'] == (None if kv_heads == 4 else kv_heads)


def test_from_hf_generates_like_the_hf_model():
    "The converted model decodes greedily, with the course's KV cache, exactly as Hugging Face's generate."
    transformers = pytest.importorskip('transformers')
    hf = randomized(transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=80, n_positions=40, n_embd=48, n_layer=2, n_head=4)))
    prompt = [5, 17, 3, 9]
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    assert generate(from_hf(hf), prompt, 12, temperature=0) == theirs


def test_from_hf_refuses_what_it_cannot_convert():
    transformers = pytest.importorskip('transformers')
    with pytest.raises(ValueError, match='from_hf takes a transformers GPT2LMHeadModel or LlamaForCausalLM, not a Linear'):
        from_hf(torch.nn.Linear(2, 2))
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=80, n_positions=24, n_embd=48, n_layer=1, n_head=4,
                                                              activation_function='relu'))
    with pytest.raises(ValueError, match="activation_function='relu' is not supported"): from_hf(hf)


def test_interleave_halves_is_a_permutation_within_each_head():
    w = torch.arange(16.)[:, None].expand(16, 3)  # 2 heads of 8 rows
    assert interleave_halves(w, 2)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


def test_presets():
    assert set(PRESETS) == {'cs336', 'gpt2', 'llama'}
    assert preset('cs336') == ModelConfig(**{k: v for k, v in json.loads((ROOT / 'configs' / 'tinystories_cs336.json').read_text()).items()
                                             if k in ModelConfig.field_names()})
    with torch.device('meta'): assert sum(p.numel() for p in preset('gpt2').build().parameters()) == 124_439_808
    with pytest.raises(ValueError, match="unknown preset 'gpt-2'"): preset('gpt-2')


# --- every family from the command line -------------------------------------------------------------------------------

@pytest.mark.parametrize('family', list(FAMILIES))
def test_every_baseline_and_preset_trains_from_the_cli(family, tmp_path, cache):
    cfg_file = tmp_path / f'{family}.json'
    cfg_file.write_text(json.dumps({'_comment': 'a test run', **FAMILIES[family], 'max_steps': 6}))
    p = subprocess.run([sys.executable, '-m', 'llmcourse.train', str(cfg_file), *TINY, '--out_dir', str(tmp_path),
                        '--cache_dir', str(cache)], env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = tmp_path / family
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['step'] == 6
    model, tok, config = load_model_from_run(run_dir)
    assert {k: config[k] for k in FAMILIES[family]} == FAMILIES[family]
    assert type(model).__name__ == {'lstm': 'LSTMLM', 'gpt2': 'TransformerLM', 'llama': 'TransformerLM'}.get(family, 'KGramMLP')
    assert len(generate(model, tok.encode('Once upon a time'), 5, temperature=0)) == 5


# --- bad input --------------------------------------------------------------------------------------------------------

def test_an_unknown_arch_is_an_error_naming_it(tmp_path, capsys):
    with pytest.raises(ValueError, match="bad value 'rnn' for arch: expected one of transformer, kgram_onehot"): parse_args(['--arch', 'rnn'])
    with pytest.raises(ValueError, match="arch must be one of"): ModelConfig(arch='rnn')
    with pytest.raises(ValueError, match='kgram_k must be a positive int'): parse_args(['--arch', 'kgram_embed'])
    with pytest.raises(ValueError, match="arch='lstm' has no ffn"): ModelConfig(arch='lstm', ffn='silu').build()
    assert main(['--arch', 'gru', '--out_dir', str(tmp_path)]) == 2
    assert 'arch' in capsys.readouterr().err


def test_speculative_decoding_refuses_a_baseline():
    target, lstm = ModelConfig(vocab_size=300).build(), ModelConfig(vocab_size=300, arch='lstm').build()
    with pytest.raises(ValueError, match='only the Transformer has'): generate(target, [1, 2], 4, draft_model=lstm)


def test_a_state_dict_of_another_family_is_an_error_naming_both():
    lstm, transformer = ModelConfig(arch='lstm').build(), ModelConfig().build()
    with pytest.raises(ValueError, match='holds weights of the lstm family, but the model is of the transformer family'):
        load_model_state(transformer, lstm.state_dict(), 'lstm.pt')
    with pytest.raises(ValueError, match='kgram_embed family, but the model is of the lstm family'):
        load_model_state(lstm, ModelConfig(arch='kgram_embed', kgram_k=2).build().state_dict())
    hf_like = {'transformer.h.0.attn.c_attn.weight': torch.zeros(1), 'transformer.wte.weight': torch.zeros(1)}
    with pytest.raises(ValueError, match='Hugging Face GPT-2 family.*from_hf'): load_model_state(transformer, hf_like)


@pytest.mark.parametrize('mix,why', [('tinystories_sample=0,corpus:sotu=0', 'the weights sum to 0: they must sum to a positive number'),
                                     ('tinystories_sample=-1,corpus:sotu=1', 'weights must be finite and >= 0'),
                                     ('tinystories_sample=lots', "the weight of tinystories_sample is 'lots', not a number"),
                                     ('tinystories_sample', 'is not SOURCE=WEIGHT'),
                                     ('corpus:sotu=1,corpus:sotu=2', 'listed twice'),
                                     ('notes.pdf=1', "expected tinystories_sample, a text file (.txt, .txt.gz), corpus:NAME (a corpus of llmcourse.data) or a token file (.bin, .npy), not 'notes.pdf'")])
def test_bad_mixing_weights_are_errors_naming_them(mix, why):
    with pytest.raises(ValueError, match='train_mix') as e: parse_args(['--train_mix', mix])
    assert why in str(e.value)


# --- corpus mixing ----------------------------------------------------------------------------------------------------

MIX = ['--train_mix', f"tinystories_sample=3,{ROOT / 'tests' / 'fixtures' / 'address.txt'}=1", '--max_steps', '12']


def test_mixing_resumes_to_the_same_batches_as_an_unbroken_run(tmp_path, cache):
    whole = train(config(MIX + ['--run_name', 'whole'], tmp_path, cache), log=lambda *a: None)
    def stop_at_6(msg):
        if msg.startswith('step 6:'): signal.raise_signal(signal.SIGINT)
    part = train(config(MIX + ['--run_name', 'broken'], tmp_path, cache), log=stop_at_6)
    assert part['status'] == 'interrupted' and part['step'] == 7
    with pytest.raises(ValueError, match="was trained with different train_mix"):  # another mix can't continue the run
        train(config(MIX[:1] + ['tinystories_sample=1', '--max_steps', '12', '--run_name', 'broken', '--resume', 'true'], tmp_path, cache))
    resumed = train(config(MIX + ['--run_name', 'broken', '--resume', 'true'], tmp_path, cache), log=lambda *a: None)
    assert whole['status'] == resumed['status'] == 'finished'
    rows = lambda name: [(r['step'], r['train_loss'], r['val_loss']) for r in read_metrics(tmp_path / name)]
    assert rows('whole') == rows('broken') and len(rows('whole')) == 4
    a, b = (read_checkpoint(tmp_path / n / 'ckpt_last.pt')['model'] for n in ('whole', 'broken'))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_mix_draws_the_sources_in_proportion(tmp_path, cache):
    from llmcourse.train import build_state, prepare_data
    cfg = config(MIX + ['--batch_size', '64'], tmp_path, cache)
    tok, sources, _ = prepare_data(cfg, log=lambda *a: None)
    assert isinstance(sources, list) and len(sources) == 2
    st = build_state(cfg, sources, torch.device('cpu'))
    first = set(sources[0].tolist())
    rows = torch.cat([next(st.sampler)[0] for _ in range(20)])
    from_first = sum(set(r.tolist()) <= first and not (set(r.tolist()) <= set(sources[1].tolist())) for r in rows)
    assert 0.6 < from_first / len(rows) < 0.85  # 3 in 4, with rows of the small address also made of TinyStories tokens


# --- today's configs, checkpoints and run folders load as before ------------------------------------------------------

def test_old_run_folders_and_checkpoints_load_as_before():
    old = json.loads((ROOT / 'reports' / 'sweeps' / 'ablations' / 'baseline_seed=0' / 'config.json').read_text())
    assert 'arch' not in old and 'train_mix' not in old  # written before issue 14
    cfg = ModelConfig.from_dict(old)
    assert cfg.arch == 'transformer' and not cfg.bias and cfg.dropout is None
    model = cfg.build()
    assert type(model) is TransformerLM and model.position_embeddings is None
    # the CS336 state dict: no new keys
    assert all(not k.endswith('.bias') and 'position' not in k for k in model.state_dict())
    state = {'optimizer': {}, 'config': {k: v for k, v in asdict(parse_args([])).items() if k not in ('arch', 'bias', 'dropout', 'norm_eps',
             'kgram_k', 'train_mix', 'train_limit')}, 'rng': {}, 'sampler': {}, 'loss_window': [], 'iteration': 3, 'model': {}}
    check_resumable(state, parse_args([]), 'old.pt')  # a checkpoint without the new keys resumes


def test_optional_fields_come_from_a_config_or_the_command_line():
    cfg = parse_args(['--dropout', '0.1', '--num_kv_heads', '2', '--norm_eps', '1e-6'])
    assert (cfg.dropout, cfg.num_kv_heads, cfg.norm_eps) == (0.1, 2, 1e-6)
    assert parse_args(['--dropout', 'none']).dropout is None
    with pytest.raises(ValueError, match="bad value 'x' for num_kv_heads: expected an integer"): parse_args(['--num_kv_heads', 'x'])
    with pytest.raises(ValueError, match='dropout must be a number in'): parse_args(['--dropout', '1.0'])

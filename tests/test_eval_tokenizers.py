"""The valid sets of the authors' metric derived from real tokenizers: Mistral-7B's (offline, from the
mistral-common wheel; see mistral_tokenizer.py) must give exactly the ids hard-coded in the authors'
eval_helpers.py, and the answer positions must be the ones their code scores."""

import json

import builders
import numpy as np
import pytest
from mistral_tokenizer import SHA256, file_sha256, mistral_hf_tokenizer, model_file

from quietstar_jax.evaluation.datasets import read_gsm8k_jsonl
from quietstar_jax.evaluation.metric import plan_example
from quietstar_jax.evaluation.tasks import Example, scoring_text
from quietstar_jax.evaluation.vocab import ValidTokens
from quietstar_jax.training.tokenizer import HFTokenizer

FIXTURE = builders.GSM8K_FIXTURE
# eval_helpers.py (ezelikman/quiet-star): valid_number_tokens, valid_letter_tokens.
AUTHORS_NUMBERS = [28740, 28750, 28770, 28781, 28782, 28784, 28787, 28783, 28774, 28734, 13]
AUTHORS_LETTERS = [330, 365, 334, 384, 413, 13]
CSQA = Example("csqa", "c", "Where is a cup?", "B", tuple(zip("ABCDE", ["sky", "table", "moon", "sea", "fire"])))


@pytest.fixture(scope="module")
def mistral():
    return HFTokenizer(mistral_hf_tokenizer())


def test_the_tokenizer_is_mistral_7b_and_encodes_like_sentencepiece(mistral):
    """The bundled file is HF Mistral-7B-v0.1's tokenizer.model (same SHA-256); the HF pipeline built from it
    gives the SentencePiece model's own ids and mistral-common's, BOS first, on every scored text."""
    import sentencepiece as spm
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    assert file_sha256(model_file()) == SHA256
    sp = spm.SentencePieceProcessor(model_file=model_file())
    mc = MistralTokenizer.from_file(model_file()).instruct_tokenizer.tokenizer
    texts = [scoring_text(e) for e in read_gsm8k_jsonl(FIXTURE)] + [scoring_text(CSQA)]
    texts += [json.loads(line)["answer"] for line in open(FIXTURE)]
    texts += ["Über café naïve 数学 🙂 \t tab  two  spaces", " leading space", "\n\nA: B\n", "x" * 40]
    for t in texts:
        ids = mistral.hf(t)["input_ids"]
        assert ids == [1] + sp.encode(t) == mc.encode(t, bos=True, eos=False), t


def test_mistral_valid_sets_are_the_authors_ids(mistral):
    valid = ValidTokens.derive(mistral)
    assert valid.numeric == tuple(sorted(AUTHORS_NUMBERS))
    assert valid.choice == tuple(sorted(AUTHORS_LETTERS))
    assert valid.letters == (330, 365, 334, 384, 413)  # ▁A ▁B ▁C ▁D ▁E, in order


def test_mistral_answer_positions(mistral):
    """Where their loop starts and what it multiplies, on Mistral's tokens."""
    valid = ValidTokens.derive(mistral)
    gsm = read_gsm8k_jsonl(FIXTURE)
    tok = mistral.hf
    p = plan_example(mistral, scoring_text(gsm[16]), valid)  # "...\nA: 2,125\n"
    assert p.ids[0] == 1 and tok.convert_ids_to_tokens(int(p.ids[p.marker_end])) == ":"
    assert tok.convert_ids_to_tokens(int(p.ids[p.marker_end + 1])) == "▁"  # their "+1 if numeric" skips it
    assert p.numeric and p.first == p.marker_end + 1
    assert tok.convert_ids_to_tokens([int(p.ids[j + 1]) for j in p.positions]) == ["2", "1", "2", "5", "<0x0A>"]
    assert int(p.ids[p.positions[0]]) == 28705 and len(p.ids) - 1 == p.positions[-1] + 1  # "," skipped
    neg = plan_example(mistral, scoring_text(gsm[19]), valid)  # " -3": the letter set, only "\n" is scored
    assert not neg.numeric and neg.first == neg.marker_end
    assert [int(neg.ids[j + 1]) for j in neg.positions] == [13]
    c = plan_example(mistral, scoring_text(CSQA), valid)
    assert c.first == c.marker_end and [int(c.ids[j + 1]) for j in c.positions] == [365, 13]  # ▁B, \n
    assert isinstance(c.positions, np.ndarray)


def test_smollm2_valid_sets(smollm2_folder):
    tok = HFTokenizer(smollm2_folder)
    valid = ValidTokens.derive(tok)
    assert [tok.hf.convert_ids_to_tokens(i) for i in valid.digits] == list("0123456789")
    assert tok.hf.convert_ids_to_tokens(list(valid.letters)) == ["ĠA", "ĠB", "ĠC", "ĠD", "ĠE"]
    assert tok.hf.convert_ids_to_tokens(list(valid.newline)) == ["Ċ"]

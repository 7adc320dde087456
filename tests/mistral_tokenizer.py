"""The real Mistral-7B(-v0.1) tokenizer, offline, as Hugging Face's `AutoTokenizer` gives it.

mistral-common==1.13.1 (a pinned dependency) ships `mistral_common/data/tokenizer.model.v1`: 493,443 bytes,
SHA-256 dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055, the same file as `tokenizer.model`
in the HF repos mistralai/Mistral-7B-v0.1 / Mixtral-8x7B (their LFS pointers carry that hash). HF's
`tokenizer.json` for those repos is transformers' LlamaConverter (legacy mode) applied to it: a byte-fallback
BPE over the SentencePiece vocabulary, normalizer Prepend("▁") + Replace(" ", "▁"), decoder Replace("▁",
" ") + ByteFallback + Fuse + Strip(1 left space), and "<s> $A" (BOS) added by default. transformers 5.23's
own converter fails on this file (SentencePieceExtractor.extract is passed the vocab scores as its model
type), and `LlamaTokenizer(vocab_file=...)` silently encodes everything to [], so the same pipeline is
assembled here from the file's pieces and scores. tests/test_eval_tokenizers.py checks it against the
SentencePiece model itself and mistral-common's tokenizer (the ids HF's tokenizer.json reproduces).
"""

import hashlib
import os

SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"


def model_file() -> str:
    import mistral_common

    return os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def mistral_hf_tokenizer():
    """A transformers tokenizer with Mistral-7B-v0.1's ids (BOS added by default, like AutoTokenizer's)."""
    import sentencepiece as spm
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_file=model_file())
    vocab_scores = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    vocab = {piece: i for i, (piece, _) in enumerate(vocab_scores)}
    tk = Tokenizer(BPE(vocab, generate_merges(vocab, vocab_scores), unk_token="<unk>", fuse_unk=True,
                       byte_fallback=True))
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                      special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")

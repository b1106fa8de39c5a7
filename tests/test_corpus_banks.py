"""Caption corpora and cached, resumable memory banks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hanclip_model.errors import HanclipError
from trainer.banks import bank_fingerprint, drop_empty_rows, encode_bank
from trainer.corpus import read_captions


def test_caption_formats(tmp_path):
    (tmp_path / "a.txt").write_text("바다 위 노을\n\n  a cat  \n", encoding="utf-8")
    assert read_captions(tmp_path / "a.txt") == ["바다 위 노을", "a cat"]
    rows = [{"caption": "고양이"}, "강아지", {"text": " 산 "}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_captions(tmp_path / "b.jsonl") == ["고양이", "강아지", "산"]
    (tmp_path / "c.csv").write_text('id,text\n1,"sea, at night"\n2,도시\n', encoding="utf-8")
    assert read_captions(tmp_path / "c.csv") == ["sea, at night", "도시"]
    import unicodedata

    (tmp_path / "d.txt").write_text(unicodedata.normalize("NFD", "노을"), encoding="utf-8")
    assert read_captions(tmp_path / "d.txt") == ["노을"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", "id,label\n1,a\n", "no 'text' or 'caption' column"),
        ("x.jsonl", '{"text": "a"}\n{oops\n', "x.jsonl:2: invalid JSON"),
        ("x.jsonl", '{"label": "a"}\n', "'text' or 'caption' key"),
        ("x.txt", "\n \n", "no captions found"),
    ],
)
def test_bad_caption_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(HanclipError, match=message):
        read_captions(tmp_path / name)


def _fake_encoder(calls: list):
    def encode(items):
        calls.append(list(items))
        return np.array([[len(t), 1.0, 0.0] for t in items], dtype=np.float32)

    return encode


def test_encode_bank_caches_and_resumes(tmp_path):
    items = [f"caption {i}" * (i % 3 + 1) for i in range(10)]
    path = tmp_path / "bank.npy"
    calls: list = []

    def failing(batch):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _fake_encoder(calls)(batch)

    with pytest.raises(KeyboardInterrupt):
        encode_bank(items, failing, 3, path, batch_size=4)
    assert not path.exists() and (tmp_path / "bank.progress.json").exists()

    calls.clear()
    seen = []
    bank = encode_bank(items, _fake_encoder(calls), 3, path, batch_size=4, on_rows=seen.append)
    assert calls == [items[8:]]  # only the last batch was still missing
    assert sum(seen) == 10
    np.testing.assert_array_equal(bank[:, 0], [len(t) for t in items])
    assert not (tmp_path / "bank.progress.json").exists()

    calls.clear()
    again = encode_bank(items, _fake_encoder(calls), 3, path, batch_size=4)
    assert calls == [] and np.array_equal(again, bank)


def test_bank_fingerprint_follows_content(tmp_path):
    texts = ["a", "b"]
    assert bank_fingerprint("text", "m", texts) == bank_fingerprint("text", "m", list(texts))
    assert bank_fingerprint("text", "m", texts) != bank_fingerprint("text", "other", texts)
    assert bank_fingerprint("text", "m", texts) != bank_fingerprint("text", "m", ["a", "c"])
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"1")
    before = bank_fingerprint("image", "m", [str(photo)])
    photo.write_bytes(b"12")
    assert bank_fingerprint("image", "m", [str(photo)]) != before


def test_drop_empty_rows():
    bank = np.array([[1, 0], [0, 0], [0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(drop_empty_rows(bank), [[1, 0], [0, 1]])
    assert drop_empty_rows(bank[[0, 2]]).shape == (2, 2)

"""Word-level text data (``text:``), the LSTM language model (``lstm-lm``) and the CD-GraB run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowcomm
from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.data.dataset import Shards
from lowcomm.data.loaders import load_data
from lowcomm.data.partition import partition
from lowcomm.data.spec import DataSpec, parse_data_spec, parse_partition_spec
from lowcomm.data.text import EOS, UNK, batchify, encode, read_words, vocabulary
from lowcomm.experiments.reproduce.lstm import lstm_config, steps_per_epoch
from lowcomm.experiments.runner import prepare
from lowcomm.experiments.study import datasets_root, shared_data
from lowcomm.problems.lstm import LSTMLayer, language_model
from lowcomm.problems.torch_model import TorchModel

# --- reading and the vocabulary ----------------------------------------------------------------


def test_words_end_every_line_with_eos(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(" a b \n\nc  a\n")
    assert read_words(path) == ["a", "b", EOS, EOS, "c", "a", EOS]
    path.write_bytes(b"a b\r\n\r\nc a")  # CRLF, no newline at the end: the same tokens
    assert read_words(path) == ["a", "b", EOS, EOS, "c", "a", EOS]


def test_vocabulary_in_order_of_first_appearance_with_unk() -> None:
    assert vocabulary(["b", "a", EOS, "b"]) == {"b": 0, "a": 1, EOS: 2, UNK: 3}
    assert vocabulary([UNK, "a"]) == {UNK: 0, "a": 1}  # already there: not added again
    ids = vocabulary(["b", "a", EOS])
    assert encode(["a", "zebra", EOS, "b"], ids).tolist() == [1, 3, 2, 0]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_words(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="found an empty file"):
        read_words(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin.txt, line 2: found byte 0xe9; expected UTF-8"):
        read_words(tmp_path / "latin.txt")
    (tmp_path / "short.txt").write_text("a b c\n")
    spec = parse_data_spec(f"text:{tmp_path / 'short.txt'},streams=2,bptt=3")
    with pytest.raises(DataError, match="found 4 tokens; expected at least 8"):
        load_data(spec, seed=0)


# --- the layout --------------------------------------------------------------------------------


def test_batchify_equals_the_hand_layout() -> None:
    """50 tokens, 4 streams of 12 (2 dropped), chunks of 3 (3 whole ones), 2 streams each."""
    X, y = batchify(np.arange(50), streams=4, bptt=3, group=2)
    assert X.shape == y.shape == (6, 2, 3)
    assert X.dtype == np.float64
    assert y.dtype == np.int64
    for g in range(2):
        for c in range(3):
            for j in range(2):
                stream = 2 * g + j
                first = 12 * stream + 3 * c  # stream s holds tokens 12s..12s+11
                assert X[3 * g + c, j].tolist() == [first, first + 1, first + 2]
                assert y[3 * g + c, j].tolist() == [first + 1, first + 2, first + 3]


def test_batchify_drops_the_last_short_chunk() -> None:
    # 4 streams of 10 tokens: inputs need a next token, so (10 - 1) // 3 = 3 chunks of 3
    X, y = batchify(np.arange(40), streams=4, bptt=3, group=1)
    assert X.shape == (12, 1, 3)
    assert y[2, 0].tolist() == [7, 8, 9]  # stream 0's last whole chunk ends at its last token


def test_parse_text_spec() -> None:
    assert parse_data_spec("text:a.txt") == DataSpec("text", path="a.txt")
    parsed = parse_data_spec("text:a.txt,b.txt,streams=8,bptt=5,group=2")
    assert parsed == DataSpec("text", "a.txt", "b.txt", streams=8, bptt=5, group=2)
    assert parse_data_spec("text:a.txt,group=4").group == 4
    for bad in ("text:", "text:a,b,c", "text:a,streams=0", "text:a,streams=6,group=4", "text:a,"):
        with pytest.raises(InvalidConfigError, match=r"text:TRAIN\[,TEST\]"):
            parse_data_spec(bad)


def _corpus(tmp_path: Path, lines: int = 40) -> str:
    """A train and a test file: the same cycle of six words on every line."""
    line = " ".join(f"w{i}" for i in range(6))
    (tmp_path / "train.txt").write_text("\n".join([line] * lines) + "\n")
    (tmp_path / "test.txt").write_text("\n".join([line.replace("w5", "new")] * 10) + "\n")
    return f"text:{tmp_path / 'train.txt'},{tmp_path / 'test.txt'},streams=8,bptt=5,group=2"


def test_load_text_pair_shares_the_training_vocabulary(tmp_path: Path) -> None:
    data = load_data(parse_data_spec(_corpus(tmp_path)), seed=0)
    # 280 tokens -> 8 streams of 35 -> 6 chunks of 5; 4 groups of 2 streams
    assert data.train.X.shape == data.train.y.shape == (24, 2, 5)
    assert data.train.n_classes == 8  # six words, <eos> and the added <unk>
    # test: 70 tokens -> 8 streams of 8 -> 1 chunk; "new" is unknown
    assert data.test.X.shape == (4, 2, 5)
    assert (data.test.y == 7).any()
    assert data.test.y.max() == 7


def test_contiguous_partition_gives_each_worker_its_streams(tmp_path: Path) -> None:
    data = load_data(parse_data_spec(_corpus(tmp_path)), seed=0)
    parts = partition(data.train.y, 4, parse_partition_spec("contiguous"), seed=3)
    assert [p.tolist() for p in parts] == [list(range(6 * w, 6 * w + 6)) for w in range(4)]
    for scheme in ("sorted", "classes:2", "dirichlet:1"):
        with pytest.raises(InvalidConfigError, match="for sequence targets"):
            partition(data.train.y, 4, parse_partition_spec(scheme), seed=0)


def test_shards_gather_sequence_targets(tmp_path: Path) -> None:
    data = load_data(parse_data_spec(_corpus(tmp_path)), seed=0)
    parts = [np.arange(0, 12), np.arange(12, 24)]
    shards = Shards.build(data.train, parts, torch.float32)
    assert shards.y.shape == (2, 12, 2, 5)
    X, y = shards.gather(torch.tensor([[3, 0], [11, 5]]))
    assert y.shape == (2, 2, 2, 5)
    assert np.array_equal(y[1, 0].numpy(), data.train.y[12 + 11])
    assert np.array_equal(X[0, 0].numpy(), data.train.X[3].astype(np.float32))


# --- the model ---------------------------------------------------------------------------------


def test_lstm_layer_equals_torch_lstm() -> None:
    layer = LSTMLayer(3, 4, torch.Generator().manual_seed(0))
    reference = nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            torch_name = name.replace("w_", "weight_").replace("b_", "bias_") + "_l0"
            getattr(reference, torch_name).copy_(getattr(layer, name))
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(layer(x), reference(x)[0])


def test_model_loss_and_perplexity_are_torch_cross_entropy() -> None:
    vocab = 11
    module = language_model(vocab, embedding=6, hidden=(5, 4), seed=1)
    problem = TorchModel(module, l2=0.0, dtype=torch.float64)
    params = problem.init_params(torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(2)
    X = torch.randint(0, vocab, (7, 3, 5), generator=generator).double()
    y = torch.randint(0, vocab, (7, 3, 5), generator=generator)
    with torch.no_grad():
        for p, value in zip(module.parameters(), problem.unflatten(params).values(), strict=True):
            p.copy_(value)
        logits = module.double()(X)
    by_hand = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))  # mean over tokens
    weight = torch.ones(1, 7, dtype=torch.float64)
    assert problem.eval_batch == 2  # blocks of 2, 2, 2, 1 examples
    torch.testing.assert_close(problem.loss(params[None], X[None], y[None], weight)[0], by_hand)
    assert problem.metric_name == "perplexity"
    assert problem.metric(params, X, y) == pytest.approx(math.exp(by_hand.item()), rel=1e-12)
    problem.eval_batch = None  # one block: the same values
    torch.testing.assert_close(problem.loss(params[None], X[None], y[None], weight)[0], by_hand)


def test_model_init_is_the_authors_and_kept_by_lowcomm() -> None:
    module = language_model(50, seed=4)
    params = TorchModel(module).init_params(torch.Generator().manual_seed(9))
    named = dict(module.named_parameters())
    assert torch.equal(params[: 50 * 32], named["embedding"].detach().flatten())
    assert named["embedding"].abs().max() <= 0.1
    assert named["decoder_bias"].abs().max() == 0
    assert named["layers.1.w_hh"].abs().max() <= 1 / math.sqrt(32)
    assert not torch.equal(language_model(50, seed=5).embedding, module.embedding)


# --- a run through the public API --------------------------------------------------------------


def _run(tmp_path: Path, order: str, model: str | nn.Module) -> lowcomm.Result:
    settings = {"lr": 1.0, "momentum": 0.9, "batch_size": 1, "unit": "minibatch"}
    result = lowcomm.run(
        "sgd",
        data=_corpus(tmp_path),
        model=model,
        hidden=(8, 8),
        l2=0.0,
        workers=4,
        partition="contiguous",
        order=order,
        epochs=30,
        eval_every=60,
        settings=settings,
    )
    assert result is not None
    return result


@pytest.mark.parametrize("order", ["cd-grab", "d-rr"])
def test_run_per_minibatch_reduces_the_token_loss(tmp_path: Path, order: str) -> None:
    """Each word predicts the next: 30 epochs of 6 steps take the loss from log(8) to < 0.5."""
    result = _run(tmp_path, order, "lstm-lm")
    loss = result.history["train_loss"].to_numpy()
    assert loss[0] == pytest.approx(math.log(8), abs=0.2)
    assert loss[-1] < 0.5
    assert result.metadata["data"]["n_train"] == 24
    assert result.metadata["problem"]["metric"] == "perplexity"
    assert result.metadata["partition"]["sizes"] == [6, 6, 6, 6]
    if order == "cd-grab":  # the same run with the module given as an object
        module = language_model(8, 8, (8, 8), seed=0)
        again = _run(tmp_path, order, module)
        assert again.history["train_loss"].tolist() == result.history["train_loss"].tolist()


# --- the real files ----------------------------------------------------------------------------


def _wikitext() -> tuple[Path, str]:
    """The data sets' root and the ``text:VALID,TEST`` spec of WikiText-2 there."""
    found, missing = shared_data(["wikitext-2"])
    if missing:
        pytest.skip(f"{missing} (set LOWCOMM_DATASETS to the data sets' folder)")
    return datasets_root(), found["wikitext-2"]


@pytest.mark.shared_data
def test_wikitext2_valid_and_test() -> None:
    root, files = _wikitext()
    config = lstm_config("cd-grab", seed=0, epochs=1, files=files)
    assert steps_per_epoch(files) == 388 == prepare(config).rounds  # the engine's own count
    assert config.options["lr"] == "step:5.0,0.1,3880"
    prepared = prepare(config)
    train, test = prepared.data.train, prepared.data.test
    assert train.n_classes == 13777
    assert train.X.shape == (1552, 4, 35)  # 217,646 tokens: 16 streams of 13,602, 388 chunks
    assert test.X.shape == (1752, 4, 35)  # 245,569 tokens: 16 streams of 15,348, 438 chunks
    assert prepared.removed.ids.size == 0
    assert [p.size for p in prepared.parts] == [388] * 4
    words = read_words(root / "wikitext-2" / "valid.txt")
    ids = encode(words, vocabulary(words))
    # worker 2's shard: streams 8..11, chunks in order; its chunk 5, stream 9
    X, y = prepared.shards.gather(torch.tensor([[0], [0], [5], [0]]))
    start = 9 * 13602 + 5 * 35
    assert X[2, 0, 1].long().tolist() == ids[start : start + 35].tolist()
    assert y[2, 0, 1].tolist() == ids[start + 1 : start + 36].tolist()
